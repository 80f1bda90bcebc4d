//! Running under systemd as `Type=notify` (sd_notify(3), through the `sd-notify` crate):
//! readiness, status, the watchdog, stopping; and whether stderr is the journal.
//!
//! Everything here is a no-op outside systemd (no `NOTIFY_SOCKET`). A failed notification is
//! logged, never fatal: the probing matters more than the service manager's view of it.
//!
//! `NOTIFY_SOCKET` is normally a path (/run/systemd/notify), which entering another network
//! namespace does not affect; an abstract socket (`@...`) belongs to the namespace systemd
//! runs in, so notifications sent after `--netns`/`--pid` would not reach it: `enter` the
//! namespace first only with a path socket (the default).

use std::time::{Duration, Instant};

use sd_notify::NotifyState;

/// True when systemd asked for notifications.
pub fn under_systemd() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some()
}

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        log::warn!("telling systemd ({states:?}): {e}");
    }
}

/// `READY=1` with a status line: the sockets are open and the loop runs.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// `STATUS=...`: what `systemctl status` shows.
pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

/// `WATCHDOG=1`: still alive.
pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

/// `STOPPING=1`: shutting down on request.
pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

/// The watchdog's schedule: systemd kills the service when no `WATCHDOG=1` arrives within
/// `WatchdogSec`; sd_watchdog_enabled(3) advises pinging at half that.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Watchdog {
    interval: Duration,
    next: Instant,
}

impl Watchdog {
    /// From `WATCHDOG_USEC` (and `WATCHDOG_PID`, which must be this process); `None` when
    /// the watchdog is off.
    pub fn from_env() -> Option<Watchdog> {
        sd_notify::watchdog_enabled().and_then(|t| Watchdog::with_timeout(t, Instant::now()))
    }

    /// A watchdog whose timeout is `timeout`; the first ping is due at once.
    pub fn with_timeout(timeout: Duration, now: Instant) -> Option<Watchdog> {
        if timeout.is_zero() {
            return None;
        }
        Some(Watchdog {
            interval: timeout / 2,
            next: now,
        })
    }

    /// How often `tick` pings.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// How long the loop may sleep before the next ping is due (a poll timeout bound).
    pub fn until_due(&self, now: Instant) -> Duration {
        self.next.saturating_duration_since(now)
    }

    /// Whether a ping is due at `now`; when it is, schedules the next one.
    pub fn due(&mut self, now: Instant) -> bool {
        if now < self.next {
            return false;
        }
        self.next = now + self.interval;
        true
    }

    /// Pings systemd if due. Call it every loop iteration.
    pub fn tick(&mut self, now: Instant) {
        if self.due(now) {
            watchdog();
        }
    }
}

/// True when stderr is the journal: systemd sets `JOURNAL_STREAM=DEV:INODE` to stderr's
/// device and inode, and the journal stamps each line itself, so log lines then carry no
/// timestamp and may start with a `<N>` priority (`syslog_prefix`). Compared with stderr's
/// own, as systemd.exec(5) advises, so a redirected stderr is not mistaken for it.
pub fn journal_logging() -> bool {
    is_journal(2)
}

/// True when stdout is the journal stream too (systemd's default `StandardOutput=journal`):
/// `watch` then leaves its own timestamp out of the state lines, as the journal stamps them.
pub fn journal_output() -> bool {
    is_journal(1)
}

/// Whether descriptor `fd` is the stream `JOURNAL_STREAM` names.
fn is_journal(fd: libc::c_int) -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    // SAFETY: fstat fills a zeroed stat struct for a descriptor number; a closed one fails.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return false;
    }
    stream_matches(&value.to_string_lossy(), st.st_dev, st.st_ino)
}

/// Whether `JOURNAL_STREAM`'s `DEV:INODE` names the file with `dev` and `ino`.
pub fn stream_matches(value: &str, dev: u64, ino: u64) -> bool {
    let Some((d, i)) = value.trim().split_once(':') else {
        return false;
    };
    d.parse::<u64>().ok() == Some(dev) && i.parse::<u64>().ok() == Some(ino)
}

/// The sd-daemon(3) priority prefix the journal reads off the start of a line
/// (`SyslogLevelPrefix=yes`, the default): error `<3>`, warn `<4>`, info `<6>`, debug and
/// trace `<7>`.
pub fn syslog_prefix(level: log::Level) -> &'static str {
    match level {
        log::Level::Error => "<3>",
        log::Level::Warn => "<4>",
        log::Level::Info => "<6>",
        log::Level::Debug | log::Level::Trace => "<7>",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;
    use std::process::Command;

    #[test]
    fn watchdog_pings_at_half_the_timeout() {
        let t0 = Instant::now();
        assert_eq!(Watchdog::with_timeout(Duration::ZERO, t0), None);
        let mut w = Watchdog::with_timeout(Duration::from_secs(30), t0).unwrap();
        assert_eq!(w.interval(), Duration::from_secs(15));
        assert_eq!(w.until_due(t0), Duration::ZERO);
        assert!(w.due(t0), "first ping at once");
        assert!(!w.due(t0 + Duration::from_secs(14)));
        assert_eq!(
            w.until_due(t0 + Duration::from_secs(10)),
            Duration::from_secs(5)
        );
        assert!(w.due(t0 + Duration::from_secs(15)));
        assert!(!w.due(t0 + Duration::from_secs(16)));
        // A late loop pings once, then keeps the interval from then.
        assert!(w.due(t0 + Duration::from_secs(100)));
        assert!(!w.due(t0 + Duration::from_secs(114)));
        assert!(w.due(t0 + Duration::from_secs(115)));
    }

    #[test]
    fn journal_stream_must_match_stderr() {
        assert!(stream_matches("2049:1234", 2049, 1234));
        assert!(stream_matches("2049:1234\n", 2049, 1234));
        assert!(!stream_matches("2049:1235", 2049, 1234));
        assert!(!stream_matches("2049", 2049, 1234));
        assert!(!stream_matches("", 2049, 1234));
        assert!(!stream_matches("x:y", 2049, 1234));
        assert_eq!(syslog_prefix(log::Level::Error), "<3>");
        assert_eq!(syslog_prefix(log::Level::Warn), "<4>");
        assert_eq!(syslog_prefix(log::Level::Info), "<6>");
        assert_eq!(syslog_prefix(log::Level::Debug), "<7>");
    }

    /// Runs the ignored test `name` of this test binary in a child with `env` set (the
    /// environment of this process is shared by the test threads: never set it here).
    fn child(name: &str, env: &[(&str, &str)], stderr: std::process::Stdio) -> bool {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args(["--exact", name, "--ignored", "--test-threads", "1"])
            .env("KAPROBE_NOTIFY_CHILD", "1")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("JOURNAL_STREAM")
            .stdout(std::process::Stdio::null())
            .stderr(stderr);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.status().unwrap().success()
    }

    fn in_child() -> bool {
        std::env::var("KAPROBE_NOTIFY_CHILD").as_deref() == Ok("1")
    }

    #[test]
    #[ignore = "run by sends_the_notifications_to_notify_socket in a child"]
    fn child_sends_notifications() {
        if !in_child() {
            return;
        }
        assert!(under_systemd());
        ready("watching 3 connections");
        watchdog();
        status("2 alive, 1 dead");
        stopping();
    }

    #[test]
    fn sends_the_notifications_to_notify_socket() {
        let path = std::env::temp_dir().join(format!("kaprobe-notify-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let ok = child(
            "sys::notify::tests::child_sends_notifications",
            &[("NOTIFY_SOCKET", path.to_str().unwrap())],
            std::process::Stdio::inherit(),
        );
        let mut got = Vec::new();
        let mut buf = [0u8; 512];
        sock.set_nonblocking(true).unwrap();
        while let Ok(n) = sock.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        let _ = std::fs::remove_file(&path);
        assert!(ok, "child failed");
        assert_eq!(
            got,
            vec![
                "READY=1\nSTATUS=watching 3 connections\n",
                "WATCHDOG=1\n",
                "STATUS=2 alive, 1 dead\n",
                "STOPPING=1\n",
            ]
        );
    }

    #[test]
    #[ignore = "run by journal_logging_follows_stderr in a child"]
    fn child_journal_logging() {
        if !in_child() {
            return;
        }
        let want = std::env::var("KAPROBE_EXPECT_JOURNAL").as_deref() == Ok("1");
        assert_eq!(journal_logging(), want);
    }

    #[test]
    fn journal_logging_follows_stderr() {
        use std::os::unix::fs::MetadataExt;
        let path = std::env::temp_dir().join(format!("kaprobe-journal-{}", std::process::id()));
        let file = std::fs::File::create(&path).unwrap();
        let meta = file.metadata().unwrap();
        let mine = format!("{}:{}", meta.dev(), meta.ino());
        let other = format!("{}:{}", meta.dev(), meta.ino() + 1);
        let name = "sys::notify::tests::child_journal_logging";
        let run = |value: &str, expect: &str| {
            child(
                name,
                &[
                    ("JOURNAL_STREAM", value),
                    ("KAPROBE_EXPECT_JOURNAL", expect),
                ],
                file.try_clone().unwrap().into(),
            )
        };
        let (a, b) = (run(&mine, "1"), run(&other, "0"));
        let _ = std::fs::remove_file(&path);
        assert!(a, "stderr is the JOURNAL_STREAM file: journal logging");
        assert!(b, "stderr is another file: no journal logging");
    }
}
