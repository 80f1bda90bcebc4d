//! `kaprobe sweep`: the probe loop on every matching established connection at once.
//!
//! With `--json` each verdict is printed the moment it is decided, then a summary; the human
//! table is sorted and printed at the end. SIGINT/SIGTERM end the sweep early: the decided
//! verdicts, the rest as `interrupted`, the summary, exit 130 (README "Pipes, signals and limits").
//! With `--textfile` the sweep's metrics go to a file for node_exporter at the end, after
//! an interruption too (README "node_exporter").

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use clap::Args;
use serde_json::{Value, json};

use super::Ctx;
use super::args::{ProbeStyle, RateArgs, TimingArgs};
use crate::cmd::{prober, source};
use crate::engine::{Outcome, Verdict};
use crate::error::{Error, Result};
use crate::exit::{self, ExitStatus};
use crate::filter::FilterArgs;
use crate::fleet::Fleet;
use crate::flow::{Flow, Signature};
use crate::metrics::{self, ConnState, Metrics};
use crate::output::{self, Reporter, count as plural, duration, unfinished_json, verdict_json};
use crate::prober::run::{self, Skipped};
use crate::prober::{Options, Prober};
use crate::sys::catch_stop_signals;

#[derive(Args, Debug)]
pub struct SweepArgs {
    #[command(flatten)]
    pub filter: FilterArgs,
    #[command(flatten)]
    pub timing: TimingArgs,
    #[command(flatten)]
    pub style: ProbeStyle,
    #[command(flatten)]
    pub rate: RateArgs,
    /// Also write the sweep's metrics to PATH for node_exporter's textfile collector
    /// (Prometheus text format, replaced atomically), e.g.
    /// /var/lib/prometheus/node-exporter/kaprobe.prom
    #[arg(long, value_name = "PATH")]
    pub textfile: Option<PathBuf>,
}

/// One connection's result.
enum Row {
    /// A verdict, and the answers ignored on the way.
    Verdict(Verdict, u64),
    /// Signed (TCP-MD5): listed, never probed (README "`kaprobe sweep`").
    Signed(Signature),
    /// The connection closed before a verdict.
    Closed(u64),
    /// Its sequence numbers could not be learned.
    Failed(u64),
    /// SIGINT/SIGTERM came before its verdict.
    Interrupted,
}

impl Row {
    fn of(outcome: Outcome, ignored: u64) -> Row {
        match outcome {
            Outcome::Verdict(v) => Row::Verdict(v, ignored),
            Outcome::Closed => Row::Closed(ignored),
            Outcome::LearnFailed => Row::Failed(ignored),
        }
    }

    /// Sort key: alive first, problems last (next to the summary on a terminal), verdicts
    /// in the order of their exit status.
    fn rank(&self) -> u8 {
        match self {
            Row::Verdict(v, _) => exit::severity(v.kind),
            Row::Signed(_) => 9,
            Row::Closed(_) => 10,
            Row::Failed(_) => 11,
            Row::Interrupted => 12,
        }
    }

    fn label(&self) -> &'static str {
        match self {
            Row::Verdict(v, _) => v.kind.as_str(),
            Row::Signed(_) => "signed",
            Row::Closed(_) => "closed",
            Row::Failed(_) => "failed",
            Row::Interrupted => "interrupted",
        }
    }

    fn json(&self, flow: &Flow) -> Value {
        match self {
            Row::Verdict(v, ignored) => verdict_json(flow, v, *ignored),
            Row::Signed(sig) => {
                let mut o = unfinished_json(flow, self.label(), None);
                o["signature"] = json!(sig.token());
                o["probes_sent"] = json!(0);
                o
            }
            Row::Closed(ignored) | Row::Failed(ignored) => {
                unfinished_json(flow, self.label(), Some(*ignored))
            }
            Row::Interrupted => unfinished_json(flow, self.label(), None),
        }
    }
}

pub fn run(args: &SweepArgs, ctx: &Ctx) -> Result<ExitStatus> {
    if let Some(path) = &args.textfile {
        metrics::check_textfile_path(path)?;
    }
    catch_stop_signals();
    let opts = prober::options(&args.timing, &args.style, Some(args.rate.rate))?;
    if let Some(w) = args.timing.timing().warning() {
        log::warn!("{w}");
    }
    let lib = prober::command_prober()?;
    lib.run(|| sweep(args, ctx, &lib, &opts))
}

/// The sweep, inside the prober's namespace.
fn sweep(args: &SweepArgs, ctx: &Ctx, lib: &Prober, opts: &Options) -> Result<ExitStatus> {
    let chosen = source::choose(args.style.seq_source)?;
    let started = Instant::now();
    let started_at = SystemTime::now();
    let plan = match run::plan(&args.filter.filter(), chosen) {
        Ok(plan) => plan,
        Err(e @ Error::NoConnection(_)) => {
            no_match_textfile(args, started, started_at)?;
            return Err(e);
        }
        Err(e) => return Err(e),
    };
    let run::Opened {
        fleets,
        all,
        skipped,
    } = run::open_fleets(plan, opts, lib.behaviour())?;
    // Signed connections and those the source must not touch get their own rows, and no
    // packet.
    let skipped: Vec<(Flow, Row)> = skipped
        .into_iter()
        .map(|(flow, why)| {
            let row = match why {
                Skipped::Signed(sig) => Row::Signed(sig),
                Skipped::Refused => Row::Failed(0),
            };
            (flow, row)
        })
        .collect();
    let reporter = ctx.reporter();
    // Without capabilities now: can the textfile still be written? Before any probe.
    let metrics = match &args.textfile {
        Some(path) => {
            metrics::check_writable(path)?;
            let m = Metrics::for_sweep();
            let not_probed: HashSet<Flow> = skipped.iter().map(|(f, _)| *f).collect();
            for flow in all.iter().filter(|f| !not_probed.contains(f)) {
                m.set_state(flow, ConnState::Pending);
            }
            Some((m, path.as_path()))
        }
        None => None,
    };
    let Swept {
        rows,
        probes,
        elapsed,
    } = probe(fleets, skipped, all.len(), lib, reporter, started)?;
    if let Some((m, _)) = &metrics {
        record(m, &rows, probes, started_at, elapsed);
    }
    let status = finish(&all, rows, elapsed, ctx.json)?;
    if let Some((m, path)) = metrics {
        write_textfile(&m, path)?;
    }
    Ok(status)
}

/// When no established connection matches, the textfile says so too (zero connections),
/// rather than leaving an older sweep's figures for the collector to read.
fn no_match_textfile(args: &SweepArgs, started: Instant, started_at: SystemTime) -> Result<()> {
    if let Some(path) = &args.textfile {
        // Written as the file of a sweep that probed would be: without capabilities.
        crate::sys::privilege::drop_privileges(&[], None)?;
        let m = Metrics::for_sweep();
        m.sweep_times(started_at, started.elapsed());
        m.write_textfile(path)?;
    }
    Ok(())
}

/// Runs the fleets to the end, after the rows of the connections not probed (printed first
/// with JSON); each row is printed as soon as it is decided. Returns every row, the probes
/// sent, and the time since `started` when the last fleet stopped.
fn probe(
    fleets: Vec<Fleet>,
    skipped: Vec<(Flow, Row)>,
    flows: usize,
    lib: &Prober,
    reporter: Reporter,
    started: Instant,
) -> Result<Swept> {
    let mut rows: Vec<(Flow, Row)> = Vec::with_capacity(flows);
    if reporter.json {
        for (flow, row) in &skipped {
            output::json_line(row.json(flow))?;
        }
    }
    rows.extend(skipped);
    let watch = prober::Shown(reporter);
    let result = run::run_fleets(fleets, &watch, &mut |flow, outcome, ignored| {
        let row = Row::of(outcome, ignored);
        let printed = if reporter.json {
            output::json_line(row.json(&flow))
        } else {
            Ok(())
        };
        rows.push((flow, row));
        printed
    });
    let elapsed = started.elapsed();
    let probes = run::close_fleets(result?, lib.behaviour());
    Ok(Swept {
        rows,
        probes,
        elapsed,
    })
}

/// What the fleets left: every row, the probes sent, and how long the sweep took.
struct Swept {
    rows: Vec<(Flow, Row)>,
    probes: u64,
    elapsed: Duration,
}

/// The sweep's rows in its metrics: each verdict moves its connection from `pending`;
/// closed connections leave the gauges; those without a verdict (numbers not learned,
/// interrupted) stay `pending`. Signed connections were never probed and are not counted.
fn record(m: &Metrics, rows: &[(Flow, Row)], probes: u64, started: SystemTime, elapsed: Duration) {
    for (flow, row) in rows {
        match row {
            Row::Verdict(v, ignored) => {
                m.decided(flow, v.kind, v.rtt);
                m.ignored(*ignored);
            }
            Row::Closed(ignored) => {
                m.forget(flow);
                m.ignored(*ignored);
            }
            Row::Failed(ignored) => m.ignored(*ignored),
            Row::Signed(_) | Row::Interrupted => {}
        }
    }
    m.probe_sent(probes);
    m.sweep_times(started, elapsed);
}

fn write_textfile(m: &Metrics, path: &Path) -> Result<()> {
    m.write_textfile(path)?;
    log::info!("wrote the sweep's metrics to {}", path.display());
    Ok(())
}

/// The connections without a row are `interrupted`; then the summary (JSON, after the rows
/// already streamed) or the sorted table, and the exit status.
fn finish(
    flows: &[Flow],
    mut rows: Vec<(Flow, Row)>,
    elapsed: Duration,
    json: bool,
) -> Result<ExitStatus> {
    let decided: HashSet<Flow> = rows.iter().map(|(f, _)| *f).collect();
    let rest: Vec<(Flow, Row)> = flows
        .iter()
        .filter(|f| !decided.contains(f))
        .map(|f| (*f, Row::Interrupted))
        .collect();
    if json {
        for (flow, row) in &rest {
            output::json_line(row.json(flow))?;
        }
    }
    rows.extend(rest);
    rows.sort_by_key(|(flow, row)| (row.rank(), *flow));
    if json {
        output::json_line(summary_json(&rows, elapsed))?;
    } else {
        output::print(&table(&rows, elapsed))?;
    }
    Ok(status(&rows))
}

fn tally(rows: &[(Flow, Row)], label: &str) -> usize {
    rows.iter().filter(|(_, r)| r.label() == label).count()
}

/// Kinds that are always named in the summary, then those named only when they occur.
const ALWAYS: [&str; 4] = ["alive", "dead", "reset", "unreachable"];
const IF_ANY: [&str; 4] = ["signed", "closed", "failed", "interrupted"];

fn summary_line(rows: &[(Flow, Row)], elapsed: Duration) -> String {
    let counts: Vec<String> = ALWAYS
        .iter()
        .map(|k| (k, tally(rows, k)))
        .chain(
            IF_ANY
                .iter()
                .map(|k| (k, tally(rows, k)))
                .filter(|(_, n)| *n > 0),
        )
        .map(|(k, n)| format!("{n} {k}"))
        .collect();
    format!(
        "{}: {} in {}",
        plural(rows.len() as u64, "connection"),
        counts.join(", "),
        duration(elapsed)
    )
}

fn summary_json(rows: &[(Flow, Row)], elapsed: Duration) -> Value {
    let mut o = json!({
        "event": "summary", "connections": rows.len(), "elapsed_ms": output::millis(elapsed),
    });
    for k in ALWAYS.iter().chain(&IF_ANY) {
        o[*k] = json!(tally(rows, k));
    }
    o
}

/// The sorted table and the summary line.
fn table(rows: &[(Flow, Row)], elapsed: Duration) -> String {
    let width = rows
        .iter()
        .map(|(f, _)| f.to_string().len())
        .max()
        .unwrap_or(4)
        .max(4);
    let mut out = format!(
        "{:<width$}  {:<11}  {:>10}  PROBES  DETAIL\n",
        "FLOW", "VERDICT", "RTT"
    );
    for (flow, row) in rows {
        let (rtt, probes, detail) = match row {
            Row::Verdict(v, _) => (
                v.rtt.map_or("-".to_string(), duration),
                v.probes_sent.to_string(),
                output::verdict_details(v).join(" "),
            ),
            Row::Signed(sig) => ("-".to_string(), "0".to_string(), sig.as_str().to_string()),
            _ => ("-".to_string(), "-".to_string(), String::new()),
        };
        let line = format!(
            "{:<width$}  {:<11}  {:>10}  {probes:<6}  {detail}",
            flow.to_string(),
            row.label(),
            rtt
        );
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out.push_str(&summary_line(rows, elapsed));
    out.push('\n');
    out
}

/// Interrupted before every verdict: 130. Else the worst verdict decides (README "Exit
/// status"); signed connections do not change it. With no verdict at all, failures and
/// signed connections give 7, closed connections alone 5.
fn status(rows: &[(Flow, Row)]) -> ExitStatus {
    if rows.iter().any(|(_, r)| matches!(r, Row::Interrupted)) {
        return ExitStatus::Interrupted;
    }
    let verdicts = rows.iter().filter_map(|(_, r)| match r {
        Row::Verdict(v, _) => Some(v.kind),
        _ => None,
    });
    match ExitStatus::worst_verdict(verdicts) {
        Some(s) => s,
        None if rows
            .iter()
            .any(|(_, r)| matches!(r, Row::Failed(_) | Row::Signed(_))) =>
        {
            ExitStatus::Failure
        }
        None => ExitStatus::NoConnection,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::VerdictKind;

    fn row(kind: VerdictKind) -> Row {
        Row::Verdict(
            Verdict {
                kind,
                probes_sent: 1,
                rtt: None,
                elapsed: Duration::ZERO,
                icmp: None,
                cause: None,
                evidence: crate::engine::Evidence::Probe,
                source: crate::engine::SeqSource::Kernel,
            },
            0,
        )
    }

    fn f(port: u16) -> Flow {
        Flow {
            local: format!("198.18.0.2:{port}").parse().unwrap(),
            remote: "198.51.100.2:9000".parse().unwrap(),
        }
    }

    #[test]
    fn worst_verdict_decides_the_exit_status() {
        use ExitStatus::*;
        let rows = vec![
            (f(1), row(VerdictKind::Alive)),
            (f(2), row(VerdictKind::Reset)),
        ];
        assert_eq!(status(&rows), Reset);
        let rows = vec![
            (f(1), row(VerdictKind::Unreachable)),
            (f(2), row(VerdictKind::Reset)),
        ];
        assert_eq!(status(&rows), Unreachable);
        let rows = vec![
            (f(1), row(VerdictKind::Unreachable)),
            (f(2), row(VerdictKind::Dead)),
            (f(3), Row::Closed(0)),
        ];
        assert_eq!(status(&rows), Dead);
        assert_eq!(status(&[(f(1), Row::Closed(0))]), NoConnection);
        assert_eq!(
            status(&[(f(1), Row::Closed(0)), (f(2), Row::Failed(0))]),
            Failure
        );
        assert_eq!(status(&[(f(1), row(VerdictKind::Alive))]), Success);
        let rows = vec![(f(1), row(VerdictKind::Dead)), (f(2), Row::Interrupted)];
        assert_eq!(status(&rows), Interrupted);
    }

    #[test]
    fn signed_connections_are_counted_but_do_not_change_the_worst_verdict() {
        use ExitStatus::*;
        let md5 = || Row::Signed(Signature::Md5);
        assert_eq!(
            status(&[(f(1), row(VerdictKind::Alive)), (f(2), md5())]),
            Success
        );
        assert_eq!(
            status(&[(f(1), row(VerdictKind::Dead)), (f(2), md5())]),
            Dead
        );
        // Nothing could be probed: as `probe` on a signed connection, 7.
        assert_eq!(status(&[(f(1), md5())]), Failure);
        assert_eq!(status(&[(f(1), md5()), (f(2), Row::Closed(0))]), Failure);
        let rows = vec![(f(1), row(VerdictKind::Alive)), (f(2), md5())];
        assert!(summary_line(&rows, Duration::ZERO).contains("1 signed"));
        assert_eq!(rows[1].1.json(&f(2))["signature"], "tcp-md5");
    }

    #[test]
    fn summary_counts_every_verdict() {
        let rows = vec![
            (f(1), row(VerdictKind::Alive)),
            (f(2), row(VerdictKind::Alive)),
            (f(3), row(VerdictKind::Dead)),
        ];
        assert_eq!(
            summary_line(&rows, Duration::from_millis(410)),
            "3 connections: 2 alive, 1 dead, 0 reset, 0 unreachable in 410ms"
        );
        let rows = vec![(f(1), row(VerdictKind::Alive)), (f(2), Row::Interrupted)];
        assert_eq!(
            summary_line(&rows[..1], Duration::from_millis(1500)),
            "1 connection: 1 alive, 0 dead, 0 reset, 0 unreachable in 1.5s"
        );
        assert!(summary_line(&rows, Duration::ZERO).ends_with(", 1 interrupted in 0s"));
        let j = summary_json(&rows, Duration::from_millis(7));
        assert_eq!(j["interrupted"], 1);
        assert_eq!(j["closed"], 0);
        assert_eq!(j["elapsed_ms"], 7);
    }

    #[test]
    fn rows_without_a_verdict_have_every_field() {
        for (r, ignored) in [(Row::Closed(2), json!(2)), (Row::Interrupted, Value::Null)] {
            let j = r.json(&f(1));
            assert_eq!(j["event"], "verdict");
            assert_eq!(j["verdict"], r.label());
            assert_eq!(j["ignored"], ignored);
            for k in [
                "flow",
                "local",
                "remote",
                "probes_sent",
                "rtt_us",
                "elapsed_ms",
            ] {
                assert!(j.get(k).is_some(), "{k}: {j}");
            }
        }
    }

    #[test]
    fn the_table_is_sorted_problems_last() {
        let mut rows = vec![
            (f(3), Row::Interrupted),
            (f(2), row(VerdictKind::Dead)),
            (f(1), row(VerdictKind::Alive)),
        ];
        rows.sort_by_key(|(flow, row)| (row.rank(), *flow));
        let t = table(&rows, Duration::from_secs(2));
        let labels: Vec<&str> = t
            .lines()
            .skip(1)
            .take(3)
            .map(|l| l.split_whitespace().nth(1).unwrap())
            .collect();
        assert_eq!(labels, ["alive", "dead", "interrupted"]);
    }
}
