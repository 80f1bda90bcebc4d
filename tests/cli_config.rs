//! `kaprobe config`: the keepalive sysctls of the current namespace, and of a fresh
//! namespace (`--netns`) whose values the test sets first.

mod common;

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use common::{describe, run_kaprobe_bare};
use serde_json::Value;

fn proc_sys(name: &str) -> u64 {
    let path = format!("/proc/sys/{}", name.replace('.', "/"));
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn config_json(args: &[&str]) -> Value {
    let mut full = args.to_vec();
    full.extend(["--json", "config"]);
    let (code, out, err, _) = run_kaprobe_bare(&full);
    assert_eq!(code, 0, "{}", describe(code, &out, &err));
    assert_eq!(out.lines().count(), 1, "one object: {out}");
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn config_reports_this_namespace() {
    let v = config_json(&[]);
    let time = proc_sys("net.ipv4.tcp_keepalive_time");
    let intvl = proc_sys("net.ipv4.tcp_keepalive_intvl");
    let probes = proc_sys("net.ipv4.tcp_keepalive_probes");
    assert_eq!(v["tcp_keepalive_time_s"], time, "{v}");
    assert_eq!(v["tcp_keepalive_intvl_s"], intvl, "{v}");
    assert_eq!(v["tcp_keepalive_probes"], probes, "{v}");
    assert_eq!(
        v["tcp_invalid_ratelimit_ms"],
        proc_sys("net.ipv4.tcp_invalid_ratelimit"),
        "{v}"
    );
    assert_eq!(v["tcp_retries2"], proc_sys("net.ipv4.tcp_retries2"), "{v}");
    assert_eq!(v["dead_peer_detection_s"], time + probes * intvl, "{v}");
    assert!(v["retries2_timeout_ms"].is_u64(), "{v}");
}

/// A namespace of its own, deleted on drop.
struct Netns(String);

impl Netns {
    fn new() -> Netns {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "kpcfg{}x{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "ip netns add {name}");
        Netns(name)
    }

    fn sysctl(&self, assignment: &str) {
        let ok = Command::new("ip")
            .args(["netns", "exec", &self.0, "sysctl", "-q", "-w", assignment])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "sysctl -w {assignment} in {}", self.0);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn config_reports_a_namespace_with_its_own_values() {
    if !common::require_lab() {
        return;
    }
    let ns = Netns::new();
    for a in [
        "net.ipv4.tcp_keepalive_time=600",
        "net.ipv4.tcp_keepalive_intvl=30",
        "net.ipv4.tcp_keepalive_probes=4",
        // Kept in jiffies: a whole second reads back exactly whatever HZ is.
        "net.ipv4.tcp_invalid_ratelimit=1000",
        "net.ipv4.tcp_retries2=8",
    ] {
        ns.sysctl(a);
    }
    let v = config_json(&["--netns", &ns.0]);
    assert_eq!(v["tcp_keepalive_time_s"], 600, "{v}");
    assert_eq!(v["tcp_keepalive_intvl_s"], 30, "{v}");
    assert_eq!(v["tcp_keepalive_probes"], 4, "{v}");
    assert_eq!(v["tcp_invalid_ratelimit_ms"], 1000, "{v}");
    assert_eq!(v["tcp_retries2"], 8, "{v}");
    assert_eq!(v["dead_peer_detection_s"], 720, "{v}");
    // 8 retries stay below the linear threshold: (2^9 - 1) × 200 ms.
    assert_eq!(v["retries2_timeout_ms"], 102_200, "{v}");

    let (code, out, err, _) = run_kaprobe_bare(&["--netns", &ns.0, "config"]);
    assert_eq!(code, 0, "{}", describe(code, &out, &err));
    assert!(
        out.contains("a dead peer is noticed after 12m of idle (600 s + 4 × 30 s)"),
        "{out}"
    );
    for (name, value) in [
        ("tcp_keepalive_time", "600"),
        ("tcp_keepalive_intvl", "30"),
        ("tcp_keepalive_probes", "4"),
        ("tcp_invalid_ratelimit", "1000"),
        ("tcp_retries2", "8"),
    ] {
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("net.ipv4.{name} ")))
            .unwrap_or_else(|| panic!("no line for {name}: {out}"));
        assert!(line.contains(&format!("= {value} ")), "{line}");
    }
}

fn config_in_a_missing_namespace_is_a_usage_error() {
    let (code, out, err, _) = run_kaprobe_bare(&["--netns", "kpcfg-no-such-ns", "config"]);
    assert_eq!(code, 2, "{}", describe(code, &out, &err));
    assert!(err.contains("no network namespace"), "{err}");
}

crate::tests!(
    config_reports_this_namespace,
    config_reports_a_namespace_with_its_own_values,
    config_in_a_missing_namespace_is_a_usage_error,
);
