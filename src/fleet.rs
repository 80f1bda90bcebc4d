//! The I/O loop around many engines at once: one capture socket, one raw socket per family,
//! one netlink socket, a timer heap, and a send-rate cap. `probe`, `sweep` and `watch` all
//! run through it; `probe` is a fleet of one.
//!
//! The fleet prints nothing: each turn returns what happened as [`Event`]s, in the order it
//! happened, and the commands render them through `output` (README "Usage").
//!
//! The loop reaches the kernel only through three narrow traits, `PacketIo` (packets out and
//! in), `ConnTable` with `LinkState` (what the kernel says about connections and the path out)
//! and `Clock`, so that its scheduling, rate cap and error handling run in tests against
//! in-memory fakes, without privileges. `Fleet` with its default parameters is the real one.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use caps::Capability;

use crate::engine::{
    Action, Cause, Config, ConnView, Engine, Evidence, Note, Numbers, Origin, Outcome, PollAt,
    SeqSource, TsClock, VerdictKind,
};
use crate::error::{Error, Result};
use crate::flow::{Flow, Route};
use crate::seq::SeqNumber;
use crate::sys::capture::Capture;
use crate::sys::diag::{Conn, Diag};
use crate::sys::kernel_seq::{self, KernelSeq, SockNumbers};
use crate::sys::link::Links;
use crate::sys::raw::{SendError, Sender};
use crate::sys::{bpf, random_seed, wait_readable};
use crate::wire::{IpMeta, Packet, Segment, Timestamps, decode};

/// Connection queries are answered by exact lookups (one netlink round trip each) while they
/// are fewer than this share of the connections a dump would return, else by one dump: a
/// lookup costs about as much as dumping this many sockets.
const SOCKETS_PER_LOOKUP: usize = 8;
/// Never fewer exact lookups than this before a dump.
const MIN_EXACT_LOOKUPS: usize = 8;
/// Packets read per turn before timers get their say again.
const READ_BATCH: usize = 4096;
/// Fresh starts of one connection because the capture lost packets while it waited: after
/// that many, its silence stands.
const MAX_RESTARTS: u8 = 3;
/// A pass of the kernel source reads every established socket of the namespace, however few
/// connections asked: queries waiting for one are gathered, and the next pass starts no
/// sooner than this many times the last pass's duration after it ended (the passes take at
/// most about a fiftieth of the time)...
const PASS_SPACING: u32 = 50;
/// ...but no connection waits for it longer than this share of its `time`, nor longer than
/// `PASS_WAIT_MAX`: a verdict stays within its bound (`time + probes × intvl` plus the RTO)
/// give or take that second, whatever `time` is.
const PASS_WAIT_SHARE: u32 = 16;
const PASS_WAIT_MAX: Duration = Duration::from_secs(1);

/// Numbers the kernel source read for a connection, and what its socket looked like then.
/// While the same socket (inode) has moved no byte (the counters of `tcp_info`), SND.NXT and
/// RCV.NXT cannot have changed, and the TSval is carried forward by the clock
/// (`Numbers::ts_at`): the next round probes with them and needs no pass. The TSecr they
/// carry may be older than the socket's `ts_recent`; a peer uses TSecr only to time
/// segments that acknowledge new data (RFC 7323, section 4.1), which a probe never does.
/// Nor does it take the window of a probe: SND.NXT−1 is outside its receive window, so the
/// segment is answered and dropped unprocessed (RFC 9293, section 3.10.7.4).
#[derive(Clone, Copy, Debug)]
struct Known {
    inode: u32,
    progress: (u64, u64),
    numbers: Numbers,
}

/// What happened to one connection during a turn of the loop ([`Fleet::step`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A keepalive probe went on the wire (`index`: its number in the round, from 1), at `at`
    /// on the fleet's clock. A send the local host refused is not one: its outcome follows.
    Sent {
        flow: Flow,
        probe: Segment,
        index: u8,
        at: Duration,
    },
    /// Progress the connection's engine reported (shown at `-v`).
    Note {
        flow: Flow,
        note: Note,
        at: Duration,
    },
    /// The connection's outcome, with the answers its engine ignored on the way. The fleet
    /// has let it go: nothing more comes for it unless it is added again.
    Finished {
        flow: Flow,
        outcome: Outcome,
        ignored: u64,
    },
}

/// A turn's events split: each probe sent and note handed to `show` in order, the outcomes
/// (flow, outcome, answers ignored) returned in the order reached.
pub fn split_outcomes(
    events: Vec<Event>,
    mut show: impl FnMut(&Event),
) -> Vec<(Flow, Outcome, u64)> {
    let mut outcomes = Vec::new();
    for e in events {
        match e {
            Event::Finished {
                flow,
                outcome,
                ignored,
            } => outcomes.push((flow, outcome, ignored)),
            progress => show(&progress),
        }
    }
    outcomes
}

/// Sends per second, with a burst of a tenth of a second.
struct RateCap {
    per_sec: f64,
    tokens: f64,
    last: Duration,
}

impl RateCap {
    fn new(per_sec: u32) -> RateCap {
        let per_sec = f64::from(per_sec.max(1));
        RateCap {
            per_sec,
            tokens: (per_sec / 10.0).max(1.0),
            last: Duration::ZERO,
        }
    }

    fn refill(&mut self, now: Duration) {
        let dt = now.saturating_sub(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.per_sec).min((self.per_sec / 10.0).max(1.0));
    }

    /// When the next send may go, if not now.
    fn wait(&self, now: Duration) -> Option<Duration> {
        (self.tokens < 1.0)
            .then(|| now + Duration::from_secs_f64((1.0 - self.tokens) / self.per_sec))
    }
}

/// Packets out and in: the raw senders and the capture socket.
pub trait PacketIo {
    /// Sends `p` the way the connection's own packets go (`route`: mark and bound device).
    fn send(&mut self, p: &Segment, route: Route) -> std::result::Result<(), SendError>;
    /// The next captured packet and where it was seen, or `None` when none is queued.
    fn next_packet(&mut self) -> Result<Option<(&[u8], Origin)>>;
    /// Waits until a packet may be there to read, or `timeout` has passed.
    fn wait(&mut self, timeout: Duration) -> Result<()>;
    /// Captures the packets of these connections from now on.
    fn set_filter(&mut self, flows: &[Flow]) -> Result<()>;
    /// Captured packets lost since the last call because they were not read in time (the
    /// capture queue was full): an answer may have been among them.
    fn drops(&mut self) -> u64 {
        0
    }
}

/// What the kernel says about connections (sock_diag, and the `kernel` sequence source).
pub trait ConnTable {
    /// The established connection on exactly this 4-tuple (and device), if there is one.
    fn lookup(&mut self, flow: &Flow, route: Route) -> Result<Option<ConnView>>;
    /// Every established connection.
    fn established(&mut self) -> Result<Vec<(Flow, ConnView)>>;
    /// Every established connection's numbers, read from the kernel in one pass; each TSval
    /// is the kernel's at the moment the call returns (the caller stamps that moment into
    /// [`TsClock::at`](crate::engine::TsClock)).
    fn numbers(&mut self) -> Result<Vec<(Flow, Numbers)>>;
}

/// A 4-tuple as the kernel's tables compare it: addresses and ports, no IPv6 scope.
type TupleKey = (std::net::IpAddr, u16, std::net::IpAddr, u16);

fn tuple_key(local: SocketAddr, remote: SocketAddr) -> TupleKey {
    (
        local.ip().to_canonical(),
        local.port(),
        remote.ip().to_canonical(),
        remote.port(),
    )
}

/// Why the connection's packets cannot leave this host, asked when probes went unanswered or
/// the numbers could not be learned: `None` when the path out looks fine or cannot be judged.
pub trait LinkState {
    fn egress_cause(&mut self, flow: &Flow, route: Route) -> Option<Cause>;
}

/// Time since a fixed origin, as the engines count it.
pub trait Clock {
    fn now(&self) -> Duration;
}

/// The real packet I/O: one AF_PACKET capture socket and one raw socket per family.
pub struct SysPackets {
    capture: Capture,
    sender: Sender,
}

impl PacketIo for SysPackets {
    fn send(&mut self, p: &Segment, route: Route) -> std::result::Result<(), SendError> {
        self.sender.send(p, route)
    }

    fn next_packet(&mut self) -> Result<Option<(&[u8], Origin)>> {
        self.capture.next_with_origin()
    }

    fn drops(&mut self) -> u64 {
        self.capture.drops().map_or(0, u64::from)
    }

    fn wait(&mut self, timeout: Duration) -> Result<()> {
        wait_readable(self.capture.fd(), Some(timeout))
            .map(|_| ())
            .map_err(|e| Error::Io {
                context: "waiting for packets".into(),
                source: e,
            })
    }

    /// The narrowest filter that fits the kernel's limits, widened step by step while the
    /// kernel refuses one (a longer program than `net.core.optmem_max` holds): a wider
    /// filter lets more through, which the loop's own match drops, and never misses a
    /// packet of the connections. Widening is said once.
    fn set_filter(&mut self, flows: &[Flow]) -> Result<()> {
        let (prog, mut width) = bpf::fitting_filter(flows);
        let mut set = self.capture.set_filter(&prog);
        while set.is_err()
            && let Some(wider) = width.wider()
        {
            width = wider;
            set = self.capture.set_filter(&bpf::filter_of_width(flows, width));
        }
        // Said once per process (a sweep opens a fleet per batch), again only if wider.
        static WIDEST_WARNED: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);
        let rank = width as u8 + 1;
        if width != bpf::Width::Pairs
            && WIDEST_WARNED.fetch_max(rank, std::sync::atomic::Ordering::Relaxed) < rank
        {
            log::warn!(
                "{} connections: the capture filter keeps {} in the kernel, and kaprobe \
                 matches the rest (more packets read, nothing missed)",
                flows.len(),
                match width {
                    bpf::Width::Pairs => "their address pairs",
                    bpf::Width::Locals => "TCP of their local addresses",
                    bpf::Width::Protocols => "all TCP and ICMP",
                }
            );
        }
        set
    }
}

/// What the engine needs to know of a connection sock_diag listed: idle as the kernel's
/// keepalive timer counts it (the later of the last data and the last ACK received), busy
/// while data is unacknowledged or queued, the ACK clock, the RTO and the progress counters
/// that show when learned numbers went stale.
pub fn conn_view(c: &Conn) -> ConnView {
    match &c.info {
        Some(i) => ConnView {
            idle: Duration::from_millis(u64::from(i.last_data_recv.min(i.last_ack_recv))),
            busy: i.unacked > 0 || c.send_queue > 0,
            since_ack: Duration::from_millis(u64::from(i.last_ack_recv)),
            rto: Duration::from_micros(u64::from(i.rto)),
            progress: (i.bytes_acked, i.bytes_received),
            numbers: None,
            inode: c.inode,
        },
        None => ConnView {
            idle: Duration::ZERO,
            busy: c.send_queue > 0,
            since_ack: Duration::ZERO,
            rto: Duration::ZERO,
            progress: (0, 0),
            numbers: None,
            inode: c.inode,
        },
    }
}

/// The real connection table: sock_diag, and route lookups and interface flags for the
/// path out.
pub struct SysTable {
    diag: Diag,
    links: Links,
    /// The `kernel` sequence source, when the fleet's engines use it.
    kernel: Option<KernelSeq>,
}

impl ConnTable for SysTable {
    fn lookup(&mut self, flow: &Flow, route: Route) -> Result<Option<ConnView>> {
        Ok(self
            .diag
            .lookup_on(flow, route.ifindex)?
            .filter(|c| c.established)
            .map(|c| conn_view(&c)))
    }

    fn established(&mut self) -> Result<Vec<(Flow, ConnView)>> {
        Ok(self
            .diag
            .established()?
            .into_iter()
            .map(|c| (c.flow, conn_view(&c)))
            .collect())
    }

    fn numbers(&mut self) -> Result<Vec<(Flow, Numbers)>> {
        let Some(kernel) = self.kernel.as_mut() else {
            return Ok(Vec::new());
        };
        let read = kernel.read().map_err(|e| Error::Io {
            context: "reading sequence numbers from the kernel (eBPF socket iterator)".into(),
            source: e,
        })?;
        let now = kernel_seq::monotonic_ns();
        Ok(read
            .iter()
            .map(|s| {
                let flow = Flow {
                    local: s.local,
                    remote: s.remote,
                };
                (flow, numbers_of(s, now))
            })
            .collect())
    }
}

/// What the engine needs of a socket's numbers as the kernel holds them: the probe's
/// SEQ/ACK, the window the kernel would announce, and the timestamp option it would stamp
/// at `now_ns` (TSecr: the peer's last TSval it accepted, as every segment echoes).
fn numbers_of(s: &SockNumbers, now_ns: u64) -> Numbers {
    let ts = s.tsval_at(now_ns).map(|tsval| Timestamps {
        tsval,
        tsecr: s.ts_recent,
    });
    Numbers {
        snd_nxt: SeqNumber(s.snd_nxt),
        rcv_nxt: SeqNumber(s.rcv_nxt),
        window: s.window(),
        ts,
        ts_clock: ts.map(|_| TsClock {
            at: Duration::ZERO,
            usec: s.usec_ts,
        }),
        ip: IpMeta::default(),
    }
}

impl LinkState for SysTable {
    fn egress_cause(&mut self, flow: &Flow, route: Route) -> Option<Cause> {
        self.links.egress_cause(flow, route)
    }
}

/// The monotonic clock, from the fleet's start.
pub struct MonotonicClock(Instant);

impl Clock for MonotonicClock {
    fn now(&self) -> Duration {
        self.0.elapsed()
    }
}

struct Slot {
    engine: Engine,
    /// How the peer's segments look on the wire when the flow is NAT-ed on this host
    /// (source, destination), as conntrack's other direction says (README "Do no harm").
    wire_incoming: Option<(SocketAddr, SocketAddr)>,
    /// A fresh view from the listing that found the connection: answers the first query.
    prefetched: Option<ConnView>,
    /// The deadline the timer heap holds for this slot; other heap entries are stale.
    scheduled: Option<Duration>,
    /// When its engine sent its first probe.
    first_probe: Option<Duration>,
    /// Fresh starts after the capture lost packets while it waited for an answer.
    restarts: u8,
}

impl Slot {
    /// Puts the engine's next deadline (its slot is `idx`) on the timer heap, unless the heap
    /// has it already.
    fn reschedule(&mut self, idx: usize, timers: &mut BinaryHeap<Reverse<(Duration, usize)>>) {
        let next = match self.engine.next_poll() {
            // Due already: a timer at zero fires on the next turn.
            PollAt::Now => Some(Duration::ZERO),
            PollAt::At(at) => Some(at),
            // The query waits in `queries`, and its answer wakes the engine; a finished
            // engine has left its slot.
            PollAt::AwaitingKernel | PollAt::Done => None,
        };
        if next != self.scheduled
            && let Some(at) = next
        {
            self.scheduled = Some(at);
            timers.push(Reverse((at, idx)));
        }
    }
}

pub struct Fleet<P = SysPackets, T = SysTable, C = MonotonicClock> {
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    by_tuple: HashMap<(SocketAddr, SocketAddr), usize>,
    /// NAT-ed flows by the addresses their segments carry on the wire, both directions.
    by_wire: HashMap<(SocketAddr, SocketAddr), usize>,
    timers: BinaryHeap<Reverse<(Duration, usize)>>,
    ready: Vec<usize>,
    queries: Vec<usize>,
    io: P,
    table: T,
    clock: C,
    rate: RateCap,
    seed: u64,
    /// Sockets the last dump returned (at first: the connections asked for).
    dump_size: usize,
    /// Keepalive probes sent since the fleet opened (refused sends not counted).
    probes_sent: u64,
    /// When the capture last said it lost packets.
    last_drop: Option<Duration>,
    /// When the last pass of the kernel source ended, and how long it took.
    last_pass: Option<(Duration, Duration)>,
    /// The kernel source's numbers of each connection, kept across its rounds (see
    /// `Known`).
    known: HashMap<TupleKey, Known>,
}

impl Fleet {
    /// Opens the sockets for connections like `flows` (the capture filter is set from them);
    /// `kernel` serves engines whose numbers come from the kernel.
    pub fn open(flows: &[Flow], diag: Diag, kernel: Option<KernelSeq>, rate: u32) -> Result<Fleet> {
        let v6 = flows.iter().any(|f| f.is_ipv6());
        let v4 = flows.iter().any(|f| !f.is_ipv6());
        let mut io = SysPackets {
            capture: Capture::open(&bpf::drop_all())?,
            sender: Sender::open(v4, v6)?,
        };
        io.set_filter(flows)?;
        let table = SysTable {
            diag,
            links: Links::new(),
            kernel,
        };
        let clock = MonotonicClock(Instant::now());
        Ok(Fleet::new(
            io,
            table,
            clock,
            flows.len(),
            rate,
            random_seed(),
        ))
    }

    pub fn diag(&mut self) -> &mut Diag {
        &mut self.table.diag
    }

    /// Opens the raw socket of the other address family too, so that connections of either
    /// family can be added after privileges are gone.
    pub fn open_all_families(&mut self) -> Result<()> {
        self.io.sender.open_rest()
    }

    /// Opens the raw socket that sends with `route` (the connection's mark and device) while
    /// the privileges that needs are held; see `Sender::prepare`.
    pub fn prepare_route(&mut self, v6: bool, route: Route) -> Result<()> {
        self.io.sender.prepare(v6, route)
    }

    /// `open_all_families`, then gives up every capability but `keep`: everything the fleet
    /// does afterwards needs no privilege.
    pub fn drop_privileges(
        &mut self,
        keep: &[Capability],
        user: Option<&crate::sys::privilege::User>,
    ) -> Result<()> {
        self.open_all_families()?;
        crate::sys::privilege::drop_privileges(keep, user)
    }

    /// Closes the sockets without waiting for the packet socket's release (see Capture).
    pub fn close(self) {
        self.io.capture.release_detached();
    }
}

impl<P: PacketIo, T: ConnTable + LinkState, C: Clock> Fleet<P, T, C> {
    /// A fleet over these edges. `expected` is how many connections a dump would return at
    /// first; `seed` feeds the engines' random numbers.
    pub fn new(io: P, table: T, clock: C, expected: usize, rate: u32, seed: u64) -> Fleet<P, T, C> {
        Fleet {
            slots: Vec::with_capacity(expected),
            free: Vec::new(),
            by_tuple: HashMap::with_capacity(expected),
            by_wire: HashMap::new(),
            timers: BinaryHeap::with_capacity(expected),
            ready: Vec::new(),
            queries: Vec::new(),
            io,
            table,
            clock,
            rate: RateCap::new(rate),
            seed,
            dump_size: expected,
            probes_sent: 0,
            last_drop: None,
            last_pass: None,
            known: HashMap::new(),
        }
    }

    pub fn now(&self) -> Duration {
        self.clock.now()
    }

    /// Keepalive probes that went on the wire since the fleet opened, every connection
    /// together (the injected SYNs and path checks are not probes).
    pub fn probes_sent(&self) -> u64 {
        self.probes_sent
    }

    /// Connections still being probed.
    pub fn active(&self) -> usize {
        self.by_tuple.len()
    }

    /// Replaces the capture filter, e.g. when connections come and go; the wire's addresses
    /// of NAT-ed connections (see `translate`) are kept in it.
    pub fn refilter(&mut self, flows: &[Flow]) -> Result<()> {
        let mut all = flows.to_vec();
        all.extend(self.by_wire.keys().map(|&(src, dst)| Flow {
            local: dst,
            remote: src,
        }));
        self.io.set_filter(&all)
    }

    /// Starts probing a connection; `view` is what a listing just said about it, if anything.
    pub fn add(&mut self, cfg: Config, view: Option<ConnView>) {
        let flow = cfg.flow;
        if self.by_tuple.contains_key(&(flow.local, flow.remote)) {
            return;
        }
        let now = self.now();
        let slot = Slot {
            engine: Engine::new(cfg, now, next_seed(&mut self.seed)),
            wire_incoming: None,
            prefetched: view,
            scheduled: None,
            first_probe: None,
            restarts: 0,
        };
        let idx = match self.free.pop() {
            Some(i) => {
                self.slots[i] = Some(slot);
                i
            }
            None => {
                self.slots.push(Some(slot));
                self.slots.len() - 1
            }
        };
        self.by_tuple.insert((flow.local, flow.remote), idx);
        self.ready.push(idx);
    }

    /// The connection's segments carry other addresses on the wire (NAT on this host): the
    /// peer's arrive from `src` to `dst`, and ours leave the other way. Packets so addressed
    /// are handed to its engine as the socket sees them, and the capture filter takes them
    /// in.
    pub fn translate(&mut self, flow: &Flow, src: SocketAddr, dst: SocketAddr) -> Result<()> {
        let Some(&idx) = self.by_tuple.get(&(flow.local, flow.remote)) else {
            return Ok(());
        };
        if let Some(Some(slot)) = self.slots.get_mut(idx) {
            slot.wire_incoming = Some((src, dst));
            let new = self.by_wire.insert((src, dst), idx).is_none();
            self.by_wire.insert((dst, src), idx);
            if new {
                let flows: Vec<Flow> = self
                    .by_tuple
                    .keys()
                    .map(|&(local, remote)| Flow { local, remote })
                    .collect();
                self.refilter(&flows)?;
            }
        }
        Ok(())
    }

    /// Stops probing a connection and frees its slot for the next one added (no outcome is
    /// reported for it here).
    pub fn remove(&mut self, flow: &Flow) {
        self.known.remove(&tuple_key(flow.local, flow.remote));
        self.free_slot(flow);
    }

    /// Frees the connection's slot; its known numbers stay for its next round.
    fn free_slot(&mut self, flow: &Flow) {
        if let Some(idx) = self.by_tuple.remove(&(flow.local, flow.remote)) {
            if let Some(Some(Slot {
                wire_incoming: Some((src, dst)),
                ..
            })) = self.slots.get(idx)
            {
                self.by_wire.remove(&(*src, *dst));
                self.by_wire.remove(&(*dst, *src));
            }
            self.slots[idx] = None;
            self.free.push(idx);
        }
    }

    /// One turn: due timers, connection queries, packets. Returns what happened, in the
    /// order it happened: probes sent, notes, and the outcomes reached (each with its
    /// engine's ignored count). Waits at most `max_wait` for something to happen, and not
    /// at all once there is something to return, so that the caller shows it at once.
    /// A connection's own failure (a send the local host refused) is in its outcome; an
    /// error here is the whole fleet's.
    pub fn step(&mut self, max_wait: Duration) -> Result<Vec<Event>> {
        let mut events = Vec::new();
        // What is queued already is read before any deadline is looked at: an answer that
        // came in time is never late because the loop was busy.
        self.read_packets()?;
        self.note_drops();
        self.fire_timers();
        loop {
            self.drive_ready(&mut events)?;
            if self.queries.is_empty() || !self.answer_queries()? {
                break;
            }
        }
        if events.is_empty() {
            let wake = self.wake(max_wait);
            self.io.wait(wake.saturating_sub(self.now()))?;
        }
        self.read_packets()?;
        self.note_drops();
        self.drive_ready(&mut events)?;
        Ok(events)
    }

    /// Asks the capture whether it lost packets; remembers when, and says so once.
    fn note_drops(&mut self) {
        let n = self.io.drops();
        if n == 0 {
            return;
        }
        if self.last_drop.is_none() {
            log::warn!(
                "the capture socket lost {n} packets that kaprobe did not read in time: \
                 connections whose answer could have been among them are probed again, \
                 not called dead"
            );
        }
        self.last_drop = Some(self.now());
    }

    /// Moves the connections whose timer is due to the ready list.
    fn fire_timers(&mut self) {
        let now = self.now();
        while let Some(&Reverse((at, idx))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            if let Some(Some(slot)) = self.slots.get_mut(idx)
                && slot.scheduled == Some(at)
            {
                slot.scheduled = None;
                self.ready.push(idx);
            }
        }
    }

    /// When the loop must look again at the latest: `max_wait` from now, the next timer,
    /// when the rate cap lets a ready connection send, or when queries waiting for the kernel
    /// source get their pass.
    fn wake(&self, max_wait: Duration) -> Duration {
        let now = self.now();
        let mut wake = now + max_wait;
        if let Some(&Reverse((at, _))) = self.timers.peek() {
            wake = wake.min(at);
        }
        if !self.queries.is_empty() {
            wake = wake.min(self.pass_due());
        }
        if !self.ready.is_empty() {
            wake = wake.min(self.rate.wait(now).unwrap_or(now));
        }
        wake
    }

    fn drive_ready(&mut self, events: &mut Vec<Event>) -> Result<()> {
        let mut ready = std::mem::take(&mut self.ready);
        ready.sort_unstable();
        ready.dedup();
        let mut rest = ready.into_iter();
        for idx in rest.by_ref() {
            let now = self.now();
            self.rate.refill(now);
            if self.rate.wait(now).is_some() {
                // Out of sends for now: this one and the rest wait for the next turn.
                self.ready.push(idx);
                break;
            }
            self.drive(idx, events)?;
        }
        self.ready.extend(rest);
        Ok(())
    }

    /// Carries out what the connection's engine asks for until it waits for time, a packet
    /// or the kernel, or has its outcome; then puts its next deadline on the timer heap.
    fn drive(&mut self, idx: usize, events: &mut Vec<Event>) -> Result<()> {
        loop {
            let now = self.clock.now();
            let Some(slot) = self.slots.get_mut(idx).and_then(|s| s.as_mut()) else {
                return Ok(());
            };
            let Some(action) = slot.engine.poll(now) else {
                slot.reschedule(idx, &mut self.timers);
                return Ok(());
            };
            if !self.act(idx, action, now, events)? {
                return Ok(());
            }
        }
    }

    /// Carries out one action of the engine in slot `idx`. False once the engine waits for
    /// the kernel's answer to a query, or has its outcome and has left its slot.
    fn act(
        &mut self,
        idx: usize,
        action: Action,
        now: Duration,
        events: &mut Vec<Event>,
    ) -> Result<bool> {
        let Some(slot) = self.slots.get_mut(idx).and_then(|s| s.as_mut()) else {
            return Ok(false);
        };
        let (flow, route) = (slot.engine.flow(), slot.engine.route());
        match action {
            Action::QueryConnection => {
                // The kernel source's numbers are read for a whole batch of queries at once.
                let batch = slot.engine.source() == SeqSource::Kernel;
                let Some(view) = slot.prefetched.take_if(|_| !batch) else {
                    self.queries.push(idx);
                    return Ok(false);
                };
                slot.engine.on_connection(now, Some(view));
            }
            Action::InjectSyn(p) => self.transmit(idx, p, None, now, events)?,
            Action::Send { probe, index } => self.transmit(idx, probe, Some(index), now, events)?,
            Action::CheckRoute => {
                if let Some(cause) = self.table.egress_cause(&flow, route) {
                    slot.engine.on_local_failure(now, cause);
                }
            }
            Action::Note(note) => events.push(Event::Note {
                flow,
                note,
                at: now,
            }),
            Action::Finish(outcome) => {
                let silent = matches!(&outcome, Outcome::Verdict(v) if v.kind == VerdictKind::Dead);
                if silent
                    && slot.restarts < MAX_RESTARTS
                    && lost_since(self.last_drop, slot.first_probe)
                {
                    // Silence proves nothing when the answers may have been lost here: a
                    // fresh start, with the same settings.
                    let cfg = *slot.engine.config();
                    slot.engine = Engine::new(cfg, now, next_seed(&mut self.seed));
                    slot.first_probe = None;
                    slot.restarts += 1;
                    log::debug!("{flow}: probed again: the capture lost packets meanwhile");
                    return Ok(true);
                }
                // Numbers are kept only for a connection that goes on being probed.
                if !matches!(&outcome, Outcome::Verdict(v)
                    if matches!(v.kind, VerdictKind::Alive | VerdictKind::Dead))
                {
                    self.known.remove(&tuple_key(flow.local, flow.remote));
                }
                let outcome = explain(&mut self.table, slot, outcome, now);
                let ignored = slot.engine.ignored();
                events.push(Event::Finished {
                    flow,
                    outcome,
                    ignored,
                });
                self.free_slot(&flow);
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Sends a packet the engine in slot `idx` built: a probe when it has an `index`, else
    /// an injected SYN or a path check. Each takes a token from the rate cap, refused or not;
    /// a refusal is the connection's outcome (see `refused`), a probe that left an event.
    fn transmit(
        &mut self,
        idx: usize,
        packet: Segment,
        index: Option<u8>,
        now: Duration,
        events: &mut Vec<Event>,
    ) -> Result<()> {
        let Some(slot) = self.slots.get_mut(idx).and_then(|s| s.as_mut()) else {
            return Ok(());
        };
        self.rate.tokens -= 1.0;
        let route = slot.engine.route();
        if !refused(&mut slot.engine, now, self.io.send(&packet, route))?
            && let Some(index) = index
        {
            self.probes_sent += 1;
            slot.first_probe.get_or_insert(now);
            events.push(Event::Sent {
                flow: slot.engine.flow(),
                probe: packet,
                index,
                at: now,
            });
        }
        Ok(())
    }

    /// When the queries waiting for the kernel source may have their pass: at once before
    /// the first pass; else `PASS_SPACING` times the last pass's duration after it ended, but
    /// no later than `PASS_WAIT_SHARE` of the shortest `time` among the engines waiting.
    fn pass_due(&self) -> Duration {
        let Some((end, took)) = self.last_pass else {
            return Duration::ZERO;
        };
        let shortest = self
            .queries
            .iter()
            .filter_map(|&i| self.slots.get(i)?.as_ref())
            .filter(|s| s.engine.source() == SeqSource::Kernel)
            .map(|s| s.engine.timing().time)
            .min()
            .unwrap_or(Duration::ZERO);
        end + (took * PASS_SPACING)
            .min(shortest / PASS_WAIT_SHARE)
            .min(PASS_WAIT_MAX)
    }

    /// Answers the connection queries waiting, but those of the kernel source only when
    /// their pass is due (`pass_due`): they wait, gathered, for it. False if none could be
    /// answered yet.
    fn answer_queries(&mut self) -> Result<bool> {
        let gather = self.now() < self.pass_due();
        let mut queries = std::mem::take(&mut self.queries);
        queries.sort_unstable();
        queries.dedup();
        if gather {
            let (slots, known) = (&self.slots, &self.known);
            // Those whose numbers may be known already go on: most rounds need no pass.
            let (wait, now): (Vec<usize>, Vec<usize>) = queries.into_iter().partition(|&i| {
                slots.get(i).and_then(|s| s.as_ref()).is_some_and(|s| {
                    let f = s.engine.flow();
                    s.engine.source() == SeqSource::Kernel
                        && !known.contains_key(&tuple_key(f.local, f.remote))
                })
            });
            self.queries = wait;
            queries = now;
            if queries.is_empty() {
                return Ok(false);
            }
        }
        let mut views: HashMap<Flow, ConnView> = HashMap::new();
        let flows: Vec<(usize, Flow, Route)> = queries
            .iter()
            .filter_map(|&i| {
                let slot = self.slots.get_mut(i)?.as_mut()?;
                let engine = &slot.engine;
                if let Some(view) = slot.prefetched.take() {
                    views.insert(engine.flow(), view);
                }
                Some((i, engine.flow(), engine.route()))
            })
            .collect();
        let unknown: Vec<&(usize, Flow, Route)> = flows
            .iter()
            .filter(|(_, f, _)| !views.contains_key(f))
            .collect();
        let exact_limit = MIN_EXACT_LOOKUPS.max(self.dump_size / SOCKETS_PER_LOOKUP);
        if unknown.len() <= exact_limit {
            for (_, f, route) in unknown {
                if let Some(view) = self.table.lookup(f, *route)? {
                    views.insert(*f, view);
                }
            }
        } else {
            let asked: HashSet<Flow> = unknown.iter().map(|(_, f, _)| *f).collect();
            let all = self.table.established()?;
            self.dump_size = all.len();
            for (f, view) in all {
                if asked.contains(&f) {
                    views.entry(f).or_insert(view);
                }
            }
        }
        // A pass only for the engines that go on to probe with what it reads, and whose
        // numbers are not known from an earlier round of the same, unmoved socket; those
        // wait for the pass if it is not due yet.
        let mut numbered: HashMap<Flow, ConnView> = HashMap::new();
        let mut deferred: HashSet<usize> = HashSet::new();
        for (idx, flow, _) in &flows {
            let Some(view) = views.get_mut(flow) else {
                continue;
            };
            if !self
                .slots
                .get(*idx)
                .and_then(|s| s.as_ref())
                .is_some_and(|s| s.engine.wants_numbers(view))
            {
                continue;
            }
            let key = tuple_key(flow.local, flow.remote);
            match self.known.get(&key) {
                Some(k) if k.inode != 0 && k.inode == view.inode && k.progress == view.progress => {
                    view.numbers = Some(k.numbers);
                }
                _ => {
                    self.known.remove(&key);
                    if gather {
                        deferred.insert(*idx);
                    } else {
                        numbered.insert(*flow, *view);
                    }
                }
            }
        }
        if !numbered.is_empty() {
            self.attach_numbers(&mut numbered)?;
            for (flow, view) in &numbered {
                if let Some(numbers) = view.numbers {
                    let known = Known {
                        inode: view.inode,
                        progress: view.progress,
                        numbers,
                    };
                    self.known.insert(tuple_key(flow.local, flow.remote), known);
                }
            }
            views.extend(numbered);
        }
        let now = self.now();
        let mut answered = false;
        for (idx, flow, _) in flows {
            if deferred.contains(&idx) {
                continue;
            }
            if let Some(Some(slot)) = self.slots.get_mut(idx) {
                slot.engine.on_connection(now, views.get(&flow).copied());
                self.ready.push(idx);
                answered = true;
            }
        }
        self.queries.extend(deferred);
        Ok(answered)
    }

    /// One pass of the kernel source over every established socket, its numbers given to
    /// the views of the same 4-tuple, stamped with the moment the pass returned. Only the
    /// views asked about are indexed: a pass returns every socket, most of them not due.
    fn attach_numbers(&mut self, views: &mut HashMap<Flow, ConnView>) -> Result<()> {
        let started = self.now();
        let read = self.table.numbers()?;
        let at = self.now();
        self.last_pass = Some((at, at.saturating_sub(started)));
        log::debug!(
            "kernel source: one pass read {} sockets for {} connections in {:?}",
            read.len(),
            views.len(),
            at.saturating_sub(started)
        );
        let wanted: HashSet<TupleKey> =
            views.keys().map(|f| tuple_key(f.local, f.remote)).collect();
        let mut by_tuple: HashMap<TupleKey, Numbers> = HashMap::with_capacity(wanted.len());
        for (f, mut n) in read {
            let key = tuple_key(f.local, f.remote);
            if wanted.contains(&key) {
                if let Some(clock) = n.ts_clock.as_mut() {
                    clock.at = at;
                }
                by_tuple.insert(key, n);
            }
        }
        for (f, view) in views.iter_mut() {
            view.numbers = by_tuple.get(&tuple_key(f.local, f.remote)).copied();
        }
        Ok(())
    }

    fn read_packets(&mut self) -> Result<()> {
        for _ in 0..READ_BATCH {
            let Some((bytes, origin)) = self.io.next_packet()? else {
                break;
            };
            let mut packet = match decode(bytes) {
                Ok(p) => p,
                Err(e) => {
                    log::debug!("skipped a captured packet: {e}");
                    continue;
                }
            };
            if !self.by_wire.is_empty() {
                untranslate(&mut packet, &self.by_wire, &self.slots);
            }
            // Both ends of a connection on this host can be probed at once: a segment is
            // outgoing for one and incoming for the other.
            let (a, b) = match &packet {
                Packet::Tcp(s) => (
                    self.by_tuple.get(&(s.src, s.dst)),
                    self.by_tuple.get(&(s.dst, s.src)),
                ),
                Packet::Icmp(e) => (self.by_tuple.get(&(e.quoted_src, e.quoted_dst)), None),
            };
            let targets = [a.copied(), b.copied()];
            let now = self.clock.now();
            for idx in targets.into_iter().flatten() {
                if let Some(Some(slot)) = self.slots.get_mut(idx) {
                    slot.engine.on_packet_from(now, &packet, origin);
                    if slot.engine.next_poll().is_due(now) {
                        self.ready.push(idx);
                    }
                }
            }
        }
        Ok(())
    }
}

/// The seed of the next engine: one step of a 64-bit LCG (Knuth's MMIX constants), so that
/// every engine's random numbers differ.
fn next_seed(seed: &mut u64) -> u64 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    *seed
}

/// Whether the capture lost packets (last at `last_drop`) after a connection's first probe
/// left: its answer may have been one of them.
fn lost_since(last_drop: Option<Duration>, first_probe: Option<Duration>) -> bool {
    matches!((last_drop, first_probe), (Some(drop), Some(first)) if drop >= first)
}

/// A packet of a NAT-ed flow as its socket sees it: the wire's addresses replaced by the
/// socket's, so that its engine matches it as any other (README "Do no harm": matching on
/// the reply tuple).
fn untranslate(
    packet: &mut Packet,
    by_wire: &HashMap<(SocketAddr, SocketAddr), usize>,
    slots: &[Option<Slot>],
) {
    let key = match packet {
        Packet::Tcp(s) => (s.src, s.dst),
        Packet::Icmp(e) => (e.quoted_src, e.quoted_dst),
    };
    let Some(slot) = by_wire.get(&key).and_then(|&i| slots.get(i)?.as_ref()) else {
        return;
    };
    let Some(incoming) = slot.wire_incoming else {
        return;
    };
    let flow = slot.engine.flow();
    let (src, dst) = if key == incoming {
        (flow.remote, flow.local)
    } else {
        (flow.local, flow.remote)
    };
    match packet {
        Packet::Tcp(s) => {
            s.src = src;
            s.dst = dst;
        }
        Packet::Icmp(e) => {
            e.quoted_src = src;
            e.quoted_dst = dst;
            e.to = flow.local.ip();
        }
    }
}

/// Hands a local refusal to the engine as that connection's outcome; true if refused.
fn refused(
    engine: &mut Engine,
    now: Duration,
    sent: std::result::Result<(), SendError>,
) -> Result<bool> {
    match sent {
        Ok(()) => Ok(false),
        Err(SendError::Refused(cause, e)) => {
            log::debug!("{}: send refused locally: {e}", engine.flow());
            engine.on_local_failure(now, cause);
            Ok(true)
        }
        Err(SendError::Failed(e)) => Err(e),
    }
}

/// Looks for a local cause behind silence (README "Verdicts and timing"): when probes went unanswered
/// or the local socket's challenge ACK never showed, an egress link that is down or has no
/// carrier (or a route that refuses the peer) makes the outcome `unreachable` with that cause.
/// Other outcomes, and silence with a healthy path out, stay as they are.
fn explain<T: LinkState>(table: &mut T, slot: &Slot, outcome: Outcome, now: Duration) -> Outcome {
    let silent = match &outcome {
        Outcome::LearnFailed => true,
        Outcome::Verdict(v) => v.kind == VerdictKind::Dead && v.evidence == Evidence::Probe,
        Outcome::Closed => false,
    };
    if !silent {
        return outcome;
    }
    let flow = slot.engine.flow();
    let Some(cause) = table.egress_cause(&flow, slot.engine.route()) else {
        return outcome;
    };
    log::debug!(
        "{flow}: no answer, and the path out says {}",
        cause.as_str()
    );
    let mut v = match outcome {
        Outcome::Verdict(v) => v,
        _ => slot.engine.refused(now, cause),
    };
    v.kind = VerdictKind::Unreachable;
    v.cause = Some(cause);
    v.rtt = None;
    Outcome::Verdict(v)
}

#[cfg(test)]
#[path = "fleet_tests.rs"]
mod tests;
