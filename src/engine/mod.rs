//! The keepalive prober as a pure state machine.
//!
//! It never reads a clock or a socket: the caller passes `now` (time since any fixed origin),
//! decoded packets and what the kernel says about the connection, and takes actions out
//! (`poll`), sleeping until the time `next_poll` names or the next packet. The same engine
//! drives `probe`, `sweep` and `watch`.
//!
//! This module holds the [`Engine`] and its phases: waiting for idle, learning, probing,
//! awaiting an answer. Its neighbours hold the rest: `config` what the caller sets, `source`
//! the three sequence-number sources and their learning rounds, `kernel` what the kernel's
//! view of the connection decides, `packets` what a captured packet decides, `rtt` whether
//! an answer is timed, `verdict` and `action` what the engine hands out, `rng` its random
//! numbers.

mod action;
mod config;
mod kernel;
mod packets;
mod rng;
mod rtt;
mod source;
mod verdict;

#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::time::Duration;

/// Shared with `sys`, which finds where a packet was seen and why the host refused to send:
/// they live below both.
pub use crate::flow::Cause;
pub use crate::wire::Origin;
pub use action::{Action, Note, PollAt};
pub use config::{Config, MAX_KEEP, MAX_KEEP_SECS, PEER_RATELIMIT, Timing};
pub use kernel::{BUSY_RECHECK, ConnView, RTO_MAX, TRAFFIC_SLACK};
pub use source::{LEARN_RETRY, LEARN_TRIES, Numbers, SeqSource, TsClock};
pub use verdict::{Evidence, IcmpInfo, Outcome, Verdict, VerdictKind};

use crate::flow::{Flow, Route};
use rng::Rng;
use rtt::{SeenCopy, SentProbe};
use source::{Round, Step};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Until `at`, then ask the kernel about the connection.
    Waiting {
        at: Duration,
    },
    /// Waiting for the caller's `on_connection`.
    Checking,
    /// The sequence-number source learns the numbers.
    Learning(Round),
    /// The next probe goes out at the next `poll`.
    SendNow,
    /// Until `until` for an answer to the last probe, then ask the kernel.
    Awaiting {
        until: Duration,
    },
    Done,
}

pub struct Engine {
    cfg: Config,
    start: Duration,
    phase: Phase,
    numbers: Option<Numbers>,
    progress_at_learn: Option<(u64, u64)>,
    /// The byte counters when the first probe left: `traffic` needs them to move.
    progress_at_probe: Option<(u64, u64)>,
    /// The byte counters at the first look at the connection.
    progress_at_start: Option<(u64, u64)>,
    last_progress: (u64, u64),
    stale: bool,
    probes_sent: u8,
    /// Passes of the kernel source that did not show this established connection.
    kernel_misses: u8,
    /// Every probe sent, oldest first: to match ICMP quotes and RST numbers, to tell our own
    /// probes from the local kernel's segments on the capture, and when the first and the
    /// last left.
    sent: Vec<SentProbe>,
    /// Outgoing segments of the connection seen on the capture, ours included, double
    /// appearances merged (at most `MAX_COPIES`, newest last).
    copies: VecDeque<SeenCopy>,
    /// The connection's RTO as last seen, capped at `RTO_MAX`.
    rto: Duration,
    /// When the connection was first seen busy in the current busy spell.
    busy_since: Option<Duration>,
    notes: VecDeque<Note>,
    pending_finish: Option<Outcome>,
    /// The local socket sent a FIN or an RST since the engine started.
    local_closing: bool,
    ignored: u64,
    rng: Rng,
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
            progress_at_probe: None,
            progress_at_start: None,
            last_progress: (0, 0),
            stale: false,
            probes_sent: 0,
            kernel_misses: 0,
            sent: Vec::new(),
            copies: VecDeque::new(),
            rto: Duration::ZERO,
            busy_since: None,
            notes: VecDeque::new(),
            pending_finish: None,
            local_closing: false,
            ignored: 0,
            rng: Rng::new(seed),
        }
    }

    /// What the engine was made with (the fleet makes a fresh engine from it to probe again).
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn flow(&self) -> Flow {
        self.cfg.flow
    }

    pub fn route(&self) -> Route {
        self.cfg.route
    }

    pub fn source(&self) -> SeqSource {
        self.cfg.source
    }

    pub fn timing(&self) -> Timing {
        self.cfg.timing
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

    /// When `poll` next has something to do.
    pub fn next_poll(&self) -> PollAt {
        if !self.notes.is_empty() || self.pending_finish.is_some() {
            return PollAt::Now;
        }
        match self.phase {
            Phase::Waiting { at } => PollAt::At(at),
            Phase::Learning(round) => round.next_poll(),
            Phase::SendNow => PollAt::Now,
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
        match &mut self.phase {
            Phase::Done | Phase::Checking => None,
            // After the last probe too: the kernel may have accepted a segment since.
            Phase::Waiting { at } | Phase::Awaiting { until: at } if now >= *at => {
                self.phase = Phase::Checking;
                Some(Action::QueryConnection)
            }
            Phase::Waiting { .. } | Phase::Awaiting { .. } => None,
            Phase::Learning(round) => match round.poll(now, self.cfg.flow, &mut self.rng)? {
                Step::Act(action) => Some(action),
                Step::GiveUp => Some(self.finish(Outcome::LearnFailed)),
            },
            Phase::SendNow => Some(self.send_probe(now)),
        }
    }

    /// The next probe, numbered from one.
    fn send_probe(&mut self, now: Duration) -> Action {
        let probe = self
            .cfg
            .source
            .probe(self.numbers, &self.cfg, now, &mut self.rng);
        if self.probes_sent == 0 {
            self.progress_at_probe = Some(self.last_progress);
        }
        self.probes_sent = self.probes_sent.saturating_add(1);
        self.sent.push(SentProbe {
            seq: probe.seq,
            ack: probe.ack,
            tsval: probe.ts.map(|t| t.tsval),
            at: now,
        });
        let t = self.cfg.timing;
        // Probes follow each other every intvl; the last one is judged unanswered only once
        // the connection's RTO has passed since it left (README "Verdicts and timing"), so a
        // dead peer is declared within time + probes × intvl + RTO.
        let wait = if self.probes_sent >= t.probes {
            t.intvl.max(self.rto)
        } else {
            t.intvl
        };
        self.phase = Phase::Awaiting { until: now + wait };
        Action::Send {
            probe,
            index: self.probes_sent,
        }
    }

    /// The local host refused to send the last action's packet (README "Verdicts and timing"): the
    /// connection is `unreachable` for this local cause.
    pub fn on_local_failure(&mut self, now: Duration, cause: Cause) {
        if self.phase == Phase::Done {
            return;
        }
        let v = self.refused(now, cause);
        self.conclude(v);
    }

    /// The verdict for a local cause as of `now`: `unreachable` with that cause, no RTT. The
    /// I/O loop also gives it to silence it finds explained by the path out.
    pub fn refused(&self, now: Duration, cause: Cause) -> Verdict {
        let mut v = self.verdict(now, VerdictKind::Unreachable, None);
        v.cause = Some(cause);
        v.rtt = None;
        v
    }

    fn verdict(&self, now: Duration, kind: VerdictKind, icmp: Option<IcmpInfo>) -> Verdict {
        Verdict {
            kind,
            probes_sent: self.probes_sent,
            rtt: match kind {
                VerdictKind::Dead => None,
                _ => self.last_probe_at().map(|t| now.saturating_sub(t)),
            },
            elapsed: now.saturating_sub(self.start),
            icmp,
            cause: None,
            evidence: Evidence::Probe,
            source: self.cfg.source,
        }
    }

    /// When the first probe left.
    fn first_probe_at(&self) -> Option<Duration> {
        self.sent.first().map(|p| p.at)
    }

    /// When the last probe left.
    fn last_probe_at(&self) -> Option<Duration> {
        self.sent.last().map(|p| p.at)
    }

    /// A verdict not decided by an answer to a probe: it has no RTT.
    fn untimed(&self, now: Duration, kind: VerdictKind, evidence: Evidence) -> Verdict {
        let mut v = self.verdict(now, kind, None);
        v.rtt = None;
        v.evidence = evidence;
        v
    }

    /// The verdict goes out at the next `poll`, after the notes before it.
    fn conclude(&mut self, v: Verdict) {
        self.phase = Phase::Done;
        self.pending_finish = Some(Outcome::Verdict(v));
    }

    fn finish(&mut self, outcome: Outcome) -> Action {
        self.phase = Phase::Done;
        Action::Finish(outcome)
    }

    fn ignore(&mut self, why: &'static str) {
        self.ignored += 1;
        self.notes.push_back(Note::Ignored(why));
    }
}
