//! The keepalive prober as a pure state machine.
//!
//! It never reads a clock or a socket: the caller passes `now` (time since any fixed origin),
//! decoded packets and what the kernel says about the connection, and takes actions out
//! (`poll`), sleeping until the time `next_poll` names or the next packet. The same engine
//! drives `probe`, `sweep` and `watch`.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::time::Duration;

use crate::flow::{Flow, Route};
use crate::seq::SeqNumber;
use crate::wire::{self, IpMeta, Packet, Segment, Timestamps};

/// How long to wait for the local socket's challenge ACK before injecting again. Linux sends at
/// most one per `tcp_invalid_ratelimit` (500 ms) per socket, so a retry sooner would be wasted.
pub const LEARN_RETRY: Duration = Duration::from_millis(600);
/// Injections before giving up on learning the numbers.
pub const LEARN_TRIES: u8 = 3;
/// `tcp_info` counts idle time in milliseconds from jiffies: differences below this are noise.
pub const TRAFFIC_SLACK: Duration = Duration::from_millis(5);
/// Linux answers at most one out-of-window segment per this long per socket.
pub const PEER_RATELIMIT: Duration = Duration::from_millis(500);
/// The kernel's ceiling on a retransmission timeout (`TCP_RTO_MAX`): a larger `tcpi_rto` is
/// no path's, and no wait is stretched beyond it. There is no floor: the kernel's own RTO
/// already has one (`TCP_RTO_MIN`, 200 ms), and a view without `tcp_info` says 0.
pub const RTO_MAX: Duration = Duration::from_secs(120);
/// Two copies of one segment closer than this, with the same timestamp option, are one packet
/// seen on two interfaces (a bridge and its port, a VLAN and its parent device), not two
/// probes. The timestamp tells our probe (the TSval learned from the challenge ACK) from the
/// kernel's own keepalive sent in the same instant (its current TSval).
pub const SAME_PACKET_WINDOW: Duration = Duration::from_millis(2);
/// The shortest span between two looks at a busy connection's ACK clock: `tcp_info` counts
/// in milliseconds from jiffies, so a shorter look could not show an ACK after the first.
pub const BUSY_RECHECK: Duration = TRAFFIC_SLACK.saturating_mul(2);
/// Outgoing segments of the connection remembered to tell our probes' copies from someone
/// else's identical probe: a few kernel keepalives and retransmissions per probe round. When
/// more pass, the oldest go, and an answer then has no RTT rather than a wrong one.
const MAX_COPIES: usize = 16;
/// The window advertised by probes whose numbers are not the local kernel's (`peer` elicit
/// probes, the path check): any value is as good, the peer only answers the sequence number.
const ELICIT_WINDOW: u16 = 1024;
/// The window of the SYN injected into the local stack: what Linux itself puts in a SYN (44
/// segments of 1460 bytes), so the SYN looks like any client's. The local socket answers an
/// in-state SYN with a challenge ACK whatever the window (RFC 5961, 4.2).
const SYN_WINDOW: u16 = 64240;
/// The window of probes whose numbers were learned from the peer's segments (`sniff`), where
/// the local kernel's own window is unknown: what Linux advertises on an idle connection with
/// default buffers and window scale 7 (64240 bytes >> 7). The peer does not check it.
const SNIFF_WINDOW: u16 = 502;

/// Where the capture saw a packet. Addresses alone cannot tell direction: a forger can claim
/// the local address, and a segment "from" it must not teach the engine the numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Leaving this host through a real interface.
    Sent,
    /// Arriving from a real interface.
    Received,
    /// On loopback, where both ends are local: only the addresses tell.
    Loopback,
}

/// The keepalive knobs, named after the sysctls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// Idle time before the first probe.
    pub time: Duration,
    /// Time between unanswered probes, and the wait after the last one.
    pub intvl: Duration,
    /// Unanswered probes before `dead`.
    pub probes: u8,
}

impl Timing {
    /// A warning for an interval shorter than the peer's rate limit, whatever `probes` is:
    /// such probes are mostly unanswered, and each still waits for the connection's RTO.
    pub fn warning(&self) -> Option<String> {
        (self.intvl < PEER_RATELIMIT).then(|| {
            format!(
                "--intvl {} is below 500ms: the peer answers at most one probe per \
                 net.ipv4.tcp_invalid_ratelimit (500ms by default), and no probe is judged \
                 unanswered before the connection's RTO",
                humantime::format_duration(self.intvl)
            )
        })
    }
}

/// How the connection's sequence numbers are learned (README "How it works").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeqSource {
    /// A SYN injected into the local stack makes the local socket send a challenge ACK.
    Local,
    /// Out-of-window probes with a random ACK nonce; the peer's answer tells the numbers.
    Peer,
    /// Wait for a segment of the connection on the wire.
    Sniff,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    pub flow: Flow,
    /// Mark and bound device of the connection's socket: the I/O loop sends with them.
    pub route: Route,
    pub timing: Timing,
    pub source: SeqSource,
    pub garbage_octet: bool,
}

/// What the kernel says about the connection (sock_diag and `tcp_info`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnView {
    /// Since the last segment received, as the kernel's keepalive counts it.
    pub idle: Duration,
    /// Unacknowledged data in flight or a non-empty send queue.
    pub busy: bool,
    /// Since the last ACK received (`tcpi_last_ack_recv`): the kernel's own ACK clock, which
    /// keeps ticking for a busy connection (answers to zero-window probes included).
    pub since_ack: Duration,
    /// The connection's retransmission timeout (`tcpi_rto`): no probe is counted unanswered
    /// before it has passed, and a busy connection's ACK clock is given this long on top of
    /// `probes × intvl`. It must cover the kernel's own next retransmission or zero-window
    /// probe: on the kernel the lab runs, `tcpi_rto` grows with their backoff (26.6 s seen
    /// with `backoff:7` on a reader stuck for 45 s); where it does not, the time until the
    /// kernel's pending timer fires belongs in here too.
    pub rto: Duration,
    /// Bytes acked and bytes received: when they move, learned numbers are stale.
    pub progress: (u64, u64),
}

/// The connection's numbers as the local kernel announced them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Numbers {
    pub snd_nxt: SeqNumber,
    pub rcv_nxt: SeqNumber,
    pub window: u16,
    pub ts: Option<Timestamps>,
    pub ip: IpMeta,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VerdictKind {
    Alive,
    Reset,
    Unreachable,
    Dead,
}

impl VerdictKind {
    pub fn as_str(self) -> &'static str {
        match self {
            VerdictKind::Alive => "alive",
            VerdictKind::Reset => "reset",
            VerdictKind::Unreachable => "unreachable",
            VerdictKind::Dead => "dead",
        }
    }
}

/// A local reason a probe could not leave (README "Verdicts and timing"): `unreachable` with this cause.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Cause {
    /// No route to the peer (ENETUNREACH, EHOSTUNREACH from an `unreachable` route).
    NoRoute,
    /// A `prohibit` route (EACCES).
    Prohibited,
    /// A local netfilter rule dropped the probe (EPERM).
    LocalFirewall,
    /// The egress interface is down or has no carrier.
    LinkDown,
}

impl Cause {
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::NoRoute => "no-route",
            Cause::Prohibited => "prohibited",
            Cause::LocalFirewall => "local-firewall",
            Cause::LinkDown => "link-down",
        }
    }
}

/// What decided a verdict (README "Verdicts and timing"; JSON `evidence`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Evidence {
    /// An answer to a probe, or its absence.
    Probe,
    /// A segment the local kernel accepted while we probed.
    Traffic,
    /// Data in flight: the kernel's own ACK clock (`tcpi_last_ack_recv`).
    KernelAckClock,
}

impl Evidence {
    pub fn as_str(self) -> &'static str {
        match self {
            Evidence::Probe => "probe",
            Evidence::Traffic => "traffic",
            Evidence::KernelAckClock => "kernel-ack-clock",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IcmpInfo {
    pub icmp_type: u8,
    pub code: u8,
    pub from: IpAddr,
    pub name: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub kind: VerdictKind,
    pub probes_sent: u8,
    /// From the last probe sent to the answer.
    pub rtt: Option<Duration>,
    /// From the engine's start to the verdict.
    pub elapsed: Duration,
    pub icmp: Option<IcmpInfo>,
    /// For `unreachable` without an ICMP error: the local cause.
    pub cause: Option<Cause>,
    pub evidence: Evidence,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Verdict(Verdict),
    /// The connection is no longer established.
    Closed,
    /// The sequence numbers could not be learned.
    LearnFailed,
}

/// Things worth a line at `-v`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Note {
    Learned(Numbers),
    Waiting {
        idle: Duration,
        until: Duration,
    },
    /// Data in flight: the kernel's ACK clock decides (README "Verdicts and timing").
    Busy,
    /// The kernel received a segment of the connection while we were probing it.
    Traffic {
        idle: Duration,
    },
    /// An answer that did not prove it saw a probe: a forgery or a stale segment.
    Ignored(&'static str),
    /// A genuine answer that may answer another identical probe (the kernel's own keepalive,
    /// an earlier probe of ours): `alive` stands, the RTT is not reported. Says why.
    Borrowed(&'static str),
    /// The injected SYN got no challenge ACK within `LEARN_RETRY`: the local socket answers at
    /// most one per `tcp_invalid_ratelimit`, so kaprobe waited and injects again (try `next`).
    LearnRetry {
        next: u8,
    },
}

/// When [`Engine::poll`] next has something to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PollAt {
    /// Something is due already.
    Now,
    /// Nothing before this instant (packets may still come).
    At(Duration),
    /// Waiting on the caller's `on_connection`.
    AwaitingKernel,
    /// The outcome has been handed out.
    Done,
}

impl PollAt {
    /// Whether [`Engine::poll`] at `now` has something to do.
    pub fn is_due(self, now: Duration) -> bool {
        match self {
            PollAt::Now => true,
            PollAt::At(at) => at <= now,
            PollAt::AwaitingKernel | PollAt::Done => false,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Ask the kernel about the connection, then call `on_connection`.
    QueryConnection,
    /// Send this SYN into the local stack (spoofed from the peer; it never leaves the host).
    InjectSyn(Segment),
    /// Send this probe toward the peer.
    Send {
        probe: Segment,
        index: u8,
    },
    /// Ask the local host, without sending anything, whether its route or link toward the peer
    /// refuses the connection's packets (no route, `prohibit`, no carrier): the first injected
    /// SYN got no challenge ACK, and the socket's own ACK may have had nowhere to go. A cause
    /// comes back through `on_local_failure`.
    CheckRoute,
    /// Send this out-of-window ACK toward the peer only to learn whether the local host
    /// refuses it (a firewall OUTPUT rule): every injected SYN went unanswered, so the
    /// socket's own challenge ACKs may have been dropped on the way out. Its answer, or
    /// silence, proves nothing (stateful firewalls drop it), so a refusal reported through
    /// `on_local_failure` is the only thing it can change.
    CheckPath(Segment),
    Note(Note),
    Finish(Outcome),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Waiting {
        at: Duration,
    },
    Checking,
    Learning {
        syn: Segment,
        syn_seen: bool,
        inject_pending: bool,
        deadline: Duration,
        tries: u8,
    },
    Sniffing {
        deadline: Duration,
    },
    SendNow,
    Awaiting {
        until: Duration,
    },
    /// The first injected SYN got no challenge ACK: `CheckRoute`, then learn again (try
    /// `next`).
    RouteCheck {
        next: u8,
    },
    /// No injected SYN got a challenge ACK: one `CheckPath` probe, then give up.
    PathCheck,
    PathChecked,
    Done,
}

pub struct Engine {
    cfg: Config,
    start: Duration,
    phase: Phase,
    numbers: Option<Numbers>,
    progress_at_learn: Option<(u64, u64)>,
    last_progress: (u64, u64),
    stale: bool,
    probes_sent: u8,
    last_probe_at: Option<Duration>,
    first_probe_at: Option<Duration>,
    /// (seq, ack, when) of every probe sent: to match ICMP quotes and RST numbers, and to
    /// tell our own probes from the local kernel's segments on the capture.
    sent: Vec<(SeqNumber, SeqNumber, Duration)>,
    /// (seq, ack, when) of outgoing segments of the connection seen on the capture, ours
    /// included, double appearances merged (at most `MAX_COPIES`, newest last).
    copies: VecDeque<(SeqNumber, SeqNumber, Option<u32>, Duration)>,
    /// The connection's RTO as last seen, capped at `RTO_MAX`.
    rto: Duration,
    /// When the connection was first seen busy in the current busy spell.
    busy_since: Option<Duration>,
    notes: VecDeque<Note>,
    pending_finish: Option<Outcome>,
    ignored: u64,
    rng: u64,
}

impl Engine {
    /// `now` is the current time; `seed` feeds the random SYN sequence numbers and nonces.
    pub fn new(cfg: Config, now: Duration, seed: u64) -> Engine {
        Engine {
            cfg,
            start: now,
            phase: Phase::Waiting { at: now },
            numbers: None,
            progress_at_learn: None,
            last_progress: (0, 0),
            stale: false,
            probes_sent: 0,
            last_probe_at: None,
            first_probe_at: None,
            sent: Vec::new(),
            copies: VecDeque::new(),
            rto: Duration::ZERO,
            busy_since: None,
            notes: VecDeque::new(),
            pending_finish: None,
            ignored: 0,
            rng: seed | 1,
        }
    }

    pub fn flow(&self) -> Flow {
        self.cfg.flow
    }

    pub fn route(&self) -> Route {
        self.cfg.route
    }

    pub fn probes_sent(&self) -> u8 {
        self.probes_sent
    }

    /// Answers dropped because they did not prove they saw a probe.
    pub fn ignored(&self) -> u64 {
        self.ignored
    }

    pub fn numbers(&self) -> Option<Numbers> {
        self.numbers
    }

    fn random(&mut self) -> u32 {
        // xorshift64*: enough to make sequence numbers and nonces unguessable to a blind
        // forger when seeded from the OS; deterministic in tests.
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) as u32
    }

    /// When `poll` next has something to do.
    pub fn next_poll(&self) -> PollAt {
        if !self.notes.is_empty() || self.pending_finish.is_some() {
            return PollAt::Now;
        }
        match self.phase {
            Phase::Waiting { at } => PollAt::At(at),
            Phase::Learning {
                inject_pending: true,
                ..
            }
            | Phase::SendNow
            | Phase::RouteCheck { .. }
            | Phase::PathCheck
            | Phase::PathChecked => PollAt::Now,
            Phase::Learning { deadline, .. } | Phase::Sniffing { deadline } => PollAt::At(deadline),
            Phase::Awaiting { until } => PollAt::At(until),
            Phase::Checking => PollAt::AwaitingKernel,
            Phase::Done => PollAt::Done,
        }
    }

    /// The next action due at `now`, if any. Call until it returns `None`.
    pub fn poll(&mut self, now: Duration) -> Option<Action> {
        if let Some(note) = self.notes.pop_front() {
            return Some(Action::Note(note));
        }
        if let Some(outcome) = self.pending_finish.take() {
            return Some(Action::Finish(outcome));
        }
        match self.phase {
            Phase::Done | Phase::Checking => None,
            Phase::Waiting { at } if now >= at => {
                self.phase = Phase::Checking;
                Some(Action::QueryConnection)
            }
            Phase::Waiting { .. } => None,
            Phase::Learning {
                syn,
                inject_pending: true,
                syn_seen,
                deadline,
                tries,
            } => {
                self.phase = Phase::Learning {
                    syn,
                    inject_pending: false,
                    syn_seen,
                    deadline,
                    tries,
                };
                Some(Action::InjectSyn(syn))
            }
            Phase::Learning {
                deadline, tries, ..
            } if now >= deadline => {
                if tries >= LEARN_TRIES {
                    self.phase = Phase::PathCheck;
                    return self.poll(now);
                }
                self.notes.push_back(Note::LearnRetry { next: tries + 1 });
                if tries == 1 {
                    // Ask the local host at once whether its route or link refuses the way
                    // toward the peer, rather than after every retry.
                    self.phase = Phase::RouteCheck { next: tries + 1 };
                    return self.poll(now);
                }
                self.start_learning(now, tries + 1);
                self.poll(now)
            }
            Phase::Learning { .. } => None,
            Phase::Sniffing { deadline } if now >= deadline => {
                Some(self.finish(Outcome::LearnFailed))
            }
            Phase::Sniffing { .. } => None,
            Phase::RouteCheck { next } => {
                self.start_learning(now, next);
                Some(Action::CheckRoute)
            }
            Phase::PathCheck => {
                self.phase = Phase::PathChecked;
                Some(Action::CheckPath(self.out_of_window_probe()))
            }
            Phase::PathChecked => Some(self.finish(Outcome::LearnFailed)),
            Phase::SendNow => {
                let probe = self.build_probe();
                self.probes_sent = self.probes_sent.saturating_add(1);
                self.sent.push((probe.seq, probe.ack, now));
                self.last_probe_at = Some(now);
                self.first_probe_at.get_or_insert(now);
                let t = self.cfg.timing;
                // Probes follow each other every intvl; the last one is judged unanswered only
                // once the connection's RTO has passed since it left (README "Verdicts and
                // timing"), so a dead peer is declared within time + probes × intvl + RTO.
                let wait = if self.probes_sent >= t.probes {
                    t.intvl.max(self.rto)
                } else {
                    t.intvl
                };
                self.phase = Phase::Awaiting { until: now + wait };
                Some(Action::Send {
                    probe,
                    index: self.probes_sent,
                })
            }
            Phase::Awaiting { until } if now >= until => {
                // Also after the last probe: the kernel may have accepted a segment since.
                self.phase = Phase::Checking;
                Some(Action::QueryConnection)
            }
            Phase::Awaiting { .. } => None,
        }
    }

    /// The kernel's answer to `QueryConnection`: `None` when the connection is no longer
    /// established.
    pub fn on_connection(&mut self, now: Duration, view: Option<ConnView>) {
        if self.phase != Phase::Checking {
            return;
        }
        let Some(view) = view else {
            self.phase = Phase::Done;
            self.pending_finish = Some(Outcome::Closed);
            return;
        };
        self.last_progress = view.progress;
        self.rto = view.rto.min(RTO_MAX);
        let t = self.cfg.timing;
        let elapsed = now.saturating_sub(self.start);
        if self.probes_sent == 0 && view.idle < t.time {
            // Waited `time` already, and the connection is not idle that long because the
            // kernel kept receiving its segments after we started: the peer is evidently
            // there (README "Verdicts and timing": the wait for idle is bounded too).
            if elapsed >= t.time && view.idle + TRAFFIC_SLACK < elapsed {
                self.notes.push_back(Note::Traffic { idle: view.idle });
                let v = self.untimed(now, VerdictKind::Alive, Evidence::Traffic);
                self.conclude(v);
                return;
            }
            let mut until = now + (t.time - view.idle);
            let bound = self.start + t.time;
            if bound > now {
                until = until.min(bound);
            }
            self.phase = Phase::Waiting { at: until };
            self.notes.push_back(Note::Waiting {
                idle: view.idle,
                until,
            });
            return;
        }
        // The kernel accepted a segment after our first probe (its idle clock restarted): the
        // peer is there, as the kernel's own keepalive would conclude. Forged segments with
        // wrong numbers never reach that clock.
        if let Some(first) = self.first_probe_at
            && view.idle + TRAFFIC_SLACK < now.saturating_sub(first)
        {
            self.notes.push_back(Note::Traffic { idle: view.idle });
            let v = self.untimed(now, VerdictKind::Alive, Evidence::Traffic);
            self.conclude(v);
            return;
        }
        if self.probes_sent >= t.probes {
            // Never before the last probe's RTO has passed, even if the RTO grew since it
            // left (README "Verdicts and timing").
            if let Some(last) = self.last_probe_at
                && now < last + self.rto
            {
                self.phase = Phase::Awaiting {
                    until: last + self.rto,
                };
                return;
            }
            let v = self.verdict(now, VerdictKind::Dead, None);
            self.conclude(v);
            return;
        }
        if view.busy {
            self.judge_busy(now, &view);
            return;
        }
        self.busy_since = None;
        let moved = self.progress_at_learn.is_some_and(|p| p != view.progress);
        if self.cfg.source != SeqSource::Peer && (self.numbers.is_none() || moved || self.stale) {
            self.stale = false;
            match self.cfg.source {
                SeqSource::Sniff => {
                    self.phase = Phase::Sniffing {
                        deadline: now + t.intvl * u32::from(t.probes),
                    };
                }
                _ => self.start_learning(now, 1),
            }
        } else {
            self.phase = Phase::SendNow;
        }
    }

    /// Data in flight: no probe (its numbers would be stale and an in-window probe is not
    /// answered), the kernel's own ACK clock decides (README "Verdicts and timing"). An ACK
    /// after the busy spell began, answers to zero-window probes included, means `alive`; no
    /// ACK for `probes × intvl` plus the RTO means `dead`.
    fn judge_busy(&mut self, now: Duration, view: &ConnView) {
        let t = self.cfg.timing;
        let since = *self.busy_since.get_or_insert(now);
        let watched = now.saturating_sub(since);
        if view.since_ack + TRAFFIC_SLACK < watched {
            let v = self.untimed(now, VerdictKind::Alive, Evidence::KernelAckClock);
            self.conclude(v);
            return;
        }
        let window = (t.intvl.saturating_mul(u32::from(t.probes)) + self.rto).max(BUSY_RECHECK);
        if watched >= window {
            let v = self.untimed(now, VerdictKind::Dead, Evidence::KernelAckClock);
            self.conclude(v);
            return;
        }
        let next = (now + t.intvl.max(BUSY_RECHECK)).min(since + window);
        self.phase = Phase::Waiting { at: next };
        self.notes.push_back(Note::Busy);
    }

    /// A verdict not decided by an answer to a probe: it has no RTT.
    fn untimed(&self, now: Duration, kind: VerdictKind, evidence: Evidence) -> Verdict {
        let mut v = self.verdict(now, kind, None);
        v.rtt = None;
        v.evidence = evidence;
        v
    }

    fn start_learning(&mut self, now: Duration, tries: u8) {
        let flow = self.cfg.flow;
        let seq = SeqNumber(self.random());
        let syn = Segment {
            window: SYN_WINDOW,
            ..Segment::bare(flow.remote, flow.local, seq, SeqNumber(0), wire::SYN)
        };
        self.phase = Phase::Learning {
            syn,
            syn_seen: false,
            inject_pending: true,
            deadline: now + LEARN_RETRY,
            tries,
        };
    }

    /// An ACK toward the peer with a random sequence number and ACK nonce: out of window,
    /// so the peer answers with its own numbers (RFC 9293, 3.10.7.4), and the local kernel's
    /// numbers are not needed.
    fn out_of_window_probe(&mut self) -> Segment {
        let flow = self.cfg.flow;
        let (seq, ack) = (SeqNumber(self.random()), SeqNumber(self.random()));
        Segment {
            window: ELICIT_WINDOW,
            ..Segment::bare(flow.local, flow.remote, seq, ack, wire::ACK)
        }
    }

    fn build_probe(&mut self) -> Segment {
        let flow = self.cfg.flow;
        match (self.cfg.source, self.numbers) {
            (SeqSource::Peer, _) | (_, None) => self.out_of_window_probe(),
            (_, Some(n)) => Segment {
                src: flow.local,
                dst: flow.remote,
                seq: n.snd_nxt - 1,
                ack: n.rcv_nxt,
                flags: wire::ACK,
                window: n.window,
                ts: n.ts,
                payload_len: usize::from(self.cfg.garbage_octet),
                ip: n.ip,
            },
        }
    }

    fn verdict(&self, now: Duration, kind: VerdictKind, icmp: Option<IcmpInfo>) -> Verdict {
        Verdict {
            kind,
            probes_sent: self.probes_sent,
            rtt: match kind {
                VerdictKind::Dead => None,
                _ => self.last_probe_at.map(|t| now.saturating_sub(t)),
            },
            elapsed: now.saturating_sub(self.start),
            icmp,
            cause: None,
            evidence: Evidence::Probe,
        }
    }

    fn finish(&mut self, outcome: Outcome) -> Action {
        self.phase = Phase::Done;
        Action::Finish(outcome)
    }

    fn ignore(&mut self, why: &'static str) {
        self.ignored += 1;
        self.notes.push_back(Note::Ignored(why));
    }

    /// A decoded packet and where the capture saw it.
    pub fn on_packet_from(&mut self, now: Duration, packet: &Packet, origin: Origin) {
        if self.phase == Phase::Done {
            return;
        }
        match packet {
            Packet::Tcp(seg) => self.on_segment(now, seg, origin),
            Packet::Icmp(err) => {
                let flow = self.cfg.flow;
                if origin == Origin::Sent {
                    return;
                }
                if err.to != flow.local.ip()
                    || err.quoted_src != flow.local
                    || err.quoted_dst != flow.remote
                {
                    return;
                }
                if !self.sent.iter().any(|&(seq, _, _)| seq == err.quoted_seq) {
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
        }
    }

    /// The local host refused to send the last action's packet (README "Verdicts and timing"): the
    /// connection is `unreachable` for this local cause.
    pub fn on_local_failure(&mut self, now: Duration, cause: Cause) {
        if self.phase == Phase::Done {
            return;
        }
        let mut v = self.verdict(now, VerdictKind::Unreachable, None);
        v.cause = Some(cause);
        v.rtt = None;
        self.conclude(v);
    }

    fn conclude(&mut self, v: Verdict) {
        self.phase = Phase::Done;
        self.pending_finish = Some(Outcome::Verdict(v));
    }

    fn on_segment(&mut self, now: Duration, seg: &Segment, origin: Origin) {
        let flow = self.cfg.flow;
        let outgoing = seg.src == flow.local && seg.dst == flow.remote;
        let incoming = seg.src == flow.remote && seg.dst == flow.local;
        if !outgoing && !incoming {
            return;
        }
        if (outgoing && origin == Origin::Received) || (incoming && origin == Origin::Sent) {
            // A segment from the network claiming the local address (or the reverse):
            // a forgery, and never a source of numbers.
            self.ignore("segment whose addresses contradict the direction it was seen in");
            return;
        }
        if incoming && seg.has(wire::SYN) {
            // Our injected SYN, seen on loopback: the challenge ACK comes after it.
            if let Phase::Learning { syn, syn_seen, .. } = &mut self.phase
                && seg.seq == syn.seq
                && !seg.has(wire::ACK)
            {
                *syn_seen = true;
            }
            return;
        }
        let plain = !seg.has(wire::SYN) && !seg.has(wire::RST) && seg.has(wire::ACK);
        if outgoing {
            self.on_outgoing(now, seg, plain);
            return;
        }
        // Incoming, from the peer's side of the 4-tuple.
        if let Phase::Sniffing { .. } = self.phase {
            if plain {
                self.sniffed_from_peer(seg);
            }
            return;
        }
        if seg.has(wire::RST) {
            self.on_reset(now, seg);
            return;
        }
        if !plain || self.probes_sent == 0 {
            return;
        }
        self.on_answer(now, seg);
    }

    /// A segment the local stack sent on the connection (`plain`: a pure ACK, possibly with
    /// data or FIN): a copy of a probe, or the numbers to learn (the challenge ACK after our
    /// SYN, or any segment when sniffing). Our own probes never teach numbers.
    fn on_outgoing(&mut self, now: Duration, seg: &Segment, plain: bool) {
        let ours = self
            .sent
            .iter()
            .any(|&(s, a, _)| s == seg.seq && a == seg.ack);
        if plain {
            self.saw_copy(now, seg.seq, seg.ack, seg.ts.map(|t| t.tsval));
        }
        let learn = match self.phase {
            Phase::Learning { syn_seen: true, .. } => {
                plain && !seg.has(wire::FIN) && seg.payload_len == 0
            }
            Phase::Sniffing { .. } => plain,
            _ => false,
        };
        if learn && !ours {
            let fin = u32::from(seg.has(wire::FIN));
            self.learned(Numbers {
                snd_nxt: seg.seq + seg.payload_len as u32 + fin,
                rcv_nxt: seg.ack,
                window: seg.window,
                ts: seg.ts,
                ip: seg.ip,
            });
        }
    }

    /// Sniffing: a plain segment from the peer gives the numbers seen from its side.
    fn sniffed_from_peer(&mut self, seg: &Segment) {
        let fin = u32::from(seg.has(wire::FIN));
        self.learned(Numbers {
            snd_nxt: seg.ack,
            rcv_nxt: seg.seq + seg.payload_len as u32 + fin,
            window: 0,
            ts: None,
            ip: IpMeta::default(),
        });
        // The local kernel's own window and options are unknown here.
        if let Some(n) = self.numbers.as_mut() {
            n.window = SNIFF_WINDOW;
        }
    }

    /// An RST from the peer: a `reset` verdict only if it answers what we know was sent.
    fn on_reset(&mut self, now: Duration, seg: &Segment) {
        // RFC 793 reset generation: the RST's SEQ is the ACK field of what it answers.
        let known = self.numbers.is_some_and(|n| n.rcv_nxt == seg.seq)
            || self.sent.iter().any(|&(_, ack, _)| ack == seg.seq);
        if known {
            let v = self.verdict(now, VerdictKind::Reset, None);
            self.conclude(v);
        } else {
            self.ignore("RST whose sequence number matches no probe");
        }
    }

    /// A plain ACK from the peer after a probe went out: the answer if its numbers are the
    /// ones learned (with `--seq-source peer`, it brings them).
    fn on_answer(&mut self, now: Duration, seg: &Segment) {
        match (self.cfg.source, self.numbers) {
            (SeqSource::Peer, _) => {
                // The answer to an out-of-window probe carries the peer's view of the numbers.
                self.numbers = Some(Numbers {
                    snd_nxt: seg.ack,
                    rcv_nxt: seg.seq,
                    window: ELICIT_WINDOW,
                    ts: None,
                    ip: IpMeta::default(),
                });
                self.answered(now);
            }
            (_, Some(n)) if seg.seq == n.rcv_nxt && seg.ack == n.snd_nxt => self.answered(now),
            (_, Some(_)) => {
                // Either a forgery or the connection moved on: learn again before the next probe.
                self.stale = true;
                self.ignore("ACK whose numbers differ from the learned pair");
            }
            (_, None) => {}
        }
    }

    /// An outgoing segment of the connection on the capture: ours or the local kernel's.
    fn saw_copy(&mut self, now: Duration, seq: SeqNumber, ack: SeqNumber, tsval: Option<u32>) {
        let again = self.copies.iter().rev().any(|&(s, a, ts, at)| {
            (s, a, ts) == (seq, ack, tsval) && now.saturating_sub(at) < SAME_PACKET_WINDOW
        });
        if again {
            return;
        }
        if self.copies.len() >= MAX_COPIES {
            self.copies.pop_front();
        }
        self.copies.push_back((seq, ack, tsval, now));
    }

    /// An answer proving the peer holds the connection: `alive`, timed from the last probe
    /// only when it can answer nothing else (README "Verdicts and timing").
    fn answered(&mut self, now: Duration) {
        let mut v = self.verdict(now, VerdictKind::Alive, None);
        if let Some(why) = self.rtt_doubt() {
            v.rtt = None;
            self.notes.push_back(Note::Borrowed(why));
        }
        self.conclude(v);
    }

    /// Why an answer to the last probe may belong to another probe, if it may.
    ///
    /// The capture shows every probe of ours leaving, once, after it was sent, and before
    /// its answer can arrive. Any other copy of the same (seq, ack) seen since an RTO before
    /// our first such probe is somebody else's identical probe, typically the connection's
    /// own kernel keepalive, whose answer is indistinguishable from ours.
    fn rtt_doubt(&self) -> Option<&'static str> {
        let &(seq, ack, last) = self.sent.last()?;
        let mut ours = self.sent.iter().filter(|p| (p.0, p.1) == (seq, ack));
        let first = ours.next().map_or(last, |p| p.2);
        let ours = 1 + ours.count();
        let from = first.saturating_sub(self.rto);
        let peer_mode = self.cfg.source == SeqSource::Peer;
        let mut copies = 0;
        for &(s, a, _, at) in &self.copies {
            if at < from {
                continue;
            }
            if (s, a) == (seq, ack) {
                copies += 1;
            } else if peer_mode && !self.sent.iter().any(|p| (p.0, p.1) == (s, a)) {
                // Without known numbers any ACK of the peer's answers the local kernel's
                // segment as well as our probe.
                return Some("the local kernel sent a segment the answer may acknowledge");
            }
        }
        if copies > ours {
            return Some("another identical probe left this host (the kernel's own keepalive?)");
        }
        let mut times = self.sent.iter().rev().map(|p| p.2);
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

    fn learned(&mut self, n: Numbers) {
        self.numbers = Some(n);
        self.progress_at_learn = Some(self.last_progress);
        self.notes.push_back(Note::Learned(n));
        self.phase = Phase::SendNow;
    }
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
