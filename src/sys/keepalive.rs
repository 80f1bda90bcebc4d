//! The kernel keepalive timer of one socket, read from what sock_diag reports.
//!
//! sock_diag shows one timer per socket: while the retransmit or zero-window-probe timer
//! runs, an armed keepalive timer is hidden behind it, and the state shows as unknown.
//! Rendering (text and JSON) lives in `output`.

use std::time::Duration;

use netlink_packet_sock_diag::inet::Timer;

use super::diag::Conn;

/// The kernel keepalive timer of one socket, as far as sock_diag tells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keepalive {
    /// No timer runs: SO_KEEPALIVE is off.
    Off,
    /// Armed: the timer fires in `next`; `probes` unanswered probes are out.
    On { next: Duration, probes: u8 },
    /// Another timer (named) runs and hides the keepalive state.
    Unknown(&'static str),
}

impl Keepalive {
    pub fn of(conn: &Conn) -> Keepalive {
        let probes = conn.info.as_ref().map_or(0, |i| i.probes);
        match &conn.timer {
            None => Keepalive::Off,
            Some(Timer::KeepAlive(next)) => Keepalive::On {
                next: *next,
                probes,
            },
            Some(Timer::Retransmit(..)) => Keepalive::Unknown("retransmit"),
            Some(Timer::Probe(_)) => Keepalive::Unknown("zero-window-probe"),
            Some(Timer::TimeWait) => Keepalive::Unknown("time-wait"),
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Keepalive::Off => "off",
            Keepalive::On { .. } => "on",
            Keepalive::Unknown(_) => "unknown",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::sys::diag::test_conn as conn;

    #[test]
    fn keepalive_state_follows_the_timer() {
        assert_eq!(Keepalive::of(&conn(None)), Keepalive::Off);
        assert_eq!(
            Keepalive::of(&conn(Some(Timer::KeepAlive(Duration::from_millis(1500))))),
            Keepalive::On {
                next: Duration::from_millis(1500),
                probes: 0
            }
        );
        let hidden = Keepalive::of(&conn(Some(Timer::Retransmit(Duration::ZERO, 2))));
        assert_eq!(hidden, Keepalive::Unknown("retransmit"));
    }
}
