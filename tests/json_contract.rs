//! The JSON contract (README "JSON"): under `--json` every object kaprobe prints, of every
//! subcommand, follows `src/output/schema.json` (format version `"v": 1`), and an error is
//! one `"event": "error"` object on stdout with the exit code it ends with: 2 `usage`,
//! 5 `no-connection`, 6 `privilege` (run as nobody), 7 `failure`.
//!
//! The usage errors need nothing; the rest needs root and the namespace lab (skipped
//! otherwise, a failure when KAPROBE_REQUIRE_NETNS=1).

mod common;

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Lab, LineReader, describe, error_json, in_netns, json_lines, run_kaprobe};
use serde_json::Value;

/// The unprivileged user and group (`nobody`, `nogroup`).
const NOBODY: u32 = 65534;

/// The events among a run's objects, in order (each already checked against the schema).
fn events(out: &str) -> Vec<String> {
    json_lines(out)
        .iter()
        .map(|v| v["event"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// `kaprobe ARGS` (no namespace): exit 2 and exactly one `usage` object on stdout.
fn usage_error(args: &[&str]) -> Value {
    let (code, out, err, _) = common::run_kaprobe_bare(args);
    assert_eq!(code, 2, "{args:?}: {}", describe(code, &out, &err));
    assert_eq!(out.lines().count(), 1, "{args:?}: one object: {out}");
    let e = error_json(code, &out, &err, "usage");
    assert_eq!(e["v"], 1, "{e}");
    e
}

/// A bad command line of every subcommand, caught by clap or by kaprobe itself, with
/// `--json` before or after the subcommand: one `usage` object.
fn usage_errors_of_every_subcommand_are_one_object() {
    let cases: &[&[&str]] = &[
        &["--json", "probe", "198.51.100.2:0"],
        &["probe", "198.51.100.2:9000", "--probes", "0", "--json"],
        &["--json", "sweep", "--local", "not-an-address"],
        &["--json", "watch", "198.51.100.2:0"],
        &[
            "--json",
            "nat-timeout",
            "--min",
            "2s",
            "--max",
            "1s",
            "198.51.100.2:9000",
        ],
        &["--json", "sniff", "198.51.100.2:0"],
        &["--json", "list", "--remote", "nonsense"],
        &["--json", "enable", "--time", "0s", "198.51.100.2:9000"],
        &["--json", "config", "--bogus"],
        &[
            "--json",
            "--netns",
            "kaprobe-json-no-such-namespace",
            "config",
        ],
        &["--json", "no-such-subcommand"],
        &["--json"],
    ];
    for args in cases {
        let e = usage_error(args);
        assert!(!e["message"].as_str().unwrap().starts_with("error:"), "{e}");
    }
    // Without --json, stdout stays empty; after `--` a `--json` is an operand, not the
    // option.
    for args in [
        &["probe", "198.51.100.2:0"][..],
        &["probe", "--", "--json"][..],
    ] {
        let (code, out, err, _) = common::run_kaprobe_bare(args);
        assert_eq!(code, 2, "{}", describe(code, &out, &err));
        assert!(out.is_empty(), "{args:?}: {out}");
    }
}

/// The schema is strict enough to catch a broken contract: what tests/common would let
/// through if it were not.
fn the_schema_rejects_what_breaks_the_contract() {
    let valid = |v: &Value| common::schema().is_valid(v);
    let verdict = serde_json::json!({
        "event": "verdict", "v": 1, "flow": "198.18.0.2:40000-198.51.100.2:9000",
        "local": "198.18.0.2:40000", "remote": "198.51.100.2:9000", "verdict": "alive",
        "probes_sent": 1, "rtt_us": 84, "elapsed_ms": 1, "ignored": 0, "evidence": "probe",
        "source": "kernel",
    });
    assert!(valid(&verdict), "{verdict}");
    let with = |k: &str, x: Value| {
        let mut v = verdict.clone();
        v[k] = x;
        v
    };
    let without = |k: &str| {
        let mut v = verdict.clone();
        v.as_object_mut().unwrap().remove(k);
        v
    };
    for (why, bad) in [
        ("no v", without("v")),
        ("v 2", with("v", 2.into())),
        ("no event", without("event")),
        ("unknown event", with("event", "verdicts".into())),
        ("unknown verdict", with("verdict", "maybe".into())),
        ("rtt not an integer", with("rtt_us", 0.5.into())),
        ("unknown source", with("source", "guess".into())),
        ("unknown evidence", with("evidence", "hunch".into())),
        ("a field the schema does not name", with("extra", 1.into())),
        ("no source for a verdict", without("source")),
        ("a bad flow", with("flow", "198.18.0.2-198.51.100.2".into())),
        (
            "unreachable without icmp or cause",
            with("verdict", "unreachable".into()),
        ),
    ] {
        assert!(!valid(&bad), "{why}: {bad}");
    }
    let mut unreachable = with("verdict", "unreachable".into());
    unreachable["icmp"] =
        serde_json::json!({"type": 3, "code": 1, "from": "198.18.0.1", "name": "host-unreachable"});
    assert!(valid(&unreachable), "{unreachable}");
    unreachable["cause"] = "no-route".into();
    assert!(valid(&unreachable), "{unreachable}");
    unreachable["cause"] = "gremlins".into();
    assert!(!valid(&unreachable), "{unreachable}");

    let error = serde_json::json!({"event": "error", "v": 1, "exit": 5, "error": "no-connection",
                                   "message": "no established TCP connection matches"});
    assert!(valid(&error));
    let mut e = error.clone();
    e["exit"] = 2.into();
    assert!(!valid(&e), "exit and kind disagree: {e}");
    let mut e = error.clone();
    e["error"] = "privilege".into();
    e["exit"] = 6.into();
    assert!(!valid(&e), "privilege names its capability: {e}");
    e["capability"] = "CAP_NET_RAW".into();
    assert!(valid(&e), "{e}");
}

/// A listener in B that accepts and holds every connection until the test ends.
fn serve(lab: &Lab, addr: SocketAddr) {
    let listener: TcpListener = in_netns(&lab.ns('b'), move || TcpListener::bind(addr).unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming().map_while(Result::ok) {
            held.push(s);
        }
    });
}

/// Every subcommand's objects follow the schema (each run's stdout is checked line by line
/// by tests/common), and each names the events it should.
fn every_subcommand_prints_schema_valid_objects() {
    if !common::require_lab() {
        return;
    }
    let lab = Lab::up("direct", None);
    let (client, server) = lab.connect(false, 9811, 41811);
    let flow = common::flow_of(&client);

    let (code, out, err, _) = run_kaprobe(&lab, &["list"]);
    assert_eq!(code, 0, "{}", describe(code, &out, &err));
    assert_eq!(events(&out), ["connection"], "{out}");

    let (code, out, err, _) = run_kaprobe(&lab, &["config"]);
    assert_eq!(code, 0, "{}", describe(code, &out, &err));
    assert_eq!(events(&out), ["config"], "{out}");

    for args in [
        &["enable", "--time", "30s", flow.as_str()][..],
        &["enable", "--off", flow.as_str()][..],
    ] {
        let (code, out, err, _) = run_kaprobe(&lab, args);
        assert_eq!(code, 0, "{}", describe(code, &out, &err));
        assert_eq!(events(&out), ["keepalive-set"], "{out}");
    }

    let (code, out, err, _) = run_kaprobe(&lab, &["-v", "probe", &flow]);
    assert_eq!(code, 0, "{}", describe(code, &out, &err));
    let seen = events(&out);
    for want in ["probe", "verdict"] {
        assert!(seen.iter().any(|e| e == want), "no {want}: {out}");
    }
    assert_eq!(seen.last().map(String::as_str), Some("verdict"), "{out}");

    std::thread::sleep(Duration::from_millis(600));
    let (code, out, err, _) = run_kaprobe(&lab, &["-v", "sweep", "--port", "9811"]);
    assert_eq!(code, 0, "{}", describe(code, &out, &err));
    let seen = events(&out);
    assert!(seen.iter().any(|e| e == "verdict"), "{out}");
    assert_eq!(seen.last().map(String::as_str), Some("summary"), "{out}");

    // watch: a state change, then the summary after SIGTERM (Background checks each line).
    std::thread::sleep(Duration::from_millis(600));
    let mut watch = common::Background::start(&lab, &["-v", "watch", "--time", "1s", &flow]);
    let state = watch.wait_json(Duration::from_secs(10), |v| v["event"] == "state");
    let (code, out, err) = watch.stop();
    assert!(
        state.is_some(),
        "no state change: {}",
        describe(code, &out, &err)
    );
    assert_eq!(code, 0, "{}", describe(code, &out, &err));
    assert_eq!(
        events(&out).last().map(String::as_str),
        Some("summary"),
        "{out}"
    );

    // sniff sees a probe of kaprobe's and its answer.
    std::thread::sleep(Duration::from_millis(600));
    let sniff = sniff_while_probing(&lab, &flow, (&client, &server));
    let seen = events(&sniff);
    for want in ["keepalive_probe", "keepalive_ack", "summary"] {
        assert!(seen.iter().any(|e| e == want), "no {want}: {sniff}");
    }

    // nat-timeout: a short search on a path without NAT; the result, no timeout found.
    let target = SocketAddr::new(lab.b_addr(false), 9812);
    serve(&lab, target);
    let target = target.to_string();
    let (code, out, err, _) = common::run_kaprobe_for(
        &lab,
        &["nat-timeout", "--min", "1s", "--max", "2s", &target],
        Duration::from_secs(30),
    );
    assert_eq!(code, 0, "{}", describe(code, &out, &err));
    assert_eq!(events(&out), ["result"], "{out}");
    common::assert_still_carries_data(&client, &server);
}

/// `kaprobe --json sniff --count 1 FLOW` in A while a probe goes out: its stdout. Data
/// crosses first, so that sniff knows the connection's numbers.
fn sniff_while_probing(
    lab: &Lab,
    flow: &str,
    (client, server): (&TcpStream, &TcpStream),
) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kaprobe"))
        .args(["--netns", &lab.ns('a'), "--json", "-v", "sniff"])
        .args(["--count", "1", "--duration", "8s", flow])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start kaprobe sniff");
    let mut stderr = LineReader::new(child.stderr.take().expect("stderr pipe"));
    if !stderr.wait_for("sniffing", Duration::from_secs(5)) {
        let _ = child.kill();
        let _ = child.wait();
        panic!("sniff did not start capturing: {:?}", stderr.seen);
    }
    common::assert_still_carries_data(client, server);
    let (code, out, err, _) = run_kaprobe(lab, &["probe", flow]);
    assert_eq!(code, 0, "{}", describe(code, &out, &err));
    let status = common::wait_within(&mut child, Duration::from_secs(10), "sniff");
    let mut out = String::new();
    child
        .stdout
        .take()
        .expect("stdout pipe")
        .read_to_string(&mut out)
        .expect("read sniff stdout");
    assert_eq!(status.code(), Some(0), "sniff: {out}\n{:?}", stderr.seen);
    out
}

/// No such connection: exit 5 and one `no-connection` object (probe, sweep, watch, list,
/// enable); a failure: exit 7 and one `failure` object (nat-timeout to a closed port);
/// sniff on no such interface: exit 2.
fn runtime_errors_are_one_object() {
    if !common::require_lab() {
        return;
    }
    let lab = Lab::up("direct", None);
    let gone = common::flow(
        SocketAddr::new(lab.a_addr(false), 41821),
        SocketAddr::new(lab.b_addr(false), 9821),
    );
    for args in [
        &["probe", gone.as_str()][..],
        &["sweep", "--port", "9821"][..],
        &["watch", gone.as_str()][..],
        &["list", "--port", "9821"][..],
        &["enable", gone.as_str()][..],
    ] {
        let (code, out, err, _) = run_kaprobe(&lab, args);
        assert_eq!(code, 5, "{args:?}: {}", describe(code, &out, &err));
        assert_eq!(out.lines().count(), 1, "{args:?}: {out}");
        error_json(code, &out, &err, "no-connection");
    }
    let closed = SocketAddr::new(lab.b_addr(false), 9822).to_string();
    let (code, out, err, _) = run_kaprobe(&lab, &["nat-timeout", &closed]);
    assert_eq!(code, 7, "{}", describe(code, &out, &err));
    assert_eq!(out.lines().count(), 1, "{out}");
    error_json(code, &out, &err, "failure");

    let (code, out, err, _) = run_kaprobe(&lab, &["sniff", "-i", "kaprobe-nosuch"]);
    assert_eq!(code, 2, "{}", describe(code, &out, &err));
    error_json(code, &out, &err, "usage");
}

/// A copy of the binary that nobody may run (the build tree may not be reachable for it);
/// its directory is removed on drop.
struct NobodyCopy(PathBuf);

impl NobodyCopy {
    fn new() -> NobodyCopy {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("kaprobe-json-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        let copy = NobodyCopy(dir);
        let exe = copy.exe();
        std::fs::set_permissions(&copy.0, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::copy(env!("CARGO_BIN_EXE_kaprobe"), &exe).expect("copy the binary");
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        copy
    }

    fn exe(&self) -> PathBuf {
        self.0.join("kaprobe")
    }
}

impl Drop for NobodyCopy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Without capabilities (as nobody, in A's namespace): exit 6 and one `privilege` object
/// naming the capability, for every subcommand that needs one. (`enable` as nobody cannot
/// even see which process holds a root-owned socket: exit 7, one `failure` object.)
fn missing_capabilities_are_one_object() {
    if !common::require_lab() {
        return;
    }
    let lab = Lab::up("direct", None);
    let (_client, _server) = lab.connect(false, 9831, 41831);
    let flow = common::flow(
        SocketAddr::new(lab.a_addr(false), 41831),
        SocketAddr::new(lab.b_addr(false), 9831),
    );
    let target = SocketAddr::new(lab.b_addr(false), 9831).to_string();
    let copy = NobodyCopy::new();
    for args in [
        &["probe", flow.as_str()][..],
        &["sweep", "--port", "9831"][..],
        &["watch", flow.as_str()][..],
        &["sniff", "--count", "1"][..],
        &["nat-timeout", target.as_str()][..],
    ] {
        let started = Instant::now();
        let (code, out, err) = as_nobody(&lab, &copy, args);
        assert_eq!(code, 6, "{args:?}: {}", describe(code, &out, &err));
        assert_eq!(out.lines().count(), 1, "{args:?}: {out}");
        let e = error_json(code, &out, &err, "privilege");
        let cap = e["capability"].as_str().unwrap_or_default();
        assert!(e["message"].as_str().unwrap().contains(cap), "{e}");
        assert!(started.elapsed() < Duration::from_secs(10), "{args:?}");
    }
    let (code, out, err) = as_nobody(&lab, &copy, &["enable", &flow]);
    assert_eq!(code, 7, "{}", describe(code, &out, &err));
    assert_eq!(out.lines().count(), 1, "{out}");
    error_json(code, &out, &err, "failure");
}

/// `kaprobe --json ARGS` as nobody:nogroup in A's namespace (entered by the thread that
/// forks it: --netns needs CAP_SYS_ADMIN).
fn as_nobody(lab: &Lab, copy: &NobodyCopy, args: &[&str]) -> (i32, String, String) {
    let exe = copy.exe();
    let full: Vec<String> = std::iter::once("--json")
        .chain(args.iter().copied())
        .map(String::from)
        .collect();
    let (code, out, err, _) = in_netns(&lab.ns('a'), move || {
        let mut cmd = Command::new(&exe);
        cmd.args(&full)
            .env_remove("RUST_LOG")
            .uid(NOBODY)
            .gid(NOBODY)
            .current_dir("/");
        common::run_bounded(cmd, &format!("nobody: kaprobe {}", full.join(" ")))
    });
    (code, out, err)
}

crate::tests!(
    the_schema_rejects_what_breaks_the_contract,
    usage_errors_of_every_subcommand_are_one_object,
    every_subcommand_prints_schema_valid_objects,
    runtime_errors_are_one_object,
    missing_capabilities_are_one_object,
);
