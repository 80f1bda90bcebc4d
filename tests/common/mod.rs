//! Shared harness for the lab scenario tests: builds a namespace lab with
//! `scripts/lab.sh`, opens real TCP connections across it from inside this process,
//! and runs the `kaprobe` binary against them.
//!
//! Every lab is torn down by `Drop`, also when a test panics. Names are unique per
//! process and per lab, so tests run side by side.
#![allow(dead_code)]

use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Hard limit for one kaprobe run; it is killed and the test fails beyond it.
pub const KAPROBE_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound for connecting and for moving test data across the lab.
pub const NET_TIMEOUT: Duration = Duration::from_secs(5);

fn lab_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/lab.sh")
}

/// True when this process can build namespace labs. Otherwise prints `SKIP: reason`
/// and returns false — unless `KAPROBE_REQUIRE_NETNS=1`, where it panics instead so
/// that CI can never pass by skipping.
pub fn require_lab() -> bool {
    match lab_unavailable_reason() {
        None => true,
        Some(reason) => {
            if std::env::var("KAPROBE_REQUIRE_NETNS").as_deref() == Ok("1") {
                panic!("KAPROBE_REQUIRE_NETNS=1 but the namespace lab is unavailable: {reason}");
            }
            eprintln!("SKIP: {reason} (set KAPROBE_REQUIRE_NETNS=1 to make this a failure)");
            false
        }
    }
}

fn lab_unavailable_reason() -> Option<String> {
    if unsafe { libc::geteuid() } != 0 {
        return Some("not running as root (network namespaces need CAP_SYS_ADMIN)".into());
    }
    match Command::new("ip").args(["netns", "list"]).output() {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            return Some(format!(
                "`ip netns list` failed: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ));
        }
        Err(e) => return Some(format!("cannot run `ip` (iproute2): {e}")),
    }
    match Command::new("nft").arg("--version").output() {
        Ok(o) if o.status.success() => {}
        Ok(_) => return Some("`nft --version` failed".into()),
        Err(e) => return Some(format!("cannot run `nft` (nftables): {e}")),
    }
    if !lab_script().exists() {
        return Some(format!("{} is missing", lab_script().display()));
    }
    None
}

static LAB_COUNTER: AtomicU32 = AtomicU32::new(0);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Topology {
    Direct,
    Routed,
    Nat,
}

/// A running lab. Dropping it deletes every namespace it made.
pub struct Lab {
    pub name: String,
    pub topology: Topology,
}

impl Lab {
    /// `kind` is "direct", "routed" or "nat"; `ct_timeout` sets LAB_CT_TIMEOUT (nat).
    pub fn up(kind: &str, ct_timeout: Option<u32>) -> Lab {
        let topology = match kind {
            "direct" => Topology::Direct,
            "routed" => Topology::Routed,
            "nat" => Topology::Nat,
            other => panic!("unknown lab topology {other:?}"),
        };
        let n = LAB_COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("kp{}x{}", std::process::id(), n);
        // Guard first, so a half-built lab is removed too.
        let lab = Lab { name, topology };
        let mut cmd = Command::new(lab_script());
        cmd.args(["up", kind, &lab.name]);
        if let Some(t) = ct_timeout {
            cmd.env("LAB_CT_TIMEOUT", t.to_string());
        }
        let out = cmd.output().expect("cannot run scripts/lab.sh");
        assert!(
            out.status.success(),
            "lab.sh up {kind} {} failed ({}): {}",
            lab.name,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        lab
    }

    /// Namespace name for 'a', 'b' or 'r'.
    pub fn ns(&self, which: char) -> String {
        assert!(matches!(which, 'a' | 'b' | 'r'), "no namespace {which:?}");
        assert!(
            which != 'r' || self.topology != Topology::Direct,
            "direct lab has no router"
        );
        format!("{}-{}", self.name, which)
    }

    /// Runs `lab.sh SUBCMD NAME ARGS...`; panics with its stderr on failure.
    pub fn fault(&self, args: &[&str]) {
        let (sub, rest) = args.split_first().expect("fault needs a subcommand");
        let out = Command::new(lab_script())
            .arg(sub)
            .arg(&self.name)
            .args(rest)
            .output()
            .expect("cannot run scripts/lab.sh");
        assert!(
            out.status.success(),
            "lab.sh {} {} {} failed ({}): {}",
            sub,
            self.name,
            rest.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A's address (the client side): the same in every topology (scripts/lab.sh).
    pub fn a_addr(&self, v6: bool) -> IpAddr {
        if v6 {
            IpAddr::V6(v6addr(0x18, 2))
        } else {
            IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2))
        }
    }

    /// B's address (the server / peer side): the same in every topology.
    pub fn b_addr(&self, v6: bool) -> IpAddr {
        if v6 {
            IpAddr::V6(v6addr(0x51, 2))
        } else {
            IpAddr::V4(Ipv4Addr::new(198, 51, 100, 2))
        }
    }

    /// R's address on A's side (the source of its ICMP errors towards A).
    pub fn r_addr(&self, v6: bool) -> IpAddr {
        assert!(
            self.topology != Topology::Direct,
            "direct lab has no router"
        );
        if v6 {
            IpAddr::V6(v6addr(0x18, 1))
        } else {
            IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1))
        }
    }

    /// Opens a TCP connection from A (a_addr:client_port) to B (b_addr:server_port).
    /// Returns (client stream in A, server stream in B). Both are blocking, with no
    /// timeouts set.
    pub fn connect(&self, v6: bool, server_port: u16, client_port: u16) -> (TcpStream, TcpStream) {
        let server_addr = SocketAddr::new(self.b_addr(v6), server_port);
        let client_addr = SocketAddr::new(self.a_addr(v6), client_port);

        let listener: TcpListener = in_netns(&self.ns('b'), move || {
            // std sets SO_REUSEADDR on listening sockets on Unix. An address can be briefly
            // unavailable right after the lab comes up: retry for a bounded time.
            let deadline = Instant::now() + Duration::from_secs(3);
            loop {
                match TcpListener::bind(server_addr) {
                    Ok(l) => break l,
                    Err(e)
                        if Instant::now() < deadline
                            && e.kind() == std::io::ErrorKind::AddrNotAvailable =>
                    {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Err(e) => panic!("bind listener {server_addr} in B: {e}"),
                }
            }
        });
        let client: TcpStream = in_netns(&self.ns('a'), move || {
            connect_from(client_addr, server_addr)
                .unwrap_or_else(|e| panic!("connect {client_addr} -> {server_addr} in A: {e}"))
        });
        // The handshake is done by the kernel; accept with a bounded wait.
        listener.set_nonblocking(true).unwrap();
        let deadline = Instant::now() + NET_TIMEOUT;
        let server = loop {
            match listener.accept() {
                Ok((s, peer)) => {
                    if self.topology != Topology::Nat {
                        assert_eq!(peer, client_addr, "unexpected peer accepted");
                    }
                    break s;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    assert!(Instant::now() < deadline, "accept in B timed out");
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("accept in B: {e}"),
            }
        };
        server.set_nonblocking(false).unwrap();
        // Dropping the listener here: it holds a reference to B's namespace.
        drop(listener);
        (client, server)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Never panic here (we may already be unwinding).
        match Command::new(lab_script())
            .args(["down", &self.name])
            .output()
        {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!(
                "lab.sh down {} failed: {}",
                self.name,
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => eprintln!("cannot run lab.sh down {}: {e}", self.name),
        }
    }
}

fn v6addr(net: u16, host: u16) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, net, 0, 0, 0, 0, host)
}

/// `LOCAL-REMOTE` as kaprobe takes it (IPv6 in brackets).
pub fn flow(local: SocketAddr, remote: SocketAddr) -> String {
    format!("{local}-{remote}")
}

/// Runs `f` on a new thread that has entered `/run/netns/NS` (setns affects only the
/// calling thread; sockets made there stay in that namespace afterwards).
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    let handle = std::thread::spawn(move || {
        let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns({path}): {}", std::io::Error::last_os_error());
        f()
    });
    match handle.join() {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e),
    }
}

fn sockaddr_of(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            unsafe { std::ptr::write(&mut ss as *mut _ as *mut libc::sockaddr_in, sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: 0,
            };
            unsafe { std::ptr::write(&mut ss as *mut _ as *mut libc::sockaddr_in6, sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as libc::socklen_t)
}

/// A blocking TCP connect from a fixed local address and port (std cannot bind
/// before connecting). The connect is bounded by SO_SNDTIMEO.
pub fn connect_from(local: SocketAddr, remote: SocketAddr) -> std::io::Result<TcpStream> {
    let family = if local.is_ipv6() {
        libc::AF_INET6
    } else {
        libc::AF_INET
    };
    let fd = unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // Owned from here on: closed on every error path.
    let stream = unsafe { TcpStream::from_raw_fd(fd) };
    let one: libc::c_int = 1;
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            &one as *const _ as *const libc::c_void,
            std::mem::size_of_val(&one) as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let (sa, len) = sockaddr_of(local);
    if unsafe { libc::bind(fd, &sa as *const _ as *const libc::sockaddr, len) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    stream.set_write_timeout(Some(NET_TIMEOUT))?;
    let (sa, len) = sockaddr_of(remote);
    if unsafe { libc::connect(fd, &sa as *const _ as *const libc::sockaddr, len) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    stream.set_write_timeout(None)?;
    Ok(stream)
}

static DATA_COUNTER: AtomicU32 = AtomicU32::new(0);

/// Sends distinct bytes each way and reads exactly them back (bounded waits).
pub fn assert_still_carries_data(client: &TcpStream, server: &TcpStream) {
    let n = DATA_COUNTER.fetch_add(1, Ordering::SeqCst);
    for s in [client, server] {
        s.set_read_timeout(Some(NET_TIMEOUT)).unwrap();
        s.set_write_timeout(Some(NET_TIMEOUT)).unwrap();
    }
    let up = format!("a-to-b #{n} {}\n", std::process::id()).into_bytes();
    let down = format!("b-to-a #{n} {}\n", !std::process::id()).into_bytes();
    let (mut c, mut s) = (client, server);

    c.write_all(&up).expect("client write");
    let mut got = vec![0u8; up.len()];
    s.read_exact(&mut got)
        .expect("server did not receive the client's bytes");
    assert_eq!(got, up, "server received other bytes than sent");

    s.write_all(&down).expect("server write");
    let mut got = vec![0u8; down.len()];
    c.read_exact(&mut got)
        .expect("client did not receive the server's bytes");
    assert_eq!(got, down, "client received other bytes than sent");

    for s in [client, server] {
        s.set_read_timeout(None).unwrap();
        s.set_write_timeout(None).unwrap();
    }
}

/// Runs kaprobe with `--netns NAME-a --json` prepended.
pub fn run_kaprobe(lab: &Lab, args: &[&str]) -> (i32, String, String, Duration) {
    let ns = lab.ns('a');
    let mut full = vec!["--netns", ns.as_str(), "--json"];
    full.extend_from_slice(args);
    run_kaprobe_bare(&full)
}

/// Runs kaprobe with exactly `args`, killed (and the test failed) after KAPROBE_TIMEOUT.
pub fn run_kaprobe_bare(args: &[&str]) -> (i32, String, String, Duration) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kaprobe"));
    cmd.args(args);
    run_bounded(cmd, &format!("kaprobe {}", args.join(" ")))
}

/// Runs a prepared command with piped output, killed (and the test failed) after
/// KAPROBE_TIMEOUT; a death by signal fails the test too. `what` names it in messages.
pub fn run_bounded(mut cmd: Command, what: &str) -> (i32, String, String, Duration) {
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let mut out_pipe = child.stdout.take().unwrap();
    let mut err_pipe = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out_pipe.read_to_string(&mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err_pipe.read_to_string(&mut s);
        s
    });
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait for the child") {
            break st;
        }
        if start.elapsed() > KAPROBE_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            let stdout = out_t.join().unwrap_or_default();
            let stderr = err_t.join().unwrap_or_default();
            panic!(
                "{what} ran longer than {KAPROBE_TIMEOUT:?}; killed\nstdout:\n{stdout}\nstderr:\n{stderr}"
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let wall = start.elapsed();
    let stdout = out_t.join().unwrap_or_default();
    let stderr = err_t.join().unwrap_or_default();
    let code = match status.code() {
        Some(c) => c,
        None => {
            use std::os::unix::process::ExitStatusExt;
            panic!(
                "{what} died by signal {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
                status.signal()
            );
        }
    };
    (code, stdout, stderr, wall)
}

/// The JSON object on the line whose "event" is "verdict".
pub fn verdict_json(stdout: &str) -> serde_json::Value {
    let mut found = None;
    for line in stdout.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| {
            panic!("--json output line is not JSON ({e}): {line}\nstdout:\n{stdout}")
        });
        if v.get("event").and_then(|e| e.as_str()) == Some("verdict") {
            assert!(found.is_none(), "more than one verdict line:\n{stdout}");
            found = Some(v);
        }
    }
    found.unwrap_or_else(|| panic!("no line with \"event\": \"verdict\" in stdout:\n{stdout}"))
}

/// Checks the fields every verdict has: flow, local, remote, verdict, probes_sent,
/// rtt_us (number or null), elapsed_ms.
pub fn assert_verdict_fields(
    v: &serde_json::Value,
    local: SocketAddr,
    remote: SocketAddr,
    verdict: &str,
) {
    assert_eq!(v["verdict"], verdict, "verdict: {v}");
    assert_eq!(v["flow"], flow(local, remote), "flow: {v}");
    let parse = |key: &str| -> SocketAddr {
        v[key]
            .as_str()
            .unwrap_or_else(|| panic!("{key} is not a string: {v}"))
            .parse()
            .unwrap_or_else(|e| panic!("{key} is not ip:port ({e}): {v}"))
    };
    assert_eq!(parse("local"), local, "local: {v}");
    assert_eq!(parse("remote"), remote, "remote: {v}");
    assert!(v["probes_sent"].is_u64(), "probes_sent not a count: {v}");
    assert!(v["elapsed_ms"].is_number(), "elapsed_ms not a number: {v}");
    assert!(
        v["rtt_us"].is_null() || v["rtt_us"].is_number(),
        "rtt_us neither a number nor null: {v}"
    );
}

/// Panic message helper: the whole run.
pub fn describe(code: i32, stdout: &str, stderr: &str) -> String {
    format!("exit {code}\nstdout:\n{stdout}\nstderr:\n{stderr}")
}
