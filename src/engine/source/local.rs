//! `--seq-source local`: a SYN injected into the local stack, and the challenge ACK the local
//! socket answers it with (RFC 5961, 4.2; README "How it works").

use std::time::Duration;

use super::{Direction, FIRST_TRY, Heard, LEARN_RETRY, LEARN_TRIES, Step, announced, is_plain};
use crate::engine::rng::Rng;
use crate::engine::{Action, Note, PollAt};
use crate::flow::Flow;
use crate::seq::SeqNumber;
use crate::wire::{self, Segment};

/// The window of the SYN injected into the local stack: what Linux itself puts in a SYN (44
/// segments of 1460 bytes), so the SYN looks like any client's. The local socket answers an
/// in-state SYN with a challenge ACK whatever the window (RFC 5961, 4.2).
const SYN_WINDOW: u16 = 64240;

/// The injection round: where it stands between SYNs, challenge ACKs and the local checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(in crate::engine) enum LocalRound {
    /// Try `tries` of [`LEARN_TRIES`]: `syn` goes into the local stack at the next poll while
    /// `inject_pending`, then the challenge ACK is awaited until `deadline`. An ACK counts only
    /// once the capture showed the SYN arriving (`syn_seen`): one queued before it may be the
    /// kernel's own keepalive.
    Injecting {
        syn: Segment,
        syn_seen: bool,
        inject_pending: bool,
        deadline: Duration,
        tries: u8,
    },
    /// The first injected SYN got no challenge ACK: `CheckRoute`, then inject again (try
    /// `next`).
    RouteCheck { next: u8 },
    /// No injected SYN got a challenge ACK: give up. Nothing with random numbers goes out to
    /// find out why (README "Do no harm").
    Exhausted,
}

impl LocalRound {
    /// Try `tries`: a SYN on the connection's 4-tuple, spoofed from the peer, with a fresh
    /// random sequence number that tells its copy on loopback from any other SYN.
    pub(super) fn inject(now: Duration, tries: u8, flow: Flow, rng: &mut Rng) -> LocalRound {
        let seq = SeqNumber(rng.next_u32());
        // A SYN acknowledges nothing: its ACK field is zero.
        let syn = Segment {
            window: SYN_WINDOW,
            ..Segment::bare(flow.remote, flow.local, seq, SeqNumber(0), wire::SYN)
        };
        LocalRound::Injecting {
            syn,
            syn_seen: false,
            inject_pending: true,
            deadline: now + LEARN_RETRY,
            tries,
        }
    }

    pub(super) fn next_poll(&self) -> PollAt {
        match *self {
            LocalRound::Injecting {
                inject_pending: true,
                ..
            }
            | LocalRound::RouteCheck { .. }
            | LocalRound::Exhausted => PollAt::Now,
            LocalRound::Injecting { deadline, .. } => PollAt::At(deadline),
        }
    }

    pub(super) fn poll(&mut self, now: Duration, flow: Flow, rng: &mut Rng) -> Option<Step> {
        match self {
            LocalRound::Injecting {
                syn,
                inject_pending,
                ..
            } if *inject_pending => {
                *inject_pending = false;
                Some(Step::Act(Action::InjectSyn(*syn)))
            }
            LocalRound::Injecting {
                deadline, tries, ..
            } if now >= *deadline => {
                let tries = *tries;
                Some(self.unanswered(now, tries, flow, rng))
            }
            LocalRound::Injecting { .. } => None,
            LocalRound::RouteCheck { next } => {
                *self = LocalRound::inject(now, *next, flow, rng);
                Some(Step::Act(Action::CheckRoute))
            }
            LocalRound::Exhausted => Some(Step::GiveUp),
        }
    }

    /// The SYN of try `tries` got no challenge ACK in time.
    fn unanswered(&mut self, now: Duration, tries: u8, flow: Flow, rng: &mut Rng) -> Step {
        if tries >= LEARN_TRIES {
            *self = LocalRound::Exhausted;
            return Step::GiveUp;
        }
        let next = tries + 1;
        *self = if tries == FIRST_TRY {
            // Ask the local host at once whether its route or link refuses the way toward the
            // peer, rather than after every retry.
            LocalRound::RouteCheck { next }
        } else {
            LocalRound::inject(now, next, flow, rng)
        };
        Step::Act(Action::Note(Note::LearnRetry { next }))
    }

    pub(super) fn heard(&mut self, seg: &Segment, dir: Direction, now: Duration) -> Heard {
        let LocalRound::Injecting { syn, syn_seen, .. } = self else {
            return Heard::Pass;
        };
        match dir {
            // Our injected SYN, seen on loopback: the challenge ACK comes after it.
            Direction::Incoming => {
                if seg.has(wire::SYN) && !seg.has(wire::ACK) && seg.seq == syn.seq {
                    *syn_seen = true;
                }
                Heard::Pass
            }
            // The challenge ACK is <SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK> (RFC 5961, 4.2):
            // no data, no FIN.
            Direction::Outgoing
                if *syn_seen && is_plain(seg) && !seg.has(wire::FIN) && seg.payload_len == 0 =>
            {
                Heard::Learned(announced(seg, now))
            }
            Direction::Outgoing => Heard::Pass,
        }
    }
}
