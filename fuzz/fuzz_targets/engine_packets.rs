//! The engine in the middle of probing, fed arbitrary decoded packets by a blind forger.
//!
//! The harness plays the local kernel: it answers connection queries, sees each injected SYN
//! on loopback and sends the challenge ACK with the connection's true numbers. The first
//! probe goes out before any fuzzed byte is read; from then on the fuzz input interleaves
//! forged packets (anything `wire::decode` accepts), the passage of time, the delivery of
//! pending challenge ACKs and changes in what the kernel reports.
//!
//! Invariants (`--seq-source local`):
//! - no panic, and the engine reaches an outcome in bounded virtual time;
//! - every probe is canonical for the true numbers (seq = SND.NXT-1, ack = RCV.NXT), a pure
//!   ACK (or one already-acknowledged byte with --garbage-octet) on the connection's 4-tuple,
//!   never SYN, FIN or RST, and never more than `probes` of them;
//! - `alive` only after an ACK carrying exactly <SEQ=RCV.NXT><ACK=SND.NXT> from the peer, or
//!   after the local kernel accepted a segment once the first probe was out (SEQ in window,
//!   ACK = SND.NXT: the harness keeps the kernel's idle clock),
//!   `reset` only after an RST with SEQ = RCV.NXT, `unreachable` only after an ICMP error
//!   quoting a probe's exact sequence number: a forger who does not know the numbers never
//!   decides the verdict; `dead` after `probes` probes, or by the kernel's ACK clock on a
//!   connection the harness reported busy (data in flight, README "Verdicts and timing").
//!
//! `peer` and `sniff` sources trust the wire by design; they are fuzzed for panics and
//! termination only.
#![no_main]

use std::net::SocketAddr;
use std::time::Duration;

use kaprobe::engine::{
    self, Action, Config, ConnView, Engine, Origin, Outcome, PollAt, SeqSource, Timing,
    VerdictKind,
};
use kaprobe::flow::Flow;
use kaprobe::seq::SeqNumber;
use kaprobe::wire::{self, Packet, Segment, Timestamps, testkit};
use libfuzzer_sys::fuzz_target;

/// The connection's true numbers. They match the golden fixtures (PROBE4/ACK4/RST6/ICMP4),
/// so the seed corpus holds the genuine answers and the fuzzer mutates from there.
const SND_NXT: SeqNumber = SeqNumber(0x1234_5679);
const RCV_NXT: SeqNumber = SeqNumber(0x9abc_def0);
const TS: Timestamps = Timestamps {
    tsval: 0x0102_0304,
    tsecr: 0x0506_0708,
};

/// Forged packets that claim to come *from* the local address are delivered too: the capture
/// tells the engine they arrived from the network (`Origin::Received`), so they must never
/// teach it the numbers.
const DELIVER_SPOOFED_OUTGOING: bool = true;

fn flow(v6: bool) -> Flow {
    let (l, r) = if v6 {
        ("[2001:db8:18::2]:40000", "[2001:db8:51::2]:9000")
    } else {
        ("198.18.0.2:40000", "198.51.100.2:9000")
    };
    Flow {
        local: l.parse().expect("literal"),
        remote: r.parse().expect("literal"),
    }
}

fn segment(src: SocketAddr, dst: SocketAddr, seq: SeqNumber, ack: SeqNumber, flags: u8) -> Packet {
    Packet::Tcp(Segment {
        window: 502,
        ts: Some(TS),
        ..Segment::bare(src, dst, seq, ack, flags)
    })
}

/// Reads the fuzz input front to back; runs out into zeros.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn bytes(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head
    }
}

/// What the forged packets proved, judged against the true numbers.
#[derive(Default)]
struct Evidence {
    genuine_ack: bool,
    genuine_rst: bool,
    genuine_icmp: bool,
    /// After the first probe the local kernel accepted a segment (its idle clock restarted).
    kernel_accepted: bool,
    /// The harness told the engine the connection had data in flight.
    reported_busy: bool,
}

/// The local socket's receive window, for deciding what the kernel would accept.
const RCV_WND: u32 = 65535;

struct Harness {
    engine: Engine,
    flow: Flow,
    cfg: Config,
    now: Duration,
    view: ConnView,
    /// When the local kernel last accepted a segment: its idle clock counts from here.
    last_rx: Duration,
    closed: bool,
    /// A SYN was injected and seen; its challenge ACK is not out yet.
    challenge_pending: bool,
    /// The harness delivers challenge ACKs at once (before fuzzing, and when winding down).
    auto_challenge: bool,
    probes: Vec<(SeqNumber, SeqNumber)>,
    outcome: Option<Outcome>,
    evidence: Evidence,
}

impl Harness {
    fn checked(&self) -> bool {
        self.cfg.source == SeqSource::Local
    }

    fn deliver_challenge(&mut self) {
        if self.challenge_pending {
            self.challenge_pending = false;
            let ack = segment(
                self.flow.local,
                self.flow.remote,
                SND_NXT,
                RCV_NXT,
                wire::ACK,
            );
            self.engine.on_packet_from(self.now, &ack, Origin::Loopback);
        }
    }

    /// Hands out every action due now and plays the kernel's part in each.
    fn drive(&mut self) {
        // Each action either moves the engine on or is the last; a bound catches a livelock.
        for _ in 0..10_000 {
            let Some(action) = self.engine.poll(self.now) else {
                return;
            };
            match action {
                Action::QueryConnection => {
                    // The kernel's idle and ACK clocks both restart at an accepted segment.
                    let view = ConnView {
                        idle: self.now.saturating_sub(self.last_rx),
                        since_ack: self.now.saturating_sub(self.last_rx),
                        ..self.view
                    };
                    self.evidence.reported_busy |= view.busy;
                    let view = (!self.closed).then_some(view);
                    self.engine.on_connection(self.now, view);
                }
                Action::InjectSyn(syn) => {
                    assert_eq!((syn.src, syn.dst), (self.flow.remote, self.flow.local));
                    assert_eq!(
                        syn.flags,
                        wire::SYN,
                        "only a bare SYN goes into the local stack"
                    );
                    assert_eq!(syn.payload_len, 0);
                    // The SYN shows up on loopback; the challenge ACK follows.
                    let seen = segment(syn.src, syn.dst, syn.seq, SeqNumber(0), wire::SYN);
                    self.engine.on_packet_from(self.now, &seen, Origin::Loopback);
                    self.challenge_pending = true;
                    if self.auto_challenge {
                        self.deliver_challenge();
                    }
                }
                Action::Send { probe, index } => {
                    assert_eq!((probe.src, probe.dst), (self.flow.local, self.flow.remote));
                    assert_eq!(
                        probe.flags & (wire::SYN | wire::FIN | wire::RST),
                        0,
                        "a probe never carries SYN, FIN or RST"
                    );
                    assert!(probe.flags & wire::ACK != 0);
                    assert!(
                        probe.payload_len == 0 || self.cfg.garbage_octet,
                        "data only as --garbage-octet's single byte"
                    );
                    if self.checked() {
                        assert_eq!(probe.payload_len == 1, self.cfg.garbage_octet);
                    }
                    assert!(
                        index >= 1 && index <= self.cfg.timing.probes,
                        "probe {index}"
                    );
                    if self.checked() {
                        assert_eq!(
                            (probe.seq, probe.ack),
                            (SND_NXT - 1, RCV_NXT),
                            "probe {index} is not canonical for the true numbers: \
                             learning was misled"
                        );
                    }
                    self.probes.push((probe.seq, probe.ack));
                    assert!(self.probes.len() <= usize::from(self.cfg.timing.probes));
                }
                Action::CheckRoute | Action::CheckPath(_) | Action::Note(_) => {}
                Action::Finish(outcome) => {
                    assert!(self.outcome.is_none(), "two outcomes");
                    self.outcome = Some(outcome);
                }
            }
        }
        panic!("the engine handed out 10000 actions at one instant");
    }

    fn judge(&mut self, packet: &Packet) {
        let f = self.flow;
        match packet {
            Packet::Tcp(s) if s.src == f.remote && s.dst == f.local => {
                let syn = s.has(wire::SYN);
                if s.has(wire::RST) && !syn && s.seq == RCV_NXT {
                    self.evidence.genuine_rst = true;
                }
                let plain = s.has(wire::ACK) && !syn && !s.has(wire::RST);
                if plain && s.seq == RCV_NXT && s.ack == SND_NXT {
                    self.evidence.genuine_ack = true;
                }
                // RFC 9293 acceptability, as the local kernel checks it: SEQ in the receive
                // window and an ACK of exactly what was sent (the connection is idle). An older
                // ACK is accepted too but does not restart the idle clock.
                let in_window = s.seq.0.wrapping_sub(RCV_NXT.0) < RCV_WND;
                if plain && in_window && s.ack == SND_NXT {
                    self.last_rx = self.now;
                    if !self.probes.is_empty() {
                        self.evidence.kernel_accepted = true;
                    }
                }
            }
            Packet::Icmp(e)
                if e.to == f.local.ip()
                    && e.quoted_src == f.local
                    && e.quoted_dst == f.remote
                    && self.probes.iter().any(|&(seq, _)| seq == e.quoted_seq) =>
            {
                self.evidence.genuine_icmp = true;
            }
            _ => {}
        }
    }

    fn feed(&mut self, packet: &Packet) {
        if let Packet::Tcp(s) = packet
            && s.src == self.flow.local
            && !DELIVER_SPOOFED_OUTGOING
        {
            return;
        }
        self.judge(packet);
        // Everything the fuzzer makes comes from the network, whatever addresses it claims.
        self.engine.on_packet_from(self.now, packet, Origin::Received);
        self.drive();
    }

    fn check_outcome(&self) {
        let Some(Outcome::Verdict(v)) = &self.outcome else {
            return;
        };
        assert!(v.probes_sent <= self.cfg.timing.probes);
        if !self.checked() {
            return;
        }
        let ev = &self.evidence;
        match v.kind {
            VerdictKind::Dead if v.evidence == engine::Evidence::KernelAckClock => {
                assert!(ev.reported_busy, "ACK-clock dead on an idle connection: {v:?}")
            }
            VerdictKind::Dead => assert_eq!(v.probes_sent, self.cfg.timing.probes),
            VerdictKind::Alive => assert!(
                ev.genuine_ack || ev.kernel_accepted,
                "alive without the exact ACK or a segment the kernel accepted: {v:?}"
            ),
            VerdictKind::Reset => assert!(ev.genuine_rst, "reset without RST seq=RCV.NXT: {v:?}"),
            VerdictKind::Unreachable => {
                assert!(
                    ev.genuine_icmp,
                    "unreachable without a quote of a probe: {v:?}"
                )
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let setup = input.byte().unwrap_or(0);
    let v6 = setup & 1 != 0;
    let probes = 1 + ((setup >> 1) & 3);
    let garbage_octet = setup & 8 != 0;
    let source = match (setup >> 4) & 3 {
        2 => SeqSource::Sniff,
        3 => SeqSource::Peer,
        _ => SeqSource::Local,
    };
    let time = Duration::from_millis(u64::from(setup >> 6) * 700);
    // One byte: the interval from its remainder, the connection's RTO (0..600 ms) from the
    // quotient, so older seeds keep their meaning.
    let timing_byte = input.byte().unwrap_or(4);
    let intvl = Duration::from_millis(100 * u64::from(1 + timing_byte % 20));
    let rto = Duration::from_millis(50 * u64::from(timing_byte / 20));
    let cfg = Config {
        flow: flow(v6),
        route: Default::default(),
        timing: Timing {
            time,
            intvl,
            probes,
        },
        source,
        garbage_octet,
    };
    let now = Duration::from_secs(100);
    let mut h = Harness {
        engine: Engine::new(cfg, now, 0x5eed),
        flow: cfg.flow,
        cfg,
        now,
        view: ConnView {
            idle: Duration::ZERO,
            busy: false,
            since_ack: Duration::ZERO,
            rto,
            progress: (1000, 2000),
        },
        last_rx: now - Duration::from_secs(10),
        closed: false,
        challenge_pending: false,
        auto_challenge: true,
        probes: Vec::new(),
        outcome: None,
        evidence: Evidence::default(),
    };

    // Up to the first probe with no forged packet in sight.
    h.drive();
    if source == SeqSource::Sniff {
        // The sniffer learns from the wire: show it the local kernel's latest segment.
        let ack = segment(h.flow.local, h.flow.remote, SND_NXT, RCV_NXT, wire::ACK);
        h.engine.on_packet_from(h.now, &ack, Origin::Loopback);
        h.drive();
    }
    if source == SeqSource::Local {
        assert_eq!(h.probes.len(), 1, "the first probe goes out at once");
    }
    h.auto_challenge = false;

    // Forged packets, time and kernel news, as the input says.
    while let Some(op) = input.byte() {
        if h.outcome.is_some() {
            break;
        }
        match op % 8 {
            0..=3 => {
                let len = usize::from(input.byte().unwrap_or(0)) | (usize::from(op >> 3) << 8);
                // A forger's checksums are right: repair them, as the forger would.
                let bytes = testkit::repaired(input.bytes(len));
                if let Ok(packet) = wire::decode(&bytes) {
                    h.feed(&packet);
                }
            }
            4 => {
                h.now += Duration::from_millis(u64::from(input.byte().unwrap_or(0)) * 10);
                h.drive();
            }
            5 => {
                h.deliver_challenge();
                h.drive();
            }
            6 => {
                // Data moved: the engine should learn again (the harness's numbers stay).
                h.view.progress.0 += u64::from(op >> 3);
                h.view.busy = op & 0x80 != 0;
                h.drive();
            }
            _ => {
                h.closed = op & 0xf8 == 0xf8;
                h.drive();
            }
        }
    }

    // Wind down: the kernel goes back to answering at once; the engine must finish.
    h.auto_challenge = true;
    h.view.busy = false;
    h.deliver_challenge();
    for _ in 0..200 {
        if h.outcome.is_some() {
            break;
        }
        h.drive();
        h.now += Duration::from_millis(250);
    }
    h.drive();
    assert!(
        h.outcome.is_some() || h.engine.next_poll() == PollAt::Done,
        "no outcome after 50 s of virtual time"
    );
    h.check_outcome();
    if let Some(Outcome::Verdict(_)) = h.outcome {
        assert_eq!(h.engine.next_poll(), PollAt::Done);
    }
});
