//! A test harness built on kaprobe's library: two network namespaces joined by a veth pair,
//! a TCP connection between them, and three assertions made through [`kaprobe::Prober`]:
//! the peer is `alive`; `dead` once an nftables rule in its namespace drops everything;
//! `reset` once its namespace is destroyed and built again with the same address (a crashed
//! and restarted host, which never sent a FIN or an RST).
//!
//! Run it as root (it needs `ip` and `nft`): `sudo cargo run --example harness`. It exits 0
//! when every assertion held. Addresses come from 203.0.113.0/24 (RFC 5737), with no route
//! out; the namespaces, named `kph<PID>a` and `kph<PID>b`, are deleted on exit, also when an
//! assertion fails.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kaprobe::{Filter, Flow, Namespace, Options, Prober, Report, Verdict};

const A_ADDR: &str = "203.0.113.1";
const B_ADDR: &str = "203.0.113.2";
const PORT: u16 = 9000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // SAFETY: no arguments, cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("harness: run as root (network namespaces need CAP_SYS_ADMIN)");
        std::process::exit(2);
    }
    let lab = Lab::new();
    lab.build_b();

    // The connection: the server in B, the client in A.
    let listener = in_ns(&lab.b, || TcpListener::bind((B_ADDR, PORT)))?;
    let server_addr = SocketAddr::new(B_ADDR.parse()?, PORT);
    let mut client = in_ns(&lab.a, || {
        TcpStream::connect_timeout(&server_addr, Duration::from_secs(5))
    })?;
    let (mut server, _) = listener.accept()?;
    exchange(&mut client, &mut server)?;
    let flow = Flow {
        local: client.local_addr()?,
        remote: client.peer_addr()?,
    };

    // The library, in A's namespace; this thread stays in its own.
    let prober = Prober::open(Namespace::Name(lab.a.clone()))?;
    let opts = Options::builder()
        .intvl(Duration::from_millis(500))
        .probes(3)
        .build()?;

    // 1. Alive, by one probe and by a sweep of the port.
    let report = prober.probe(&flow, &opts)?;
    show("alive", &report);
    assert_eq!(report.verdict, Verdict::Alive, "{report:?}");
    let filter = Filter {
        port: Some(PORT),
        ..Filter::default()
    };
    let swept = prober.sweep(&filter, &opts)?;
    assert_eq!(swept.len(), 1, "{swept:?}");
    assert_eq!(
        (swept[0].flow, swept[0].verdict),
        (flow, Verdict::Alive),
        "{swept:?}"
    );

    // 2. Dead: B's host goes silent (every packet in or out of its namespace dropped).
    lab.blackhole_b();
    let report = prober.probe(&flow, &opts)?;
    show("dead", &report);
    assert_eq!(report.verdict, Verdict::Dead, "{report:?}");
    assert_eq!(report.probes_sent, 3, "{report:?}");
    // time + probes x intvl after the connection fell idle.
    assert!(report.elapsed >= Duration::from_millis(1500), "{report:?}");

    // 3. Reset: B's host crashes (its FIN is dropped by the rule above) and comes back empty
    // with the same address; its kernel answers the probe with an RST.
    drop(server);
    drop(listener);
    lab.restart_b();
    let report = prober.probe(&flow, &opts)?;
    show("reset", &report);
    assert_eq!(report.verdict, Verdict::Reset, "{report:?}");

    println!("harness: alive, dead and reset as expected");
    Ok(())
}

/// One verdict, as `kaprobe --json` prints it.
fn show(expect: &str, report: &Report) {
    let json = serde_json::to_string(report).unwrap_or_else(|e| e.to_string());
    println!("expect {expect}: {json}");
}

/// One byte each way, so that the connection is established on both sides.
fn exchange(client: &mut TcpStream, server: &mut TcpStream) -> std::io::Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(5)))?;
    server.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut byte = [0u8];
    client.write_all(b"?")?;
    server.read_exact(&mut byte)?;
    server.write_all(b"!")?;
    client.read_exact(&mut byte)?;
    Ok(())
}

/// Runs `f` on a thread of its own inside namespace `ns`: sockets it opens stay there.
fn in_ns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::scope(|s| {
        s.spawn(|| {
            let file = File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            // SAFETY: a valid descriptor; setns moves only this thread, which ends with `f`.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
    })
}

/// Runs a command; panics with its error output when it fails.
fn run(args: &[&str], stdin: Option<&str>) {
    let mut cmd = Command::new(args[0]);
    cmd.args(&args[1..])
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", args[0]));
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .unwrap_or_else(|e| panic!("{}: {e}", args.join(" ")));
    }
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("{}: {e}", args.join(" ")));
    assert!(
        out.status.success(),
        "{} failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// Whether `ip` succeeds (for polling).
fn ip_ok(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Namespaces A (this host) and B (the peer), deleted when dropped, also while a failed
/// assertion unwinds.
struct Lab {
    a: String,
    b: String,
}

impl Lab {
    /// Namespace A with its loopback up; B comes with [`Lab::build_b`].
    fn new() -> Lab {
        let id = std::process::id();
        let lab = Lab {
            a: format!("kph{id}a"),
            b: format!("kph{id}b"),
        };
        // With `panic = "abort"` no destructor runs: the panic hook cleans up then too.
        let names = [lab.a.clone(), lab.b.clone()];
        let default_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            delete(&names);
            default_hook(info);
        }));
        run(&["ip", "netns", "add", &lab.a], None);
        run(&["ip", "-n", &lab.a, "link", "set", "lo", "up"], None);
        lab
    }

    /// Namespace B, and the veth pair from A's eth0 to B's eth0 on 203.0.113.0/24.
    fn build_b(&self) {
        let (a, b) = (self.a.as_str(), self.b.as_str());
        run(&["ip", "netns", "add", b], None);
        run(&["ip", "-n", b, "link", "set", "lo", "up"], None);
        run(
            &[
                "ip", "-n", a, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0",
                "netns", b,
            ],
            None,
        );
        for (ns, addr) in [(a, A_ADDR), (b, B_ADDR)] {
            run(
                &[
                    "ip",
                    "-n",
                    ns,
                    "addr",
                    "add",
                    &format!("{addr}/24"),
                    "dev",
                    "eth0",
                ],
                None,
            );
            run(&["ip", "-n", ns, "link", "set", "eth0", "up"], None);
        }
    }

    /// Drops every packet into and out of B.
    fn blackhole_b(&self) {
        let rules = "table inet harness {
            chain input { type filter hook input priority -10; policy drop; }
            chain output { type filter hook output priority -10; policy drop; }
        }";
        run(
            &["ip", "netns", "exec", &self.b, "nft", "-f", "-"],
            Some(rules),
        );
    }

    /// Destroys B and builds it again with the same address. Sockets closed in B (whose FIN
    /// was dropped) may keep its namespace alive in the kernel for a while, and with it its
    /// devices: the veth pair is deleted first, which removes A's end too.
    fn restart_b(&self) {
        run(&["ip", "-n", &self.b, "link", "del", "eth0"], None);
        run(&["ip", "netns", "del", &self.b], None);
        let deadline = Instant::now() + Duration::from_secs(5);
        while ip_ok(&["-n", &self.a, "link", "show", "eth0"]) {
            assert!(
                Instant::now() < deadline,
                "A's eth0 still exists 5 s after B was deleted"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        self.build_b();
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        delete(&[self.a.clone(), self.b.clone()]);
    }
}

/// Deletes the namespaces that still exist (their veth ends go with them).
fn delete(names: &[String]) {
    for name in names {
        if std::path::Path::new("/run/netns").join(name).exists() {
            let _ = Command::new("ip")
                .args(["netns", "del", name])
                .stderr(Stdio::null())
                .status();
        }
    }
}
