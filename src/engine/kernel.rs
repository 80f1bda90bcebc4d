//! What the kernel's view of the connection decides (README "Verdicts and timing"): the wait
//! for idle, segments the kernel accepted while we probed, the last probe's deadline, the ACK
//! clock of a busy connection, and whether the next round learns the numbers again.

use std::time::Duration;

use super::{Engine, Evidence, Note, Numbers, Outcome, Phase, SeqSource, VerdictKind};

/// `tcp_info` counts idle time in milliseconds from jiffies: differences below this are noise.
pub const TRAFFIC_SLACK: Duration = Duration::from_millis(5);
/// The kernel's ceiling on a retransmission timeout (`TCP_RTO_MAX`): a larger `tcpi_rto` is
/// no path's, and no wait is stretched beyond it. There is no floor: the kernel's own RTO
/// already has one (`TCP_RTO_MIN`, 200 ms), and a view without `tcp_info` says 0.
pub const RTO_MAX: Duration = Duration::from_secs(120);
/// The shortest span between two looks at a busy connection's ACK clock: `tcp_info` counts
/// in milliseconds from jiffies, so a shorter look could not show an ACK after the first.
pub const BUSY_RECHECK: Duration = TRAFFIC_SLACK.saturating_mul(2);
/// The kernel source's pass walks the socket hash while connections come and go, and can
/// miss a socket sock_diag has just listed: the connection is asked about again (at the
/// next pass) this many times before its numbers count as unknowable.
pub const KERNEL_MISSES: u8 = 2;
/// When to ask again after such a miss.
pub const KERNEL_RETRY: Duration = Duration::from_millis(100);

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
    /// Bytes acked and bytes received: when they move, learned numbers are stale, and only
    /// when they move has the connection carried traffic a blind forger could not make.
    pub progress: (u64, u64),
    /// The connection's numbers read from the kernel with this view (`--seq-source kernel`).
    pub numbers: Option<Numbers>,
    /// The socket's inode (0: unknown): tells one socket from a later one on the same
    /// 4-tuple, so numbers read for one are never used for the other.
    pub inode: u32,
}

impl Engine {
    /// Whether `on_connection` with this view would use the numbers read with it: only when
    /// it goes on to probe, not while the connection has not been idle for `time` yet (the
    /// first look of a round comes just after the last answer). The I/O loop reads the
    /// kernel source only for the queries that need it.
    pub fn wants_numbers(&self, view: &ConnView) -> bool {
        self.cfg.source == SeqSource::Kernel
            && !(self.probes_sent == 0 && view.idle < self.cfg.timing.time)
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
        self.progress_at_start.get_or_insert(view.progress);
        self.rto = view.rto.min(RTO_MAX);
        let t = self.cfg.timing;
        if self.probes_sent == 0 && view.idle < t.time {
            self.wait_for_idle(now, view.idle);
        } else if self.received_since_first_probe(now, view.idle)
            && self.progress_at_probe != Some(view.progress)
        {
            self.alive_by_traffic(now, view.idle);
        } else if self.probes_sent >= t.probes {
            self.judge_last_probe(now);
        } else if view.busy {
            self.judge_busy(now, &view);
        } else {
            self.busy_since = None;
            self.next_round(now, &view);
        }
    }

    /// Not idle for `time` yet: wait until it is, but no longer than `time` after the start.
    fn wait_for_idle(&mut self, now: Duration, idle: Duration) {
        let t = self.cfg.timing;
        let elapsed = now.saturating_sub(self.start);
        // Waited `time` already, and the connection is not idle that long because the kernel
        // kept receiving its segments after we started: the peer is evidently there (README
        // "Verdicts and timing": the wait for idle is bounded too).
        if elapsed >= t.time
            && idle + TRAFFIC_SLACK < elapsed
            && self.progress_at_start != Some(self.last_progress)
        {
            self.alive_by_traffic(now, idle);
            return;
        }
        let mut until = now + (t.time - idle);
        let bound = self.start + t.time;
        if bound > now {
            until = until.min(bound);
        }
        self.phase = Phase::Waiting { at: until };
        self.notes.push_back(Note::Waiting { idle, until });
    }

    /// Whether the kernel accepted a segment after our first probe (its idle clock
    /// restarted). The caller also asks that the byte counters moved: an in-window ACK
    /// with a guessed sequence number restarts the idle clock too, but only a segment with
    /// the exact numbers moves SND.UNA or RCV.NXT (README "Trust").
    fn received_since_first_probe(&self, now: Duration, idle: Duration) -> bool {
        self.first_probe_at()
            .is_some_and(|first| idle + TRAFFIC_SLACK < now.saturating_sub(first))
    }

    fn alive_by_traffic(&mut self, now: Duration, idle: Duration) {
        self.notes.push_back(Note::Traffic { idle });
        let v = self.untimed(now, VerdictKind::Alive, Evidence::Traffic);
        self.conclude(v);
    }

    /// Every probe is out and none was answered: `dead`, but never before the last probe's
    /// RTO has passed, even if the RTO grew since it left (README "Verdicts and timing").
    fn judge_last_probe(&mut self, now: Duration) {
        if let Some(last) = self.last_probe_at()
            && now < last + self.rto
        {
            self.phase = Phase::Awaiting {
                until: last + self.rto,
            };
            return;
        }
        let v = self.verdict(now, VerdictKind::Dead, None);
        self.conclude(v);
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

    /// Idle and not yet judged: the next probe goes out, after a learning round where the
    /// numbers are unknown or stale (the connection's byte counters moved since they were
    /// learned, or an ACK contradicted them) and the source learns before it probes. The
    /// `kernel` source's numbers come fresh with every view.
    fn next_round(&mut self, now: Duration, view: &ConnView) {
        if self.cfg.source == SeqSource::Kernel {
            match view.numbers {
                Some(n) => self.learned(n),
                None if self.kernel_misses < KERNEL_MISSES => {
                    self.kernel_misses += 1;
                    self.phase = Phase::Waiting {
                        at: now + KERNEL_RETRY,
                    };
                }
                None => {
                    self.phase = Phase::Done;
                    self.pending_finish = Some(Outcome::LearnFailed);
                }
            }
            return;
        }
        let moved = self.progress_at_learn.is_some_and(|p| p != view.progress);
        if (self.numbers.is_none() || moved || self.stale)
            && let Some(round) = self.cfg.source.start_round(now, &self.cfg, &mut self.rng)
        {
            self.stale = false;
            self.phase = Phase::Learning(round);
        } else {
            self.phase = Phase::SendNow;
        }
    }
}
