//! `kaprobe nat-timeout HOST:PORT`: after how long idle does something on the path forget a
//! connection?
//!
//! Opens several connections at once and leaves each idle for a different time on a
//! geometric ladder up to `--max`; each is probed once when its time comes (a probe refreshes
//! NAT state, so a connection serves one measurement). The first one found dead ends the
//! round: the timeout lies between the longest idle time that stayed alive and it. Further
//! rounds spread fresh connections across that bracket until it is narrower than
//! `--resolution`.

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use clap::Args;
use serde_json::json;

use super::Ctx;
use crate::cli::parse_duration;
use crate::engine::{Config, Outcome, SeqSource, Timing, VerdictKind};
use crate::error::{Error, Result};
use crate::fleet::Fleet;
use crate::flow::{Flow, parse_endpoint};
use crate::output::Reporter;
use crate::sys::diag::Diag;
use crate::sys::privilege::Bounding;

#[derive(Args, Debug)]
pub struct NatTimeoutArgs {
    /// The service to open test connections to
    #[arg(value_name = "HOST:PORT", value_parser = parse_endpoint)]
    pub target: SocketAddr,
    /// Connections idling at once (one measurement each)
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u16).range(2..=256))]
    pub parallel: u16,
    /// Longest idle time to try
    #[arg(long, value_name = "DUR", default_value = "30m", value_parser = parse_duration)]
    pub max: Duration,
    /// Shortest idle time to try
    #[arg(long, value_name = "DUR", default_value = "1s", value_parser = parse_duration)]
    pub min: Duration,
    /// Stop when the bracket is narrower than this share of its lower bound (at least 1 s)
    #[arg(long, value_name = "PERCENT", default_value = "10%", value_parser = parse_percent)]
    pub resolution: f64,
}

fn parse_percent(s: &str) -> std::result::Result<f64, String> {
    let n: f64 = s
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("'{s}' is not a percentage; write e.g. 10%"))?;
    if n > 0.0 && n < 100.0 {
        Ok(n / 100.0)
    } else {
        Err(format!("'{s}' must be between 0% and 100%"))
    }
}

/// One idle time tried and what the probe found.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Measurement {
    pub idle: Duration,
    pub verdict: VerdictKind,
}

/// What is known so far: the longest idle time that stayed alive, the shortest that died.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bracket {
    pub alive: Duration,
    pub dead: Option<Duration>,
}

impl Bracket {
    pub fn add(&mut self, m: &Measurement) {
        match m.verdict {
            VerdictKind::Alive => self.alive = self.alive.max(m.idle),
            _ => self.dead = Some(self.dead.map_or(m.idle, |d| d.min(m.idle))),
        }
    }

    /// Narrow enough: the gap is below `share` of the lower bound, or below one second.
    pub fn resolved(&self, share: f64) -> bool {
        match self.dead {
            None => true,
            Some(d) => {
                let gap = d.saturating_sub(self.alive);
                gap <= Duration::from_secs(1).max(self.alive.mul_f64(share))
            }
        }
    }
}

/// `n` idle times from `lo` to `hi`, geometric (first round) or even (narrowing rounds).
pub fn ladder(lo: Duration, hi: Duration, n: u16, geometric: bool) -> Vec<Duration> {
    let n = usize::from(n.max(2));
    let (lo_s, hi_s) = (
        lo.as_secs_f64().max(0.001),
        hi.as_secs_f64().max(lo.as_secs_f64()),
    );
    (0..n)
        .map(|i| {
            let f = i as f64 / (n - 1) as f64;
            let s = if geometric {
                lo_s * (hi_s / lo_s).powf(f)
            } else {
                lo_s + (hi_s - lo_s) * f
            };
            Duration::from_secs_f64(s)
        })
        .collect()
}

/// Inside a bracket, `n` points strictly between its ends.
fn inner_ladder(b: &Bracket, n: u16) -> Vec<Duration> {
    let dead = b.dead.unwrap_or(b.alive);
    let step = dead.saturating_sub(b.alive).as_secs_f64() / (f64::from(n) + 1.0);
    (1..=n)
        .map(|i| b.alive + Duration::from_secs_f64(step * f64::from(i)))
        .collect()
}

pub fn run(args: &NatTimeoutArgs, ctx: &Ctx) -> Result<i32> {
    if args.min >= args.max {
        return Err(Error::Usage("--min must be shorter than --max".into()));
    }
    let reporter = Reporter {
        json: ctx.json,
        verbose: ctx.verbose,
    };
    let progress = |msg: String| {
        if !ctx.quiet {
            eprintln!("kaprobe: {msg}");
        }
    };
    let mut all: Vec<Measurement> = Vec::new();
    let mut bracket = Bracket {
        alive: Duration::ZERO,
        dead: None,
    };
    let mut round = 1;
    let mut ladder_now = ladder(args.min, args.max, args.parallel, true);
    let mut clock = Duration::ZERO;
    // One capture socket for every round; test connections need no privilege to open.
    let mut fleet = Fleet::open(&[], Diag::open()?, 1000, reporter)?;
    fleet.drop_privileges(&[], Bounding::Drop)?;
    loop {
        progress(format!(
            "round {round}: {} connections idling {} .. {}",
            ladder_now.len(),
            humantime::format_duration(round_ms(ladder_now[0])),
            humantime::format_duration(round_ms(ladder_now[ladder_now.len() - 1]))
        ));
        let (measured, took) = measure_round(&mut fleet, args.target, &ladder_now, &progress)?;
        clock += took;
        for m in &measured {
            bracket.add(m);
        }
        all.extend(measured.iter().copied());
        if let Some(m) = measured.iter().find(|m| m.verdict == VerdictKind::Reset) {
            progress(format!(
                "something on the path answered with an RST after {} idle",
                humantime::format_duration(round_ms(m.idle))
            ));
        }
        if bracket.resolved(args.resolution) {
            break;
        }
        round += 1;
        ladder_now = inner_ladder(&bracket, args.parallel);
    }
    fleet.close();
    print_result(&bracket, &all, args, ctx.json, clock);
    Ok(0)
}

fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64)
}

/// Opens one connection per idle time, probes each when its time has come, and stops at the
/// first that is not alive (longer ones would be too). Returns what was measured.
fn measure_round(
    fleet: &mut Fleet,
    target: SocketAddr,
    idles: &[Duration],
    progress: &dyn Fn(String),
) -> Result<(Vec<Measurement>, Duration)> {
    let start = fleet.now();
    let mut conns: Vec<(TcpStream, Flow, Duration)> = Vec::with_capacity(idles.len());
    for &idle in idles {
        let stream = TcpStream::connect_timeout(&target, Duration::from_secs(5)).map_err(|e| {
            Error::Runtime(format!("cannot open a test connection to {target}: {e}"))
        })?;
        let flow = Flow {
            local: stream.local_addr().map_err(|e| Error::Io {
                context: "test connection".into(),
                source: e,
            })?,
            remote: target,
        };
        conns.push((stream, flow, idle));
    }
    let flows: Vec<Flow> = conns.iter().map(|c| c.1).collect();
    fleet.refilter(&flows)?;
    for (_, flow, idle) in &conns {
        let timing = Timing {
            time: *idle,
            intvl: Duration::from_millis(500),
            probes: 2,
        };
        fleet.add(
            Config {
                flow: *flow,
                route: Default::default(),
                timing,
                source: SeqSource::Local,
                garbage_octet: false,
            },
            None,
        );
    }
    let mut out = Vec::new();
    let mut next_note = start + Duration::from_secs(10);
    while fleet.active() > 0 {
        for (flow, outcome, _) in fleet.step(Duration::from_secs(1))? {
            let Some((_, _, idle)) = conns.iter().find(|c| c.1 == flow) else {
                continue;
            };
            let verdict = match outcome {
                Outcome::Verdict(v) => v.kind,
                Outcome::Closed => VerdictKind::Reset,
                Outcome::LearnFailed => {
                    return Err(Error::Runtime(format!(
                        "could not learn the sequence numbers of {flow}"
                    )));
                }
            };
            log::info!(
                "idle {}: {}",
                humantime::format_duration(round_ms(*idle)),
                verdict.as_str()
            );
            out.push(Measurement {
                idle: *idle,
                verdict,
            });
            if verdict != VerdictKind::Alive {
                // Every longer idle time would die too: end the round.
                for (_, f, i) in &conns {
                    if i > idle {
                        fleet.remove(f);
                    }
                }
            }
        }
        if fleet.now() >= next_note && fleet.active() > 0 {
            next_note += Duration::from_secs(10);
            let longest = conns
                .iter()
                .map(|c| c.2)
                .filter(|i| !out.iter().any(|m| m.idle == *i))
                .max();
            if let Some(l) = longest {
                progress(format!(
                    "{} connections still idling; at most {} left in this round",
                    fleet.active(),
                    humantime::format_duration(round_ms(l.saturating_sub(fleet.now() - start)))
                ));
            }
        }
    }
    let took = fleet.now() - start;
    out.sort_by_key(|m| m.idle);
    Ok((out, took))
}

fn print_result(
    b: &Bracket,
    all: &[Measurement],
    args: &NatTimeoutArgs,
    json: bool,
    took: Duration,
) {
    let fmt = |d: Duration| format!("{:.1} s", d.as_secs_f64());
    // A margin of a tenth below the longest idle time seen to survive.
    let advice = b
        .dead
        .map(|_| Duration::from_secs((b.alive.as_secs_f64() * 0.9).floor() as u64));
    if json {
        let measurements: Vec<_> = all
            .iter()
            .map(|m| json!({"idle_ms": m.idle.as_millis() as u64, "verdict": m.verdict.as_str()}))
            .collect();
        println!(
            "{}",
            json!({
                "event": "result", "target": args.target.to_string(),
                "lower_ms": b.alive.as_millis() as u64,
                "upper_ms": b.dead.map(|d| d.as_millis() as u64),
                "max_ms": args.max.as_millis() as u64,
                "reset": all.iter().any(|m| m.verdict == VerdictKind::Reset),
                "recommended_keepalive_time_s": advice.map(|a| a.as_secs()),
                "measurements": measurements, "elapsed_ms": took.as_millis() as u64,
            })
        );
        return;
    }
    match (b.dead, advice) {
        (Some(d), Some(a)) => {
            let reset = all.iter().any(|m| m.verdict == VerdictKind::Reset);
            println!(
                "idle timeout between {} and {}{}; set keepalive time below {}",
                fmt(b.alive),
                fmt(d),
                if reset {
                    " (something on the path answers with an RST)"
                } else {
                    ""
                },
                humantime::format_duration(a.max(Duration::from_secs(1)))
            );
        }
        _ => println!(
            "no idle timeout up to {}",
            humantime::format_duration(args.max)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: f64) -> Duration {
        Duration::from_secs_f64(x)
    }

    #[test]
    fn first_round_is_geometric_from_min_to_max() {
        let l = ladder(s(1.0), s(1800.0), 8, true);
        assert_eq!(l.len(), 8);
        assert_eq!(l[0], s(1.0));
        assert!((l[7].as_secs_f64() - 1800.0).abs() < 1e-6);
        let ratio = l[1].as_secs_f64() / l[0].as_secs_f64();
        assert!((ratio - 1800f64.powf(1.0 / 7.0)).abs() < 1e-9);
    }

    #[test]
    fn narrowing_rounds_split_the_bracket_evenly() {
        let b = Bracket {
            alive: s(2.0),
            dead: Some(s(11.0)),
        };
        let l = inner_ladder(&b, 8);
        assert_eq!(
            l,
            (1..=8).map(|i| s(2.0 + f64::from(i))).collect::<Vec<_>>()
        );
    }

    #[test]
    fn bracket_tracks_longest_alive_and_shortest_dead() {
        let mut b = Bracket {
            alive: Duration::ZERO,
            dead: None,
        };
        for (i, k) in [
            (1.0, VerdictKind::Alive),
            (9.0, VerdictKind::Dead),
            (3.0, VerdictKind::Alive),
            (6.0, VerdictKind::Dead),
        ] {
            b.add(&Measurement {
                idle: s(i),
                verdict: k,
            });
        }
        assert_eq!(
            b,
            Bracket {
                alive: s(3.0),
                dead: Some(s(6.0))
            }
        );
        assert!(!b.resolved(0.1));
        assert!(
            Bracket {
                alive: s(4.8),
                dead: Some(s(5.2))
            }
            .resolved(0.1)
        );
        assert!(
            Bracket {
                alive: s(100.0),
                dead: Some(s(109.0))
            }
            .resolved(0.1)
        );
        assert!(
            !Bracket {
                alive: s(100.0),
                dead: Some(s(112.0))
            }
            .resolved(0.1)
        );
        assert!(
            Bracket {
                alive: s(1800.0),
                dead: None
            }
            .resolved(0.1),
            "nothing died: done"
        );
    }

    #[test]
    fn percentages_parse() {
        assert_eq!(parse_percent("10%"), Ok(0.1));
        assert_eq!(parse_percent("5"), Ok(0.05));
        assert!(parse_percent("0%").is_err());
        assert!(parse_percent("abc").is_err());
    }
}
