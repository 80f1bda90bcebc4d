//! The metrics exposition as real Prometheus tools read it: `promtool check metrics` on the
//! `/metrics` body and on a `--textfile`, and a real Prometheus server scraping the endpoint
//! on the loopback. Needs Debian's `prometheus` package (promtool and prometheus); without
//! it the tests skip, or fail when KAPROBE_REQUIRE_NETNS=1 (CI installs it).

mod common;
mod prom;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use common::ScratchDir;
use kaprobe::engine::VerdictKind;
use kaprobe::flow::Flow;
use kaprobe::metrics::{self, ConnState, Metrics, Options};
use prom::{Prometheus, http_get, promtool_check, require_tool};

fn flow(n: u16) -> Flow {
    Flow {
        local: format!("198.18.0.1:{}", 40000 + n).parse().unwrap(),
        remote: format!("[2001:db8:51::{n}]:9000").parse().unwrap(),
    }
}

/// A watch's metrics after a few connections: 3 alive, 1 dead, 1 reset, 1 pending.
fn busy(options: Options) -> Metrics {
    let m = Metrics::new(options);
    for n in 1..=6 {
        m.set_state(&flow(n), ConnState::Pending);
    }
    for n in 1..=3 {
        m.decided(
            &flow(n),
            VerdictKind::Alive,
            Some(Duration::from_micros(80 * n as u64)),
        );
    }
    m.decided(&flow(4), VerdictKind::Dead, None);
    m.decided(&flow(5), VerdictKind::Reset, Some(Duration::from_millis(2)));
    m.probe_sent(9);
    m.ignored(1);
    m.killed();
    m
}

fn promtool_accepts_the_metrics_body_and_the_textfile() {
    if !require_tool("promtool") {
        return;
    }
    let dir = ScratchDir::new("promtool");

    // The /metrics body a scraper gets without asking for OpenMetrics.
    let m = Arc::new(busy(Options {
        per_connection: true,
        sweep: false,
        process: false,
    }));
    let server = metrics::serve("127.0.0.1:0".parse().unwrap(), m.clone()).unwrap();
    let (code, body) = http_get(server.local_addr(), "/metrics", None);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("kaprobe_connection_state{"), "{body}");
    let scraped = dir.0.join("scraped.txt");
    std::fs::write(&scraped, &body).unwrap();
    promtool_check(&scraped);
    server.stop();

    // A sweep's textfile.
    let sweep = busy(Options {
        per_connection: false,
        sweep: true,
        process: false,
    });
    sweep.sweep_times(SystemTime::now(), Duration::from_millis(3210));
    let path = dir.0.join("kaprobe.prom");
    sweep.write_textfile(&path).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.ends_with('\n'), "{text}");
    for family in [
        "kaprobe_sweep_timestamp_seconds ",
        "kaprobe_sweep_duration_seconds 3.21\n",
        "kaprobe_connections{state=\"dead\"} 1\n",
        "kaprobe_verdicts_total{verdict=\"alive\"} 3\n",
        "kaprobe_probe_rtt_seconds_count 4\n",
    ] {
        assert!(text.contains(family), "{family:?} missing:\n{text}");
    }
    promtool_check(&path);
}

fn a_real_prometheus_scrapes_the_endpoint() {
    if !require_tool("prometheus") {
        return;
    }
    let m = Arc::new(busy(Options {
        per_connection: true,
        sweep: false,
        process: false,
    }));
    let server = metrics::serve("127.0.0.1:0".parse().unwrap(), m.clone()).unwrap();
    let prom = Prometheus::start(server.local_addr());

    let wait_for =
        |promql: &str, want: f64| prom.wait_for(&[(promql, want)], Duration::from_secs(30));
    wait_for("up{job=\"kaprobe\"}", 1.0);
    wait_for("kaprobe_connections{state=\"alive\"}", 3.0);
    wait_for("kaprobe_connections{state=\"dead\"}", 1.0);
    wait_for("kaprobe_verdicts_total{verdict=\"reset\"}", 1.0);
    wait_for("kaprobe_probes_sent_total", 9.0);
    wait_for("kaprobe_probe_rtt_seconds_count", 4.0);
    wait_for(
        "kaprobe_connection_state{local=\"198.18.0.1:40004\",state=\"dead\"}",
        1.0,
    );

    // A change in the loop shows in a later scrape; the removed series goes stale.
    m.decided(&flow(6), VerdictKind::Dead, None);
    m.forget(&flow(4));
    wait_for("kaprobe_connections{state=\"pending\"}", 0.0);
    wait_for("kaprobe_connections{state=\"dead\"}", 1.0);
    wait_for(
        "count(kaprobe_connection_state{local=\"198.18.0.1:40006\",state=\"dead\"})",
        1.0,
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while prom
        .query_one("kaprobe_connection_state{local=\"198.18.0.1:40004\"}")
        .is_some()
    {
        assert!(
            Instant::now() < deadline,
            "forgotten series never went stale"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    drop(prom);
    server.stop();
}

fn a_metrics_address_in_use_is_one_line_and_exit_2() {
    // Bound before anything else: no privilege, no namespace, no connection needed.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_kaprobe"))
        .args(["watch", "--port", "9", "--metrics", &addr])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(&addr) && err.contains("already in use"),
        "{err}"
    );
    // Not an address of this host (RFC 5737, on no interface here).
    let out = Command::new(env!("CARGO_BIN_EXE_kaprobe"))
        .args(["watch", "--metrics", "203.0.113.254:9479"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("no such address"), "{err}");
    // --metrics-per-connection alone: clap's usage error.
    let out = Command::new(env!("CARGO_BIN_EXE_kaprobe"))
        .args(["watch", "--metrics-per-connection"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--metrics <ADDR:PORT>"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

crate::tests!(
    promtool_accepts_the_metrics_body_and_the_textfile,
    a_real_prometheus_scrapes_the_endpoint,
    a_metrics_address_in_use_is_one_line_and_exit_2,
);
