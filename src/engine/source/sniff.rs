//! `--seq-source sniff`: the numbers of any plain segment of the connection on the wire
//! (README "How it works").

use std::time::Duration;

use super::{Direction, Heard, Numbers, Step, announced, is_plain};
use crate::engine::{PollAt, Timing};
use crate::wire::{IpMeta, Segment};

/// The window of probes whose numbers were learned from the peer's segments (`sniff`), where
/// the local kernel's own window is unknown: what Linux advertises on an idle connection with
/// default buffers and window scale 7 (64240 bytes >> 7). The peer does not check it.
const SNIFF_WINDOW: u16 = 502;

/// The sniffing round: waits until `deadline` for a plain segment of the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(in crate::engine) struct SniffRound {
    deadline: Duration,
}

impl SniffRound {
    pub(super) fn new(now: Duration, t: Timing) -> SniffRound {
        // Up to `probes × intvl` (README "How it works"): no longer than the probes would take.
        SniffRound {
            deadline: now + t.intvl.saturating_mul(u32::from(t.probes)),
        }
    }

    pub(super) fn next_poll(&self) -> PollAt {
        PollAt::At(self.deadline)
    }

    pub(super) fn poll(&self, now: Duration) -> Option<Step> {
        (now >= self.deadline).then_some(Step::GiveUp)
    }

    pub(super) fn heard(&self, seg: &Segment, dir: Direction, now: Duration) -> Heard {
        match (dir, is_plain(seg)) {
            (Direction::Outgoing, true) => Heard::Learned(announced(seg, now)),
            (Direction::Outgoing, false) => Heard::Pass,
            (Direction::Incoming, true) => Heard::Learned(from_peer(seg)),
            // While sniffing, the peer's segments only teach numbers: its RSTs and SYNs
            // decide nothing.
            (Direction::Incoming, false) => Heard::Kept,
        }
    }
}

/// A plain segment from the peer shows the numbers from its side: its ACK field is our
/// SND.NXT, its SEQ past its data and FIN our RCV.NXT. The local kernel's own window and
/// options are unknown here: the probes carry [`SNIFF_WINDOW`] and no timestamps.
fn from_peer(seg: &Segment) -> Numbers {
    Numbers {
        snd_nxt: seg.ack,
        rcv_nxt: seg.seq + seg.seq_len(),
        window: SNIFF_WINDOW,
        ts: None,
        ts_clock: None,
        ip: IpMeta::default(),
    }
}
