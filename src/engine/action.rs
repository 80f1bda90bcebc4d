//! What the engine hands the caller: actions to carry out, notes worth a line at `-v`, and
//! when to poll next.

use std::time::Duration;

use super::{Numbers, Outcome};
use crate::wire::Segment;

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

/// When [`Engine::poll`](super::Engine::poll) next has something to do.
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
    /// Whether [`Engine::poll`](super::Engine::poll) at `now` has something to do.
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
    Note(Note),
    Finish(Outcome),
}
