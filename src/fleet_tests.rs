//! The fleet over in-memory fakes: a virtual clock, a fake network that answers like the local
//! stack and the peer would, and a fake connection table. No sockets, no privileges.

use std::cell::Cell;
use std::collections::VecDeque;
use std::io;
use std::rc::Rc;

use super::*;
use crate::engine::{SeqSource, Timing, Verdict};
use crate::seq::SeqNumber;
use crate::sys::raw::refusal_cause;
use crate::wire::{ACK, IpMeta, SYN, Timestamps};

/// The fake clock starts here, so that connections can have been idle for a while at start.
const T0: Duration = Duration::from_secs(1000);
/// The connection's numbers, as the local socket's challenge ACK announces them.
const SND_NXT: SeqNumber = SeqNumber(1000);
const RCV_NXT: SeqNumber = SeqNumber(5000);
const RTT: Duration = Duration::from_millis(20);
/// More turns of the loop than any test here needs: a loop that stops sleeping hits it.
const MAX_TURNS: usize = 10_000;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn flow(i: u16) -> Flow {
    Flow {
        local: SocketAddr::new("198.18.0.1".parse().unwrap(), 40000 + i),
        remote: "198.51.100.2:9000".parse().unwrap(),
    }
}

fn cfg(flow: Flow, time_ms: u64, intvl_ms: u64, probes: u8) -> Config {
    Config {
        flow,
        route: Route::default(),
        timing: Timing {
            time: ms(time_ms),
            intvl: ms(intvl_ms),
            probes,
        },
        source: SeqSource::Local,
        garbage_octet: false,
    }
}

/// How the far end (and the local socket) behave for one connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Peer {
    /// Challenge ACK, then an answer to every probe after one RTT.
    Alive,
    /// Challenge ACK, then silence.
    Silent,
    /// The local socket never sends its challenge ACK.
    NoChallengeAck,
    /// The local host refuses to send probes with this errno.
    Refuses(i32),
    /// Sending a probe fails with an error that is not a local refusal.
    Breaks,
    /// Alive, behind NAT on this host: the answer arrives from this address (the backend
    /// of a DNAT in OUTPUT), as the capture sees it before netfilter undoes the NAT.
    Translated(SocketAddr),
}

#[derive(Clone)]
struct FakeClock(Rc<Cell<Duration>>);

impl Clock for FakeClock {
    fn now(&self) -> Duration {
        self.0.get()
    }
}

struct FakeIo {
    now: Rc<Cell<Duration>>,
    peers: HashMap<Flow, Peer>,
    /// Packets the capture will see: when, bytes, where.
    queue: VecDeque<(Duration, Vec<u8>, Origin)>,
    current: Vec<u8>,
    /// Every send: when, for which connection, its TCP flags.
    sends: Vec<(Duration, Flow, u8)>,
    waits: usize,
    filters: usize,
    /// Answers still to be lost as a full capture queue loses them, and the count lost
    /// since the fleet last asked.
    lose: usize,
    lost: u64,
}

fn bytes(p: &Segment) -> Vec<u8> {
    let mut b = vec![0; p.buffer_len()];
    p.emit(&mut b);
    b
}

fn segment(src: SocketAddr, dst: SocketAddr, seq: SeqNumber, ack: SeqNumber) -> Segment {
    Segment {
        src,
        dst,
        seq,
        ack,
        flags: ACK,
        window: 502,
        ts: None,
        payload_len: 0,
        ip: IpMeta::default(),
    }
}

impl FakeIo {
    fn push(&mut self, at: Duration, p: &Segment, origin: Origin) {
        let i = self.queue.partition_point(|(t, _, _)| *t <= at);
        self.queue.insert(i, (at, bytes(p), origin));
    }
}

impl PacketIo for FakeIo {
    fn send(&mut self, p: &Segment, _route: Route) -> std::result::Result<(), SendError> {
        let now = self.now.get();
        let syn = p.flags & SYN != 0;
        let flow = if syn {
            Flow {
                local: p.dst,
                remote: p.src,
            }
        } else {
            Flow {
                local: p.src,
                remote: p.dst,
            }
        };
        let peer = self.peers.get(&flow).copied().unwrap_or(Peer::Silent);
        if syn {
            self.sends.push((now, flow, p.flags));
            // The injected SYN shows on loopback, then the local socket's challenge ACK
            // leaves through the real interface (RFC 5961 section 4).
            self.push(now, p, Origin::Loopback);
            if peer != Peer::NoChallengeAck {
                let ack = segment(flow.local, flow.remote, SND_NXT, RCV_NXT);
                self.push(now, &ack, Origin::Sent);
            }
            return Ok(());
        }
        match peer {
            Peer::Refuses(errno) => {
                let cause = refusal_cause(errno).expect("a refusal errno");
                return Err(SendError::Refused(
                    cause,
                    io::Error::from_raw_os_error(errno),
                ));
            }
            Peer::Breaks => {
                return Err(SendError::Failed(Error::Runtime(
                    "the NIC caught fire".into(),
                )));
            }
            Peer::Alive | Peer::Silent | Peer::NoChallengeAck => {}
            Peer::Translated(backend) => {
                let mut out = *p;
                out.dst = backend;
                self.push(now, &out, Origin::Sent);
                let answer = segment(backend, flow.local, RCV_NXT, SND_NXT);
                self.push(now + RTT, &answer, Origin::Received);
                self.sends.push((now, flow, p.flags));
                return Ok(());
            }
        }
        // A probe that left shows on the capture as outgoing, as on a real interface: the
        // engine times an answer only from its own probe seen leaving.
        self.push(now, p, Origin::Sent);
        if peer == Peer::Alive && self.lose > 0 {
            self.lose -= 1;
            self.lost += 1;
        } else if peer == Peer::Alive {
            let answer = segment(flow.remote, flow.local, RCV_NXT, SND_NXT);
            self.push(now + RTT, &answer, Origin::Received);
        }
        self.sends.push((now, flow, p.flags));
        Ok(())
    }

    fn next_packet(&mut self) -> Result<Option<(&[u8], Origin)>> {
        match self.queue.front() {
            Some((at, _, _)) if *at <= self.now.get() => {}
            _ => return Ok(None),
        }
        let Some((_, b, origin)) = self.queue.pop_front() else {
            return Ok(None);
        };
        self.current = b;
        Ok(Some((&self.current, origin)))
    }

    fn wait(&mut self, timeout: Duration) -> Result<()> {
        self.waits += 1;
        let now = self.now.get();
        let mut until = now + timeout;
        if let Some((at, _, _)) = self.queue.front() {
            until = until.min((*at).max(now));
        }
        self.now.set(until);
        Ok(())
    }

    fn set_filter(&mut self, _flows: &[Flow]) -> Result<()> {
        self.filters += 1;
        Ok(())
    }

    fn drops(&mut self) -> u64 {
        std::mem::take(&mut self.lost)
    }
}

struct FakeConn {
    /// When the connection last received a segment (the kernel's idle clock).
    rx_at: Duration,
    /// Its socket's inode: another means another socket on the same 4-tuple.
    inode: u32,
    busy: bool,
}

struct FakeTable {
    now: Rc<Cell<Duration>>,
    conns: HashMap<Flow, FakeConn>,
    links: HashMap<Flow, Cause>,
    lookups: usize,
    dumps: usize,
    link_asks: usize,
    /// Passes of the kernel source over every connection.
    reads: usize,
}

impl FakeTable {
    fn view(&self, c: &FakeConn) -> ConnView {
        let idle = self.now.get().saturating_sub(c.rx_at);
        ConnView {
            idle,
            busy: c.busy,
            since_ack: idle,
            rto: ms(200),
            // Bytes received move whenever the connection received something.
            progress: (0, c.rx_at.as_millis() as u64),
            numbers: None,
            inode: c.inode,
        }
    }
}

impl ConnTable for FakeTable {
    fn lookup(&mut self, flow: &Flow, _route: Route) -> Result<Option<ConnView>> {
        self.lookups += 1;
        Ok(self.conns.get(flow).map(|c| self.view(c)))
    }

    fn established(&mut self) -> Result<Vec<(Flow, ConnView)>> {
        self.dumps += 1;
        Ok(self.conns.iter().map(|(f, c)| (*f, self.view(c))).collect())
    }

    fn numbers(&mut self) -> Result<Vec<(Flow, Numbers)>> {
        self.reads += 1;
        let n = Numbers {
            snd_nxt: SND_NXT,
            rcv_nxt: RCV_NXT,
            window: 502,
            ts: Some(Timestamps {
                tsval: 100,
                tsecr: 7,
            }),
            ts_clock: Some(TsClock {
                at: Duration::ZERO,
                usec: false,
            }),
            ip: IpMeta::default(),
        };
        Ok(self.conns.keys().map(|f| (*f, n)).collect())
    }
}

impl LinkState for FakeTable {
    fn egress_cause(&mut self, flow: &Flow, _route: Route) -> Option<Cause> {
        self.link_asks += 1;
        self.links.get(flow).copied()
    }
}

type FakeFleet = Fleet<FakeIo, FakeTable, FakeClock>;

struct Lab {
    fleet: FakeFleet,
    steps: usize,
    /// Every event the fleet returned, in order.
    events: Vec<Event>,
}

impl Lab {
    fn new(expected: usize, rate: u32) -> Lab {
        let now = Rc::new(Cell::new(T0));
        let io = FakeIo {
            now: now.clone(),
            peers: HashMap::new(),
            queue: VecDeque::new(),
            current: Vec::new(),
            sends: Vec::new(),
            waits: 0,
            filters: 0,
            lose: 0,
            lost: 0,
        };
        let table = FakeTable {
            now: now.clone(),
            conns: HashMap::new(),
            links: HashMap::new(),
            lookups: 0,
            dumps: 0,
            link_asks: 0,
            reads: 0,
        };
        Lab {
            fleet: Fleet::new(io, table, FakeClock(now), expected, rate, 42),
            steps: 0,
            events: Vec::new(),
        }
    }

    /// A connection idle for `idle` now, whose peer behaves as `peer`.
    fn conn(&mut self, f: Flow, peer: Peer, idle: Duration) {
        let now = self.fleet.now();
        self.fleet.io.peers.insert(f, peer);
        self.fleet.table.conns.insert(
            f,
            FakeConn {
                rx_at: now - idle,
                busy: false,
                inode: 1,
            },
        );
    }

    /// One connection, probed every second, with data in flight (the kernel's ACK clock
    /// decides, README "Verdicts and timing").
    fn busy_one() -> Lab {
        let mut lab = Lab::new(1, u32::MAX);
        lab.conn(flow(1), Peer::Alive, ms(5000));
        lab.busy(flow(1));
        lab.fleet.add(cfg(flow(1), 0, 1000, 3), None);
        lab
    }

    /// The kernel has data in flight on the connection (added with `conn`).
    fn busy(&mut self, f: Flow) {
        if let Some(c) = self.fleet.table.conns.get_mut(&f) {
            c.busy = true;
        }
    }

    /// Steps until every connection has an outcome or `limit` of virtual time has passed
    /// (or a spinning loop has taken far more turns than any test needs). Returns the
    /// outcomes in the order reached; every event is kept in `events`.
    fn run(&mut self, limit: Duration) -> Vec<(Flow, Outcome)> {
        let end = self.fleet.now() + limit;
        let mut out = Vec::new();
        let mut turns = 0;
        while self.fleet.active() > 0 && self.fleet.now() < end && turns < MAX_TURNS {
            turns += 1;
            self.steps += 1;
            let events = self.fleet.step(Duration::from_secs(1)).expect("step");
            out.extend(events.iter().filter_map(|e| match e {
                Event::Finished { flow, outcome, .. } => Some((*flow, outcome.clone())),
                _ => None,
            }));
            self.events.extend(events);
        }
        out
    }

    fn now(&self) -> Duration {
        self.fleet.now()
    }
}

/// The TSval of every probe sent so far, in order.
fn sent_tsvals(lab: &Lab) -> Vec<u32> {
    lab.events
        .iter()
        .filter_map(|e| match e {
            Event::Sent { probe, .. } => probe.ts.map(|t| t.tsval),
            _ => None,
        })
        .collect()
}

fn verdict(outcomes: &[(Flow, Outcome)], f: Flow) -> Verdict {
    match outcomes.iter().find(|(g, _)| *g == f) {
        Some((_, Outcome::Verdict(v))) => v.clone(),
        other => panic!("{f}: no verdict: {other:?}"),
    }
}

#[test]
fn an_alive_peer_is_alive_after_one_round_trip() {
    let mut lab = Lab::new(1, u32::MAX);
    lab.conn(flow(1), Peer::Alive, ms(5000));
    lab.fleet.add(cfg(flow(1), 0, 1000, 3), None);
    let out = lab.run(Duration::from_secs(10));
    let v = verdict(&out, flow(1));
    assert_eq!(v.kind, VerdictKind::Alive);
    assert_eq!(v.probes_sent, 1);
    assert_eq!(v.rtt, Some(RTT));
    assert_eq!(
        lab.now() - T0,
        RTT,
        "the verdict waits for nothing but the answer"
    );
    assert_eq!(
        lab.fleet.table.link_asks, 0,
        "an answered probe needs no link check"
    );
}

/// Answers lost in kaprobe's own capture queue are not the peer's silence: the connection
/// is probed again from the start, and its verdict is what the fresh probes show; only
/// after MAX_RESTARTS fresh starts does silence stand.
#[test]
fn silence_while_the_capture_lost_packets_is_probed_again_not_dead() {
    let mut lab = Lab::new(1, u32::MAX);
    lab.conn(flow(1), Peer::Alive, ms(5000));
    lab.fleet.io.lose = 3;
    lab.fleet.add(cfg(flow(1), 0, 1000, 3), None);
    let out = lab.run(Duration::from_secs(30));
    let v = verdict(&out, flow(1));
    assert_eq!(v.kind, VerdictKind::Alive, "{out:?}");
    assert_eq!(lab.fleet.io.lose, 0);

    let mut lab = Lab::new(1, u32::MAX);
    lab.conn(flow(2), Peer::Alive, ms(5000));
    lab.fleet.io.lose = 1000;
    lab.fleet.add(cfg(flow(2), 0, 1000, 3), None);
    let out = lab.run(Duration::from_secs(60));
    let v = verdict(&out, flow(2));
    assert_eq!(v.kind, VerdictKind::Dead, "{out:?}");
    let sent = lab.fleet.io.sends.iter().filter(|s| s.2 & SYN == 0).count();
    assert_eq!(
        sent,
        3 * (usize::from(super::MAX_RESTARTS) + 1),
        "three probes per start"
    );
}

#[test]
fn timers_fire_in_deadline_order_at_their_deadline() {
    let mut lab = Lab::new(3, u32::MAX);
    // time = 10 s: the connection idle longest is due first.
    for (i, idle) in [(1, 1000), (2, 5000), (3, 9000)] {
        lab.conn(flow(i), Peer::Alive, ms(idle));
        let view = lab.fleet.table.view(&lab.fleet.table.conns[&flow(i)]);
        lab.fleet.add(cfg(flow(i), 10_000, 1000, 3), Some(view));
    }
    let out = lab.run(Duration::from_secs(30));
    assert_eq!(out.len(), 3);
    let syns: Vec<(Duration, Flow)> = lab
        .fleet
        .io
        .sends
        .iter()
        .filter(|(_, _, flags)| flags & SYN != 0)
        .map(|(t, f, _)| (*t - T0, *f))
        .collect();
    assert_eq!(
        syns,
        vec![
            (ms(1000), flow(3)),
            (ms(5000), flow(2)),
            (ms(9000), flow(1))
        ]
    );
    // The outcomes came in the same order.
    let order: Vec<Flow> = out.iter().map(|(f, _)| *f).collect();
    assert_eq!(order, vec![flow(3), flow(2), flow(1)]);
}

#[test]
fn the_rate_cap_holds_sends_per_second() {
    const RATE: u32 = 10;
    let mut lab = Lab::new(20, RATE);
    for i in 0..20 {
        lab.conn(flow(i), Peer::Alive, ms(5000));
        let view = lab.fleet.table.view(&lab.fleet.table.conns[&flow(i)]);
        lab.fleet.add(cfg(flow(i), 0, 1000, 3), Some(view));
    }
    let out = lab.run(Duration::from_secs(60));
    assert_eq!(out.len(), 20);
    assert!(
        out.iter()
            .all(|(_, o)| matches!(o, Outcome::Verdict(v) if v.kind == VerdictKind::Alive))
    );
    let sends: Vec<Duration> = lab.fleet.io.sends.iter().map(|(t, _, _)| *t).collect();
    assert_eq!(sends.len(), 40, "one SYN and one probe each");
    // In any one-second window: at most the rate plus the burst (a tenth of a second's worth,
    // at least one).
    for (i, &t) in sends.iter().enumerate() {
        let in_window = sends[i..].iter().take_while(|&&u| u < t + ms(1000)).count();
        assert!(
            in_window <= RATE as usize + 1,
            "{in_window} sends in 1 s from {t:?}"
        );
    }
    // And the cap does not starve: 40 sends at 10/s take about 4 s.
    let took = lab.now() - T0;
    assert!(took >= ms(3500) && took <= ms(4500), "took {took:?}");
}

#[test]
fn a_finished_connection_frees_its_slot_for_the_next() {
    let mut lab = Lab::new(2, u32::MAX);
    lab.conn(flow(1), Peer::Alive, ms(5000));
    lab.conn(flow(2), Peer::Alive, ms(5000));
    lab.conn(flow(3), Peer::Alive, ms(5000));
    lab.fleet.add(cfg(flow(1), 0, 1000, 3), None);
    assert_eq!(lab.run(Duration::from_secs(5)).len(), 1);
    assert_eq!(lab.fleet.slots.len(), 1);
    assert_eq!(lab.fleet.free, vec![0]);
    assert_eq!(lab.fleet.active(), 0);

    lab.fleet.add(cfg(flow(2), 0, 1000, 3), None);
    assert_eq!(lab.fleet.slots.len(), 1, "slot 0 reused");
    assert!(lab.fleet.free.is_empty());
    lab.fleet.add(cfg(flow(3), 0, 1000, 3), None);
    assert_eq!(lab.fleet.slots.len(), 2);
    // Adding a connection already probed is a no-op.
    lab.fleet.add(cfg(flow(3), 0, 1000, 3), None);
    assert_eq!(lab.fleet.active(), 2);
    let out = lab.run(Duration::from_secs(5));
    assert_eq!(verdict(&out, flow(2)).kind, VerdictKind::Alive);
    assert_eq!(verdict(&out, flow(3)).kind, VerdictKind::Alive);
    assert_eq!(lab.fleet.free.len(), 2);

    // A removed connection frees its slot too, and reports nothing.
    lab.fleet.add(cfg(flow(1), 0, 1000, 3), None);
    lab.fleet.remove(&flow(1));
    assert_eq!(lab.fleet.active(), 0);
    assert!(lab.run(Duration::from_secs(5)).is_empty());
}

#[test]
fn few_queries_are_exact_lookups_many_are_one_dump() {
    // Few connections: one lookup each.
    let mut lab = Lab::new(3, u32::MAX);
    for i in 0..3 {
        lab.conn(flow(i), Peer::Alive, ms(5000));
        lab.fleet.add(cfg(flow(i), 0, 1000, 3), None);
    }
    lab.run(Duration::from_secs(5));
    assert_eq!((lab.fleet.table.lookups, lab.fleet.table.dumps), (3, 0));

    // Many at once: one dump instead of 40 round trips.
    let mut lab = Lab::new(40, u32::MAX);
    for i in 0..40 {
        lab.conn(flow(i), Peer::Alive, ms(5000));
        lab.fleet.add(cfg(flow(i), 0, 1000, 3), None);
    }
    let out = lab.run(Duration::from_secs(5));
    assert_eq!(out.len(), 40);
    assert_eq!((lab.fleet.table.lookups, lab.fleet.table.dumps), (0, 1));
    assert_eq!(lab.fleet.dump_size, 40);

    // Twenty queries against a table of a thousand: a dump would cost more than lookups.
    let mut lab = Lab::new(1000, u32::MAX);
    for i in 0..1000 {
        lab.conn(flow(i), Peer::Alive, ms(5000));
    }
    for i in 0..20 {
        lab.fleet.add(cfg(flow(i), 0, 1000, 3), None);
    }
    lab.run(Duration::from_secs(5));
    assert_eq!((lab.fleet.table.lookups, lab.fleet.table.dumps), (20, 0));
}

#[test]
fn a_refused_send_is_that_connections_verdict_and_the_fleet_goes_on() {
    for (errno, cause) in [
        (libc::EACCES, Cause::Prohibited),
        (libc::EPERM, Cause::LocalFirewall),
        (libc::ENETUNREACH, Cause::NoRoute),
    ] {
        let mut lab = Lab::new(2, u32::MAX);
        lab.conn(flow(1), Peer::Refuses(errno), ms(5000));
        lab.conn(flow(2), Peer::Alive, ms(5000));
        lab.fleet.add(cfg(flow(1), 0, 1000, 3), None);
        lab.fleet.add(cfg(flow(2), 0, 1000, 3), None);
        let out = lab.run(Duration::from_secs(10));
        let refused = verdict(&out, flow(1));
        assert_eq!(refused.kind, VerdictKind::Unreachable, "errno {errno}");
        assert_eq!(refused.cause, Some(cause), "errno {errno}");
        assert_eq!(refused.icmp, None);
        assert_eq!(refused.rtt, None);
        assert_eq!(crate::exit::ExitStatus::of_verdict(refused.kind).code(), 4);
        assert_eq!(verdict(&out, flow(2)).kind, VerdictKind::Alive);
    }
}

#[test]
fn a_send_failure_that_is_not_a_refusal_ends_the_run() {
    let mut lab = Lab::new(2, u32::MAX);
    lab.conn(flow(1), Peer::Breaks, ms(5000));
    lab.conn(flow(2), Peer::Alive, ms(5000));
    lab.fleet.add(cfg(flow(1), 0, 1000, 3), None);
    lab.fleet.add(cfg(flow(2), 0, 1000, 3), None);
    let mut err = None;
    for _ in 0..100 {
        match lab.fleet.step(Duration::from_secs(1)) {
            Ok(_) => {}
            Err(e) => {
                err = Some(e);
                break;
            }
        }
    }
    let err = err.expect("the failure reaches the caller");
    assert!(err.to_string().contains("caught fire"), "{err}");
    assert_eq!(err.exit_code(), 7);
}

/// Two connections whose peers behave as `peer`, probed at once every `intvl_ms`, the first
/// on a link without carrier: the lab once both have an outcome (or 10 s passed), the
/// outcomes, and the first one's verdict, which must be `unreachable cause=link-down`.
fn beside_a_link_down(peer: Peer, intvl_ms: u64) -> (Lab, Vec<(Flow, Outcome)>, Verdict) {
    let mut lab = Lab::new(2, u32::MAX);
    for f in [flow(1), flow(2)] {
        lab.conn(f, peer, ms(5000));
        lab.fleet.add(cfg(f, 0, intvl_ms, 3), None);
    }
    lab.fleet.table.links.insert(flow(1), Cause::LinkDown);
    let out = lab.run(Duration::from_secs(10));
    let down = verdict(&out, flow(1));
    assert_eq!(down.kind, VerdictKind::Unreachable, "{peer:?}");
    assert_eq!(down.cause, Some(Cause::LinkDown), "{peer:?}");
    (lab, out, down)
}

#[test]
fn silence_on_a_link_without_carrier_is_unreachable_link_down() {
    let (lab, out, down) = beside_a_link_down(Peer::Silent, 500);
    assert_eq!(down.evidence, Evidence::Probe);
    assert_eq!(down.probes_sent, 3);
    assert_eq!(down.rtt, None);
    // Without a local cause, silence stays `dead`.
    let dead = verdict(&out, flow(2));
    assert_eq!(dead.kind, VerdictKind::Dead);
    assert_eq!(dead.cause, None);
    assert_eq!(lab.fleet.table.link_asks, 2);
    // The fleet's own count of probes on the wire: three per connection.
    assert_eq!(lab.fleet.probes_sent(), 6);
}

#[test]
fn no_challenge_ack_is_link_down_when_the_link_is_down_else_learn_failed() {
    let (lab, out, down) = beside_a_link_down(Peer::NoChallengeAck, 1000);
    assert_eq!(down.probes_sent, 0);
    // Injected SYNs are not probes.
    assert_eq!(lab.fleet.probes_sent(), 0);
    // The link is asked after the first unanswered SYN: one injection, one wait.
    let tries = u32::from(crate::engine::LEARN_TRIES);
    assert_eq!(down.elapsed, crate::engine::LEARN_RETRY);
    let syns = lab.fleet.io.sends.iter().filter(|(_, _, fl)| fl & SYN != 0);
    // The second try for the link-down connection is built but never sent: its outcome
    // came first. The other connection tries every time.
    assert_eq!(syns.count(), 1 + tries as usize);
    assert!(matches!(
        out.iter().find(|(f, _)| *f == flow(2)),
        Some((_, Outcome::LearnFailed))
    ));
}

#[test]
fn only_silence_is_explained() {
    let mut lab = Lab::new(1, u32::MAX);
    lab.conn(flow(1), Peer::Alive, ms(5000));
    lab.fleet.add(cfg(flow(1), 0, 1000, 3), None);
    let Some(Some(slot)) = lab.fleet.slots.first() else {
        panic!("no slot");
    };
    let mut table = FakeTable {
        now: Rc::new(Cell::new(T0)),
        conns: HashMap::new(),
        links: HashMap::from([(flow(1), Cause::LinkDown)]),
        lookups: 0,
        dumps: 0,
        link_asks: 0,
        reads: 0,
    };
    let dead = |evidence| Verdict {
        kind: VerdictKind::Dead,
        probes_sent: 0,
        rtt: None,
        elapsed: Duration::ZERO,
        icmp: None,
        cause: None,
        evidence,
        source: SeqSource::Local,
    };
    // The kernel's ACK clock saw the peer stop acknowledging data: not a question of links.
    let kept = Outcome::Verdict(dead(Evidence::KernelAckClock));
    assert_eq!(explain(&mut table, slot, kept.clone(), T0), kept);
    assert_eq!(
        explain(&mut table, slot, Outcome::Closed, T0),
        Outcome::Closed
    );
    assert_eq!(table.link_asks, 0);
    let Outcome::Verdict(v) = explain(
        &mut table,
        slot,
        Outcome::Verdict(dead(Evidence::Probe)),
        T0,
    ) else {
        panic!("not a verdict");
    };
    assert_eq!(
        (v.kind, v.cause),
        (VerdictKind::Unreachable, Some(Cause::LinkDown))
    );
}

#[test]
fn a_busy_connection_is_queried_at_the_interval_without_spinning() {
    let mut lab = Lab::busy_one();
    let out = lab.run(Duration::from_secs(10));
    let took = lab.now() - T0;
    let lookups = lab.fleet.table.lookups;
    // It keeps asking the kernel, once per interval (or until the busy bound ends it) ...
    assert!(lookups >= 2, "{lookups} lookups in {took:?}");
    let per_intvl = (took.as_millis() / 1000) as usize + 2;
    assert!(lookups <= per_intvl, "{lookups} lookups in {took:?}");
    // ... sleeping in between: a handful of turns per interval, not a busy loop.
    assert!(
        lab.steps <= 4 * per_intvl,
        "{} steps in {took:?}",
        lab.steps
    );
    // No probe goes out while data is in flight (README "Verdicts and timing").
    let probes = lab.fleet.io.sends.iter().filter(|(_, _, fl)| fl & SYN == 0);
    assert_eq!(probes.count(), 0);
    // Either still busy at the end of the window, or ended with a verdict.
    assert!(
        out.is_empty() || matches!(out[0].1, Outcome::Verdict(_)),
        "{out:?}"
    );
}

#[test]
fn refilter_reaches_the_capture() {
    let mut lab = Lab::new(1, u32::MAX);
    lab.fleet.refilter(&[flow(1)]).expect("refilter");
    assert_eq!(lab.fleet.io.filters, 1);
}

/// The connection an event is about.
fn flow_of(e: &Event) -> Flow {
    match e {
        Event::Sent { flow, .. } | Event::Note { flow, .. } | Event::Finished { flow, .. } => *flow,
    }
}

/// The events about one connection, in order.
fn events_of(lab: &Lab, f: Flow) -> Vec<&Event> {
    lab.events.iter().filter(|e| flow_of(e) == f).collect()
}

#[test]
fn events_come_in_the_order_things_happened() {
    let mut lab = Lab::new(1, u32::MAX);
    lab.conn(flow(1), Peer::Alive, ms(5000));
    lab.fleet.add(cfg(flow(1), 0, 1000, 3), None);
    // Between the probe and its answer, a segment from the peer seen leaving this host: a
    // forgery, ignored with a note.
    let forged = segment(flow(1).remote, flow(1).local, RCV_NXT, SND_NXT);
    lab.fleet.io.push(T0 + ms(10), &forged, Origin::Sent);
    let out = lab.run(Duration::from_secs(10));
    let probe = segment(flow(1).local, flow(1).remote, SND_NXT - 1, RCV_NXT);
    let Some(Event::Note {
        note: Note::Learned(numbers),
        at: learned_at,
        ..
    }) = lab.events.first()
    else {
        panic!("the numbers are learned first: {:?}", lab.events);
    };
    assert_eq!((numbers.snd_nxt, numbers.rcv_nxt), (SND_NXT, RCV_NXT));
    assert_eq!(*learned_at, T0);
    assert_eq!(
        lab.events[1..],
        [
            Event::Sent {
                flow: flow(1),
                probe,
                index: 1,
                at: T0,
            },
            Event::Note {
                flow: flow(1),
                note: Note::Ignored(
                    "segment whose addresses contradict the direction it was seen in"
                ),
                at: T0 + ms(10),
            },
            Event::Finished {
                flow: flow(1),
                outcome: out[0].1.clone(),
                ignored: 1,
            },
        ]
    );
    assert_eq!(verdict(&out, flow(1)).rtt, Some(RTT));
    // The probe event is what went on the wire, when it went.
    let sent: Vec<(Duration, Flow)> = lab
        .fleet
        .io
        .sends
        .iter()
        .filter(|(_, _, fl)| fl & SYN == 0)
        .map(|(t, f, _)| (*t, *f))
        .collect();
    assert_eq!(sent, [(T0, flow(1))]);
}

#[test]
fn a_turn_with_something_to_report_returns_without_waiting() {
    let mut lab = Lab::busy_one();
    // The kernel says data is in flight: a note, and the next look in a second. The turn
    // hands the note back at once rather than after that second, so that `-v` shows it
    // when it happens.
    let events = lab.fleet.step(Duration::from_secs(5)).expect("step");
    assert_eq!(
        events,
        [Event::Note {
            flow: flow(1),
            note: Note::Busy,
            at: T0
        }]
    );
    assert_eq!((lab.fleet.io.waits, lab.now()), (0, T0));
    // The next turn has nothing to report at first: it waits for that look.
    lab.fleet.step(Duration::from_secs(5)).expect("step");
    assert_eq!((lab.fleet.io.waits, lab.now()), (1, T0 + ms(1000)));
}

#[test]
fn notes_and_probes_carry_their_own_connections_flow() {
    let mut lab = Lab::new(2, u32::MAX);
    // flow(1) has data in flight: notes, no probe; flow(2) is probed.
    lab.conn(flow(1), Peer::Alive, ms(5000));
    lab.busy(flow(1));
    lab.conn(flow(2), Peer::Alive, ms(5000));
    lab.fleet.add(cfg(flow(1), 0, 1000, 3), None);
    lab.fleet.add(cfg(flow(2), 0, 1000, 3), None);
    lab.run(Duration::from_secs(10));
    let busy: Vec<Flow> = lab
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Note {
                flow,
                note: Note::Busy,
                ..
            } => Some(*flow),
            _ => None,
        })
        .collect();
    assert!(!busy.is_empty());
    assert!(busy.iter().all(|f| *f == flow(1)), "{busy:?}");
    for e in &lab.events {
        if let Event::Sent { flow: f, probe, .. } = e {
            assert_eq!((*f, probe.src, probe.dst), (flow(2), f.local, f.remote));
        }
    }
    for f in [flow(1), flow(2)] {
        let events = events_of(&lab, f);
        let finished = events
            .iter()
            .filter(|e| matches!(e, Event::Finished { .. }))
            .count();
        assert_eq!(finished, 1, "{f}: {events:?}");
        assert!(
            matches!(events.last(), Some(Event::Finished { .. })),
            "{f}: nothing after its outcome: {events:?}"
        );
    }
}

#[test]
fn probe_events_count_what_went_on_the_wire_and_outcomes_are_the_verdicts() {
    let (lab, out, down) = beside_a_link_down(Peer::Silent, 500);
    for f in [flow(1), flow(2)] {
        // Three probes 500 ms apart, numbered from 1, then the outcome.
        let sent: Vec<(u8, Duration)> = events_of(&lab, f)
            .into_iter()
            .filter_map(|e| match e {
                Event::Sent { index, at, .. } => Some((*index, *at - T0)),
                _ => None,
            })
            .collect();
        assert_eq!(sent, [(1, ms(0)), (2, ms(500)), (3, ms(1000))], "{f}");
    }
    assert_eq!(lab.fleet.probes_sent(), 6);
    let finished: Vec<(Flow, Outcome, u64)> = lab
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Finished {
                flow,
                outcome,
                ignored,
            } => Some((*flow, outcome.clone(), *ignored)),
            _ => None,
        })
        .collect();
    assert_eq!(finished.len(), 2);
    assert!(finished.contains(&(flow(1), Outcome::Verdict(down), 0)));
    assert!(finished.contains(&(flow(2), Outcome::Verdict(verdict(&out, flow(2))), 0)));
    // A send the host refused is no probe event: only its outcome.
    let mut lab = Lab::new(1, u32::MAX);
    lab.conn(flow(1), Peer::Refuses(libc::EPERM), ms(5000));
    lab.fleet.add(cfg(flow(1), 0, 1000, 3), None);
    lab.run(Duration::from_secs(10));
    assert!(
        !lab.events.iter().any(|e| matches!(e, Event::Sent { .. })),
        "{:?}",
        lab.events
    );
    assert!(matches!(
        lab.events.last(),
        Some(Event::Finished {
            outcome: Outcome::Verdict(Verdict {
                cause: Some(Cause::LocalFirewall),
                ..
            }),
            ..
        })
    ));
}

/// The kernel source: one pass over the kernel's sockets serves every connection queried in
/// the same turn, nothing but the probes goes out, and each probe's TSval is stamped from the
/// moment the pass returned.
#[test]
fn kernel_numbers_are_read_once_per_batch_and_nothing_is_injected() {
    let mut lab = Lab::new(3, u32::MAX);
    for i in 1..=3 {
        lab.conn(flow(i), Peer::Alive, ms(5000));
        let mut c = cfg(flow(i), 0, 1000, 3);
        c.source = SeqSource::Kernel;
        lab.fleet.add(c, None);
    }
    let out = lab.run(Duration::from_secs(10));
    for i in 1..=3 {
        assert_eq!(verdict(&out, flow(i)).kind, VerdictKind::Alive);
        assert_eq!(verdict(&out, flow(i)).source, SeqSource::Kernel);
    }
    assert_eq!(lab.fleet.table.reads, 1, "one pass for the batch");
    assert!(
        lab.fleet
            .io
            .sends
            .iter()
            .all(|(_, _, flags)| flags & SYN == 0),
        "nothing injected: {:?}",
        lab.fleet.io.sends
    );
    assert_eq!(lab.fleet.io.sends.len(), 3);
    let tsvals = sent_tsvals(&lab);
    assert_eq!(tsvals, vec![100, 100, 100]);
}

/// Round after round of the same socket with no byte moved, the kernel source's numbers
/// read once serve every probe; bytes moved, another socket on the 4-tuple, or a connection
/// the caller let go each take a fresh pass.
#[test]
fn known_numbers_serve_later_rounds_until_the_socket_moves() {
    let mut lab = Lab::new(1, u32::MAX);
    lab.conn(flow(1), Peer::Alive, ms(5000));
    let mut c = cfg(flow(1), 0, 1000, 3);
    c.source = SeqSource::Kernel;
    let round = |lab: &mut Lab| {
        lab.fleet.add(c, None);
        let out = lab.run(Duration::from_secs(10));
        assert_eq!(verdict(&out, flow(1)).kind, VerdictKind::Alive, "{out:?}");
    };
    for _ in 0..3 {
        round(&mut lab);
    }
    assert_eq!(lab.fleet.table.reads, 1, "one pass for three rounds");
    let tsvals = sent_tsvals(&lab);
    assert_eq!(tsvals.len(), 3);
    assert!(
        tsvals.windows(2).all(|w| w[1] >= w[0]),
        "the TSval goes on with the clock: {tsvals:?}"
    );

    let now = lab.now();
    if let Some(conn) = lab.fleet.table.conns.get_mut(&flow(1)) {
        conn.rx_at = now;
    }
    round(&mut lab);
    assert_eq!(lab.fleet.table.reads, 2, "bytes moved: read again");
    round(&mut lab);
    assert_eq!(lab.fleet.table.reads, 2);

    if let Some(conn) = lab.fleet.table.conns.get_mut(&flow(1)) {
        conn.inode = 2;
    }
    round(&mut lab);
    assert_eq!(lab.fleet.table.reads, 3, "another socket: read again");

    lab.fleet.remove(&flow(1));
    round(&mut lab);
    assert_eq!(
        lab.fleet.table.reads, 4,
        "let go and found again: read again"
    );
}

/// A flow NAT-ed on this host: its answer arrives from the backend's address, and is the
/// answer all the same once the fleet knows the wire's addresses; without them it is not.
#[test]
fn a_nat_ed_flows_answer_is_matched_on_the_wires_addresses() {
    let backend: SocketAddr = "198.51.100.3:9000".parse().unwrap();
    for translated in [true, false] {
        let mut lab = Lab::new(1, u32::MAX);
        lab.conn(flow(1), Peer::Translated(backend), ms(5000));
        let mut c = cfg(flow(1), 0, 500, 1);
        c.source = SeqSource::Kernel;
        lab.fleet.add(c, None);
        if translated {
            lab.fleet
                .translate(&flow(1), backend, flow(1).local)
                .expect("translate");
        }
        let out = lab.run(Duration::from_secs(10));
        let v = verdict(&out, flow(1));
        let want = if translated {
            VerdictKind::Alive
        } else {
            VerdictKind::Dead
        };
        assert_eq!(v.kind, want, "translated: {translated}");
    }
}
