//! What the engine concludes: a verdict and what decided it (README "Verdicts and timing").

use std::net::IpAddr;
use std::time::Duration;

use crate::flow::Cause;

/// What a probe concluded about the peer (README "Verdicts and timing"), with its exit
/// status: `Alive` 0, `Dead` 1, `Reset` 3, `Unreachable` 4. In JSON: `alive`, `reset`,
/// `unreachable`, `dead`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VerdictKind {
    /// The peer answered (an ACK): its TCP still holds the connection.
    Alive,
    /// The peer answered with an RST: its host is up but has lost the connection (it
    /// restarted). The local socket is reset too, as the kernel's own keepalive would.
    Reset,
    /// An ICMP error, or a named local cause ([`Cause`]), says the peer cannot be reached.
    Unreachable,
    /// No answer to any probe: peer powered off, cable gone, or a NAT or firewall dropped
    /// the idle flow.
    Dead,
}

impl VerdictKind {
    /// The name JSON and the command line use: `alive`, `reset`, `unreachable`, `dead`.
    pub fn as_str(self) -> &'static str {
        match self {
            VerdictKind::Alive => "alive",
            VerdictKind::Reset => "reset",
            VerdictKind::Unreachable => "unreachable",
            VerdictKind::Dead => "dead",
        }
    }
}

/// What decided a verdict (README "Verdicts and timing"; JSON `evidence`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
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
    /// The name JSON uses: `probe`, `traffic`, `kernel-ack-clock`.
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
    /// Where the probes' numbers came from.
    pub source: super::SeqSource,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Verdict(Verdict),
    /// The connection is no longer established.
    Closed,
    /// The sequence numbers could not be learned.
    LearnFailed,
}
