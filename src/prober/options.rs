//! How a probe is run: the keepalive knobs, the sequence-number source, the probe's shape and
//! a sweep's send-rate cap, checked against the bounds the command line enforces.

use std::time::Duration;

use crate::engine::{MAX_KEEP, SeqSource, Timing};
use crate::error::{Error, Result};

/// A sweep's default cap on packets it causes on the wire per second (probes, and the local
/// kernel's challenge ACKs its SYNs trigger).
pub const DEFAULT_RATE: u32 = 50_000;
/// The highest send-rate cap, packets per second.
pub const MAX_RATE: u32 = 10_000_000;

/// How [`Prober::probe`](crate::Prober::probe) and [`Prober::sweep`](crate::Prober::sweep)
/// probe: the keepalive knobs (named after the kernel's sysctls), the sequence-number
/// source, the garbage octet, and a sweep's send-rate cap.
///
/// `Options::default()` is what `kaprobe probe` does without options: `time` 0s, `intvl`
/// 1s, `probes` 3, the `kernel` source where it can be loaded (else `local`), no garbage
/// octet, at most 50,000 packets per second. Other values go through [`Options::builder`],
/// which checks them as the command line does:
///
/// ```
/// use std::time::Duration;
/// use kaprobe::{Options, SeqSource};
///
/// let opts = Options::builder()
///     .intvl(Duration::from_millis(500))
///     .probes(2)
///     .seq_source(SeqSource::Local)
///     .build()?;
/// assert_eq!(opts.probes(), 2);
/// // A dead peer is declared time + probes x intvl after the connection fell idle.
/// assert_eq!(opts.time() + opts.intvl() * u32::from(opts.probes()), Duration::from_secs(1));
/// assert!(Options::builder().probes(0).build().is_err());
/// # Ok::<(), kaprobe::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    timing: Timing,
    seq_source: Option<SeqSource>,
    garbage_octet: bool,
    rate: u32,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            timing: Timing {
                time: Duration::ZERO,
                intvl: Duration::from_secs(1),
                probes: 3,
            },
            seq_source: None,
            garbage_octet: false,
            rate: DEFAULT_RATE,
        }
    }
}

impl Options {
    /// A builder starting from the defaults.
    pub fn builder() -> OptionsBuilder {
        OptionsBuilder(Options::default())
    }

    /// How long the connection must have been idle (since the last segment received)
    /// before the first probe.
    pub fn time(&self) -> Duration {
        self.timing.time
    }

    /// The time between unanswered probes, and the wait after the last one.
    pub fn intvl(&self) -> Duration {
        self.timing.intvl
    }

    /// Unanswered probes before the verdict `dead`.
    pub fn probes(&self) -> u8 {
        self.timing.probes
    }

    /// The sequence-number source asked for; `None`: `kernel` where allowed, else `local`.
    pub fn seq_source(&self) -> Option<SeqSource> {
        self.seq_source
    }

    /// Whether each probe carries one already-acknowledged byte.
    pub fn garbage_octet(&self) -> bool {
        self.garbage_octet
    }

    /// A sweep's cap on packets per second on the wire.
    pub fn rate(&self) -> u32 {
        self.rate
    }

    pub(crate) fn timing(&self) -> Timing {
        self.timing
    }
}

/// Builds [`Options`]; [`build`](OptionsBuilder::build) checks the values.
#[derive(Clone, Copy, Debug)]
pub struct OptionsBuilder(Options);

impl OptionsBuilder {
    /// Idle time before the first probe (`--time`): 0s to 32767s. Default 0s.
    pub fn time(mut self, time: Duration) -> Self {
        self.0.timing.time = time;
        self
    }

    /// Time between unanswered probes, and the wait after the last one (`--intvl`): 0s to
    /// 32767s. Default 1s. Below 500 ms the peer may answer only one probe per
    /// `net.ipv4.tcp_invalid_ratelimit`, and a warning is logged.
    pub fn intvl(mut self, intvl: Duration) -> Self {
        self.0.timing.intvl = intvl;
        self
    }

    /// Unanswered probes before `dead` (`--probes`): 1 to 255. Default 3.
    pub fn probes(mut self, probes: u8) -> Self {
        self.0.timing.probes = probes;
        self
    }

    /// How to learn the sequence numbers (`--seq-source`). Without it: `kernel` where it can
    /// be loaded (CAP_BPF and CAP_PERFMON, BTF, Linux 5.9), else `local`.
    pub fn seq_source(mut self, source: SeqSource) -> Self {
        self.0.seq_source = Some(source);
        self
    }

    /// Send one already-acknowledged byte in each probe (`--garbage-octet`), as stacks that
    /// answer only such probes need.
    pub fn garbage_octet(mut self, yes: bool) -> Self {
        self.0.garbage_octet = yes;
        self
    }

    /// A sweep's cap on packets per second (`--rate`): 1 to 10,000,000. Default 50,000.
    pub fn rate(mut self, per_sec: u32) -> Self {
        self.0.rate = per_sec;
        self
    }

    /// The options, or [`Error::Usage`] naming the value out of bounds.
    pub fn build(self) -> Result<Options> {
        let o = self.0;
        for (name, d) in [("time", o.timing.time), ("intvl", o.timing.intvl)] {
            if d > MAX_KEEP {
                return Err(Error::Usage(format!(
                    "{name} {} is above the limit of {}",
                    humantime::format_duration(d),
                    humantime::format_duration(MAX_KEEP)
                )));
            }
        }
        if o.timing.probes == 0 {
            return Err(Error::Usage("probes must be 1 to 255, not 0".into()));
        }
        if !(1..=MAX_RATE).contains(&o.rate) {
            return Err(Error::Usage(format!(
                "rate {} is outside 1 to {MAX_RATE} packets per second",
                o.rate
            )));
        }
        Ok(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_the_commands() {
        let o = Options::default();
        assert_eq!(
            (o.time(), o.intvl(), o.probes()),
            (Duration::ZERO, Duration::from_secs(1), 3)
        );
        assert_eq!(o.seq_source(), None);
        assert!(!o.garbage_octet());
        assert_eq!(o.rate(), DEFAULT_RATE);
        assert_eq!(Options::builder().build().unwrap(), o);
    }

    #[test]
    fn values_out_of_the_commands_bounds_are_usage_errors() {
        let ok = Options::builder()
            .time(MAX_KEEP)
            .intvl(MAX_KEEP)
            .probes(255)
            .rate(MAX_RATE)
            .build();
        assert!(ok.is_ok());
        let over = MAX_KEEP + Duration::from_millis(1);
        for (b, needle) in [
            (Options::builder().time(over), "time"),
            (Options::builder().intvl(over), "intvl"),
            (Options::builder().probes(0), "probes"),
            (Options::builder().rate(0), "rate"),
            (Options::builder().rate(MAX_RATE + 1), "rate"),
        ] {
            let e = b.build().unwrap_err();
            assert_eq!(e.exit_code(), 2, "{e}");
            assert!(e.to_string().contains(needle), "{e}");
        }
    }
}
