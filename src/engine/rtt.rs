//! An RTT belongs to one probe (README "Verdicts and timing"): the copies of outgoing segments
//! the capture saw, and why an answer may belong to another probe than our last one.

use std::time::Duration;

use super::{Engine, Note, VerdictKind};
use crate::seq::SeqNumber;
use crate::wire::SAME_PACKET_WINDOW;

/// Outgoing segments of the connection remembered to tell our probes' copies from someone
/// else's identical probe: a few kernel keepalives and retransmissions per probe round. When
/// more pass, the oldest go, and an answer then has no RTT rather than a wrong one.
pub(super) const MAX_COPIES: usize = 16;

/// One of our probes as it was sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct SentProbe {
    pub(super) seq: SeqNumber,
    pub(super) ack: SeqNumber,
    /// The timestamp option's TSval it carried: fresh on every probe, so an answer that
    /// echoes it (TSecr) names the probe it answers.
    pub(super) tsval: Option<u32>,
    pub(super) at: Duration,
}

/// An outgoing segment of the connection as the capture saw it leave: ours or the kernel's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct SeenCopy {
    seq: SeqNumber,
    ack: SeqNumber,
    /// The timestamp option's TSval, which tells the kernel's own keepalive from our probe.
    tsval: Option<u32>,
    at: Duration,
}

impl Engine {
    /// An outgoing segment of the connection on the capture: ours or the local kernel's.
    pub(super) fn saw_copy(
        &mut self,
        now: Duration,
        seq: SeqNumber,
        ack: SeqNumber,
        tsval: Option<u32>,
    ) {
        // Two copies within `SAME_PACKET_WINDOW` with the same timestamp option are one packet,
        // not two probes. The timestamp tells our probe (the TSval learned from the challenge
        // ACK) from the kernel's own keepalive sent in the same instant (its current TSval).
        let again = self.copies.iter().rev().any(|c| {
            (c.seq, c.ack, c.tsval) == (seq, ack, tsval)
                && now.saturating_sub(c.at) < SAME_PACKET_WINDOW
        });
        if again {
            return;
        }
        if self.copies.len() >= MAX_COPIES {
            self.copies.pop_front();
        }
        self.copies.push_back(SeenCopy {
            seq,
            ack,
            tsval,
            at: now,
        });
    }

    /// Whether one of our probes carried these numbers.
    pub(super) fn is_our_probe(&self, seq: SeqNumber, ack: SeqNumber) -> bool {
        self.sent.iter().any(|p| (p.seq, p.ack) == (seq, ack))
    }

    /// An answer proving the peer holds the connection: `alive`, timed from the last probe
    /// only when it can answer nothing else (README "Verdicts and timing").
    ///
    /// A peer that takes the probe's timestamp (FreeBSD and its descendants update TS.Recent
    /// from a segment left of the window) echoes its TSval in TSecr: when that TSval is one
    /// earlier probe's alone, the answer is that probe's, late, and its rtt is timed from it.
    /// A Linux peer echoes the TSval it accepted last, which names none of our probes.
    pub(super) fn answered(&mut self, now: Duration, tsecr: Option<u32>) {
        let mut v = self.verdict(now, VerdictKind::Alive, None);
        if let Some(earlier) = tsecr.and_then(|e| self.echoed_earlier_probe(e)) {
            v.rtt = Some(now.saturating_sub(earlier.at));
        } else if let Some(why) = self.rtt_doubt().or_else(|| self.late_doubt(tsecr)) {
            v.rtt = None;
            self.notes.push_back(Note::Borrowed(why));
        }
        self.conclude(v);
    }

    /// Why an answer after several probes may be an earlier probe's, late: its TSecr does not
    /// name the last probe (a Linux peer echoes the TSval it accepted last, none of ours), so
    /// nothing tells a prompt answer to the last probe from a late one to an earlier probe
    /// (README "Verdicts and timing": an RTT belongs to one probe).
    fn late_doubt(&self, tsecr: Option<u32>) -> Option<&'static str> {
        let last = self.sent.last()?;
        let named = tsecr.is_some() && tsecr == last.tsval;
        (self.sent.len() > 1 && !named)
            .then_some("an earlier probe's answer, late, would look the same")
    }

    /// The probe before the last whose TSval `tsecr` echoes, when it is the only probe of ours
    /// that carried it (the last one did not).
    fn echoed_earlier_probe(&self, tsecr: u32) -> Option<SentProbe> {
        let mut carried = self.sent.iter().filter(|p| p.tsval == Some(tsecr));
        let probe = *carried.next()?;
        let last = self.sent.last()?;
        (carried.next().is_none() && probe != *last).then_some(probe)
    }

    /// Why an answer to the last probe may belong to another probe, if it may.
    ///
    /// The capture shows every probe of ours leaving, once, after it was sent, and before
    /// its answer can arrive. Any other copy of the same (seq, ack) seen since an RTO before
    /// our first such probe is somebody else's identical probe, typically the connection's
    /// own kernel keepalive, whose answer is indistinguishable from ours.
    fn rtt_doubt(&self) -> Option<&'static str> {
        let last = *self.sent.last()?;
        let (seq, ack) = (last.seq, last.ack);
        let mut ours = self.sent.iter().filter(|p| (p.seq, p.ack) == (seq, ack));
        let first = ours.next().map_or(last.at, |p| p.at);
        let ours = 1 + ours.count();
        let from = first.saturating_sub(self.rto);
        let any_segment = self.cfg.source.answers_any_local_segment();
        let mut copies = 0;
        for c in &self.copies {
            if c.at < from {
                continue;
            }
            if (c.seq, c.ack) == (seq, ack) {
                copies += 1;
            } else if any_segment && !self.is_our_probe(c.seq, c.ack) {
                return Some("the local kernel sent a segment the answer may acknowledge");
            }
        }
        if copies > ours {
            return Some("another identical probe left this host (the kernel's own keepalive?)");
        }
        let mut times = self.sent.iter().rev().map(|p| p.at);
        if let (Some(last), Some(before)) = (times.next(), times.next())
            && last.saturating_sub(before) < self.rto
        {
            return Some("the probe before it was still within the connection's RTO");
        }
        if copies < ours {
            return Some("the probe was not seen leaving before the answer");
        }
        None
    }
}
