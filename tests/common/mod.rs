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

/// True when this process can build namespace labs. Otherwise the test is reported as
/// ignored, with the reason (see `skip`).
pub fn require_lab() -> bool {
    match lab_unavailable_reason() {
        None => true,
        Some(reason) => skip(reason),
    }
}

/// Ends a test that cannot run here: `run_tests` reports it as ignored with `why` — unless
/// `KAPROBE_REQUIRE_NETNS=1` (set by `.ci/run`), where it fails, so that CI can never pass by
/// skipping.
pub fn skip(why: impl std::fmt::Display) -> ! {
    if std::env::var("KAPROBE_REQUIRE_NETNS").as_deref() == Ok("1") {
        panic!("KAPROBE_REQUIRE_NETNS=1 but {why}");
    }
    std::panic::panic_any(LabSkip(format!(
        "{why} (set KAPROBE_REQUIRE_NETNS=1 to make this a failure)"
    )))
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

    /// The first line of a lab test: `require_lab()`, which ends the test as skipped (or, with
    /// KAPROBE_REQUIRE_NETNS=1, failed) where no lab can be built, then `Lab::up`.
    pub fn up_or_skip(kind: &str, ct_timeout: Option<u32>) -> Lab {
        require_lab();
        Lab::up(kind, ct_timeout)
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
        if let Err((code, err)) = self.try_fault(args) {
            panic!(
                "lab.sh {} {} failed (exit {code}): {err}",
                args.join(" "),
                self.name
            );
        }
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

    /// The two ends of the connection `connect(v6, server_port, client_port)` opens, as
    /// kaprobe names them from A: (local, remote).
    pub fn ends(&self, v6: bool, server_port: u16, client_port: u16) -> (SocketAddr, SocketAddr) {
        (
            SocketAddr::new(self.a_addr(v6), client_port),
            SocketAddr::new(self.b_addr(v6), server_port),
        )
    }

    /// Opens a TCP connection from A (a_addr:client_port) to B (b_addr:server_port).
    /// Returns (client stream in A, server stream in B). Both are blocking, with no
    /// timeouts set.
    pub fn connect(&self, v6: bool, server_port: u16, client_port: u16) -> (TcpStream, TcpStream) {
        let (client_addr, server_addr) = self.ends(v6, server_port, client_port);

        let listener: TcpListener = in_netns(&self.ns('b'), move || {
            // std sets SO_REUSEADDR on listening sockets on Unix. An address can be briefly
            // unavailable right after the lab comes up; and the listener of an earlier
            // connect on the same port, though dropped, can stay open for a moment in a child
            // another test thread is spawning (its copy of the descriptor table lives until
            // exec). Retry both for a bounded time.
            let deadline = Instant::now() + Duration::from_secs(3);
            loop {
                match TcpListener::bind(server_addr) {
                    Ok(l) => break l,
                    Err(e)
                        if Instant::now() < deadline
                            && matches!(
                                e.kind(),
                                std::io::ErrorKind::AddrNotAvailable
                                    | std::io::ErrorKind::AddrInUse
                            ) =>
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

/// The flow of a connected socket, `LOCAL-REMOTE`.
pub fn flow_of(s: &TcpStream) -> String {
    flow(s.local_addr().unwrap(), s.peer_addr().unwrap())
}

/// A verdict line's `elapsed_ms`.
pub fn elapsed_ms(v: &serde_json::Value) -> f64 {
    v["elapsed_ms"]
        .as_f64()
        .unwrap_or_else(|| panic!("elapsed_ms missing: {v}"))
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
    set_sockopt(&stream, libc::SOL_SOCKET, libc::SO_REUSEADDR, &one)?;
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
pub fn run_bounded(cmd: Command, what: &str) -> (i32, String, String, Duration) {
    run_bounded_for(cmd, what, KAPROBE_TIMEOUT)
}

// ------------------------------------------------------------------ the JSON contract
// Every `--json` line a test sees is checked against the schema (README "JSON"): the
// runners below check all of a kaprobe run's stdout, and the helpers that parse lines
// check each one.

/// The JSON Schema of kaprobe's `--json` output, compiled once (formats checked too).
pub fn schema() -> &'static jsonschema::Validator {
    static SCHEMA: std::sync::OnceLock<jsonschema::Validator> = std::sync::OnceLock::new();
    SCHEMA.get_or_init(|| {
        let text = include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src/output/schema.json"
        ));
        let schema: serde_json::Value =
            serde_json::from_str(text).expect("src/output/schema.json is not JSON");
        jsonschema::draft202012::options()
            .should_validate_formats(true)
            .build(&schema)
            .unwrap_or_else(|e| panic!("src/output/schema.json is not a valid schema: {e}"))
    })
}

/// One line of `--json` output as JSON; the test fails if it is not JSON or not valid
/// against the schema (every error is named).
pub fn json_line(line: &str) -> serde_json::Value {
    json_problem(line).unwrap_or_else(|why| panic!("{why}"))
}

/// One line as JSON, or why it is not a valid `--json` line.
fn json_problem(line: &str) -> Result<serde_json::Value, String> {
    let v: serde_json::Value = serde_json::from_str(line.trim())
        .map_err(|e| format!("--json output line is not JSON ({e}): {line}"))?;
    let errors: Vec<String> = schema()
        .iter_errors(&v)
        .map(|e| format!("  at {}: {e}", e.instance_path()))
        .collect();
    if errors.is_empty() {
        Ok(v)
    } else {
        Err(format!(
            "--json output line does not follow src/output/schema.json:\n{line}\n{}",
            errors.join("\n")
        ))
    }
}

/// Every non-empty line of a `--json` run's stdout, checked by [`json_line`].
pub fn json_lines(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(json_line)
        .collect()
}

/// Whether a kaprobe command line prints JSON on stdout: `--json`, and no help, version,
/// completions or manual page (which print text whatever `--json` says).
pub fn prints_json<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> bool {
    let args: Vec<&std::ffi::OsStr> = args.iter().map(AsRef::as_ref).collect();
    let opts = args.iter().take_while(|a| **a != "--");
    let mut json = false;
    for a in opts {
        match a.to_str() {
            Some("--json") => json = true,
            Some("--help" | "-h" | "--version" | "-V" | "help" | "completions" | "man") => {
                return false;
            }
            _ => {}
        }
    }
    json
}

/// Checks a finished command's stdout when it was kaprobe run with `--json` (directly or
/// through a wrapper such as setpriv).
fn check_kaprobe_json(cmd: &Command, stdout: &str, what: &str) {
    let exe = std::ffi::OsStr::new(env!("CARGO_BIN_EXE_kaprobe"));
    let args: Vec<&std::ffi::OsStr> = cmd.get_args().collect();
    let Some(at) = std::iter::once(cmd.get_program())
        .chain(args.iter().copied())
        .position(|a| a == exe)
    else {
        return;
    };
    let kaprobe_args = &args[at.min(args.len())..];
    if prints_json(kaprobe_args) {
        for line in stdout.lines().filter(|l| !l.trim().is_empty()) {
            if let Err(why) = json_problem(line) {
                panic!("{what}: {why}\nstdout:\n{stdout}");
            }
        }
    }
}

/// The one `"event": "error"` object of a `--json` run that failed: the test fails unless
/// stdout ends with exactly one, valid, with exit `code` and kind `kind`, and stderr has
/// the same message on one line.
pub fn error_json(code: i32, stdout: &str, stderr: &str, kind: &str) -> serde_json::Value {
    let all = json_lines(stdout);
    let errors: Vec<&serde_json::Value> = all.iter().filter(|v| v["event"] == "error").collect();
    assert_eq!(
        errors.len(),
        1,
        "one error object: {}",
        describe(code, stdout, stderr)
    );
    assert_eq!(
        all.last().map(|v| &v["event"]),
        Some(&serde_json::json!("error")),
        "the error object comes last: {}",
        describe(code, stdout, stderr)
    );
    let e = errors[0].clone();
    assert_eq!(e["exit"], code, "{}", describe(code, stdout, stderr));
    assert_eq!(e["error"], kind, "{}", describe(code, stdout, stderr));
    let message = e["message"].as_str().unwrap_or_default();
    assert!(
        stderr.lines().any(|l| l.contains(message)),
        "stderr says the same: {}",
        describe(code, stdout, stderr)
    );
    e
}

/// The JSON object on the line whose "event" is "verdict".
pub fn verdict_json(stdout: &str) -> serde_json::Value {
    let mut found = None;
    for line in stdout.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let v = json_line(line);
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

// ------------------------------------------------------------------ real hosts (lab_realhost)
// Connections set up the way applications do it: socket options before connect/listen,
// any addresses (link-local with a scope, a dual-stack listener), sockets owned by another
// uid; and kaprobe runs with a shorter limit or in the background (watch).

/// Socket options an application sets before it connects or listens.
#[derive(Clone, Debug, Default)]
pub struct SockOpts {
    /// SO_MARK (policy routing with `ip rule fwmark`).
    pub mark: Option<u32>,
    /// SO_BINDTODEVICE: an interface or a VRF device.
    pub device: Option<String>,
    /// TCP_MD5SIG (RFC 2385): the key for segments with this peer address.
    pub md5: Option<(IpAddr, Vec<u8>)>,
    /// SO_KEEPALIVE with TCP_KEEPIDLE, TCP_KEEPINTVL (whole seconds) and TCP_KEEPCNT.
    pub keepalive: Option<(u64, u64, u32)>,
    /// IPV6_V6ONLY on an IPv6 socket (false: a dual-stack `[::]` listener).
    pub v6only: Option<bool>,
    /// Create the socket with this file-system uid: the owner nftables `meta skuid` sees.
    pub owner_uid: Option<u32>,
}

/// The kernel's `struct tcp_md5sig` (linux/tcp.h); the libc crate does not define it.
#[repr(C)]
struct TcpMd5Sig {
    addr: libc::sockaddr_storage,
    flags: u8,
    prefixlen: u8,
    keylen: u16,
    ifindex: libc::c_int,
    key: [u8; 80],
}

fn set_md5_key(sock: &socket2::Socket, peer: IpAddr, key: &[u8]) -> std::io::Result<()> {
    assert!(key.len() <= 80, "TCP-MD5 keys are at most 80 bytes");
    let sa = socket2::SockAddr::from(SocketAddr::new(peer, 0));
    let mut sig = TcpMd5Sig {
        addr: unsafe { std::mem::zeroed() },
        flags: 0,
        prefixlen: 0,
        keylen: key.len() as u16,
        ifindex: 0,
        key: [0; 80],
    };
    sig.key[..key.len()].copy_from_slice(key);
    // SAFETY: copies the address (at most sizeof(sockaddr_storage)) into the zeroed storage.
    unsafe {
        std::ptr::copy_nonoverlapping(
            sa.as_ptr() as *const u8,
            &mut sig.addr as *mut _ as *mut u8,
            (sa.len() as usize).min(std::mem::size_of::<libc::sockaddr_storage>()),
        );
    }
    set_sockopt(sock, libc::IPPROTO_TCP, libc::TCP_MD5SIG, &sig)
}

/// setsockopt(2): the option `name` at `level` set to `value`, passed as its bytes (a C int,
/// or a `#[repr(C)]` struct the kernel defines for the option).
pub fn set_sockopt<T>(
    fd: &impl AsRawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> std::io::Result<()> {
    // SAFETY: `value` points to a live T and the length given is exactly its size.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// A TCP socket for `addr`'s family with `opts` applied (and SO_REUSEADDR).
pub fn app_socket(addr: SocketAddr, opts: &SockOpts) -> std::io::Result<socket2::Socket> {
    let make = || {
        socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )
    };
    let sock = match opts.owner_uid {
        // setfsuid changes only the calling thread's credentials; the socket file keeps them.
        Some(uid) => {
            let before = unsafe { libc::setfsuid(uid) };
            let s = make();
            unsafe { libc::setfsuid(before as libc::uid_t) };
            s?
        }
        None => make()?,
    };
    sock.set_reuse_address(true)?;
    if let Some(v6only) = opts.v6only {
        sock.set_only_v6(v6only)?;
    }
    if let Some(mark) = opts.mark {
        sock.set_mark(mark)?;
    }
    if let Some(dev) = &opts.device {
        sock.bind_device(Some(dev.as_bytes()))?;
    }
    if let Some((peer, key)) = &opts.md5 {
        set_md5_key(&sock, *peer, key)?;
    }
    if let Some((idle, intvl, cnt)) = opts.keepalive {
        let ka = socket2::TcpKeepalive::new()
            .with_time(Duration::from_secs(idle))
            .with_interval(Duration::from_secs(intvl))
            .with_retries(cnt);
        sock.set_tcp_keepalive(&ka)?;
        sock.set_keepalive(true)?;
    }
    Ok(sock)
}

/// A listener on `addr` inside namespace `ns`, with `opts` (bind retried for a bounded time
/// while the address is not yet usable).
pub fn listen_in(ns: &str, addr: SocketAddr, opts: SockOpts) -> TcpListener {
    in_netns(ns, move || {
        let deadline = Instant::now() + Duration::from_secs(3);
        let sock = app_socket(addr, &opts).unwrap_or_else(|e| panic!("listener socket: {e}"));
        loop {
            match sock.bind(&addr.into()) {
                Ok(()) => break,
                Err(e)
                    if Instant::now() < deadline
                        && e.kind() == std::io::ErrorKind::AddrNotAvailable =>
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("bind listener {addr}: {e}"),
            }
        }
        sock.listen(64)
            .unwrap_or_else(|e| panic!("listen {addr}: {e}"));
        sock.into()
    })
}

/// A connection from `local` to `remote` made inside namespace `ns` with `opts` (bounded).
pub fn connect_in(ns: &str, local: SocketAddr, remote: SocketAddr, opts: SockOpts) -> TcpStream {
    in_netns(ns, move || {
        let sock = app_socket(local, &opts).unwrap_or_else(|e| panic!("client socket: {e}"));
        sock.bind(&local.into())
            .unwrap_or_else(|e| panic!("bind client {local}: {e}"));
        sock.set_write_timeout(Some(NET_TIMEOUT)).unwrap();
        sock.connect(&remote.into())
            .unwrap_or_else(|e| panic!("connect {local} -> {remote}: {e}"));
        sock.set_write_timeout(None).unwrap();
        sock.into()
    })
}

/// Accepts one connection with a bounded wait; the listener is closed afterwards.
pub fn accept_bounded(listener: TcpListener) -> TcpStream {
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + NET_TIMEOUT;
    loop {
        match listener.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).unwrap();
                return s;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(Instant::now() < deadline, "accept timed out");
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

impl Lab {
    /// Like `connect`, with the application's socket options on the client and the listener.
    pub fn connect_opts(
        &self,
        v6: bool,
        server_port: u16,
        client_port: u16,
        client: SockOpts,
        server: SockOpts,
    ) -> (TcpStream, TcpStream) {
        let server_addr = SocketAddr::new(self.b_addr(v6), server_port);
        let client_addr = SocketAddr::new(self.a_addr(v6), client_port);
        let listener = listen_in(&self.ns('b'), server_addr, server);
        let c = connect_in(&self.ns('a'), client_addr, server_addr, client);
        (c, accept_bounded(listener))
    }

    /// Runs `lab.sh SUBCMD NAME ARGS...`; Err((exit code, stderr)) when it fails.
    pub fn try_fault(&self, args: &[&str]) -> Result<(), (i32, String)> {
        let (sub, rest) = args.split_first().expect("fault needs a subcommand");
        let out = Command::new(lab_script())
            .arg(sub)
            .arg(&self.name)
            .args(rest)
            .output()
            .expect("cannot run scripts/lab.sh");
        if out.status.success() {
            Ok(())
        } else {
            Err((
                out.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            ))
        }
    }

    /// Runs CMD inside namespace NAME-WHICH; its stdout (panics on failure).
    pub fn exec(&self, which: char, cmd: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns(which)])
            .args(cmd)
            .output()
            .expect("cannot run ip netns exec");
        assert!(
            out.status.success(),
            "{} in {} failed: {}",
            cmd.join(" "),
            self.ns(which),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// The kernel's `tcp_info` for a socket of this process.
pub fn tcp_info(s: &TcpStream) -> libc::tcp_info {
    // SAFETY: tcp_info is plain data; getsockopt writes at most `len` bytes into it.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            &mut info as *mut _ as *mut libc::c_void,
            &mut len,
        )
    };
    assert_eq!(rc, 0, "TCP_INFO: {}", std::io::Error::last_os_error());
    info
}

/// Bytes in a socket's send queue, not yet acknowledged or not yet sent (SIOCOUTQ).
pub fn send_queue(s: &TcpStream) -> usize {
    let mut n: libc::c_int = 0;
    let rc = unsafe { libc::ioctl(s.as_raw_fd(), libc::TIOCOUTQ, &mut n) };
    assert_eq!(rc, 0, "SIOCOUTQ: {}", std::io::Error::last_os_error());
    n as usize
}

/// Like `run_kaprobe`, killed (and the test failed) after `limit` instead of KAPROBE_TIMEOUT.
pub fn run_kaprobe_for(
    lab: &Lab,
    args: &[&str],
    limit: Duration,
) -> (i32, String, String, Duration) {
    let ns = lab.ns('a');
    let mut full = vec!["--netns", ns.as_str(), "--json"];
    full.extend_from_slice(args);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kaprobe"));
    cmd.args(&full);
    run_bounded_for(cmd, &format!("kaprobe {}", full.join(" ")), limit)
}

/// `run_bounded` with its own limit.
pub fn run_bounded_for(
    mut cmd: Command,
    what: &str,
    limit: Duration,
) -> (i32, String, String, Duration) {
    let (code, stdout, stderr, wall) = run_unchecked(&mut cmd, what, limit);
    check_kaprobe_json(&cmd, &stdout, what);
    (code, stdout, stderr, wall)
}

fn run_unchecked(
    cmd: &mut Command,
    what: &str,
    limit: Duration,
) -> (i32, String, String, Duration) {
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let out_t = drain(child.stdout.take().unwrap());
    let err_t = drain(child.stderr.take().unwrap());
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait for the child") {
            break st;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            let stdout = out_t.join().unwrap_or_default();
            let stderr = err_t.join().unwrap_or_default();
            panic!(
                "{what} ran longer than {limit:?}; killed\nstdout:\n{stdout}\nstderr:\n{stderr}"
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

fn drain(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = pipe.read_to_string(&mut s);
        s
    })
}

/// A kaprobe started by `spawn_in_a`.
pub struct Spawned {
    pub child: std::process::Child,
    /// Its stdout lines, each with the moment it was read.
    pub lines: std::sync::mpsc::Receiver<(Instant, String)>,
    /// All of its stderr, once it has ended.
    pub stderr: std::thread::JoinHandle<String>,
}

/// Starts `kaprobe --netns NAME-a ARGS...` with stdout and stderr piped; a thread reads
/// stdout line by line as it comes (to its end, whether or not anyone still receives).
pub fn spawn_in_a(lab: &Lab, args: &[&str]) -> Spawned {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kaprobe"))
        .args(["--netns", &lab.ns('a')])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start kaprobe");
    let out = child.stdout.take().unwrap();
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(out).lines().map_while(|l| l.ok()) {
            let _ = tx.send((Instant::now(), line));
        }
    });
    let stderr = drain(child.stderr.take().unwrap());
    Spawned {
        child,
        lines,
        stderr,
    }
}

/// A kaprobe running in the background (watch): stdout lines as they come, stderr at the end.
/// Dropping it kills the process.
pub struct Background {
    child: Option<std::process::Child>,
    lines: std::sync::mpsc::Receiver<(Instant, String)>,
    seen: Vec<String>,
    err: Option<std::thread::JoinHandle<String>>,
}

impl Background {
    /// Starts `kaprobe --netns NAME-a --json ARGS...`.
    pub fn start(lab: &Lab, args: &[&str]) -> Background {
        let json_args: Vec<&str> = std::iter::once("--json")
            .chain(args.iter().copied())
            .collect();
        let Spawned {
            child,
            lines,
            stderr,
        } = spawn_in_a(lab, &json_args);
        Background {
            child: Some(child),
            lines,
            seen: Vec::new(),
            err: Some(stderr),
        }
    }

    /// The first JSON stdout line `pred` accepts within `limit`; None if it did not come
    /// (or kaprobe ended first).
    pub fn wait_json(
        &mut self,
        limit: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> Option<serde_json::Value> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok((_, line)) => {
                    let v = json_line(&line);
                    self.seen.push(line);
                    if pred(&v) {
                        return Some(v);
                    }
                }
                Err(_) => return None,
            }
        }
    }

    /// kaprobe's pid (0 once `stop` has taken it).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    /// Sends `signal` to kaprobe.
    pub fn signal(&self, signal: libc::c_int) {
        if let Some(child) = &self.child {
            // SAFETY: kill with our own child's pid.
            unsafe { libc::kill(child.id() as libc::pid_t, signal) };
        }
    }

    /// The exit code once kaprobe has ended, waiting at most `limit` for it.
    pub fn exit_within(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(code) = self.exited() {
                return Some(code);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The exit code if kaprobe has ended.
    pub fn exited(&mut self) -> Option<i32> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(st)) => Some(st.code().unwrap_or(-1)),
            _ => None,
        }
    }

    /// SIGTERM (unless it already ended), a bounded wait, then (exit code, all stdout, stderr).
    pub fn stop(mut self) -> (i32, String, String) {
        let mut child = self.child.take().expect("running");
        let status = terminate(&mut child);
        while let Ok((_, line)) = self.lines.recv_timeout(Duration::from_millis(500)) {
            self.seen.push(line);
        }
        let err = self
            .err
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default();
        let mut out = self.seen.join("\n");
        out.push('\n');
        json_lines(&out);
        (status.code().unwrap_or(-1), out, err)
    }
}

/// SIGTERM (unless the child already ended), then its status; the test fails (and the child
/// is killed) if it has not ended 5 s later.
pub fn terminate(child: &mut std::process::Child) -> std::process::ExitStatus {
    if let Ok(None) = child.try_wait() {
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    }
    wait_within(child, Duration::from_secs(5), "kaprobe after SIGTERM")
}

/// The child's status once it ends by itself; the test fails (and the child is killed) if it
/// has not ended within `limit`. `what` names it in the failure.
pub fn wait_within(
    child: &mut std::process::Child,
    limit: Duration,
    what: &str,
) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().expect("wait") {
            return s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not end within {limit:?}; killed");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

// ------------------------------------------------------------------ outside tools (tests/lab_stacks.rs)

/// True when `tool --version` runs. Otherwise the test is skipped (see `skip`).
pub fn require_tool(tool: &str, package: &str) -> bool {
    match Command::new(tool).arg("--version").output() {
        Ok(o) if o.status.success() => true,
        Ok(o) => skip(format!("`{tool} --version` failed ({})", o.status)),
        Err(e) => skip(format!(
            "cannot run `{tool}` (Debian package {package}): {e}"
        )),
    }
}

/// The path of example NAME, built first: `cargo test --test X` does not build examples.
/// The build is a no-op when it is up to date (a full `cargo test` has built it already).
pub fn example_bin(name: &str) -> PathBuf {
    let exe = std::path::Path::new(env!("CARGO_BIN_EXE_kaprobe"));
    let profile_dir = exe.parent().expect("the kaprobe binary has a directory");
    let target_dir = profile_dir
        .parent()
        .expect("the profile directory has a parent");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "--example", name, "--manifest-path"])
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir);
    if profile_dir.file_name().and_then(|n| n.to_str()) == Some("release") {
        cmd.arg("--release");
    }
    // Not bounded by KAPROBE_TIMEOUT: a first build compiles the example's dependencies.
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run cargo build --example {name}: {e}"));
    assert!(
        out.status.success(),
        "cargo build --example {name} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let path = profile_dir.join("examples").join(name);
    assert!(path.exists(), "{} missing after the build", path.display());
    path
}

/// Rebuilds B as a plain Ethernet bridge between its veth end and a TAP device `tap0`: the
/// kernel in B keeps no address, so it never answers for B's addresses; the peer behind the
/// TAP (smoltcp, lwIP, a scripted peer) owns them.
pub fn bridge_to_tap(lab: &Lab) {
    lab.exec('b', &["ip", "addr", "flush", "dev", "eth0"]);
    lab.exec(
        'b',
        &[
            "ip",
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ],
    );
    lab.exec('b', &["ip", "link", "set", "eth0", "master", "br0"]);
    // Persistent, so it keeps its place in the bridge while the peer is down.
    lab.exec('b', &["ip", "tuntap", "add", "dev", "tap0", "mode", "tap"]);
    lab.exec('b', &["ip", "link", "set", "tap0", "master", "br0"]);
    lab.exec('b', &["ip", "link", "set", "tap0", "up"]);
    lab.exec('b', &["ip", "link", "set", "br0", "up"]);
}

/// A scratch directory, removed with its contents on drop.
pub struct ScratchDir(pub PathBuf);

impl ScratchDir {
    pub fn new(tag: &str) -> ScratchDir {
        let n = LAB_COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("kaprobe-{tag}-{}x{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        ScratchDir(dir)
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if std::env::var_os("KAPROBE_KEEP_SCRATCH").is_some() {
            eprintln!("kept {}", self.0.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Reads lines from a child's pipe on a thread; `wait_for` waits (bounded) for one that
/// contains a given text.
pub struct LineReader {
    rx: std::sync::mpsc::Receiver<String>,
    pub seen: Vec<String>,
}

impl LineReader {
    pub fn new(pipe: impl Read + Send + 'static) -> LineReader {
        use std::io::BufRead;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                // Keep draining after the reader is gone: a child writing to a closed
                // pipe would die of SIGPIPE.
                let _ = tx.send(line);
            }
        });
        LineReader {
            rx,
            seen: Vec::new(),
        }
    }

    /// Every line: those seen, then the rest until the pipe ends (bounded by `limit`).
    pub fn until_end(mut self, limit: Duration) -> Vec<String> {
        let deadline = Instant::now() + limit;
        while let Ok(line) = self
            .rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            self.seen.push(line);
        }
        self.seen
    }

    /// Takes the lines that arrive until none has for `quiet` (bounded by `limit`): those that
    /// the child printed so far, once it has gone quiet.
    pub fn settle(&mut self, quiet: Duration, limit: Duration) -> &[String] {
        let deadline = Instant::now() + limit;
        while let Ok(line) = self
            .rx
            .recv_timeout(quiet.min(deadline.saturating_duration_since(Instant::now())))
        {
            self.seen.push(line);
        }
        &self.seen
    }

    /// True once a line containing `text` arrived within `limit`.
    pub fn wait_for(&mut self, text: &str, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => {
                    let hit = line.contains(text);
                    self.seen.push(line);
                    if hit {
                        return true;
                    }
                }
                Err(_) => return false,
            }
        }
    }
}

/// A packet capture with Wireshark's dumpcap inside a namespace, writing pcapng to `file`.
/// `stop` (or drop) ends it with SIGTERM, so the file is complete, and SIGKILL if that
/// takes too long.
pub struct Capture {
    child: Option<std::process::Child>,
    pub file: PathBuf,
}

impl Capture {
    /// Starts capturing on IFACE ("any" for every interface) in namespace NS, with more
    /// dumpcap options in `extra` (e.g. `-f FILTER`), and returns once dumpcap says it is
    /// capturing.
    pub fn start(ns: &str, iface: &str, extra: &[&str], file: PathBuf) -> Capture {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns, "dumpcap", "-q", "-i", iface])
            .args(extra)
            .arg("-w")
            .arg(&file);
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start dumpcap in {ns}: {e}"));
        let err = child.stderr.take().expect("piped stderr");
        // Guard first, so the process is ended if the wait below fails.
        let cap = Capture {
            child: Some(child),
            file,
        };
        let mut lines = LineReader::new(err);
        // dumpcap prints "Capturing on" before it opens the interface, and "File:" once the
        // interface is open and the file is written: from then on packets are kept.
        assert!(
            lines.wait_for("File:", Duration::from_secs(15)),
            "dumpcap on {iface} in {ns} did not start: {:?}",
            lines.seen
        );
        cap
    }

    /// Stops the capture. Packets of the last 250 ms may still sit in the kernel's capture
    /// ring (libpcap hands them over a block at a time, dumpcap waits up to 250 ms), and
    /// dumpcap drops those when it stops: wait that long first.
    pub fn stop(&mut self) {
        Capture::stop_all(&mut [self]);
    }

    /// Stops several captures, waiting only once.
    pub fn stop_all(caps: &mut [&mut Capture]) {
        if caps.iter().all(|c| c.child.is_none()) {
            return;
        }
        std::thread::sleep(Duration::from_millis(600));
        let mut children: Vec<std::process::Child> =
            caps.iter_mut().filter_map(|c| c.child.take()).collect();
        for child in &children {
            // `ip netns exec` execs dumpcap, so this pid is dumpcap's.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for child in &mut children {
            loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Reads a capture with `tshark -r FILE -Y FILTER -T fields`: one row per frame, one string
/// per field (several occurrences joined by ',', absent fields empty).
pub fn tshark_fields(file: &std::path::Path, filter: &str, fields: &[&str]) -> Vec<Vec<String>> {
    let mut cmd = Command::new("tshark");
    cmd.arg("-r")
        .arg(file)
        .args(["-Y", filter, "-T", "fields", "-E", "separator=/t"]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    let (code, out, err, _) = run_bounded(cmd, &format!("tshark -r {}", file.display()));
    assert_eq!(code, 0, "tshark -r {} -Y {filter}\n{err}", file.display());
    out.lines()
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

/// Unwinds out of a test that needs the lab where it is unavailable: `run_tests` reports the
/// test as ignored, with the reason, instead of passed.
pub struct LabSkip(pub String);

/// One test of a binary: its name (as `--list` shows it and filters match it) and its body.
pub struct Test {
    name: String,
    body: Box<dyn FnOnce() + Send>,
}

impl Test {
    pub fn new(name: impl Into<String>, body: impl FnOnce() + Send + 'static) -> Test {
        Test {
            name: name.into(),
            body: Box::new(body),
        }
    }
}

/// The `main` of every test binary under `tests/` (`harness = false`, libtest-mimic): a test
/// whose `require_lab()` finds no lab is reported as ignored with the reason.
pub fn run_tests(tests: Vec<Test>) -> ! {
    use libtest_mimic::{Arguments, Completion, Trial};
    use std::panic::AssertUnwindSafe;
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if info.payload().downcast_ref::<LabSkip>().is_none() {
            default_hook(info);
        }
    }));
    let args = Arguments::from_args();
    let trials = tests
        .into_iter()
        .map(|Test { name, body }| {
            // A test's body is dropped after its panic: nothing observes a broken invariant.
            Trial::ignorable_test(name, move || {
                match std::panic::catch_unwind(AssertUnwindSafe(body)) {
                    Ok(()) => Ok(Completion::Completed),
                    Err(payload) => match payload.downcast::<LabSkip>() {
                        Ok(skip) => Ok(Completion::ignored_with(skip.0)),
                        Err(other) => std::panic::resume_unwind(other),
                    },
                }
            })
        })
        .collect();
    libtest_mimic::run(&args, trials).exit()
}

/// `tests!(a, b, [more], c)` is the test binary's `main` (see `run_tests`), with its tests in
/// this order: each name is a `fn()` test of that name, each `[expr]` a `Vec<Test>` (e.g. from
/// `cases!`).
#[macro_export]
macro_rules! tests {
    (@group [$more:expr]) => {
        $more
    };
    (@group $name:ident) => {
        vec![common::Test::new(stringify!($name), $name as fn())]
    };
    ($($item:tt),* $(,)?) => {
        fn main() {
            let groups: Vec<Vec<common::Test>> = vec![$($crate::tests!(@group $item)),*];
            common::run_tests(groups.into_iter().flatten().collect())
        }
    };
}

/// Table-driven tests: `cases!(guard; name => body, ...)` is a `Vec<Test>` with one test per
/// row, named `name`, that runs `body` when `guard()` is true (`require_lab`, or a file's own
/// guard, which returns false or calls `skip` where the test cannot run).
#[macro_export]
macro_rules! cases {
    ($guard:path; $($name:ident => $body:expr),* $(,)?) => {
        vec![$(common::Test::new(stringify!($name), || {
            if $guard() {
                $body;
            }
        })),*]
    };
}

/// Loads an nftables `script` inside namespace `ns`; the test fails if nft refuses it.
pub fn nft(ns: &str, script: &str) {
    use std::io::Write;
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("run nft");
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(script.as_bytes())
        .expect("write the nft script");
    assert!(
        child.wait().expect("wait for nft").success(),
        "nft in {ns} failed:\n{script}"
    );
}
