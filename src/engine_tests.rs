//! The engine under virtual time: exact instants, no sleeps, no sockets.

use std::time::Duration;

use super::*;
use crate::wire::{ACK, FIN, IcmpError, RST, SYN};

const L: &str = "198.18.0.2:40000";
const R: &str = "198.51.100.2:9000";
const SND: SeqNumber = SeqNumber(1000);
const RCV: SeqNumber = SeqNumber(5000);
const TS: Timestamps = Timestamps {
    tsval: 777,
    tsecr: 555,
};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn flow() -> Flow {
    Flow {
        local: L.parse().unwrap(),
        remote: R.parse().unwrap(),
    }
}

fn cfg(time: u64, intvl: u64, probes: u8, source: SeqSource) -> Config {
    Config {
        flow: flow(),
        route: Default::default(),
        timing: Timing {
            time: ms(time),
            intvl: ms(intvl),
            probes,
        },
        source,
        garbage_octet: false,
    }
}

fn view(idle: u64) -> ConnView {
    ConnView {
        idle: ms(idle),
        busy: false,
        since_ack: Duration::ZERO,
        rto: Duration::ZERO,
        progress: (10, 20),
    }
}

fn seg(src: &str, dst: &str, seq: SeqNumber, ack: SeqNumber, flags: u8) -> Packet {
    Packet::Tcp(Segment {
        src: src.parse().unwrap(),
        dst: dst.parse().unwrap(),
        seq,
        ack,
        flags,
        window: 501,
        ts: Some(TS),
        payload_len: 0,
        ip: IpMeta {
            hop_limit: 64,
            tos: 0,
            flow_label: 0,
            dont_fragment: true,
        },
    })
}

/// The answer a live peer gives to a canonical probe.
fn peer_ack() -> Packet {
    seg(R, L, RCV, SND, ACK)
}

/// Everything `poll` hands out at `now`, notes dropped.
fn drain(e: &mut Engine, now: Duration) -> Vec<Action> {
    let mut out = Vec::new();
    while let Some(a) = e.poll(now) {
        if !matches!(a, Action::Note(_)) {
            out.push(a);
        }
    }
    out
}

/// Runs the local learning exchange at `now`: answers the connection query, sees the SYN on
/// loopback and the challenge ACK going out. Returns the probe sent.
fn learn_and_probe(e: &mut Engine, now: Duration, idle: u64) -> ProbeRepr {
    assert_eq!(drain(e, now), vec![Action::QueryConnection]);
    e.on_connection(now, Some(view(idle)));
    let syn = match drain(e, now).as_slice() {
        [Action::InjectSyn(syn)] => *syn,
        other => panic!("expected a SYN injection, got {other:?}"),
    };
    assert_eq!(syn.src, flow().remote);
    assert_eq!(syn.dst, flow().local);
    assert_eq!(syn.flags, SYN);
    e.on_packet(now, &seg(R, L, syn.seq, SeqNumber(0), SYN));
    e.on_packet(now, &seg(L, R, SND, RCV, ACK));
    match drain(e, now).as_slice() {
        [Action::Send { probe, index: 1 }] => *probe,
        other => panic!("expected probe 1, got {other:?}"),
    }
}

fn verdict(actions: &[Action]) -> Verdict {
    match actions {
        [Action::Finish(Outcome::Verdict(v))] => v.clone(),
        other => panic!("expected a verdict, got {other:?}"),
    }
}

#[test]
fn alive_probe_is_canonical_and_answer_gives_rtt() {
    let mut e = Engine::new(cfg(0, 1000, 3, SeqSource::Local), ms(0), 42);
    let probe = learn_and_probe(&mut e, ms(0), 5000);
    assert_eq!(probe.src, flow().local);
    assert_eq!(probe.dst, flow().remote);
    assert_eq!(probe.seq, SND - 1, "seq = SND.NXT - 1");
    assert_eq!(probe.ack, RCV, "ack = RCV.NXT");
    assert_eq!(probe.flags, ACK);
    assert_eq!(probe.window, 501, "window copied from the kernel's own ACK");
    assert_eq!(probe.ts, Some(TS), "timestamp option copied, not invented");
    assert_eq!(probe.payload, None);
    e.on_packet(ms(0) + Duration::from_micros(84), &peer_ack());
    let v = verdict(&drain(&mut e, ms(1)));
    assert_eq!(v.kind, VerdictKind::Alive);
    assert_eq!(v.probes_sent, 1);
    assert_eq!(v.rtt, Some(Duration::from_micros(84)));
    assert!(e.is_done());
    assert_eq!(e.poll_at(), None);
}

#[test]
fn dead_exactly_at_time_plus_probes_times_intvl() {
    let mut e = Engine::new(cfg(2000, 1000, 3, SeqSource::Local), ms(0), 1);
    assert_eq!(drain(&mut e, ms(0)), vec![Action::QueryConnection]);
    e.on_connection(ms(0), Some(view(0)));
    assert!(drain(&mut e, ms(0)).is_empty());
    assert_eq!(
        e.poll_at(),
        Some(ms(2000)),
        "first probe waits until idle for --time"
    );
    assert!(drain(&mut e, ms(1999)).is_empty());
    learn_and_probe(&mut e, ms(2000), 2000);
    for (at, n) in [(3000, 2u8), (4000, 3)] {
        assert_eq!(e.poll_at(), Some(ms(at)));
        assert!(drain(&mut e, ms(at - 1)).is_empty());
        assert_eq!(drain(&mut e, ms(at)), vec![Action::QueryConnection]);
        e.on_connection(ms(at), Some(view(at)));
        match drain(&mut e, ms(at)).as_slice() {
            [Action::Send { index, probe }] => {
                assert_eq!(*index, n);
                assert_eq!(probe.seq, SND - 1);
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(e.poll_at(), Some(ms(5000)));
    assert!(drain(&mut e, ms(4999)).is_empty());
    assert_eq!(drain(&mut e, ms(5000)), vec![Action::QueryConnection]);
    e.on_connection(ms(5000), Some(view(5000)));
    let v = verdict(&drain(&mut e, ms(5000)));
    assert_eq!(v.kind, VerdictKind::Dead);
    assert_eq!(v.probes_sent, 3);
    assert_eq!(
        v.elapsed,
        Timing {
            time: ms(2000),
            intvl: ms(1000),
            probes: 3
        }
        .detection_time()
    );
    assert_eq!(v.rtt, None);
}

#[test]
fn idle_already_counted_by_the_kernel_shortens_the_wait() {
    let mut e = Engine::new(cfg(2000, 1000, 1, SeqSource::Local), ms(0), 1);
    drain(&mut e, ms(0));
    e.on_connection(ms(0), Some(view(1500)));
    assert!(drain(&mut e, ms(0)).is_empty());
    assert_eq!(e.poll_at(), Some(ms(500)));
}

#[test]
fn first_valid_answer_wins() {
    let mut e = Engine::new(cfg(0, 1000, 3, SeqSource::Local), ms(0), 7);
    learn_and_probe(&mut e, ms(0), 0);
    assert_eq!(drain(&mut e, ms(1000)), vec![Action::QueryConnection]);
    e.on_connection(ms(1000), Some(view(1000)));
    assert!(matches!(
        drain(&mut e, ms(1000)).as_slice(),
        [Action::Send { index: 2, .. }]
    ));
    e.on_packet(ms(1002), &peer_ack());
    e.on_packet(ms(1003), &seg(R, L, RCV, SND, RST));
    let v = verdict(&drain(&mut e, ms(1003)));
    assert_eq!(v.kind, VerdictKind::Alive);
    assert_eq!(v.probes_sent, 2);
    assert_eq!(v.rtt, Some(ms(2)), "rtt from the last probe");
    assert!(drain(&mut e, ms(5000)).is_empty());
}

#[test]
fn forged_rst_and_ack_are_ignored_and_counted() {
    let mut e = Engine::new(cfg(0, 1000, 1, SeqSource::Local), ms(0), 9);
    learn_and_probe(&mut e, ms(0), 0);
    e.on_packet(ms(1), &seg(R, L, RCV + 1, SND, RST));
    e.on_packet(ms(2), &seg(R, L, RCV + 100, SND, ACK));
    e.on_packet(ms(3), &seg(R, L, RCV, SND + 1, ACK));
    // Right numbers but another port: not this connection at all, not counted.
    e.on_packet(ms(4), &seg(R, "198.18.0.2:40001", RCV, SND, ACK));
    assert_eq!(e.ignored(), 3);
    assert_eq!(drain(&mut e, ms(1000)), vec![Action::QueryConnection]);
    // The kernel accepted none of them: its idle clock kept running.
    e.on_connection(ms(1000), Some(view(1000)));
    let v = verdict(&drain(&mut e, ms(1000)));
    assert_eq!(v.kind, VerdictKind::Dead);
}

#[test]
fn rst_with_the_probes_ack_field_is_reset() {
    let mut e = Engine::new(cfg(0, 1000, 3, SeqSource::Local), ms(0), 9);
    learn_and_probe(&mut e, ms(0), 0);
    e.on_packet(ms(1), &seg(R, L, RCV, SeqNumber(0), RST));
    let v = verdict(&drain(&mut e, ms(1)));
    assert_eq!(v.kind, VerdictKind::Reset);
    assert_eq!(v.kind.exit_code(), 3);
}

#[test]
fn icmp_must_quote_the_probes_sequence_number() {
    let mut e = Engine::new(cfg(0, 1000, 2, SeqSource::Local), ms(0), 3);
    let probe = learn_and_probe(&mut e, ms(0), 0);
    let icmp = |seq| {
        Packet::Icmp(IcmpError {
            from: "198.18.0.1".parse().unwrap(),
            to: "198.18.0.2".parse().unwrap(),
            icmp_type: 3,
            code: 13,
            quoted_src: L.parse().unwrap(),
            quoted_dst: R.parse().unwrap(),
            quoted_seq: seq,
        })
    };
    // The error about the challenge ACK (seq = SND.NXT) proves nothing about a probe.
    e.on_packet(ms(1), &icmp(SND));
    assert_eq!(e.ignored(), 1);
    assert!(drain(&mut e, ms(1)).is_empty());
    e.on_packet(ms(2), &icmp(probe.seq));
    let v = verdict(&drain(&mut e, ms(2)));
    assert_eq!(v.kind, VerdictKind::Unreachable);
    let info = v.icmp.unwrap();
    assert_eq!(
        (info.icmp_type, info.code, info.name),
        (3, 13, "admin-prohibited")
    );
    assert_eq!(info.from.to_string(), "198.18.0.1");
}

#[test]
fn an_ack_before_the_injected_syn_is_not_taken_as_the_challenge_ack() {
    let mut e = Engine::new(cfg(0, 1000, 1, SeqSource::Local), ms(0), 5);
    drain(&mut e, ms(0));
    e.on_connection(ms(0), Some(view(0)));
    let [Action::InjectSyn(syn)] = drain(&mut e, ms(0))[..] else {
        panic!()
    };
    e.on_packet(ms(0), &seg(L, R, SND - 1, RCV, ACK));
    assert!(
        drain(&mut e, ms(0)).is_empty(),
        "queued before the SYN: could be a kernel keepalive"
    );
    e.on_packet(ms(0), &seg(R, L, syn.seq, SeqNumber(0), SYN));
    e.on_packet(ms(0), &seg(L, R, SND, RCV, ACK));
    assert!(
        matches!(drain(&mut e, ms(0)).as_slice(), [Action::Send { probe, .. }] if probe.seq == SND - 1)
    );
}

#[test]
fn learning_retries_after_the_rate_limit_then_gives_up() {
    let mut e = Engine::new(cfg(0, 1000, 1, SeqSource::Local), ms(0), 5);
    drain(&mut e, ms(0));
    e.on_connection(ms(0), Some(view(0)));
    let mut seqs = Vec::new();
    let mut now = ms(0);
    for _ in 0..LEARN_TRIES {
        match drain(&mut e, now).as_slice() {
            [Action::InjectSyn(s)] => seqs.push(s.seq),
            other => panic!("{other:?}"),
        }
        assert_eq!(e.poll_at(), Some(now + LEARN_RETRY));
        assert!(LEARN_RETRY > PEER_RATELIMIT);
        now += LEARN_RETRY;
    }
    seqs.dedup();
    assert_eq!(
        seqs.len(),
        LEARN_TRIES as usize,
        "every SYN has a fresh random sequence number"
    );
    assert_eq!(
        drain(&mut e, now),
        vec![Action::Finish(Outcome::LearnFailed)]
    );
}

#[test]
fn a_closed_connection_ends_the_probe() {
    let mut e = Engine::new(cfg(0, 1000, 3, SeqSource::Local), ms(0), 5);
    learn_and_probe(&mut e, ms(0), 0);
    drain(&mut e, ms(1000));
    e.on_connection(ms(1000), None);
    assert_eq!(
        drain(&mut e, ms(1000)),
        vec![Action::Finish(Outcome::Closed)]
    );
}

#[test]
fn data_in_flight_postpones_the_probe_without_counting_it() {
    let mut e = Engine::new(cfg(0, 1000, 1, SeqSource::Local), ms(0), 5);
    drain(&mut e, ms(0));
    e.on_connection(
        ms(0),
        Some(ConnView {
            idle: ms(0),
            busy: true,
            since_ack: Duration::ZERO,
            rto: Duration::ZERO,
            progress: (0, 0),
        }),
    );
    assert!(drain(&mut e, ms(0)).is_empty());
    assert_eq!(e.poll_at(), Some(ms(1000)));
    assert_eq!(e.probes_sent(), 0);
    learn_and_probe(&mut e, ms(1000), 1000);
}

#[test]
fn numbers_are_learned_again_when_the_connection_moved_on() {
    let mut e = Engine::new(cfg(0, 1000, 2, SeqSource::Local), ms(0), 5);
    learn_and_probe(&mut e, ms(0), 0);
    drain(&mut e, ms(1000));
    // Counters moved although nothing arrived since the probe (idle 1000 ms): learn again.
    e.on_connection(
        ms(1000),
        Some(ConnView {
            idle: ms(1000),
            busy: false,
            since_ack: Duration::ZERO,
            rto: Duration::ZERO,
            progress: (11, 20),
        }),
    );
    assert!(matches!(
        drain(&mut e, ms(1000)).as_slice(),
        [Action::InjectSyn(_)]
    ));
}

#[test]
fn our_own_probe_seen_on_the_wire_is_not_learned_from() {
    let mut e = Engine::new(cfg(0, 1000, 2, SeqSource::Local), ms(0), 5);
    let probe = learn_and_probe(&mut e, ms(0), 0);
    // A mismatched ACK marks the numbers stale, so the next round learns again.
    e.on_packet(ms(1), &seg(R, L, RCV + 7, SND, ACK));
    drain(&mut e, ms(1000));
    e.on_connection(ms(1000), Some(view(1000)));
    let [Action::InjectSyn(syn)] = drain(&mut e, ms(1000))[..] else {
        panic!()
    };
    e.on_packet(ms(1000), &seg(R, L, syn.seq, SeqNumber(0), SYN));
    e.on_packet(ms(1000), &seg(L, R, probe.seq, probe.ack, ACK));
    assert!(
        drain(&mut e, ms(1000)).is_empty(),
        "the capture's copy of our probe is no challenge ACK"
    );
    e.on_packet(ms(1000), &seg(L, R, SND + 3, RCV + 7, ACK));
    match drain(&mut e, ms(1000)).as_slice() {
        [Action::Send { probe, index: 2 }] => {
            assert_eq!((probe.seq, probe.ack), (SND + 2, RCV + 7))
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn garbage_octet_adds_one_byte() {
    let mut c = cfg(0, 1000, 1, SeqSource::Local);
    c.garbage_octet = true;
    let mut e = Engine::new(c, ms(0), 5);
    let probe = learn_and_probe(&mut e, ms(0), 0);
    assert_eq!(probe.payload, Some(0));
    assert_eq!(probe.seq, SND - 1);
}

#[test]
fn peer_source_elicits_with_a_nonce_and_trusts_only_matching_rsts() {
    let mut e = Engine::new(cfg(0, 1000, 2, SeqSource::Peer), ms(0), 11);
    drain(&mut e, ms(0));
    e.on_connection(ms(0), Some(view(0)));
    let [Action::Send { probe, index: 1 }] = drain(&mut e, ms(0))[..] else {
        panic!()
    };
    assert_eq!(probe.ts, None, "no stale timestamp to fail PAWS");
    e.on_packet(ms(1), &seg(R, L, probe.ack + 1, SeqNumber(0), RST));
    assert_eq!(e.ignored(), 1);
    e.on_packet(ms(2), &seg(R, L, probe.ack, SeqNumber(0), RST));
    assert_eq!(verdict(&drain(&mut e, ms(2))).kind, VerdictKind::Reset);
}

#[test]
fn peer_source_learns_the_numbers_from_the_answer() {
    let mut e = Engine::new(cfg(0, 1000, 2, SeqSource::Peer), ms(0), 11);
    drain(&mut e, ms(0));
    e.on_connection(ms(0), Some(view(0)));
    drain(&mut e, ms(0));
    e.on_packet(ms(1), &peer_ack());
    assert_eq!(verdict(&drain(&mut e, ms(1))).kind, VerdictKind::Alive);
    let n = e.numbers().unwrap();
    assert_eq!((n.snd_nxt, n.rcv_nxt), (SND, RCV));
}

#[test]
fn sniff_source_learns_from_a_data_segment() {
    let mut e = Engine::new(cfg(0, 1000, 2, SeqSource::Sniff), ms(0), 11);
    drain(&mut e, ms(0));
    e.on_connection(ms(0), Some(view(0)));
    assert!(drain(&mut e, ms(0)).is_empty(), "waits for the wire");
    let mut data = seg(L, R, SND, RCV, ACK | FIN);
    if let Packet::Tcp(s) = &mut data {
        s.payload_len = 10;
    }
    e.on_packet(ms(5), &data);
    match drain(&mut e, ms(5)).as_slice() {
        [Action::Send { probe, .. }] => assert_eq!(
            probe.seq,
            SND + 10,
            "SND.NXT after 10 bytes and a FIN, minus one"
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn sniff_source_gives_up_after_the_dead_time() {
    let mut e = Engine::new(cfg(0, 500, 2, SeqSource::Sniff), ms(0), 11);
    drain(&mut e, ms(0));
    e.on_connection(ms(0), Some(view(0)));
    assert_eq!(e.poll_at(), Some(ms(1000)));
    assert_eq!(
        drain(&mut e, ms(1000)),
        vec![Action::Finish(Outcome::LearnFailed)]
    );
}

#[test]
fn short_intervals_warn_about_the_peer_rate_limit() {
    assert!(
        Timing {
            time: ms(0),
            intvl: ms(100),
            probes: 3
        }
        .warning()
        .unwrap()
        .contains("tcp_invalid_ratelimit")
    );
    assert!(
        Timing {
            time: ms(0),
            intvl: ms(500),
            probes: 3
        }
        .warning()
        .is_none()
    );
    assert!(
        Timing {
            time: ms(0),
            intvl: ms(100),
            probes: 1
        }
        .warning()
        .is_none()
    );
}

#[test]
fn sequence_numbers_wrap_in_probes() {
    let mut e = Engine::new(cfg(0, 1000, 1, SeqSource::Local), ms(0), 5);
    drain(&mut e, ms(0));
    e.on_connection(ms(0), Some(view(0)));
    let [Action::InjectSyn(syn)] = drain(&mut e, ms(0))[..] else {
        panic!()
    };
    e.on_packet(ms(0), &seg(R, L, syn.seq, SeqNumber(0), SYN));
    e.on_packet(ms(0), &seg(L, R, SeqNumber(0), SeqNumber(u32::MAX), ACK));
    let [Action::Send { probe, .. }] = drain(&mut e, ms(0))[..] else {
        panic!()
    };
    assert_eq!(probe.seq, SeqNumber(u32::MAX));
    e.on_packet(ms(1), &seg(R, L, SeqNumber(u32::MAX), SeqNumber(0), ACK));
    assert_eq!(verdict(&drain(&mut e, ms(1))).kind, VerdictKind::Alive);
}

#[test]
fn a_segment_the_kernel_accepted_after_the_first_probe_means_alive() {
    let mut e = Engine::new(cfg(0, 1000, 3, SeqSource::Local), ms(0), 5);
    learn_and_probe(&mut e, ms(0), 5000);
    drain(&mut e, ms(1000));
    // Idle 1000 ms at t=1000: nothing received since the probe at t=0.
    e.on_connection(ms(1000), Some(view(1000)));
    assert!(matches!(
        drain(&mut e, ms(1000)).as_slice(),
        [Action::Send { index: 2, .. }]
    ));
    drain(&mut e, ms(2000));
    // Idle 300 ms at t=2000: the kernel got something at t=1700.
    e.on_connection(ms(2000), Some(view(300)));
    let v = verdict(&drain(&mut e, ms(2000)));
    assert_eq!(v.kind, VerdictKind::Alive);
    assert_eq!(v.rtt, None);
}

// ---- regressions found by tests/lab_trust.rs and the engine_packets fuzz target (issue 3)

/// tests/lab_trust.rs no_harm: with --probes 1, the peer answered while its own data was
/// moving the numbers on; the answer did not match the learned pair, and the last probe's
/// deadline declared `dead` without asking the kernel, which had accepted segments all along.
#[test]
fn last_probe_deadline_asks_the_kernel_before_dead() {
    let mut e = Engine::new(cfg(0, 1000, 1, SeqSource::Local), ms(0), 5);
    learn_and_probe(&mut e, ms(0), 0);
    // The peer's answer, with its data since learning counted in: numbers moved on.
    e.on_packet(ms(1), &seg(R, L, RCV + 1448, SND, ACK));
    drain(&mut e, ms(1));
    assert_eq!(e.ignored(), 1);
    // At the deadline: the kernel received a segment 3 ms ago.
    assert_eq!(drain(&mut e, ms(1000)), vec![Action::QueryConnection]);
    e.on_connection(ms(1000), Some(view(3)));
    let v = verdict(&drain(&mut e, ms(1000)));
    assert_eq!(v.kind, VerdictKind::Alive);
}

/// ...and when the kernel has heard nothing since the probe, `dead` at the same instant.
#[test]
fn last_probe_deadline_is_dead_when_the_kernel_heard_nothing() {
    let mut e = Engine::new(cfg(0, 1000, 1, SeqSource::Local), ms(0), 5);
    learn_and_probe(&mut e, ms(0), 0);
    assert_eq!(drain(&mut e, ms(1000)), vec![Action::QueryConnection]);
    e.on_connection(ms(1000), Some(view(1000)));
    let v = verdict(&drain(&mut e, ms(1000)));
    assert_eq!(v.kind, VerdictKind::Dead);
    assert_eq!(v.elapsed, ms(1000));
}

#[test]
fn a_forged_segment_claiming_the_local_address_teaches_nothing() {
    let mut e = Engine::new(cfg(0, 1000, 1, SeqSource::Local), ms(0), 5);
    drain(&mut e, ms(0));
    e.on_connection(ms(0), Some(view(0)));
    let [Action::InjectSyn(syn)] = drain(&mut e, ms(0))[..] else {
        panic!()
    };
    e.on_packet_from(
        ms(0),
        &seg(R, L, syn.seq, SeqNumber(0), SYN),
        Origin::Loopback,
    );
    // From the network, with the local address as its source: not the kernel's ACK.
    e.on_packet_from(
        ms(0),
        &seg(L, R, SND + 500, RCV + 500, ACK),
        Origin::Received,
    );
    assert!(drain(&mut e, ms(0)).is_empty());
    assert_eq!(e.ignored(), 1);
    // The kernel's own challenge ACK, seen leaving.
    e.on_packet_from(ms(0), &seg(L, R, SND, RCV, ACK), Origin::Sent);
    let [Action::Send { probe, .. }] = drain(&mut e, ms(0))[..] else {
        panic!()
    };
    assert_eq!((probe.seq, probe.ack), (SND - 1, RCV));
    // An "answer" that was seen leaving this host is no answer.
    e.on_packet_from(ms(1), &peer_ack(), Origin::Sent);
    assert!(drain(&mut e, ms(1)).is_empty());
    e.on_packet_from(ms(2), &peer_ack(), Origin::Received);
    assert_eq!(verdict(&drain(&mut e, ms(2))).kind, VerdictKind::Alive);
}
