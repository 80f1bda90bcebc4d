//! What the user sees: one verdict line (or JSON object) on stdout, progress at `-v`.
//!
//! Every byte kaprobe writes to standard output goes through [`print`]: the one place where
//! output errors are handled (README "Pipes, signals and limits"). A reader that went away
//! (`| head`) makes every later write and [`check`] return `Error::OutputClosed`, which ends
//! the command quietly; any other write error is a runtime failure with its reason.

use std::fmt::Display;
use std::io::{self, Write};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use crate::engine::{Evidence, IcmpInfo, Note, Outcome, Verdict, VerdictKind};
use crate::error::{Error, Result};
use crate::fleet::Event;
use crate::flow::Flow;
use crate::sys::keepalive::Keepalive;
use crate::sys::owner::Owner;
use crate::wire::Segment;

/// Set once standard output's reader has gone away.
static CLOSED: AtomicBool = AtomicBool::new(false);
/// The first other write error, for [`check`] to report.
static FAILED: Mutex<Option<io::Error>> = Mutex::new(None);

/// Writes `text` to standard output and flushes it.
pub fn print(text: &str) -> Result<()> {
    check()?;
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
            CLOSED.store(true, Ordering::SeqCst);
            Err(Error::OutputClosed)
        }
        Err(e) => {
            let err = write_error(io::Error::new(e.kind(), e.to_string()));
            if let Ok(mut f) = FAILED.lock() {
                f.get_or_insert(e);
            }
            Err(err)
        }
    }
}

/// Writes one line to standard output.
pub fn line(l: impl Display) -> Result<()> {
    print(&format!("{l}\n"))
}

/// The version of the JSON output format: every object carries it as `"v"` (README
/// "JSON"). Fields described in `src/output/schema.json` and exit codes are stable within
/// one version; removing or changing the meaning of one bumps it.
pub const JSON_VERSION: u64 = 1;

/// Writes one JSON object as a line: the one way a `--json` object reaches standard output,
/// stamped here with the format version `"v"`.
pub fn json_line(o: Value) -> Result<()> {
    line(stamped(o))
}

/// `o` with the format version `"v"` added (an object; anything else is left as it is).
pub fn stamped(mut o: Value) -> Value {
    if let Value::Object(map) = &mut o {
        map.insert("v".into(), json!(JSON_VERSION));
    }
    o
}

/// The stable word naming an error's class in the `--json` error object (`"error"`), one per
/// exit status: `usage` (2), `no-connection` (5), `privilege` (6), `failure` (7).
pub fn error_kind(e: &Error) -> &'static str {
    match e {
        Error::Usage(_) => "usage",
        Error::NoConnection(_) => "no-connection",
        Error::Privilege { .. } => "privilege",
        Error::Io { .. } | Error::Runtime(_) => "failure",
        Error::OutputClosed => "output-closed",
    }
}

/// An error as the `--json` object printed on standard output besides the message on
/// stderr: `{"event": "error", "exit": N, "error": KIND, "message": ...}`, and for a missing
/// capability its name (`"capability": "CAP_NET_RAW"`).
pub fn error_json(e: &Error) -> Value {
    let mut o = json!({
        "event": "error",
        "exit": e.exit_code(),
        "error": error_kind(e),
        "message": e.to_string(),
    });
    if let Error::Privilege { cap, .. } = e {
        o["capability"] = json!(cap.to_string());
    }
    o
}

/// A usage error found before the command line was understood (clap's own), as the
/// `--json` error object: exit 2, kind `usage`, `message` the first line of clap's text
/// without its `error: ` prefix.
pub fn usage_error_json(clap_text: &str) -> Value {
    let first = clap_text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("bad command line");
    error_json(&Error::Usage(
        first.strip_prefix("error: ").unwrap_or(first).to_string(),
    ))
}

/// `Err` once a write to standard output has failed (for loops whose writes happen where
/// no error can be returned, such as progress events), or once its reader has gone away
/// (so that `watch | head -1` ends without waiting for a state change to write).
pub fn check() -> Result<()> {
    if CLOSED.load(Ordering::SeqCst) || crate::sys::stdout_reader_gone() {
        CLOSED.store(true, Ordering::SeqCst);
        return Err(Error::OutputClosed);
    }
    match FAILED
        .lock()
        .ok()
        .and_then(|f| f.as_ref().map(|e| (e.kind(), e.to_string())))
    {
        Some((kind, msg)) => Err(write_error(io::Error::new(kind, msg))),
        None => Ok(()),
    }
}

fn write_error(source: io::Error) -> Error {
    Error::Io {
        context: "writing to standard output".into(),
        source,
    }
}

/// The one way human output writes a duration: `0.084ms`, `410ms`, `4.8s`, `15m24.6s`,
/// `2h11m15s`, `3d4h`. Below a second in milliseconds to the microsecond, below a minute in
/// seconds to the millisecond, above in days, hours, minutes and seconds to the tenth;
/// trailing zeros and zero parts are left out.
pub fn duration(d: Duration) -> String {
    if d.is_zero() {
        return "0s".into();
    }
    if d < Duration::from_secs(1) {
        return format!("{}ms", decimal(d.as_micros() as u64, 1000));
    }
    if d < Duration::from_secs(60) {
        return format!("{}s", decimal(d.as_millis() as u64, 1000));
    }
    let tenths = (d.as_millis() + 50) / 100;
    let secs = u64::try_from(tenths / 10).unwrap_or(u64::MAX);
    let tenth = (tenths % 10) as u64;
    let mut out = String::new();
    for (n, unit) in [
        (secs / 86_400, "d"),
        (secs % 86_400 / 3600, "h"),
        (secs % 3600 / 60, "m"),
    ] {
        if n > 0 {
            out.push_str(&format!("{n}{unit}"));
        }
    }
    let s = secs % 60;
    if s > 0 || tenth > 0 {
        out.push_str(&format!("{}s", decimal(s * 10 + tenth, 10)));
    }
    out
}

/// `n / scale` with the fraction's trailing zeros left out: (84, 1000) gives `0.084`.
fn decimal(n: u64, scale: u64) -> String {
    let (whole, frac) = (n / scale, n % scale);
    if frac == 0 {
        return whole.to_string();
    }
    let width = scale.ilog10() as usize;
    let frac = format!("{frac:0width$}");
    format!("{whole}.{}", frac.trim_end_matches('0'))
}

/// `1 connection`, `2 connections`.
pub fn count(n: impl Into<u64>, noun: &str) -> String {
    let n = n.into();
    match (n, noun.ends_with('s')) {
        (1, _) => format!("1 {noun}"),
        (_, true) => format!("{n} {noun}es"),
        (_, false) => format!("{n} {noun}s"),
    }
}

pub fn verdict_line(flow: &Flow, v: &Verdict) -> String {
    let mut line = format!("{flow} {}", v.kind.as_str());
    for part in verdict_details(v) {
        line.push(' ');
        line.push_str(&part);
    }
    if let Some(rtt) = v.rtt {
        line.push_str(&format!(" rtt={}", duration(rtt)));
    }
    line.push_str(&format!(" probes={}", v.probes_sent));
    if v.kind == VerdictKind::Dead {
        line.push_str(&format!(" after={}", duration(v.elapsed)));
    }
    line
}

/// What a verdict says beyond its kind, as `key=value` words: the ICMP error or local cause
/// of an `unreachable`, and what decided when it was not an answer to a probe (the default).
pub fn verdict_details(v: &Verdict) -> Vec<String> {
    let mut parts = Vec::new();
    if let Some(icmp) = &v.icmp {
        parts.push(format!("icmp={} from={}", icmp.name, icmp.from));
    }
    if let Some(cause) = v.cause {
        parts.push(format!("cause={}", cause.as_str()));
    }
    if v.evidence != Evidence::Probe {
        parts.push(format!("evidence={}", v.evidence.as_str()));
    }
    parts
}

/// Why the run's preferred sequence source was not used, once the command knows (README
/// "How it works"): every verdict object says it as `"fallback"`.
static FALLBACK: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();

/// Records why the default `kernel` source fell back to `local` for this run.
pub fn set_source_fallback(why: &'static str) {
    let _ = FALLBACK.set(why);
}

pub fn verdict_json(flow: &Flow, v: &Verdict, ignored: u64) -> Value {
    let mut o = json!({
        "event": "verdict",
        "flow": flow.to_string(),
        "local": flow.local.to_string(),
        "remote": flow.remote.to_string(),
        "verdict": v.kind.as_str(),
        "probes_sent": v.probes_sent,
        "rtt_us": v.rtt.map(micros),
        "elapsed_ms": millis(v.elapsed),
        "ignored": ignored,
        "evidence": v.evidence.as_str(),
        "source": v.source.as_str(),
    });
    if let Some(cause) = v.cause {
        o["cause"] = json!(cause.as_str());
    }
    if let Some(icmp) = &v.icmp {
        o["icmp"] = icmp_json(icmp);
    }
    if let Some(why) = FALLBACK.get() {
        o["fallback"] = json!(why);
    }
    o
}

/// The ICMP error behind an `unreachable`, as a JSON object.
fn icmp_json(icmp: &IcmpInfo) -> Value {
    json!({
        "type": icmp.icmp_type,
        "code": icmp.code,
        "from": icmp.from.to_string(),
        "name": icmp.name,
    })
}

/// A change of a watched connection's state (README "`kaprobe watch`"): the state now, the
/// one before (none at the first round), and the verdict behind it, if there was one.
pub struct StateChange<'a> {
    pub flow: Flow,
    pub state: &'a str,
    pub previous: Option<&'a str>,
    pub verdict: Option<&'a Verdict>,
}

impl StateChange<'_> {
    /// As a JSON event; `time` is when, in RFC 3339.
    pub fn json(&self, time: &str) -> Value {
        let flow = self.flow;
        let mut o = json!({
            "event": "state", "time": time, "flow": flow.to_string(),
            "local": flow.local.to_string(), "remote": flow.remote.to_string(),
            "state": self.state, "previous": self.previous,
        });
        if let Some(v) = self.verdict {
            o["probes_sent"] = json!(v.probes_sent);
            o["rtt_us"] = json!(v.rtt.map(micros));
            if let Some(i) = &v.icmp {
                o["icmp"] = icmp_json(i);
            }
            if let Some(c) = v.cause {
                o["cause"] = json!(c.as_str());
            }
        }
        o
    }

    /// As a line, after `stamp` (when, in RFC 3339) if there is one.
    pub fn line(&self, stamp: Option<&str>) -> String {
        let mut line = match stamp {
            Some(t) => format!("{t} {} {}", self.flow, self.state),
            None => format!("{} {}", self.flow, self.state),
        };
        if let Some(v) = self.verdict {
            if let Some(r) = v.rtt {
                line.push_str(&format!(" rtt={}", duration(r)));
            }
            if let Some(i) = &v.icmp {
                line.push_str(&format!(" icmp={} from={}", i.name, i.from));
            }
            if let Some(c) = v.cause {
                line.push_str(&format!(" cause={}", c.as_str()));
            }
            if v.kind == VerdictKind::Dead {
                line.push_str(&format!(" probes={}", v.probes_sent));
            }
        }
        if let Some(p) = self.previous {
            line.push_str(&format!(" (was {p})"));
        }
        line
    }
}

/// A connection that got no verdict (`closed`, `failed`, `interrupted`): the verdict
/// line's fields, with what is unknown left out (human) or null (JSON).
pub fn unfinished_line(flow: &Flow, label: &str) -> String {
    format!("{flow} {label}")
}

pub fn unfinished_json(flow: &Flow, label: &str, ignored: Option<u64>) -> Value {
    json!({
        "event": "verdict", "flow": flow.to_string(), "local": flow.local.to_string(),
        "remote": flow.remote.to_string(), "verdict": label, "probes_sent": null,
        "rtt_us": null, "elapsed_ms": null, "ignored": ignored, "evidence": null,
    })
}

/// JSON times are whole microseconds or milliseconds (README "Usage").
pub fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A socket's keepalive state for a table cell: `off`, `on next=59.2s probes=0`,
/// `? (retransmit timer)`.
pub fn keepalive(k: &Keepalive) -> String {
    match k {
        Keepalive::Off => "off".into(),
        Keepalive::On { next, probes } => format!("on next={} probes={probes}", duration(*next)),
        Keepalive::Unknown(timer) => format!("? ({timer} timer)"),
    }
}

/// The keepalive fields `list` and `enable` put in their JSON objects.
pub fn keepalive_fields(k: &Keepalive, o: &mut Value) {
    o["keepalive"] = json!(k.as_str());
    let (next, probes, timer) = match k {
        Keepalive::Off => (None, None, None),
        Keepalive::On { next, probes } => (Some(millis(*next)), Some(*probes), Some("keepalive")),
        Keepalive::Unknown(t) => (None, None, Some(*t)),
    };
    o["keepalive_next_ms"] = json!(next);
    o["keepalive_probes"] = json!(probes);
    o["timer"] = json!(timer);
}

/// The processes holding a socket, as a JSON array (`list` and `enable`).
pub fn owners_json(owners: &[Owner]) -> Value {
    owners
        .iter()
        .map(|o| json!({"pid": o.pid, "fd": o.fd, "command": o.command}))
        .collect()
}

/// Prints results and, at `-v`, progress: as log lines (stderr) or JSON events (stdout).
/// The one place where what the fleet reports ([`Event`]) becomes lines or JSON.
#[derive(Clone, Copy, Debug)]
pub struct Reporter {
    pub json: bool,
    pub verbose: bool,
}

impl Reporter {
    pub fn verdict(&self, flow: &Flow, v: &Verdict, ignored: u64) -> Result<()> {
        if self.json {
            json_line(verdict_json(flow, v, ignored))
        } else {
            line(verdict_line(flow, v))
        }
    }

    /// A `watch` state change: JSON with `time`, else its line after `stamp`.
    pub fn state(&self, change: &StateChange, time: &str, stamp: Option<&str>) -> Result<()> {
        if self.json {
            json_line(change.json(time))
        } else {
            line(change.line(stamp))
        }
    }

    /// A connection that ended without a verdict.
    pub fn unfinished(&self, flow: &Flow, label: &str, ignored: Option<u64>) -> Result<()> {
        if self.json {
            json_line(unfinished_json(flow, label, ignored))
        } else {
            line(unfinished_line(flow, label))
        }
    }

    /// Shows the progress among one turn's `events` (probes sent, notes), in order, and
    /// hands back the outcomes for the command to act on and render, in the order reached.
    pub fn outcomes(&self, events: Vec<Event>) -> Vec<(Flow, Outcome, u64)> {
        crate::fleet::split_outcomes(events, |e| self.progress(e))
    }

    /// A probe sent or a note: a `--json -v` event on stdout, else an info log line (shown
    /// at `-v`). A write error is remembered for [`check`], not returned. An outcome is
    /// not progress: the commands render it (see [`Reporter::outcomes`]).
    pub fn progress(&self, e: &Event) {
        let json = self.json && self.verbose;
        match e {
            Event::Sent {
                flow,
                probe,
                index,
                at,
            } if json => {
                let _ = json_line(probe_json(flow, probe, *index, *at));
            }
            Event::Sent {
                flow,
                probe,
                index,
                at,
            } => log::info!("{}", probe_line(flow, probe, *index, *at)),
            Event::Note { flow, note, at } if json => {
                let _ = json_line(note_json(flow, note, *at));
            }
            Event::Note { flow, note, at } => log::info!("{}", note_line(flow, note, *at)),
            Event::Finished { .. } => {}
        }
    }
}

/// A probe sent, as a `--json -v` event.
pub fn probe_json(flow: &Flow, p: &Segment, index: u8, at: Duration) -> Value {
    json!({
        "event": "probe", "flow": flow.to_string(), "probe": index,
        "seq": p.seq.0, "ack": p.ack.0, "ts": p.ts.is_some(), "t_us": micros(at),
    })
}

/// A probe sent, as a `-v` log line.
pub fn probe_line(flow: &Flow, p: &Segment, index: u8, at: Duration) -> String {
    format!(
        "{flow} probe {index} seq={} ack={} win={}{} at {}",
        p.seq,
        p.ack,
        p.window,
        p.ts.map_or(String::new(), |t| format!(
            " tsval={} tsecr={}",
            t.tsval, t.tsecr
        )),
        duration(at)
    )
}

/// A progress note as a `--json -v` event.
pub fn note_json(flow: &Flow, note: &Note, at: Duration) -> Value {
    match note {
        Note::Learned(n) => json!({
            "event": "learned", "flow": flow.to_string(), "snd_nxt": n.snd_nxt.0,
            "rcv_nxt": n.rcv_nxt.0, "ts": n.ts.is_some(), "t_us": micros(at),
        }),
        Note::Waiting { idle, until } => json!({
            "event": "waiting", "flow": flow.to_string(), "idle_ms": millis(*idle),
            "probe_at_ms": millis(*until),
        }),
        Note::Busy => json!({"event": "busy", "flow": flow.to_string()}),
        Note::Traffic { idle } => json!({
            "event": "traffic", "flow": flow.to_string(), "idle_ms": millis(*idle),
        }),
        Note::Ignored(why) => {
            json!({"event": "ignored", "flow": flow.to_string(), "reason": why})
        }
        Note::Borrowed(why) => {
            json!({"event": "borrowed", "flow": flow.to_string(), "reason": why})
        }
        Note::LearnRetry { next } => json!({
            "event": "learn-retry", "flow": flow.to_string(), "try": next,
            "of": crate::engine::LEARN_TRIES, "t_us": micros(at),
        }),
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
            duration(at)
        ),
        Note::Waiting { idle, until } => format!(
            "{flow} idle for {}, first probe at {}",
            duration(*idle),
            duration(*until)
        ),
        Note::Busy => {
            format!("{flow} has data in flight: the kernel's ACK clock decides, no probe is sent")
        }
        Note::Traffic { idle } => format!(
            "{flow} received a segment {} ago, after kaprobe started: the peer is there",
            duration(*idle)
        ),
        Note::Ignored(why) => format!("{flow} ignored: {why}"),
        Note::Borrowed(why) => {
            format!("{flow} the answer may belong to another probe ({why}): rtt not reported")
        }
        Note::LearnRetry { next } => format!(
            "{flow} no challenge ACK yet: the local socket answers at most one injected SYN per \
             net.ipv4.tcp_invalid_ratelimit (500ms by default), so kaprobe waited {} and injects \
             again (try {next} of {}) at {}",
            duration(crate::engine::LEARN_RETRY),
            crate::engine::LEARN_TRIES,
            duration(at)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow() -> Flow {
        Flow {
            local: "198.18.0.2:40000".parse().unwrap(),
            remote: "198.51.100.2:9000".parse().unwrap(),
        }
    }

    /// Asserts that `line` contains each of `parts`.
    fn says(line: &str, parts: &[&str]) {
        for part in parts {
            assert!(line.contains(part), "{part:?} missing from: {line}");
        }
    }

    /// A verdict decided by an answer to a probe (or its absence), with no ICMP error or
    /// local cause.
    fn verdict(
        kind: VerdictKind,
        probes_sent: u8,
        rtt_us: Option<u64>,
        elapsed_ms: u64,
    ) -> Verdict {
        Verdict {
            kind,
            probes_sent,
            rtt: rtt_us.map(Duration::from_micros),
            elapsed: Duration::from_millis(elapsed_ms),
            icmp: None,
            cause: None,
            evidence: Evidence::Probe,
            source: crate::engine::SeqSource::Kernel,
        }
    }

    /// An `unreachable` for an ICMP host-unreachable from the first hop, 120 µs after the
    /// probe.
    fn host_unreachable(probes_sent: u8, elapsed_ms: u64) -> Verdict {
        Verdict {
            icmp: Some(IcmpInfo {
                icmp_type: 3,
                code: 1,
                from: "198.18.0.1".parse().unwrap(),
                name: "host-unreachable",
            }),
            ..verdict(VerdictKind::Unreachable, probes_sent, Some(120), elapsed_ms)
        }
    }

    #[test]
    fn alive_line_reads_like_the_spec() {
        let v = verdict(VerdictKind::Alive, 1, Some(84), 1);
        assert_eq!(
            verdict_line(&flow(), &v),
            "198.18.0.2:40000-198.51.100.2:9000 alive rtt=0.084ms probes=1"
        );
    }

    #[test]
    fn json_has_every_spec_field() {
        let v = host_unreachable(2, 1003);
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
        let v = verdict(VerdictKind::Dead, 3, None, 3000);
        assert!(verdict_json(&flow(), &v, 0)["rtt_us"].is_null());
        assert_eq!(
            verdict_line(&flow(), &v),
            "198.18.0.2:40000-198.51.100.2:9000 dead probes=3 after=3s"
        );
    }

    #[test]
    fn a_learning_retry_says_why_it_waited() {
        let note = Note::LearnRetry { next: 2 };
        let j = note_json(&flow(), &note, Duration::from_millis(600));
        assert_eq!(j["event"], "learn-retry");
        assert_eq!(j["try"], 2);
        assert_eq!(j["t_us"], 600_000);
        let line = note_line(&flow(), &note, Duration::from_millis(600));
        says(
            &line,
            &["tcp_invalid_ratelimit", "waited 600ms", "try 2 of 3"],
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
        says(&line, &["another probe", "rtt not reported"]);
    }

    #[test]
    fn kernel_ack_clock_evidence_in_json() {
        let v = Verdict {
            evidence: Evidence::KernelAckClock,
            ..verdict(VerdictKind::Alive, 0, None, 1000)
        };
        let j = verdict_json(&flow(), &v, 0);
        assert_eq!(j["evidence"], "kernel-ack-clock");
        assert!(j["rtt_us"].is_null());
        assert_eq!(
            verdict_line(&flow(), &v),
            "198.18.0.2:40000-198.51.100.2:9000 alive evidence=kernel-ack-clock probes=0"
        );
    }

    #[test]
    fn a_probe_sent_in_both_forms() {
        let f = flow();
        let p = Segment {
            window: 502,
            ts: Some(crate::wire::Timestamps { tsval: 7, tsecr: 9 }),
            ..Segment::bare(
                f.local,
                f.remote,
                crate::seq::SeqNumber(999),
                crate::seq::SeqNumber(5000),
                crate::wire::ACK,
            )
        };
        let at = Duration::from_millis(1500);
        let j = probe_json(&f, &p, 2, at);
        assert_eq!(
            j,
            json!({"event": "probe", "flow": "198.18.0.2:40000-198.51.100.2:9000",
                   "probe": 2, "seq": 999, "ack": 5000, "ts": true, "t_us": 1_500_000})
        );
        assert_eq!(
            probe_line(&f, &p, 2, at),
            "198.18.0.2:40000-198.51.100.2:9000 probe 2 seq=999 ack=5000 win=502 tsval=7 \
             tsecr=9 at 1.5s"
        );
    }

    #[test]
    fn outcomes_are_handed_back_in_order_and_progress_is_not() {
        let r = Reporter {
            json: false,
            verbose: false,
        };
        let alive = Outcome::Verdict(verdict(VerdictKind::Alive, 1, Some(84), 1));
        let other = Flow {
            local: "198.18.0.2:40001".parse().unwrap(),
            ..flow()
        };
        let events = vec![
            Event::Note {
                flow: other,
                note: Note::Busy,
                at: Duration::ZERO,
            },
            Event::Finished {
                flow: other,
                outcome: Outcome::Closed,
                ignored: 2,
            },
            Event::Note {
                flow: flow(),
                note: Note::Borrowed("why"),
                at: Duration::ZERO,
            },
            Event::Finished {
                flow: flow(),
                outcome: alive.clone(),
                ignored: 0,
            },
        ];
        assert_eq!(
            r.outcomes(events),
            vec![(other, Outcome::Closed, 2), (flow(), alive, 0)]
        );
    }

    #[test]
    fn a_watch_state_change_in_both_forms() {
        let dead = verdict(VerdictKind::Dead, 3, None, 3000);
        let change = StateChange {
            flow: flow(),
            state: "dead",
            previous: Some("alive"),
            verdict: Some(&dead),
        };
        let time = "2024-05-01T10:00:00.123Z";
        assert_eq!(
            change.line(Some(time)),
            "2024-05-01T10:00:00.123Z 198.18.0.2:40000-198.51.100.2:9000 dead probes=3 (was alive)"
        );
        assert_eq!(
            change.line(None),
            "198.18.0.2:40000-198.51.100.2:9000 dead probes=3 (was alive)"
        );
        assert_eq!(
            change.json(time),
            json!({"event": "state", "time": time, "flow": "198.18.0.2:40000-198.51.100.2:9000",
                   "local": "198.18.0.2:40000", "remote": "198.51.100.2:9000", "state": "dead",
                   "previous": "alive", "probes_sent": 3, "rtt_us": null})
        );
        let unreachable = host_unreachable(1, 5);
        let change = StateChange {
            verdict: Some(&unreachable),
            state: "unreachable",
            previous: None,
            ..change
        };
        assert_eq!(
            change.line(None),
            "198.18.0.2:40000-198.51.100.2:9000 unreachable rtt=0.12ms icmp=host-unreachable \
             from=198.18.0.1"
        );
        let j = change.json(time);
        assert_eq!(j["icmp"], verdict_json(&flow(), &unreachable, 0)["icmp"]);
        assert_eq!((&j["rtt_us"], &j["previous"]), (&json!(120), &Value::Null));
        let closed = StateChange {
            verdict: None,
            state: "closed",
            previous: Some("alive"),
            ..change
        };
        assert_eq!(
            closed.line(None),
            "198.18.0.2:40000-198.51.100.2:9000 closed (was alive)"
        );
        assert!(closed.json(time).get("probes_sent").is_none());
    }

    #[test]
    fn every_printed_object_is_stamped_with_the_format_version() {
        let j = stamped(verdict_json(
            &flow(),
            &verdict(VerdictKind::Alive, 1, None, 1),
            0,
        ));
        assert_eq!(j["v"], JSON_VERSION);
        assert_eq!(j["event"], "verdict");
        assert_eq!(stamped(json!("not an object")), json!("not an object"));
    }

    #[test]
    fn errors_as_json_objects_name_their_class_and_exit_code() {
        let cases = [
            (Error::Usage("bad flow".into()), "usage", 2),
            (Error::NoConnection("none".into()), "no-connection", 5),
            (
                Error::Privilege {
                    what: "opening a raw socket".into(),
                    cap: caps::Capability::CAP_NET_RAW,
                },
                "privilege",
                6,
            ),
            (Error::Runtime("signed".into()), "failure", 7),
            (
                Error::Io {
                    context: "reading".into(),
                    source: io::Error::other("boom"),
                },
                "failure",
                7,
            ),
        ];
        for (e, kind, exit) in cases {
            let j = error_json(&e);
            assert_eq!(j["event"], "error", "{j}");
            assert_eq!(j["error"], kind, "{j}");
            assert_eq!(j["exit"], exit, "{j}");
            assert_eq!(j["message"], e.to_string(), "{j}");
        }
        let j = error_json(&Error::Privilege {
            what: "x".into(),
            cap: caps::Capability::CAP_NET_ADMIN,
        });
        assert_eq!(j["capability"], "CAP_NET_ADMIN");
        let j = usage_error_json(
            "error: unexpected argument '--prob' found\n\n  tip: a similar argument exists\n",
        );
        assert_eq!(j["message"], "unexpected argument '--prob' found");
        assert_eq!((&j["error"], &j["exit"]), (&json!("usage"), &json!(2)));
    }

    #[test]
    fn one_duration_style() {
        let ms = Duration::from_millis;
        for (d, want) in [
            (Duration::ZERO, "0s"),
            (Duration::from_micros(84), "0.084ms"),
            (Duration::from_micros(12_500), "12.5ms"),
            (ms(410), "410ms"),
            (ms(1000), "1s"),
            (ms(4800), "4.8s"),
            (ms(3539), "3.539s"),
            (ms(60_000), "1m"),
            (ms(924_600), "15m24.6s"),
            (ms(3_852_000), "1h4m12s"),
            (ms(7_875_000), "2h11m15s"),
            (ms(7_205_000), "2h5s"),
            (Duration::from_secs(86_400 * 3 + 4 * 3600), "3d4h"),
            (Duration::from_secs(u64::MAX), "213503982334601d7h15s"),
        ] {
            assert_eq!(duration(d), want, "{d:?}");
        }
    }

    #[test]
    fn plurals() {
        assert_eq!(count(1u64, "connection"), "1 connection");
        assert_eq!(count(0u64, "connection"), "0 connections");
        assert_eq!(count(2u64, "process"), "2 processes");
    }

    #[test]
    fn keepalive_cell_names_a_hidden_timer() {
        let hidden = Keepalive::Unknown("retransmit");
        assert_eq!(keepalive(&hidden), "? (retransmit timer)");
        assert_eq!(
            keepalive(&Keepalive::On {
                next: Duration::from_millis(59_200),
                probes: 2
            }),
            "on next=59.2s probes=2"
        );
    }

    #[test]
    fn keepalive_json_fields() {
        let mut o = json!({});
        keepalive_fields(
            &Keepalive::On {
                next: Duration::from_millis(900),
                probes: 1,
            },
            &mut o,
        );
        assert_eq!(
            o,
            json!({"keepalive": "on", "keepalive_next_ms": 900, "keepalive_probes": 1,
                   "timer": "keepalive"})
        );
        let mut o = json!({});
        keepalive_fields(&Keepalive::Off, &mut o);
        assert_eq!(o["keepalive"], "off");
        assert!(o["keepalive_next_ms"].is_null() && o["timer"].is_null());
    }
}
