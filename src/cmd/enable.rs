//! `kaprobe enable FLOW`: the kernel's own keepalive on a running process's socket.
//!
//! Finds the processes holding the connection's socket (its inode under `/proc/*/fd`),
//! borrows a duplicate of the descriptor with `pidfd_open` + `pidfd_getfd`, sets
//! SO_KEEPALIVE and then TCP_KEEPIDLE / TCP_KEEPINTVL / TCP_KEEPCNT on it (or only
//! SO_KEEPALIVE=0 with `--off`), closes the duplicate, and checks through sock_diag that the
//! keepalive timer is armed (or gone). The application is not stopped or signalled; socket
//! options belong to the socket, not to the descriptor, so the application's own descriptor
//! now has keepalive on. Setting TCP_KEEPIDLE counts the idle time already passed: on a
//! connection idle longer than `--time`, the first probe goes out at once.
//!
//! Exit status: 0 done (and the timer seen in the expected state, or hidden behind a
//! retransmit timer, which is reported); 2 bad values (timing in whole seconds,
//! TCP_KEEPIDLE/TCP_KEEPINTVL 1..=32767 s, TCP_KEEPCNT 1..=127); 5 no such established
//! connection; 6 pidfd_getfd refused (ptrace permission: CAP_SYS_PTRACE, Yama);
//! 7 no process holds the socket (the kernel owns it, or its owner is in a PID namespace
//! kaprobe cannot see), or sock_diag does not show the state that was set.
//!
//! Caveat: if the application closes its descriptor in the instant between the duplication
//! and kaprobe's close, kaprobe's close is the last one and the connection is closed.

use std::collections::HashSet;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use caps::Capability;
use clap::Args;
use serde_json::{Value, json};
use socket2::{SockRef, TcpKeepalive};

use super::Ctx;
use super::args::FlowArg;
use crate::cmd::prober;
use crate::error::{Error, Result, is_permission};
use crate::exit::ExitStatus;
use crate::flow::Flow;
use crate::output::owners_json;
use crate::sys::diag::{Conn, Diag};
use crate::sys::keepalive::Keepalive;
use crate::sys::owner::{Owner, Owners};
use crate::sys::pidfd::PidFd;

/// MAX_TCP_KEEPIDLE and MAX_TCP_KEEPINTVL in include/net/tcp.h.
pub use super::args::MAX_KEEP_SECS;
/// MAX_TCP_KEEPCNT.
pub const MAX_KEEPCNT: u32 = 127;

#[derive(Args, Debug)]
pub struct EnableArgs {
    #[command(flatten)]
    pub flow: FlowArg,
    /// Idle time before the first probe (TCP_KEEPIDLE): whole seconds, 1s..=32767s
    #[arg(long, value_name = "DUR", default_value = "60s", value_parser = keep_secs,
          conflicts_with = "off")]
    pub time: u32,
    /// Time between unanswered probes (TCP_KEEPINTVL): whole seconds, 1s..=32767s
    #[arg(long, value_name = "DUR", default_value = "1s", value_parser = keep_secs,
          conflicts_with = "off")]
    pub intvl: u32,
    /// Unanswered probes before the kernel drops the connection (TCP_KEEPCNT): 1..=127
    #[arg(long, value_name = "N", default_value = "3", value_parser = keep_count,
          conflicts_with = "off")]
    pub probes: u32,
    /// Turn the socket's keepalive off (SO_KEEPALIVE=0) instead
    #[arg(long)]
    pub off: bool,
}

/// A TCP_KEEPIDLE / TCP_KEEPINTVL value: a humantime duration in whole seconds, 1..=32767.
pub fn keep_secs(s: &str) -> std::result::Result<u32, String> {
    let d = super::args::parse_duration(s)?;
    if d < Duration::from_secs(1) {
        return Err(format!(
            "'{s}' is below 1s: the kernel takes keepalive times in whole seconds, at least 1s"
        ));
    }
    if d.subsec_nanos() != 0 {
        return Err(format!(
            "'{s}' is not whole seconds: the kernel takes keepalive times in seconds"
        ));
    }
    if d.as_secs() > MAX_KEEP_SECS {
        return Err(format!(
            "'{s}' is above the kernel's limit of {MAX_KEEP_SECS}s (9h6m7s)"
        ));
    }
    u32::try_from(d.as_secs()).map_err(|_| format!("'{s}' is out of range"))
}

/// A TCP_KEEPCNT value, 1..=127.
pub fn keep_count(s: &str) -> std::result::Result<u32, String> {
    let n: u32 = s
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a count"))?;
    if !(1..=MAX_KEEPCNT).contains(&n) {
        return Err(format!(
            "{n} is outside the kernel's TCP_KEEPCNT range 1..={MAX_KEEPCNT}"
        ));
    }
    Ok(n)
}

/// A socket's keepalive options.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    pub on: bool,
    pub time_s: u64,
    pub intvl_s: u64,
    pub probes: u32,
}

impl Settings {
    fn read(sock: &OwnedFd) -> std::io::Result<Settings> {
        let s = SockRef::from(sock);
        Ok(Settings {
            on: s.keepalive()?,
            time_s: s.keepalive_time()?.as_secs(),
            intvl_s: s.keepalive_interval()?.as_secs(),
            probes: s.keepalive_retries()?,
        })
    }

    fn json(&self) -> Value {
        json!({
            "keepalive": self.on,
            "time_s": self.time_s,
            "intvl_s": self.intvl_s,
            "probes": self.probes,
        })
    }

    /// `off, time=7200s intvl=75s probes=9` or `on time=60s intvl=1s probes=3`.
    fn describe(&self) -> String {
        let values = format!(
            "time={}s intvl={}s probes={}",
            self.time_s, self.intvl_s, self.probes
        );
        if self.on {
            format!("on {values}")
        } else {
            format!("off, {values}")
        }
    }
}

/// What the user asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Want {
    On { time: u32, intvl: u32, probes: u32 },
    Off,
}

impl EnableArgs {
    fn want(&self) -> Want {
        if self.off {
            Want::Off
        } else {
            Want::On {
                time: self.time,
                intvl: self.intvl,
                probes: self.probes,
            }
        }
    }
}

fn apply(sock: &OwnedFd, want: Want) -> std::io::Result<()> {
    let s = SockRef::from(sock);
    match want {
        // SO_KEEPALIVE first, then TCP_KEEPIDLE: setting the idle time on a socket with
        // keepalive on re-arms the timer for the idle time still to go.
        Want::On {
            time,
            intvl,
            probes,
        } => s.set_tcp_keepalive(
            &TcpKeepalive::new()
                .with_time(Duration::from_secs(time.into()))
                .with_interval(Duration::from_secs(intvl.into()))
                .with_retries(probes),
        ),
        Want::Off => s.set_keepalive(false),
    }
}

pub fn run(args: &EnableArgs, ctx: &Ctx) -> Result<ExitStatus> {
    let want = args.want();
    let mut diag = Diag::open()?;
    let conn = prober::resolve_conn(args.flow.spec()?, &mut diag)?;
    let flow = conn.flow;
    let inode = inode_of(&conn)?;
    let owners = Owners::scan(&HashSet::from([inode]));
    let holders = owners.of(inode);
    if holders.is_empty() {
        return Err(no_owner(&flow, inode, owners.unreadable));
    }
    let (owner, sock) = borrow(holders, inode)?;
    let before = Settings::read(&sock).map_err(|e| sock_err(&flow, owner, "reading", e))?;
    apply(&sock, want).map_err(|e| sock_err(&flow, owner, "setting", e))?;
    drop(sock);
    let conn = diag.lookup(&flow)?.ok_or_else(|| {
        Error::NoConnection(format!("connection {flow} closed while keepalive was set"))
    })?;
    let seen = Keepalive::of(&conn);
    check(&flow, want, seen)?;
    let report = Report {
        flow,
        want,
        seen,
        owner,
        holders,
        before,
    };
    // The socket is changed already: if nobody reads this any more, the command still
    // succeeded at what it was asked, and ends quietly (README "Pipes, signals and limits").
    if ctx.json {
        crate::output::json_line(report.json())?;
    } else {
        crate::output::line(report.line())?;
    }
    Ok(ExitStatus::Success)
}

/// The inode of the connection's socket; 0 means no process can hold it.
fn inode_of(conn: &Conn) -> Result<u32> {
    let flow = conn.flow;
    if conn.inode == 0 {
        return Err(Error::Runtime(format!(
            "{flow} has no socket file (inode 0): the kernel holds it (e.g. an in-kernel \
             client, or the application already closed it); no process to borrow it from"
        )));
    }
    Ok(conn.inode)
}

fn no_owner(flow: &Flow, inode: u32, unreadable: usize) -> Error {
    let mut msg = format!(
        "no process holds the socket of {flow} (inode {inode}) in /proc/*/fd: it belongs to \
         the kernel, or to a process in a PID namespace this one cannot see"
    );
    if unreadable > 0 {
        msg.push_str(&format!(
            ", or to {} whose descriptors this user cannot read (run as root)",
            if unreadable == 1 {
                "the one process".to_string()
            } else {
                format!("one of the {unreadable} processes")
            }
        ));
    }
    Error::Runtime(msg)
}

/// Duplicates one holder's descriptor into this process, trying each holder in turn.
/// Checks that the duplicate is still the same socket (the descriptor number may have been
/// reused since the scan).
fn borrow(holders: &[Owner], inode: u32) -> Result<(&Owner, OwnedFd)> {
    let mut refused: Option<(&Owner, std::io::Error)> = None;
    for owner in holders {
        match duplicate(owner) {
            Ok(fd) if same_inode(&fd, inode) => return Ok((owner, fd)),
            Ok(_) => log::debug!("fd {} of pid {} is another file now", owner.fd, owner.pid),
            Err(e) if is_permission(&e) => refused = Some((owner, e)),
            Err(e) => log::debug!("pid {} fd {}: {e}", owner.pid, owner.fd),
        }
    }
    Err(match refused {
        Some((owner, e)) => ptrace_refused(owner, &e),
        None => Error::Runtime(format!(
            "the processes holding socket inode {inode} exited or closed it meanwhile"
        )),
    })
}

fn duplicate(owner: &Owner) -> std::io::Result<OwnedFd> {
    PidFd::open(owner.pid)?.get_fd(owner.fd)
}

fn same_inode(fd: &OwnedFd, inode: u32) -> bool {
    let Ok(clone) = fd.try_clone() else {
        return false;
    };
    std::fs::File::from(clone)
        .metadata()
        .is_ok_and(|m| m.ino() == u64::from(inode))
}

fn ptrace_refused(owner: &Owner, e: &std::io::Error) -> Error {
    let yama = crate::sys::sysctl::read_u64_opt("kernel.yama.ptrace_scope")
        .ok()
        .flatten()
        .map_or_else(String::new, |v| format!(", kernel.yama.ptrace_scope={v}"));
    let errno = e.raw_os_error().map_or_else(|| e.to_string(), errno_name);
    Error::Privilege {
        what: format!(
            "borrowing fd {} of pid {} ({}) with pidfd_getfd (refused by the ptrace access \
             rules: {errno}{yama})",
            owner.fd, owner.pid, owner.command
        ),
        cap: Capability::CAP_SYS_PTRACE,
    }
}

fn errno_name(code: i32) -> String {
    match code {
        libc::EPERM => "EPERM".into(),
        libc::EACCES => "EACCES".into(),
        other => format!("errno {other}"),
    }
}

fn sock_err(flow: &Flow, owner: &Owner, what: &str, e: std::io::Error) -> Error {
    Error::Io {
        context: format!(
            "{what} keepalive options of {flow} (fd {} of pid {})",
            owner.fd, owner.pid
        ),
        source: e,
    }
}

/// Did sock_diag show what was set? A timer hidden behind another one is accepted.
fn check(flow: &Flow, want: Want, seen: Keepalive) -> Result<()> {
    match (want, seen) {
        (Want::On { .. }, Keepalive::On { .. })
        | (Want::Off, Keepalive::Off)
        | (_, Keepalive::Unknown(_)) => Ok(()),
        (Want::On { .. }, Keepalive::Off) => Err(Error::Runtime(format!(
            "keepalive was set on {flow}, but sock_diag shows no keepalive timer"
        ))),
        (Want::Off, Keepalive::On { .. }) => Err(Error::Runtime(format!(
            "keepalive was turned off on {flow}, but sock_diag still shows its timer"
        ))),
    }
}

struct Report<'a> {
    flow: Flow,
    want: Want,
    seen: Keepalive,
    owner: &'a Owner,
    holders: &'a [Owner],
    before: Settings,
}

impl Report<'_> {
    fn line(&self) -> String {
        let state = match (self.want, self.seen) {
            (Want::Off, _) => "keepalive off".to_string(),
            (
                Want::On {
                    time,
                    intvl,
                    probes,
                },
                seen,
            ) => {
                let next = match seen {
                    Keepalive::On { next, .. } => {
                        format!("next={}", crate::output::duration(next))
                    }
                    other => format!("timer not visible: {}", crate::output::keepalive(&other)),
                };
                format!("keepalive on time={time}s intvl={intvl}s probes={probes} {next}")
            }
        };
        format!(
            "{} {state} (socket of {} fd {}; was {})",
            self.flow,
            self.owner,
            self.owner.fd,
            self.before.describe()
        )
    }

    fn json(&self) -> Value {
        let mut o = json!({
            "event": "keepalive-set",
            "flow": self.flow.to_string(),
            "local": self.flow.local.to_string(),
            "remote": self.flow.remote.to_string(),
            "requested": if self.want == Want::Off { "off" } else { "on" },
            "verified": !matches!(self.seen, Keepalive::Unknown(_)),
            "owner": {"pid": self.owner.pid, "fd": self.owner.fd, "command": self.owner.command},
            "owners": owners_json(self.holders),
            "previous": self.before.json(),
        });
        if let Want::On {
            time,
            intvl,
            probes,
        } = self.want
        {
            o["time_s"] = json!(time);
            o["intvl_s"] = json!(intvl);
            o["probes"] = json!(probes);
        }
        crate::output::keepalive_fields(&self.seen, &mut o);
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::os::fd::AsRawFd;

    #[derive(Parser, Debug)]
    struct Cmd {
        #[command(flatten)]
        args: EnableArgs,
    }

    fn parse(args: &[&str]) -> std::result::Result<EnableArgs, String> {
        let mut full = vec!["enable"];
        full.extend_from_slice(args);
        Cmd::try_parse_from(full)
            .map(|c| c.args)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_60s_1s_3() {
        let a = parse(&["198.51.100.2:9000"]).unwrap();
        assert_eq!(
            a.want(),
            Want::On {
                time: 60,
                intvl: 1,
                probes: 3
            }
        );
        let a = parse(&["198.51.100.2:9000", "--time", "2h", "--intvl", "75s"]).unwrap();
        assert_eq!(
            a.want(),
            Want::On {
                time: 7200,
                intvl: 75,
                probes: 3
            }
        );
        assert_eq!(
            parse(&["198.51.100.2:9000", "--off"]).unwrap().want(),
            Want::Off
        );
    }

    #[test]
    fn rejects_values_the_kernel_would_refuse_with_the_reason() {
        for (args, needle) in [
            (vec!["--time", "500ms"], "below 1s"),
            (vec!["--intvl", "0s"], "below 1s"),
            (vec!["--time", "1500ms"], "whole seconds"),
            (vec!["--time", "32768s"], "32767"),
            (vec!["--intvl", "10h"], "32767"),
            (vec!["--probes", "0"], "TCP_KEEPCNT"),
            (vec!["--probes", "128"], "TCP_KEEPCNT"),
            (vec!["--probes", "x"], "not a count"),
            (vec!["--time", "soon"], "not a duration"),
            (vec!["--off", "--time", "5s"], "cannot be used with"),
        ] {
            let mut full = vec!["198.51.100.2:9000"];
            full.extend_from_slice(&args);
            let e = parse(&full).expect_err(&args.join(" "));
            assert!(e.contains(needle), "{args:?}: {e}");
        }
    }

    #[test]
    fn limits_are_inclusive() {
        assert_eq!(keep_secs("32767s"), Ok(32767));
        assert_eq!(keep_secs("1s"), Ok(1));
        assert_eq!(keep_count("127"), Ok(127));
        assert_eq!(keep_count("1"), Ok(1));
    }

    #[test]
    fn check_accepts_the_expected_state_and_a_hidden_timer() {
        let f = Flow {
            local: "198.18.0.1:1".parse().unwrap(),
            remote: "198.18.0.2:2".parse().unwrap(),
        };
        let on = Want::On {
            time: 1,
            intvl: 1,
            probes: 1,
        };
        let armed = Keepalive::On {
            next: Duration::from_secs(1),
            probes: 0,
        };
        assert!(check(&f, on, armed).is_ok());
        assert!(check(&f, Want::Off, Keepalive::Off).is_ok());
        assert!(check(&f, on, Keepalive::Unknown("retransmit")).is_ok());
        assert_eq!(check(&f, on, Keepalive::Off).unwrap_err().exit_code(), 7);
        assert_eq!(check(&f, Want::Off, armed).unwrap_err().exit_code(), 7);
    }

    #[test]
    fn sets_and_reads_back_keepalive_on_a_borrowed_socket() {
        use std::net::{TcpListener, TcpStream};
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let me = Owner {
            pid: std::process::id(),
            fd: c.as_raw_fd(),
            command: "test".into(),
        };
        let link = std::fs::read_link(format!("/proc/self/fd/{}", c.as_raw_fd())).unwrap();
        let inode = crate::sys::owner::socket_inode(link.to_str().unwrap()).unwrap();
        let (_, dup) = borrow(std::slice::from_ref(&me), inode).unwrap();
        let want = Want::On {
            time: 5,
            intvl: 2,
            probes: 4,
        };
        apply(&dup, want).unwrap();
        drop(dup);
        // The application's own descriptor sees the options.
        let s = SockRef::from(&c);
        assert!(s.keepalive().unwrap());
        assert_eq!(s.keepalive_time().unwrap(), Duration::from_secs(5));
        assert_eq!(s.keepalive_interval().unwrap(), Duration::from_secs(2));
        assert_eq!(s.keepalive_retries().unwrap(), 4);
        let (_, dup) = borrow(std::slice::from_ref(&me), inode).unwrap();
        apply(&dup, Want::Off).unwrap();
        assert!(!Settings::read(&dup).unwrap().on);
        // A wrong inode is refused rather than touched.
        let e = borrow(std::slice::from_ref(&me), inode.wrapping_add(1)).unwrap_err();
        assert_eq!(e.exit_code(), 7);
    }
}
