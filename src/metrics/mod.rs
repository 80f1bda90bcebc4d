//! Prometheus metrics for `watch --metrics` and `sweep --textfile` (README, "Fleet:
//! Prometheus, containers, packages").
//!
//! The families, their types and labels are built with `prometheus-client`; the exposition
//! text is its encoding, never written by hand. `Metrics` is shared between the loop that
//! probes (which updates it) and the HTTP thread (which encodes it): every update is an
//! atomic operation or takes one short lock, so a scrape never stalls the loop.
//!
//! | family | type | labels |
//! |---|---|---|
//! | `kaprobe_connections` | gauge | `state` = alive, dead, reset, unreachable, pending |
//! | `kaprobe_probes_sent_total` | counter | |
//! | `kaprobe_verdicts_total` | counter | `verdict` = alive, dead, reset, unreachable |
//! | `kaprobe_ignored_answers_total` | counter | |
//! | `kaprobe_kills_total` | counter | |
//! | `kaprobe_probe_rtt_seconds` | histogram | |
//! | `kaprobe_connection_state` | gauge (1) | `local`, `remote`, `state`; only when enabled |
//! | `kaprobe_sweep_timestamp_seconds`, `kaprobe_sweep_duration_seconds` | gauge | (sweep) |
//! | `kaprobe_build_info`, `process_*` | gauge, counter | `version`, `target` (watch) |

pub mod http;
pub mod process;
pub mod textfile;
pub mod web_config;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Metric, Registry, Unit};

use crate::engine::VerdictKind;
use crate::flow::Flow;

pub use http::{ListenAddr, MetricsListener, MetricsServer, bind, parse_listen_addr, serve};
pub use textfile::{check_textfile_path, check_writable};
pub use web_config::WebConfig;

/// `Content-Type` of the OpenMetrics text format, for scrapers that ask for it.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// `Content-Type` of the classic Prometheus text format (0.0.4), for everyone else.
pub const TEXT_CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Upper bounds of the RTT histogram's buckets, in seconds: 100 µs (a probe on the same
/// host or LAN) to 10 s (a satellite hop under load); 1-2.5-5 per decade.
pub const RTT_BUCKETS: [f64; 16] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// What a watched connection is currently known as: its last verdict, or `Pending` before
/// the first one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConnState {
    Pending,
    Alive,
    Dead,
    Reset,
    Unreachable,
}

impl ConnState {
    pub const ALL: [ConnState; 5] = [
        ConnState::Alive,
        ConnState::Dead,
        ConnState::Reset,
        ConnState::Unreachable,
        ConnState::Pending,
    ];

    /// The `state` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ConnState::Pending => "pending",
            ConnState::Alive => "alive",
            ConnState::Dead => "dead",
            ConnState::Reset => "reset",
            ConnState::Unreachable => "unreachable",
        }
    }

    /// Position in `ALL`.
    fn index(self) -> usize {
        match self {
            ConnState::Alive => 0,
            ConnState::Dead => 1,
            ConnState::Reset => 2,
            ConnState::Unreachable => 3,
            ConnState::Pending => 4,
        }
    }
}

impl From<VerdictKind> for ConnState {
    fn from(kind: VerdictKind) -> ConnState {
        match kind {
            VerdictKind::Alive => ConnState::Alive,
            VerdictKind::Dead => ConnState::Dead,
            VerdictKind::Reset => ConnState::Reset,
            VerdictKind::Unreachable => ConnState::Unreachable,
        }
    }
}

const VERDICTS: [VerdictKind; 4] = [
    VerdictKind::Alive,
    VerdictKind::Dead,
    VerdictKind::Reset,
    VerdictKind::Unreachable,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerdictLabel {
    verdict: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConnLabels {
    local: String,
    remote: String,
    state: &'static str,
}

impl ConnLabels {
    fn new(flow: &Flow, state: ConnState) -> ConnLabels {
        ConnLabels {
            local: flow.local.to_string(),
            remote: flow.remote.to_string(),
            state: state.as_str(),
        }
    }
}

/// Which families a `Metrics` carries besides the common ones.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// `kaprobe_connection_state{local,remote,state}`: one series per connection
    /// (`watch --metrics-per-connection`; off by default because of cardinality).
    pub per_connection: bool,
    /// `kaprobe_sweep_timestamp_seconds` and `kaprobe_sweep_duration_seconds` (`sweep --textfile`).
    pub sweep: bool,
    /// `kaprobe_build_info` and the `process_*` families (`watch --metrics`).
    pub process: bool,
}

struct SweepGauges {
    timestamp: Gauge<f64, std::sync::atomic::AtomicU64>,
    duration: Gauge<f64, std::sync::atomic::AtomicU64>,
}

/// A new metric of type `M`, registered as `name` (the encoder adds `_total` to a
/// counter's name and `_seconds` where `unit` is given).
fn register<M: Metric + Clone + Default>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    unit: Option<Unit>,
) -> M {
    let metric = M::default();
    match unit {
        Some(unit) => registry.register_with_unit(name, help, unit, metric.clone()),
        None => registry.register(name, help, metric.clone()),
    }
    metric
}

/// `kaprobe_connections{state}`, its series in `ConnState::ALL` order. Every state is there
/// from the start, at 0: a query for `dead` finds 0, not nothing.
fn register_connections(registry: &mut Registry) -> [Gauge; 5] {
    let connections: Family<StateLabel, Gauge> = register(
        registry,
        "kaprobe_connections",
        "Watched connections by their current state (pending: no verdict yet)",
        None,
    );
    ConnState::ALL.map(|s| connections.get_or_create_owned(&StateLabel { state: s.as_str() }))
}

/// `kaprobe_verdicts_total{verdict}`, every verdict there from the start at 0.
fn register_verdicts(registry: &mut Registry) -> Family<VerdictLabel, Counter> {
    let verdicts: Family<VerdictLabel, Counter> = register(
        registry,
        "kaprobe_verdicts",
        "Verdicts decided, by verdict",
        None,
    );
    for v in VERDICTS {
        let _ = verdicts.get_or_create_owned(&VerdictLabel {
            verdict: v.as_str(),
        });
    }
    verdicts
}

impl SweepGauges {
    fn register(registry: &mut Registry) -> SweepGauges {
        SweepGauges {
            timestamp: register(
                registry,
                "kaprobe_sweep_timestamp",
                "When the sweep started, in seconds since the Unix epoch",
                Some(Unit::Seconds),
            ),
            duration: register(
                registry,
                "kaprobe_sweep_duration",
                "How long the sweep took",
                Some(Unit::Seconds),
            ),
        }
    }
}

/// The metrics of one `watch` or one `sweep`. Share it as `Arc<Metrics>`.
pub struct Metrics {
    registry: Registry,
    /// `kaprobe_connections`' series, in `ConnState::ALL` order.
    by_state: [Gauge; 5],
    probes_sent: Counter,
    verdicts: Family<VerdictLabel, Counter>,
    ignored: Counter,
    kills: Counter,
    rtt: Histogram,
    per_connection: Option<Family<ConnLabels, Gauge>>,
    sweep: Option<SweepGauges>,
    /// Each known connection's current state, so the gauges move by exactly one.
    states: Mutex<HashMap<Flow, ConnState>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("per_connection", &self.per_connection.is_some())
            .field("sweep", &self.sweep.is_some())
            .finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new(Options::default())
    }
}

impl Metrics {
    pub fn new(options: Options) -> Metrics {
        let mut registry = Registry::default();
        let r = &mut registry;
        // Registration order is the order of the exposition text.
        let by_state = register_connections(r);
        let probes_sent = register(
            r,
            "kaprobe_probes_sent",
            "Keepalive probes sent (pure ACKs with sequence number SND.NXT-1)",
            None,
        );
        let verdicts = register_verdicts(r);
        let ignored = register(
            r,
            "kaprobe_ignored_answers",
            "Answers to probes ignored as untrusted (not matching what the probe asked)",
            None,
        );
        let kills = register(
            r,
            "kaprobe_kills",
            "Local sockets of dead connections killed (--on-dead kill)",
            None,
        );
        let rtt = Histogram::new(RTT_BUCKETS);
        r.register_with_unit(
            "kaprobe_probe_rtt",
            "Time from a probe to its answer",
            Unit::Seconds,
            rtt.clone(),
        );
        let per_connection = options.per_connection.then(|| {
            register(
                r,
                "kaprobe_connection_state",
                "1 for each watched connection, labelled with its current state",
                None,
            )
        });
        let sweep = options.sweep.then(|| SweepGauges::register(r));
        if options.process {
            process::register(r);
        }
        Metrics {
            registry,
            by_state,
            probes_sent,
            verdicts,
            ignored,
            kills,
            rtt,
            per_connection,
            sweep,
            states: Mutex::new(HashMap::new()),
        }
    }

    /// For `sweep --textfile`.
    pub fn for_sweep() -> Metrics {
        Metrics::new(Options {
            per_connection: false,
            sweep: true,
            process: false,
        })
    }

    fn states(&self) -> std::sync::MutexGuard<'_, HashMap<Flow, ConnState>> {
        // A panic while holding the lock leaves a consistent map (updates are single inserts).
        self.states.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `flow` is now in `state`: a new connection (`Pending`), or one with a new verdict.
    /// Moves it between the `kaprobe_connections` gauges; the same state again does nothing.
    pub fn set_state(&self, flow: &Flow, state: ConnState) {
        let mut states = self.states();
        let old = states.insert(*flow, state);
        if old == Some(state) {
            return;
        }
        if let Some(old) = old {
            self.leave(flow, old);
        }
        self.gauge(state).inc();
        if let Some(f) = &self.per_connection {
            f.get_or_create(&ConnLabels::new(flow, state)).set(1);
        }
    }

    /// `flow` is gone (closed, or no longer matches): it leaves the gauges and its
    /// per-connection series is removed.
    pub fn forget(&self, flow: &Flow) {
        let mut states = self.states();
        if let Some(old) = states.remove(flow) {
            self.leave(flow, old);
        }
    }

    /// Takes `flow` out of the series of the state it was in (under the `states` lock).
    fn leave(&self, flow: &Flow, old: ConnState) {
        self.gauge(old).dec();
        if let Some(f) = &self.per_connection {
            f.remove(&ConnLabels::new(flow, old));
        }
    }

    fn gauge(&self, state: ConnState) -> &Gauge {
        &self.by_state[state.index()]
    }

    /// How many connections are in `state` now.
    pub fn connections(&self, state: ConnState) -> i64 {
        self.gauge(state).get()
    }

    /// `n` probes went on the wire.
    pub fn probe_sent(&self, n: u64) {
        self.probes_sent.inc_by(n);
    }

    /// A verdict was decided; `rtt` is the probe's round trip when an answer came.
    pub fn verdict(&self, kind: VerdictKind, rtt: Option<Duration>) {
        self.verdicts
            .get_or_create(&VerdictLabel {
                verdict: kind.as_str(),
            })
            .inc();
        if let Some(rtt) = rtt {
            self.rtt.observe(rtt.as_secs_f64());
        }
    }

    /// `verdict` and `set_state` together: what the loop calls when a connection's verdict
    /// is decided.
    pub fn decided(&self, flow: &Flow, kind: VerdictKind, rtt: Option<Duration>) {
        self.verdict(kind, rtt);
        self.set_state(flow, kind.into());
    }

    /// `n` answers were ignored as untrusted.
    pub fn ignored(&self, n: u64) {
        self.ignored.inc_by(n);
    }

    /// A dead connection's local socket was killed.
    pub fn killed(&self) {
        self.kills.inc();
    }

    /// Sets the sweep's start time and duration (no-op without `Options::sweep`).
    pub fn sweep_times(&self, started: SystemTime, duration: Duration) {
        if let Some(g) = &self.sweep {
            let ts = started
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            g.timestamp.set(ts);
            g.duration.set(duration.as_secs_f64());
        }
    }

    /// The classic Prometheus text format (0.0.4): what node_exporter's textfile collector
    /// and `promtool check metrics` read, and what a scraper gets unless it asks for
    /// OpenMetrics. Ends with a newline.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail; an encoder error would be a bug in a label.
        if let Err(e) =
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
        {
            log::error!("encoding metrics: {e}");
        }
        out
    }

    /// The OpenMetrics text format (ends with `# EOF`), for scrapers that ask for it.
    pub fn encode_openmetrics(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            log::error!("encoding metrics: {e}");
        }
        out
    }

    /// Writes `encode()` to `path` atomically for node_exporter's textfile collector.
    /// See `textfile::write`.
    pub fn write_textfile(&self, path: &std::path::Path) -> crate::error::Result<()> {
        textfile::write(path, &self.encode())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(n: u16) -> Flow {
        Flow {
            local: format!("198.18.0.1:{}", 40000 + n).parse().unwrap(),
            remote: "198.51.100.2:9000".parse().unwrap(),
        }
    }

    /// The value of the sample line that starts with `series ` (exact series text).
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
    }

    #[test]
    fn every_family_has_its_type_and_labels() {
        let m = Metrics::default();
        let text = m.encode();
        for (family, kind) in [
            ("kaprobe_connections", "gauge"),
            ("kaprobe_probes_sent_total", "counter"),
            ("kaprobe_verdicts_total", "counter"),
            ("kaprobe_ignored_answers_total", "counter"),
            ("kaprobe_kills_total", "counter"),
            ("kaprobe_probe_rtt_seconds", "histogram"),
        ] {
            assert!(
                text.contains(&format!("\n# TYPE {family} {kind}\n"))
                    || text.starts_with(&format!("# TYPE {family} {kind}\n")),
                "no TYPE line for {family} {kind}:\n{text}"
            );
            assert!(
                text.contains(&format!("# HELP {family} ")),
                "{family}:\n{text}"
            );
        }
        for s in ["alive", "dead", "reset", "unreachable", "pending"] {
            let series = format!("kaprobe_connections{{state=\"{s}\"}}");
            assert_eq!(sample(&text, &series), Some(0.0), "{series}:\n{text}");
        }
        for v in ["alive", "dead", "reset", "unreachable"] {
            let series = format!("kaprobe_verdicts_total{{verdict=\"{v}\"}}");
            assert_eq!(sample(&text, &series), Some(0.0), "{series}:\n{text}");
        }
        assert_eq!(sample(&text, "kaprobe_probes_sent_total"), Some(0.0));
        assert_eq!(
            sample(&text, "kaprobe_probe_rtt_seconds_bucket{le=\"0.0001\"}"),
            Some(0.0)
        );
        assert_eq!(
            sample(&text, "kaprobe_probe_rtt_seconds_bucket{le=\"10\"}"),
            Some(0.0)
        );
        assert_eq!(
            sample(&text, "kaprobe_probe_rtt_seconds_bucket{le=\"+Inf\"}"),
            Some(0.0)
        );
        assert!(!text.contains("kaprobe_connection_state"), "{text}");
        assert!(!text.contains("kaprobe_sweep"), "{text}");
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn states_move_between_gauges_and_counters_count() {
        let m = Metrics::default();
        let (a, b, c) = (flow(1), flow(2), flow(3));
        for f in [&a, &b, &c] {
            m.set_state(f, ConnState::Pending);
        }
        assert_eq!(m.connections(ConnState::Pending), 3);
        m.decided(&a, VerdictKind::Alive, Some(Duration::from_micros(300)));
        m.decided(&b, VerdictKind::Alive, Some(Duration::from_millis(3)));
        m.decided(&c, VerdictKind::Dead, None);
        // The same verdict again: counted, but the gauges do not move.
        m.decided(&a, VerdictKind::Alive, Some(Duration::from_micros(300)));
        m.probe_sent(4);
        m.probe_sent(3);
        m.ignored(2);
        m.killed();
        assert_eq!(m.connections(ConnState::Pending), 0);
        assert_eq!(m.connections(ConnState::Alive), 2);
        assert_eq!(m.connections(ConnState::Dead), 1);

        let text = m.encode();
        let state = |s: &str| sample(&text, &format!("kaprobe_connections{{state=\"{s}\"}}"));
        let verdict =
            |v: &str| sample(&text, &format!("kaprobe_verdicts_total{{verdict=\"{v}\"}}"));
        assert_eq!(state("alive"), Some(2.0));
        assert_eq!(state("dead"), Some(1.0));
        assert_eq!(state("pending"), Some(0.0));
        assert_eq!(verdict("alive"), Some(3.0));
        assert_eq!(verdict("dead"), Some(1.0));
        assert_eq!(sample(&text, "kaprobe_probes_sent_total"), Some(7.0));
        assert_eq!(sample(&text, "kaprobe_ignored_answers_total"), Some(2.0));
        assert_eq!(sample(&text, "kaprobe_kills_total"), Some(1.0));
        // Three RTTs: two of 300 µs (bucket 0.0005), one of 3 ms (bucket 0.005).
        assert_eq!(sample(&text, "kaprobe_probe_rtt_seconds_count"), Some(3.0));
        let le = |b: &str| {
            sample(
                &text,
                &format!("kaprobe_probe_rtt_seconds_bucket{{le=\"{b}\"}}"),
            )
        };
        assert_eq!(le("0.00025"), Some(0.0));
        assert_eq!(le("0.0005"), Some(2.0));
        assert_eq!(le("0.0025"), Some(2.0));
        assert_eq!(le("0.005"), Some(3.0));
        assert_eq!(le("+Inf"), Some(3.0));
        let sum = sample(&text, "kaprobe_probe_rtt_seconds_sum").unwrap();
        assert!((sum - 0.0036).abs() < 1e-9, "{sum}");

        m.forget(&c);
        m.forget(&c);
        assert_eq!(m.connections(ConnState::Dead), 0);
        assert_eq!(m.connections(ConnState::Alive), 2);
    }

    #[test]
    fn watch_adds_build_info_and_process_families() {
        let m = Metrics::new(Options {
            process: true,
            ..Options::default()
        });
        let text = m.encode();
        let version = env!("CARGO_PKG_VERSION");
        assert!(
            text.contains(&format!(
                "kaprobe_build_info{{version=\"{version}\",target=\""
            )),
            "{text}"
        );
        for family in [
            "# TYPE process_cpu_seconds_total counter",
            "# TYPE process_resident_memory_bytes gauge",
            "# TYPE process_open_fds gauge",
            "# TYPE process_max_fds gauge",
            "# TYPE process_start_time_seconds gauge",
        ] {
            assert!(text.contains(family), "{family} missing: {text}");
        }
        let rss = sample(&text, "process_resident_memory_bytes").unwrap();
        assert!(rss > 1e5, "{rss}");
        assert!(
            m.encode_openmetrics()
                .contains("# TYPE process_cpu_seconds counter")
        );
        // sweep's textfile and the default carry neither.
        let plain = Metrics::default().encode();
        assert!(
            !plain.contains("process_") && !plain.contains("build_info"),
            "{plain}"
        );
    }

    #[test]
    fn per_connection_series_follow_the_state_and_go_away() {
        let m = Metrics::new(Options {
            per_connection: true,
            ..Options::default()
        });
        let a = flow(1);
        m.set_state(&a, ConnState::Pending);
        let pending = r#"kaprobe_connection_state{local="198.18.0.1:40001",remote="198.51.100.2:9000",state="pending"}"#;
        let dead = r#"kaprobe_connection_state{local="198.18.0.1:40001",remote="198.51.100.2:9000",state="dead"}"#;
        let text = m.encode();
        assert!(
            text.contains("# TYPE kaprobe_connection_state gauge"),
            "{text}"
        );
        assert_eq!(sample(&text, pending), Some(1.0), "{text}");
        m.decided(&a, VerdictKind::Dead, None);
        let text = m.encode();
        assert_eq!(
            sample(&text, pending),
            None,
            "old state's series removed:\n{text}"
        );
        assert_eq!(sample(&text, dead), Some(1.0), "{text}");
        m.forget(&a);
        let text = m.encode();
        assert!(!text.contains("kaprobe_connection_state{"), "{text}");

        // IPv6 endpoints keep their brackets in the label.
        let v6 = Flow {
            local: "[2001:db8::1]:40000".parse().unwrap(),
            remote: "[2001:db8::2]:9000".parse().unwrap(),
        };
        m.set_state(&v6, ConnState::Alive);
        let text = m.encode();
        assert!(
            text.contains(
                r#"local="[2001:db8::1]:40000",remote="[2001:db8::2]:9000",state="alive""#
            ),
            "{text}"
        );
    }

    #[test]
    fn sweep_gauges_and_openmetrics() {
        let m = Metrics::for_sweep();
        m.sweep_times(
            SystemTime::UNIX_EPOCH + Duration::from_millis(1_790_000_000_500),
            Duration::from_millis(1250),
        );
        let text = m.encode();
        assert!(
            text.contains("# TYPE kaprobe_sweep_timestamp_seconds gauge"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE kaprobe_sweep_duration_seconds gauge"),
            "{text}"
        );
        assert_eq!(
            sample(&text, "kaprobe_sweep_timestamp_seconds"),
            Some(1_790_000_000.5)
        );
        assert_eq!(sample(&text, "kaprobe_sweep_duration_seconds"), Some(1.25));

        let om = m.encode_openmetrics();
        assert!(om.ends_with("# EOF\n"), "{om}");
        assert!(om.contains("# TYPE kaprobe_probes_sent counter"), "{om}");
        assert!(
            om.contains("# UNIT kaprobe_probe_rtt_seconds seconds"),
            "{om}"
        );
        assert!(om.contains("kaprobe_probes_sent_total 0"), "{om}");
    }

    #[test]
    fn updates_from_many_threads_add_up() {
        let m = std::sync::Arc::new(Metrics::default());
        let threads: Vec<_> = (0..4u16)
            .map(|t| {
                let m = m.clone();
                std::thread::spawn(move || {
                    for i in 0..250u16 {
                        let f = flow(t * 1000 + i);
                        m.set_state(&f, ConnState::Pending);
                        m.decided(&f, VerdictKind::Alive, Some(Duration::from_millis(1)));
                        m.probe_sent(1);
                        let _ = m.encode();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(m.connections(ConnState::Alive), 1000);
        assert_eq!(m.connections(ConnState::Pending), 0);
        assert_eq!(
            sample(&m.encode(), "kaprobe_probes_sent_total"),
            Some(1000.0)
        );
    }
}
