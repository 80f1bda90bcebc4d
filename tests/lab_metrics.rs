//! Issue 12's proofs in the lab: a real Prometheus server scraping `watch --metrics` sees one
//! connection go `dead` when its peer is blackholed and the rest stay `alive`; `promtool check
//! metrics` accepts a live `/metrics` body and a `sweep --textfile`; the textfile after an
//! interrupted sweep; a directory kaprobe cannot write in; and `watch` under systemd's
//! protocols (NOTIFY_SOCKET: READY, WATCHDOG, STOPPING; JOURNAL_STREAM: priorities and no
//! timestamps).
//!
//! kaprobe runs in the lab's A namespace (`--netns`), while `--metrics` listens on the host's
//! loopback, where it was started; Prometheus listens and scrapes there too (127.0.0.1 only).

mod common;
mod prom;

use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Background, Lab, ScratchDir, describe, run_kaprobe};
use prom::{
    Prometheus, connections, free_port, promtool_check, sample, try_http_get, wait_metrics,
};

/// B stops answering on `port`: everything to it is dropped, as if that peer host died.
fn blackhole_port(lab: &Lab, port: u16) {
    common::nft(
        &lab.ns('b'),
        &format!(
            "table inet kpmetrics {{\n chain input {{ type filter hook input priority -10; tcp dport {port} drop; }}\n}}\n"
        ),
    );
}

fn prometheus_sees_the_blackholed_peer_dead_and_the_rest_alive() {
    if !common::require_lab()
        || !prom::require_tool("prometheus")
        || !prom::require_tool("promtool")
    {
        return;
    }
    let lab = Lab::up("direct", None);
    let _conns = connections(&lab, 9741, 4);
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let watch = Background::start(
        &lab,
        &[
            "watch",
            "--remote",
            "198.51.100.2",
            "--time",
            "1s",
            "--intvl",
            "500ms",
            "--probes",
            "2",
            "--metrics",
            &addr.to_string(),
            "--metrics-per-connection",
        ],
    );
    // The endpoint is on the host's loopback although kaprobe watches A's connections.
    let body = wait_metrics(addr, Duration::from_secs(15), |b| {
        sample(b, r#"kaprobe_connections{state="alive"}"#) == Some(4.0)
    });
    let dir = ScratchDir::new("lab-metrics");
    let scraped = dir.0.join("metrics.txt");
    std::fs::write(&scraped, &body).unwrap();
    promtool_check(&scraped);
    assert!(
        sample(&body, "kaprobe_probes_sent_total").is_some_and(|n| n >= 4.0),
        "{body}"
    );
    assert_eq!(
        sample(
            &body,
            r#"kaprobe_connection_state{local="198.18.0.2:44741",remote="198.51.100.2:9741",state="alive"}"#
        ),
        Some(1.0),
        "{body}"
    );

    let prom = Prometheus::start(addr);
    prom.wait_for(
        &[
            ("up{job=\"kaprobe\"}", 1.0),
            ("kaprobe_connections{state=\"alive\"}", 4.0),
            ("kaprobe_connections{state=\"dead\"}", 0.0),
        ],
        Duration::from_secs(30),
    );

    // One peer goes silent: dead after --time 1s + 2 x 500 ms of silence, seen by the next
    // scrape (every second).
    blackhole_port(&lab, 9744);
    let blackholed = Instant::now();
    prom.wait_for(
        &[
            ("kaprobe_connections{state=\"dead\"}", 1.0),
            ("kaprobe_connections{state=\"alive\"}", 3.0),
            ("kaprobe_connections{state=\"pending\"}", 0.0),
        ],
        Duration::from_secs(20),
    );
    let took = blackholed.elapsed();
    let dead = prom
        .query("kaprobe_connection_state{state=\"dead\"}")
        .expect("query");
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].0["local"], "198.18.0.2:44744", "{dead:?}");
    assert_eq!(dead[0].0["remote"], "198.51.100.2:9744", "{dead:?}");
    assert!(
        prom.query_one("kaprobe_verdicts_total{verdict=\"dead\"}")
            .is_some_and(|n| n >= 1.0)
    );
    assert!(
        prom.query_one("kaprobe_probe_rtt_seconds_count")
            .is_some_and(|n| n >= 4.0)
    );
    assert!(
        prom.query_one("kaprobe_kills_total") == Some(0.0),
        "--on-dead report kills nothing"
    );

    let (code, out, err) = watch.stop();
    assert_eq!(code, 0, "{}", describe(code, &out, &err));
    let dead_events: Vec<serde_json::Value> = out
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "state" && v["state"] == "dead")
        .collect();
    assert_eq!(dead_events.len(), 1, "{out}");
    assert_eq!(dead_events[0]["local"], "198.18.0.2:44744");
    eprintln!("dead in Prometheus {took:?} after the blackhole");
    // The server stopped with kaprobe.
    assert!(try_http_get(addr, "/metrics", None).is_none());
}

/// The textfile's sample for `series`, failing the test when it is not there.
fn textfile_value(text: &str, series: &str) -> f64 {
    sample(text, series).unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

/// The textfile tests' lab: three connections to B from port `base` on, the last one
/// blackholed. None (the test is skipped) without a lab or promtool.
fn textfile_lab(base: u16) -> Option<(Lab, Vec<(TcpStream, TcpStream)>)> {
    if !common::require_lab() || !prom::require_tool("promtool") {
        return None;
    }
    let lab = Lab::up("direct", None);
    let conns = connections(&lab, base, 3);
    blackhole_port(&lab, base + 2);
    Some((lab, conns))
}

fn sweep_textfile_counts_the_verdicts_and_passes_promtool() {
    let Some((lab, _conns)) = textfile_lab(9751) else {
        return;
    };
    let dir = ScratchDir::new("lab-textfile");
    let path = dir.0.join("kaprobe.prom");
    let path_s = path.to_str().unwrap();

    // A directory that does not exist: exit 2, one line, nothing probed.
    let missing = dir.0.join("nope/kaprobe.prom");
    let (code, out, err, _) =
        run_kaprobe(&lab, &["sweep", "--textfile", missing.to_str().unwrap()]);
    assert_eq!(code, 2, "{}", describe(code, &out, &err));
    assert_eq!(err.lines().count(), 1, "{err}");
    common::error_json(code, &out, &err, "usage");
    assert_eq!(out.lines().count(), 1, "only the error object: {out}");

    // A directory root may write in only with CAP_DAC_OVERRIDE, which kaprobe has given up
    // before it probes: exit 2 naming the directory, and no probe sent.
    let theirs = dir.0.join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
    let (code, out, err, _) = run_kaprobe(
        &lab,
        &[
            "sweep",
            "--textfile",
            theirs.join("kaprobe.prom").to_str().unwrap(),
        ],
    );
    assert_eq!(code, 2, "{}", describe(code, &out, &err));
    assert!(
        err.contains("cannot create a file in") && err.contains("theirs"),
        "{err}"
    );
    assert!(!out.contains("\"verdict\""), "no verdict: {out}");
    assert_eq!(std::fs::read_dir(&theirs).unwrap().count(), 0);

    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let (code, out, err, _) = run_kaprobe(
        &lab,
        &[
            "sweep",
            "--remote",
            "198.51.100.2",
            "--probes",
            "2",
            "--intvl",
            "300ms",
            "--textfile",
            path_s,
        ],
    );
    assert_eq!(
        code,
        1,
        "worst verdict dead\n{}",
        describe(code, &out, &err)
    );
    let text = std::fs::read_to_string(&path).expect("the textfile");
    assert!(text.ends_with('\n'));
    assert_eq!(
        std::fs::read_dir(&dir.0).unwrap().count(),
        2,
        "kaprobe.prom and theirs: no temporary file left"
    );
    promtool_check(&path);
    for (series, want) in [
        (r#"kaprobe_connections{state="alive"}"#, 2.0),
        (r#"kaprobe_connections{state="dead"}"#, 1.0),
        (r#"kaprobe_connections{state="pending"}"#, 0.0),
        (r#"kaprobe_verdicts_total{verdict="alive"}"#, 2.0),
        (r#"kaprobe_verdicts_total{verdict="dead"}"#, 1.0),
        // One probe per alive connection, two for the dead one.
        ("kaprobe_probes_sent_total", 4.0),
        ("kaprobe_probe_rtt_seconds_count", 2.0),
    ] {
        assert_eq!(textfile_value(&text, series), want, "{series}\n{text}");
    }
    // Nothing matches: exit 5, and a file of zeros replaces the last sweep's.
    let (code, out, err, _) = run_kaprobe(&lab, &["sweep", "--port", "1", "--textfile", path_s]);
    assert_eq!(code, 5, "{}", describe(code, &out, &err));
    let empty = std::fs::read_to_string(&path).unwrap();
    promtool_check(&path);
    assert_eq!(
        textfile_value(&empty, r#"kaprobe_connections{state="alive"}"#),
        0.0
    );
    assert_eq!(textfile_value(&empty, "kaprobe_probes_sent_total"), 0.0);

    let ts = textfile_value(&text, "kaprobe_sweep_timestamp_seconds");
    assert!((ts - before).abs() < 5.0, "{ts} vs {before}");
    let took = textfile_value(&text, "kaprobe_sweep_duration_seconds");
    // Dead after 2 x 300 ms of silence.
    assert!((0.5..5.0).contains(&took), "{took}\n{text}");
}

fn an_interrupted_sweep_writes_what_was_decided() {
    let Some((lab, _conns)) = textfile_lab(9761) else {
        return;
    };
    let dir = ScratchDir::new("lab-textfile-int");
    let path = dir.0.join("kaprobe.prom");
    // The blackholed connection would take 5 x 2 s: SIGTERM comes first.
    let mut sweep = Background::start(
        &lab,
        &[
            "sweep",
            "--remote",
            "198.51.100.2",
            "--probes",
            "5",
            "--intvl",
            "2s",
            "--textfile",
            path.to_str().unwrap(),
        ],
    );
    for _ in 0..2 {
        sweep
            .wait_json(Duration::from_secs(10), |v| {
                v["event"] == "verdict" && v["verdict"] == "alive"
            })
            .expect("two alive verdicts");
    }
    assert!(!path.exists(), "written at the end, not before");
    let (code, out, err) = sweep.stop();
    assert_eq!(code, 130, "{}", describe(code, &out, &err));
    let text = std::fs::read_to_string(&path).expect("the textfile after SIGTERM");
    promtool_check(&path);
    for (series, want) in [
        (r#"kaprobe_connections{state="alive"}"#, 2.0),
        (r#"kaprobe_connections{state="dead"}"#, 0.0),
        (r#"kaprobe_connections{state="pending"}"#, 1.0),
        (r#"kaprobe_verdicts_total{verdict="alive"}"#, 2.0),
    ] {
        assert_eq!(textfile_value(&text, series), want, "{series}\n{text}");
    }
    // The blackholed connection's first probe went too.
    assert!(textfile_value(&text, "kaprobe_probes_sent_total") >= 3.0);
}

/// Everything the test's datagram socket received within `limit`, until `stop` says enough.
fn collect(sock: &UnixDatagram, limit: Duration, stop: impl Fn(&[String]) -> bool) -> Vec<String> {
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !stop(&got) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        sock.set_read_timeout(Some(left.min(Duration::from_millis(200))))
            .unwrap();
        if let Ok(n) = sock.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    got
}

/// Starts `kaprobe --netns A watch ARGS` with `env` (systemd's variables otherwise unset),
/// its stdout and stderr to these files.
fn watch_with_env(
    lab: &Lab,
    args: &[&str],
    env: &[(&str, String)],
    (stdout, stderr): (File, File),
) -> Running {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kaprobe"));
    cmd.args(["--netns", &lab.ns('a'), "watch"])
        .args(args)
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .env_remove("JOURNAL_STREAM")
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr);
    for (k, v) in env {
        cmd.env(k, v);
    }
    Running(Some(cmd.spawn().expect("start kaprobe watch")))
}

/// Files `out` and `err` in `dir`, for a child's stdout and stderr.
fn out_err(dir: &ScratchDir) -> (File, File) {
    (
        File::create(dir.join("out")).unwrap(),
        File::create(dir.join("err")).unwrap(),
    )
}

/// Waits (bounded) until the file at `path` contains `text`; its contents.
fn wait_file(path: &Path, text: &str, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    let read = || std::fs::read_to_string(path).unwrap_or_default();
    while !read().contains(text) {
        assert!(Instant::now() < deadline, "no {text:?} in:\n{}", read());
        std::thread::sleep(Duration::from_millis(100));
    }
    read()
}

/// The watch; killed if the test fails before it is stopped.
struct Running(Option<std::process::Child>);

impl Running {
    /// SIGTERM, then the exit code (bounded wait).
    fn term(mut self) -> i32 {
        let mut child = self.0.take().expect("running");
        common::terminate(&mut child).code().unwrap_or(-1)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn watch_tells_systemd_ready_watchdog_and_stopping() {
    let lab = Lab::up_or_skip("direct", None);
    let _conns = connections(&lab, 9771, 1);
    let dir = ScratchDir::new("lab-notify");
    let path = dir.0.join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    let flow = "198.18.0.2:44771-198.51.100.2:9771";

    // WatchdogSec=1s: a ping at least every 500 ms.
    let running = watch_with_env(
        &lab,
        &["--time", "1s", "--intvl", "500ms", flow],
        &[
            ("NOTIFY_SOCKET", path.to_str().unwrap().to_string()),
            ("WATCHDOG_USEC", "1000000".into()),
        ],
        out_err(&dir),
    );
    let got = collect(&sock, Duration::from_secs(10), |g| {
        g.iter().any(|m| m.contains("READY=1"))
    });
    let err = || std::fs::read_to_string(dir.0.join("err")).unwrap_or_default();
    assert_eq!(
        got.first().map(String::as_str),
        Some("READY=1\nSTATUS=watching 1 connection: 1 pending\n"),
        "{got:?}\n{}",
        err()
    );
    let t = Instant::now();
    let pings = collect(&sock, Duration::from_millis(2200), |_| false);
    let n = pings.iter().filter(|m| *m == "WATCHDOG=1\n").count();
    assert!(
        // 4 or 5 on time; 3 when the machine is busy.
        (3..=6).contains(&n),
        "{n} pings in {:?} (every 500 ms): {pings:?}",
        t.elapsed()
    );
    let code = running.term();
    assert_eq!(code, 0, "{}", err());
    let rest = collect(&sock, Duration::from_secs(2), |g| {
        g.iter().any(|m| m.contains("STOPPING=1"))
    });
    assert!(rest.iter().any(|m| m == "STOPPING=1\n"), "{rest:?}");

    // The watchdog is another process's (WATCHDOG_PID): ready, but no pings.
    let running = watch_with_env(
        &lab,
        &["--time", "1s", "--intvl", "500ms", flow],
        &[
            ("NOTIFY_SOCKET", path.to_str().unwrap().to_string()),
            ("WATCHDOG_USEC", "1000000".into()),
            ("WATCHDOG_PID", "1".into()),
        ],
        out_err(&dir),
    );
    let got = collect(&sock, Duration::from_secs(10), |g| {
        g.iter().any(|m| m.contains("READY=1"))
    });
    assert!(got.iter().any(|m| m.starts_with("READY=1\n")), "{got:?}");
    let more = collect(&sock, Duration::from_millis(1500), |_| false);
    assert!(
        !more.iter().chain(&got).any(|m| m.contains("WATCHDOG=1")),
        "{got:?} {more:?}"
    );
    assert_eq!(running.term(), 0);
}

fn on_the_journal_lines_carry_a_priority_and_no_timestamp() {
    let lab = Lab::up_or_skip("direct", None);
    let _conns = connections(&lab, 9781, 1);
    let flow = "198.18.0.2:44781-198.51.100.2:9781";
    let args = ["-v", "--time", "1s", "--intvl", "500ms", flow];

    // As systemd starts it: stdout and stderr one stream, named by JOURNAL_STREAM.
    let dir = ScratchDir::new("lab-journal");
    let path = dir.join("journal");
    let file = File::create(&path).unwrap();
    use std::os::unix::fs::MetadataExt;
    let meta = file.metadata().unwrap();
    let stream = format!("{}:{}", meta.dev(), meta.ino());
    let journal = [("JOURNAL_STREAM", stream)];
    let running = watch_with_env(&lab, &args, &journal, (file.try_clone().unwrap(), file));
    wait_file(&path, " alive", Duration::from_secs(10));
    assert_eq!(
        running.term(),
        0,
        "{}",
        std::fs::read_to_string(&path).unwrap()
    );
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with(&format!("<6>kaprobe: {flow}: watching"))),
        "info lines start with <6>:\n{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with(&format!("{flow} alive"))),
        "the state line starts with the flow, no timestamp:\n{text}"
    );
    assert!(
        text.lines().all(|l| !l.starts_with("20")),
        "no timestamp anywhere:\n{text}"
    );

    // stderr elsewhere: JOURNAL_STREAM does not name it, so no priorities, and the state
    // line keeps its timestamp.
    let running = watch_with_env(&lab, &args, &journal, out_err(&dir));
    wait_file(&dir.join("out"), " alive", Duration::from_secs(10));
    let code = running.term();
    let out = std::fs::read_to_string(dir.join("out")).unwrap();
    let err = std::fs::read_to_string(dir.join("err")).unwrap();
    assert_eq!(code, 0);
    assert!(
        err.lines()
            .any(|l| l.starts_with(&format!("kaprobe: {flow}: watching"))),
        "{err}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("20") && l.contains(&format!("{flow} alive"))),
        "{out}"
    );
}

crate::tests!(
    prometheus_sees_the_blackholed_peer_dead_and_the_rest_alive,
    sweep_textfile_counts_the_verdicts_and_passes_promtool,
    an_interrupted_sweep_writes_what_was_decided,
    watch_tells_systemd_ready_watchdog_and_stopping,
    on_the_journal_lines_carry_a_priority_and_no_timestamp,
);
