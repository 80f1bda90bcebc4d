//! The metrics exposition as real Prometheus tools read it: `promtool check metrics` on the
//! `/metrics` body and on a `--textfile`, and a real Prometheus server scraping the endpoint
//! on the loopback. Needs Debian's `prometheus` package (promtool and prometheus); without
//! it the tests skip, or fail when KAPROBE_REQUIRE_NETNS=1 (CI installs it).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use kaprobe::engine::VerdictKind;
use kaprobe::flow::Flow;
use kaprobe::metrics::{self, ConnState, Metrics, Options};

/// True when `tool` runs; otherwise SKIP, or a failure under KAPROBE_REQUIRE_NETNS=1.
fn require_tool(tool: &str) -> bool {
    if Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        return true;
    }
    let why = format!("`{tool}` is not installed (Debian package `prometheus`)");
    if std::env::var("KAPROBE_REQUIRE_NETNS").as_deref() == Ok("1") {
        panic!("KAPROBE_REQUIRE_NETNS=1 but {why}");
    }
    eprintln!("SKIP: {why}");
    false
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let d = std::env::temp_dir().join(format!("kaprobe-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("create temp dir");
        TempDir(d)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

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

fn promtool_check(file: &Path) {
    let out = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(file).expect("open metrics file"))
        .output()
        .expect("run promtool");
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics found problems ({}):\n{}{}\n--- input:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(file).unwrap_or_default()
    );
}

/// GET `path` over HTTP/1.0; (status code, body).
fn http_get(addr: SocketAddr, path: &str, accept: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let accept = accept
        .map(|a| format!("Accept: {a}\r\n"))
        .unwrap_or_default();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n{accept}\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("read answer");
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, body.to_string())
}

#[test]
fn promtool_accepts_the_metrics_body_and_the_textfile() {
    if !require_tool("promtool") {
        return;
    }
    let dir = TempDir::new("promtool");

    // The /metrics body a scraper gets without asking for OpenMetrics.
    let m = Arc::new(busy(Options {
        per_connection: true,
        sweep: false,
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

/// A Prometheus server started by the test; killed and its data removed on drop.
struct Prometheus {
    child: Child,
    api: SocketAddr,
    _dir: TempDir,
}

impl Prometheus {
    fn start(target: SocketAddr) -> Prometheus {
        let dir = TempDir::new("prometheus");
        let config = dir.0.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n\
                 scrape_configs:\n  - job_name: kaprobe\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        // A free port for its API, on the loopback only.
        let api = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap();
        let log = std::fs::File::create(dir.0.join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.0.join("data").display()
            ))
            .arg(format!("--web.listen-address={api}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        Prometheus {
            child,
            api,
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.0.join("prometheus.log")).unwrap_or_default()
    }

    /// The value of an instant query that returns one series, if it does.
    fn query_one(&self, promql: &str) -> Option<f64> {
        let q: String = promql
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect();
        let stream = TcpStream::connect(self.api).ok()?;
        let mut s = stream;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(
            s,
            "GET /api/v1/query?query={q} HTTP/1.0\r\nHost: {}\r\n\r\n",
            self.api
        )
        .ok()?;
        let mut raw = String::new();
        s.read_to_string(&mut raw).ok()?;
        let body = raw.split_once("\r\n\r\n")?.1;
        let v: serde_json::Value = serde_json::from_str(body).ok()?;
        let result = v["data"]["result"].as_array()?;
        if result.len() != 1 {
            return None;
        }
        result[0]["value"][1].as_str()?.parse().ok()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_real_prometheus_scrapes_the_endpoint() {
    if !require_tool("prometheus") {
        return;
    }
    let m = Arc::new(busy(Options {
        per_connection: true,
        sweep: false,
    }));
    let server = metrics::serve("127.0.0.1:0".parse().unwrap(), m.clone()).unwrap();
    let prom = Prometheus::start(server.local_addr());

    let wait_for = |promql: &str, want: f64| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got = prom.query_one(promql);
            if got == Some(want) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{promql}: got {got:?}, want {want}\nprometheus log:\n{}",
                prom.log()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    };
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
