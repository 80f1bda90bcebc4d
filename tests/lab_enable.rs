//! `kaprobe enable` against real connections in the lab: after `enable`, sock_diag and
//! `list` show the keepalive timer, the kernel's own keepalive probes appear on the wire
//! (counted with an in-process AF_PACKET capture), a blackholed peer is declared dead with
//! ETIMEDOUT, and `--off` stops it. Also the exit statuses of bad values and of a missing
//! connection, owner or permission.

mod common;

use std::io::Read;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{Lab, describe, flow_of, in_netns, run_kaprobe, run_kaprobe_bare};
use serde_json::Value;

// ------------------------------------------------------------------ capture

/// One TCP segment a capture saw leave A.
#[derive(Clone, Copy, Debug)]
struct Segment {
    at: Instant,
    src: SocketAddr,
    dst: SocketAddr,
    seq: u32,
    flags: u8,
    payload: usize,
}

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const ACK: u8 = 0x10;

/// A TCP segment (IPv4, or IPv6 without extension headers) inside an Ethernet frame.
fn parse_frame(frame: &[u8], at: Instant) -> Option<Segment> {
    let ip = frame.get(14..)?;
    let (src, dst, tcp) = match frame.get(12..14)? {
        [0x08, 0x00] => {
            if ip.len() < 20 || ip[0] >> 4 != 4 || ip[9] != 6 {
                return None;
            }
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
            let src: [u8; 4] = ip[12..16].try_into().ok()?;
            let dst: [u8; 4] = ip[16..20].try_into().ok()?;
            (
                IpAddr::from(src),
                IpAddr::from(dst),
                ip.get(ihl..total.min(ip.len()))?,
            )
        }
        [0x86, 0xdd] => {
            if ip.len() < 40 || ip[6] != 6 {
                return None;
            }
            let plen = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
            let src: [u8; 16] = ip[8..24].try_into().ok()?;
            let dst: [u8; 16] = ip[24..40].try_into().ok()?;
            (
                IpAddr::from(src),
                IpAddr::from(dst),
                ip.get(40..(40 + plen).min(ip.len()))?,
            )
        }
        _ => return None,
    };
    if tcp.len() < 20 {
        return None;
    }
    let doff = usize::from(tcp[12] >> 4) * 4;
    let port = |p: &[u8]| u16::from_be_bytes([p[0], p[1]]);
    Some(Segment {
        at,
        src: SocketAddr::new(src, port(&tcp[0..2])),
        dst: SocketAddr::new(dst, port(&tcp[2..4])),
        seq: u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]),
        flags: tcp[13],
        payload: tcp.len().saturating_sub(doff),
    })
}

/// An AF_PACKET socket on A's eth0 (ETH_P_ALL: it sees outgoing frames too), read by a
/// thread into a shared list until stopped.
struct Capture {
    seen: Arc<Mutex<Vec<Segment>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Capture {
    fn start(lab: &Lab) -> Capture {
        let fd: OwnedFd = in_netns(&lab.ns('a'), || {
            let proto = (libc::ETH_P_ALL as u16).to_be();
            // SAFETY: plain socket/setsockopt/bind calls on a new descriptor.
            unsafe {
                let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, libc::c_int::from(proto));
                assert!(
                    fd >= 0,
                    "AF_PACKET socket: {}",
                    std::io::Error::last_os_error()
                );
                let owned = OwnedFd::from_raw_fd(fd);
                let ifindex = libc::if_nametoindex(c"eth0".as_ptr());
                assert!(ifindex > 0, "no eth0 in A");
                let mut sll: libc::sockaddr_ll = std::mem::zeroed();
                sll.sll_family = libc::AF_PACKET as u16;
                sll.sll_protocol = proto;
                sll.sll_ifindex = ifindex as i32;
                let rc = libc::bind(
                    fd,
                    &sll as *const libc::sockaddr_ll as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
                );
                assert_eq!(rc, 0, "bind AF_PACKET: {}", std::io::Error::last_os_error());
                let tv = libc::timeval {
                    tv_sec: 0,
                    tv_usec: 100_000,
                };
                common::set_sockopt(&fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv)
                    .unwrap_or_else(|e| panic!("SO_RCVTIMEO: {e}"));
                owned
            }
        });
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while !st.load(Ordering::Relaxed) {
                // SAFETY: reads at most buf.len() bytes into buf.
                let n =
                    unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
                if n <= 0 {
                    continue;
                }
                if let Some(seg) = parse_frame(&buf[..n as usize], Instant::now()) {
                    s.lock().unwrap().push(seg);
                }
            }
        });
        Capture {
            seen,
            stop,
            thread: Some(thread),
        }
    }

    /// Keepalive probes sent from `from` since `since`: pure ACKs with at most one byte and
    /// seq = SND.NXT - 1, where SND.NXT is tracked from everything `from` sent before.
    fn probes(&self, from: SocketAddr, since: Instant) -> Vec<Segment> {
        let seen = self.seen.lock().unwrap();
        let mut snd_nxt: Option<u32> = None;
        let mut out = Vec::new();
        for seg in seen.iter().filter(|s| s.src == from) {
            let is_probe = seg.flags == ACK
                && seg.payload <= 1
                && snd_nxt.is_some_and(|n| seg.seq == n.wrapping_sub(1));
            if is_probe {
                if seg.at >= since {
                    out.push(*seg);
                }
                continue;
            }
            let len = seg.payload as u32
                + u32::from(seg.flags & SYN != 0)
                + u32::from(seg.flags & FIN != 0);
            let end = seg.seq.wrapping_add(len);
            if snd_nxt.is_none_or(|n| (end.wrapping_sub(n) as i32) > 0) {
                snd_nxt = Some(end);
            }
        }
        out
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ------------------------------------------------------------------ helpers

/// The one JSON object `enable --json` prints.
fn enable(lab: &Lab, args: &[&str]) -> (i32, Value, String) {
    let mut full = vec!["enable"];
    full.extend_from_slice(args);
    let (code, out, err, _) = run_kaprobe(lab, &full);
    let d = describe(code, &out, &err);
    let v = match out.trim() {
        "" => Value::Null,
        line => serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {d}")),
    };
    (code, v, d)
}

/// The (`time_s`, `intvl_s`, `probes`) an `enable` line reports.
fn timing(v: &Value) -> (Value, Value, Value) {
    (
        v["time_s"].clone(),
        v["intvl_s"].clone(),
        v["probes"].clone(),
    )
}

/// The `list --json` row of `s`.
fn listed(lab: &Lab, s: &TcpStream) -> Value {
    listed_at(lab, s.local_addr().unwrap(), s.peer_addr().unwrap())
}

fn listed_at(lab: &Lab, local: SocketAddr, peer: SocketAddr) -> Value {
    let f = format!("{local}-{peer}");
    let (code, out, err, _) = run_kaprobe(lab, &["list", "--local", &local.to_string()]);
    assert_eq!(code, 0, "{}", describe(code, &out, &err));
    out.lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .find(|r| r["flow"] == f.as_str())
        .unwrap_or_else(|| panic!("{f} not listed:\n{out}"))
}

/// `ip netns exec A setpriv ARGS --`: runs the program added next in A with other
/// credentials.
fn setpriv_in_a(lab: &Lab, args: &[&str]) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &lab.ns('a'), "setpriv"])
        .args(args)
        .arg("--");
    cmd
}

// ------------------------------------------------------------------ tests

fn enable_makes_the_kernel_probe_and_detect_a_dead_peer() {
    let lab = Lab::up_or_skip("direct", None);
    let cap = Capture::start(&lab);
    let (client, _server) = lab.connect(false, 9300, 41101);
    let (other, _other_server) = lab.connect(false, 9300, 41102);
    let flow = flow_of(&client);
    // Kept: once keepalive has killed the connection, getpeername fails.
    let (local, peer) = (client.local_addr().unwrap(), client.peer_addr().unwrap());
    assert_eq!(listed(&lab, &client)["keepalive"], "off");

    let (code, v, d) = enable(
        &lab,
        &[&flow, "--time", "1s", "--intvl", "1s", "--probes", "3"],
    );
    assert_eq!(code, 0, "{d}");
    assert_eq!(v["flow"], flow.as_str(), "{d}");
    assert_eq!(v["requested"], "on", "{d}");
    assert_eq!(v["keepalive"], "on", "{d}");
    assert_eq!(v["verified"], true, "{d}");
    assert_eq!(timing(&v), (1.into(), 1.into(), 3.into()), "{d}");
    assert!(
        v["keepalive_next_ms"].as_u64().is_some_and(|n| n <= 1000),
        "{d}"
    );
    assert_eq!(v["owner"]["pid"], std::process::id(), "{d}");
    assert_eq!(v["owner"]["fd"], client.as_raw_fd(), "{d}");
    assert_eq!(v["previous"]["keepalive"], false, "{d}");

    // sock_diag, through `list`: the timer runs on this socket only.
    let r = listed(&lab, &client);
    assert_eq!(r["keepalive"], "on", "{r}");
    assert!(
        r["keepalive_next_ms"].as_u64().is_some_and(|n| n <= 1000),
        "{r}"
    );
    assert_eq!(listed(&lab, &other)["keepalive"], "off");

    // The peer goes silent: the kernel probes every second, three times, then gives up.
    lab.fault(&["blackhole"]);
    let silent = Instant::now();
    std::thread::sleep(Duration::from_millis(2500));
    let r = listed_at(&lab, local, peer);
    assert!(
        r["keepalive_probes"].as_u64().is_some_and(|n| n >= 1),
        "probes out: {r}"
    );
    std::thread::sleep(Duration::from_millis(1000));
    let probes = cap.probes(local, silent);
    let in_window = probes
        .iter()
        .filter(|p| p.at.duration_since(silent) <= Duration::from_millis(3500))
        .count();
    assert!(
        in_window >= 2,
        "expected >= 2 keepalive probes within 3.5 s of the blackhole, saw {in_window}: {probes:?}"
    );
    for p in &probes {
        assert_eq!(p.dst, peer);
        assert_eq!(p.payload, 0, "Linux sends no garbage octet: {p:?}");
    }
    eprintln!(
        "keepalive probes after the blackhole: {} ({} within 3.5 s), at {:?}",
        probes.len(),
        in_window,
        probes
            .iter()
            .map(|p| p.at.duration_since(silent))
            .collect::<Vec<_>>()
    );
    // The application learns it: its read fails with ETIMEDOUT (time + probes × intvl).
    client
        .set_read_timeout(Some(Duration::from_secs(6)))
        .unwrap();
    let mut buf = [0u8; 16];
    let e = (&client)
        .read(&mut buf)
        .expect_err("read on a connection keepalive killed");
    assert_eq!(e.raw_os_error(), Some(libc::ETIMEDOUT), "{e}");
    assert!(
        silent.elapsed() < Duration::from_secs(7),
        "{:?}",
        silent.elapsed()
    );
    // The other connection never sent a probe.
    assert!(
        cap.probes(
            other.local_addr().unwrap(),
            silent - Duration::from_secs(60)
        )
        .is_empty()
    );
}

fn enable_off_stops_the_timer_and_the_probes() {
    let lab = Lab::up_or_skip("direct", None);
    let cap = Capture::start(&lab);
    let (client, _server) = lab.connect(true, 9300, 41111);
    let flow = flow_of(&client);

    // Defaults: 60s / 1s / 3.
    let (code, v, d) = enable(&lab, &[&flow]);
    assert_eq!(code, 0, "{d}");
    assert_eq!(timing(&v), (60.into(), 1.into(), 3.into()), "{d}");
    let next = v["keepalive_next_ms"].as_u64().expect("next probe");
    assert!((55_000..=60_000).contains(&next), "{d}");

    let (code, v, d) = enable(&lab, &[&flow, "--off"]);
    assert_eq!(code, 0, "{d}");
    assert_eq!(v["requested"], "off", "{d}");
    assert_eq!(v["keepalive"], "off", "{d}");
    assert_eq!(v["previous"]["keepalive"], true, "{d}");
    assert_eq!(v["previous"]["time_s"], 60, "{d}");
    assert_eq!(listed(&lab, &client)["keepalive"], "off");

    // On with a 2 s idle, then off before it fires: no probe ever leaves.
    let start = Instant::now();
    let (code, _, d) = enable(&lab, &[&flow, "--time", "2s"]);
    assert_eq!(code, 0, "{d}");
    let (code, _, d) = enable(&lab, &[&flow, "--off"]);
    assert_eq!(code, 0, "{d}");
    assert!(
        start.elapsed() < Duration::from_millis(1500),
        "too slow to test: {:?}",
        start.elapsed()
    );
    std::thread::sleep(Duration::from_millis(3000));
    let r = listed(&lab, &client);
    assert_eq!(r["keepalive"], "off", "{r}");
    let probes = cap.probes(client.local_addr().unwrap(), start);
    assert!(probes.is_empty(), "probes after --off: {probes:?}");
    drop(cap);

    // Human output: one line.
    let ns = lab.ns('a');
    // The remote side alone names it: it is the only connection there.
    let remote = client.peer_addr().unwrap().to_string();
    let (code, out, err, _) =
        run_kaprobe_bare(&["--netns", &ns, "enable", &remote, "--time", "30s"]);
    assert_eq!(code, 0, "{}", describe(code, &out, &err));
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(
        out.starts_with(&format!(
            "{flow} keepalive on time=30s intvl=1s probes=3 next="
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!("{}/", std::process::id())) && out.contains("was off"),
        "{out}"
    );
}

fn enable_rejects_bad_values_and_missing_connections() {
    let lab = Lab::up_or_skip("direct", None);
    let (client, _server) = lab.connect(false, 9300, 41121);
    let flow = flow_of(&client);
    for (args, needle) in [
        (vec!["--time", "500ms"], "below 1s"),
        (vec!["--intvl", "1500ms"], "whole seconds"),
        (vec!["--time", "40000s"], "32767"),
        (vec!["--probes", "128"], "TCP_KEEPCNT"),
    ] {
        let mut full = vec![flow.as_str()];
        full.extend_from_slice(&args);
        let (code, _, d) = enable(&lab, &full);
        assert_eq!(code, 2, "{args:?}: {d}");
        assert!(d.contains(needle), "{args:?}: {d}");
    }
    // Nothing was changed by the refused runs.
    assert_eq!(listed(&lab, &client)["keepalive"], "off");
    let (code, _, d) = enable(&lab, &["198.18.0.2:41999-198.51.100.2:9300"]);
    assert_eq!(code, 5, "{d}");
    assert!(d.contains("no established TCP connection"), "{d}");
}

/// A user who cannot read this process's descriptors finds no owner: exit 7, one line.
fn enable_without_access_to_the_owner_says_so() {
    let lab = Lab::up_or_skip("direct", None);
    let (client, _server) = lab.connect(false, 9300, 41131);
    let flow = flow_of(&client);
    let out = setpriv_in_a(
        &lab,
        &["--reuid", "65534", "--regid", "65534", "--clear-groups"],
    )
    .arg(env!("CARGO_BIN_EXE_kaprobe"))
    .args(["enable", &flow])
    .stdin(Stdio::null())
    .output();
    let Ok(out) = out else {
        eprintln!("SKIP part: setpriv not available");
        return;
    };
    let code = out.status.code().unwrap_or(-1);
    let err = String::from_utf8_lossy(&out.stderr);
    eprintln!("as nobody: exit {code}: {}", err.trim());
    assert_eq!(code, 7, "{err}");
    assert!(err.contains("no process holds the socket"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert_eq!(listed(&lab, &client)["keepalive"], "off");
}

/// Reading the owner's descriptors is allowed but borrowing one is not (no CAP_SYS_PTRACE,
/// real uid differs): exit 6, naming CAP_SYS_PTRACE.
fn enable_refused_by_ptrace_rules_exits_6() {
    let lab = Lab::up_or_skip("direct", None);
    let listener: TcpListener = in_netns(&lab.ns('b'), || {
        TcpListener::bind("198.51.100.2:9400").unwrap()
    });
    // The owner: a process without CAP_SYS_PTRACE, so a caller without it may read its
    // /proc entries (its capabilities are no superset of the caller's).
    // `cargo test` builds the examples next to the binaries.
    let exe = std::path::Path::new(env!("CARGO_BIN_EXE_kaprobe"));
    let hold = exe.with_file_name("examples").join("hold");
    if !hold.exists() {
        common::skip(format!(
            "{} not built (cargo build --example hold)",
            hold.display()
        ));
    }
    let mut owner = setpriv_in_a(&lab, &["--bounding-set", "-sys_ptrace"])
        .arg(&hold)
        .args(["connect", "198.18.0.2", "198.51.100.2:9400", "1", "41141"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start hold");
    let mut line = [0u8; 8];
    let _ = owner.stdout.as_mut().unwrap().read(&mut line);
    let (_accepted, _) = listener.accept().unwrap();
    let flow = "198.18.0.2:41141-198.51.100.2:9400";
    // Real uid nobody, effective root, no CAP_SYS_PTRACE.
    let out = setpriv_in_a(&lab, &["--ruid", "65534", "--bounding-set", "-sys_ptrace"])
        .arg(env!("CARGO_BIN_EXE_kaprobe"))
        .args(["enable", flow])
        .stdin(Stdio::null())
        .output()
        .expect("run setpriv");
    drop(owner.stdin.take());
    let _ = owner.wait();
    let code = out.status.code().unwrap_or(-1);
    let err = String::from_utf8_lossy(&out.stderr);
    eprintln!("without CAP_SYS_PTRACE: exit {code}: {}", err.trim());
    assert_eq!(code, 6, "{err}");
    assert!(
        err.contains("CAP_SYS_PTRACE") && err.contains("pidfd_getfd"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

crate::tests!(
    enable_makes_the_kernel_probe_and_detect_a_dead_peer,
    enable_off_stops_the_timer_and_the_probes,
    enable_rejects_bad_values_and_missing_connections,
    enable_without_access_to_the_owner_says_so,
    enable_refused_by_ptrace_rules_exits_6,
);
