//! Real Prometheus tools for the metrics tests (tests/metrics.rs, tests/lab_metrics.rs):
//! `promtool check metrics`, a Prometheus server on the loopback with its query API, and a
//! plain HTTP GET. Everything listens on 127.0.0.1 only.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// True when `tool --version` runs (Debian package `prometheus`); otherwise the test is
/// skipped (`common::skip`; a failure under KAPROBE_REQUIRE_NETNS=1, as CI installs it).
pub fn require_tool(tool: &str) -> bool {
    if Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        return true;
    }
    crate::common::skip(format!(
        "`{tool}` is not installed (Debian package `prometheus`)"
    ))
}

/// A loopback port free at the time of asking.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// `promtool check metrics` on `file`: no complaint at all, or the test fails with it.
pub fn promtool_check(file: &Path) {
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

/// GET `path` over HTTP/1.0; (status code, body). None when nothing answers.
pub fn try_http_get(addr: SocketAddr, path: &str, accept: Option<&str>) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let accept = accept
        .map(|a| format!("Accept: {a}\r\n"))
        .unwrap_or_default();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n{accept}\r\n").ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Some((code, body.to_string()))
}

/// `try_http_get` that fails the test when nothing answers.
pub fn http_get(addr: SocketAddr, path: &str, accept: Option<&str>) -> (u16, String) {
    try_http_get(addr, path, accept).unwrap_or_else(|| panic!("nothing answers on {addr}"))
}

/// The value of the sample line that starts with `series ` (exact series text).
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// A Prometheus server started by the test, scraping `target` every second, its API on a
/// loopback port; killed and its data removed on drop.
pub struct Prometheus {
    child: Child,
    pub api: SocketAddr,
    dir: crate::common::ScratchDir,
}

impl Prometheus {
    pub fn start(target: SocketAddr) -> Prometheus {
        Prometheus::start_jobs(&format!(
            "  - job_name: kaprobe\n    static_configs:\n      - targets: ['{target}']\n"
        ))
    }

    /// With `jobs`, the YAML list under `scrape_configs:` (each item indented by two).
    pub fn start_jobs(jobs: &str) -> Prometheus {
        let dir = crate::common::ScratchDir::new("prometheus");
        let config = dir.0.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\nscrape_configs:\n{jobs}"
            ),
        )
        .unwrap();
        let api: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
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
        Prometheus { child, api, dir }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("prometheus.log")).unwrap_or_default()
    }

    /// An instant query: each series' labels and value. None when the API does not answer
    /// (yet).
    pub fn query(&self, promql: &str) -> Option<Vec<(serde_json::Value, f64)>> {
        let q: String = promql
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect();
        let (code, body) = try_http_get(self.api, &format!("/api/v1/query?query={q}"), None)?;
        if code != 200 {
            return None;
        }
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        v["data"]["result"]
            .as_array()?
            .iter()
            .map(|r| Some((r["metric"].clone(), r["value"][1].as_str()?.parse().ok()?)))
            .collect()
    }

    /// The value of an instant query that returns one series, if it does.
    pub fn query_one(&self, promql: &str) -> Option<f64> {
        match self.query(promql)?.as_slice() {
            [(_, v)] => Some(*v),
            _ => None,
        }
    }

    /// Waits up to `limit` until every query returns its one wanted value at the same time;
    /// fails the test with what was last seen and Prometheus's log.
    pub fn wait_for(&self, want: &[(&str, f64)], limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let got: Vec<Option<f64>> = want.iter().map(|(q, _)| self.query_one(q)).collect();
            if got.iter().zip(want).all(|(g, (_, w))| *g == Some(*w)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "after {limit:?}: wanted {want:?}, got {got:?}\nprometheus log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `/metrics` at `addr` answers 200 and `ok` accepts its body; returns it.
pub fn wait_metrics(addr: SocketAddr, limit: Duration, ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + limit;
    let mut last = None;
    loop {
        if let Some((200, body)) = try_http_get(addr, "/metrics", None) {
            if ok(&body) {
                return body;
            }
            last = Some(body);
        }
        assert!(
            Instant::now() < deadline,
            "/metrics at {addr} within {limit:?}: last body {last:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `n` connections A -> B, server ports `base`.., client ports `base + 35000`..
pub fn connections(
    lab: &crate::common::Lab,
    base: u16,
    n: u16,
) -> Vec<(std::net::TcpStream, std::net::TcpStream)> {
    (0..n)
        .map(|i| lab.connect(false, base + i, base + 35000 + i))
        .collect()
}
