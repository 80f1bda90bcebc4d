//! Two outside checks that nobody here wrote the stack of (issue 17, SPEC "Test lab" 8):
//!
//! 1. lwIP 2.1.3 (Debian `liblwip-dev`, the TCP stack of most IoT devices) as the peer: an echo
//!    server (`tests/peers/lwip/lwippeer.c`, NO_SYS=0 with `tcpip_init`, the unix port's tapif)
//!    compiled here with `cc` and run behind a TAP device in B: `alive`, `dead` when it stops,
//!    `reset` after a fresh start, with and without `--garbage-octet`.
//! 2. A scripted strict-PAWS peer (`examples/pawspeer.rs`) behind the TAP device: it answers a
//!    probe only when its TSval is current, and records every probe's numbers, so the tests
//!    check that every probe (probe 3 included) carries a fresh TSval, that a late answer gets
//!    its true rtt or none, and each probe's bytes.
//!
//! Needs root, `ip`, `nft`; the lwIP tests also `cc` and liblwip-dev. Skipped otherwise (a
//! failure instead when KAPROBE_REQUIRE_NETNS=1).

mod common;

use common::{
    Lab, LineReader, ScratchDir, assert_verdict_fields, describe, run_kaprobe_for, verdict_json,
};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

/// Bound for one kaprobe run here: the longest asks for 3 probes 1 s apart.
const RUN_LIMIT: Duration = Duration::from_secs(15);

/// A peer process in B, attached to `tap0`. Dropping it kills it.
struct PeerProc {
    what: &'static str,
    bin: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    ns: String,
    child: Option<(Child, ChildStdin)>,
    lines: Option<LineReader>,
}

impl PeerProc {
    fn start(
        lab: &Lab,
        what: &'static str,
        bin: PathBuf,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> PeerProc {
        let mut p = PeerProc {
            what,
            bin,
            args: args.iter().map(|a| a.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ns: lab.ns('b'),
            child: None,
            lines: None,
        };
        p.spawn();
        p
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "{} already running", self.what);
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .arg(&self.bin)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.what));
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        self.child = Some((child, stdin));
        let mut lines = LineReader::new(stdout);
        assert!(
            lines.wait_for("ready", Duration::from_secs(10)),
            "{} did not get ready: {:?}",
            self.what,
            lines.seen
        );
        self.lines = Some(lines);
    }

    fn pid(&self) -> libc::pid_t {
        // `ip netns exec` execs the program: this pid is the peer's.
        self.child.as_ref().expect("running").0.id() as libc::pid_t
    }

    /// The peer stops (SIGSTOP): the TAP device stays attached, nothing reads it, nothing
    /// answers.
    fn stop(&self) {
        assert_eq!(unsafe { libc::kill(self.pid(), libc::SIGSTOP) }, 0);
    }

    /// A crash: SIGKILL, so no FIN or RST leaves; the TAP loses its carrier.
    fn crash(&mut self) {
        if let Some((mut child, stdin)) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            drop(stdin);
        }
    }

    /// The JSON lines the peer printed with `"event": kind`, once it has been quiet 300 ms.
    fn events(&mut self, kind: &str) -> Vec<Value> {
        let lines = self.lines.as_mut().expect("running");
        lines
            .settle(Duration::from_millis(300), Duration::from_secs(5))
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["event"] == kind)
            .collect()
    }
}

impl Drop for PeerProc {
    fn drop(&mut self) {
        self.crash();
    }
}

/// A client connection from A to the peer, with bounded reads.
fn connect(lab: &Lab, local: SocketAddr, remote: SocketAddr) -> TcpStream {
    let s: TcpStream = common::in_netns(&lab.ns('a'), move || {
        common::connect_from(local, remote)
            .unwrap_or_else(|e| panic!("connect {local} -> {remote}: {e}"))
    });
    s.set_read_timeout(Some(common::NET_TIMEOUT)).unwrap();
    s
}

/// Writes `text` and reads exactly it back from the echo server.
fn assert_echoes(s: &mut TcpStream, text: &str) {
    s.write_all(text.as_bytes()).expect("write to the peer");
    let mut got = vec![0u8; text.len()];
    s.read_exact(&mut got)
        .unwrap_or_else(|e| panic!("no echo of {text:?} from the peer: {e}"));
    assert_eq!(got, text.as_bytes(), "the peer echoed other bytes");
    // Let the delayed ACKs go out: the connection is idle from here.
    std::thread::sleep(Duration::from_millis(100));
}

fn probe(lab: &Lab, args: &[&str], flow: &str) -> (i32, String, String, Value) {
    let mut full = vec!["-v", "probe"];
    full.extend_from_slice(args);
    full.push(flow);
    let (code, out, err, _) = run_kaprobe_for(lab, &full, RUN_LIMIT);
    let v = verdict_json(&out);
    (code, out, err, v)
}

// ------------------------------------------------------------------ 1. lwIP as the peer

const LWIP_HEADER: &str = "/usr/include/lwip/lwip/tcp.h";

fn lwip_ready() -> bool {
    common::require_lab() && common::require_tool("cc", "gcc") && {
        if !Path::new(LWIP_HEADER).exists() {
            common::skip(format!(
                "{LWIP_HEADER} is missing (Debian package liblwip-dev)"
            ));
        }
        true
    }
}

/// Compiles the lwIP echo server into `dir` (the library's own lwipopts.h: the compile
/// options must match the library's).
fn build_lwippeer(dir: &ScratchDir) -> PathBuf {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers/lwip/lwippeer.c");
    let bin = dir.join("lwippeer");
    let mut cmd = Command::new("cc");
    cmd.args([
        "-O1",
        "-Wall",
        "-Wextra",
        "-Werror",
        "-I/usr/include/lwip",
        "-o",
    ])
    .arg(&bin)
    .arg(&src)
    .args(["-llwip", "-lpthread"]);
    let (code, _, err, _) = common::run_bounded(cmd, "cc lwippeer.c");
    assert_eq!(code, 0, "cc lwippeer.c failed:\n{err}");
    bin
}

fn lwip_start(lab: &Lab, bin: PathBuf, port: u16) -> PeerProc {
    let port = port.to_string();
    PeerProc::start(
        lab,
        "lwippeer",
        bin,
        // lwIP has one IPv4 address per netif: A's on-link prefix is reached through A
        // itself as the gateway. IPv6: B's address and one in A's prefix (static /64s).
        &[
            &port,
            "198.51.100.2",
            "198.18.0.2",
            "2001:db8:51::2",
            "2001:db8:18::fe",
        ],
        &[("PRECONFIGURED_TAPIF", "tap0")],
    )
}

fn lwip_peer(v6: bool, garbage: bool, server_port: u16, client_port: u16) {
    let dir = ScratchDir::new("lwip");
    let bin = build_lwippeer(&dir);
    let lab = Lab::up("direct", None);
    common::bridge_to_tap(&lab);
    let mut peer = lwip_start(&lab, bin, server_port);

    let local = SocketAddr::new(lab.a_addr(v6), client_port);
    let remote = SocketAddr::new(lab.b_addr(v6), server_port);
    let flow = common::flow(local, remote);
    let mut client = connect(&lab, local, remote);
    assert_echoes(&mut client, "hello lwIP\n");
    let go: &[&str] = if garbage { &["--garbage-octet"] } else { &[] };
    let with =
        |more: &[&str]| -> Vec<String> { go.iter().chain(more).map(|s| s.to_string()).collect() };
    let run = |args: Vec<String>| {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        probe(&lab, &a, &flow)
    };

    // 1. alive: lwIP answers the first probe (no garbage octet needed), and again at once.
    let mut rtts = Vec::new();
    for _ in 0..2 {
        let (code, out, err, v) = run(with(&["--probes", "3", "--intvl", "500ms"]));
        assert_eq!(code, 0, "alive must exit 0\n{}", describe(code, &out, &err));
        assert_verdict_fields(&v, local, remote, "alive");
        assert_eq!(
            v["probes_sent"], 1,
            "lwIP 2.1.3 answers every probe, the first one included: {v}"
        );
        assert_eq!(v["evidence"], "probe", "{v}");
        assert!(v["rtt_us"].is_number(), "{v}");
        rtts.push(v["rtt_us"].clone());
    }
    // The application still exchanges data.
    assert_echoes(&mut client, "still there\n");

    // 2. dead: lwIP stops; its TAP stays in the bridge, nobody answers. lwIP delays its ACKs
    //    (up to 250 ms), so the client's RTO is larger than on a Linux link, and each probe
    //    waits at least that long before it counts as unanswered.
    let rto_ms = f64::from(common::tcp_info(&client).tcpi_rto) / 1000.0;
    peer.stop();
    let (code, out, err, v) = run(with(&["--probes", "2", "--intvl", "500ms"]));
    assert_eq!(code, 1, "dead must exit 1\n{}", describe(code, &out, &err));
    assert_verdict_fields(&v, local, remote, "dead");
    assert_eq!(v["probes_sent"], 2, "{v}");
    let ms = common::elapsed_ms(&v);
    let bound = 2.0 * rto_ms.max(500.0) + 500.0;
    assert!(
        ms >= 950.0 && ms <= bound,
        "dead after {ms} ms: expected probes x max(intvl, RTO {rto_ms} ms) = at most {bound} \
         ms: {v}"
    );

    // 3. reset: lwIP comes back with the same addresses and an empty connection table.
    peer.crash();
    peer.spawn();
    let (code, out, err, v) = run(with(&[]));
    assert_eq!(code, 3, "reset must exit 3\n{}", describe(code, &out, &err));
    assert_verdict_fields(&v, local, remote, "reset");
    let mut buf = [0u8; 1];
    match client.read(&mut buf) {
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("the client socket was not reset by lwIP's RST: {other:?}"),
    }
    // The restarted lwIP serves a new connection.
    let again = SocketAddr::new(lab.a_addr(v6), client_port + 1);
    assert_echoes(&mut connect(&lab, again, remote), "hello again\n");
    eprintln!(
        "lwIP {} {}: alive rtt {rtts:?} us (probes_sent 1, twice at once); dead after {ms} ms (RTO \
         {rto_ms} ms); \
         reset after {} probe(s)",
        if v6 { "IPv6" } else { "IPv4" },
        if garbage {
            "--garbage-octet"
        } else {
            "no garbage octet"
        },
        v["probes_sent"]
    );
}

// ------------------------------------------------------------------ 2. a strict-PAWS peer

const PAWS_MAC: &str = "02:6b:70:00:00:03";

fn paws_start(lab: &Lab, port: u16, opts: &[&str]) -> PeerProc {
    let port = port.to_string();
    let mut args = vec![
        "tap0",
        PAWS_MAC,
        port.as_str(),
        "198.51.100.2",
        "2001:db8:51::2",
    ];
    args.extend_from_slice(opts);
    PeerProc::start(lab, "pawspeer", common::example_bin("pawspeer"), &args, &[])
}

/// A lab with the scripted peer on B (options `opts`) and a connection from A that has echoed
/// once: (lab, peer, client, local, remote).
fn paws_lab(
    v6: bool,
    server_port: u16,
    client_port: u16,
    opts: &[&str],
) -> (Lab, PeerProc, TcpStream, SocketAddr, SocketAddr) {
    let lab = Lab::up("direct", None);
    common::bridge_to_tap(&lab);
    let peer = paws_start(&lab, server_port, opts);
    let local = SocketAddr::new(lab.a_addr(v6), client_port);
    let remote = SocketAddr::new(lab.b_addr(v6), server_port);
    let mut client = connect(&lab, local, remote);
    assert_echoes(&mut client, "hello pawspeer\n");
    (lab, peer, client, local, remote)
}

fn u64_of(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} is not a number: {v}"))
}

/// `b - a` modulo 2^32, as a signed tick count.
fn ts_diff(a: u64, b: u64) -> i64 {
    i64::from((b as u32).wrapping_sub(a as u32) as i32)
}

/// (a) Probes 1 and 2 are ignored, probe 3 is answered only because its TSval is current: the
/// peer demands that it has advanced at least one tick past the last TSval it took (probe 2's).
fn paws_fresh_tsval(v6: bool, server_port: u16, client_port: u16) {
    let (lab, mut peer, mut client, local, remote) = paws_lab(
        v6,
        server_port,
        client_port,
        &["--answer-every", "3", "--paws-step", "1"],
    );
    let flow = common::flow(local, remote);
    let (code, out, err, v) = probe(&lab, &["--probes", "3", "--intvl", "500ms"], &flow);
    assert_eq!(code, 0, "alive must exit 0\n{}", describe(code, &out, &err));
    assert_verdict_fields(&v, local, remote, "alive");
    assert_eq!(v["probes_sent"], 3, "alive after probe 3: {v}");
    // rtt_us may be null: probes 500 ms apart may be within the connection's RTO.
    assert_eq!(v["source"], "kernel", "{v}");

    let probes = peer.events("probe");
    let answers: Vec<&str> = probes
        .iter()
        .map(|p| p["answer"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(
        answers,
        ["ignored", "ignored", "sent"],
        "the peer's view of the probes: {probes:#?}"
    );
    let mut deltas = Vec::new();
    for w in probes.windows(2) {
        let dts = ts_diff(u64_of(&w[0], "tsval"), u64_of(&w[1], "tsval"));
        let dt_ms = (u64_of(&w[1], "t_us") as f64 - u64_of(&w[0], "t_us") as f64) / 1000.0;
        assert!(
            dts > 0,
            "TSvals must increase strictly from probe to probe: {probes:#?}"
        );
        assert!(dt_ms >= 450.0, "probes {dt_ms} ms apart: {probes:#?}");
        // The kernel's TSval clock here ticks in ms. The arrival times are the peer's, read
        // when it gets to run: on a loaded 2-core machine a few ms late (7 ms seen). A stale
        // TSval would be ~500 ms off.
        assert!(
            (dts as f64 - dt_ms).abs() <= 25.0,
            "the TSval advanced {dts} ticks in {dt_ms:.1} ms: not the kernel clock's advance: \
             {probes:#?}"
        );
        deltas.push((dts, dt_ms));
    }
    assert_echoes(&mut client, "after the probes\n");
    eprintln!(
        "strict PAWS {}: alive after {} probes, rtt {} us; TSval advance vs arrival gap: \
         {deltas:?}",
        if v6 { "IPv6" } else { "IPv4" },
        v["probes_sent"],
        v["rtt_us"]
    );
}

/// (b) Every answer reaches A 2.05 s after its probe left: the first arrives 50 ms after
/// probe 3. Its rtt is probe 1's (about 2.05 s), or unknown; never probe 3's 50 ms.
fn paws_late_answer(v6: bool, server_port: u16, client_port: u16) {
    let (lab, mut peer, mut client, local, remote) =
        paws_lab(v6, server_port, client_port, &["--delay-ms", "2050"]);
    let flow = common::flow(local, remote);
    let (code, out, err, v) = probe(&lab, &["--probes", "3", "--intvl", "1s"], &flow);
    assert_eq!(code, 0, "alive must exit 0\n{}", describe(code, &out, &err));
    assert_verdict_fields(&v, local, remote, "alive");
    assert_eq!(v["probes_sent"], 3, "{v}");
    let ms = common::elapsed_ms(&v);
    assert!(
        ms >= 2000.0,
        "the first answer left the peer 2.05 s after probe 1: {v}"
    );
    match v["rtt_us"].as_u64() {
        None => assert!(v["rtt_us"].is_null(), "{v}"),
        Some(rtt) => assert!(
            (2_000_000..2_400_000).contains(&rtt),
            "an answer 2.05 s late reported with rtt {rtt} us: {v}"
        ),
    }
    let probes = peer.events("probe");
    assert_eq!(probes.len(), 3, "{probes:#?}");
    assert!(
        probes.iter().all(|p| p["answer"] == "delayed"),
        "{probes:#?}"
    );
    // Let the two answers still held reach A, then the connection still carries data.
    std::thread::sleep(Duration::from_millis(2200));
    assert_echoes(&mut client, "after the late answers\n");
    eprintln!(
        "late answer {}: alive after {ms} ms, rtt_us {}",
        if v6 { "IPv6" } else { "IPv4" },
        v["rtt_us"]
    );
}

/// (c) Every probe's bytes, as the peer saw them, against the peer's own state: seq = SND.NXT-1,
/// ack = RCV.NXT, a pure ACK with no payload (one octet with `--garbage-octet`), TSecr = the
/// peer's last TSval, the window A advertised last; TSvals increase across runs.
fn paws_probe_bytes(v6: bool, server_port: u16, client_port: u16) {
    let (lab, mut peer, mut client, local, remote) =
        paws_lab(v6, server_port, client_port, &["--answer-every", "3"]);
    let flow = common::flow(local, remote);
    let mut seen: Vec<Value> = Vec::new();
    for (i, garbage) in [false, true, false].into_iter().enumerate() {
        if i == 2 {
            // New data both ways: the numbers and the timestamps move on.
            assert_echoes(&mut client, "more data, new numbers\n");
        }
        let mut args = vec!["--probes", "3", "--intvl", "500ms"];
        if garbage {
            args.push("--garbage-octet");
        }
        let (code, out, err, v) = probe(&lab, &args, &flow);
        assert_eq!(code, 0, "alive must exit 0\n{}", describe(code, &out, &err));
        assert_verdict_fields(&v, local, remote, "alive");
        assert_eq!(v["probes_sent"], 3, "{v}");
        let probes = peer.events("probe");
        let new: Vec<Value> = probes[seen.len()..].to_vec();
        assert_eq!(new.len(), 3, "run {i}: {probes:#?}");
        for p in &new {
            let what = format!("run {i} (garbage octet {garbage}), probe {}: {p}", p["n"]);
            assert_eq!(p["seq"], p["expect_seq"], "seq = SND.NXT-1: {what}");
            assert_eq!(p["ack"], p["expect_ack"], "ack = RCV.NXT: {what}");
            assert_eq!(p["len"], u64::from(garbage), "payload: {what}");
            let flags = u64_of(p, "flags");
            assert_eq!(flags & 0x17, 0x10, "a plain ACK (no SYN, FIN, RST): {what}");
            assert!(p["tsval"].is_u64(), "no timestamp option: {what}");
            assert_eq!(
                p["tsecr"], p["expect_tsecr"],
                "TSecr = the peer's last TSval: {what}"
            );
            assert_eq!(p["win"], p["expect_win"], "the window A advertised: {what}");
        }
        seen = probes;
        std::thread::sleep(Duration::from_millis(600));
    }
    for w in seen.windows(2) {
        assert!(
            ts_diff(u64_of(&w[0], "tsval"), u64_of(&w[1], "tsval")) > 0,
            "TSvals must increase from probe to probe: {seen:#?}"
        );
    }
    let tsecrs: Vec<&Value> = seen.iter().map(|p| &p["tsecr"]).collect();
    assert_echoes(&mut client, "after every probe\n");
    eprintln!(
        "probe bytes {}: 9 probes checked; TSecr by probe {tsecrs:?}",
        if v6 { "IPv6" } else { "IPv4" }
    );
}

fn main() {
    let mut tests = crate::cases!(lwip_ready;
        lwip_peer_v4 => lwip_peer(false, false, 9801, 41801),
        lwip_peer_garbage_octet_v4 => lwip_peer(false, true, 9802, 41803),
        lwip_peer_v6 => lwip_peer(true, false, 9803, 41805),
        lwip_peer_garbage_octet_v6 => lwip_peer(true, true, 9804, 41807),
    );
    tests.extend(crate::cases!(common::require_lab;
        paws_fresh_tsval_every_probe_v4 => paws_fresh_tsval(false, 9811, 41811),
        paws_fresh_tsval_every_probe_v6 => paws_fresh_tsval(true, 9812, 41812),
        paws_late_answer_true_rtt_or_none_v4 => paws_late_answer(false, 9813, 41813),
        paws_late_answer_true_rtt_or_none_v6 => paws_late_answer(true, 9814, 41814),
        paws_probe_bytes_v4 => paws_probe_bytes(false, 9815, 41815),
        paws_probe_bytes_v6 => paws_probe_bytes(true, 9816, 41816),
    ));
    common::run_tests(tests)
}
