//! What the engine concludes: a verdict and what decided it (README "Verdicts and timing").

use std::net::IpAddr;
use std::time::Duration;

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
