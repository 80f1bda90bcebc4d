//! `kaprobe watch`: the kernel's keepalive algorithm from userspace, forever, for connections
//! whose application never turned keepalive on. Probing an idle connection also keeps the
//! NAT and firewall state along its path from expiring.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::json;

use super::Ctx;
use super::args::{OptFlowArg, ProbeStyle, RateArgs, duration_in, keep_duration};
use crate::cmd::prober;
use crate::cmd::source::{self, Chosen, Guard};
use crate::engine::{Config, ConnView, Outcome, SeqSource, Timing, Verdict, VerdictKind};
use crate::error::{Error, Result};
use crate::exit::ExitStatus;
use crate::filter::FilterArgs;
use crate::fleet::{Fleet, conn_view};
use crate::flow::{Flow, Route};
use crate::metrics::{self, ConnState, Metrics, MetricsListener, MetricsServer};
use crate::output::{self, Reporter, StateChange, count as plural, duration};
use crate::sys::diag::{Conn, Diag};
use crate::sys::netns;
use crate::sys::notify::{self, Watchdog};
use crate::sys::privilege::{self, User};
use crate::sys::snmp::{self, TcpOpens};
use crate::sys::{catch_stop_signals, stop_requested};
use caps::Capability::CAP_NET_ADMIN;

// The doc comments are clap's help text: `[2001:db8::2]` there is an address, not a link.
#[allow(rustdoc::broken_intra_doc_links)]
#[derive(Args, Debug)]
pub struct WatchArgs {
    /// The connection to watch; without it, every established connection matching the
    /// filters, including ones that appear later
    #[command(flatten)]
    pub flow: OptFlowArg,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Idle time (since the last segment received) before probing; at most 32767s
    #[arg(long, value_name = "DUR", default_value = "60s", value_parser = keep_duration)]
    pub time: Duration,
    /// Time between unanswered probes, and the wait after the last one; at most 32767s
    #[arg(long, value_name = "DUR", default_value = "1s", value_parser = keep_duration)]
    pub intvl: Duration,
    /// Unanswered probes before the connection is declared dead; 1 to 255
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=255))]
    pub probes: u8,
    /// What to do when a connection is dead: report it; kill its local socket (as `ss -K`,
    /// so the application gets an error at once); or 'exec CMD' (one quoted word): run CMD
    /// with KAPROBE_FLOW, KAPROBE_VERDICT, KAPROBE_LOCAL and KAPROBE_REMOTE set
    #[arg(long, value_name = "report|kill|'exec CMD'", default_value = "report")]
    pub on_dead: String,
    #[command(flatten)]
    pub style: ProbeStyle,
    #[command(flatten)]
    pub rate: RateArgs,
    /// With filters: how often to look for new connections; 100ms to 1h. A look lists
    /// every socket only when the kernel's TCP counters show that a connection opened since
    /// the last listing, and at least once a minute
    #[arg(long, value_name = "DUR", default_value = "1s",
          value_parser = duration_in(Duration::from_millis(100), Duration::from_secs(3600)))]
    pub rescan: Duration,
    /// --on-dead exec: a command still running this long is killed (its whole process
    /// group); 1s to 1h
    #[arg(long, value_name = "DUR", default_value = "60s",
          value_parser = duration_in(Duration::from_secs(1), Duration::from_secs(3600)))]
    pub exec_timeout: Duration,
    /// --on-dead exec: at most this many commands at once; a connection that goes dead while
    /// they all run is reported, and its command skipped with a warning; 1 to 1024
    #[arg(long, value_name = "N", default_value_t = 16,
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub exec_parallel: u16,
    /// With filters: watch at most this many connections at once; more found are left out
    /// with a warning until some close; 1 to 10000000
    #[arg(long, value_name = "N", default_value_t = 1_000_000,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=10_000_000))]
    pub max_connections: usize,
    /// Serve Prometheus metrics at http://ADDR:PORT/metrics (and a landing page at /):
    /// 127.0.0.1:9479, [::1]:9479, or :9479 for every address of both families; repeat for
    /// more addresses. The sockets are opened in the network namespace kaprobe starts in,
    /// before it enters another one
    #[arg(long, visible_alias = "web.listen-address", value_name = "ADDR:PORT",
          value_parser = metrics::parse_listen_addr, action = clap::ArgAction::Append)]
    pub metrics: Vec<metrics::ListenAddr>,
    /// With --metrics: TLS, client certificates, basic auth and response headers from
    /// exporter-toolkit's YAML web config (scripts/deploy/README.md), read once at start
    #[arg(long = "web.config.file", value_name = "PATH", requires = "metrics")]
    pub web_config_file: Option<std::path::PathBuf>,
    /// With --metrics: one more series per connection,
    /// kaprobe_connection_state{local,remote,state} (mind the cardinality)
    #[arg(long, requires = "metrics")]
    pub metrics_per_connection: bool,
    /// Once the sockets are open, before probing, run as USER (a name, or a uid; a uid
    /// with no passwd entry gets the group of the same number): its uid, its primary group
    /// as the only group, keeping only the capabilities still used. --on-dead exec commands
    /// run as USER too. Needs CAP_SETUID and CAP_SETGID (start as root)
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum OnDead {
    Report,
    Kill,
    Exec(String),
}

fn on_dead(arg: &str) -> Result<OnDead> {
    let arg = arg.trim();
    match arg.split_once(char::is_whitespace) {
        None if arg == "report" => Ok(OnDead::Report),
        None if arg == "kill" => Ok(OnDead::Kill),
        None if arg == "exec" => Err(Error::Usage(
            "--on-dead exec needs a command: --on-dead 'exec CMD'".into(),
        )),
        Some(("exec", cmd)) if !cmd.trim().is_empty() => Ok(OnDead::Exec(cmd.trim().to_string())),
        _ => Err(Error::Usage(format!(
            "--on-dead takes report, kill or 'exec CMD', not '{arg}'"
        ))),
    }
}

/// The shortest wait before probing again a connection that was unreachable or whose numbers
/// could not be learned, whatever `--time` and `--intvl` say: never a tight loop.
const RETRY_FLOOR: Duration = Duration::from_secs(1);
/// After an answer, the next round starts when the connection will have been idle for
/// `--time` (the answer is the last segment it received), and this much later: by then the
/// kernel's idle clock (milliseconds) has certainly passed `--time`, and the round's first
/// look at the connection can probe. Started at once, a round would look twice: once to
/// learn it must wait, once when the wait is over.
const AFTER_ANSWER_SLACK: Duration = Duration::from_millis(20);

/// With filters, the longest time between two listings of every socket when the kernel's
/// TCP counters have not moved (README "kaprobe watch"), unless `--rescan` is longer.
const QUIET_RESCAN: Duration = Duration::from_secs(60);

/// How often, at most, `systemctl status` gets a new line (`STATUS=`).
const STATUS_EVERY: Duration = Duration::from_secs(10);

/// What one watched connection was last seen as.
#[derive(Default)]
struct Track {
    state: Option<&'static str>,
    /// Its mark and bound device, as sock_diag reported them when it was found.
    route: Route,
}

#[derive(Default)]
struct Tally {
    /// Connections watched, each counted when it starts being watched: a counter, so that
    /// nothing grows with the flows ever seen (issue 19).
    connections: u64,
    rounds: u64,
    changes: HashMap<&'static str, u64>,
}

struct Watch<'a> {
    args: &'a WatchArgs,
    reporter: Reporter,
    timing: Timing,
    source: SeqSource,
    action: OnDead,
    tracks: HashMap<Flow, Track>,
    /// Connections found but not watched (signed, or a route that cannot be opened any
    /// more), each warned about once.
    skipped: HashSet<Flow>,
    tally: Tally,
    /// `--on-dead exec` commands still running, each the leader of its own process group,
    /// and when each started.
    children: Vec<(Child, Instant)>,
    /// Connections to probe again at a later round (fleet time), after an outcome that left
    /// the kernel's idle clock where it was.
    /// A min-heap: most connections wait here between rounds, and each turn looks only at
    /// the ones due.
    later: BinaryHeap<Reverse<(Duration, Flow)>>,
    /// `--metrics`: what /metrics shows, updated as outcomes come.
    metrics: Option<Arc<Metrics>>,
    /// Probes already added to `kaprobe_probes_sent_total`.
    probes_counted: u64,
    /// Stdout is the journal: state lines go without a timestamp of their own.
    journal: bool,
    /// The kernel's TCP counters before the last listing, and when it was (fleet time).
    listed: Option<(TcpOpens, Duration)>,
    /// Conntrack, asked before every round: whether the source may touch the connection,
    /// and where a NAT-ed one's segments appear on the wire (README "Do no harm").
    guard: Guard,
    /// The last rescan left connections out at `--max-connections` (warned once a spell).
    at_limit: bool,
}

/// One connection to start watching: its flow, its view when it was listed, its route.
type Found = (Flow, Option<ConnView>, Route);

/// What `watch` starts with.
struct Start {
    /// The connection named on the command line, if any.
    single: Option<Flow>,
    /// The connections to watch now: the one named, or every one the filters match.
    initial: Vec<Found>,
    /// Connections found but not watched (signed, or a route that cannot be opened).
    skipped: HashSet<Flow>,
    /// Some were left out at `--max-connections` (and said so).
    at_limit: bool,
}

/// Runs the watch. `listener` is `--metrics`' socket, bound before entering --netns/--pid
/// (`cli::run`); it is served once the capabilities are gone.
pub fn run(args: &WatchArgs, ctx: &Ctx, listener: Option<MetricsListener>) -> Result<ExitStatus> {
    let timing = Timing {
        time: args.time,
        intvl: args.intvl,
        probes: args.probes,
    };
    if let Some(w) = timing.warning() {
        log::warn!("{w}");
    }
    let action = on_dead(&args.on_dead)?;
    // An unknown user (exit 2) or one this process may not switch to (exit 6) is refused
    // before anything is opened.
    let user = match &args.user {
        Some(name) => {
            let user = User::lookup(name)?;
            user.check_allowed()?;
            Some(user)
        }
        None => None,
    };
    let mut diag = Diag::open()?;
    let start = find(args, &mut diag)?;
    let chosen = source::choose(args.style.seq_source)?;
    let source = chosen.source;
    source::require_raw()?;
    let mut guard = Guard::open()?;
    if let Some(flow) = start.single {
        // A connection the injecting sources must not touch is refused before anything is
        // sent; later rounds ask again.
        guard.admit(&flow, source)?;
    }
    // The --pid process is watched through a pidfd opened while /proc/PID may still be read.
    let presence = ctx.netns.as_ref().map(netns::Presence::open);
    let (mut fleet, start) = open_fleet(args, diag, chosen, &action, start, user.as_ref())?;
    // The HTTP server's threads start only now: capabilities are per thread, and they were
    // dropped while this was the only one.
    let (metrics, server) = serve_metrics(args, listener)?;
    let mut w = Watch {
        args,
        reporter: ctx.reporter(),
        timing,
        source,
        action,
        tracks: HashMap::new(),
        skipped: start.skipped,
        tally: Tally::default(),
        children: Vec::new(),
        later: BinaryHeap::new(),
        metrics,
        probes_counted: 0,
        journal: notify::journal_output(),
        listed: None,
        guard,
        at_limit: start.at_limit,
    };
    for (flow, view, route) in start.initial {
        w.start(&mut fleet, flow, view, route);
    }
    catch_stop_signals();
    let exit = w.watch(&mut fleet, start.single, presence.as_ref())?;
    notify::stopping();
    let elapsed = fleet.now();
    w.count_probes(&fleet);
    fleet.close();
    drop(server);
    w.summary(elapsed)?;
    Ok(exit)
}

/// The connection named, or every established one the filters match now (signed ones
/// skipped with a warning).
fn find(args: &WatchArgs, diag: &mut Diag) -> Result<Start> {
    let single = match args.flow.spec()? {
        Some(spec) => Some(prober::resolve_probeable(spec, diag)?),
        None => None,
    };
    let mut skipped = HashSet::new();
    let initial: Vec<Found> = match &single {
        Some(c) => vec![(c.flow, None, c.route)],
        None => args
            .filter
            .established(diag)?
            .into_iter()
            .filter(|c| !skip_signed(&mut skipped, c))
            .map(|c| (c.flow, Some(conn_view(&c)), c.route))
            .collect(),
    };
    let mut initial = initial;
    let at_limit = initial.len() > args.max_connections;
    if at_limit {
        warn_left_out(args.max_connections, initial.len() - args.max_connections);
        initial.truncate(args.max_connections);
    }
    let single = single.map(|c| c.flow);
    if single.is_none() && initial.is_empty() {
        log::info!("no established connection matches yet; waiting for one");
    }
    Ok(Start {
        single,
        initial,
        skipped,
        at_limit,
    })
}

/// `--max-connections` reached: `left_out` connections found are not watched for now.
fn warn_left_out(max: usize, left_out: usize) {
    log::warn!(
        "--max-connections {max} reached: {} left out, watched once others close",
        plural(left_out as u64, "connection")
    );
}

/// Opens the fleet and each starting route's raw socket while the privileges are held, then
/// drops them (switching to `user` if given) and sets no_new_privs. The returned `Start`
/// holds only the connections whose route could be opened.
fn open_fleet(
    args: &WatchArgs,
    diag: Diag,
    chosen: Chosen,
    action: &OnDead,
    mut start: Start,
    user: Option<&User>,
) -> Result<(Fleet, Start)> {
    let flows: Vec<Flow> = start.initial.iter().map(|(f, _, _)| *f).collect();
    let kernel = chosen.kernel.is_some();
    let injects = chosen.source.injects();
    let mut fleet = Fleet::open(&flows, diag, chosen.kernel, args.rate.rate)?;
    // Each route's raw socket is configured now, while the privileges are held.
    let mut initial_ok = Vec::with_capacity(start.initial.len());
    for (flow, view, route) in std::mem::take(&mut start.initial) {
        match fleet.prepare_route(flow.is_ipv6(), route) {
            Ok(()) => initial_ok.push((flow, view, route)),
            Err(e) if start.single.is_none() => {
                log::warn!("{flow}: not watched: {e}");
                start.skipped.insert(flow);
            }
            Err(e) => return Err(e),
        }
    }
    start.initial = initial_ok;
    // kill needs CAP_NET_ADMIN for SOCK_DESTROY. So does watching by filters: sock_diag
    // shows a socket's mark and TCP-MD5 keys only to CAP_NET_ADMIN, and without them a
    // connection that appears later would be probed unmarked (a false `dead` under policy
    // routing) or, if signed, retried forever.
    // Conntrack is asked before every round (CAP_NET_ADMIN), and the kernel source makes a
    // BPF iterator every round (CAP_BPF, CAP_PERFMON).
    let mut keep: Vec<caps::Capability> = prober::kernel_caps(kernel).to_vec();
    if start.single.is_none() || *action == OnDead::Kill || injects || kernel {
        keep.push(CAP_NET_ADMIN);
    }
    // The bounding set goes too, also with --on-dead exec: its commands run as `user` (or
    // uid 0) without any capability, and no_new_privs keeps set-user-ID programs and file
    // capabilities from giving them one.
    fleet.drop_privileges(&keep, user)?;
    privilege::set_no_new_privs()?;
    Ok((fleet, start))
}

/// `--metrics`: the counters and the HTTP server that shows them. Called only once the
/// privileges are dropped, since the server starts threads.
fn serve_metrics(
    args: &WatchArgs,
    listener: Option<MetricsListener>,
) -> Result<(Option<Arc<Metrics>>, Option<MetricsServer>)> {
    let Some(l) = listener else {
        return Ok((None, None));
    };
    let m = Arc::new(Metrics::new(metrics::Options {
        per_connection: args.metrics_per_connection,
        sweep: false,
        process: true,
    }));
    let server = l.serve(m.clone())?;
    Ok((Some(m), Some(server)))
}

/// True (after one warning) for a signed connection, which is never probed.
fn skip_signed(skipped: &mut HashSet<Flow>, c: &Conn) -> bool {
    let Some(sig) = c.signature else {
        return false;
    };
    if skipped.insert(c.flow) {
        log::warn!(
            "{}: not watched: it uses {}; both ends drop unsigned segments, so kaprobe \
             cannot probe it",
            c.flow,
            sig.as_str()
        );
    }
    true
}

/// The state of a connection whose numbers could not be learned this round.
const LEARN_FAILED: &str = "learn-failed";

/// The wait before the next round after an unreachable or learn-failed round: `--time` (the
/// next round of the kernel's own algorithm), at least `--intvl` and `RETRY_FLOOR`.
fn retry_after(t: Timing) -> Duration {
    t.time.max(t.intvl).max(RETRY_FLOOR)
}

/// Whether to list every socket now: after the last listing (its counters, and when),
/// the counters moved, or `quiet` has passed; always when the counters cannot be read.
fn listing_due(
    last: Option<(TcpOpens, Duration)>,
    counters: Option<TcpOpens>,
    now: Duration,
    quiet: Duration,
) -> bool {
    match (last, counters) {
        (Some((before, at)), Some(c)) => c != before || now.saturating_sub(at) >= quiet,
        _ => true,
    }
}

impl Watch<'_> {
    /// The loop, until a stop signal, until the single connection is gone, or until the
    /// namespace it entered (`--netns`/`--pid`) is gone (then it says so in one line, lets
    /// the namespace go by exiting, and ends with exit status 5); returns the exit status.
    /// Under systemd (Type=notify): ready once the sockets are open and /metrics answers;
    /// then the watchdog's pings from the loop (README "systemd").
    fn watch(
        &mut self,
        fleet: &mut Fleet,
        single: Option<Flow>,
        netns: Option<&netns::Presence>,
    ) -> Result<ExitStatus> {
        notify::ready(&self.status_line());
        let mut watchdog = Watchdog::from_env();
        let mut status = (Instant::now() + STATUS_EVERY, self.status_line());
        let mut next_rescan = fleet.now() + self.args.rescan;
        let mut next_netns_check = Instant::now() + NETNS_CHECK;
        while !stop_requested() {
            let now = Instant::now();
            if let Some(presence) = netns
                && now >= next_netns_check
            {
                next_netns_check = now + NETNS_CHECK;
                if !presence.still_there() {
                    log::error!(
                        "{} is gone, and its connections with it: watch ends",
                        netns::describe(presence.target())
                    );
                    return Ok(ExitStatus::NoConnection);
                }
            }
            let mut turn = prober::TURN;
            if let Some(wd) = &mut watchdog {
                wd.tick(now);
                turn = turn.min(wd.until_due(now));
            }
            if now >= status.0 && notify::under_systemd() {
                let line = self.status_line();
                if line != status.1 {
                    notify::status(&line);
                }
                status = (now + STATUS_EVERY, line);
            }
            // A closed stdout ends the watch at the next turn (README "Pipes, signals and
            // limits").
            self.turn(fleet, turn)?;
            if let Some(flow) = single {
                if !self.tracks.contains_key(&flow) {
                    return Ok(self.single_exit());
                }
            } else if fleet.now() >= next_rescan {
                next_rescan = fleet.now() + self.args.rescan;
                self.rescan(fleet)?;
            }
        }
        Ok(ExitStatus::Success)
    }

    /// One turn of the loop: waits up to `wait` for outcomes, acts on them, restarts the
    /// connections due again and reaps `--on-dead exec` children.
    fn turn(&mut self, fleet: &mut Fleet, wait: Duration) -> Result<()> {
        let outcomes = prober::turn(fleet, self.reporter, wait)?;
        self.count_probes(fleet);
        for (flow, outcome, ignored) in outcomes {
            if let Some(m) = &self.metrics {
                m.ignored(ignored);
            }
            match self.outcome(fleet, flow, outcome)? {
                Some(after) if after.is_zero() => {
                    let route = self
                        .tracks
                        .get(&flow)
                        .map_or_else(Route::default, |t| t.route);
                    self.start(fleet, flow, None, route);
                }
                Some(after) => self.later.push(Reverse((fleet.now() + after, flow))),
                None => self.forget(&flow),
            }
        }
        self.restart_due(fleet);
        self.reap_children();
        Ok(())
    }

    /// The exit status once the single connection watched is gone: by the worst state it
    /// reached, dead before reset, else it closed.
    fn single_exit(&self) -> ExitStatus {
        let reached = |state| self.tally.changes.contains_key(state);
        if reached("dead") {
            ExitStatus::Dead
        } else if reached("reset") {
            ExitStatus::Reset
        } else {
            ExitStatus::NoConnection
        }
    }

    fn start(&mut self, fleet: &mut Fleet, flow: Flow, view: Option<ConnView>, route: Route) {
        if !self.tracks.contains_key(&flow) {
            self.tally.connections += 1;
            log::info!("{flow}: watching");
        }
        if !self.tracks.contains_key(&flow)
            && let Some(m) = &self.metrics
        {
            m.set_state(&flow, ConnState::Pending);
        }
        let wire = match self.guard.admit(&flow, self.source) {
            Ok(wire) => wire,
            Err(e) => {
                // Not this round; the next rescan asks again.
                log::warn!("{e}");
                return;
            }
        };
        self.tracks.entry(flow).or_default().route = route;
        let cfg = Config {
            flow,
            route,
            timing: self.timing,
            source: self.source,
            garbage_octet: self.args.style.garbage_octet,
        };
        fleet.add(cfg, view);
        if let Some((src, dst)) = wire
            && let Err(e) = fleet.translate(&flow, src, dst)
        {
            log::warn!("{flow}: its NAT-ed addresses cannot be captured: {e}");
        }
    }

    /// Stops tracking a connection that is no longer watched (closed, reset, killed): it
    /// leaves the `kaprobe_connections` gauges; the counters keep what happened to it.
    fn forget(&mut self, flow: &Flow) {
        self.tracks.remove(flow);
        if let Some(m) = &self.metrics {
            m.forget(flow);
        }
    }

    /// Adds the probes the fleet sent since the last call to `kaprobe_probes_sent_total`.
    fn count_probes(&mut self, fleet: &Fleet) {
        let sent = fleet.probes_sent();
        if let Some(m) = &self.metrics {
            m.probe_sent(sent.saturating_sub(self.probes_counted));
        }
        self.probes_counted = sent;
    }

    /// What `systemctl status` shows: the watched connections by state.
    fn status_line(&self) -> String {
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for t in self.tracks.values() {
            *counts.entry(t.state.unwrap_or("pending")).or_default() += 1;
        }
        let mut line = format!(
            "watching {}",
            plural(self.tracks.len() as u64, "connection")
        );
        let parts: Vec<String> = ["alive", "dead", "unreachable", LEARN_FAILED, "pending"]
            .iter()
            .filter_map(|s| counts.get(s).map(|n| format!("{n} {s}")))
            .collect();
        if !parts.is_empty() {
            line.push_str(": ");
            line.push_str(&parts.join(", "));
        }
        line
    }

    /// Starts the next round of the connections whose wait is over.
    fn restart_due(&mut self, fleet: &mut Fleet) {
        let now = fleet.now();
        while let Some(&Reverse((at, flow))) = self.later.peek() {
            if at > now {
                break;
            }
            self.later.pop();
            if let Some(route) = self.tracks.get(&flow).map(|t| t.route) {
                self.start(fleet, flow, None, route);
            }
        }
    }

    /// The wait before the next round after an outcome that did not restart the kernel's idle
    /// clock (unreachable, numbers not learned): the normal `--time` cadence, as if the
    /// connection had just been probed, rather than probing again at once.
    fn retry_after(&self) -> Duration {
        retry_after(self.timing)
    }

    /// Whether a rescan must list every socket: the TCP counters moved since the last
    /// listing (a connection may have been established since), or the last listing is
    /// `QUIET_RESCAN` (or `--rescan`) old. Records the counters as they are before listing.
    fn must_list(&mut self, now: Duration) -> bool {
        let counters = snmp::tcp_opens()
            .map_err(|e| log::debug!("TCP counters: {e}; listing every rescan"))
            .ok();
        let quiet = QUIET_RESCAN.max(self.args.rescan);
        let list = listing_due(self.listed, counters, now, quiet);
        if list {
            self.listed = counters.map(|c| (c, now));
        }
        list
    }

    fn rescan(&mut self, fleet: &mut Fleet) -> Result<()> {
        if !self.must_list(fleet.now()) {
            return Ok(());
        }
        let conns = self.args.filter.established(fleet.diag())?;
        // Forget skipped connections that are gone: a new one on the same tuple is news.
        let present: HashSet<Flow> = conns.iter().map(|c| c.flow).collect();
        self.skipped.retain(|f| present.contains(f));
        // Watched connections the listing no longer shows closed: said now, and gone from
        // the gauges at once, not when their next round would have found out (issue 19).
        let gone: HashSet<Flow> = self
            .tracks
            .keys()
            .filter(|f| !present.contains(f))
            .copied()
            .collect();
        if !gone.is_empty() {
            self.later.retain(|Reverse((_, f))| !gone.contains(f));
        }
        for flow in gone {
            fleet.remove(&flow);
            if self.outcome(fleet, flow, Outcome::Closed)?.is_none() {
                self.forget(&flow);
            }
        }
        let mut added = false;
        let mut left_out = 0usize;
        for c in conns {
            if self.tracks.contains_key(&c.flow)
                || self.skipped.contains(&c.flow)
                || skip_signed(&mut self.skipped, &c)
            {
                continue;
            }
            if self.tracks.len() >= self.args.max_connections {
                left_out += 1;
                continue;
            }
            // A route first seen now needs a raw socket the dropped privileges cannot open.
            if let Err(e) = fleet.prepare_route(c.flow.is_ipv6(), c.route) {
                let why = match e {
                    Error::Privilege { .. } => String::new(),
                    other => format!(" ({other})"),
                };
                log::warn!(
                    "{}: not watched: it sends with {}, and kaprobe opened raw sockets only \
                     for the routes present at start, before dropping its privileges{why}; \
                     restart watch to include it",
                    c.flow,
                    crate::sys::raw::describe_route(c.route)
                );
                self.skipped.insert(c.flow);
                continue;
            }
            self.start(fleet, c.flow, Some(conn_view(&c)), c.route);
            added = true;
        }
        if left_out > 0 && !self.at_limit {
            warn_left_out(self.args.max_connections, left_out);
        }
        self.at_limit = left_out > 0;
        if added {
            let flows: Vec<Flow> = self.tracks.keys().copied().collect();
            fleet.refilter(&flows)?;
        }
        Ok(())
    }

    /// Reports a state change and carries out --on-dead. Returns when to start the next round
    /// (zero: at once), or `None` to stop watching the flow.
    fn outcome(
        &mut self,
        fleet: &mut Fleet,
        flow: Flow,
        outcome: Outcome,
    ) -> Result<Option<Duration>> {
        self.tally.rounds += 1;
        let (state, verdict, next) = self.state_of(&outcome);
        if let (Some(m), Some(v)) = (&self.metrics, verdict) {
            m.decided(&flow, v.kind, v.rtt);
        }
        let previous = self.tracks.get(&flow).and_then(|t| t.state);
        if previous != Some(state) {
            if state == LEARN_FAILED {
                log::warn!(
                    "{flow}: the local socket sent no challenge ACK to the injected SYNs, \
                     though its link is up (a local firewall dropping them, a next hop \
                     that does not answer ARP/ND, or a signed connection?); trying again in {}",
                    duration(self.retry_after())
                );
            }
            self.report(&StateChange {
                flow,
                state,
                previous,
                verdict,
            })?;
            *self.tally.changes.entry(state).or_default() += 1;
        } else if let Some(v) = verdict {
            log::info!(
                "{flow}: still {state}{}",
                v.rtt
                    .map_or(String::new(), |r| format!(" rtt={}", duration(r)))
            );
        }
        if let Some(t) = self.tracks.get_mut(&flow) {
            t.state = Some(state);
        }
        if state == "dead" && previous != Some("dead") {
            self.on_dead(fleet, flow)?;
        }
        Ok(next)
    }

    /// The state an outcome puts the connection in, the verdict behind it, and when to start
    /// the next round (zero: at once; `None`: stop watching it).
    fn state_of<'o>(
        &self,
        outcome: &'o Outcome,
    ) -> (&'static str, Option<&'o Verdict>, Option<Duration>) {
        let retry = Some(self.retry_after());
        match outcome {
            Outcome::Verdict(v) => match v.kind {
                VerdictKind::Alive => (
                    "alive",
                    Some(v),
                    Some(self.timing.time + AFTER_ANSWER_SLACK),
                ),
                // An ICMP error or a local cause (no route, link down, ...): the connection's
                // state until it changes, probed again at the next round, not at once.
                VerdictKind::Unreachable => ("unreachable", Some(v), retry),
                VerdictKind::Dead => {
                    let next = (self.action != OnDead::Kill).then_some(Duration::ZERO);
                    ("dead", Some(v), next)
                }
                // The RST reset the local socket too: nothing left to watch.
                VerdictKind::Reset => ("reset", Some(v), None),
            },
            Outcome::Closed => ("closed", None, None),
            // Still established, but the local socket did not announce its numbers: tried
            // again at the next round.
            Outcome::LearnFailed => (LEARN_FAILED, None, retry),
        }
    }

    /// Prints a state change, stamped with the time unless the journal stamps each line
    /// itself.
    fn report(&self, change: &StateChange) -> Result<()> {
        let now = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
        let stamp = (!self.journal).then_some(now.as_str());
        self.reporter.state(change, &now, stamp)
    }

    fn on_dead(&mut self, fleet: &mut Fleet, flow: Flow) -> Result<()> {
        match self.action.clone() {
            OnDead::Report => Ok(()),
            OnDead::Kill => {
                fleet.remove(&flow);
                match fleet.diag().destroy(&flow) {
                    Ok(()) => {
                        log::info!("{flow}: local socket destroyed");
                        if let Some(m) = &self.metrics {
                            m.killed();
                        }
                        Ok(())
                    }
                    Err(e @ Error::Privilege { .. }) => Err(e),
                    Err(e) => {
                        log::warn!("{flow}: {e}");
                        Ok(())
                    }
                }
            }
            OnDead::Exec(cmd) => {
                self.reap_children();
                if self.children.len() >= usize::from(self.args.exec_parallel) {
                    log::warn!(
                        "{flow}: --on-dead exec skipped: {} commands still running \
                         (--exec-parallel)",
                        self.children.len()
                    );
                    return Ok(());
                }
                // Its own process group (killed whole at the timeout or at the end), stdin
                // closed, stdout to kaprobe's stderr (kaprobe's stdout is data), no
                // NOTIFY_SOCKET (systemd hears from kaprobe alone), and no capability: the
                // child gives up those kaprobe kept before it execs.
                let mut command = Command::new("/bin/sh");
                // SAFETY: the hook runs in the forked child before exec, and only makes
                // system calls (drop_thread_capabilities allocates nothing).
                unsafe {
                    command.pre_exec(privilege::drop_thread_capabilities);
                }
                let stdout = std::io::stderr()
                    .as_fd()
                    .try_clone_to_owned()
                    .map(std::process::Stdio::from)
                    .unwrap_or_else(|_| std::process::Stdio::null());
                // A link-local address carries its zone (`[fe80::1%2]:22`), or the command
                // could not use it.
                let ifindex = self.tracks.get(&flow).map_or(0, |t| t.route.ifindex);
                let local = crate::flow::with_zone(flow.local, ifindex);
                let remote = crate::flow::with_zone(flow.remote, ifindex);
                let spawned = command
                    .arg("-c")
                    .arg(cmd)
                    .env("KAPROBE_FLOW", format!("{local}-{remote}"))
                    .env("KAPROBE_VERDICT", "dead")
                    .env("KAPROBE_LOCAL", local.to_string())
                    .env("KAPROBE_REMOTE", remote.to_string())
                    .env_remove("NOTIFY_SOCKET")
                    .stdin(std::process::Stdio::null())
                    .stdout(stdout)
                    .process_group(0)
                    .spawn();
                match spawned {
                    Ok(child) => self.children.push((child, Instant::now())),
                    Err(e) => log::warn!("{flow}: --on-dead exec: {e}"),
                }
                Ok(())
            }
        }
    }

    /// Forgets the commands that ended; kills the process group of any that ran past
    /// `--exec-timeout`.
    fn reap_children(&mut self) {
        let timeout = self.args.exec_timeout;
        self.children.retain_mut(|(c, started)| {
            if matches!(c.try_wait(), Ok(Some(_))) {
                return false;
            }
            if started.elapsed() >= timeout {
                log::warn!(
                    "--on-dead exec: pid {} still running after {}: killed",
                    c.id(),
                    duration(timeout)
                );
                kill_group(c, libc::SIGKILL);
                let _ = c.wait();
                return false;
            }
            true
        });
    }

    /// At the end: SIGTERM to every command's process group, a short grace, then SIGKILL,
    /// so that kaprobe ends within a second whatever they do.
    fn end_children(&mut self) {
        for (c, _) in &self.children {
            kill_group(c, libc::SIGTERM);
        }
        let deadline = Instant::now() + CHILD_GRACE;
        while !self.children.is_empty() && Instant::now() < deadline {
            self.children
                .retain_mut(|(c, _)| !matches!(c.try_wait(), Ok(Some(_))));
            std::thread::sleep(Duration::from_millis(20));
        }
        for (mut c, _) in self.children.drain(..) {
            kill_group(&c, libc::SIGKILL);
            let _ = c.wait();
        }
    }

    fn summary(&mut self, elapsed: Duration) -> Result<()> {
        self.end_children();
        let t = &self.tally;
        let n = |s: &str| t.changes.get(s).copied().unwrap_or(0);
        if self.reporter.json {
            output::json_line(json!({
                "event": "summary", "connections": t.connections, "rounds": t.rounds,
                "dead": n("dead"), "reset": n("reset"), "unreachable": n("unreachable"),
                "closed": n("closed"), "elapsed_ms": output::millis(elapsed),
            }))
        } else {
            output::line(format!(
                "watched {} for {}: {}; went dead {}, reset {}, unreachable {}, closed {}",
                plural(t.connections, "connection"),
                duration(elapsed),
                plural(t.rounds, "probe round"),
                n("dead"),
                n("reset"),
                n("unreachable"),
                n("closed"),
            ))
        }
    }
}

/// How often `watch` checks that the namespace it entered is still there.
const NETNS_CHECK: Duration = Duration::from_secs(1);

/// How long `--on-dead exec` commands get to end after SIGTERM when kaprobe stops.
const CHILD_GRACE: Duration = Duration::from_millis(500);

/// Sends `signal` to the process group `child` leads (it was started with its own).
fn kill_group(child: &Child, signal: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill with a negative pid signals that process group; ours, still unreaped.
        unsafe { libc::kill(-pid, signal) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreachable_and_learn_failed_wait_for_the_next_round() {
        let t = |time, intvl| Timing {
            time: Duration::from_secs(time),
            intvl: Duration::from_millis(intvl),
            probes: 3,
        };
        assert_eq!(retry_after(t(60, 1000)), Duration::from_secs(60));
        assert_eq!(retry_after(t(0, 2500)), Duration::from_millis(2500));
        // --time 0s --intvl 0s would retry in a tight loop: never below the floor.
        assert_eq!(retry_after(t(0, 0)), RETRY_FLOOR);
    }

    #[test]
    fn a_rescan_lists_every_socket_only_when_the_counters_moved_or_a_minute_passed() {
        let c = |active, passive, curr_estab| TcpOpens {
            active,
            passive,
            curr_estab,
        };
        let s = Duration::from_secs;
        let quiet = QUIET_RESCAN;
        // The first rescan, or counters that cannot be read: list.
        assert!(listing_due(None, Some(c(1, 1, 1)), s(1), quiet));
        assert!(listing_due(Some((c(1, 1, 1), s(0))), None, s(1), quiet));
        // Nothing moved: not until a minute after the last listing.
        let last = Some((c(5, 7, 3), s(10)));
        assert!(!listing_due(last, Some(c(5, 7, 3)), s(11), quiet));
        assert!(!listing_due(last, Some(c(5, 7, 3)), s(69), quiet));
        assert!(listing_due(last, Some(c(5, 7, 3)), s(70), quiet));
        // A connect, an accept, a connection established: list.
        assert!(listing_due(last, Some(c(6, 7, 3)), s(11), quiet));
        assert!(listing_due(last, Some(c(5, 8, 3)), s(11), quiet));
        assert!(listing_due(last, Some(c(5, 7, 4)), s(11), quiet));
    }

    #[test]
    fn on_dead_forms() {
        assert_eq!(on_dead("report").unwrap(), OnDead::Report);
        assert_eq!(on_dead("kill").unwrap(), OnDead::Kill);
        assert_eq!(
            on_dead("exec logger dead").unwrap(),
            OnDead::Exec("logger dead".into())
        );
        for bad in ["exec", "explode", "kill now", "exec  ", "execute x"] {
            let e = on_dead(bad).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad:?}");
        }
    }
}
