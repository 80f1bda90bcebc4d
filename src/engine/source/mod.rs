//! Where the connection's sequence numbers come from (README "How it works"), one type for
//! what each source keeps while it learns:
//!
//! - `kernel`: nothing to keep, the caller reads the numbers from the kernel with every look
//!   at the connection ([`ConnView::numbers`](super::ConnView)); nothing is sent to learn;
//! - `local` ([`LocalRound`], in `local.rs`): a SYN injected into the local stack, and the
//!   challenge ACK the local socket answers it with;
//! - `peer`: nothing to keep, it learns nothing before it probes: an out-of-window probe with
//!   random numbers, whose answer carries the peer's numbers;
//! - `sniff` ([`SniffRound`], in `sniff.rs`): any segment of the connection on the wire.
//!
//! The engine asks the source ([`SeqSource`]) how a round starts, which probe goes out,
//! whether an ACK answers it and whether the kernel's other segments cast doubt on its RTT;
//! it asks a round what to do next, when, and what a segment on the wire teaches it. Waiting
//! for idle, busy connections, probe timing, RSTs, ICMP errors and verdicts are the engine's
//! alone.

mod local;
mod sniff;

use std::time::Duration;

use super::rng::Rng;
use super::{Action, Config, PollAt};
use crate::flow::Flow;
use crate::seq::SeqNumber;
use crate::wire::{self, IpMeta, Segment, Timestamps};
use local::LocalRound;
use sniff::SniffRound;

/// How long to wait for the local socket's challenge ACK before injecting again. Linux sends at
/// most one per `tcp_invalid_ratelimit` (500 ms) per socket, so a retry sooner would be wasted.
pub const LEARN_RETRY: Duration = Duration::from_millis(600);
/// Injections before giving up on learning the numbers.
pub const LEARN_TRIES: u8 = 3;
/// Tries are counted from one, as `Note::LearnRetry` shows them.
const FIRST_TRY: u8 = 1;
/// The window advertised by probes whose numbers are not the local kernel's (`peer` elicit
/// probes, the path check): any value is as good, the peer only answers the sequence number.
const ELICIT_WINDOW: u16 = 1024;

/// How the connection's sequence numbers are learned (README "How it works"). In JSON and
/// on the command line: `kernel`, `local`, `peer`, `sniff`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SeqSource {
    /// Read from the local kernel (an eBPF socket iterator) with every look at the connection.
    Kernel,
    /// A SYN injected into the local stack makes the local socket send a challenge ACK.
    Local,
    /// Out-of-window probes with a random ACK nonce; the peer's answer tells the numbers.
    Peer,
    /// Wait for a segment of the connection on the wire.
    Sniff,
}

/// The connection's numbers as the local kernel announced them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Numbers {
    pub snd_nxt: SeqNumber,
    pub rcv_nxt: SeqNumber,
    pub window: u16,
    /// The timestamp option as the local kernel would stamp it at [`TsClock::at`], when the
    /// clock is known; each probe then carries the TSval of the moment it leaves.
    pub ts: Option<Timestamps>,
    pub ts_clock: Option<TsClock>,
    pub ip: IpMeta,
}

/// When `ts.tsval` was the local kernel's current TSval, and how fast its clock ticks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TsClock {
    pub at: Duration,
    /// Microsecond timestamps (the `tcp_usec_ts` route feature); milliseconds otherwise.
    pub usec: bool,
}

impl Numbers {
    /// The timestamp option a segment leaving at `now` carries: the TSval advanced by the
    /// time since it was read, as the kernel stamps every segment with its clock (RFC 7323,
    /// 5.4). A stale TSval is dropped by PAWS without an answer (Linux ≥ 6.14 `PAWSOldAck`).
    pub fn ts_at(&self, now: Duration) -> Option<Timestamps> {
        let ts = self.ts?;
        let Some(clock) = self.ts_clock else {
            return Some(ts);
        };
        let since = now.saturating_sub(clock.at);
        let ticks = if clock.usec {
            since.as_micros()
        } else {
            since.as_millis()
        };
        // TSval wraps modulo 2^32 (RFC 7323, 5.2): so does the tick count added.
        Some(Timestamps {
            tsval: ts.tsval.wrapping_add(ticks as u32),
            tsecr: ts.tsecr,
        })
    }
}

/// Which way a segment of the connection travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Direction {
    /// From the local socket toward the peer.
    Outgoing,
    /// From the peer toward the local socket.
    Incoming,
}

/// What a segment seen during a learning round does for the round.
pub(super) enum Heard {
    /// Nothing: the engine takes the segment as it would outside a round.
    Pass,
    /// The round keeps it, and it decides nothing else.
    Kept,
    /// The numbers: the round is over.
    Learned(Numbers),
}

/// What a round does at a `poll`.
pub(super) enum Step {
    /// An action toward the numbers.
    Act(Action),
    /// No way is left to learn them.
    GiveUp,
}

/// What a plain ACK from the peer, after a probe went out, says about it.
pub(super) enum Reply {
    /// It answers the probe; with `--seq-source peer` it also brings the numbers.
    Answer(Option<Numbers>),
    /// Its numbers differ from the learned pair: a forgery, or the connection moved on.
    Mismatch,
    /// There are no numbers to hold it against: it proves nothing.
    Unproven,
}

impl SeqSource {
    /// A learning round from `now`, or `None` where the source learns nothing before it probes.
    pub(super) fn start_round(self, now: Duration, cfg: &Config, rng: &mut Rng) -> Option<Round> {
        match self {
            // The numbers come with the look at the connection: nothing to learn.
            SeqSource::Kernel => None,
            SeqSource::Local => Some(Round::Local(LocalRound::inject(
                now, FIRST_TRY, cfg.flow, rng,
            ))),
            // The out-of-window probe needs no numbers: its answer brings them.
            SeqSource::Peer => None,
            SeqSource::Sniff => Some(Round::Sniff(SniffRound::new(now, cfg.timing))),
        }
    }

    /// The next probe toward the peer, leaving at `now`.
    pub(super) fn probe(
        self,
        learned: Option<Numbers>,
        cfg: &Config,
        now: Duration,
        rng: &mut Rng,
    ) -> Segment {
        match (self, learned) {
            (SeqSource::Peer, _) | (_, None) => out_of_window_probe(cfg.flow, rng),
            (SeqSource::Kernel | SeqSource::Local | SeqSource::Sniff, Some(n)) => {
                keepalive_probe(cfg.flow, n, cfg.garbage_octet, now)
            }
        }
    }

    /// The name the command line and JSON give the source.
    pub fn as_str(self) -> &'static str {
        match self {
            SeqSource::Kernel => "kernel",
            SeqSource::Local => "local",
            SeqSource::Peer => "peer",
            SeqSource::Sniff => "sniff",
        }
    }

    /// Whether the source puts packets of its own on the connection's 4-tuple besides the
    /// canonical probe (README "Do no harm"): the injected SYN, random-numbered probes.
    pub fn injects(self) -> bool {
        matches!(self, SeqSource::Local | SeqSource::Peer)
    }

    /// Whether a plain ACK from the peer, after a probe went out, answers it (README "How it
    /// works": trusting an answer).
    pub(super) fn reply(self, seg: &Segment, learned: Option<Numbers>) -> Reply {
        match (self, learned) {
            // The probe's numbers were random and out of window, and the peer answers such a
            // segment with <SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK> (RFC 9293, 3.10.7.4), which
            // echoes nothing of the probe: any ACK counts, and brings the peer's numbers.
            // Such answers cannot be authenticated (README "Trust").
            (SeqSource::Peer, _) => Reply::Answer(Some(Numbers {
                snd_nxt: seg.ack,
                rcv_nxt: seg.seq,
                window: ELICIT_WINDOW,
                ts: None,
                ts_clock: None,
                ip: IpMeta::default(),
            })),
            // The keepalive probe's SEQ = SND.NXT − 1 lies just below the peer's window, and
            // the peer answers an unacceptable segment with <SEQ=SND.NXT><ACK=RCV.NXT>
            // (RFC 9293, 3.10.7.4; RFC 1122, 4.2.3.6): from our side exactly the learned
            // RCV.NXT and SND.NXT, which a blind forger hits once in 2^64 (README "Trust").
            (_, Some(n)) if seg.seq == n.rcv_nxt && seg.ack == n.snd_nxt => Reply::Answer(None),
            (_, Some(_)) => Reply::Mismatch,
            (_, None) => Reply::Unproven,
        }
    }

    /// Whether an answer may acknowledge any segment the local kernel sent, not only a copy
    /// of the probe: where its numbers are not checked (`peer`), any ACK of the peer answers
    /// the local kernel's segment as well as our probe.
    pub(super) fn answers_any_local_segment(self) -> bool {
        self == SeqSource::Peer
    }
}

/// A learning round, with what its source keeps meanwhile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Round {
    Local(LocalRound),
    Sniff(SniffRound),
}

impl Round {
    /// When [`Round::poll`] next has something to do.
    pub(super) fn next_poll(&self) -> PollAt {
        match self {
            Round::Local(round) => round.next_poll(),
            Round::Sniff(round) => round.next_poll(),
        }
    }

    /// The round's next step at `now`, if one is due.
    pub(super) fn poll(&mut self, now: Duration, flow: Flow, rng: &mut Rng) -> Option<Step> {
        match self {
            Round::Local(round) => round.poll(now, flow, rng),
            Round::Sniff(round) => round.poll(now),
        }
    }

    /// A segment of the connection, neither one of our probes nor a contradiction of where
    /// the capture saw it.
    pub(super) fn heard(&mut self, seg: &Segment, dir: Direction, now: Duration) -> Heard {
        match self {
            Round::Local(round) => round.heard(seg, dir, now),
            Round::Sniff(round) => round.heard(seg, dir, now),
        }
    }
}

/// A pure ACK, possibly with data or FIN: the segments that carry a connection's numbers.
pub(super) fn is_plain(seg: &Segment) -> bool {
    !seg.has(wire::SYN) && !seg.has(wire::RST) && seg.has(wire::ACK)
}

/// The numbers an outgoing segment of the local socket, seen at `now`, announces: SND.NXT
/// past its data and FIN, RCV.NXT in its ACK field, the window and options as the local
/// kernel writes them. Its TSval was the kernel's clock at `now`, in milliseconds (Linux's
/// default; a route with `tcp_usec_ts` is only known to the `kernel` source).
fn announced(seg: &Segment, now: Duration) -> Numbers {
    Numbers {
        snd_nxt: seg.seq + seg.seq_len(),
        rcv_nxt: seg.ack,
        window: seg.window,
        ts: seg.ts,
        ts_clock: seg.ts.map(|_| TsClock {
            at: now,
            usec: false,
        }),
        ip: seg.ip,
    }
}

/// The keepalive probe (RFC 1122, 4.2.3.6; RFC 9293, 3.8.4): SEQ = SND.NXT − 1, ACK =
/// RCV.NXT, the local kernel's window and options copied, and with `garbage` one
/// already-acknowledged octet. Its TSval is the kernel's clock at `now`, fresh on every probe.
fn keepalive_probe(flow: Flow, n: Numbers, garbage: bool, now: Duration) -> Segment {
    Segment {
        src: flow.local,
        dst: flow.remote,
        seq: n.snd_nxt - 1,
        ack: n.rcv_nxt,
        flags: wire::ACK,
        window: n.window,
        ts: n.ts_at(now),
        payload_len: usize::from(garbage),
        ip: n.ip,
    }
}

/// An ACK toward the peer with a random sequence number and ACK nonce: out of window,
/// so the peer answers with its own numbers (RFC 9293, 3.10.7.4), and the local kernel's
/// numbers are not needed.
fn out_of_window_probe(flow: Flow, rng: &mut Rng) -> Segment {
    let seq = SeqNumber(rng.next_u32());
    let ack = SeqNumber(rng.next_u32());
    Segment {
        window: ELICIT_WINDOW,
        ..Segment::bare(flow.local, flow.remote, seq, ack, wire::ACK)
    }
}
