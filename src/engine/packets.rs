//! What a captured packet decides: whether it belongs to the connection and travels the way
//! the capture saw it, what it teaches a learning round, and whether it answers a probe
//! (README "How it works": trusting an answer).

use std::time::Duration;

use super::source::{Direction, Heard, Numbers, Reply, is_plain};
use super::{Engine, IcmpInfo, Note, Outcome, Phase, VerdictKind};
use crate::wire::{self, IcmpError, Origin, Packet, Segment};

impl Engine {
    /// A decoded packet and where the capture saw it.
    pub fn on_packet_from(&mut self, now: Duration, packet: &Packet, origin: Origin) {
        if self.phase == Phase::Done {
            return;
        }
        match packet {
            Packet::Tcp(seg) => self.on_segment(now, seg, origin),
            Packet::Icmp(err) => self.on_icmp(now, err, origin),
        }
    }

    /// An ICMP error about the connection: `unreachable` if it quotes one of our probes.
    fn on_icmp(&mut self, now: Duration, err: &IcmpError, origin: Origin) {
        let flow = self.cfg.flow;
        // One leaving this host is the local stack's, about someone else's packet.
        if origin == Origin::Sent {
            return;
        }
        if err.to != flow.local.ip()
            || err.quoted_src != flow.local
            || err.quoted_dst != flow.remote
        {
            return;
        }
        // The error quotes the first octets of the datagram it is about (RFC 792; RFC 4443,
        // 3.1): only a probe's exact sequence number proves it is about a probe.
        if !self.sent.iter().any(|p| p.seq == err.quoted_seq) {
            self.ignore("ICMP error quoting a segment that is not a probe");
            return;
        }
        let info = IcmpInfo {
            icmp_type: err.icmp_type,
            code: err.code,
            from: err.from,
            name: err.name(),
        };
        let v = self.verdict(now, VerdictKind::Unreachable, Some(info));
        self.conclude(v);
    }

    fn on_segment(&mut self, now: Duration, seg: &Segment, origin: Origin) {
        match self.direction(seg, origin) {
            Some(Direction::Outgoing) => self.on_outgoing(now, seg),
            Some(Direction::Incoming) => self.on_incoming(now, seg),
            None => {}
        }
    }

    /// Which way `seg` travels on the connection, if it belongs to it and its addresses agree
    /// with where the capture saw it.
    fn direction(&mut self, seg: &Segment, origin: Origin) -> Option<Direction> {
        let flow = self.cfg.flow;
        let outgoing = seg.src == flow.local && seg.dst == flow.remote;
        let incoming = seg.src == flow.remote && seg.dst == flow.local;
        if (outgoing && origin == Origin::Received) || (incoming && origin == Origin::Sent) {
            // A segment from the network claiming the local address (or the reverse):
            // a forgery, and never a source of numbers.
            self.ignore("segment whose addresses contradict the direction it was seen in");
            return None;
        }
        // On a connection to itself (local = remote) a segment is both: a SYN then counts as
        // incoming (it may be our injected SYN), anything else as the local socket's.
        match (outgoing, incoming) {
            (true, true) if seg.has(wire::SYN) => Some(Direction::Incoming),
            (true, _) => Some(Direction::Outgoing),
            (false, true) => Some(Direction::Incoming),
            (false, false) => None,
        }
    }

    /// A segment the local stack sent on the connection: a copy of a probe (ours or the
    /// kernel's own), or what a learning round waits for. Our own probes never teach numbers.
    fn on_outgoing(&mut self, now: Duration, seg: &Segment) {
        // The local socket closing (its application's close or abort): an RST from the peer
        // after it answers that, not a probe.
        if seg.has(wire::FIN) || seg.has(wire::RST) {
            self.local_closing = true;
        }
        if is_plain(seg) {
            self.saw_copy(now, seg.seq, seg.ack, seg.ts.map(|t| t.tsval));
        }
        if !self.is_our_probe(seg.seq, seg.ack)
            && let Phase::Learning(round) = &mut self.phase
            && let Heard::Learned(lesson) = round.heard(seg, Direction::Outgoing, now)
        {
            self.learned(lesson);
        }
    }

    /// A segment from the peer's side of the 4-tuple: what a learning round waits for, an
    /// RST, or an answer.
    fn on_incoming(&mut self, now: Duration, seg: &Segment) {
        if let Phase::Learning(round) = &mut self.phase {
            match round.heard(seg, Direction::Incoming, now) {
                Heard::Learned(lesson) => return self.learned(lesson),
                Heard::Kept => return,
                Heard::Pass => {}
            }
        }
        // A SYN answers no probe: our injected SYN seen on loopback, or someone else's.
        if seg.has(wire::SYN) {
            return;
        }
        if seg.has(wire::RST) {
            self.on_reset(now, seg);
            return;
        }
        if !is_plain(seg) || self.probes_sent == 0 {
            return;
        }
        self.on_answer(now, seg);
    }

    /// An RST from the peer: a `reset` verdict only if it answers what we know was sent.
    fn on_reset(&mut self, now: Duration, seg: &Segment) {
        // Reset generation (RFC 9293, 3.5.2): the RST's SEQ is the ACK field of the segment
        // it answers, so it must be RCV.NXT as learned or the ACK field of a probe.
        let known = self.numbers.is_some_and(|n| n.rcv_nxt == seg.seq)
            || self.sent.iter().any(|p| p.ack == seg.seq);
        if known && self.local_closing {
            // The local side was closing: the peer's RST answers its FIN or RST, and proves
            // no restart (issue 19: a client closing during the probe read as `reset`).
            self.phase = Phase::Done;
            self.pending_finish = Some(Outcome::Closed);
        } else if known {
            let v = self.verdict(now, VerdictKind::Reset, None);
            self.conclude(v);
        } else {
            self.ignore("RST whose sequence number matches no probe");
        }
    }

    /// A plain ACK from the peer after a probe went out: `alive` if the source takes it for
    /// the answer.
    fn on_answer(&mut self, now: Duration, seg: &Segment) {
        match self.cfg.source.reply(seg, self.numbers) {
            Reply::Answer(brought) => {
                if brought.is_some() {
                    self.numbers = brought;
                }
                self.answered(now, seg.ts.map(|t| t.tsecr));
            }
            Reply::Mismatch => {
                // Either a forgery or the connection moved on: learn again before the next probe.
                self.stale = true;
                self.ignore("ACK whose numbers differ from the learned pair");
            }
            Reply::Unproven => {}
        }
    }

    /// A learning round is over: the next probe goes out with these numbers. Numbers read
    /// again unchanged (the `kernel` source reads them every round) are not noted again.
    pub(super) fn learned(&mut self, numbers: Numbers) {
        let same = self
            .numbers
            .is_some_and(|n| n.snd_nxt == numbers.snd_nxt && n.rcv_nxt == numbers.rcv_nxt);
        self.numbers = Some(numbers);
        self.progress_at_learn = Some(self.last_progress);
        if !same {
            self.notes.push_back(Note::Learned(numbers));
        }
        self.phase = Phase::SendNow;
    }
}
