//! `kaprobe nat-timeout` against the lab's NAT (conntrack established timeout 5 s) and
//! against a plain router (no timeout).

mod common;

use std::time::{Duration, Instant};

use common::{Lab, in_netns, run_kaprobe_for};

/// A listener in B that accepts and holds everything, for as long as the guard lives.
fn serve(lab: &Lab, addr: &str) -> std::thread::JoinHandle<()> {
    let addr: std::net::SocketAddr = addr.parse().unwrap();
    let listener = in_netns(&lab.ns('b'), move || {
        std::net::TcpListener::bind(addr).unwrap()
    });
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        let end = Instant::now() + Duration::from_secs(120);
        while Instant::now() < end {
            match listener.accept() {
                Ok((s, _)) => held.push(s),
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    })
}

/// `kaprobe --netns A --json nat-timeout ARGS...` (killed, and the test failed, after 90 s):
/// it must succeed; its JSON object and how long it took.
fn run(lab: &Lab, args: &[&str]) -> (serde_json::Value, Duration) {
    let mut full = vec!["nat-timeout"];
    full.extend_from_slice(args);
    let (code, stdout, stderr, took) = run_kaprobe_for(lab, &full, Duration::from_secs(90));
    assert_eq!(code, 0, "exit {code}\n{stdout}\n{stderr}");
    let v: serde_json::Value =
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    (v, took)
}

fn nat_timeout_brackets_the_conntrack_timeout() {
    let lab = Lab::up_or_skip("nat", Some(5));
    let _server = serve(&lab, "198.51.100.2:9700");
    let (v, took) = run(&lab, &["198.51.100.2:9700"]);
    let lower = v["lower_ms"].as_u64().unwrap();
    let upper = v["upper_ms"]
        .as_u64()
        .unwrap_or_else(|| panic!("no timeout found: {v}"));
    assert!(
        lower <= 5000 && 5000 <= upper,
        "bounds {lower}..{upper} ms miss 5 s: {v}"
    );
    assert!(
        upper - lower < 1500,
        "bounds {lower}..{upper} ms are too far apart: {v}"
    );
    assert!(took < Duration::from_secs(60), "took {took:?}");
    // Two rounds at least: the ladder, then the bracket split; longer idles are cancelled.
    assert!(v["measurements"].as_array().unwrap().len() >= 4, "{v}");
    assert!(
        v["recommended_keepalive_time_s"].as_u64().unwrap() < 5,
        "{v}"
    );
}

fn nat_timeout_without_a_nat_finds_none() {
    let lab = Lab::up_or_skip("routed", None);
    let _server = serve(&lab, "198.51.100.2:9701");
    let (v, took) = run(&lab, &["--max", "6s", "198.51.100.2:9701"]);
    assert!(v["upper_ms"].is_null(), "no NAT, no timeout: {v}");
    assert_eq!(v["lower_ms"], 6000, "{v}");
    assert!(
        v["measurements"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["verdict"] == "alive"),
        "{v}"
    );
    assert!(took < Duration::from_secs(15), "took {took:?}");
}

crate::tests!(
    nat_timeout_brackets_the_conntrack_timeout,
    nat_timeout_without_a_nat_finds_none,
);
