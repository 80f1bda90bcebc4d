//! Argument types that several subcommands share: the connection, timing, probe style, rate
//! cap, and the bounded parsers behind them. Every duration and count has an upper bound,
//! checked when the command line is parsed (exit 2), so that no arithmetic on a user's
//! value can overflow (README "Usage").

use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::engine::{SeqSource, Timing};
use crate::error::{Error, Result};
use crate::flow::{Flow, FlowSpec};

/// The longest `--time` and `--intvl` (the kernel's limit), and the highest `--rate`: the
/// library's bounds (`crate::prober::Options`).
pub use crate::engine::{MAX_KEEP, MAX_KEEP_SECS};
pub use crate::prober::options::{DEFAULT_RATE, MAX_RATE};

/// A humantime duration (`500ms`, `75s`, `2h`).
pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("'{s}' is not a duration ({e}); write e.g. 500ms, 75s, 2h"))
}

/// A duration parser that refuses values above `max` (and below `min`).
pub fn duration_in(
    min: Duration,
    max: Duration,
) -> impl Fn(&str) -> std::result::Result<Duration, String> + Clone + Send + Sync + 'static {
    move |s: &str| {
        let d = parse_duration(s)?;
        if d > max {
            return Err(format!(
                "'{s}' is above the limit of {}",
                crate::output::duration(max)
            ));
        }
        if d < min {
            return Err(format!(
                "'{s}' is below the minimum of {}",
                crate::output::duration(min)
            ));
        }
        Ok(d)
    }
}

/// `--time`/`--intvl` of the probing commands: 0s up to the kernel's limit.
pub fn keep_duration(s: &str) -> std::result::Result<Duration, String> {
    duration_in(Duration::ZERO, MAX_KEEP)(s)
}

/// The connection to act on: `LOCAL-REMOTE`, `LOCAL REMOTE` as two arguments (as `ss`
/// prints them), or a bare `REMOTE`.
#[derive(Args, Debug, Clone)]
pub struct FlowArg {
    /// The connection: LOCAL-REMOTE (IP:PORT-IP:PORT, IPv6 in brackets), LOCAL REMOTE as two
    /// arguments (as ss prints them), or REMOTE alone when exactly one established
    /// connection goes there
    #[arg(value_name = "FLOW")]
    pub flow: FlowSpec,
    /// The remote side, when FLOW is written as two arguments
    #[arg(id = "flow_remote", value_name = "REMOTE")]
    pub remote: Option<FlowSpec>,
}

impl FlowArg {
    pub fn spec(&self) -> Result<FlowSpec> {
        combine(self.flow, self.remote)
    }
}

/// Like [`FlowArg`], for commands where the connection is optional (`watch`, `sniff`).
#[derive(Args, Debug, Clone, Default)]
pub struct OptFlowArg {
    /// The connection: LOCAL-REMOTE, LOCAL REMOTE as two arguments, or REMOTE alone
    #[arg(value_name = "FLOW", conflicts_with_all = ["local", "remote", "port"])]
    pub flow: Option<FlowSpec>,
    /// The remote side, when FLOW is written as two arguments
    #[arg(id = "flow_remote", value_name = "REMOTE", requires = "flow")]
    pub remote: Option<FlowSpec>,
}

impl OptFlowArg {
    pub fn spec(&self) -> Result<Option<FlowSpec>> {
        self.flow.map(|f| combine(f, self.remote)).transpose()
    }
}

fn combine(flow: FlowSpec, remote: Option<FlowSpec>) -> Result<FlowSpec> {
    match (flow, remote) {
        (spec, None) => Ok(spec),
        (FlowSpec::Remote(local, local_scope), Some(FlowSpec::Remote(remote, remote_scope))) => {
            if local.is_ipv6() != remote.is_ipv6() {
                return Err(Error::Usage(format!(
                    "LOCAL {local} and REMOTE {remote} mix IPv4 and IPv6"
                )));
            }
            Ok(FlowSpec::Exact(
                Flow { local, remote },
                local_scope.or(remote_scope),
            ))
        }
        (FlowSpec::Remote(..), Some(extra @ FlowSpec::Exact(..))) => Err(Error::Usage(format!(
            "'{extra}' is a whole LOCAL-REMOTE flow; as the second argument give REMOTE only"
        ))),
        (FlowSpec::Exact(f, _), Some(remote)) => Err(Error::Usage(format!(
            "'{f}' is already LOCAL-REMOTE; '{remote}' is one argument too many"
        ))),
    }
}

#[derive(Args, Debug, Clone, Copy)]
pub struct TimingArgs {
    /// Idle time (since the last segment received) before the first probe; at most 32767s
    #[arg(long, value_name = "DUR", default_value = "0s", value_parser = keep_duration)]
    pub time: Duration,
    /// Time between unanswered probes, and the wait after the last one; at most 32767s
    #[arg(long, value_name = "DUR", default_value = "1s", value_parser = keep_duration)]
    pub intvl: Duration,
    /// Unanswered probes before the verdict `dead`; 1 to 255
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=255))]
    pub probes: u8,
}

impl TimingArgs {
    pub fn timing(&self) -> Timing {
        Timing {
            time: self.time,
            intvl: self.intvl,
            probes: self.probes,
        }
    }
}

/// How probes are made, shared by `probe`, `sweep` and `watch`.
#[derive(Args, Debug, Clone, Copy)]
pub struct ProbeStyle {
    /// How to learn the connections' sequence numbers [default: kernel where allowed, else
    /// local]
    #[arg(long, value_enum, value_name = "SOURCE")]
    pub seq_source: Option<SeqSourceArg>,
    /// Send one already-acknowledged byte in each probe, as some stacks do
    #[arg(long)]
    pub garbage_octet: bool,
}

/// The send-rate cap of the commands that probe many connections.
#[derive(Args, Debug, Clone, Copy)]
pub struct RateArgs {
    /// At most this many packets per second on the wire (probes and challenge ACKs); 1 to
    /// 10000000
    #[arg(long, value_name = "PPS", default_value_t = DEFAULT_RATE,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_RATE)))]
    pub rate: u32,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqSourceArg {
    /// Read them from the kernel (eBPF socket iterator; needs CAP_BPF and CAP_PERFMON);
    /// nothing is sent to learn them
    Kernel,
    /// A SYN injected into the local stack makes the local socket tell its numbers
    Local,
    /// Out-of-window first probe with random numbers; refused on flows conntrack tracks
    Peer,
    /// Wait for a segment of the connection on the wire
    Sniff,
}

impl SeqSourceArg {
    /// The engine's sequence source (the library notes at `-v` what each one costs).
    pub fn source(self) -> SeqSource {
        match self {
            SeqSourceArg::Kernel => SeqSource::Kernel,
            SeqSourceArg::Local => SeqSource::Local,
            SeqSourceArg::Peer => SeqSource::Peer,
            SeqSourceArg::Sniff => SeqSource::Sniff,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(s: &str) -> FlowSpec {
        s.parse().unwrap()
    }

    #[test]
    fn two_arguments_make_one_flow() {
        let f = combine(spec("198.18.0.2:40001"), "198.51.100.2:9000".parse().ok()).unwrap();
        assert_eq!(f, spec("198.18.0.2:40001-198.51.100.2:9000"));
        let f = combine(spec("[2001:db8::1]:1"), "[2001:db8::2]:2".parse().ok()).unwrap();
        assert_eq!(f, spec("[2001:db8::1]:1-[2001:db8::2]:2"));
        assert_eq!(
            combine(spec("198.51.100.2:9000"), None).unwrap(),
            spec("198.51.100.2:9000")
        );
        let e = combine(spec("198.18.0.2:1"), "[2001:db8::2]:2".parse().ok()).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let e = combine(
            spec("198.18.0.2:1-198.51.100.2:2"),
            "198.51.100.2:3".parse().ok(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("too many"), "{e}");
    }

    #[test]
    fn durations_are_bounded() {
        let p = duration_in(Duration::from_millis(100), Duration::from_secs(3600));
        assert_eq!(p("1h"), Ok(Duration::from_secs(3600)));
        assert!(p("1h 1ms").unwrap_err().contains("above the limit of 1h"));
        assert!(
            p("99ms")
                .unwrap_err()
                .contains("below the minimum of 100ms")
        );
        assert!(keep_duration("32768s").is_err());
        assert!(keep_duration("1000000h").is_err());
        assert!(keep_duration("9999999999999999999s").is_err());
        assert_eq!(keep_duration("32767s"), Ok(MAX_KEEP));
    }
}
