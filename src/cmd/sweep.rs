//! `kaprobe sweep`: the probe loop on every matching established connection at once.

use std::time::Duration;

use clap::Args;
use serde_json::json;

use super::Ctx;
use crate::cli::{ProbeStyle, RateArgs, TimingArgs};
use crate::engine::{Config, Outcome, Verdict};
use crate::error::{EXIT_NO_CONNECTION, EXIT_RUNTIME, Error, Result};
use crate::filter::FilterArgs;
use crate::fleet::Fleet;
use crate::flow::{Flow, Signature};
use crate::output::{Reporter, ms, verdict_json};
use crate::sys::diag::Diag;
use crate::sys::privilege::Bounding;

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
}

/// One connection's result.
enum Row {
    Verdict(Verdict, u64),
    /// Signed (TCP-MD5): listed, never probed (README "sweep").
    Signed(Signature),
    Closed,
    Failed,
}

impl Row {
    /// Sort key: alive first, problems last (next to the summary on a terminal).
    fn rank(&self) -> u8 {
        match self {
            Row::Verdict(v, _) => v.kind as u8,
            Row::Signed(_) => 9,
            Row::Closed => 10,
            Row::Failed => 11,
        }
    }

    fn label(&self) -> &'static str {
        match self {
            Row::Verdict(v, _) => v.kind.as_str(),
            Row::Signed(_) => "signed",
            Row::Closed => "closed",
            Row::Failed => "failed",
        }
    }
}

pub fn run(args: &SweepArgs, ctx: &Ctx) -> Result<i32> {
    let timing = args.timing.timing();
    if let Some(w) = timing.warning() {
        log::warn!("{w}");
    }
    let source = super::probe::seq_source(args.style.seq_source);
    let started = std::time::Instant::now();
    let mut diag = Diag::open()?;
    let mut conns = args.filter.require_established(&mut diag)?;
    conns.sort_by_key(|c| c.flow);
    // Signed connections cannot be probed: they get their own rows, and no packet.
    let signed: Vec<(Flow, Row)> = conns
        .iter()
        .filter_map(|c| Some((c.flow, Row::Signed(c.signature?))))
        .collect();
    conns.retain(|c| c.signature.is_none());
    let reporter = Reporter {
        json: ctx.json,
        verbose: ctx.verbose,
    };
    // Most of a probe's cost is the kernel's: the injected SYN, the challenge ACK and the probe
    // are processed inside our send calls. Large sweeps use every core, one fleet each, on
    // contiguous slices (so each capture filter stays a few port ranges).
    let workers = if conns.len() >= PARALLEL_FROM {
        std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(MAX_WORKERS)
    } else {
        1
    };
    let per = conns.len().div_ceil(workers);
    let rate = (args.rate.rate / workers as u32).max(1);
    let mut fleets = Vec::with_capacity(workers);
    for (i, slice) in conns.chunks(per.max(1)).enumerate() {
        let flows: Vec<Flow> = slice.iter().map(|c| c.flow).collect();
        let d = if i == 0 {
            std::mem::replace(&mut diag, Diag::open()?)
        } else {
            Diag::open()?
        };
        let mut fleet = Fleet::open(&flows, d, rate, reporter)?;
        for c in slice {
            let cfg = Config {
                flow: c.flow,
                route: c.route,
                timing,
                source,
                garbage_octet: args.style.garbage_octet,
            };
            fleet.add(cfg, Some(c.view()));
            fleet.prepare_route(c.flow.is_ipv6(), c.route)?;
        }
        fleets.push(fleet);
    }
    drop(diag);
    // Capabilities are per thread: drop them before any worker starts.
    for f in &mut fleets {
        f.open_all_families()?;
    }
    crate::fleet::drop_privileges(&[], Bounding::Drop)?;
    let results: Vec<Result<FleetRows>> = std::thread::scope(|scope| {
        let handles: Vec<_> = fleets
            .into_iter()
            .map(|f| scope.spawn(move || run_fleet(f)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::Runtime("a sweep worker panicked".into())))
            })
            .collect()
    });
    let elapsed = started.elapsed();
    let mut rows: Vec<(Flow, Row)> = Vec::with_capacity(conns.len() + signed.len());
    rows.extend(signed);
    for r in results {
        let (fleet, part) = r?;
        fleet.close();
        rows.extend(part);
    }
    rows.sort_by_key(|(flow, row)| (row.rank(), *flow));
    print_rows(&rows, elapsed, ctx.json);
    Ok(exit_code(&rows))
}

/// Sweeps smaller than this run on one thread.
const PARALLEL_FROM: usize = 2000;
const MAX_WORKERS: usize = 4;

/// A finished fleet and the results of its connections.
type FleetRows = (Fleet, Vec<(Flow, Row)>);

/// Drives one fleet until every connection in it has an outcome.
fn run_fleet(mut fleet: Fleet) -> Result<FleetRows> {
    let mut rows = Vec::with_capacity(fleet.active());
    while fleet.active() > 0 {
        for (flow, outcome, ignored) in fleet.step(Duration::from_secs(1))? {
            let row = match outcome {
                Outcome::Verdict(v) => Row::Verdict(v, ignored),
                Outcome::Closed => Row::Closed,
                Outcome::LearnFailed => Row::Failed,
            };
            rows.push((flow, row));
        }
    }
    Ok((fleet, rows))
}

fn count(rows: &[(Flow, Row)], label: &str) -> usize {
    rows.iter().filter(|(_, r)| r.label() == label).count()
}

fn summary_line(rows: &[(Flow, Row)], elapsed: Duration) -> String {
    let mut s = format!(
        "{} connections: {} alive, {} dead, {} reset, {} unreachable",
        rows.len(),
        count(rows, "alive"),
        count(rows, "dead"),
        count(rows, "reset"),
        count(rows, "unreachable"),
    );
    for extra in ["signed", "closed", "failed"] {
        let n = count(rows, extra);
        if n > 0 {
            s.push_str(&format!(", {n} {extra}"));
        }
    }
    s.push_str(&format!(" in {:.2} s", elapsed.as_secs_f64()));
    s
}

fn print_rows(rows: &[(Flow, Row)], elapsed: Duration, json: bool) {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if json {
        for (flow, row) in rows {
            let v = match row {
                Row::Verdict(v, ignored) => verdict_json(flow, v, *ignored),
                Row::Signed(sig) => json!({
                    "event": "verdict", "flow": flow.to_string(), "local": flow.local.to_string(),
                    "remote": flow.remote.to_string(), "verdict": "signed",
                    "signature": sig.token(), "probes_sent": 0, "rtt_us": null,
                    "elapsed_ms": null,
                }),
                other => json!({
                    "event": "verdict", "flow": flow.to_string(), "local": flow.local.to_string(),
                    "remote": flow.remote.to_string(), "verdict": other.label(), "probes_sent": 0,
                    "rtt_us": null, "elapsed_ms": null,
                }),
            };
            let _ = writeln!(out, "{v}");
        }
        let _ = writeln!(
            out,
            "{}",
            json!({
                "event": "summary", "connections": rows.len(),
                "alive": count(rows, "alive"), "dead": count(rows, "dead"),
                "reset": count(rows, "reset"), "unreachable": count(rows, "unreachable"),
                "signed": count(rows, "signed"),
                "closed": count(rows, "closed"), "failed": count(rows, "failed"),
                "elapsed_ms": elapsed.as_millis() as u64,
            })
        );
    } else {
        let width = rows
            .iter()
            .map(|(f, _)| f.to_string().len())
            .max()
            .unwrap_or(4)
            .max(4);
        let _ = writeln!(
            out,
            "{:<width$}  {:<11}  {:>10}  PROBES",
            "FLOW", "VERDICT", "RTT"
        );
        for (flow, row) in rows {
            let (rtt, probes) = match row {
                Row::Verdict(v, _) => {
                    (v.rtt.map_or("-".to_string(), ms), v.probes_sent.to_string())
                }
                _ => ("-".to_string(), "-".to_string()),
            };
            let _ = writeln!(
                out,
                "{:<width$}  {:<11}  {:>10}  {probes}",
                flow.to_string(),
                row.label(),
                rtt
            );
        }
        let _ = writeln!(out, "{}", summary_line(rows, elapsed));
    }
    let _ = out.flush();
}

/// The worst verdict decides (dead > unreachable > reset > alive); signed connections do not
/// change it. With no verdict at all, failures and signed connections give 7, closed
/// connections alone 5.
fn exit_code(rows: &[(Flow, Row)]) -> i32 {
    let worst = rows
        .iter()
        .filter_map(|(_, r)| match r {
            Row::Verdict(v, _) => Some(v.kind),
            _ => None,
        })
        .max();
    match worst {
        Some(k) => k.exit_code(),
        None if rows
            .iter()
            .any(|(_, r)| matches!(r, Row::Failed | Row::Signed(_))) =>
        {
            EXIT_RUNTIME
        }
        None => EXIT_NO_CONNECTION,
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
    fn worst_verdict_decides_the_exit_code() {
        let rows = vec![
            (f(1), row(VerdictKind::Alive)),
            (f(2), row(VerdictKind::Reset)),
        ];
        assert_eq!(exit_code(&rows), 3);
        let rows = vec![
            (f(1), row(VerdictKind::Unreachable)),
            (f(2), row(VerdictKind::Reset)),
        ];
        assert_eq!(exit_code(&rows), 4);
        let rows = vec![
            (f(1), row(VerdictKind::Unreachable)),
            (f(2), row(VerdictKind::Dead)),
            (f(3), Row::Closed),
        ];
        assert_eq!(exit_code(&rows), 1);
        assert_eq!(exit_code(&[(f(1), Row::Closed)]), 5);
        assert_eq!(exit_code(&[(f(1), Row::Closed), (f(2), Row::Failed)]), 7);
        assert_eq!(exit_code(&[(f(1), row(VerdictKind::Alive))]), 0);
    }

    #[test]
    fn signed_connections_are_counted_but_do_not_change_the_worst_verdict() {
        let md5 = || Row::Signed(Signature::Md5);
        let rows = vec![(f(1), row(VerdictKind::Alive)), (f(2), md5())];
        assert_eq!(exit_code(&rows), 0);
        let rows = vec![(f(1), row(VerdictKind::Dead)), (f(2), md5())];
        assert_eq!(exit_code(&rows), 1);
        // Nothing could be probed: as `probe` on a signed connection, 7.
        assert_eq!(exit_code(&[(f(1), md5())]), 7);
        assert_eq!(exit_code(&[(f(1), md5()), (f(2), Row::Closed)]), 7);
        let rows = vec![(f(1), row(VerdictKind::Alive)), (f(2), md5())];
        assert_eq!(
            summary_line(&rows, Duration::from_millis(20)),
            "2 connections: 1 alive, 0 dead, 0 reset, 0 unreachable, 1 signed in 0.02 s"
        );
        assert!(md5().rank() > row(VerdictKind::Dead).rank());
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
            "3 connections: 2 alive, 1 dead, 0 reset, 0 unreachable in 0.41 s"
        );
    }
}
