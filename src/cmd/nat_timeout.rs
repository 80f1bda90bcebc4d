//! `kaprobe nat-timeout HOST:PORT`: after how long idle does something on the path forget a
//! connection?
//!
//! Opens several connections at once and leaves each idle for a different time on a
//! geometric ladder up to `--max`; each is probed once when its time comes (a probe refreshes
//! NAT state, so a connection serves one measurement). The first one found dead ends the
//! round: the timeout lies between the longest idle time that stayed alive and it. Further
//! rounds spread fresh connections across that bracket until it is narrower than
//! `--resolution`. SIGINT/SIGTERM end it early with the bracket found so far (exit 130).

use std::io::Write;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use clap::Args;
use serde_json::json;

use super::Ctx;
use super::args::duration_in;
use crate::engine::{Config, Outcome, SeqSource, Timing, VerdictKind};
use crate::error::{Error, Result};
use crate::exit::ExitStatus;
use crate::fleet::Fleet;
use crate::flow::{Flow, parse_port};
use crate::output::{self, Reporter, count as plural, duration};
use crate::sys::diag::Diag;
use crate::sys::{catch_stop_signals, stop_requested};

/// The longest idle time that can be tried: a week (Linux conntrack keeps an established
/// TCP flow five days by default).
const MAX_IDLE: Duration = Duration::from_secs(7 * 86_400);

// The doc comments are clap's help text: `[2001:db8::2]` there is an address, not a link.
#[allow(rustdoc::broken_intra_doc_links)]
#[derive(Args, Debug)]
pub struct NatTimeoutArgs {
    /// The service to open test connections to: a host name or an address, and a port
    /// (198.51.100.2:22, [2001:db8::2]:22, localhost:9000)
    #[arg(value_name = "HOST:PORT", value_parser = host_port)]
    pub target: String,
    /// Connections idling at once (one measurement each); 2 to 256
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u16).range(2..=256))]
    pub parallel: u16,
    /// Longest idle time to try; at most 7 days
    #[arg(long, value_name = "DUR", default_value = "30m",
          value_parser = duration_in(Duration::from_secs(1), MAX_IDLE))]
    pub max: Duration,
    /// Shortest idle time to try; 100ms to 7 days
    #[arg(long, value_name = "DUR", default_value = "1s",
          value_parser = duration_in(Duration::from_millis(100), MAX_IDLE))]
    pub min: Duration,
    /// Stop when the bracket is narrower than this share of its lower bound (at least 1s);
    /// more than 0% and less than 100%
    #[arg(long, value_name = "PERCENT", default_value = "10%", value_parser = parse_percent)]
    pub resolution: f64,
}

/// `HOST:PORT` or `[IPv6]:PORT`: checked here, resolved when the command runs (inside
/// `--netns`).
fn host_port(s: &str) -> std::result::Result<String, String> {
    let s = s.trim();
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("'{s}' has no port; expected HOST:PORT"))?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if bare.is_empty() {
        return Err(format!("'{s}' has no host; expected HOST:PORT"));
    }
    if bare.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return Err(format!(
            "'{s}': write IPv6 addresses in brackets, e.g. [2001:db8::1]:9000"
        ));
    }
    parse_port(port)?;
    Ok(s.to_string())
}

/// The first address `target` resolves to.
fn resolve(target: &str) -> Result<SocketAddr> {
    let mut addrs = target
        .to_socket_addrs()
        .map_err(|e| Error::Usage(format!("cannot resolve '{target}': {e}")))?;
    let addr = addrs
        .next()
        .ok_or_else(|| Error::Usage(format!("'{target}' resolves to no address")))?;
    if addr.to_string() != target {
        log::info!("{target} is {addr}");
    }
    Ok(addr)
}

fn parse_percent(s: &str) -> std::result::Result<f64, String> {
    let n: f64 = s
        .trim()
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("'{s}' is not a percentage; write e.g. 10%"))?;
    if n > 0.0 && n < 100.0 {
        Ok(n / 100.0)
    } else {
        Err(format!(
            "'{s}' is out of range: the resolution must be more than 0% and less than 100%"
        ))
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

pub fn run(args: &NatTimeoutArgs, ctx: &Ctx) -> Result<ExitStatus> {
    if args.min >= args.max {
        return Err(Error::Usage("--min must be shorter than --max".into()));
    }
    catch_stop_signals();
    let target = resolve(&args.target)?;
    let reporter = ctx.reporter();
    let progress = |msg: String| {
        if !ctx.quiet {
            // Progress is not worth failing for when stderr is gone.
            let _ = writeln!(std::io::stderr(), "kaprobe: {msg}");
        }
    };
    // One capture socket for every round; test connections need no privilege to open.
    let mut fleet = Fleet::open(&[], Diag::open()?, None, 1000)?;
    fleet.drop_privileges(&[], None)?;
    let found = search(&mut fleet, reporter, target, args, &progress)?;
    fleet.close();
    let result = Result_ {
        bracket: &found.bracket,
        all: &found.all,
        target,
        max: args.max,
        took: found.took,
        interrupted: found.interrupted,
    };
    if ctx.json {
        output::json_line(result.json())?;
    } else {
        output::line(result.line())?;
    }
    Ok(if found.interrupted {
        ExitStatus::Interrupted
    } else {
        ExitStatus::Success
    })
}

/// Everything the rounds found.
struct Found {
    bracket: Bracket,
    all: Vec<Measurement>,
    took: Duration,
    interrupted: bool,
}

/// Rounds until the bracket is resolved or SIGINT/SIGTERM.
fn search(
    fleet: &mut Fleet,
    reporter: Reporter,
    target: SocketAddr,
    args: &NatTimeoutArgs,
    progress: &dyn Fn(String),
) -> Result<Found> {
    let mut found = Found {
        bracket: Bracket {
            alive: Duration::ZERO,
            dead: None,
        },
        all: Vec::new(),
        took: Duration::ZERO,
        interrupted: false,
    };
    let mut ladder_now = ladder(args.min, args.max, args.parallel, true);
    for round in 1.. {
        progress(format!(
            "round {round}: {} idling {} .. {}",
            plural(ladder_now.len() as u64, "connection"),
            duration(round_ms(ladder_now[0])),
            duration(round_ms(ladder_now[ladder_now.len() - 1]))
        ));
        let r = measure_round(fleet, reporter, target, &ladder_now, progress)?;
        found.interrupted = r.interrupted;
        found.took += r.took;
        for m in &r.measured {
            found.bracket.add(m);
        }
        found.all.extend(r.measured.iter().copied());
        if let Some(m) = r.measured.iter().find(|m| m.verdict == VerdictKind::Reset) {
            progress(format!(
                "something on the path answered with an RST after {} idle",
                duration(round_ms(m.idle))
            ));
        }
        if found.interrupted || found.bracket.resolved(args.resolution) {
            break;
        }
        ladder_now = inner_ladder(&found.bracket, args.parallel);
    }
    Ok(found)
}

fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64)
}

/// Opens one test connection per idle time and hands them to the fleet, each to be probed
/// once it has idled that long; `None` if SIGINT/SIGTERM came first.
fn open_round(
    fleet: &mut Fleet,
    target: SocketAddr,
    idles: &[Duration],
) -> Result<Option<Vec<(TcpStream, Flow, Duration)>>> {
    let mut conns: Vec<(TcpStream, Flow, Duration)> = Vec::with_capacity(idles.len());
    for &idle in idles {
        if stop_requested() {
            return Ok(None);
        }
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
    Ok(Some(conns))
}

/// What one round measured, and whether SIGINT/SIGTERM cut it short.
struct Round {
    measured: Vec<Measurement>,
    took: Duration,
    interrupted: bool,
}

/// Opens one connection per idle time, probes each when its time has come, and stops at the
/// first that is not alive (longer ones would be too). Returns what was measured.
fn measure_round(
    fleet: &mut Fleet,
    reporter: Reporter,
    target: SocketAddr,
    idles: &[Duration],
    progress: &dyn Fn(String),
) -> Result<Round> {
    let start = fleet.now();
    let Some(conns) = open_round(fleet, target, idles)? else {
        return Ok(Round {
            measured: Vec::new(),
            took: fleet.now() - start,
            interrupted: true,
        });
    };
    let mut out = Vec::new();
    let mut next_note = start + Duration::from_secs(10);
    let mut interrupted = false;
    while fleet.active() > 0 {
        if stop_requested() {
            interrupted = true;
            for (_, f, _) in &conns {
                fleet.remove(f);
            }
            break;
        }
        output::check()?;
        let events = fleet.step(Duration::from_millis(250))?;
        for (flow, outcome, _) in reporter.outcomes(events) {
            record(fleet, &conns, flow, outcome, &mut out)?;
        }
        if fleet.now() >= next_note && fleet.active() > 0 {
            next_note += Duration::from_secs(10);
            still_idling(fleet, &conns, &out, fleet.now() - start, progress);
        }
    }
    let took = fleet.now() - start;
    out.sort_by_key(|m| m.idle);
    Ok(Round {
        measured: out,
        took,
        interrupted,
    })
}

/// Records what one probed connection of the round turned out to be. One that is not alive
/// ends the round's longer ones: they would die too.
fn record(
    fleet: &mut Fleet,
    conns: &[(TcpStream, Flow, Duration)],
    flow: Flow,
    outcome: Outcome,
    out: &mut Vec<Measurement>,
) -> Result<()> {
    let Some(&(_, _, idle)) = conns.iter().find(|c| c.1 == flow) else {
        return Ok(());
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
    log::info!("idle {}: {}", duration(round_ms(idle)), verdict.as_str());
    out.push(Measurement { idle, verdict });
    if verdict != VerdictKind::Alive {
        for (_, f, i) in conns {
            if *i > idle {
                fleet.remove(f);
            }
        }
    }
    Ok(())
}

/// A progress line: how many connections still idle, and how long the round may still take.
fn still_idling(
    fleet: &Fleet,
    conns: &[(TcpStream, Flow, Duration)],
    measured: &[Measurement],
    since_start: Duration,
    progress: &dyn Fn(String),
) {
    let longest = conns
        .iter()
        .map(|c| c.2)
        .filter(|i| !measured.iter().any(|m| m.idle == *i))
        .max();
    if let Some(l) = longest {
        progress(format!(
            "{} still idling; at most {} left in this round",
            plural(fleet.active() as u64, "connection"),
            duration(round_ms(l.saturating_sub(since_start)))
        ));
    }
}

/// What is printed at the end: the bracket, or how far the search got.
struct Result_<'a> {
    bracket: &'a Bracket,
    all: &'a [Measurement],
    target: SocketAddr,
    max: Duration,
    took: Duration,
    interrupted: bool,
}

impl Result_<'_> {
    fn reset(&self) -> bool {
        self.all.iter().any(|m| m.verdict == VerdictKind::Reset)
    }

    /// A margin of a tenth below the longest idle time seen to survive.
    fn advice(&self) -> Option<Duration> {
        let b = self.bracket;
        b.dead
            .map(|_| Duration::from_secs((b.alive.as_secs_f64() * 0.9).floor() as u64))
    }

    fn json(&self) -> serde_json::Value {
        let b = self.bracket;
        let measurements: Vec<_> = self
            .all
            .iter()
            .map(|m| json!({"idle_ms": output::millis(m.idle), "verdict": m.verdict.as_str()}))
            .collect();
        json!({
            "event": "result", "target": self.target.to_string(),
            "lower_ms": output::millis(b.alive),
            "upper_ms": b.dead.map(output::millis),
            "max_ms": output::millis(self.max),
            "reset": self.reset(),
            "recommended_keepalive_time_s": self.advice().map(|a| a.as_secs()),
            "measurements": measurements, "elapsed_ms": output::millis(self.took),
            "interrupted": self.interrupted,
        })
    }

    fn line(&self) -> String {
        let b = self.bracket;
        let so_far = if self.interrupted {
            "interrupted; so far: "
        } else {
            ""
        };
        match (b.dead, self.advice()) {
            (Some(d), Some(a)) => format!(
                "{so_far}idle timeout between {} and {}{}; set keepalive time below {}",
                duration(b.alive),
                duration(d),
                if self.reset() {
                    " (something on the path answers with an RST)"
                } else {
                    ""
                },
                duration(a.max(Duration::from_secs(1)))
            ),
            _ if self.interrupted && self.all.is_empty() => {
                "interrupted before any idle time was measured".into()
            }
            _ if self.interrupted => format!(
                "{so_far}no idle timeout up to {} (the longest idle time measured)",
                duration(b.alive)
            ),
            _ => format!("no idle timeout up to {}", duration(self.max)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: f64) -> Duration {
        Duration::from_secs_f64(x)
    }

    fn bracket(alive: f64, dead: Option<f64>) -> Bracket {
        Bracket {
            alive: s(alive),
            dead: dead.map(s),
        }
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
        let b = bracket(2.0, Some(11.0));
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
        assert_eq!(b, bracket(3.0, Some(6.0)));
        assert!(!b.resolved(0.1));
        assert!(bracket(4.8, Some(5.2)).resolved(0.1));
        assert!(bracket(100.0, Some(109.0)).resolved(0.1));
        assert!(!bracket(100.0, Some(112.0)).resolved(0.1));
        assert!(bracket(1800.0, None).resolved(0.1), "nothing died: done");
    }

    #[test]
    fn percentages_parse() {
        assert_eq!(parse_percent("10%"), Ok(0.1));
        assert_eq!(parse_percent("5"), Ok(0.05));
        let e = parse_percent("0%").unwrap_err();
        assert!(e.contains("more than 0% and less than 100%"), "{e}");
        assert!(parse_percent("100%").is_err());
        assert!(parse_percent("abc").is_err());
    }

    #[test]
    fn targets_are_host_and_port() {
        for ok in [
            "198.51.100.2:22",
            "[2001:db8::2]:22",
            "localhost:9000",
            "a.example:1",
        ] {
            assert_eq!(host_port(ok).as_deref(), Ok(ok));
        }
        for (bad, why) in [
            ("localhost", "no port"),
            (":22", "no host"),
            ("2001:db8::2:22", "brackets"),
            ("localhost:0", "port 0"),
            ("localhost:65536", "out of range"),
        ] {
            let e = host_port(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        assert_eq!(
            resolve("localhost:9000").unwrap().port(),
            9000,
            "localhost resolves"
        );
        assert_eq!(
            resolve("no-such-host.invalid:1").unwrap_err().exit_code(),
            2
        );
    }

    #[test]
    fn an_interrupted_search_says_how_far_it_got() {
        let b = bracket(4.0, None);
        let all = [Measurement {
            idle: s(4.0),
            verdict: VerdictKind::Alive,
        }];
        let r = Result_ {
            bracket: &b,
            all: &all,
            target: "198.51.100.2:22".parse().unwrap(),
            max: s(1800.0),
            took: s(5.0),
            interrupted: true,
        };
        assert_eq!(
            r.line(),
            "interrupted; so far: no idle timeout up to 4s (the longest idle time measured)"
        );
        assert_eq!(r.json()["interrupted"], true);
        assert_eq!(r.json()["lower_ms"], 4000);
        let b = bracket(4.8, Some(5.2));
        let r = Result_ {
            bracket: &b,
            interrupted: false,
            ..r
        };
        assert_eq!(
            r.line(),
            "idle timeout between 4.8s and 5.2s; set keepalive time below 4s"
        );
    }
}
