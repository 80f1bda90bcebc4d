//! One connection's verdict as the library hands it back: what `kaprobe --json` prints in
//! its verdict object, typed.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::engine::{Evidence, SeqSource, Verdict, VerdictKind};
use crate::exit::ExitStatus;
use crate::flow::{Cause, Flow};

/// One connection's verdict and what led to it: the fields of `kaprobe --json`'s verdict
/// object (README "Output").
///
/// Serialised with serde, it is that object without its `"event"` and `"v"` keys: `rtt` as
/// `rtt_us` (whole microseconds), `elapsed` as `elapsed_ms` (whole milliseconds); `icmp`
/// and `cause` only when set.
///
/// ```
/// let report: kaprobe::Report = serde_json::from_str(
///     r#"{"flow": "198.18.0.2:40000-198.51.100.2:9000", "local": "198.18.0.2:40000",
///         "remote": "198.51.100.2:9000", "verdict": "alive", "probes_sent": 1,
///         "rtt_us": 84, "elapsed_ms": 1, "ignored": 0, "evidence": "probe",
///         "source": "kernel"}"#,
/// )?;
/// assert_eq!(report.verdict, kaprobe::Verdict::Alive);
/// assert_eq!(report.exit_status().code(), 0);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Report {
    /// The connection probed.
    pub flow: Flow,
    /// This host's side (`flow.local`).
    pub local: SocketAddr,
    /// The peer's side (`flow.remote`).
    pub remote: SocketAddr,
    /// What the probes concluded.
    pub verdict: VerdictKind,
    /// Keepalive probes sent; 0 when the peer's RST came before any, or when the kernel's
    /// ACK clock decided.
    pub probes_sent: u8,
    /// From the last probe sent to its answer; `None` without an answer, or when the answer
    /// cannot be tied to one probe.
    #[serde(rename = "rtt_us", with = "opt_micros")]
    pub rtt: Option<Duration>,
    /// From the start of the run to the verdict.
    #[serde(rename = "elapsed_ms", with = "millis")]
    pub elapsed: Duration,
    /// Answers ignored because they did not prove they saw a probe (README "Trusting an
    /// answer").
    pub ignored: u64,
    /// What decided.
    pub evidence: Evidence,
    /// Where the probes' sequence numbers came from.
    pub source: SeqSource,
    /// For `unreachable`: the ICMP error that said so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp: Option<Icmp>,
    /// For `unreachable` without an ICMP error: the local cause.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<Cause>,
}

/// The ICMP (or ICMPv6) error behind an `unreachable` verdict.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Icmp {
    /// The ICMP type.
    #[serde(rename = "type")]
    pub icmp_type: u8,
    /// The ICMP code.
    pub code: u8,
    /// The router or host that sent it.
    pub from: IpAddr,
    /// Its name, e.g. `host-unreachable`.
    pub name: String,
}

impl Report {
    /// The report of `flow`'s verdict, with the answers its engine ignored.
    pub(crate) fn new(flow: Flow, v: &Verdict, ignored: u64) -> Report {
        Report {
            flow,
            local: flow.local,
            remote: flow.remote,
            verdict: v.kind,
            probes_sent: v.probes_sent,
            rtt: v.rtt,
            elapsed: v.elapsed,
            ignored,
            evidence: v.evidence,
            source: v.source,
            icmp: v.icmp.as_ref().map(|i| Icmp {
                icmp_type: i.icmp_type,
                code: i.code,
                from: i.from,
                name: i.name.to_string(),
            }),
            cause: v.cause,
        }
    }

    /// The exit status `kaprobe probe` gives this verdict: 0 alive, 1 dead, 3 reset, 4
    /// unreachable.
    pub fn exit_status(&self) -> ExitStatus {
        ExitStatus::of_verdict(self.verdict)
    }
}

/// Whole microseconds, as JSON writes times below a second.
mod opt_micros {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_u64(u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_micros))
    }
}

/// Whole milliseconds, as JSON writes elapsed times.
mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::IcmpInfo;

    fn verdict(kind: VerdictKind) -> Verdict {
        Verdict {
            kind,
            probes_sent: 2,
            rtt: Some(Duration::from_micros(1234)),
            elapsed: Duration::from_millis(1500),
            icmp: None,
            cause: None,
            evidence: Evidence::Probe,
            source: SeqSource::Kernel,
        }
    }

    fn flow() -> Flow {
        "198.18.0.2:40000-198.51.100.2:9000".parse().unwrap()
    }

    /// The JSON verdict object, without the keys that frame it in a stream of events.
    fn json_verdict(flow: &Flow, v: &Verdict, ignored: u64) -> serde_json::Value {
        let mut o = crate::output::verdict_json(flow, v, ignored);
        let map = o.as_object_mut().unwrap();
        map.remove("event");
        map.remove("v");
        o
    }

    #[test]
    fn a_report_serialises_as_the_json_verdict_object() {
        let mut unreachable = verdict(VerdictKind::Unreachable);
        unreachable.rtt = None;
        unreachable.icmp = Some(IcmpInfo {
            icmp_type: 3,
            code: 1,
            from: "198.18.0.1".parse().unwrap(),
            name: "host-unreachable",
        });
        let mut local = verdict(VerdictKind::Unreachable);
        local.cause = Some(Cause::LocalFirewall);
        for (v, ignored) in [
            (verdict(VerdictKind::Alive), 0),
            (verdict(VerdictKind::Dead), 3),
            (unreachable, 0),
            (local, 1),
        ] {
            let report = Report::new(flow(), &v, ignored);
            let value = serde_json::to_value(&report).unwrap();
            assert_eq!(value, json_verdict(&flow(), &v, ignored));
            let back: Report = serde_json::from_value(value).unwrap();
            assert_eq!(back, report);
        }
    }

    #[test]
    fn each_verdict_has_its_exit_status() {
        for (kind, code) in [
            (VerdictKind::Alive, 0),
            (VerdictKind::Dead, 1),
            (VerdictKind::Reset, 3),
            (VerdictKind::Unreachable, 4),
        ] {
            let r = Report::new(flow(), &verdict(kind), 0);
            assert_eq!(r.exit_status().code(), code);
        }
    }
}
