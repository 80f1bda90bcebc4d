//! Issue 19's proofs for the metrics endpoint, against the real daemon:
//! - a real Prometheus scrapes `watch` through TLS with a client certificate and basic auth
//!   (`--web.config.file`); scrapes with a wrong password, without a client certificate or in
//!   plain HTTP are refused;
//! - slowloris (thousands of idle and trickling connections) against a daemon held to 1,024
//!   descriptors and a 100-task cgroup: `/metrics` keeps answering, nothing aborts, the
//!   probing stays on time, 64 MiB of headers are refused.
//!
//! kaprobe watches the lab's A namespace (`--netns`); its endpoint listens on the host's
//! loopback, where it was started, as do Prometheus and the attacker (127.0.0.1 only).

mod common;
mod prom;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Background, Lab, ScratchDir, assert_still_carries_data, describe};
use prom::{Prometheus, connections, free_port, sample, try_http_get, wait_metrics};

fn watch(lab: &Lab, extra: &[&str]) -> Background {
    let mut args = vec![
        "watch",
        "--remote",
        "198.51.100.2",
        "--time",
        "1s",
        "--intvl",
        "500ms",
        "--probes",
        "2",
    ];
    args.extend_from_slice(extra);
    Background::start(lab, &args)
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, in `dir`.
fn make_pki(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend_from_slice(&ec);
    ca.extend_from_slice(&[
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "1",
        "-subj",
        "/CN=kaprobe test CA",
    ]);
    openssl(dir, &ca);
    for (name, ext) in [
        (
            "server",
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        ),
        (
            "client",
            "subjectAltName=DNS:prometheus\nextendedKeyUsage=clientAuth\n",
        ),
    ] {
        let (key, csr, crt, extfile) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.crt"),
            format!("{name}.ext"),
        );
        std::fs::write(dir.join(&extfile), ext).unwrap();
        let mut req = vec!["req"];
        req.extend_from_slice(&ec);
        req.extend_from_slice(&["-keyout", &key, "-out", &csr, "-subj", "/CN=kaprobe test"]);
        openssl(dir, &req);
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &crt,
                "-days",
                "1",
                "-extfile",
                &extfile,
            ],
        );
    }
}

fn job(name: &str, target: SocketAddr, scheme: &str, tls: &str, auth: &str) -> String {
    format!(
        "  - job_name: {name}\n    scheme: {scheme}\n{tls}{auth}    static_configs:\n      - targets: ['{target}']\n"
    )
}

fn prometheus_scrapes_through_tls_client_certificates_and_basic_auth() {
    if !common::require_lab() || !prom::require_tool("prometheus") {
        return;
    }
    if !Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        common::skip("`openssl` is not installed (Debian package `openssl`)");
    }
    let lab = Lab::up("direct", None);
    let conns = connections(&lab, 9761, 3);
    let dir = ScratchDir::new("web-config");
    let d: PathBuf = dir.0.clone();
    make_pki(&d);
    // The key readable by root only: read at start, before any privilege is dropped.
    std::fs::set_permissions(
        d.join("server.key"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let hash = bcrypt::hash("s3cret", 6).unwrap();
    // Relative file names: taken from the config file's directory, as exporters do.
    std::fs::write(
        d.join("web.yml"),
        format!(
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  \
             client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n\
             basic_auth_users:\n  prometheus: '{hash}'\n"
        ),
    )
    .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let web = d.join("web.yml");
    let mut w = watch(
        &lab,
        &[
            "--web.listen-address",
            &addr.to_string(),
            "--web.config.file",
            web.to_str().unwrap(),
        ],
    );
    assert!(
        w.wait_json(Duration::from_secs(15), |v| v["event"] == "state"
            && v["state"] == "alive")
            .is_some(),
        "no alive state"
    );
    // Plain HTTP gets no metrics.
    assert!(
        !matches!(try_http_get(addr, "/metrics", None), Some((200, _))),
        "plain HTTP answered"
    );

    let ca = d.join("ca.crt");
    let tls = |with_cert: bool| {
        let mut t = format!("    tls_config:\n      ca_file: {}\n", ca.display());
        if with_cert {
            t += &format!(
                "      cert_file: {}\n      key_file: {}\n",
                d.join("client.crt").display(),
                d.join("client.key").display()
            );
        }
        t
    };
    let auth = |password: &str| {
        format!("    basic_auth:\n      username: prometheus\n      password: {password}\n")
    };
    let jobs = [
        job("good", addr, "https", &tls(true), &auth("s3cret")),
        job("wrongpw", addr, "https", &tls(true), &auth("s3cre")),
        job("nocert", addr, "https", &tls(false), &auth("s3cret")),
        job("plain", addr, "http", "", &auth("s3cret")),
    ]
    .concat();
    let prom = Prometheus::start_jobs(&jobs);
    prom.wait_for(
        &[
            ("up{job=\"good\"}", 1.0),
            ("up{job=\"wrongpw\"}", 0.0),
            ("up{job=\"nocert\"}", 0.0),
            ("up{job=\"plain\"}", 0.0),
            ("kaprobe_connections{state=\"alive\"}", 3.0),
            ("kaprobe_build_info", 1.0),
        ],
        Duration::from_secs(30),
    );
    assert!(
        prom.query_one("process_open_fds").is_some_and(|n| n > 3.0),
        "process_open_fds"
    );
    assert!(
        prom.query_one("process_resident_memory_bytes")
            .is_some_and(|n| n > 1e6)
    );
    for (client, server) in &conns {
        assert_still_carries_data(client, server);
    }
    let (code, out, err) = w.stop();
    assert_eq!(code, 0, "{}", describe(code, &out, &err));
}

/// A pids cgroup (v1 or v2) holding `pid`, at most `max` tasks; removed on drop (the process
/// moved back to the root group first).
struct PidsCgroup {
    dir: PathBuf,
    root: PathBuf,
    pid: u32,
}

impl PidsCgroup {
    fn new(pid: u32, max: u32) -> Option<PidsCgroup> {
        let v1 = Path::new("/sys/fs/cgroup/pids");
        let v2 = Path::new("/sys/fs/cgroup");
        let root = if v1.join("cgroup.procs").exists() {
            v1.to_path_buf()
        } else if std::fs::read_to_string(v2.join("cgroup.controllers"))
            .is_ok_and(|c| c.split_whitespace().any(|x| x == "pids"))
        {
            v2.to_path_buf()
        } else {
            return None;
        };
        let dir = root.join(format!("kaprobe-test-{pid}"));
        std::fs::create_dir_all(&dir).ok()?;
        let group = PidsCgroup { dir, root, pid };
        std::fs::write(group.dir.join("pids.max"), max.to_string()).ok()?;
        std::fs::write(group.dir.join("cgroup.procs"), pid.to_string()).ok()?;
        Some(group)
    }

    fn tasks(&self) -> u32 {
        std::fs::read_to_string(self.dir.join("pids.current"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for PidsCgroup {
    fn drop(&mut self) {
        let _ = std::fs::write(self.root.join("cgroup.procs"), self.pid.to_string());
        let _ = std::fs::remove_dir(&self.dir);
    }
}

fn status_field(pid: u32, field: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(field)?.trim().parse().ok())
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

fn probes_sent(addr: SocketAddr) -> f64 {
    let (code, body) = try_http_get(addr, "/metrics", None).expect("/metrics answers");
    assert_eq!(code, 200, "{body}");
    sample(&body, "kaprobe_probes_sent_total").expect("kaprobe_probes_sent_total")
}

fn metrics_endpoint_survives_slowloris_under_fd_and_task_limits() {
    if !common::require_lab() {
        return;
    }
    let lab = Lab::up("direct", None);
    let conns = connections(&lab, 9771, 4);
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut w = watch(&lab, &["--metrics", &addr.to_string()]);
    wait_metrics(addr, Duration::from_secs(15), |b| {
        sample(b, r#"kaprobe_connections{state="alive"}"#) == Some(4.0)
    });
    let pid = w.pid();
    let out = Command::new("prlimit")
        .args([&format!("--pid={pid}"), "--nofile=1024:1024"])
        .output()
        .expect("prlimit");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let Some(cgroup) = PidsCgroup::new(pid, 100) else {
        common::skip("no pids cgroup controller to hold kaprobe to 100 tasks");
    };
    // The attacker needs more descriptors than kaprobe has.
    let limit = libc::rlimit {
        rlim_cur: 8192,
        rlim_max: 8192,
    };
    // SAFETY: setrlimit with a valid struct.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);

    let before = probes_sent(addr);
    let started = Instant::now();
    // 3,000 connections, each holding a request head it never finishes, opened 300 at a
    // time; a scrape after each batch must be answered within 3 s.
    let mut held: Vec<TcpStream> = Vec::new();
    let mut slowest = Duration::ZERO;
    for round in 0..10 {
        for _ in 0..300 {
            if let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ");
                held.push(s);
            }
        }
        // Some trickle a byte, so they are never idle.
        for s in held.iter_mut().rev().take(50) {
            let _ = s.write_all(b"a");
        }
        let t = Instant::now();
        let answered = try_http_get(addr, "/metrics", None);
        slowest = slowest.max(t.elapsed());
        assert!(
            matches!(answered, Some((200, _))),
            "round {round}: /metrics did not answer under slowloris: {answered:?}"
        );
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "round {round}: {:?}",
            t.elapsed()
        );
        assert_eq!(w.exited(), None, "kaprobe ended under slowloris");
        std::thread::sleep(Duration::from_millis(500));
    }
    let threads = status_field(pid, "Threads:").unwrap_or(0);
    let fds = open_fds(pid);
    eprintln!(
        "{} attacking connections opened; kaprobe: {threads} threads, {} tasks in its cgroup, \
         {fds} fds; slowest scrape {slowest:?}",
        held.len(),
        cgroup.tasks()
    );
    assert!(threads <= 2, "{threads} threads: a thread per connection?");
    assert!(fds < 200, "{fds} descriptors open: connections not bounded");

    // 64 MiB of headers: refused long before the end.
    let mut big = TcpStream::connect(addr).unwrap();
    big.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = big.write_all(b"GET /metrics HTTP/1.1\r\n");
    let line = format!("X-Filler: {}\r\n", "a".repeat(64 * 1024));
    let mut sent = 0usize;
    while sent < 64 << 20 && big.write_all(line.as_bytes()).is_ok() {
        sent += line.len();
    }
    assert!(sent < 16 << 20, "{sent} bytes of headers taken");

    // Probing stayed on time: 4 alive connections, --time 1s: about 4 probes a second.
    let elapsed = started.elapsed().as_secs_f64();
    let sent_probes = probes_sent(addr) - before;
    assert!(
        sent_probes >= 4.0 * elapsed * 0.6,
        "{sent_probes} probes in {elapsed:.1} s under slowloris"
    );
    let body = wait_metrics(addr, Duration::from_secs(3), |_| true);
    assert_eq!(
        sample(&body, r#"kaprobe_connections{state="alive"}"#),
        Some(4.0),
        "{body}"
    );
    drop(held);
    for (client, server) in &conns {
        assert_still_carries_data(client, server);
    }
    drop(cgroup);
    let (code, out, err) = w.stop();
    assert_eq!(code, 0, "{}", describe(code, &out, &err));
}

crate::tests!(
    prometheus_scrapes_through_tls_client_certificates_and_basic_auth,
    metrics_endpoint_survives_slowloris_under_fd_and_task_limits,
);
