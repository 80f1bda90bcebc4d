//! `kaprobe sniff` in the lab: it reports the kernel keepalive of an application
//! (TCP_KEEPIDLE=1 s, TCP_KEEPINTVL=1 s) about 1 s apart with the peer's ACKs, and it
//! recognises kaprobe's own probes (canonical and garbage-octet), over IPv4 and IPv6.

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Lab, LineReader};
use serde_json::Value;

/// A sniff run in the background, started and known to be capturing.
struct Sniff {
    child: Child,
    stderr: LineReader,
}

/// Starts `kaprobe --netns A --json -v sniff ARGS` and waits (bounded) until it captures.
fn start_sniff(lab: &Lab, args: &[&str]) -> Sniff {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kaprobe"))
        .args(["--netns", &lab.ns('a'), "--json", "-v", "sniff"])
        .args(args)
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
    Sniff { child, stderr }
}

/// Waits for the run to end by itself (bounded); its exit code and JSON objects.
fn finish(mut s: Sniff, within: Duration) -> (i32, Vec<Value>, String) {
    let status = common::wait_within(&mut s.child, within, "sniff");
    let mut out = String::new();
    s.child
        .stdout
        .take()
        .expect("stdout pipe")
        .read_to_string(&mut out)
        .expect("read sniff stdout");
    let err = s.stderr.until_end(Duration::from_secs(1));
    let objects = common::json_lines(&out);
    (status.code().unwrap_or(-1), objects, err.join("\n"))
}

fn events<'a>(objs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objs.iter().filter(|v| v["event"] == kind).collect()
}

fn set_int(fd: i32, level: i32, opt: i32, value: i32) {
    common::set_sockopt(&fd, level, opt, &value).unwrap_or_else(|e| panic!("setsockopt: {e}"));
}

/// Kernel keepalive: idle 1 s, interval 1 s, 5 probes. The timings first, so the timer
/// armed by SO_KEEPALIVE already uses them.
fn enable_kernel_keepalive(s: &TcpStream) {
    let fd = s.as_raw_fd();
    set_int(fd, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, 1);
    set_int(fd, libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, 1);
    set_int(fd, libc::IPPROTO_TCP, libc::TCP_KEEPCNT, 5);
    set_int(fd, libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1);
}

fn kernel_keepalive_is_reported_about_one_second_apart(v6: bool) {
    let lab = Lab::up("direct", None);
    let (port_s, port_c) = (9711, 44711);
    let (client, server) = lab.connect(v6, port_s, port_c);
    let (a, b) = lab.ends(v6, port_s, port_c);
    let flow = common::flow(a, b);
    let sniff = start_sniff(&lab, &["--duration", "4.5s", &flow]);
    enable_kernel_keepalive(&client);
    // Data both ways: the sniffer learns both directions, and the idle time starts now.
    common::assert_still_carries_data(&client, &server);
    let (code, objs, err) = finish(sniff, Duration::from_secs(10));
    let dump = format!("{objs:#?}\nstderr:\n{err}");
    assert_eq!(code, 0, "{dump}");

    let probes = events(&objs, "keepalive_probe");
    let acks = events(&objs, "keepalive_ack");
    assert!(probes.len() >= 3, "expected >= 3 probes: {dump}");
    for p in &probes {
        assert_eq!(p["from"], a.to_string(), "probe from the client: {dump}");
        assert_eq!(p["to"], b.to_string(), "{dump}");
        assert_eq!(p["flow"], flow, "{dump}");
        assert_eq!(p["len"], 0, "the kernel's probe carries no data: {dump}");
    }
    let intervals: Vec<u64> = probes
        .iter()
        .filter_map(|p| p["interval_ms"].as_u64())
        .collect();
    eprintln!("kernel keepalive intervals (v6={v6}): {intervals:?} ms");
    assert!(intervals.len() >= 2, "expected intervals: {dump}");
    for ms in &intervals {
        assert!((800..=1200).contains(ms), "interval {ms} ms: {dump}");
    }
    // Every probe but possibly the last (cut off by --duration) is answered by the peer.
    assert!(acks.len() + 1 >= probes.len(), "answers: {dump}");
    for ack in &acks {
        assert_eq!(ack["from"], b.to_string(), "answer from the peer: {dump}");
        assert!(
            ack["rtt_us"].as_u64().is_some_and(|r| r < 100_000),
            "{dump}"
        );
    }
    let summary = events(&objs, "summary");
    assert_eq!(summary.len(), 1, "{dump}");
    assert_eq!(summary[0]["probes"], probes.len() as u64, "{dump}");
    drop((client, server));
}

fn kaprobe_probes_are_recognised(v6: bool) {
    let lab = Lab::up("direct", None);
    let (port_s, port_c) = (9712, 44712);
    let (client, server) = lab.connect(v6, port_s, port_c);
    let (a, b) = lab.ends(v6, port_s, port_c);
    let flow = common::flow(a, b);
    // Two probes and their answers end the run; --duration bounds it otherwise.
    let sniff = start_sniff(&lab, &["--count", "2", "--duration", "8s", &flow]);
    common::assert_still_carries_data(&client, &server);

    let (code, out, err, _) = common::run_kaprobe(&lab, &["probe", &flow]);
    let why = common::describe(code, &out, &err);
    assert_eq!(code, 0, "probe: {why}");
    // The peer answers one out-of-window segment per tcp_invalid_ratelimit (500 ms).
    std::thread::sleep(Duration::from_millis(600));
    let (code, out, err, _) = common::run_kaprobe(&lab, &["probe", "--garbage-octet", &flow]);
    assert_eq!(
        code,
        0,
        "garbage-octet probe: {}",
        common::describe(code, &out, &err)
    );

    let (code, objs, err) = finish(sniff, Duration::from_secs(10));
    let dump = format!("{objs:#?}\nstderr:\n{err}");
    assert_eq!(code, 0, "{dump}");
    let probes = events(&objs, "keepalive_probe");
    let acks = events(&objs, "keepalive_ack");
    assert_eq!(probes.len(), 2, "{dump}");
    assert_eq!(acks.len(), 2, "{dump}");
    let lens: Vec<u64> = probes.iter().filter_map(|p| p["len"].as_u64()).collect();
    assert_eq!(lens, [0, 1], "canonical, then garbage octet: {dump}");
    for p in &probes {
        assert_eq!(p["from"], a.to_string(), "{dump}");
        assert_eq!(p["flow"], flow, "{dump}");
    }
    for ack in &acks {
        assert_eq!(ack["from"], b.to_string(), "{dump}");
        assert!(ack["rtt_us"].is_u64(), "{dump}");
    }
    drop((client, server));
}

fn main() {
    common::run_tests(crate::cases!(common::require_lab;
        sniff_reports_kernel_keepalive_v4 =>
            kernel_keepalive_is_reported_about_one_second_apart(false),
        sniff_reports_kernel_keepalive_v6 =>
            kernel_keepalive_is_reported_about_one_second_apart(true),
        sniff_recognises_kaprobe_probes_v4 => kaprobe_probes_are_recognised(false),
        sniff_recognises_kaprobe_probes_v6 => kaprobe_probes_are_recognised(true),
    ))
}
