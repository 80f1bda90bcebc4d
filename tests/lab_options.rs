//! `probe` options in the lab: the other sequence sources, --garbage-octet, a bare REMOTE,
//! -v JSON events, and a connection that closes mid-probe.

mod common;

use std::io::Write;
use std::time::Duration;

use common::{Lab, describe, run_kaprobe, verdict_json};

fn peer_source_works_without_a_stateful_firewall_and_warns() {
    let lab = Lab::up_or_skip("direct", None);
    for v6 in [false, true] {
        let port = if v6 { 9801 } else { 9800 };
        let (c, s) = lab.connect(v6, port, port + 40000);
        let (l, r) = lab.ends(v6, port, port + 40000);
        let (code, out, err, _) = run_kaprobe(
            &lab,
            &["probe", "--seq-source", "peer", &common::flow(l, r)],
        );
        assert_eq!(code, 0, "{}", describe(code, &out, &err));
        assert_eq!(verdict_json(&out)["verdict"], "alive");
        assert!(err.contains("stateful firewall"), "the warning: {err}");
        common::assert_still_carries_data(&c, &s);
    }
}

fn canonical_probe_passes_the_strict_nat_where_peer_source_may_not() {
    // `ct state invalid drop` drops many out-of-window elicit probes (measured here: 4 of 6
    // connections read as dead, their random numbers decide), so --seq-source peer cannot be
    // asserted either way; the canonical probe must pass on every connection.
    let lab = Lab::up_or_skip("nat", Some(60));
    let mut keep = Vec::new();
    for i in 0..4u16 {
        keep.push(lab.connect(false, 9802, 49810 + i));
        let (l, r) = lab.ends(false, 9802, 49810 + i);
        let (code, out, err, _) = run_kaprobe(&lab, &["probe", &common::flow(l, r)]);
        assert_eq!(code, 0, "{}", describe(code, &out, &err));
    }
}

fn sniff_source_learns_from_traffic() {
    let lab = Lab::up_or_skip("direct", None);
    let (c, s) = lab.connect(false, 9803, 49803);
    let (l, r) = lab.ends(false, 9803, 49803);
    let flow = common::flow(l, r);
    let sniff = |intvl: &str, probes: &str| {
        let args = [
            "probe",
            "--seq-source",
            "sniff",
            "--intvl",
            intvl,
            "--probes",
            probes,
        ];
        run_kaprobe(&lab, &[&args[..], &[flow.as_str()]].concat())
    };
    let writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(400));
        (&c).write_all(b"wake").unwrap();
        c
    });
    let (code, out, err, _) = sniff("1s", "3");
    let c = writer.join().unwrap();
    assert_eq!(code, 0, "{}", describe(code, &out, &err));
    assert_eq!(verdict_json(&out)["verdict"], "alive");
    let mut got = [0u8; 4];
    std::io::Read::read_exact(&mut &s, &mut got).unwrap();
    assert_eq!(&got, b"wake");
    common::assert_still_carries_data(&c, &s);

    // With nothing on the wire it gives up after probes x intvl, exit 7.
    let (code, out, err, _) = sniff("300ms", "2");
    assert_eq!(code, 7, "{}", describe(code, &out, &err));
    assert!(err.contains("no segment"), "{err}");
}

fn garbage_octet_probe_is_answered_and_harmless() {
    let lab = Lab::up_or_skip("nat", Some(60));
    for v6 in [false, true] {
        let port = if v6 { 9805 } else { 9804 };
        let (c, s) = lab.connect(v6, port, port + 40000);
        let (l, r) = lab.ends(v6, port, port + 40000);
        let (code, out, err, _) =
            run_kaprobe(&lab, &["probe", "--garbage-octet", &common::flow(l, r)]);
        assert_eq!(code, 0, "{}", describe(code, &out, &err));
        assert_eq!(verdict_json(&out)["verdict"], "alive");
        // The peer discards the already-acknowledged byte: the stream is unchanged.
        common::assert_still_carries_data(&c, &s);
    }
}

fn bare_remote_needs_exactly_one_match() {
    let lab = Lab::up_or_skip("direct", None);
    let (_c1, _s1) = lab.connect(false, 9806, 49806);
    let remote = "198.51.100.2:9806";
    let (code, out, err, _) = run_kaprobe(&lab, &["probe", remote]);
    assert_eq!(code, 0, "{}", describe(code, &out, &err));
    assert_eq!(verdict_json(&out)["local"], "198.18.0.2:49806");

    let (_c2, _s2) = lab.connect(false, 9806, 49807);
    let (code, out, err, _) = run_kaprobe(&lab, &["probe", remote]);
    assert_eq!(code, 2, "{}", describe(code, &out, &err));
    assert!(
        err.contains("198.18.0.2:49806-198.51.100.2:9806")
            && err.contains("198.18.0.2:49807-198.51.100.2:9806"),
        "lists both: {err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");

    let (code, _, err, _) = run_kaprobe(&lab, &["probe", "198.51.100.2:1"]);
    assert_eq!(code, 5, "{err}");
}

fn verbose_json_has_learned_and_probe_events() {
    let lab = Lab::up_or_skip("direct", None);
    let (_c, _s) = lab.connect(true, 9807, 49807);
    let (l, r) = lab.ends(true, 9807, 49807);
    let (code, out, err, _) = run_kaprobe(&lab, &["-v", "probe", &common::flow(l, r)]);
    assert_eq!(code, 0, "{}", describe(code, &out, &err));
    let events: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["learned", "probe", "verdict"], "{out}");
    let (learned, probe) = (&events[0], &events[1]);
    // The probe is canonical: seq = SND.NXT - 1, ack = RCV.NXT.
    assert_eq!(
        probe["seq"].as_u64().unwrap(),
        (learned["snd_nxt"].as_u64().unwrap() + (1 << 32) - 1) % (1 << 32)
    );
    assert_eq!(probe["ack"], learned["rcv_nxt"]);
}

fn a_connection_closed_mid_probe_exits_5() {
    let lab = Lab::up_or_skip("direct", None);
    let (c, _s) = lab.connect(false, 9808, 49808);
    let (l, r) = lab.ends(false, 9808, 49808);
    lab.fault(&["blackhole"]);
    let flow = common::flow(l, r);
    let mut bg = common::Background::start(
        &lab,
        &["-v", "probe", "--intvl", "500ms", "--probes", "4", &flow],
    );
    // Closed once the first probe is out, however long kaprobe took to start.
    let first = bg.wait_json(Duration::from_secs(10), |v| v["event"] == "probe");
    assert!(first.is_some(), "no probe went out");
    // The FIN is blackholed: the socket leaves ESTABLISHED for FIN_WAIT1.
    drop(c);
    let code = bg.exit_within(Duration::from_secs(5));
    let (status, out, err) = bg.stop();
    assert_eq!(code, Some(5), "{}", describe(status, &out, &err));
    assert!(err.contains("closed during the probe"), "{err}");
}

crate::tests!(
    peer_source_works_without_a_stateful_firewall_and_warns,
    canonical_probe_passes_the_strict_nat_where_peer_source_may_not,
    sniff_source_learns_from_traffic,
    garbage_octet_probe_is_answered_and_harmless,
    bare_remote_needs_exactly_one_match,
    verbose_json_has_learned_and_probe_events,
    a_connection_closed_mid_probe_exits_5,
);
