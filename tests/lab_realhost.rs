//! Verdicts on hosts set up the way real servers are (README "Tests", "Verdicts and timing"):
//! policy routing with SO_MARK, device-bound and link-local sockets, a dual-stack listener,
//! busy connections, `--intvl` below the round trip, sends the local host refuses, TCP-MD5,
//! carrier loss, and an answer borrowed from the kernel's own keepalive. IPv4 and IPv6 where
//! both apply, the peer alive and the peer blackholed.
//!
//! Needs root, `ip` and `nft`; skipped otherwise (a failure when KAPROBE_REQUIRE_NETNS=1).
//! Every kaprobe run is killed after `LIMIT`, so a run that never ends fails the test.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{
    Background, Lab, SockOpts, assert_still_carries_data, describe, elapsed_ms, run_kaprobe_for,
    tcp_info, verdict_json,
};
use serde_json::Value;

/// A kaprobe run longer than this is killed and fails the test.
const LIMIT: Duration = Duration::from_secs(8);
/// The application's mark in the policy-routing cases.
const MARK: u32 = 0x42;
/// Owner of "application" sockets where netfilter must tell them from kaprobe's (root).
const APP_UID: u32 = 4242;
/// Timing slack for elapsed-time bounds (scheduling on a shared 2-core machine).
const SLACK_MS: f64 = 600.0;

// ------------------------------------------------------------------ helpers

struct Run {
    code: i32,
    out: String,
    err: String,
    wall: Duration,
}

impl Run {
    fn describe(&self) -> String {
        describe(self.code, &self.out, &self.err)
    }

    /// Asserts the exit code and the verdict; the verdict object.
    fn expect(&self, code: i32, verdict: &str) -> Value {
        assert_eq!(
            self.code,
            code,
            "expected exit {code} ({verdict})\n{}",
            self.describe()
        );
        let v = verdict_json(&self.out);
        assert_eq!(v["verdict"], verdict, "verdict\n{}", self.describe());
        v
    }

    fn stderr_lines(&self) -> Vec<&str> {
        self.err.lines().filter(|l| !l.trim().is_empty()).collect()
    }

    /// JSON objects on stdout with "event": "verdict" (sweep: one per connection).
    fn rows(&self) -> Vec<Value> {
        json_lines(&self.out)
            .into_iter()
            .filter(|v| v["event"] == "verdict")
            .collect()
    }
}

fn json_lines(out: &str) -> Vec<Value> {
    common::json_lines(out)
}

fn kaprobe(lab: &Lab, args: &[&str]) -> Run {
    let (code, out, err, wall) = run_kaprobe_for(lab, args, LIMIT);
    Run {
        code,
        out,
        err,
        wall,
    }
}

/// `probe ARGS... FLOW`.
fn probe(lab: &Lab, args: &[&str], flow: &str) -> Run {
    let mut full = vec!["probe"];
    full.extend_from_slice(args);
    full.push(flow);
    kaprobe(lab, &full)
}

fn rto_ms(s: &TcpStream) -> f64 {
    f64::from(tcp_info(s).tcpi_rto) / 1000.0
}

/// An `alive` verdict from an answer to kaprobe's own probe.
/// Alive by an answer to a probe: timed when one probe went out; after several, an answer
/// that names none of them (a Linux peer's TSecr) may be an earlier probe's, late, and has no
/// rtt (README "Trust").
fn assert_alive_by_probe(v: &Value, r: &Run) {
    assert_eq!(v["evidence"], "probe", "evidence\n{}", r.describe());
    assert!(
        v["rtt_us"].is_u64() || v["probes_sent"].as_u64() > Some(1),
        "alive by its only probe has an rtt\n{}",
        r.describe()
    );
    assert!(v.get("cause").is_none_or(Value::is_null), "no cause: {v}");
}

/// A `dead` verdict after `probes` unanswered probes `intvl_ms` apart.
fn assert_dead_by_probe(v: &Value, r: &Run, probes: u64, intvl_ms: f64) {
    assert_eq!(v["evidence"], "probe", "evidence\n{}", r.describe());
    assert_eq!(v["probes_sent"], probes, "probes_sent\n{}", r.describe());
    assert!(v["rtt_us"].is_null(), "dead has no rtt: {v}");
    let window = probes as f64 * intvl_ms;
    let got = elapsed_ms(v);
    assert!(
        got >= window * 0.9 && got <= window + 200.0 + SLACK_MS,
        "dead after {got} ms, expected about {window} ms (+ RTO)\n{}",
        r.describe()
    );
}

/// An `unreachable` verdict for a local cause, decided quickly and never exit 6.
fn assert_local_cause(r: &Run, cause: &str) {
    assert_ne!(
        r.code,
        6,
        "a local refusal is not a missing capability\n{}",
        r.describe()
    );
    let v = r.expect(4, "unreachable");
    assert_eq!(v["cause"], cause, "cause\n{}", r.describe());
    assert!(v["rtt_us"].is_null(), "no rtt for a local cause: {v}");
    assert!(v.get("icmp").is_none_or(Value::is_null), "no icmp: {v}");
}

/// The sweep row (verdict object) for the connection with this remote (or local) port.
fn row_for(rows: &[Value], port: u16) -> Value {
    let suffix = format!(":{port}");
    let found: Vec<&Value> = rows
        .iter()
        .filter(|v| {
            ["remote", "local"]
                .iter()
                .any(|k| v[*k].as_str().is_some_and(|s| s.ends_with(&suffix)))
        })
        .collect();
    assert_eq!(found.len(), 1, "one row for port {port}: {rows:?}");
    found[0].clone()
}

/// An address as `--local`/`--remote` take it: IPv6 in brackets.
fn filter_addr(ip: std::net::IpAddr) -> String {
    if ip.is_ipv6() {
        format!("[{ip}]")
    } else {
        ip.to_string()
    }
}

/// A connection from A to B whose client socket has `opts`, checked to carry data: the client
/// and server sockets, and the local and remote ends as kaprobe names them.
fn connect_app(
    lab: &Lab,
    v6: bool,
    opts: SockOpts,
    server_port: u16,
    client_port: u16,
) -> (TcpStream, TcpStream, SocketAddr, SocketAddr) {
    let (client, server) =
        lab.connect_opts(v6, server_port, client_port, opts, SockOpts::default());
    // The application's own path works.
    assert_still_carries_data(&client, &server);
    let (local, remote) = lab.ends(v6, server_port, client_port);
    (client, server, local, remote)
}

/// `probe --intvl 500ms --probes 2 FLOW` with B alive, or blackholed first: alive by probe, or
/// dead after both probes. The verdict object.
fn probe_alive_or_dead(lab: &Lab, flow: &str, blackhole: bool) -> Value {
    if blackhole {
        lab.fault(&["blackhole"]);
    }
    let r = probe(lab, &["--intvl", "500ms", "--probes", "2"], flow);
    if blackhole {
        let v = r.expect(1, "dead");
        assert_dead_by_probe(&v, &r, 2, 500.0);
        v
    } else {
        let v = r.expect(0, "alive");
        assert_alive_by_probe(&v, &r);
        v
    }
}

/// `sweep --remote B --intvl INTVL --probes PROBES`: every connection to B's address.
fn sweep_b(lab: &Lab, v6: bool, intvl: &str, probes: &str) -> Run {
    let remote = filter_addr(lab.b_addr(v6));
    kaprobe(
        lab,
        &[
            "sweep", "--remote", &remote, "--intvl", intvl, "--probes", probes,
        ],
    )
}

/// `sweep ARGS...` finds exactly one connection, with this exit code and verdict.
fn sweep_one(lab: &Lab, args: &[&str], code: i32, verdict: &str) {
    let mut full = vec!["sweep"];
    full.extend_from_slice(args);
    let r = kaprobe(lab, &full);
    assert_eq!(r.code, code, "sweep exit\n{}", r.describe());
    let rows = r.rows();
    assert_eq!(rows.len(), 1, "one connection swept\n{}", r.describe());
    assert_eq!(
        rows[0]["verdict"],
        verdict,
        "sweep verdict\n{}",
        r.describe()
    );
}

// ------------------------------------------------------------------ 1. policy routing (SO_MARK)

/// The client socket carries SO_MARK 0x42; `ip rule fwmark 0x42 table 100` routes it to B
/// through R; the main table has `main` for B's network (elsewhere: a sink that drops it).
fn policy(v6: bool, main: &str, blackhole: bool, server_port: u16, client_port: u16) {
    let lab = Lab::up("routed", None);
    lab.fault(&["policy", "0x42", main]);
    let opts = SockOpts {
        mark: Some(MARK),
        ..Default::default()
    };
    let (client, server, local, remote) = connect_app(&lab, v6, opts, server_port, client_port);
    let v = probe_alive_or_dead(&lab, &common::flow(local, remote), blackhole);
    if !blackhole {
        common::assert_verdict_fields(&v, local, remote, "alive");
        assert_still_carries_data(&client, &server);
    }
}

// ------------------------------------------------------------------ 2. device-bound sockets

/// The first watch state for the connection within `limit`, then watch is stopped.
fn watch_first_state(lab: &Lab, args: &[&str], limit: Duration) -> (Option<Value>, String) {
    let mut full = vec!["watch"];
    full.extend_from_slice(args);
    let mut w = Background::start(lab, &full);
    let state = w.wait_json(limit, |v| v["event"] == "state");
    let (code, out, err) = w.stop();
    (
        state,
        format!("watch: exit {code}\nstdout:\n{out}\nstderr:\n{err}"),
    )
}

/// The client socket is bound to `device` (SO_BINDTODEVICE) on a multi-homed A whose main
/// table sends B's address elsewhere (lab.sh divert): only packets bound like the socket reach
/// B. probe, sweep and watch must find it and probe it through its device.
fn bound(lab: &Lab, v6: bool, device: &str, blackhole: bool, server_port: u16, client_port: u16) {
    lab.fault(&["divert"]);
    let opts = SockOpts {
        device: Some(device.to_string()),
        ..Default::default()
    };
    let (client, server, local, remote) = connect_app(lab, v6, opts, server_port, client_port);
    let flow = common::flow(local, remote);
    let (code, verdict) = if blackhole { (1, "dead") } else { (0, "alive") };

    let v = probe_alive_or_dead(lab, &flow, blackhole);
    common::assert_verdict_fields(&v, local, remote, verdict);

    let remote_s = remote.to_string();
    let args = ["--remote", &remote_s, "--intvl", "500ms", "--probes", "2"];
    sweep_one(lab, &args, code, verdict);

    let (state, log) = watch_first_state(
        lab,
        &["--time", "1s", "--intvl", "500ms", "--probes", "2", &flow],
        Duration::from_secs(6),
    );
    let state = state.unwrap_or_else(|| panic!("no state line from watch\n{log}"));
    assert_eq!(state["state"], verdict, "watch state\n{log}");
    if !blackhole {
        assert_still_carries_data(&client, &server);
    }
}

/// A VRF member: the socket is bound to the VRF device. Skipped (with the reason printed)
/// where the kernel has no VRF support.
fn vrf_member(v6: bool, blackhole: bool, server_port: u16, client_port: u16) {
    let lab = Lab::up("direct", None);
    if let Err((code, err)) = lab.try_fault(&["vrf"]) {
        assert_eq!(code, 3, "lab.sh vrf failed: {err}");
        eprintln!("SKIP VRF sub-case: {}", err.trim());
        return;
    }
    bound(&lab, v6, "vrf-x", blackhole, server_port, client_port);
}

/// A link-local IPv6 connection, written `[fe80::1%eth0]:P-[fe80::2%eth0]:P`.
fn link_local(blackhole: bool, server_port: u16, client_port: u16) {
    let lab = Lab::up("direct", None);
    lab.fault(&["linklocal"]);
    // Interface indexes fixed by lab.sh: A eth0 10, B eth0 13.
    let ll = |host: u16, scope: u32, port: u16| {
        SocketAddr::V6(SocketAddrV6::new(
            Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, host),
            port,
            0,
            scope,
        ))
    };
    let listener = common::listen_in(&lab.ns('b'), ll(2, 13, server_port), SockOpts::default());
    let client = common::connect_in(
        &lab.ns('a'),
        ll(1, 10, client_port),
        ll(2, 10, server_port),
        SockOpts::default(),
    );
    let server = common::accept_bounded(listener);
    assert_still_carries_data(&client, &server);
    let flow = format!("[fe80::1%eth0]:{client_port}-[fe80::2%eth0]:{server_port}");
    let (code, verdict) = if blackhole { (1, "dead") } else { (0, "alive") };
    let v = probe_alive_or_dead(&lab, &flow, blackhole);
    for (key, host) in [("local", "fe80::1"), ("remote", "fe80::2")] {
        assert!(
            v[key].as_str().is_some_and(|s| s.contains(host)),
            "{key} names {host}: {v}"
        );
    }
    // sweep finds it too (by port: the filter needs no scope).
    let port = server_port.to_string();
    let args = ["--port", &port, "--intvl", "500ms", "--probes", "2"];
    sweep_one(&lab, &args, code, verdict);
    if !blackhole {
        assert_still_carries_data(&client, &server);
        return;
    }
    // watch's --on-dead exec command gets the addresses with their zone (A's eth0 is 10),
    // so it can use them.
    let dir = common::ScratchDir::new("ll-exec");
    let out = dir.0.join("flow");
    let cmd = format!(
        "exec printf %s \"$KAPROBE_FLOW $KAPROBE_REMOTE\" > {}",
        out.display()
    );
    let w = common::Background::start(
        &lab,
        &[
            "watch",
            &flow,
            "--time",
            "0s",
            "--intvl",
            "300ms",
            "--probes",
            "2",
            "--on-dead",
            &cmd,
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let got = loop {
        match std::fs::read_to_string(&out) {
            Ok(s) if !s.is_empty() => break s,
            _ => {
                assert!(Instant::now() < deadline, "--on-dead exec never ran");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    };
    let (code, out_text, err) = w.stop();
    assert_eq!(code, 0, "{}", common::describe(code, &out_text, &err));
    assert_eq!(
        got,
        format!("[fe80::1%10]:{client_port}-[fe80::2%10]:{server_port} [fe80::2%10]:{server_port}")
    );
    // The probes harmed nothing: once the path is back, the connection carries data.
    lab.fault(&["unblackhole"]);
    assert_still_carries_data(&client, &server);
}

// ------------------------------------------------------------------ 3. dual-stack listener

/// A's `[::]` listener (IPV6_V6ONLY off) accepts B's IPv4 connection; kaprobe in A is given
/// the flow as `ss` prints it, with IPv4-mapped addresses (`LOCAL REMOTE` as two arguments
/// is tested in `cli_lab.rs`).
fn dual_stack(blackhole: bool, server_port: u16, client_port: u16) {
    let lab = Lab::up("direct", None);
    let listen: SocketAddr = format!("[::]:{server_port}").parse().unwrap();
    let listener = common::listen_in(
        &lab.ns('a'),
        listen,
        SockOpts {
            v6only: Some(false),
            ..Default::default()
        },
    );
    let b_end = SocketAddr::new(lab.b_addr(false), client_port);
    let a_end = SocketAddr::new(lab.a_addr(false), server_port);
    let client = common::connect_in(&lab.ns('b'), b_end, a_end, SockOpts::default());
    let server = common::accept_bounded(listener);
    assert_still_carries_data(&client, &server);
    let mapped_local = format!("[::ffff:{}]:{server_port}", lab.a_addr(false));
    let mapped_remote = format!("[::ffff:{}]:{client_port}", lab.b_addr(false));
    let flow = format!("{mapped_local}-{mapped_remote}");
    let canon = |v: &Value, key: &str| -> SocketAddr {
        let s: SocketAddr = v[key]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{key} is not ip:port: {v}"));
        SocketAddr::new(s.ip().to_canonical(), s.port())
    };

    // One argument, as a FLOW.
    let v = probe_alive_or_dead(&lab, &flow, blackhole);
    assert_eq!(canon(&v, "local"), a_end, "{v}");
    assert_eq!(canon(&v, "remote"), b_end, "{v}");
    if blackhole {
        return;
    }

    // Filters with a mapped address, in every subcommand that takes them.
    sweep_one(&lab, &["--remote", &mapped_remote], 0, "alive");
    let r = kaprobe(&lab, &["list", "--remote", &mapped_remote]);
    assert_eq!(r.code, 0, "{}", r.describe());
    let listed = json_lines(&r.out);
    assert_eq!(
        listed.len(),
        1,
        "list shows the connection\n{}",
        r.describe()
    );
    assert_eq!(canon(&listed[0], "remote"), b_end, "{}", r.describe());
    // watch takes the mapped FLOW too.
    let (state, log) = watch_first_state(&lab, &["--time", "1s", &flow], Duration::from_secs(5));
    let state = state.unwrap_or_else(|| panic!("no state line from watch\n{log}"));
    assert_eq!(state["state"], "alive", "{log}");
    assert_still_carries_data(&client, &server);
}

// ------------------------------------------------------------------ 4. busy connections

/// The client writes until its send buffer is full while B never reads: B's receive window
/// closes and A's kernel sends zero-window probes, which B answers. Returns once A's kernel
/// has sent at least one (bounded).
fn fill_until_zero_window(client: &TcpStream) {
    client.set_nonblocking(true).unwrap();
    let chunk = vec![0x5au8; 64 * 1024];
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut c = client;
    loop {
        match c.write(&chunk) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                let info = tcp_info(client);
                if info.tcpi_unacked == 0 && info.tcpi_backoff >= 1 {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("client write: {e}"),
        }
        assert!(
            Instant::now() < deadline,
            "no zero-window persist within 5 s"
        );
    }
    assert!(common::send_queue(client) > 0, "send queue not empty");
}

fn zero_window(v6: bool, blackhole: bool, server_port: u16, client_port: u16) {
    let lab = Lab::up("direct", None);
    let (client, _server) = lab.connect(v6, server_port, client_port);
    let (local, remote) = lab.ends(v6, server_port, client_port);
    fill_until_zero_window(&client);
    if blackhole {
        lab.fault(&["blackhole"]);
    }
    let rto_before = rto_ms(&client);
    let quiet_before = f64::from(tcp_info(&client).tcpi_last_ack_recv);
    let (intvl, probes) = if blackhole { (500.0, 3) } else { (1000.0, 3) };
    let intvl_s = format!("{intvl}ms");
    let r = probe(
        &lab,
        &["--intvl", &intvl_s, "--probes", "3"],
        &common::flow(local, remote),
    );
    let rto = rto_before.max(rto_ms(&client));
    let bound = probes as f64 * intvl + rto + SLACK_MS;
    let v = if blackhole {
        r.expect(1, "dead")
    } else {
        r.expect(0, "alive")
    };
    assert_eq!(
        v["evidence"],
        "kernel-ack-clock",
        "data in flight: the kernel's ACK clock decides\n{}",
        r.describe()
    );
    assert!(
        elapsed_ms(&v) <= bound && r.wall.as_secs_f64() * 1000.0 <= bound + 500.0,
        "verdict within time + probes x intvl + RTO ({bound} ms)\n{}",
        r.describe()
    );
    if blackhole {
        assert!(v["rtt_us"].is_null(), "{v}");
        // Dead once no ACK came for the whole window: the silence may have begun a little
        // before kaprobe started (the last answered zero-window probe).
        assert!(
            elapsed_ms(&v) + quiet_before >= probes as f64 * intvl - 100.0,
            "not dead before the window is over (no ACK for {quiet_before} ms at the start)\n{}",
            r.describe()
        );
    }
}

/// A sweep over a zero-window connection and two idle ones finishes and prints all three.
fn sweep_with_zero_window(v6: bool, base: u16) {
    let lab = Lab::up("direct", None);
    let (busy, _busy_s) = lab.connect(v6, base, 41000 + base % 1000);
    let _idle1 = lab.connect(v6, base + 1, 41001 + base % 1000);
    let _idle2 = lab.connect(v6, base + 2, 41002 + base % 1000);
    fill_until_zero_window(&busy);
    let r = sweep_b(&lab, v6, "1s", "3");
    let bound = 3000.0 + rto_ms(&busy) + SLACK_MS + 500.0;
    assert!(
        r.wall.as_secs_f64() * 1000.0 <= bound,
        "sweep within {bound} ms\n{}",
        r.describe()
    );
    assert_eq!(r.code, 0, "{}", r.describe());
    let rows = r.rows();
    assert_eq!(
        rows.len(),
        3,
        "every connection has a row\n{}",
        r.describe()
    );
    let busy_row = row_for(&rows, base);
    assert_eq!(busy_row["verdict"], "alive", "{}", r.describe());
    assert_eq!(busy_row["evidence"], "kernel-ack-clock", "{}", r.describe());
    for port in [base + 1, base + 2] {
        let row = row_for(&rows, port);
        assert_eq!(row["verdict"], "alive", "{}", r.describe());
        assert_eq!(row["evidence"], "probe", "{}", r.describe());
    }
}

/// Bulk data from A to B, read by B as fast as it comes, until stopped.
struct Bulk {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Bulk {
    fn start(client: &TcpStream, server: &TcpStream) -> Bulk {
        let stop = Arc::new(AtomicBool::new(false));
        let mut c = client.try_clone().unwrap();
        let mut s = server.try_clone().unwrap();
        c.set_write_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let (st1, st2) = (stop.clone(), stop.clone());
        let writer = std::thread::spawn(move || {
            let chunk = vec![0xa5u8; 16 * 1024];
            while !st1.load(Ordering::Relaxed) {
                match c.write(&chunk) {
                    Ok(_) => {}
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                    Err(_) => break,
                }
            }
        });
        // The reader is a little slower than the writer, so data is always queued and in
        // flight while ACKs keep coming.
        let reader = std::thread::spawn(move || {
            let mut buf = vec![0u8; 32 * 1024];
            while !st2.load(Ordering::Relaxed) {
                match s.read(&mut buf) {
                    Ok(0) => break,
                    Ok(_) => std::thread::sleep(Duration::from_millis(2)),
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                    Err(_) => break,
                }
            }
        });
        Bulk {
            stop,
            threads: vec![writer, reader],
        }
    }
}

impl Drop for Bulk {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Bulk data in flight; the peer alive, or vanishing (blackholed) just before the probe.
fn bulk(v6: bool, vanish: bool, server_port: u16, client_port: u16) {
    let lab = Lab::up("direct", None);
    let (client, server) = lab.connect(v6, server_port, client_port);
    let (local, remote) = lab.ends(v6, server_port, client_port);
    let flowing = Bulk::start(&client, &server);
    let deadline = Instant::now() + Duration::from_secs(3);
    while tcp_info(&client).tcpi_unacked == 0 || common::send_queue(&client) == 0 {
        assert!(Instant::now() < deadline, "no data in flight within 3 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    if vanish {
        lab.fault(&["blackhole"]);
    }
    let rto_before = rto_ms(&client);
    let quiet_before = f64::from(tcp_info(&client).tcpi_last_ack_recv);
    let r = probe(
        &lab,
        &["--intvl", "500ms", "--probes", "3"],
        &common::flow(local, remote),
    );
    let rto = rto_before.max(rto_ms(&client));
    drop(flowing);
    let bound = 1500.0 + rto + SLACK_MS;
    let v = if vanish {
        r.expect(1, "dead")
    } else {
        r.expect(0, "alive")
    };
    assert_eq!(v["evidence"], "kernel-ack-clock", "{}", r.describe());
    assert!(
        elapsed_ms(&v) <= bound,
        "verdict within time + probes x intvl + RTO ({bound} ms)\n{}",
        r.describe()
    );
    if vanish {
        assert!(v["rtt_us"].is_null(), "{v}");
        assert!(
            elapsed_ms(&v) + quiet_before >= 1500.0 - 100.0,
            "not dead before the window is over (no ACK for {quiet_before} ms at the start)\n{}",
            r.describe()
        );
    }
}

// ------------------------------------------------------------------ 5. --intvl below the round trip

fn intvl_zero(v6: bool, blackhole: bool, server_port: u16, client_port: u16) {
    let lab = Lab::up("direct", None);
    let (client, server) = lab.connect(v6, server_port, client_port);
    let (local, remote) = lab.ends(v6, server_port, client_port);
    if blackhole {
        lab.fault(&["blackhole"]);
    }
    let r = probe(
        &lab,
        &["--intvl", "0s", "--probes", "1"],
        &common::flow(local, remote),
    );
    assert!(
        r.err.contains("--intvl"),
        "a warning about --intvl below 500ms, whatever --probes is\n{}",
        r.describe()
    );
    if blackhole {
        let v = r.expect(1, "dead");
        // Never counted unanswered before the connection's RTO (at least 200 ms on Linux).
        let rto = rto_ms(&client);
        assert!(
            elapsed_ms(&v) >= rto * 0.95 && elapsed_ms(&v) <= rto + SLACK_MS,
            "dead only after the RTO ({rto} ms)\n{}",
            r.describe()
        );
    } else {
        let v = r.expect(0, "alive");
        assert_alive_by_probe(&v, &r);
        assert_still_carries_data(&client, &server);
    }
}

/// `watch --intvl 0s --on-dead kill` for a few seconds leaves a healthy connection working.
fn watch_intvl_zero_kill(v6: bool, server_port: u16, client_port: u16) {
    let lab = Lab::up("direct", None);
    let (client, server) = lab.connect(v6, server_port, client_port);
    let (local, remote) = lab.ends(v6, server_port, client_port);
    let flow = common::flow(local, remote);
    let mut w = Background::start(
        &lab,
        &[
            "watch",
            "--time",
            "1s",
            "--intvl",
            "0s",
            "--on-dead",
            "kill",
            &flow,
        ],
    );
    let first = w.wait_json(Duration::from_secs(4), |v| v["event"] == "state");
    std::thread::sleep(Duration::from_millis(2500));
    let still_running = w.exited().is_none();
    let (code, out, err) = w.stop();
    let log = describe(code, &out, &err);
    let first = first.unwrap_or_else(|| panic!("no state line\n{log}"));
    assert_eq!(first["state"], "alive", "{log}");
    assert!(
        json_lines(&out)
            .iter()
            .all(|v| v["event"] != "state" || v["state"] == "alive"),
        "only ever alive\n{log}"
    );
    assert!(still_running, "watch still running after 3.5 s\n{log}");
    assert_eq!(code, 0, "SIGTERM ends watch with 0\n{log}");
    assert!(err.contains("--intvl"), "warning about --intvl 0s\n{log}");
    assert_still_carries_data(&client, &server);
}

// ------------------------------------------------------------------ 6. sends the local host refuses

/// `how` is a lab.sh `refuse` fault; `owner` makes the client socket another uid's (the
/// firewall lets that uid's packets through, so only kaprobe's own sends are refused).
fn refused(v6: bool, how: &[&str], owner: bool, cause: &str, server_port: u16, client_port: u16) {
    let lab = Lab::up("routed", None);
    let opts = SockOpts {
        owner_uid: owner.then_some(APP_UID),
        ..Default::default()
    };
    let (client, _server) =
        lab.connect_opts(v6, server_port, client_port, opts, SockOpts::default());
    let (local, remote) = lab.ends(v6, server_port, client_port);
    let mut fault = vec!["refuse"];
    fault.extend_from_slice(how);
    lab.fault(&fault);
    let r = probe(
        &lab,
        &["--intvl", "500ms", "--probes", "2"],
        &common::flow(local, remote),
    );
    assert_local_cause(&r, cause);
    let v = verdict_json(&r.out);
    common::assert_verdict_fields(&v, local, remote, "unreachable");
    // A route or link that refuses is asked after the first unanswered injected SYN. A
    // firewall that also drops the socket's own challenge ACKs shows only when a packet
    // toward the peer is refused: after every learning try (README "Verdicts and timing").
    let bound = if how[0] == "firewall" && !owner {
        3.0 * 600.0 + SLACK_MS
    } else {
        1000.0 + rto_ms(&client) + SLACK_MS
    };
    assert!(elapsed_ms(&v) <= bound, "bounded\n{}", r.describe());
}

/// One healthy connection, one whose probes alone the firewall refuses, one whose every
/// packet it refuses: the sweep gives all three verdicts and exits 4.
fn sweep_with_refusals(v6: bool, base: u16) {
    let lab = Lab::up("routed", None);
    let (healthy, probe_only, all) = (base, base + 1, base + 2);
    let app = SockOpts {
        owner_uid: Some(APP_UID),
        ..Default::default()
    };
    let _c1 = lab.connect(v6, healthy, 41000 + healthy % 1000);
    let _c2 = lab.connect_opts(
        v6,
        probe_only,
        41000 + probe_only % 1000,
        app,
        SockOpts::default(),
    );
    let _c3 = lab.connect(v6, all, 41000 + all % 1000);
    let uid = APP_UID.to_string();
    lab.fault(&["refuse", "firewall", &probe_only.to_string(), &uid]);
    lab.fault(&["refuse", "firewall", &all.to_string()]);
    let r = sweep_b(&lab, v6, "500ms", "2");
    assert_ne!(r.code, 6, "not a missing capability\n{}", r.describe());
    assert_eq!(r.code, 4, "worst verdict unreachable\n{}", r.describe());
    let rows = r.rows();
    assert_eq!(rows.len(), 3, "{}", r.describe());
    assert_eq!(
        row_for(&rows, healthy)["verdict"],
        "alive",
        "{}",
        r.describe()
    );
    for port in [probe_only, all] {
        let row = row_for(&rows, port);
        assert_eq!(row["verdict"], "unreachable", "{}", r.describe());
        assert_eq!(row["cause"], "local-firewall", "{}", r.describe());
    }
}

// ------------------------------------------------------------------ 7. TCP-MD5 (RFC 2385)

const MD5_KEY: &[u8] = b"kaprobe-lab-md5-key";

/// Client and listener both hold a TCP-MD5 key for the other end.
fn md5_connect(lab: &Lab, v6: bool, server_port: u16, client_port: u16) -> (TcpStream, TcpStream) {
    let client = SockOpts {
        md5: Some((lab.b_addr(v6), MD5_KEY.to_vec())),
        ..Default::default()
    };
    let server = SockOpts {
        md5: Some((lab.a_addr(v6), MD5_KEY.to_vec())),
        ..Default::default()
    };
    let (c, s) = lab.connect_opts(v6, server_port, client_port, client, server);
    assert_still_carries_data(&c, &s);
    (c, s)
}

/// Refused before anything is sent: exit 7, one stderr line naming MD5.
fn assert_md5_refused(r: &Run) {
    assert_eq!(
        r.code,
        7,
        "a signed connection cannot be probed\n{}",
        r.describe()
    );
    let lines = r.stderr_lines();
    let md5: Vec<&&str> = lines.iter().filter(|l| l.contains("MD5")).collect();
    assert_eq!(md5.len(), 1, "one line names MD5\n{}", r.describe());
    assert!(
        lines
            .iter()
            .all(|l| l.contains("MD5") || l.contains("warn")),
        "nothing else but warnings about options\n{}",
        r.describe()
    );
    assert!(
        r.wall < Duration::from_millis(1500),
        "refused at once, not after probing\n{}",
        r.describe()
    );
}

fn md5_probe(v6: bool, blackhole: bool, server_port: u16, client_port: u16) {
    let lab = Lab::up("direct", None);
    let (client, server) = md5_connect(&lab, v6, server_port, client_port);
    let (local, remote) = lab.ends(v6, server_port, client_port);
    let flow = common::flow(local, remote);
    if blackhole {
        lab.fault(&["blackhole"]);
    }
    assert_md5_refused(&probe(&lab, &[], &flow));
    // Not a false `dead` with the peer as the source of the numbers either.
    assert_md5_refused(&probe(
        &lab,
        &["--seq-source", "peer", "--intvl", "500ms"],
        &flow,
    ));
    if !blackhole {
        assert_still_carries_data(&client, &server);
    }
}

/// A sweep over a signed and a plain connection: the signed one is shown as `signed`, the
/// plain one probed.
fn md5_sweep(v6: bool, base: u16) {
    let lab = Lab::up("direct", None);
    let _signed = md5_connect(&lab, v6, base, 41000 + base % 1000);
    let _plain = lab.connect(v6, base + 1, 41001 + base % 1000);
    let r = sweep_b(&lab, v6, "500ms", "2");
    assert_eq!(r.code, 0, "the worst verdict is alive\n{}", r.describe());
    let rows = r.rows();
    assert_eq!(rows.len(), 2, "{}", r.describe());
    assert_eq!(
        row_for(&rows, base)["verdict"],
        "signed",
        "{}",
        r.describe()
    );
    assert_eq!(
        row_for(&rows, base + 1)["verdict"],
        "alive",
        "{}",
        r.describe()
    );
    assert!(
        r.wall < Duration::from_millis(1500),
        "nothing waited for the signed one\n{}",
        r.describe()
    );
}

/// watch over a signed and a plain connection: one warning for the signed one, never retried;
/// the plain one is watched.
fn md5_watch_skips_with_one_warning_v4() {
    let lab = Lab::up_or_skip("direct", None);
    let base = 9069;
    let (signed_c, _signed_s) = md5_connect(&lab, false, base, 41069);
    let _plain = lab.connect(false, base + 1, 41070);
    let signed_local = signed_c.local_addr().unwrap().to_string();
    let remote = filter_addr(lab.b_addr(false));
    let mut w = Background::start(
        &lab,
        &[
            "watch", "--remote", &remote, "--time", "1s", "--intvl", "500ms",
        ],
    );
    let first = w.wait_json(Duration::from_secs(4), |v| v["event"] == "state");
    std::thread::sleep(Duration::from_millis(2000));
    let still_running = w.exited().is_none();
    let (code, out, err) = w.stop();
    let log = describe(code, &out, &err);
    assert!(still_running, "watch goes on\n{log}");
    let first = first.unwrap_or_else(|| panic!("no state line\n{log}"));
    assert_eq!(first["state"], "alive", "{log}");
    let states = json_lines(&out);
    assert!(
        states
            .iter()
            .filter(|v| v["event"] == "state")
            .all(|v| v["local"] != signed_local.as_str()),
        "no state for the signed connection\n{log}"
    );
    let about: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("MD5") || l.contains(&signed_local))
        .collect();
    assert_eq!(about.len(), 1, "one warning, no retries\n{log}");
    assert!(about[0].contains("MD5"), "names MD5\n{log}");
}

/// watch on one signed FLOW: refused with one line naming MD5, not retried forever.
fn md5_watch_single_flow_not_retried_v4() {
    let lab = Lab::up_or_skip("direct", None);
    let (client, _server) = md5_connect(&lab, false, 9076, 40076);
    let flow = common::flow(
        client.local_addr().unwrap(),
        SocketAddr::new(lab.b_addr(false), 9076),
    );
    let mut w = Background::start(&lab, &["watch", "--time", "1s", "--intvl", "500ms", &flow]);
    let deadline = Instant::now() + Duration::from_millis(4500);
    while w.exited().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let ended = w.exited();
    let (code, out, err) = w.stop();
    let log = describe(code, &out, &err);
    assert!(
        !err.contains("could not learn"),
        "no attempt to learn the numbers of a signed connection\n{log}"
    );
    assert_eq!(
        err.lines().filter(|l| l.contains("MD5")).count(),
        1,
        "one line names MD5\n{log}"
    );
    if ended.is_some() {
        assert_eq!(code, 7, "a signed connection cannot be watched\n{log}");
    }
}

// ------------------------------------------------------------------ 8. carrier loss

fn carrier_loss(v6: bool, server_port: u16, client_port: u16) {
    let lab = Lab::up("direct", None);
    let (client, server) = lab.connect(v6, server_port, client_port);
    let (local, remote) = lab.ends(v6, server_port, client_port);
    let flow = common::flow(local, remote);
    lab.fault(&["carrier", "off"]);
    let r = probe(&lab, &["--intvl", "500ms", "--probes", "2"], &flow);
    assert_local_cause(&r, "link-down");
    // The cable is back: alive again.
    lab.fault(&["carrier", "on"]);
    probe_alive_or_dead(&lab, &flow, false);
    assert_still_carries_data(&client, &server);
}

// ------------------------------------------------------------------ 9. a borrowed answer

/// Packets B's input dropped by lab.sh lose-probes (kaprobe's probes).
fn lost_probes(lab: &Lab) -> u64 {
    let listing = lab.exec('b', &["nft", "list", "table", "inet", "kplose"]);
    listing
        .split_whitespace()
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|w| w[0] == "packets")
        .filter_map(|w| w[1].parse::<u64>().ok())
        .sum()
}

/// The application runs the kernel's keepalive (idle 1 s, interval 1 s); kaprobe's own probes
/// are lost on the way, the kernel's are answered: alive, but no rtt (it timed nobody's probe).
fn borrowed(v6: bool, blackhole: bool, server_port: u16, client_port: u16) {
    let lab = Lab::up("direct", None);
    let app = SockOpts {
        keepalive: Some((1, 1, 20)),
        owner_uid: Some(APP_UID),
        ..Default::default()
    };
    let (client, server) = lab.connect_opts(v6, server_port, client_port, app, SockOpts::default());
    let (local, remote) = lab.ends(v6, server_port, client_port);
    lab.fault(&["lose-probes", &APP_UID.to_string()]);
    if blackhole {
        lab.fault(&["blackhole"]);
    }
    let r = probe(
        &lab,
        &["--intvl", "1s", "--probes", "3"],
        &common::flow(local, remote),
    );
    if blackhole {
        let v = r.expect(1, "dead");
        assert_dead_by_probe(&v, &r, 3, 1000.0);
        return;
    }
    // The setup did what it claims: kaprobe's probes were the ones lost.
    assert!(
        lost_probes(&lab) >= 1,
        "B dropped none of kaprobe's probes\n{}",
        r.describe()
    );
    let v = r.expect(0, "alive");
    assert!(
        v["rtt_us"].is_null(),
        "the answer was to the kernel's keepalive, not to kaprobe's probe: no rtt\n{}",
        r.describe()
    );
    assert_still_carries_data(&client, &server);
}

crate::tests!(
    [crate::cases!(common::require_lab;
        // 1. policy routing (SO_MARK)
        policy_main_elsewhere_alive_v4 => policy(false, "elsewhere", false, 9001, 40001),
        policy_main_elsewhere_alive_v6 => policy(true, "elsewhere", false, 9002, 40002),
        policy_main_elsewhere_blackholed_v4 => policy(false, "elsewhere", true, 9003, 40003),
        policy_main_elsewhere_blackholed_v6 => policy(true, "elsewhere", true, 9004, 40004),
        policy_main_none_alive_v4 => policy(false, "none", false, 9005, 40005),
        policy_main_none_alive_v6 => policy(true, "none", false, 9006, 40006),
        policy_main_none_blackholed_v4 => policy(false, "none", true, 9007, 40007),
        policy_main_prohibit_alive_v4 => policy(false, "prohibit", false, 9008, 40008),
        policy_main_prohibit_alive_v6 => policy(true, "prohibit", false, 9009, 40009),
        policy_main_prohibit_blackholed_v6 => policy(true, "prohibit", true, 9010, 40010),
        // 2. device-bound sockets
        bound_device_alive_v4 => bound(&Lab::up("direct", None), false, "eth0", false, 9011, 40011),
        bound_device_alive_v6 => bound(&Lab::up("direct", None), true, "eth0", false, 9012, 40012),
        bound_device_blackholed_v4 =>
            bound(&Lab::up("direct", None), false, "eth0", true, 9013, 40013),
        bound_device_blackholed_v6 =>
            bound(&Lab::up("direct", None), true, "eth0", true, 9014, 40014),
        vrf_member_alive_v4 => vrf_member(false, false, 9015, 40015),
        vrf_member_alive_v6 => vrf_member(true, false, 9016, 40016),
        vrf_member_blackholed_v4 => vrf_member(false, true, 9017, 40017),
        link_local_alive_v6 => link_local(false, 9018, 40018),
        link_local_blackholed_v6 => link_local(true, 9019, 40019),
        // 3. dual-stack listener
        dual_stack_mapped_flow_alive => dual_stack(false, 9020, 40020),
        dual_stack_mapped_flow_blackholed => dual_stack(true, 9021, 40021),
        // 4. busy connections
        zero_window_alive_v4 => zero_window(false, false, 9022, 40022),
        zero_window_alive_v6 => zero_window(true, false, 9023, 40023),
        zero_window_blackholed_v4 => zero_window(false, true, 9024, 40024),
        zero_window_blackholed_v6 => zero_window(true, true, 9025, 40025),
        sweep_with_zero_window_v4 => sweep_with_zero_window(false, 9026),
        sweep_with_zero_window_v6 => sweep_with_zero_window(true, 9030),
        bulk_in_flight_alive_v4 => bulk(false, false, 9034, 40034),
        bulk_in_flight_alive_v6 => bulk(true, false, 9035, 40035),
        bulk_in_flight_peer_vanishes_v4 => bulk(false, true, 9036, 40036),
        bulk_in_flight_peer_vanishes_v6 => bulk(true, true, 9037, 40037),
        // 5. --intvl below the round trip
        intvl_zero_alive_v4 => intvl_zero(false, false, 9038, 40038),
        intvl_zero_alive_v6 => intvl_zero(true, false, 9039, 40039),
        intvl_zero_blackholed_v4 => intvl_zero(false, true, 9040, 40040),
        intvl_zero_blackholed_v6 => intvl_zero(true, true, 9041, 40041),
        watch_intvl_zero_kill_spares_healthy_v4 => watch_intvl_zero_kill(false, 9042, 40042),
        watch_intvl_zero_kill_spares_healthy_v6 => watch_intvl_zero_kill(true, 9043, 40043),
        // 6. sends the local host refuses
        refused_prohibit_route_v4 =>
            refused(false, &["prohibit"], false, "prohibited", 9044, 40044),
        refused_prohibit_route_v6 => refused(true, &["prohibit"], false, "prohibited", 9045, 40045),
        refused_unreachable_route_v4 =>
            refused(false, &["unreachable"], false, "no-route", 9046, 40046),
        refused_unreachable_route_v6 =>
            refused(true, &["unreachable"], false, "no-route", 9047, 40047),
        refused_no_route_v4 => refused(false, &["noroute"], false, "no-route", 9048, 40048),
        refused_no_route_v6 => refused(true, &["noroute"], false, "no-route", 9049, 40049),
        refused_firewall_all_v4 =>
            refused(false, &["firewall", "any"], false, "local-firewall", 9050, 40050),
        refused_firewall_all_v6 =>
            refused(true, &["firewall", "any"], false, "local-firewall", 9051, 40051),
        refused_firewall_probe_only_v4 => {
            let uid = APP_UID.to_string();
            refused(false, &["firewall", "any", &uid], true, "local-firewall", 9052, 40052)
        },
        refused_firewall_probe_only_v6 => {
            let uid = APP_UID.to_string();
            refused(true, &["firewall", "any", &uid], true, "local-firewall", 9053, 40053)
        },
        sweep_with_refusals_v4 => sweep_with_refusals(false, 9054),
        sweep_with_refusals_v6 => sweep_with_refusals(true, 9058),
        // 7. TCP-MD5 (RFC 2385)
        md5_probe_refused_v4 => md5_probe(false, false, 9062, 40062),
        md5_probe_refused_v6 => md5_probe(true, false, 9063, 40063),
        md5_probe_refused_blackholed_v4 => md5_probe(false, true, 9064, 40064),
        md5_sweep_shows_signed_v4 => md5_sweep(false, 9065),
        md5_sweep_shows_signed_v6 => md5_sweep(true, 9067),
    )],
    md5_watch_skips_with_one_warning_v4,
    md5_watch_single_flow_not_retried_v4,
    [crate::cases!(common::require_lab;
        // 8. carrier loss
        carrier_loss_v4 => carrier_loss(false, 9071, 40071),
        carrier_loss_v6 => carrier_loss(true, 9072, 40072),
        // 9. a borrowed answer
        borrowed_answer_alive_v4 => borrowed(false, false, 9073, 40073),
        borrowed_answer_alive_v6 => borrowed(true, false, 9074, 40074),
        borrowed_answer_blackholed_v4 => borrowed(false, true, 9075, 40075),
    )],
);
