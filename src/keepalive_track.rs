//! Recognises TCP keepalive probes and their ACKs in a stream of captured segments. No I/O:
//! feed it `(time, &Segment)` and it says what each segment is.
//!
//! Per connection and per direction it keeps the next sequence number that side will use
//! (`next`: the highest `seq + len` seen, SYN and FIN counting one, raised by the other
//! side's ACK field, which can only acknowledge what was sent), the highest ACK that side
//! sent and the window it last advertised.
//!
//! A **keepalive probe** from side X is an ACK without SYN, FIN or RST, carrying 0 or 1 byte,
//! whose seq is X's `next − 1`, whose byte the peer Y has already acknowledged (Y's highest
//! ACK ≥ X's `next`), sent while Y's last advertised window was not zero. That is what the
//! Linux kernel's keepalive timer sends (`tcp_xmit_probe_skb`: seq = SND.UNA − 1, no data),
//! what stacks using a garbage octet send (the same seq, one old byte), and what kaprobe
//! sends. It is told apart from:
//! - a **zero-window probe**: the kernel builds it the same way, but only while the peer
//!   advertises a zero window;
//! - a **retransmission**: old data (seq + len ≤ `next`) of more than one byte, or the one
//!   last byte sent when the peer has not acknowledged it yet;
//! - a **duplicate ACK**: a pure ACK whose seq is `next`, not `next − 1`.
//!
//! A **keepalive ACK** is the answer from Y: a pure ACK (no data, no SYN/FIN/RST) arriving
//! within [`ACK_WINDOW`] of X's probe, whose ACK field is X's `next` at the time of the probe
//! and whose seq is Y's `next`.
//!
//! Limits:
//! - The tracker cannot know `next` before it has seen a direction: the first segment of a
//!   connection in each direction only initialises it. A probe is recognised once each
//!   direction has been seen at least once (a SYN-ACK initialises both).
//! - A SYN without ACK on a known connection changes nothing (kaprobe injects such SYNs into
//!   the local stack to learn sequence numbers); a SYN-ACK starts the connection afresh; an
//!   RST forgets it.
//! - A segment identical to the previous one of its direction within [`SAME_PACKET_WINDOW`]
//!   is the same packet seen on a second interface (a forwarding host sees it twice) and is
//!   skipped.
//! - Memory is bounded: at most `max_connections` connections are tracked; the least
//!   recently seen one is forgotten to make room.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::Duration;

use crate::seq::SeqNumber;
use crate::wire::{ACK, FIN, RST, SAME_PACKET_WINDOW, SYN, Segment, Timestamps};

/// Default cap on tracked connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 65_536;
/// How long after a probe its answer is expected.
pub const ACK_WINDOW: Duration = Duration::from_secs(1);

/// A keepalive probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    pub from: SocketAddr,
    pub to: SocketAddr,
    pub seq: SeqNumber,
    pub ack: SeqNumber,
    pub len: usize,
    /// Since the previous probe of this connection in this direction; `None` for the first
    /// one seen, or the first since the connection last carried data.
    pub interval: Option<Duration>,
}

/// The answer to a keepalive probe. `from` is the answering side, `to` the prober.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeAck {
    pub from: SocketAddr,
    pub to: SocketAddr,
    pub seq: SeqNumber,
    pub ack: SeqNumber,
    pub rtt: Duration,
}

/// What one segment was.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    /// The first segment of its direction: it only initialises the tracker.
    Init,
    /// New sequence space: data, or a FIN.
    Data,
    /// A pure ACK that is neither a probe nor a probe's answer (duplicate ACKs included).
    PureAck,
    KeepaliveProbe(Probe),
    KeepaliveAck(ProbeAck),
    /// A zero-window probe: built like a keepalive, but the peer's window is closed.
    WindowProbe,
    /// Old data sent again.
    Retransmission,
    /// The previous segment of the same direction, seen again on another interface.
    Copy,
    /// A SYN, a SYN-ACK or an RST: connection setup or teardown.
    Control,
    /// The other direction has not been seen yet, so the segment cannot be classified.
    Unknown,
}

/// The fields that make two captures the same packet.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Fingerprint {
    seq: SeqNumber,
    ack: SeqNumber,
    flags: u8,
    window: u16,
    len: usize,
    ts: Option<Timestamps>,
}

impl Fingerprint {
    fn of(seg: &Segment) -> Fingerprint {
        Fingerprint {
            seq: seg.seq,
            ack: seg.ack,
            flags: seg.flags,
            window: seg.window,
            len: seg.payload_len,
            ts: seg.ts,
        }
    }
}

/// A probe waiting for its answer.
#[derive(Clone, Copy)]
struct Pending {
    at: Duration,
    /// The prober's `next` when it probed: the ACK field the answer carries.
    next: SeqNumber,
}

/// One direction of a connection.
#[derive(Clone)]
struct Side {
    next: SeqNumber,
    /// Highest ACK field this side sent.
    acked: Option<SeqNumber>,
    window: u16,
    last: Option<(Duration, Fingerprint)>,
    last_probe: Option<Duration>,
    pending: Option<Pending>,
}

impl Side {
    fn new(next: SeqNumber) -> Side {
        Side {
            next,
            acked: None,
            window: u16::MAX,
            last: None,
            last_probe: None,
            pending: None,
        }
    }

    /// Raises `next` to `seq` if it lies ahead.
    fn raise(&mut self, seq: SeqNumber) {
        if seq.after(self.next) {
            self.next = seq;
        }
    }

    /// Records what the segment tells about the sender and its ACK field.
    fn absorb(&mut self, seg: &Segment) {
        self.raise(end(seg));
        if seg.has(ACK) {
            self.acked = Some(match self.acked {
                Some(a) if !seg.ack.after(a) => a,
                _ => seg.ack,
            });
        }
        self.window = seg.window;
    }

    fn is_copy(&self, now: Duration, fp: &Fingerprint) -> bool {
        matches!(self.last, Some((t, f)) if f == *fp && now.saturating_sub(t) < SAME_PACKET_WINDOW)
    }
}

/// The sequence number after the segment: seq + payload, SYN and FIN counting one each.
fn end(seg: &Segment) -> SeqNumber {
    seg.seq + seg.seq_len()
}

/// A connection's two endpoints, lower first: both directions map to one key.
type Key = (SocketAddr, SocketAddr);

struct Conn {
    sides: [Option<Side>; 2],
    tick: u64,
}

/// The tracker of every connection seen.
pub struct Tracker {
    conns: HashMap<Key, Conn>,
    /// Connections by last use, for eviction.
    order: BTreeMap<u64, Key>,
    clock: u64,
    max: usize,
    evicted: u64,
}

impl Tracker {
    pub fn new(max_connections: usize) -> Tracker {
        Tracker {
            conns: HashMap::new(),
            order: BTreeMap::new(),
            clock: 0,
            max: max_connections.max(1),
            evicted: 0,
        }
    }

    /// Connections tracked now.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Connections forgotten to stay within the cap.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Classifies one segment captured at `now` and updates the connection's state.
    pub fn feed(&mut self, now: Duration, seg: &Segment) -> Seen {
        let (key, dir) = key_of(seg);
        if seg.has(RST) {
            self.forget(&key);
            return Seen::Control;
        }
        let conn = self.touch(key);
        let seen = classify(conn, dir, now, seg);
        if let Some(side) = conn.sides[dir].as_mut() {
            side.last = Some((now, Fingerprint::of(seg)));
        }
        seen
    }

    fn forget(&mut self, key: &Key) {
        if let Some(c) = self.conns.remove(key) {
            self.order.remove(&c.tick);
        }
    }

    /// The connection for `key`, created if new, marked as the most recently seen.
    fn touch(&mut self, key: Key) -> &mut Conn {
        self.clock += 1;
        let tick = self.clock;
        if let Some(old) = self.conns.get(&key).map(|c| c.tick) {
            self.order.remove(&old);
        } else if self.conns.len() >= self.max
            && let Some((_, oldest)) = self.order.pop_first()
        {
            self.conns.remove(&oldest);
            self.evicted += 1;
        }
        self.order.insert(tick, key);
        let conn = self.conns.entry(key).or_insert(Conn {
            sides: [None, None],
            tick,
        });
        conn.tick = tick;
        conn
    }
}

fn key_of(seg: &Segment) -> (Key, usize) {
    if seg.src <= seg.dst {
        ((seg.src, seg.dst), 0)
    } else {
        ((seg.dst, seg.src), 1)
    }
}

/// Classifies `seg`, sent by side `dir` of `conn`, then records it.
fn classify(conn: &mut Conn, dir: usize, now: Duration, seg: &Segment) -> Seen {
    let [a, b] = &mut conn.sides;
    let (mine, theirs) = if dir == 0 { (a, b) } else { (b, a) };
    if seg.has(SYN) {
        return syn(mine, theirs, seg);
    }
    let Some(me) = mine.as_mut() else {
        let mut side = Side::new(seg.seq);
        side.absorb(seg);
        if let (Some(them), true) = (theirs.as_mut(), seg.has(ACK)) {
            them.raise(seg.ack);
        }
        *mine = Some(side);
        return Seen::Init;
    };
    if me.is_copy(now, &Fingerprint::of(seg)) {
        return Seen::Copy;
    }
    let seen = match theirs.as_ref() {
        None => Seen::Unknown,
        Some(them) => judge(me, them, now, seg),
    };
    apply(me, theirs.as_mut(), now, seg, &seen);
    seen
}

/// A SYN-ACK starts the connection afresh (both directions are known from it); a bare SYN
/// changes nothing.
fn syn(mine: &mut Option<Side>, theirs: &mut Option<Side>, seg: &Segment) -> Seen {
    if seg.has(ACK) {
        let mut me = Side::new(seg.seq);
        me.absorb(seg);
        *mine = Some(me);
        *theirs = Some(Side::new(seg.ack));
    }
    Seen::Control
}

/// What `seg` from `me` is, given both sides' state before it.
fn judge(me: &Side, them: &Side, now: Duration, seg: &Segment) -> Seen {
    let plain = seg.has(ACK) && !seg.has(SYN) && !seg.has(FIN) && !seg.has(RST);
    if plain && seg.payload_len <= 1 && seg.seq == me.next - 1 {
        return probe_like(me, them, now, seg);
    }
    if seg.payload_len > 0 || seg.has(FIN) {
        return if end(seg).after(me.next) {
            Seen::Data
        } else {
            Seen::Retransmission
        };
    }
    if plain && let Some(ack) = answer(me, them, now, seg) {
        return Seen::KeepaliveAck(ack);
    }
    Seen::PureAck
}

/// A segment at `next − 1` with at most one byte: keepalive, zero-window probe, or a
/// retransmission of the last byte.
fn probe_like(me: &Side, them: &Side, now: Duration, seg: &Segment) -> Seen {
    let Some(acked) = them.acked else {
        return Seen::Unknown;
    };
    if acked.before(me.next) {
        return if seg.payload_len == 1 {
            Seen::Retransmission
        } else {
            Seen::PureAck
        };
    }
    if them.window == 0 {
        return Seen::WindowProbe;
    }
    Seen::KeepaliveProbe(Probe {
        from: seg.src,
        to: seg.dst,
        seq: seg.seq,
        ack: seg.ack,
        len: seg.payload_len,
        interval: me.last_probe.map(|t| now.saturating_sub(t)),
    })
}

/// The answer to the other side's pending probe, if `seg` is it.
fn answer(me: &Side, them: &Side, now: Duration, seg: &Segment) -> Option<ProbeAck> {
    let p = them.pending?;
    let rtt = now.checked_sub(p.at)?;
    if rtt > ACK_WINDOW || seg.ack != p.next || seg.seq != me.next {
        return None;
    }
    Some(ProbeAck {
        from: seg.src,
        to: seg.dst,
        seq: seg.seq,
        ack: seg.ack,
        rtt,
    })
}

/// Updates both sides after `seg` from `me` was judged `seen`.
fn apply(me: &mut Side, them: Option<&mut Side>, now: Duration, seg: &Segment, seen: &Seen) {
    me.absorb(seg);
    let Some(them) = them else {
        return;
    };
    if seg.has(ACK) {
        them.raise(seg.ack);
    }
    match seen {
        Seen::KeepaliveProbe(_) => {
            me.last_probe = Some(now);
            me.pending = Some(Pending {
                at: now,
                next: me.next,
            });
        }
        Seen::KeepaliveAck(_) => them.pending = None,
        Seen::Data => {
            // The connection carried data: both keepalive timers start over.
            me.last_probe = None;
            them.last_probe = None;
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// TCP's push bit (RFC 9293, 3.1), set on data segments as Linux sends them.
    const PSH: u8 = 0x08;

    const C: &str = "198.18.0.1:40001";
    const S: &str = "198.18.0.2:9000";
    const ISN_C: u32 = 1000;
    const ISN_S: u32 = 5000;

    fn seg(from: &str, to: &str, seq: u32, ack: u32, flags: u8, len: usize) -> Segment {
        let (src, dst) = (from.parse().unwrap(), to.parse().unwrap());
        Segment {
            window: 502,
            payload_len: len,
            ..Segment::bare(src, dst, SeqNumber(seq), SeqNumber(ack), flags)
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A tracker that saw a handshake and one exchange of data: the client's next is
    /// ISN_C+11, the server's ISN_S+21, both acknowledged.
    fn established() -> Tracker {
        let mut t = Tracker::new(16);
        t.feed(ms(0), &seg(C, S, ISN_C, 0, SYN, 0));
        t.feed(ms(1), &seg(S, C, ISN_S, ISN_C + 1, SYN | ACK, 0));
        t.feed(ms(2), &seg(C, S, ISN_C + 1, ISN_S + 1, ACK, 0));
        let d = t.feed(ms(10), &seg(C, S, ISN_C + 1, ISN_S + 1, ACK | PSH, 10));
        assert_eq!(d, Seen::Data);
        t.feed(ms(11), &seg(S, C, ISN_S + 1, ISN_C + 11, ACK | PSH, 20));
        t.feed(ms(12), &seg(C, S, ISN_C + 11, ISN_S + 21, ACK, 0));
        t
    }

    const C_NEXT: u32 = ISN_C + 11;
    const S_NEXT: u32 = ISN_S + 21;

    fn kernel_probe() -> Segment {
        seg(C, S, C_NEXT - 1, S_NEXT, ACK, 0)
    }

    fn probe_ack() -> Segment {
        seg(S, C, S_NEXT, C_NEXT, ACK, 0)
    }

    /// An established tracker in which the client sent a segment of `flags` and `len` at
    /// the next sequence number (new data at 20 ms), then the same again (a retransmission
    /// at 220 ms).
    fn sent_twice(flags: u8, len: usize) -> Tracker {
        let mut t = established();
        let once = seg(C, S, C_NEXT, S_NEXT, flags, len);
        assert_eq!(t.feed(ms(20), &once), Seen::Data);
        assert_eq!(t.feed(ms(220), &once), Seen::Retransmission);
        t
    }

    fn expect_probe(s: Seen) -> Probe {
        match s {
            Seen::KeepaliveProbe(p) => p,
            other => panic!("expected a keepalive probe, got {other:?}"),
        }
    }

    fn expect_ack(s: Seen) -> ProbeAck {
        match s {
            Seen::KeepaliveAck(a) => a,
            other => panic!("expected a keepalive ACK, got {other:?}"),
        }
    }

    #[test]
    fn kernel_keepalive_probes_and_answers() {
        let mut t = established();
        let p = expect_probe(t.feed(ms(1012), &kernel_probe()));
        assert_eq!(p.from, C.parse().unwrap());
        assert_eq!(p.seq, SeqNumber(C_NEXT - 1));
        assert_eq!((p.len, p.interval), (0, None));
        let a = expect_ack(t.feed(ms(1013), &probe_ack()));
        assert_eq!(a.rtt, ms(1));
        assert_eq!((a.from, a.to), (S.parse().unwrap(), C.parse().unwrap()));
        let p = expect_probe(t.feed(ms(2015), &kernel_probe()));
        assert_eq!(p.interval, Some(ms(1003)));
        expect_ack(t.feed(ms(2016), &probe_ack()));
        // One answer per probe: a second identical ACK later is a plain duplicate.
        assert_eq!(t.feed(ms(2100), &probe_ack()), Seen::PureAck);
    }

    #[test]
    fn garbage_octet_probe_is_a_keepalive() {
        let mut t = established();
        let p = expect_probe(t.feed(ms(1000), &seg(C, S, C_NEXT - 1, S_NEXT, ACK, 1)));
        assert_eq!(p.len, 1);
        expect_ack(t.feed(ms(1001), &probe_ack()));
    }

    #[test]
    fn kaprobe_sequence_with_injected_syn_and_challenge_ack() {
        let mut t = established();
        // The SYN kaprobe injects into the local stack, spoofed from the server, random seq.
        assert_eq!(
            t.feed(ms(1000), &seg(S, C, 0xdead_beef, 0, SYN, 0)),
            Seen::Control
        );
        // The local socket's challenge ACK: a duplicate ACK.
        assert_eq!(
            t.feed(ms(1001), &seg(C, S, C_NEXT, S_NEXT, ACK, 0)),
            Seen::PureAck
        );
        expect_probe(t.feed(ms(1002), &kernel_probe()));
        expect_ack(t.feed(ms(1003), &probe_ack()));
    }

    #[test]
    fn first_segment_of_a_direction_only_initialises() {
        let mut t = Tracker::new(16);
        // Sniffing starts on an idle connection: its first segment is a probe.
        assert_eq!(t.feed(ms(0), &kernel_probe()), Seen::Init);
        assert_eq!(t.feed(ms(1), &probe_ack()), Seen::Init);
        let p = expect_probe(t.feed(ms(1000), &kernel_probe()));
        assert_eq!(p.interval, None);
        expect_ack(t.feed(ms(1001), &probe_ack()));
        let p = expect_probe(t.feed(ms(2000), &kernel_probe()));
        assert_eq!(p.interval, Some(ms(1000)));
    }

    #[test]
    fn one_direction_alone_is_not_classified() {
        let mut t = Tracker::new(16);
        assert_eq!(t.feed(ms(0), &kernel_probe()), Seen::Init);
        assert_eq!(t.feed(ms(1000), &kernel_probe()), Seen::Unknown);
    }

    #[test]
    fn retransmitted_data_is_not_a_probe() {
        let mut t = sent_twice(ACK, 100);
        // Tail loss probe: the last two bytes again.
        assert_eq!(
            t.feed(ms(300), &seg(C, S, C_NEXT + 98, S_NEXT, ACK, 2)),
            Seen::Retransmission
        );
    }

    #[test]
    fn one_byte_retransmission_of_unacknowledged_data_is_not_a_probe() {
        // The resent byte has the seq a garbage-octet probe would have (next − 1), but it
        // is not acknowledged yet.
        let mut t = sent_twice(ACK, 1);
        // Once acknowledged, the same byte sent again is a garbage-octet keepalive.
        t.feed(ms(230), &seg(S, C, S_NEXT, C_NEXT + 1, ACK, 0));
        expect_probe(t.feed(ms(1230), &seg(C, S, C_NEXT, S_NEXT, ACK, 1)));
    }

    #[test]
    fn zero_window_probe_is_not_a_keepalive() {
        let mut t = established();
        // The server closes its window; the client's zero-window probe has seq = SND.UNA − 1.
        assert_eq!(
            t.feed(ms(20), &seg(S, C, S_NEXT, C_NEXT, ACK, 0)),
            Seen::PureAck
        );
        let mut closed = seg(S, C, S_NEXT, C_NEXT, ACK, 0);
        closed.window = 0;
        assert_eq!(t.feed(ms(21), &closed), Seen::PureAck);
        assert_eq!(t.feed(ms(220), &kernel_probe()), Seen::WindowProbe);
        // Its answer (window still 0) is not a keepalive ACK.
        assert_eq!(t.feed(ms(221), &closed), Seen::PureAck);
        // The window opens; the next probe of that shape is a keepalive again.
        assert_eq!(t.feed(ms(300), &probe_ack()), Seen::PureAck);
        expect_probe(t.feed(ms(1300), &kernel_probe()));
    }

    #[test]
    fn duplicate_acks_are_not_probes() {
        let mut t = established();
        for i in 0..3 {
            let s = t.feed(ms(100 + 10 * i), &seg(C, S, C_NEXT, S_NEXT, ACK, 0));
            assert_eq!(s, Seen::PureAck);
        }
        // And from the other side, with no probe pending, neither are they answers.
        assert_eq!(t.feed(ms(200), &probe_ack()), Seen::PureAck);
    }

    #[test]
    fn late_or_mismatched_answers_are_not_keepalive_acks() {
        let mut t = established();
        expect_probe(t.feed(ms(1000), &kernel_probe()));
        // Wrong ACK field: acknowledges less than the prober's next.
        assert_eq!(
            t.feed(ms(1001), &seg(S, C, S_NEXT, C_NEXT - 1, ACK, 0)),
            Seen::PureAck
        );
        // Right numbers, but too late.
        assert_eq!(t.feed(ms(2500), &probe_ack()), Seen::PureAck);
    }

    #[test]
    fn copies_of_one_packet_count_once() {
        let mut t = established();
        expect_probe(t.feed(ms(1000), &kernel_probe()));
        let copy = Duration::from_micros(1_000_050);
        assert_eq!(t.feed(copy, &kernel_probe()), Seen::Copy);
        expect_ack(t.feed(ms(1002), &probe_ack()));
        assert_eq!(t.feed(ms(1003), &probe_ack()), Seen::Copy);
    }

    #[test]
    fn data_restarts_the_interval() {
        let mut t = established();
        expect_probe(t.feed(ms(1000), &kernel_probe()));
        t.feed(ms(1500), &seg(S, C, S_NEXT, C_NEXT, ACK | PSH, 5));
        t.feed(ms(1501), &seg(C, S, C_NEXT, S_NEXT + 5, ACK, 0));
        let p = expect_probe(t.feed(ms(2501), &seg(C, S, C_NEXT - 1, S_NEXT + 5, ACK, 0)));
        assert_eq!(p.interval, None);
    }

    #[test]
    fn sequence_numbers_wrap() {
        let mut t = Tracker::new(4);
        let top = u32::MAX - 4;
        t.feed(ms(0), &seg(C, S, top, 7, ACK | PSH, 10));
        t.feed(ms(1), &seg(S, C, 7, top.wrapping_add(10), ACK, 0));
        let p = expect_probe(t.feed(ms(1000), &seg(C, S, top.wrapping_add(9), 7, ACK, 0)));
        assert_eq!(p.seq, SeqNumber(4));
    }

    #[test]
    fn rst_forgets_and_syn_ack_restarts() {
        let mut t = established();
        assert_eq!(
            t.feed(ms(100), &seg(S, C, S_NEXT, 0, RST, 0)),
            Seen::Control
        );
        assert_eq!(t.connections(), 0);
        // A new connection on the same ports, new ISNs: known from its SYN-ACK on.
        t.feed(ms(200), &seg(C, S, 70_000, 0, SYN, 0));
        t.feed(ms(201), &seg(S, C, 90_000, 70_001, SYN | ACK, 0));
        assert_eq!(
            t.feed(ms(202), &seg(C, S, 70_001, 90_001, ACK, 0)),
            Seen::PureAck
        );
        expect_probe(t.feed(ms(1202), &seg(C, S, 70_000, 90_001, ACK, 0)));
    }

    #[test]
    fn fin_is_data_and_its_retransmission_is_not_a_probe() {
        sent_twice(ACK | FIN, 0);
    }

    #[test]
    fn least_recently_seen_connection_is_evicted() {
        let mut t = Tracker::new(2);
        let a = seg("198.18.0.1:1", S, 1, 1, ACK, 0);
        let b = seg("198.18.0.1:2", S, 1, 1, ACK, 0);
        let c = seg("198.18.0.1:3", S, 1, 1, ACK, 0);
        t.feed(ms(0), &a);
        t.feed(ms(1), &b);
        t.feed(ms(10), &a);
        t.feed(ms(11), &c);
        assert_eq!((t.connections(), t.evicted()), (2, 1));
        // b was evicted: seen again, it starts over; a was kept (its direction is known).
        assert_eq!(t.feed(ms(20), &a), Seen::Unknown);
        assert_eq!(t.feed(ms(21), &b), Seen::Init);
    }
}
