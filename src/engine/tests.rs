//! The engine under virtual time: exact instants, no sleeps, no sockets.

use std::time::Duration;

use super::*;
use crate::seq::SeqNumber;
use crate::wire::{ACK, FIN, IcmpError, Packet, RST, SYN, Segment, Timestamps};

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
        numbers: None,
        inode: 0,
    }
}

fn seg(src: &str, dst: &str, seq: SeqNumber, ack: SeqNumber, flags: u8) -> Packet {
    Packet::Tcp(Segment {
        window: 501,
        ts: Some(TS),
        ..Segment::bare(src.parse().unwrap(), dst.parse().unwrap(), seq, ack, flags)
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

/// An engine started at 0 whose first question to the kernel was answered with `view`.
fn started(c: Config, seed: u64, view: ConnView) -> Engine {
    let mut e = Engine::new(c, ms(0), seed);
    assert_eq!(drain(&mut e, ms(0)), vec![Action::QueryConnection]);
    e.on_connection(ms(0), Some(view));
    e
}

/// Asserts that `poll` at `now` asks the kernel about the connection, answers with `view`,
/// and returns everything `poll` then hands out, notes dropped.
fn query(e: &mut Engine, now: Duration, view: ConnView) -> Vec<Action> {
    assert_eq!(drain(e, now), vec![Action::QueryConnection]);
    e.on_connection(now, Some(view));
    drain(e, now)
}

/// Takes the SYN the engine injects next and shows it back to the engine on loopback, as
/// the capture sees it.
fn inject_and_see_syn(e: &mut Engine, now: Duration) -> Segment {
    let [Action::InjectSyn(syn)] = drain(e, now)[..] else {
        panic!("expected a SYN injection")
    };
    e.on_packet_from(
        now,
        &seg(R, L, syn.seq, SeqNumber(0), SYN),
        Origin::Loopback,
    );
    syn
}

/// An engine at 0 that probes one idle connection, whose injected SYN the capture showed on
/// loopback: the local socket's next ACK is the challenge ACK.
fn awaiting_challenge_ack() -> Engine {
    let mut e = started(cfg(0, 1000, 1, SeqSource::Local), 5, view(0));
    inject_and_see_syn(&mut e, ms(0));
    e
}

/// Runs the local learning exchange at `now`: answers the connection query, sees the SYN on
/// loopback and the challenge ACK going out. Returns the probe sent.
fn learn_and_probe(e: &mut Engine, now: Duration, idle: u64) -> Segment {
    let syn = match query(e, now, view(idle)).as_slice() {
        [Action::InjectSyn(syn)] => *syn,
        other => panic!("expected a SYN injection, got {other:?}"),
    };
    assert_eq!(syn.src, flow().remote);
    assert_eq!(syn.dst, flow().local);
    assert_eq!(syn.flags, SYN);
    e.on_packet_from(
        now,
        &seg(R, L, syn.seq, SeqNumber(0), SYN),
        Origin::Loopback,
    );
    e.on_packet_from(now, &seg(L, R, SND, RCV, ACK), Origin::Loopback);
    let probe = match drain(e, now).as_slice() {
        [Action::Send { probe, index: 1 }] => *probe,
        other => panic!("expected probe 1, got {other:?}"),
    };
    sent_copy(e, now, &probe);
    probe
}

/// The capture's copy of a probe leaving this host, as the I/O loop hands it over after the
/// send (README "Verdicts and timing": an RTT belongs to one probe).
fn sent_copy(e: &mut Engine, now: Duration, probe: &Segment) {
    e.on_packet_from(now, &seg(L, R, probe.seq, probe.ack, ACK), Origin::Sent);
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
    assert_eq!(probe.payload_len, 0);
    e.on_packet_from(
        ms(0) + Duration::from_micros(84),
        &peer_ack(),
        Origin::Loopback,
    );
    let v = verdict(&drain(&mut e, ms(1)));
    assert_eq!(v.kind, VerdictKind::Alive);
    assert_eq!(v.probes_sent, 1);
    assert_eq!(v.rtt, Some(Duration::from_micros(84)));
    assert_eq!(e.next_poll(), PollAt::Done);
}

#[test]
fn dead_exactly_at_time_plus_probes_times_intvl() {
    let mut e = Engine::new(cfg(2000, 1000, 3, SeqSource::Local), ms(0), 1);
    assert!(query(&mut e, ms(0), view(0)).is_empty());
    assert_eq!(
        e.next_poll(),
        PollAt::At(ms(2000)),
        "first probe waits until idle for --time"
    );
    assert!(drain(&mut e, ms(1999)).is_empty());
    learn_and_probe(&mut e, ms(2000), 2000);
    for (at, n) in [(3000, 2u8), (4000, 3)] {
        assert_eq!(e.next_poll(), PollAt::At(ms(at)));
        assert!(drain(&mut e, ms(at - 1)).is_empty());
        match query(&mut e, ms(at), view(at)).as_slice() {
            [Action::Send { index, probe }] => {
                assert_eq!(*index, n);
                assert_eq!(probe.seq, SND - 1);
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(e.next_poll(), PollAt::At(ms(5000)));
    assert!(drain(&mut e, ms(4999)).is_empty());
    let v = verdict(&query(&mut e, ms(5000), view(5000)));
    assert_eq!(v.kind, VerdictKind::Dead);
    assert_eq!(v.probes_sent, 3);
    // time + probes × intvl after the connection fell idle (README "Verdicts and timing").
    assert_eq!(v.elapsed, ms(2000 + 3 * 1000));
    assert_eq!(v.rtt, None);
}

#[test]
fn idle_already_counted_by_the_kernel_shortens_the_wait() {
    let mut e = started(cfg(2000, 1000, 1, SeqSource::Local), 1, view(1500));
    assert!(drain(&mut e, ms(0)).is_empty());
    assert_eq!(e.next_poll(), PollAt::At(ms(500)));
}

#[test]
fn first_valid_answer_wins() {
    let mut e = Engine::new(cfg(0, 1000, 3, SeqSource::Local), ms(0), 7);
    learn_and_probe(&mut e, ms(0), 0);
    let [Action::Send { index: 2, probe }] = query(&mut e, ms(1000), view(1000))[..] else {
        panic!("expected probe 2")
    };
    sent_copy(&mut e, ms(1000), &probe);
    // The answer echoes probe 2's TSval: it is probe 2's.
    let Packet::Tcp(mut answer) = peer_ack() else {
        unreachable!()
    };
    answer.ts = probe.ts.map(|t| Timestamps {
        tsval: 9,
        tsecr: t.tsval,
    });
    e.on_packet_from(ms(1002), &Packet::Tcp(answer), Origin::Loopback);
    e.on_packet_from(ms(1003), &seg(R, L, RCV, SND, RST), Origin::Loopback);
    let v = verdict(&drain(&mut e, ms(1003)));
    assert_eq!(v.kind, VerdictKind::Alive);
    assert_eq!(v.probes_sent, 2);
    assert_eq!(v.rtt, Some(ms(2)), "rtt from the last probe");
    assert!(drain(&mut e, ms(5000)).is_empty());
}

/// After two probes, an answer whose TSecr names neither (a Linux peer echoes the TSval it
/// accepted last) may be probe 1's, late: `alive`, without an RTT.
#[test]
fn an_answer_naming_no_probe_after_several_has_no_rtt() {
    let mut e = Engine::new(cfg(0, 1000, 3, SeqSource::Local), ms(0), 7);
    learn_and_probe(&mut e, ms(0), 0);
    let [Action::Send { index: 2, probe }] = query(&mut e, ms(1000), view(1000))[..] else {
        panic!("expected probe 2")
    };
    sent_copy(&mut e, ms(1000), &probe);
    let v = borrowed_answer(&mut e, ms(1002), "late");
    assert_eq!(v.probes_sent, 2);
}

#[test]
fn forged_rst_and_ack_are_ignored_and_counted() {
    let mut e = Engine::new(cfg(0, 1000, 1, SeqSource::Local), ms(0), 9);
    learn_and_probe(&mut e, ms(0), 0);
    e.on_packet_from(ms(1), &seg(R, L, RCV + 1, SND, RST), Origin::Loopback);
    e.on_packet_from(ms(2), &seg(R, L, RCV + 100, SND, ACK), Origin::Loopback);
    e.on_packet_from(ms(3), &seg(R, L, RCV, SND + 1, ACK), Origin::Loopback);
    // Right numbers but another port: not this connection at all, not counted.
    e.on_packet_from(
        ms(4),
        &seg(R, "198.18.0.2:40001", RCV, SND, ACK),
        Origin::Loopback,
    );
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
    e.on_packet_from(ms(1), &seg(R, L, RCV, SeqNumber(0), RST), Origin::Loopback);
    let v = verdict(&drain(&mut e, ms(1)));
    assert_eq!(v.kind, VerdictKind::Reset);
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
    e.on_packet_from(ms(1), &icmp(SND), Origin::Loopback);
    assert_eq!(e.ignored(), 1);
    assert!(drain(&mut e, ms(1)).is_empty());
    e.on_packet_from(ms(2), &icmp(probe.seq), Origin::Loopback);
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
    let mut e = started(cfg(0, 1000, 1, SeqSource::Local), 5, view(0));
    let [Action::InjectSyn(syn)] = drain(&mut e, ms(0))[..] else {
        panic!()
    };
    e.on_packet_from(ms(0), &seg(L, R, SND - 1, RCV, ACK), Origin::Loopback);
    assert!(
        drain(&mut e, ms(0)).is_empty(),
        "queued before the SYN: could be a kernel keepalive"
    );
    e.on_packet_from(
        ms(0),
        &seg(R, L, syn.seq, SeqNumber(0), SYN),
        Origin::Loopback,
    );
    e.on_packet_from(ms(0), &seg(L, R, SND, RCV, ACK), Origin::Loopback);
    assert!(
        matches!(drain(&mut e, ms(0)).as_slice(), [Action::Send { probe, .. }] if probe.seq == SND - 1)
    );
}

#[test]
fn learning_retries_after_the_rate_limit_then_gives_up() {
    let mut e = started(cfg(0, 1000, 1, SeqSource::Local), 5, view(0));
    let mut seqs = Vec::new();
    let mut now = ms(0);
    for i in 0..LEARN_TRIES {
        match drain(&mut e, now).as_slice() {
            [Action::InjectSyn(s)] if i == 0 => seqs.push(s.seq),
            // After the first unanswered SYN the local route and link are checked (nothing
            // is sent), then learning goes on.
            [Action::CheckRoute, Action::InjectSyn(s)] if i == 1 => seqs.push(s.seq),
            [Action::InjectSyn(s)] => seqs.push(s.seq),
            other => panic!("{other:?}"),
        }
        assert_eq!(e.next_poll(), PollAt::At(now + LEARN_RETRY));
        assert!(LEARN_RETRY > PEER_RATELIMIT);
        now += LEARN_RETRY;
    }
    seqs.dedup();
    assert_eq!(
        seqs.len(),
        LEARN_TRIES as usize,
        "every SYN has a fresh random sequence number"
    );
    // Then the engine gives up: nothing with random numbers goes out to find out why (README
    // "Do no harm").
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
            numbers: None,
            inode: 0,
        }),
    );
    assert!(drain(&mut e, ms(0)).is_empty());
    assert_eq!(e.next_poll(), PollAt::At(ms(1000)));
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
            numbers: None,
            inode: 0,
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
    e.on_packet_from(ms(1), &seg(R, L, RCV + 7, SND, ACK), Origin::Loopback);
    drain(&mut e, ms(1000));
    e.on_connection(ms(1000), Some(view(1000)));
    inject_and_see_syn(&mut e, ms(1000));
    e.on_packet_from(
        ms(1000),
        &seg(L, R, probe.seq, probe.ack, ACK),
        Origin::Loopback,
    );
    assert!(
        drain(&mut e, ms(1000)).is_empty(),
        "the capture's copy of our probe is no challenge ACK"
    );
    e.on_packet_from(
        ms(1000),
        &seg(L, R, SND + 3, RCV + 7, ACK),
        Origin::Loopback,
    );
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
    assert_eq!(probe.payload_len, 1);
    assert_eq!(probe.seq, SND - 1);
}

#[test]
fn peer_source_elicits_with_a_nonce_and_trusts_only_matching_rsts() {
    let mut e = started(cfg(0, 1000, 2, SeqSource::Peer), 11, view(0));
    let [Action::Send { probe, index: 1 }] = drain(&mut e, ms(0))[..] else {
        panic!()
    };
    assert_eq!(probe.ts, None, "no stale timestamp to fail PAWS");
    e.on_packet_from(
        ms(1),
        &seg(R, L, probe.ack + 1, SeqNumber(0), RST),
        Origin::Loopback,
    );
    assert_eq!(e.ignored(), 1);
    e.on_packet_from(
        ms(2),
        &seg(R, L, probe.ack, SeqNumber(0), RST),
        Origin::Loopback,
    );
    assert_eq!(verdict(&drain(&mut e, ms(2))).kind, VerdictKind::Reset);
}

#[test]
fn peer_source_learns_the_numbers_from_the_answer() {
    let mut e = started(cfg(0, 1000, 2, SeqSource::Peer), 11, view(0));
    drain(&mut e, ms(0));
    e.on_packet_from(ms(1), &peer_ack(), Origin::Loopback);
    assert_eq!(verdict(&drain(&mut e, ms(1))).kind, VerdictKind::Alive);
    let n = e.numbers().unwrap();
    assert_eq!((n.snd_nxt, n.rcv_nxt), (SND, RCV));
}

#[test]
fn sniff_source_learns_from_a_data_segment() {
    let mut e = started(cfg(0, 1000, 2, SeqSource::Sniff), 11, view(0));
    assert!(drain(&mut e, ms(0)).is_empty(), "waits for the wire");
    let mut data = seg(L, R, SND, RCV, ACK | FIN);
    if let Packet::Tcp(s) = &mut data {
        s.payload_len = 10;
    }
    e.on_packet_from(ms(5), &data, Origin::Loopback);
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
fn sniff_source_learns_from_the_peers_segment_and_says_what_the_probe_carries() {
    let mut e = started(cfg(0, 1000, 2, SeqSource::Sniff), 11, view(0));
    assert!(drain(&mut e, ms(0)).is_empty(), "waits for the wire");
    // The peer's segment: its ACK is our SND.NXT, its SEQ our RCV.NXT.
    e.on_packet_from(ms(5), &seg(R, L, RCV, SND, ACK), Origin::Received);
    let actions = drain_all(&mut e, ms(5));
    let [Action::Note(Note::Learned(n)), Action::Send { probe, .. }] = actions.as_slice() else {
        panic!("{actions:?}")
    };
    assert_eq!((probe.seq, probe.ack), (SND - 1, RCV));
    // The -v note shows the numbers the probe goes out with, window included.
    assert_eq!((n.snd_nxt, n.rcv_nxt, n.window), (SND, RCV, probe.window));
    assert_eq!(probe.window, 502);
    assert_eq!(probe.ts, None);
}

#[test]
fn sniff_source_gives_up_after_the_dead_time() {
    let mut e = started(cfg(0, 500, 2, SeqSource::Sniff), 11, view(0));
    assert_eq!(e.next_poll(), PollAt::At(ms(1000)));
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
    // Whatever `probes` is (one probe below the peer's rate limit used to pass unwarned).
    assert!(
        Timing {
            time: ms(0),
            intvl: ms(100),
            probes: 1
        }
        .warning()
        .unwrap()
        .contains("RTO")
    );
}

#[test]
fn sequence_numbers_wrap_in_probes() {
    let mut e = awaiting_challenge_ack();
    e.on_packet_from(
        ms(0),
        &seg(L, R, SeqNumber(0), SeqNumber(u32::MAX), ACK),
        Origin::Loopback,
    );
    let [Action::Send { probe, .. }] = drain(&mut e, ms(0))[..] else {
        panic!()
    };
    assert_eq!(probe.seq, SeqNumber(u32::MAX));
    e.on_packet_from(
        ms(1),
        &seg(R, L, SeqNumber(u32::MAX), SeqNumber(0), ACK),
        Origin::Loopback,
    );
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
    // Idle 300 ms at t=2000: the kernel got something at t=1700, and RCV.NXT moved.
    e.on_connection(ms(2000), Some(moved(view(300))));
    let v = verdict(&drain(&mut e, ms(2000)));
    assert_eq!(v.kind, VerdictKind::Alive);
    assert_eq!(v.rtt, None);
}

/// The view after the peer's data moved RCV.NXT on (bytes received grew).
fn moved(mut v: ConnView) -> ConnView {
    v.progress.1 += 100;
    v
}

/// An in-window ACK with a guessed sequence number and the exact ACK value restarts the
/// kernel's idle clock but moves neither SND.UNA nor RCV.NXT: no `traffic` (README "Trust").
#[test]
fn a_segment_that_moved_no_counter_is_no_traffic() {
    let mut e = Engine::new(cfg(0, 1000, 2, SeqSource::Local), ms(0), 5);
    learn_and_probe(&mut e, ms(0), 5000);
    drain(&mut e, ms(1000));
    e.on_connection(ms(1000), Some(view(200)));
    assert!(matches!(
        drain(&mut e, ms(1000)).as_slice(),
        [Action::Send { index: 2, .. }]
    ));
    let v = verdict(&query(&mut e, ms(2000), view(100)));
    assert_eq!(v.kind, VerdictKind::Dead);
}

// ---- regressions found by tests/lab_trust.rs and the engine_packets fuzz target

/// tests/lab_trust.rs no_harm: with --probes 1, the peer answered while its own data was
/// moving the numbers on; the answer did not match the learned pair, and the last probe's
/// deadline declared `dead` without asking the kernel, which had accepted segments all along.
#[test]
fn last_probe_deadline_asks_the_kernel_before_dead() {
    let mut e = Engine::new(cfg(0, 1000, 1, SeqSource::Local), ms(0), 5);
    learn_and_probe(&mut e, ms(0), 0);
    // The peer's answer, with its data since learning counted in: numbers moved on.
    e.on_packet_from(ms(1), &seg(R, L, RCV + 1448, SND, ACK), Origin::Loopback);
    drain(&mut e, ms(1));
    assert_eq!(e.ignored(), 1);
    // At the deadline: the kernel received a segment 3 ms ago, and RCV.NXT moved.
    let v = verdict(&query(&mut e, ms(1000), moved(view(3))));
    assert_eq!(v.kind, VerdictKind::Alive);
}

/// ...and when the kernel has heard nothing since the probe, `dead` at the same instant.
#[test]
fn last_probe_deadline_is_dead_when_the_kernel_heard_nothing() {
    let mut e = Engine::new(cfg(0, 1000, 1, SeqSource::Local), ms(0), 5);
    learn_and_probe(&mut e, ms(0), 0);
    let v = verdict(&query(&mut e, ms(1000), view(1000)));
    assert_eq!(v.kind, VerdictKind::Dead);
    assert_eq!(v.elapsed, ms(1000));
}

#[test]
fn a_forged_segment_claiming_the_local_address_teaches_nothing() {
    let mut e = awaiting_challenge_ack();
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

// ---- real hosts (README "Verdicts and timing")

/// A connection view with the kernel's RTO and ACK clock filled in.
fn view_rto(idle: u64, since_ack: u64, rto: u64, busy: bool) -> ConnView {
    ConnView {
        idle: ms(idle),
        busy,
        since_ack: ms(since_ack),
        rto: ms(rto),
        progress: (10, 20),
        numbers: None,
        inode: 0,
    }
}

/// A busy connection (data in flight) whose last segment and last ACK arrived `idle` ago.
fn busy(idle: u64, rto: u64) -> ConnView {
    view_rto(idle, idle, rto, true)
}

/// Every action `poll` hands out at `now`, notes included.
fn drain_all(e: &mut Engine, now: Duration) -> Vec<Action> {
    std::iter::from_fn(|| e.poll(now)).collect()
}

/// The verdict among `actions`, and the notes before it.
fn verdict_and_notes(actions: &[Action]) -> (Verdict, Vec<Note>) {
    let notes = actions
        .iter()
        .filter_map(|a| match a {
            Action::Note(n) => Some(n.clone()),
            _ => None,
        })
        .collect();
    let v = actions
        .iter()
        .find_map(|a| match a {
            Action::Finish(Outcome::Verdict(v)) => Some(v.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no verdict in {actions:?}"));
    (v, notes)
}

/// Asserts a verdict no answer to a probe decided: of `kind` by `evidence`, after `elapsed`,
/// with no probe sent and so no RTT.
fn assert_untimed(v: &Verdict, kind: VerdictKind, evidence: Evidence, elapsed: Duration) {
    assert_eq!(v.kind, kind);
    assert_eq!(v.evidence, evidence);
    assert_eq!(v.rtt, None);
    assert_eq!(v.probes_sent, 0);
    assert_eq!(v.elapsed, elapsed);
}

/// The peer's answer, received from the network at `at`, is `alive` without an RTT, and one
/// note says why the answer may belong to another probe (saying `why`, "" for any reason).
fn borrowed_answer(e: &mut Engine, at: Duration, why: &str) -> Verdict {
    e.on_packet_from(at, &peer_ack(), Origin::Received);
    let (v, notes) = verdict_and_notes(&drain_all(e, at));
    assert_eq!(v.kind, VerdictKind::Alive);
    assert_eq!(v.rtt, None);
    assert!(
        matches!(notes.as_slice(), [Note::Borrowed(w)] if w.contains(why)),
        "{notes:?}"
    );
    v
}

/// Like `learn_and_probe`, with the kernel reporting `rto`; no capture copy of the probe.
fn learn_and_probe_rto(e: &mut Engine, now: Duration, idle: u64, rto: u64) -> Segment {
    assert_eq!(drain(e, now), vec![Action::QueryConnection]);
    e.on_connection(now, Some(view_rto(idle, idle, rto, false)));
    inject_and_see_syn(e, now);
    e.on_packet_from(now, &seg(L, R, SND, RCV, ACK), Origin::Loopback);
    match drain(e, now).as_slice() {
        [Action::Send { probe, .. }] => *probe,
        other => panic!("expected a probe, got {other:?}"),
    }
}

/// `--intvl 0s --probes 1` against a healthy peer 84 µs away: the probe waits the RTO, not
/// zero, so the answer is in time.
#[test]
fn intvl_zero_waits_the_rto_for_the_answer() {
    let mut e = Engine::new(cfg(0, 0, 1, SeqSource::Local), ms(0), 42);
    let probe = learn_and_probe_rto(&mut e, ms(0), 5000, 204);
    sent_copy(&mut e, ms(0), &probe);
    assert_eq!(
        e.next_poll(),
        PollAt::At(ms(204)),
        "max(intvl 0, rto 204 ms)"
    );
    assert!(drain(&mut e, ms(0)).is_empty(), "not judged at once");
    e.on_packet_from(Duration::from_micros(84), &peer_ack(), Origin::Loopback);
    let v = verdict(&drain(&mut e, ms(1)));
    assert_eq!(v.kind, VerdictKind::Alive);
    assert_eq!(v.rtt, Some(Duration::from_micros(84)));
    assert_eq!(v.evidence, Evidence::Probe);
}

/// ...and a silent peer is `dead` exactly one RTO after the probe, not before.
#[test]
fn intvl_zero_dead_exactly_one_rto_after_the_probe() {
    let mut e = Engine::new(cfg(0, 0, 1, SeqSource::Local), ms(0), 42);
    learn_and_probe_rto(&mut e, ms(0), 5000, 204);
    assert!(drain(&mut e, ms(203)).is_empty());
    let v = verdict(&query(&mut e, ms(204), view_rto(5204, 5204, 204, false)));
    assert_eq!(v.kind, VerdictKind::Dead);
    assert_eq!(v.elapsed, ms(204));
}

/// Probes follow each other every intvl; only the last waits max(intvl, RTO): a dead peer is
/// declared within time + probes × intvl + RTO (README "Verdicts and timing").
#[test]
fn probes_every_intvl_the_last_waits_the_rto() {
    let mut e = Engine::new(cfg(0, 100, 3, SeqSource::Local), ms(0), 42);
    learn_and_probe_rto(&mut e, ms(0), 5000, 250);
    assert_eq!(e.next_poll(), PollAt::At(ms(100)));
    for (at, n) in [(100u64, 2u8), (200, 3)] {
        assert_eq!(drain(&mut e, ms(at)), vec![Action::QueryConnection]);
        e.on_connection(ms(at), Some(view_rto(5000 + at, 5000 + at, 250, false)));
        assert!(
            matches!(drain(&mut e, ms(at)).as_slice(), [Action::Send { index, .. }] if *index == n)
        );
    }
    assert_eq!(
        e.next_poll(),
        PollAt::At(ms(450)),
        "last probe at 200 + rto 250"
    );
    let v = verdict(&query(&mut e, ms(450), view_rto(5450, 5450, 250, false)));
    assert_eq!(v.kind, VerdictKind::Dead);
    assert_eq!(v.probes_sent, 3);
    assert!(v.elapsed <= ms(3 * 100 + 250));
}

/// The RTO that counts is the last one seen: grown since the probe, it postpones `dead`.
#[test]
fn dead_waits_for_an_rto_that_grew_since_the_probe() {
    let mut e = Engine::new(cfg(0, 1000, 1, SeqSource::Local), ms(0), 42);
    learn_and_probe_rto(&mut e, ms(0), 5000, 0);
    assert!(query(&mut e, ms(1000), view_rto(6000, 6000, 1500, false)).is_empty());
    assert_eq!(e.next_poll(), PollAt::At(ms(1500)));
    assert_eq!(
        verdict(&query(&mut e, ms(1500), view_rto(6500, 6500, 1500, false))).kind,
        VerdictKind::Dead
    );
}

/// A `tcpi_rto` beyond the kernel's own ceiling is capped at `RTO_MAX`.
#[test]
fn the_rto_used_is_capped() {
    let mut e = Engine::new(cfg(0, 1000, 1, SeqSource::Local), ms(0), 42);
    learn_and_probe_rto(&mut e, ms(0), 5000, 600_000);
    assert_eq!(e.next_poll(), PollAt::At(RTO_MAX));
}

/// A reader that stopped reading: the peer advertises a zero window, the local kernel's
/// zero-window probes are answered, its ACK clock ticks. No probe is sent.
#[test]
fn busy_with_acks_arriving_is_alive_by_the_kernel_ack_clock() {
    let mut e = Engine::new(cfg(0, 1000, 3, SeqSource::Local), ms(0), 5);
    assert_eq!(drain(&mut e, ms(0)), vec![Action::QueryConnection]);
    // Last ACK 400 ms before we started: that one does not count.
    e.on_connection(ms(0), Some(busy(400, 204)));
    let (notes, actions): (Vec<_>, Vec<_>) = drain_all(&mut e, ms(0))
        .into_iter()
        .partition(|a| matches!(a, Action::Note(_)));
    assert_eq!(notes, vec![Action::Note(Note::Busy)]);
    assert!(actions.is_empty());
    assert_eq!(e.next_poll(), PollAt::At(ms(1000)));
    // An ACK 300 ms ago, at t=700: after the busy judgement began.
    let v = verdict(&query(&mut e, ms(1000), busy(300, 204)));
    assert_untimed(&v, VerdictKind::Alive, Evidence::KernelAckClock, ms(1000));
}

/// An ACK at (or within the clock's slack of) the instant the judgement began is not one
/// "after" it.
#[test]
fn busy_ack_clock_counts_only_acks_after_the_start() {
    let mut e = started(cfg(0, 1000, 1, SeqSource::Local), 5, busy(0, 0));
    drain(&mut e, ms(0));
    let v = verdict(&query(&mut e, ms(1000), busy(1000 - 3, 0)));
    assert_eq!(
        (v.kind, v.evidence),
        (VerdictKind::Dead, Evidence::KernelAckClock)
    );
}

/// Bulk data to a peer that vanished: no ACK for probes × intvl + RTO since the judgement
/// began is `dead`, at exactly that instant.
#[test]
fn busy_without_acks_is_dead_after_the_window_plus_rto() {
    let mut e = started(cfg(0, 1000, 3, SeqSource::Local), 5, busy(50, 200));
    drain(&mut e, ms(0));
    for at in [1000u64, 2000, 3000] {
        assert_eq!(e.next_poll(), PollAt::At(ms(at)));
        assert!(
            query(&mut e, ms(at), busy(at + 50, 200)).is_empty(),
            "undecided at {at}"
        );
    }
    assert_eq!(
        e.next_poll(),
        PollAt::At(ms(3200)),
        "3 × 1000 ms + rto 200 ms"
    );
    let v = verdict(&query(&mut e, ms(3200), busy(3250, 200)));
    assert_untimed(&v, VerdictKind::Dead, Evidence::KernelAckClock, ms(3200));
}

/// With `--time`, the busy window starts once the connection has been idle that long: the
/// bound is time + probes × intvl + RTO.
#[test]
fn busy_bound_counts_from_the_end_of_the_time_wait() {
    let mut e = started(cfg(2000, 500, 2, SeqSource::Local), 5, busy(0, 300));
    assert!(drain(&mut e, ms(0)).is_empty());
    assert_eq!(e.next_poll(), PollAt::At(ms(2000)));
    let mut now = 2000;
    loop {
        let out = query(&mut e, ms(now), busy(now, 300));
        if !out.is_empty() {
            let v = verdict(&out);
            assert_eq!(
                (v.kind, v.evidence),
                (VerdictKind::Dead, Evidence::KernelAckClock)
            );
            break;
        }
        now = match e.next_poll() {
            PollAt::At(at) => at.as_millis() as u64,
            other => panic!("{other:?}"),
        };
    }
    assert_eq!(now, 2000 + 2 * 500 + 300);
}

/// A connection that stops being busy is probed as usual, and a later busy spell starts
/// its own window.
#[test]
fn busy_then_idle_goes_back_to_probing() {
    let mut e = started(cfg(0, 1000, 2, SeqSource::Local), 5, busy(0, 0));
    drain(&mut e, ms(0));
    learn_and_probe(&mut e, ms(1000), 1000);
    assert_eq!(drain(&mut e, ms(2000)), vec![Action::QueryConnection]);
    // Busy again at 2000 (the application wrote), no ACK since: a fresh window from 2000.
    e.on_connection(ms(2000), Some(busy(1000, 0)));
    assert!(drain(&mut e, ms(2000)).is_empty());
    assert_eq!(e.next_poll(), PollAt::At(ms(3000)));
}

/// `--intvl 0s` on a busy connection with no RTO known does not spin at one instant.
#[test]
fn busy_rechecks_are_never_closer_than_the_clock_can_tell() {
    let mut e = started(cfg(0, 0, 1, SeqSource::Local), 5, busy(0, 0));
    assert!(drain(&mut e, ms(0)).is_empty());
    assert_eq!(e.next_poll(), PollAt::At(BUSY_RECHECK));
    drain(&mut e, BUSY_RECHECK);
    e.on_connection(BUSY_RECHECK, Some(busy(10, 0)));
    let v = verdict(&drain(&mut e, BUSY_RECHECK));
    assert_eq!(
        (v.kind, v.evidence),
        (VerdictKind::Dead, Evidence::KernelAckClock)
    );
}

/// `probe --time 5s` on a chatty connection ends at 5 s with `alive` (traffic), instead of
/// waiting forever for an idle spell that never comes.
#[test]
fn the_wait_for_idle_ends_at_time_when_segments_keep_arriving() {
    let mut e = started(cfg(5000, 1000, 3, SeqSource::Local), 5, view(100));
    assert!(drain(&mut e, ms(0)).is_empty());
    assert_eq!(e.next_poll(), PollAt::At(ms(4900)));
    assert_eq!(drain(&mut e, ms(4900)), vec![Action::QueryConnection]);
    // A segment arrived at 4700: idle 200 ms. Not 5 s since we started yet.
    e.on_connection(ms(4900), Some(view(200)));
    assert!(drain(&mut e, ms(4900)).is_empty());
    assert_eq!(
        e.next_poll(),
        PollAt::At(ms(5000)),
        "capped at start + time"
    );
    let v = verdict(&query(&mut e, ms(5000), moved(view(300))));
    assert_untimed(&v, VerdictKind::Alive, Evidence::Traffic, ms(5000));
}

/// The connection's own kernel keepalive leaves with exactly our probe's numbers after our
/// probe: the answer proves `alive` but is not timed (README "Verdicts and timing", "An RTT
/// belongs to one probe").
#[test]
fn a_kernel_keepalive_copy_after_our_probe_makes_the_rtt_unknown() {
    let mut e = Engine::new(cfg(0, 1000, 3, SeqSource::Local), ms(0), 42);
    let probe = learn_and_probe(&mut e, ms(0), 5000);
    e.on_packet_from(ms(600), &seg(L, R, probe.seq, probe.ack, ACK), Origin::Sent);
    // Not 961 ms.
    let v = borrowed_answer(&mut e, ms(961), "keepalive");
    assert_eq!(v.evidence, Evidence::Probe);
}

/// Our probe never showed on the capture (dropped by a qdisc, lost from the capture's
/// queue): an answer can only be somebody else's.
#[test]
fn an_answer_before_our_probe_was_seen_leaving_has_no_rtt() {
    let mut e = Engine::new(cfg(0, 1000, 3, SeqSource::Local), ms(0), 42);
    learn_and_probe_rto(&mut e, ms(0), 5000, 200);
    borrowed_answer(&mut e, ms(40), "not seen");
}

/// An identical probe that left less than an RTO before ours may be what is answered; one
/// that left long before (its answer long since due) is not.
#[test]
fn an_identical_probe_just_before_ours_counts_one_long_before_does_not() {
    for (before, timed) in [(100u64, false), (5000, true)] {
        let mut e = started(cfg(10_000, 1000, 3, SeqSource::Local), 42, view(0));
        let t = ms(10_000);
        // The kernel's keepalive with what will be our probe's numbers.
        e.on_packet_from(t - ms(before), &seg(L, R, SND - 1, RCV, ACK), Origin::Sent);
        let probe = learn_and_probe_rto(&mut e, t, 10_000, 200);
        sent_copy(&mut e, t, &probe);
        e.on_packet_from(t + ms(30), &peer_ack(), Origin::Received);
        let (v, _) = verdict_and_notes(&drain_all(&mut e, t + ms(30)));
        assert_eq!(v.kind, VerdictKind::Alive);
        assert_eq!(
            v.rtt.is_some(),
            timed,
            "kernel probe {before} ms before ours"
        );
    }
}

/// A bridge and its port both show the probe leaving: one packet, not a second probe.
#[test]
fn one_probe_seen_on_two_interfaces_keeps_its_rtt() {
    let mut e = Engine::new(cfg(0, 1000, 3, SeqSource::Local), ms(0), 42);
    let probe = learn_and_probe(&mut e, ms(0), 5000);
    sent_copy(&mut e, Duration::from_micros(30), &probe);
    e.on_packet_from(ms(5), &peer_ack(), Origin::Received);
    let (v, notes) = verdict_and_notes(&drain_all(&mut e, ms(5)));
    assert_eq!(v.rtt, Some(ms(5)));
    assert!(notes.is_empty(), "{notes:?}");
}

/// The kernel's own keepalive leaving in the same millisecond as our probe is a second probe,
/// not our probe seen twice: its timestamp is the kernel's current one, ours the learned one.
#[test]
fn a_kernel_keepalive_in_the_same_instant_is_told_apart_by_its_timestamp() {
    let mut e = Engine::new(cfg(0, 1000, 3, SeqSource::Local), ms(0), 42);
    let probe = learn_and_probe(&mut e, ms(0), 5000);
    let Packet::Tcp(mut kernel) = seg(L, R, probe.seq, probe.ack, ACK) else {
        unreachable!()
    };
    kernel.ts = Some(Timestamps {
        tsval: TS.tsval.wrapping_add(1000),
        tsecr: TS.tsecr,
    });
    e.on_packet_from(
        Duration::from_micros(900),
        &Packet::Tcp(kernel),
        Origin::Sent,
    );
    // The answer may be the kernel's.
    borrowed_answer(&mut e, ms(5), "keepalive");
}

/// With probes closer than the RTO, an answer may be to the one before the last.
#[test]
fn an_answer_while_the_previous_probe_was_within_its_rto_has_no_rtt() {
    let mut e = Engine::new(cfg(0, 100, 3, SeqSource::Local), ms(0), 42);
    let probe = learn_and_probe_rto(&mut e, ms(0), 5000, 250);
    sent_copy(&mut e, ms(0), &probe);
    drain(&mut e, ms(100));
    e.on_connection(ms(100), Some(view_rto(5100, 5100, 250, false)));
    let [Action::Send { probe, index: 2 }] = drain(&mut e, ms(100))[..] else {
        panic!("expected probe 2")
    };
    sent_copy(&mut e, ms(100), &probe);
    // Could be 130 ms for probe 1 or 30 ms for probe 2.
    borrowed_answer(&mut e, ms(130), "RTO");
}

/// A forger cannot make an answer look borrowed: copies must be seen leaving.
#[test]
fn a_copy_from_the_network_is_no_second_probe() {
    let mut e = Engine::new(cfg(0, 1000, 3, SeqSource::Local), ms(0), 42);
    let probe = learn_and_probe(&mut e, ms(0), 5000);
    e.on_packet_from(
        ms(10),
        &seg(L, R, probe.seq, probe.ack, ACK),
        Origin::Received,
    );
    e.on_packet_from(ms(20), &peer_ack(), Origin::Received);
    let v = verdict(&drain(&mut e, ms(20)));
    assert_eq!(v.rtt, Some(ms(20)));
}

/// In `--seq-source peer` any ACK of the peer answers the local kernel's segments as well.
#[test]
fn peer_source_answer_after_a_kernel_segment_has_no_rtt() {
    let mut e = started(cfg(0, 1000, 2, SeqSource::Peer), 11, view(0));
    let [Action::Send { probe, .. }] = drain(&mut e, ms(0))[..] else {
        panic!()
    };
    sent_copy(&mut e, ms(0), &probe);
    e.on_packet_from(ms(1), &seg(L, R, SND - 1, RCV, ACK), Origin::Sent);
    // Any reason will do.
    borrowed_answer(&mut e, ms(2), "");
}

#[test]
fn next_poll_tells_now_from_waiting_on_the_kernel_and_done() {
    let mut e = Engine::new(cfg(0, 1000, 1, SeqSource::Local), ms(0), 5);
    assert_eq!(e.next_poll(), PollAt::At(ms(0)));
    drain(&mut e, ms(0));
    assert_eq!(e.next_poll(), PollAt::AwaitingKernel);
    e.on_connection(ms(0), Some(view(0)));
    assert_eq!(e.next_poll(), PollAt::Now);
    e.on_connection(ms(0), None);
    e.on_local_failure(ms(0), Cause::NoRoute);
    assert_eq!(e.next_poll(), PollAt::Now);
    drain(&mut e, ms(0));
    assert_eq!(e.next_poll(), PollAt::Done);
}

/// The golden answers of `wire::testkit`, mutated byte by byte, against an engine that has
/// sent the first probe on their connection.
mod golden_answers {
    use super::*;
    use crate::wire::decode;
    use crate::wire::testkit::*;

    /// An engine that has learned the fixtures' numbers (SND.NXT 0x12345679, RCV.NXT 0x9abcdef0)
    /// and sent its first probe, on PROBE4's or PROBE6's connection.
    fn engine_after_first_probe(v6: bool) -> Engine {
        let p = if v6 { probe6() } else { probe4() };
        let flow = crate::flow::Flow {
            local: p.src,
            remote: p.dst,
        };
        let cfg = Config {
            flow,
            ..cfg(0, 1000, 3, SeqSource::Local)
        };
        let now = Duration::from_secs(1);
        let mut e = Engine::new(cfg, now, 1);
        let tcp = |src, dst, seq, ack, flags| {
            Packet::Tcp(Segment {
                window: 502,
                ..Segment::bare(src, dst, seq, ack, flags)
            })
        };
        let mut sent = false;
        for _ in 0..20 {
            match e.poll(now) {
                Some(Action::QueryConnection) => e.on_connection(
                    now,
                    Some(ConnView {
                        progress: (1, 1),
                        ..view(60_000)
                    }),
                ),
                Some(Action::InjectSyn(syn)) => {
                    e.on_packet_from(
                        now,
                        &tcp(syn.src, syn.dst, syn.seq, SeqNumber(0), SYN),
                        Origin::Loopback,
                    );
                    let rcv = SeqNumber(0x9abc_def0);
                    e.on_packet_from(
                        now,
                        &tcp(p.src, p.dst, SeqNumber(0x1234_5679), rcv, ACK),
                        Origin::Loopback,
                    );
                }
                Some(Action::Send { probe, .. }) => {
                    assert_eq!((probe.seq, probe.ack), (p.seq, p.ack), "PROBE's numbers");
                    sent = true;
                }
                Some(_) => {}
                None => break,
            }
        }
        assert!(sent, "no first probe");
        e
    }

    /// Hostile input never decides a verdict: every one-byte change to the genuine answers, with
    /// checksums made right again, either fails to decode, or leaves the engine undecided unless
    /// the changed packet still carries exactly what a genuine answer carries.
    #[test]
    fn mutated_answers_decide_nothing_unless_still_genuine() {
        let (snd, rcv) = (SeqNumber(0x1234_5679), SeqNumber(0x9abc_def0));
        let mut decided = [0usize; 2];
        for (v6, genuine) in [
            (false, ACK4.to_vec()),
            (true, RST6.to_vec()),
            (false, ICMP4.to_vec()),
            (true, icmp6()),
        ] {
            let local = if v6 { probe6().src } else { probe4().src };
            let remote = if v6 { probe6().dst } else { probe4().dst };
            for i in 0..genuine.len() {
                for v in [
                    0x00, 0x01, 0x02, 0x10, 0x14, 0x45, 0x60, 0x7f, 0x80, 0xfe, 0xff,
                ] {
                    let mut b = genuine.clone();
                    b[i] = v;
                    repair_checksums(&mut b);
                    let Ok(packet) = decode(&b) else { continue };
                    let still_genuine = match &packet {
                        Packet::Tcp(s) => {
                            let tuple = s.src == remote && s.dst == local && !s.has(SYN);
                            let ack = s.has(ACK) && !s.has(RST) && s.seq == rcv && s.ack == snd;
                            let rst = s.has(RST) && s.seq == rcv;
                            tuple && (ack || rst)
                        }
                        Packet::Icmp(e) => {
                            e.to == local.ip()
                                && e.quoted_src == local
                                && e.quoted_dst == remote
                                && e.quoted_seq == snd - 1
                        }
                    };
                    let mut e = engine_after_first_probe(v6);
                    let at = Duration::from_millis(1001);
                    e.on_packet_from(at, &packet, Origin::Loopback);
                    let mut verdict = None;
                    while let Some(a) = e.poll(at) {
                        if let Action::Finish(Outcome::Verdict(v)) = a {
                            verdict = Some(v.kind);
                        }
                    }
                    assert!(
                        verdict.is_none() || still_genuine,
                        "byte {i} = {v:#04x} of a genuine answer decided {verdict:?}: {packet:?}"
                    );
                    decided[usize::from(verdict.is_some())] += 1;
                }
            }
        }
        // Both kinds occur: the mutations reach the engine, and the genuine ones still count.
        eprintln!(
            "undecided {}, decided (still genuine) {}",
            decided[0], decided[1]
        );
        assert!(decided[0] > 100 && decided[1] > 10, "{decided:?}");
    }
}

// ---- the kernel source (README "How it works": reading the numbers)

/// The numbers as the kernel source reads them at `at`: TSval 777 then, in milliseconds.
fn kernel_numbers(at: Duration) -> Numbers {
    Numbers {
        snd_nxt: SND,
        rcv_nxt: RCV,
        window: 502,
        ts: Some(TS),
        ts_clock: Some(TsClock { at, usec: false }),
        ip: crate::wire::IpMeta::default(),
    }
}

fn kernel_view(idle: u64, at: Duration) -> ConnView {
    ConnView {
        numbers: Some(kernel_numbers(at)),
        inode: 0,
        ..view(idle)
    }
}

/// Nothing is injected: the first action after the look at the connection is the probe,
/// with the numbers read, and every probe carries the TSval of the moment it leaves.
#[test]
fn kernel_source_probes_at_once_with_a_fresh_tsval_each_time() {
    let mut e = started(
        cfg(0, 1000, 3, SeqSource::Kernel),
        5,
        kernel_view(5000, ms(0)),
    );
    let [
        Action::Send {
            probe: p1,
            index: 1,
        },
    ] = drain(&mut e, ms(0))[..]
    else {
        panic!("expected probe 1 at once");
    };
    assert_eq!((p1.seq, p1.ack, p1.window), (SND - 1, RCV, 502));
    assert_eq!(p1.ts, Some(TS));
    // Each round reads the numbers again: at t=1000 they were read 10 ms before.
    let [
        Action::Send {
            probe: p2,
            index: 2,
        },
    ] = query(&mut e, ms(1000), kernel_view(6000, ms(990)))[..]
    else {
        panic!("expected probe 2");
    };
    assert_eq!(p2.ts.map(|t| t.tsval), Some(777 + 10));
    // Read at t=2000 but sent 250 ms later (the rate cap held it): the TSval of t=2250.
    assert_eq!(drain(&mut e, ms(2000)), vec![Action::QueryConnection]);
    e.on_connection(ms(2000), Some(kernel_view(7000, ms(2000))));
    let [
        Action::Send {
            probe: p3,
            index: 3,
        },
    ] = drain(&mut e, ms(2250))[..]
    else {
        panic!("expected probe 3");
    };
    assert_eq!(
        p3.ts,
        Some(Timestamps {
            tsval: 777 + 250,
            tsecr: 555
        })
    );
    assert_eq!(e.probes_sent(), 3);
}

/// Microsecond timestamps tick a thousand times faster, and TSval wraps modulo 2^32.
#[test]
fn fresh_tsvals_tick_in_the_kernels_unit_and_wrap() {
    let mut n = kernel_numbers(ms(0));
    n.ts = Some(Timestamps {
        tsval: u32::MAX - 4,
        tsecr: 1,
    });
    assert_eq!(n.ts_at(ms(10)).map(|t| t.tsval), Some(5));
    n.ts_clock = Some(TsClock {
        at: ms(0),
        usec: true,
    });
    assert_eq!(n.ts_at(ms(1)).map(|t| t.tsval), Some(995));
    n.ts_clock = None;
    assert_eq!(n.ts_at(ms(1)).map(|t| t.tsval), Some(u32::MAX - 4));
}

/// The answer must carry exactly the numbers read; the kernel's view without numbers (the
/// socket left between the listing and the read, or the pass missed it) is asked again,
/// then a failure to learn, never a guess.
#[test]
fn kernel_source_trusts_only_the_pair_read_and_needs_the_read() {
    let mut e = started(
        cfg(0, 1000, 1, SeqSource::Kernel),
        5,
        kernel_view(5000, ms(0)),
    );
    drain(&mut e, ms(0));
    e.on_packet_from(ms(1), &seg(R, L, RCV + 1, SND, ACK), Origin::Received);
    assert!(drain(&mut e, ms(1)).is_empty());
    assert_eq!(e.ignored(), 1);
    e.on_packet_from(ms(2), &peer_ack(), Origin::Received);
    assert_eq!(verdict(&drain(&mut e, ms(2))).kind, VerdictKind::Alive);

    // A pass can miss a socket while others come and go: asked again after KERNEL_RETRY,
    // KERNEL_MISSES times, before the numbers count as unknowable.
    let mut e = started(cfg(0, 1000, 1, SeqSource::Kernel), 5, view(5000));
    assert!(
        drain(&mut e, ms(0)).is_empty(),
        "no verdict on the first miss"
    );
    assert!(drain(&mut e, ms(99)).is_empty());
    assert_eq!(query(&mut e, ms(100), view(5100)), vec![]);
    assert_eq!(
        query(&mut e, ms(200), view(5200)),
        vec![Action::Finish(Outcome::LearnFailed)]
    );
    // A later pass that shows it: probed as usual.
    let mut e = started(cfg(0, 1000, 1, SeqSource::Kernel), 5, view(5000));
    assert!(drain(&mut e, ms(0)).is_empty());
    let sent = query(&mut e, ms(100), kernel_view(5100, ms(100)));
    assert!(
        matches!(sent.as_slice(), [Action::Send { index: 1, .. }]),
        "{sent:?}"
    );
}

/// The local source's challenge ACK also starts a clock: later probes carry later TSvals.
#[test]
fn local_source_probes_carry_a_tsval_advanced_from_the_challenge_ack() {
    let mut e = Engine::new(cfg(0, 1000, 2, SeqSource::Local), ms(0), 5);
    let p1 = learn_and_probe(&mut e, ms(0), 5000);
    assert_eq!(p1.ts, Some(TS));
    let [
        Action::Send {
            probe: p2,
            index: 2,
        },
    ] = query(&mut e, ms(1000), view(6000))[..]
    else {
        panic!("expected probe 2");
    };
    assert_eq!(p2.ts.map(|t| t.tsval), Some(777 + 1000));
}

/// A peer that takes the probe's timestamp (FreeBSD's) echoes it: an answer naming probe 1
/// that arrives after probe 3 left is probe 1's, late, and timed from it (issue 17: an answer
/// 2.05 s late was reported with probe 3's 50 ms).
#[test]
fn a_late_answer_echoing_an_earlier_probes_tsval_is_timed_from_that_probe() {
    for (echo, want) in [(0usize, Some(ms(2050))), (2, Some(ms(50)))] {
        let mut e = Engine::new(cfg(0, 1000, 3, SeqSource::Local), ms(0), 42);
        let mut probes = vec![learn_and_probe_rto(&mut e, ms(0), 5000, 200)];
        sent_copy(&mut e, ms(0), &probes[0]);
        for (index, t) in [(2u8, 1000u64), (3, 2000)] {
            drain(&mut e, ms(t));
            e.on_connection(ms(t), Some(view_rto(5000 + t, 5000 + t, 200, false)));
            let [Action::Send { probe, index: i }] = drain(&mut e, ms(t))[..] else {
                panic!("expected probe {index}")
            };
            assert_eq!(i, index);
            sent_copy(&mut e, ms(t), &probe);
            probes.push(probe);
        }
        let tsvals: Vec<u32> = probes.iter().map(|p| p.ts.expect("ts").tsval).collect();
        assert_eq!(tsvals, [777, 1777, 2777], "a fresh TSval on every probe");
        let Packet::Tcp(mut answer) = peer_ack() else {
            unreachable!()
        };
        answer.ts = Some(Timestamps {
            tsval: 9,
            tsecr: tsvals[echo],
        });
        e.on_packet_from(ms(2050), &Packet::Tcp(answer), Origin::Received);
        let v = verdict(&drain(&mut e, ms(2050)));
        assert_eq!(v.kind, VerdictKind::Alive);
        assert_eq!(v.rtt, want, "the answer echoes probe {}'s TSval", echo + 1);
    }
}

/// The local application closed during the probe (its FIN left): the peer's RST answers that
/// close, not a probe, and is no proof of a restart (issue 19).
#[test]
fn an_rst_after_the_local_side_closed_is_no_reset() {
    let mut e = Engine::new(cfg(0, 1000, 3, SeqSource::Local), ms(0), 7);
    learn_and_probe(&mut e, ms(0), 5000);
    e.on_packet_from(ms(5), &seg(L, R, SND, RCV, ACK | FIN), Origin::Sent);
    e.on_packet_from(ms(6), &seg(R, L, RCV, SND, RST), Origin::Received);
    assert_eq!(drain(&mut e, ms(6)), vec![Action::Finish(Outcome::Closed)]);
    // Without the local FIN the same RST is a restarted peer's.
    let mut e = Engine::new(cfg(0, 1000, 3, SeqSource::Local), ms(0), 7);
    learn_and_probe(&mut e, ms(0), 5000);
    e.on_packet_from(ms(6), &seg(R, L, RCV, SND, RST), Origin::Received);
    assert_eq!(verdict(&drain(&mut e, ms(6))).kind, VerdictKind::Reset);
}
