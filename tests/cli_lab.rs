//! The command line against real connections in the lab: SIGINT/SIGTERM print what was
//! decided and exit 130, `sweep --json` streams, closed pipes end quietly, each input form,
//! the hints for a reversed or non-established flow, durations and plurals, and the lab's
//! own address plan and fault messages.

mod common;

use std::io::Read;
use std::net::{Shutdown, SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{Lab, describe, in_netns, run_bounded, run_kaprobe};
use serde_json::Value;

fn kaprobe() -> &'static str {
    env!("CARGO_BIN_EXE_kaprobe")
}

/// A kaprobe run in A's namespace whose stdout lines are timestamped as they arrive.
struct Live {
    child: Child,
    lines: mpsc::Receiver<(Instant, String)>,
    stderr: JoinHandle<String>,
    /// Run with `--json`: every line is checked against the schema as it is read.
    json: bool,
}

fn spawn(lab: &Lab, args: &[&str]) -> Live {
    let common::Spawned {
        child,
        lines,
        stderr,
    } = common::spawn_in_a(lab, args);
    Live {
        child,
        lines,
        stderr,
        json: common::prints_json(args),
    }
}

impl Live {
    /// The next stdout line, waiting at most `within`.
    fn line(&self, within: Duration) -> (Instant, String) {
        let (at, line) = self
            .lines
            .recv_timeout(within)
            .unwrap_or_else(|e| panic!("no line from kaprobe within {within:?}: {e}"));
        if self.json {
            common::json_line(&line);
        }
        (at, line)
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    fn signal(&self, sig: libc::c_int) {
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// Waits (bounded) for the end: exit code, when it ended, the lines not yet read, stderr.
    fn wait(mut self, within: Duration) -> (i32, Instant, Vec<String>, String) {
        let deadline = Instant::now() + within;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("kaprobe did not end within {within:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let ended = Instant::now();
        let err = self.stderr.join().unwrap_or_default();
        let rest: Vec<String> = self.lines.iter().map(|(_, l)| l).collect();
        if self.json {
            rest.iter().for_each(|l| drop(common::json_line(l)));
        }
        (status.code().unwrap_or(-1), ended, rest, err)
    }
}

/// A `--json` line, checked against the schema.
fn json(line: &str) -> Value {
    common::json_line(line)
}

/// B stops answering on `port`: its connections there are dead.
fn kill_port(lab: &Lab, port: u16) {
    common::nft(
        &lab.ns('b'),
        &format!(
            "table inet kpdead{port} {{\n chain input {{ type filter hook input priority 0; \
             tcp dport {port} drop; }}\n}}\n"
        ),
    );
}

/// Runs `script` with bash; `$K` is kaprobe and `$NS` A's namespace.
fn bash(lab: &Lab, script: &str) -> (i32, String, String, Duration) {
    let mut cmd = Command::new("bash");
    cmd.args(["-c", script])
        .env("K", kaprobe())
        .env("NS", lab.ns('a'));
    run_bounded(cmd, &format!("bash -c '{script}'"))
}

fn sigint_during_a_sweep_prints_decided_verdicts_then_the_rest_as_interrupted() {
    let lab = Lab::up_or_skip("direct", None);
    let _alive1 = lab.connect(false, 9901, 45901);
    let _alive2 = lab.connect(true, 9901, 45902);
    let _dead = lab.connect(false, 9903, 45903);
    kill_port(&lab, 9903);
    let (dl, dr) = lab.ends(false, 9903, 45903);

    // To the end: alive verdicts are printed at once, the dead one after its probes.
    let run = spawn(&lab, &["--json", "sweep", "--intvl", "1s", "--probes", "2"]);
    let started = Instant::now();
    let (t1, l1) = run.line(Duration::from_secs(5));
    let (t2, l2) = run.line(Duration::from_secs(5));
    for l in [&l1, &l2] {
        assert_eq!(json(l)["verdict"], "alive", "{l}");
    }
    let (code, ended, rest, err) = run.wait(Duration::from_secs(10));
    assert_eq!(code, 1, "dead is the worst: {err}\n{rest:?}");
    assert!(
        ended.duration_since(t1.max(t2)) > Duration::from_millis(1500),
        "alive verdicts came {:?} and {:?} after the start, the end {:?}: not streamed",
        t1 - started,
        t2 - started,
        ended - started
    );
    assert_eq!(json(&rest[0])["verdict"], "dead", "{rest:?}");
    assert_eq!(json(&rest[1])["event"], "summary", "{rest:?}");

    // Interrupted while the dead one is still being probed.
    let mut run = spawn(&lab, &["--json", "sweep", "--intvl", "2s", "--probes", "5"]);
    let (_, l1) = run.line(Duration::from_secs(5));
    let (_, l2) = run.line(Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        run.running(),
        "the sweep goes on while the dead peer is probed"
    );
    run.signal(libc::SIGINT);
    let (code, _, rest, err) = run.wait(Duration::from_secs(5));
    assert_eq!(code, 130, "{err}\n{l1}\n{l2}\n{rest:?}");
    for l in [&l1, &l2] {
        assert_eq!(json(l)["verdict"], "alive", "{l}");
    }
    assert_eq!(rest.len(), 2, "the rest, then the summary: {rest:?}");
    let cut = json(&rest[0]);
    assert_eq!(cut["verdict"], "interrupted", "{cut}");
    assert_eq!(cut["flow"], format!("{dl}-{dr}"), "{cut}");
    assert!(
        cut["probes_sent"].is_null() && cut["rtt_us"].is_null(),
        "{cut}"
    );
    let summary = json(&rest[1]);
    assert_eq!(summary["event"], "summary", "{summary}");
    assert_eq!(summary["connections"], 3, "{summary}");
    assert_eq!(summary["alive"], 2, "{summary}");
    assert_eq!(summary["interrupted"], 1, "{summary}");
    assert_eq!(summary["dead"], 0, "{summary}");

    // The human table: sorted, interrupted last, then the summary.
    let run = spawn(&lab, &["sweep", "--intvl", "2s", "--probes", "5"]);
    std::thread::sleep(Duration::from_millis(1500));
    run.signal(libc::SIGTERM);
    let (code, _, out, err) = run.wait(Duration::from_secs(5));
    assert_eq!(code, 130, "{err}\n{out:?}");
    let labels: Vec<&str> = out[1..4]
        .iter()
        .map(|l| l.split_whitespace().nth(1).unwrap_or(""))
        .collect();
    assert_eq!(labels, ["alive", "alive", "interrupted"], "{out:?}");
    assert!(
        out[4].starts_with(
            "3 connections: 2 alive, 0 dead, 0 reset, 0 unreachable, 1 interrupted in "
        ),
        "{out:?}"
    );
}

fn sigint_or_sigterm_during_a_probe_prints_the_flow_as_interrupted() {
    let lab = Lab::up_or_skip("direct", None);
    let _c = lab.connect(false, 9911, 45911);
    kill_port(&lab, 9911);
    let (l, r) = lab.ends(false, 9911, 45911);
    let flow = format!("{l}-{r}");
    let run = spawn(&lab, &["probe", "--intvl", "2s", "--probes", "5", &flow]);
    std::thread::sleep(Duration::from_millis(1000));
    run.signal(libc::SIGINT);
    let (code, _, out, err) = run.wait(Duration::from_secs(5));
    assert_eq!(code, 130, "{err}");
    assert_eq!(out, [format!("{flow} interrupted")], "{err}");

    let run = spawn(
        &lab,
        &["--json", "probe", "--intvl", "2s", "--probes", "5", &flow],
    );
    std::thread::sleep(Duration::from_millis(1000));
    run.signal(libc::SIGTERM);
    let (code, _, out, err) = run.wait(Duration::from_secs(5));
    assert_eq!(code, 130, "{err}");
    assert_eq!(out.len(), 1, "{out:?}");
    let v = json(&out[0]);
    assert_eq!(v["event"], "verdict");
    assert_eq!(v["verdict"], "interrupted");
    assert_eq!(v["flow"], flow);
}

/// Accepts and holds connections on `addr` in B until dropped.
struct Server {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn start(ns: &str, addrs: Vec<SocketAddr>) -> Server {
        let listeners: Vec<TcpListener> = in_netns(ns, move || {
            addrs
                .into_iter()
                .map(|a| TcpListener::bind(a).unwrap_or_else(|e| panic!("bind {a}: {e}")))
                .collect()
        });
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut held = Vec::new();
            for l in &listeners {
                l.set_nonblocking(true).unwrap();
            }
            while !flag.load(Ordering::SeqCst) {
                for l in &listeners {
                    if let Ok((s, _)) = l.accept() {
                        held.push(s);
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Server {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn sigint_during_nat_timeout_prints_the_bracket_so_far() {
    let lab = Lab::up_or_skip("nat", Some(30));
    let _server = Server::start(&lab.ns('b'), vec!["198.51.100.2:9920".parse().unwrap()]);
    let run = spawn(
        &lab,
        &[
            "--json",
            "nat-timeout",
            "--min",
            "1s",
            "--max",
            "20s",
            "--parallel",
            "4",
            "198.51.100.2:9920",
        ],
    );
    // Idle times 1s, 2.7s, 7.4s, 20s: the first is measured alive after about 1 s.
    std::thread::sleep(Duration::from_millis(2000));
    run.signal(libc::SIGINT);
    let (code, _, out, err) = run.wait(Duration::from_secs(5));
    assert_eq!(code, 130, "{err}\n{out:?}");
    assert_eq!(out.len(), 1, "{out:?}");
    let v = json(&out[0]);
    assert_eq!(v["event"], "result", "{v}");
    assert_eq!(v["interrupted"], true, "{v}");
    assert!(v["upper_ms"].is_null(), "nothing died yet: {v}");
    let lower = v["lower_ms"].as_u64().unwrap();
    assert!((1000..2700).contains(&lower), "{v}");
    assert!(!v["measurements"].as_array().unwrap().is_empty(), "{v}");
}

fn nat_timeout_resolves_host_names() {
    let lab = Lab::up_or_skip("direct", None);
    let _server = Server::start(
        &lab.ns('a'),
        vec![
            "127.0.0.1:9921".parse().unwrap(),
            "[::1]:9921".parse().unwrap(),
        ],
    );
    let (code, out, err, _) = run_kaprobe(
        &lab,
        &[
            "nat-timeout",
            "--min",
            "200ms",
            "--max",
            "1s",
            "--parallel",
            "2",
            "localhost:9921",
        ],
    );
    assert_eq!(code, 0, "{}", describe(code, &out, &err));
    let v = json(out.trim());
    let target = v["target"].as_str().unwrap();
    assert!(target == "127.0.0.1:9921" || target == "[::1]:9921", "{v}");
    assert!(v["upper_ms"].is_null(), "loopback keeps everything: {v}");

    let (code, _, err, _) = run_kaprobe(&lab, &["nat-timeout", "no-such-host.invalid:9921"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("cannot resolve 'no-such-host.invalid:9921'"),
        "{err}"
    );
}

fn local_and_remote_as_two_arguments_work_everywhere() {
    let lab = Lab::up_or_skip("direct", None);
    let (_c, _s) = lab.connect(false, 9930, 45930);
    let (l, r) = lab.ends(false, 9930, 45930);
    let (ls, rs) = (l.to_string(), r.to_string());
    let flow = format!("{l}-{r}");

    let (code, out, err, _) = run_kaprobe(&lab, &["probe", &ls, &rs]);
    assert_eq!(code, 0, "{}", describe(code, &out, &err));
    assert_eq!(common::verdict_json(&out)["flow"], flow);

    let (code, out, err, _) = run_kaprobe(&lab, &["enable", "--time", "60s", &ls, &rs]);
    assert_eq!(code, 0, "{}", describe(code, &out, &err));
    assert_eq!(json(out.trim())["flow"], flow);

    let (code, out, err, _) = run_kaprobe(&lab, &["sniff", "--duration", "500ms", &ls, &rs]);
    assert_eq!(code, 0, "{}", describe(code, &out, &err));
    assert_eq!(json(out.trim())["event"], "summary");

    let run = spawn(&lab, &["--json", "watch", "--time", "0s", &ls, &rs]);
    let (_, first) = run.line(Duration::from_secs(5));
    run.signal(libc::SIGTERM);
    let (code, _, rest, err) = run.wait(Duration::from_secs(5));
    assert_eq!(code, 0, "{err}");
    assert_eq!(json(&first)["flow"], flow, "{first}");
    assert_eq!(json(&rest[rest.len() - 1])["event"], "summary", "{rest:?}");

    let (code, _, err, _) = run_kaprobe(&lab, &["probe", &flow, &rs]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("one argument too many"), "{err}");
    let (code, _, err, _) = run_kaprobe(&lab, &["probe", &ls, "[2001:db8:51::2]:9930"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("mix IPv4 and IPv6"), "{err}");
}

fn a_reversed_flow_gets_the_right_orientation() {
    let lab = Lab::up_or_skip("direct", None);
    let (_c, _s) = lab.connect(false, 9931, 45931);
    let (l, r) = lab.ends(false, 9931, 45931);
    let (code, out, err, _) = run_kaprobe(&lab, &["probe", &format!("{r}-{l}")]);
    assert_eq!(code, 5, "{}", describe(code, &out, &err));
    assert!(
        err.contains(&format!(
            "{l}-{r} is: name the connection with this host's side"
        )),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    let (code, _, err, _) = run_kaprobe(&lab, &["probe", &l.to_string()]);
    assert_eq!(code, 5, "{err}");
    assert!(
        err.contains(&format!(
            "{l} is this host's side of {l}-{r}: give REMOTE ({r})"
        )),
        "{err}"
    );
}

fn a_connection_that_is_not_established_is_named_by_its_state() {
    let lab = Lab::up_or_skip("direct", None);
    let state_of = |server: u16, client: u16| {
        let (l, r) = lab.ends(false, server, client);
        let (code, out, err, _) = run_kaprobe(&lab, &["probe", &format!("{l}-{r}")]);
        assert_eq!(code, 5, "{}", describe(code, &out, &err));
        err
    };
    // The peer closed: CLOSE-WAIT here.
    let (c1, s1) = lab.connect(false, 9932, 45932);
    drop(s1);
    std::thread::sleep(Duration::from_millis(200));
    let err = state_of(9932, 45932);
    assert!(
        err.contains("is in state CLOSE-WAIT, not established"),
        "{err}"
    );
    // We closed our side, the peer did not: FIN-WAIT-2.
    let (c2, _s2) = lab.connect(false, 9933, 45933);
    c2.shutdown(Shutdown::Write).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let err = state_of(9933, 45933);
    assert!(err.contains("is in state FIN-WAIT-2"), "{err}");
    // Both closed, we first: TIME-WAIT.
    let (c3, mut s3) = lab.connect(false, 9934, 45934);
    c3.shutdown(Shutdown::Write).unwrap();
    let mut buf = Vec::new();
    s3.read_to_end(&mut buf).unwrap();
    drop(s3);
    std::thread::sleep(Duration::from_millis(200));
    drop(c3);
    let err = state_of(9934, 45934);
    assert!(err.contains("is in state TIME-WAIT"), "{err}");
    drop((c1, c2));
}

fn closed_pipes_end_every_command_quietly() {
    let lab = Lab::up_or_skip("direct", None);
    let (c, s) = lab.connect(false, 9940, 45940);
    let (l, r) = lab.ends(false, 9940, 45940);
    let flow = format!("{l}-{r}");
    // The reader is gone before kaprobe writes: it ends by SIGPIPE, as grep does.
    for args in [
        "list",
        "--json list",
        &format!("probe {flow}"),
        "--json sweep",
        "sweep",
        &format!("enable --time 30s {flow}"),
    ] {
        let (code, out, err, _) = bash(
            &lab,
            &format!(
                "{{ sleep 0.3; \"$K\" --netns \"$NS\" {args}; }} | true; echo \"${{PIPESTATUS[0]}}\""
            ),
        );
        assert_eq!(code, 0, "{err}");
        assert_eq!(out.trim(), "141", "kaprobe {args}: {err}");
        assert!(err.is_empty(), "kaprobe {args}: {err}");
    }
    // enable had finished its work: the socket has keepalive on.
    let (_, out, _, _) = run_kaprobe(&lab, &["list", "--port", "45940"]);
    assert_eq!(json(out.trim())["keepalive"], "on", "{out}");

    // watch and sniff notice at once, not at a next write that may never come.
    let (code, out, err, took) = bash(
        &lab,
        &format!(
            "\"$K\" --netns \"$NS\" --json watch --time 0s {flow} | head -1; \
             echo \"${{PIPESTATUS[0]}}\""
        ),
    );
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(json(lines[0])["state"], "alive", "{out}");
    assert_eq!(lines[1], "141", "{out}\n{err}");
    assert!(
        took < Duration::from_secs(5),
        "watch took {took:?} to notice"
    );
    assert!(err.is_empty(), "{err}");

    let mut sniff = Command::new("bash")
        .args([
            "-c",
            "\"$K\" --netns \"$NS\" --json sniff \"$FLOW\" | head -1; echo \"${PIPESTATUS[0]}\"",
        ])
        .env("K", kaprobe())
        .env("NS", lab.ns('a'))
        .env("FLOW", &flow)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    // The tracker learns each direction from traffic before it can tell a probe.
    common::assert_still_carries_data(&c, &s);
    let (code, out, err, _) = run_kaprobe(&lab, &["probe", &flow]);
    assert_eq!(code, 0, "{}", describe(code, &out, &err));
    let deadline = Instant::now() + Duration::from_secs(5);
    while sniff.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "sniff did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut out = String::new();
    sniff
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let mut err = String::new();
    sniff
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(json(lines[0])["event"], "keepalive_probe", "{out}");
    assert_eq!(lines[1], "141", "{out}\n{err}");
    assert!(err.is_empty(), "{err}");
}

fn sniff_count_1_reports_the_answer_too() {
    let lab = Lab::up_or_skip("direct", None);
    let (c, s) = lab.connect(false, 9950, 45950);
    let (l, r) = lab.ends(false, 9950, 45950);
    let flow = format!("{l}-{r}");
    let run = spawn(&lab, &["sniff", "--count", "1", "--duration", "8s", &flow]);
    std::thread::sleep(Duration::from_millis(1000));
    common::assert_still_carries_data(&c, &s);
    let (code, out, err, _) = run_kaprobe(&lab, &["probe", &flow]);
    assert_eq!(code, 0, "{}", describe(code, &out, &err));
    let (code, ended, out, err) = run.wait(Duration::from_secs(8));
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.len(), 3, "probe, answer, summary: {out:?}");
    assert!(out[0].contains("keepalive probe"), "{out:?}");
    assert!(out[1].contains("keepalive ack"), "{out:?}");
    assert!(
        out[2].starts_with("1 keepalive probe, 1 answered, from 1 sender in "),
        "{out:?}"
    );
    assert!(Instant::now() - ended < Duration::from_secs(5));
}

fn durations_plurals_and_json_times_read_right() {
    let lab = Lab::up_or_skip("direct", None);
    let (_c, _s) = lab.connect(false, 9960, 45960);
    let (l, r) = lab.ends(false, 9960, 45960);
    let flow = format!("{l}-{r}");

    let (code, out, err, _) = run_bounded(
        {
            let mut c = Command::new(kaprobe());
            c.args(["--netns", &lab.ns('a'), "sweep", "--port", "9960"]);
            c
        },
        "sweep",
    );
    assert_eq!(code, 0, "{err}");
    let last = out.lines().last().unwrap();
    assert!(
        last.starts_with("1 connection: 1 alive, 0 dead, 0 reset, 0 unreachable in "),
        "{last}"
    );
    assert!(last.ends_with("ms") || last.ends_with('s'), "{last}");

    // Every number in -v JSON events is an integer (µs or ms).
    let (code, out, err, _) = run_kaprobe(&lab, &["-v", "probe", &flow]);
    assert_eq!(code, 0, "{err}");
    for line in out.lines() {
        let v = json(line);
        for (k, n) in v.as_object().unwrap() {
            if n.is_number() {
                assert!(n.is_u64() || n.is_i64(), "{k} = {n} in {line}");
            }
        }
        if v["event"] == "probe" || v["event"] == "learned" {
            assert!(v["t_us"].is_u64(), "{line}");
        }
    }

    // watch says how long it ran.
    let run = spawn(&lab, &["watch", "--time", "0s", &flow]);
    std::thread::sleep(Duration::from_millis(1500));
    run.signal(libc::SIGINT);
    let (code, _, out, err) = run.wait(Duration::from_secs(5));
    assert_eq!(code, 0, "{err}");
    let summary = out.last().unwrap();
    assert!(
        summary.starts_with("watched 1 connection for "),
        "{summary}"
    );
    let ran = summary["watched 1 connection for ".len()..]
        .split(':')
        .next()
        .unwrap();
    let secs: f64 = ran.trim_end_matches('s').parse().unwrap_or(0.0);
    assert!((1.0..5.0).contains(&secs), "ran {ran}: {summary}");
}

fn lab_fault_commands_say_which_topologies_they_apply_to() {
    if !common::require_lab() {
        return;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/lab.sh");
    let lab_sh = |args: &[&str]| {
        let out = Command::new(script).args(args).output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, help, _) = lab_sh(&["--help"]);
    assert_eq!(code, 0);
    assert!(
        help.contains("reject NAME host-unreachable|admin-prohibited"),
        "{help}"
    );
    assert!(help.contains("[routed, nat] in R: reject"), "{help}");
    assert!(help.contains("[nat] in R: flush conntrack"), "{help}");

    let direct = Lab::up("direct", None);
    let (code, _, err) = lab_sh(&["reject", &direct.name, "host-unreachable"]);
    assert_ne!(code, 0);
    assert!(
        err.contains(&format!(
            "reject applies to routed and nat labs only; {} is a direct lab",
            direct.name
        )),
        "{err}"
    );
    let routed = Lab::up("routed", None);
    let (code, _, err) = lab_sh(&["nat-expire", &routed.name]);
    assert_ne!(code, 0);
    assert!(
        err.contains(&format!(
            "nat-expire applies to nat labs only; {} is a routed lab",
            routed.name
        )),
        "{err}"
    );
}

fn a_and_b_have_the_same_addresses_in_every_topology() {
    if !common::require_lab() {
        return;
    }
    for kind in ["direct", "routed", "nat"] {
        let lab = Lab::up(kind, None);
        let addrs = |which| lab.exec(which, &["ip", "-o", "addr", "show", "dev", "eth0"]);
        let a = addrs('a');
        let b = addrs('b');
        for want in ["198.18.0.2/24", "2001:db8:18::2/64"] {
            assert!(a.contains(want), "{kind}: A lacks {want}: {a}");
        }
        for want in ["198.51.100.2/24", "2001:db8:51::2/64"] {
            assert!(b.contains(want), "{kind}: B lacks {want}: {b}");
        }
        for v6 in [false, true] {
            let (c, s) = lab.connect(v6, 9970, 45970 + u16::from(v6));
            common::assert_still_carries_data(&c, &s);
            assert_eq!(c.local_addr().unwrap().ip(), lab.a_addr(v6), "{kind}");
            assert_eq!(c.peer_addr().unwrap().ip(), lab.b_addr(v6), "{kind}");
        }
    }
}

crate::tests!(
    sigint_during_a_sweep_prints_decided_verdicts_then_the_rest_as_interrupted,
    sigint_or_sigterm_during_a_probe_prints_the_flow_as_interrupted,
    sigint_during_nat_timeout_prints_the_bracket_so_far,
    nat_timeout_resolves_host_names,
    local_and_remote_as_two_arguments_work_everywhere,
    a_reversed_flow_gets_the_right_orientation,
    a_connection_that_is_not_established_is_named_by_its_state,
    closed_pipes_end_every_command_quietly,
    sniff_count_1_reports_the_answer_too,
    durations_plurals_and_json_times_read_right,
    lab_fault_commands_say_which_topologies_they_apply_to,
    a_and_b_have_the_same_addresses_in_every_topology,
);
