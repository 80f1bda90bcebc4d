//! What the caller configures: the connection, its route, and the keepalive knobs.

use std::time::Duration;

use super::SeqSource;
use crate::flow::{Flow, Route};

/// Linux answers at most one out-of-window segment per this long per socket.
pub const PEER_RATELIMIT: Duration = Duration::from_millis(500);

/// The longest `time` and `intvl`: the kernel's own limit on TCP_KEEPIDLE and TCP_KEEPINTVL
/// (MAX_TCP_KEEPIDLE, MAX_TCP_KEEPINTVL in include/net/tcp.h).
pub const MAX_KEEP_SECS: u64 = 32767;
pub const MAX_KEEP: Duration = Duration::from_secs(MAX_KEEP_SECS);

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
                "--intvl {} is below {limit}: the peer answers at most one probe per \
                 net.ipv4.tcp_invalid_ratelimit ({limit} by default), and no probe is judged \
                 unanswered before the connection's RTO",
                humantime::format_duration(self.intvl),
                limit = humantime::format_duration(PEER_RATELIMIT),
            )
        })
    }
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
