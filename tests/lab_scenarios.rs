//! The SPEC's lab scenarios, each for IPv4 and IPv6, against real connections in
//! network namespaces. Needs root, `ip` and `nft`; skipped otherwise (a failure
//! instead when KAPROBE_REQUIRE_NETNS=1).

mod common;

use common::{
    Lab, assert_still_carries_data, assert_verdict_fields, describe, elapsed_ms, run_kaprobe,
    verdict_json,
};
use std::net::IpAddr;
use std::time::Duration;

fn assert_within(v: &serde_json::Value, expected_ms: f64, tolerance: f64) {
    let got = elapsed_ms(v);
    let (lo, hi) = (
        expected_ms * (1.0 - tolerance),
        expected_ms * (1.0 + tolerance),
    );
    assert!(
        (lo..=hi).contains(&got),
        "elapsed_ms {got} not within {lo}..={hi}: {v}"
    );
}

// ------------------------------------------------------------------ 1. direct, alive

fn direct_alive(v6: bool, server_port: u16, client_port: u16) {
    let lab = Lab::up("direct", None);
    let (client, server) = lab.connect(v6, server_port, client_port);
    let (local, remote) = lab.ends(v6, server_port, client_port);
    let flow = common::flow(local, remote);

    let (code, out, err, _) = run_kaprobe(&lab, &["probe", &flow]);
    assert_eq!(code, 0, "alive must exit 0\n{}", describe(code, &out, &err));
    let v = verdict_json(&out);
    assert_verdict_fields(&v, local, remote, "alive");
    assert_eq!(v["probes_sent"], 1, "one probe, one answer: {v}");
    assert!(v["rtt_us"].is_number(), "alive has an rtt: {v}");

    // The probe must not have disturbed the connection.
    assert_still_carries_data(&client, &server);
}

// ------------------------------------------------------------------ 2. crash + restart, reset

fn restart_reset(v6: bool, server_port: u16, client_port: u16) {
    let lab = Lab::up("direct", None);
    let (client, server) = lab.connect(v6, server_port, client_port);
    let (local, remote) = lab.ends(v6, server_port, client_port);

    // The peer dies without a word: its FIN is dropped, then its host comes back empty.
    lab.fault(&["freeze"]);
    drop(server);
    lab.fault(&["restart"]);

    let (code, out, err, _) = run_kaprobe(&lab, &["probe", &common::flow(local, remote)]);
    assert_eq!(code, 3, "reset must exit 3\n{}", describe(code, &out, &err));
    let v = verdict_json(&out);
    assert_verdict_fields(&v, local, remote, "reset");
    drop(client);
}

// ------------------------------------------------------------------ 3. crash, no restart: dead

fn blackhole_dead(v6: bool, server_port: u16, client_port: u16) {
    let lab = Lab::up("direct", None);
    let (_client, _server) = lab.connect(v6, server_port, client_port);
    let (local, remote) = lab.ends(v6, server_port, client_port);
    lab.fault(&["blackhole"]);

    let args = ["probe", "--time", "0s", "--intvl", "500ms", "--probes", "3"];
    let flow = common::flow(local, remote);
    let mut full = args.to_vec();
    full.push(&flow);
    let (code, out, err, _) = run_kaprobe(&lab, &full);
    assert_eq!(code, 1, "dead must exit 1\n{}", describe(code, &out, &err));
    let v = verdict_json(&out);
    assert_verdict_fields(&v, local, remote, "dead");
    assert_eq!(v["probes_sent"], 3, "{v}");
    // time + probes x intvl = 0 + 3 x 500 ms
    assert_within(&v, 1500.0, 0.2);
}

fn blackhole_dead_after_idle_time(v6: bool, server_port: u16, client_port: u16) {
    let lab = Lab::up("direct", None);
    // Fresh connection: idle is about 0 when kaprobe starts, so it waits ~1 s first.
    let (_client, _server) = lab.connect(v6, server_port, client_port);
    // The connection falls idle here (the handshake was its last segment received).
    let idle_from = std::time::Instant::now();
    let (local, remote) = lab.ends(v6, server_port, client_port);
    lab.fault(&["blackhole"]);

    let flow = common::flow(local, remote);
    let (code, out, err, _) = run_kaprobe(
        &lab,
        &[
            "probe", "--time", "1s", "--intvl", "500ms", "--probes", "3", &flow,
        ],
    );
    let since_idle = idle_from.elapsed().as_secs_f64() * 1000.0;
    assert_eq!(code, 1, "dead must exit 1\n{}", describe(code, &out, &err));
    let v = verdict_json(&out);
    assert_verdict_fields(&v, local, remote, "dead");
    assert_eq!(v["probes_sent"], 3, "{v}");
    // Declared time + probes x intvl = 1000 + 3 x 500 ms after the connection fell idle, as
    // the kernel counts (kaprobe's own start-up, loading the kernel source, is part of the
    // wait, not added to it); the process exits just after.
    assert!(
        (2400.0..=3200.0).contains(&since_idle),
        "dead {since_idle:.0} ms after the connection fell idle, not about 2500: {v}"
    );
    assert!(elapsed_ms(&v) <= 2600.0, "{v}");
}

// ------------------------------------------------------------------ 4. NAT timeout

const NAT_CT_TIMEOUT: u32 = 3;

fn nat_within_timeout_alive(v6: bool, server_port: u16, client_port: u16) {
    let lab = Lab::up("nat", Some(NAT_CT_TIMEOUT));
    let (client, server) = lab.connect(v6, server_port, client_port);
    let (local, remote) = lab.ends(v6, server_port, client_port);

    let (code, out, err, wall) = run_kaprobe(&lab, &["probe", &common::flow(local, remote)]);
    assert!(
        wall < Duration::from_secs(NAT_CT_TIMEOUT.into()),
        "probe took {wall:?}, longer than the NAT timeout"
    );
    assert_eq!(
        code,
        0,
        "alive through a fresh NAT entry must exit 0\n{}",
        describe(code, &out, &err)
    );
    let v = verdict_json(&out);
    assert_verdict_fields(&v, local, remote, "alive");
    assert_still_carries_data(&client, &server);
}

fn nat_idle_past_timeout_dead(v6: bool, server_port: u16, client_port: u16) {
    let lab = Lab::up("nat", Some(NAT_CT_TIMEOUT));
    let (_client, _server) = lab.connect(v6, server_port, client_port);
    let (local, remote) = lab.ends(v6, server_port, client_port);

    // Idle past the conntrack timeout: the NAT forgets the flow and, with
    // nf_conntrack_tcp_loose=0 and `ct state invalid drop`, drops the probe.
    std::thread::sleep(Duration::from_millis(4500));

    let flow = common::flow(local, remote);
    let (code, out, err, _) =
        run_kaprobe(&lab, &["probe", "--intvl", "500ms", "--probes", "2", &flow]);
    assert_eq!(
        code,
        1,
        "expired NAT entry must read as dead (exit 1)\n{}",
        describe(code, &out, &err)
    );
    let v = verdict_json(&out);
    assert_verdict_fields(&v, local, remote, "dead");
    assert_eq!(v["probes_sent"], 2, "{v}");
}

// ------------------------------------------------------------------ 5. ICMP from a router

fn reject_unreachable(v6: bool, what: &str, server_port: u16, client_port: u16) {
    let lab = Lab::up("routed", None);
    let (_client, _server) = lab.connect(v6, server_port, client_port);
    let (local, remote) = lab.ends(v6, server_port, client_port);
    lab.fault(&["reject", what]);

    let (code, out, err, _) = run_kaprobe(&lab, &["probe", &common::flow(local, remote)]);
    assert_eq!(
        code,
        4,
        "unreachable must exit 4\n{}",
        describe(code, &out, &err)
    );
    let v = verdict_json(&out);
    assert_verdict_fields(&v, local, remote, "unreachable");

    let (want_type, want_code) = match (v6, what) {
        (false, "host-unreachable") => (3, 1),
        (false, "admin-prohibited") => (3, 13),
        (true, "host-unreachable") => (1, 3), // ICMPv6 address unreachable
        (true, "admin-prohibited") => (1, 1),
        _ => unreachable!(),
    };
    let icmp = &v["icmp"];
    assert!(
        icmp.is_object(),
        "unreachable verdict without icmp object: {v}"
    );
    assert_eq!(icmp["type"], want_type, "icmp type: {v}");
    assert_eq!(icmp["code"], want_code, "icmp code: {v}");
    let from: IpAddr = icmp["from"]
        .as_str()
        .unwrap_or_else(|| panic!("icmp.from not a string: {v}"))
        .parse()
        .unwrap_or_else(|e| panic!("icmp.from not an address ({e}): {v}"));
    assert_eq!(from, lab.r_addr(v6), "the error comes from the router: {v}");
}

// ------------------------------------------------------------------ 6. errors

fn no_such_connection(v6: bool, server_port: u16, client_port: u16) {
    let lab = Lab::up("direct", None);
    // A real connection exists on other ports; the one asked for does not.
    let (_client, _server) = lab.connect(v6, server_port, client_port);
    let (local, remote) = lab.ends(v6, server_port + 1, client_port + 1);
    let (code, out, err, _) = run_kaprobe(&lab, &["probe", &common::flow(local, remote)]);
    assert_eq!(
        code,
        5,
        "no such connection must exit 5\n{}",
        describe(code, &out, &err)
    );
    assert!(!err.contains("panicked"), "no panic: {err}");
}

/// Needs no lab and no privilege: the flow is rejected before anything else.
fn bad_flow_exits_2() {
    let (code, out, err, _) = common::run_kaprobe_bare(&["probe", "1.2.3.4:0-198.18.0.2:9000"]);
    assert_eq!(
        code,
        2,
        "bad input must exit 2\n{}",
        describe(code, &out, &err)
    );
    assert!(!err.trim().is_empty(), "a message on stderr");
    assert!(!err.contains("panicked"), "no panic: {err}");
}

crate::tests!(
    [crate::cases!(common::require_lab;
        direct_alive_v4 => direct_alive(false, 9101, 41101),
        direct_alive_v6 => direct_alive(true, 9102, 41102),
        restart_reset_v4 => restart_reset(false, 9201, 41201),
        restart_reset_v6 => restart_reset(true, 9202, 41202),
        blackhole_dead_v4 => blackhole_dead(false, 9301, 41301),
        blackhole_dead_v6 => blackhole_dead(true, 9302, 41302),
        blackhole_dead_after_idle_time_v4 => blackhole_dead_after_idle_time(false, 9311, 41311),
        blackhole_dead_after_idle_time_v6 => blackhole_dead_after_idle_time(true, 9312, 41312),
        nat_within_timeout_alive_v4 => nat_within_timeout_alive(false, 9401, 41401),
        nat_within_timeout_alive_v6 => nat_within_timeout_alive(true, 9402, 41402),
        nat_idle_past_timeout_dead_v4 => nat_idle_past_timeout_dead(false, 9411, 41411),
        nat_idle_past_timeout_dead_v6 => nat_idle_past_timeout_dead(true, 9412, 41412),
        reject_host_unreachable_v4 => reject_unreachable(false, "host-unreachable", 9501, 41501),
        reject_host_unreachable_v6 => reject_unreachable(true, "host-unreachable", 9502, 41502),
        reject_admin_prohibited_v4 => reject_unreachable(false, "admin-prohibited", 9511, 41511),
        reject_admin_prohibited_v6 => reject_unreachable(true, "admin-prohibited", 9512, 41512),
        no_such_connection_v4 => no_such_connection(false, 9601, 41601),
        no_such_connection_v6 => no_such_connection(true, 9611, 41611),
    )],
    bad_flow_exits_2,
);
