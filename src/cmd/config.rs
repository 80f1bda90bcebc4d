//! `kaprobe config`: the keepalive sysctls of this (or the `--netns`) network namespace, and
//! what they mean.
//!
//! The values are the defaults for sockets that turn SO_KEEPALIVE on without their own
//! TCP_KEEPIDLE / TCP_KEEPINTVL / TCP_KEEPCNT. A dead peer is noticed
//! `time + probes × intvl` after the connection fell idle. `tcp_retries2` bounds the other
//! case, a peer that vanishes while data is unacknowledged (keepalive does not run then); its
//! time follows the kernel's model (`tcp_model_timeout`): the RTO doubles from 200 ms up to
//! `tcp_rto_max_ms` (120 s unless set), so 15 retries give about 924.6 s.

use std::time::Duration;

use clap::Args;
use serde_json::{Value, json};

use super::Ctx;
use crate::error::Result;
use crate::exit::ExitStatus;
use crate::output::duration;
use crate::sys::sysctl;

#[derive(Args, Debug)]
pub struct ConfigArgs {}

/// The minimum RTO the kernel's retransmission timeout model starts from (TCP_RTO_MIN).
const RTO_MIN_MS: u64 = 200;
/// TCP_RTO_MAX, the default of `net.ipv4.tcp_rto_max_ms` where that exists (Linux 6.15+).
const RTO_MAX_MS: u64 = 120_000;

/// The values, as read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sysctls {
    pub keepalive_time_s: u64,
    pub keepalive_intvl_s: u64,
    pub keepalive_probes: u64,
    pub invalid_ratelimit_ms: u64,
    pub retries2: u64,
    /// `net.ipv4.tcp_rto_max_ms`; `None` on kernels without it (fixed 120 s).
    pub rto_max_ms: Option<u64>,
}

impl Sysctls {
    pub fn read() -> Result<Sysctls> {
        Ok(Sysctls {
            keepalive_time_s: sysctl::read_u64("net.ipv4.tcp_keepalive_time")?,
            keepalive_intvl_s: sysctl::read_u64("net.ipv4.tcp_keepalive_intvl")?,
            keepalive_probes: sysctl::read_u64("net.ipv4.tcp_keepalive_probes")?,
            invalid_ratelimit_ms: sysctl::read_u64("net.ipv4.tcp_invalid_ratelimit")?,
            retries2: sysctl::read_u64("net.ipv4.tcp_retries2")?,
            rto_max_ms: sysctl::read_u64_opt("net.ipv4.tcp_rto_max_ms")?,
        })
    }

    /// Idle time after which the kernel's keepalive declares the peer dead, in seconds.
    pub fn detection_s(&self) -> u64 {
        self.keepalive_time_s
            .saturating_add(self.keepalive_probes.saturating_mul(self.keepalive_intvl_s))
    }

    /// How long unacknowledged data is retransmitted before the connection is dropped, as the
    /// kernel models it: `((2 << n) - 1) × RTO_MIN` while the doubling RTO stays under
    /// RTO_MAX, then RTO_MAX per further retry.
    pub fn retries2_timeout_ms(&self) -> u64 {
        let rto_max = self.rto_max_ms.unwrap_or(RTO_MAX_MS).max(RTO_MIN_MS);
        let thresh = u64::from((rto_max / RTO_MIN_MS).ilog2());
        let n = self.retries2;
        let doubling = |k: u64| ((2u64 << k.min(62)) - 1).saturating_mul(RTO_MIN_MS);
        if n <= thresh {
            doubling(n)
        } else {
            doubling(thresh).saturating_add((n - thresh).saturating_mul(rto_max))
        }
    }

    pub fn json(&self) -> Value {
        json!({
            "event": "config",
            "tcp_keepalive_time_s": self.keepalive_time_s,
            "tcp_keepalive_intvl_s": self.keepalive_intvl_s,
            "tcp_keepalive_probes": self.keepalive_probes,
            "tcp_invalid_ratelimit_ms": self.invalid_ratelimit_ms,
            "tcp_retries2": self.retries2,
            "tcp_rto_max_ms": self.rto_max_ms.unwrap_or(RTO_MAX_MS),
            "dead_peer_detection_s": self.detection_s(),
            "retries2_timeout_ms": self.retries2_timeout_ms(),
        })
    }

    /// "a dead peer is noticed after 2h11m15s of idle (7200 s + 9 × 75 s)".
    pub fn detection_sentence(&self) -> String {
        format!(
            "a dead peer is noticed after {} of idle ({} s + {} × {} s)",
            hms(self.detection_s()),
            self.keepalive_time_s,
            self.keepalive_probes,
            self.keepalive_intvl_s
        )
    }

    pub fn human(&self) -> String {
        let rows = [
            (
                "net.ipv4.tcp_keepalive_time",
                self.keepalive_time_s,
                format!(
                    "s ({}): idle time before the first keepalive probe",
                    hms(self.keepalive_time_s)
                ),
            ),
            (
                "net.ipv4.tcp_keepalive_intvl",
                self.keepalive_intvl_s,
                format!(
                    "s ({}): time between unanswered probes",
                    hms(self.keepalive_intvl_s)
                ),
            ),
            (
                "net.ipv4.tcp_keepalive_probes",
                self.keepalive_probes,
                "unanswered probes before the connection is dropped (ETIMEDOUT)".into(),
            ),
            (
                "net.ipv4.tcp_invalid_ratelimit",
                self.invalid_ratelimit_ms,
                "ms: the kernel answers out-of-window segments (keepalive probes) with at \
                 most one ACK per socket per this time"
                    .into(),
            ),
            (
                "net.ipv4.tcp_retries2",
                self.retries2,
                format!(
                    "retransmissions of unacknowledged data before the connection is dropped: \
                     about {} (keepalive does not run while data is unacknowledged)",
                    hms_ms(self.retries2_timeout_ms())
                ),
            ),
        ];
        let mut out = String::new();
        for (name, value, meaning) in rows {
            out.push_str(&format!("{name:<31} = {value:<6} {meaning}\n"));
        }
        out.push_str(&format!(
            "With SO_KEEPALIVE on and no per-socket TCP_KEEPIDLE/TCP_KEEPINTVL/TCP_KEEPCNT, {}.\n",
            self.detection_sentence()
        ));
        out
    }
}

/// Whole seconds as `2h11m15s`; `0s` for zero.
fn hms(secs: u64) -> String {
    duration(Duration::from_secs(secs))
}

/// Milliseconds as `15m24.6s`.
fn hms_ms(ms: u64) -> String {
    duration(Duration::from_millis(ms))
}

pub fn run(_args: &ConfigArgs, ctx: &Ctx) -> Result<ExitStatus> {
    let s = Sysctls::read()?;
    if ctx.json {
        crate::output::json_line(s.json())?;
    } else {
        crate::output::print(&s.human())?;
    }
    Ok(ExitStatus::Success)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Sysctls {
        Sysctls {
            keepalive_time_s: 7200,
            keepalive_intvl_s: 75,
            keepalive_probes: 9,
            invalid_ratelimit_ms: 500,
            retries2: 15,
            rto_max_ms: None,
        }
    }

    #[test]
    fn linux_defaults_give_the_textbook_figures() {
        let s = defaults();
        assert_eq!(s.detection_s(), 7875);
        assert_eq!(
            s.detection_sentence(),
            "a dead peer is noticed after 2h11m15s of idle (7200 s + 9 × 75 s)"
        );
        // tcp(7): "a hypothetical timeout of 924.6 seconds".
        assert_eq!(s.retries2_timeout_ms(), 924_600);
        assert_eq!(hms_ms(924_600), "15m24.6s");
    }

    #[test]
    fn retries2_model_below_and_at_the_linear_threshold() {
        let mut s = defaults();
        s.retries2 = 3;
        assert_eq!(s.retries2_timeout_ms(), 15 * 200);
        s.retries2 = 9;
        assert_eq!(s.retries2_timeout_ms(), 1023 * 200);
        s.retries2 = 10;
        assert_eq!(s.retries2_timeout_ms(), 1023 * 200 + 120_000);
        s.retries2 = 15;
        s.rto_max_ms = Some(1000);
        // ilog2(1000 / 200) = 2: 7 × 200 ms, then 13 × 1 s.
        assert_eq!(s.retries2_timeout_ms(), 1400 + 13_000);
        s.retries2 = u64::MAX;
        assert_eq!(s.retries2_timeout_ms(), u64::MAX);
    }

    #[test]
    fn json_has_every_value_and_the_detection_time() {
        let j = defaults().json();
        assert_eq!(j["event"], "config");
        assert_eq!(j["tcp_keepalive_time_s"], 7200);
        assert_eq!(j["tcp_keepalive_intvl_s"], 75);
        assert_eq!(j["tcp_keepalive_probes"], 9);
        assert_eq!(j["tcp_invalid_ratelimit_ms"], 500);
        assert_eq!(j["tcp_retries2"], 15);
        assert_eq!(j["dead_peer_detection_s"], 7875);
        assert_eq!(j["retries2_timeout_ms"], 924_600);
    }

    #[test]
    fn human_output_names_each_sysctl_and_ends_with_the_sentence() {
        let h = defaults().human();
        for name in [
            "tcp_keepalive_time",
            "tcp_keepalive_intvl",
            "tcp_keepalive_probes",
            "tcp_invalid_ratelimit",
            "tcp_retries2",
        ] {
            assert!(h.contains(&format!("net.ipv4.{name} ")), "{name}: {h}");
        }
        assert!(h.contains("2h11m15s of idle (7200 s + 9 × 75 s)"), "{h}");
        assert!(h.contains("about 15m24.6s"), "{h}");
    }

    #[test]
    fn zero_values_do_not_overflow() {
        let s = Sysctls {
            keepalive_time_s: u64::MAX,
            keepalive_intvl_s: u64::MAX,
            keepalive_probes: u64::MAX,
            invalid_ratelimit_ms: 0,
            retries2: 0,
            rto_max_ms: Some(0),
        };
        assert_eq!(s.detection_s(), u64::MAX);
        assert_eq!(s.retries2_timeout_ms(), 200);
    }
}
