//! What the user sees: one verdict line (or JSON object) on stdout, progress at `-v`.

use std::io::Write;
use std::time::Duration;

use serde_json::{Value, json};

use crate::engine::{Evidence, Note, Verdict, VerdictKind};
use crate::flow::Flow;
use crate::wire::ProbeRepr;

/// Milliseconds with three decimals, as `ping` prints RTTs.
pub fn ms(d: Duration) -> String {
    format!("{:.3}ms", d.as_secs_f64() * 1000.0)
}

pub fn verdict_line(flow: &Flow, v: &Verdict) -> String {
    let mut line = format!("{flow} {}", v.kind.as_str());
    if let Some(icmp) = &v.icmp {
        line.push_str(&format!(" icmp={} from={}", icmp.name, icmp.from));
    }
    if let Some(cause) = v.cause {
        line.push_str(&format!(" cause={}", cause.as_str()));
    }
    // An answer to a probe is the default; anything else says what decided.
    if v.evidence != Evidence::Probe {
        line.push_str(&format!(" evidence={}", v.evidence.as_str()));
    }
    if let Some(rtt) = v.rtt {
        line.push_str(&format!(" rtt={}", ms(rtt)));
    }
    line.push_str(&format!(" probes={}", v.probes_sent));
    if v.kind == VerdictKind::Dead {
        line.push_str(&format!(" after={}", ms(v.elapsed)));
    }
    line
}

pub fn verdict_json(flow: &Flow, v: &Verdict, ignored: u64) -> Value {
    let mut o = json!({
        "event": "verdict",
        "flow": flow.to_string(),
        "local": flow.local.to_string(),
        "remote": flow.remote.to_string(),
        "verdict": v.kind.as_str(),
        "probes_sent": v.probes_sent,
        "rtt_us": v.rtt.map(|r| r.as_micros() as u64),
        "elapsed_ms": v.elapsed.as_millis() as u64,
        "ignored": ignored,
        "evidence": v.evidence.as_str(),
    });
    if let Some(cause) = v.cause {
        o["cause"] = json!(cause.as_str());
    }
    if let Some(icmp) = &v.icmp {
        o["icmp"] = json!({
            "type": icmp.icmp_type,
            "code": icmp.code,
            "from": icmp.from.to_string(),
            "name": icmp.name,
        });
    }
    o
}

/// Prints results and, at `-v`, progress: as log lines (stderr) or JSON events (stdout).
#[derive(Clone, Copy, Debug)]
pub struct Reporter {
    pub json: bool,
    pub verbose: bool,
}

impl Reporter {
    fn emit_json(&self, v: &Value) {
        // A closed stdout (`| head`) is not an error worth a message.
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{v}");
        let _ = out.flush();
    }

    pub fn verdict(&self, flow: &Flow, v: &Verdict, ignored: u64) {
        if self.json {
            self.emit_json(&verdict_json(flow, v, ignored));
        } else {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{}", verdict_line(flow, v));
            let _ = out.flush();
        }
    }

    pub fn probe(&self, flow: &Flow, p: &ProbeRepr, index: u8, at: Duration) {
        if self.json && self.verbose {
            self.emit_json(&json!({
                "event": "probe", "flow": flow.to_string(), "probe": index,
                "seq": p.seq.0, "ack": p.ack.0, "ts": p.ts.is_some(), "t_ms": at.as_secs_f64() * 1000.0,
            }));
        } else {
            log::info!(
                "{flow} probe {index} seq={} ack={} win={}{} at {}",
                p.seq,
                p.ack,
                p.window,
                p.ts.map_or(String::new(), |t| format!(
                    " tsval={} tsecr={}",
                    t.tsval, t.tsecr
                )),
                ms(at)
            );
        }
    }

    pub fn note(&self, flow: &Flow, note: &Note, at: Duration) {
        if self.json && self.verbose {
            self.emit_json(&note_json(flow, note, at));
        } else {
            log::info!("{}", note_line(flow, note, at));
        }
    }
}

/// A progress note as a `--json -v` event.
pub fn note_json(flow: &Flow, note: &Note, at: Duration) -> Value {
    match note {
        Note::Learned(n) => json!({
            "event": "learned", "flow": flow.to_string(), "snd_nxt": n.snd_nxt.0,
            "rcv_nxt": n.rcv_nxt.0, "ts": n.ts.is_some(), "t_ms": at.as_secs_f64() * 1000.0,
        }),
        Note::Waiting { idle, until } => json!({
            "event": "waiting", "flow": flow.to_string(), "idle_ms": idle.as_millis() as u64,
            "probe_at_ms": until.as_millis() as u64,
        }),
        Note::Busy => json!({"event": "busy", "flow": flow.to_string()}),
        Note::Traffic { idle } => json!({
            "event": "traffic", "flow": flow.to_string(), "idle_ms": idle.as_millis() as u64,
        }),
        Note::Ignored(why) => {
            json!({"event": "ignored", "flow": flow.to_string(), "reason": why})
        }
        Note::Borrowed(why) => {
            json!({"event": "borrowed", "flow": flow.to_string(), "reason": why})
        }
    }
}

/// A progress note as a `-v` log line.
pub fn note_line(flow: &Flow, note: &Note, at: Duration) -> String {
    match note {
        Note::Learned(n) => format!(
            "{flow} learned snd_nxt={} rcv_nxt={} win={}{} at {}",
            n.snd_nxt,
            n.rcv_nxt,
            n.window,
            if n.ts.is_some() {
                " with timestamps"
            } else {
                ""
            },
            ms(at)
        ),
        Note::Waiting { idle, until } => format!(
            "{flow} idle for {}, first probe at {}",
            ms(*idle),
            ms(*until)
        ),
        Note::Busy => {
            format!("{flow} has data in flight: the kernel's ACK clock decides, no probe is sent")
        }
        Note::Traffic { idle } => format!(
            "{flow} received a segment {} ago, after kaprobe started: the peer is there",
            ms(*idle)
        ),
        Note::Ignored(why) => format!("{flow} ignored: {why}"),
        Note::Borrowed(why) => {
            format!("{flow} the answer may belong to another probe ({why}): rtt not reported")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::IcmpInfo;

    fn flow() -> Flow {
        Flow {
            local: "198.18.0.2:40000".parse().unwrap(),
            remote: "198.51.100.2:9000".parse().unwrap(),
        }
    }

    #[test]
    fn alive_line_reads_like_the_spec() {
        let v = Verdict {
            kind: VerdictKind::Alive,
            probes_sent: 1,
            rtt: Some(Duration::from_micros(84)),
            elapsed: Duration::from_millis(1),
            icmp: None,
            cause: None,
            evidence: Evidence::Probe,
        };
        assert_eq!(
            verdict_line(&flow(), &v),
            "198.18.0.2:40000-198.51.100.2:9000 alive rtt=0.084ms probes=1"
        );
    }

    #[test]
    fn json_has_every_spec_field() {
        let v = Verdict {
            kind: VerdictKind::Unreachable,
            probes_sent: 2,
            rtt: Some(Duration::from_micros(120)),
            elapsed: Duration::from_millis(1003),
            icmp: Some(IcmpInfo {
                icmp_type: 3,
                code: 1,
                from: "198.18.0.1".parse().unwrap(),
                name: "host-unreachable",
            }),
            cause: None,
            evidence: Evidence::Probe,
        };
        let j = verdict_json(&flow(), &v, 4);
        assert_eq!(j["event"], "verdict");
        assert_eq!(j["flow"], "198.18.0.2:40000-198.51.100.2:9000");
        assert_eq!(j["local"], "198.18.0.2:40000");
        assert_eq!(j["remote"], "198.51.100.2:9000");
        assert_eq!(j["verdict"], "unreachable");
        assert_eq!(j["probes_sent"], 2);
        assert_eq!(j["rtt_us"], 120);
        assert_eq!(j["elapsed_ms"], 1003);
        assert_eq!(j["icmp"]["type"], 3);
        assert_eq!(j["icmp"]["code"], 1);
        assert_eq!(j["icmp"]["from"], "198.18.0.1");
        assert_eq!(j["ignored"], 4);
        assert_eq!(j["evidence"], "probe");
        assert!(j.get("cause").is_none());
    }

    #[test]
    fn dead_has_null_rtt() {
        let v = Verdict {
            kind: VerdictKind::Dead,
            probes_sent: 3,
            rtt: None,
            elapsed: Duration::from_millis(3000),
            icmp: None,
            cause: None,
            evidence: Evidence::Probe,
        };
        assert!(verdict_json(&flow(), &v, 0)["rtt_us"].is_null());
        assert_eq!(
            verdict_line(&flow(), &v),
            "198.18.0.2:40000-198.51.100.2:9000 dead probes=3 after=3000.000ms"
        );
    }

    #[test]
    fn a_borrowed_answer_is_said_in_both_forms() {
        let note = Note::Borrowed("another identical probe left this host");
        let j = note_json(&flow(), &note, Duration::ZERO);
        assert_eq!(j["event"], "borrowed");
        assert_eq!(j["flow"], "198.18.0.2:40000-198.51.100.2:9000");
        assert_eq!(j["reason"], "another identical probe left this host");
        let line = note_line(&flow(), &note, Duration::ZERO);
        assert!(line.contains("another probe"), "{line}");
        assert!(line.contains("rtt not reported"), "{line}");
    }

    #[test]
    fn kernel_ack_clock_evidence_in_json() {
        let v = Verdict {
            kind: VerdictKind::Alive,
            probes_sent: 0,
            rtt: None,
            elapsed: Duration::from_millis(1000),
            icmp: None,
            cause: None,
            evidence: Evidence::KernelAckClock,
        };
        let j = verdict_json(&flow(), &v, 0);
        assert_eq!(j["evidence"], "kernel-ack-clock");
        assert!(j["rtt_us"].is_null());
        assert_eq!(
            verdict_line(&flow(), &v),
            "198.18.0.2:40000-198.51.100.2:9000 alive evidence=kernel-ack-clock probes=0"
        );
    }
}
