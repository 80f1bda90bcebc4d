//! The eBPF socket iterator (`sys::kernel_seq`) against real sockets: in a private network
//! namespace, both ends of a loopback connection must show each other's numbers, advance by
//! exactly what was sent, carry the cookie sock_diag shows, and stay out of other namespaces.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use kaprobe::sys::kernel_seq::{KernelSeq, SockNumbers, monotonic_ns};

/// A network namespace of this test's own with `lo` up, deleted on drop (also on panic).
struct Netns(String);

impl Netns {
    fn new() -> Netns {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "kpseq{}x{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        let ip = |args: &[&str]| {
            let ok = Command::new("ip")
                .args(args)
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "ip {}", args.join(" "));
        };
        ip(&["netns", "add", &name]);
        let ns = Netns(name);
        ip(&["-n", &ns.0, "link", "set", "lo", "up"]);
        ns
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// The record of the socket with this local and remote address.
fn find(all: &[SockNumbers], local: SocketAddr, remote: SocketAddr) -> SockNumbers {
    all.iter()
        .find(|n| n.local == local && n.remote == remote)
        .cloned()
        .unwrap_or_else(|| panic!("no socket {local} -> {remote} among {all:#?}"))
}

/// Reads until neither socket has unacknowledged data (loopback ACKs at once, or within a
/// delayed-ACK timeout), so that the numbers of the two ends can be compared.
fn read_idle(
    k: &mut KernelSeq,
    a: (SocketAddr, SocketAddr),
    b: (SocketAddr, SocketAddr),
) -> (SockNumbers, SockNumbers) {
    let start = Instant::now();
    loop {
        let all = k.read().expect("read the iterator");
        let (x, y) = (find(&all, a.0, a.1), find(&all, b.0, b.1));
        if x.snd_una == x.snd_nxt && y.snd_una == y.snd_nxt {
            return (x, y);
        }
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "still unacknowledged data after 3 s: {x:#?} {y:#?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The cookies `ss -e` (sock_diag) shows in namespace `ns` (None: this process's), by local
/// and remote address.
fn diag_cookies(ns: Option<&str>) -> Vec<(String, String, u64)> {
    let ss = ["ss", "-tnHe", "state", "established"];
    let out = match ns {
        Some(ns) => Command::new("ip")
            .args(["netns", "exec", ns])
            .args(ss)
            .output(),
        None => Command::new(ss[0]).args(&ss[1..]).output(),
    }
    .expect("run ss");
    assert!(out.status.success(), "ss: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let cookie = f.iter().find_map(|w| w.strip_prefix("sk:"))?;
            // Recv-Q Send-Q Local Peer ...
            Some((
                without_device(f.get(2)?),
                without_device(f.get(3)?),
                u64::from_str_radix(cookie, 16).ok()?,
            ))
        })
        .collect()
}

/// `ss` writes a socket bound to a device as ADDR%DEV:PORT; this is ADDR:PORT.
fn without_device(addr: &str) -> String {
    match (addr.find('%'), addr.rfind(':')) {
        (Some(pct), Some(colon)) if pct < colon => format!("{}{}", &addr[..pct], &addr[colon..]),
        _ => addr.to_string(),
    }
}

/// Whether `later` is at or after `earlier` in 32-bit timestamp space, and by how much.
fn ts_ahead(later: u32, earlier: u32) -> i64 {
    i64::from(later.wrapping_sub(earlier) as i32)
}

fn loopback_connection_numbers_agree_and_advance() {
    common::require_lab();
    let ns = Netns::new();

    let t = Instant::now();
    let (k, times) = KernelSeq::open_timed().unwrap_or_else(|e| panic!("{} ({})", e, e.kind()));
    eprintln!(
        "KernelSeq::open: {:?} (BTF parse {:?}, object load {:?}, program load + link {:?}); \
         object {}",
        t.elapsed(),
        times.btf,
        times.object,
        times.program,
        kaprobe::sys::kernel_seq::OBJECT_ORIGIN
    );

    let ns_name = ns.0.clone();
    let (mut k, cookies) = common::in_netns(&ns.0, move || {
        let mut k = k;
        let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
        // Bound to lo, so that the client's record names a device.
        let client = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        client.bind_device(Some(b"lo")).expect("SO_BINDTODEVICE lo");
        client
            .connect(&listener.local_addr().unwrap().into())
            .expect("connect");
        let mut client = TcpStream::from(client);
        let (mut server, _) = listener.accept().expect("accept");
        for s in [&client, &server] {
            s.set_read_timeout(Some(common::NET_TIMEOUT)).unwrap();
        }
        // Every segment either end sent so far left after this.
        let exchanged = Instant::now();
        client.write_all(&[7; 1000]).unwrap();
        server.read_exact(&mut [0; 1000]).unwrap();
        server.write_all(&[8; 10]).unwrap();
        client.read_exact(&mut [0; 10]).unwrap();

        let ca = (client.local_addr().unwrap(), client.peer_addr().unwrap());
        let sa = (server.local_addr().unwrap(), server.peer_addr().unwrap());

        // sock_diag first: it gives each socket its cookie, which the iterator must show.
        let diag = diag_cookies(Some(&ns_name));
        let t = Instant::now();
        let all = k.read().expect("read");
        eprintln!(
            "KernelSeq::read: {:?} for {} sockets",
            t.elapsed(),
            all.len()
        );
        assert_eq!(all.len(), 2, "only our two sockets live here: {all:#?}");
        let (a, b) = read_idle(&mut k, ca, sa);

        for (n, (l, r)) in [(&a, ca), (&b, sa)] {
            let listed = diag
                .iter()
                .find(|(dl, dr, _)| *dl == l.to_string() && *dr == r.to_string())
                .unwrap_or_else(|| panic!("ss did not list {l} -> {r}: {diag:?}"));
            assert_ne!(n.cookie, 0);
            assert_eq!(n.cookie, listed.2, "the cookie of {l} -> {r}");
        }
        assert_ne!(a.cookie, b.cookie);

        assert_eq!(a.snd_nxt, b.rcv_nxt, "{a:#?} {b:#?}");
        assert_eq!(a.rcv_nxt, b.snd_nxt, "{a:#?} {b:#?}");
        assert_eq!(a.snd_una, a.snd_nxt);
        assert_eq!(b.snd_una, b.snd_nxt);
        assert!(
            a.tstamp_ok && b.tstamp_ok,
            "Linux uses timestamps on loopback"
        );
        // Each end scales the other's window by what that end announced.
        assert_eq!(a.rcv_wscale, b.snd_wscale, "{a:#?} {b:#?}");
        assert_eq!(b.rcv_wscale, a.snd_wscale, "{a:#?} {b:#?}");
        assert!(
            a.rcv_wscale > 0,
            "loopback's large buffers call for window scaling"
        );
        // Microsecond timestamps take a route feature that nothing set here.
        assert!(!a.usec_ts && !b.usec_ts);
        assert_eq!(a.ifindex, 1, "the first device of a new namespace, lo");
        assert_eq!(b.ifindex, 0, "accepted from a listener bound to no device");
        assert!(a.window() > 0 && b.window() > 0);
        let now = monotonic_ns();
        assert!(a.read_ns <= now && now - a.read_ns < 5_000_000_000);

        // What a sends now is at or after the last TSval of a's that b accepted, by no more
        // than the time since the exchange began (plus a tick or two of rounding): measured,
        // not assumed, as a loaded machine takes its time between the two.
        for (x, y) in [(&a, &b), (&b, &a)] {
            let tsval = x.tsval_at(monotonic_ns()).expect("timestamps are on");
            let ahead = ts_ahead(tsval, y.ts_recent);
            let since_ms = exchanged.elapsed().as_millis() as i64 + 20;
            let limit = if x.usec_ts { since_ms * 1000 } else { since_ms };
            assert!(
                (0..limit).contains(&ahead),
                "TSval now {tsval} vs the peer's ts_recent {}: {ahead} ticks",
                y.ts_recent
            );
        }

        client.write_all(&[9; 500]).unwrap();
        server.read_exact(&mut [0; 500]).unwrap();
        let (a2, b2) = read_idle(&mut k, ca, sa);
        assert_eq!(a2.snd_nxt, a.snd_nxt.wrapping_add(500));
        assert_eq!(b2.rcv_nxt, a2.snd_nxt);
        assert_eq!(a2.rcv_nxt, a.rcv_nxt);
        assert_eq!(a2.cookie, a.cookie);
        (k, [a.cookie, b.cookie])
    });

    // This thread is still in the test's own namespace: the iterator lists its sockets, and
    // only those.
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
    let client = TcpStream::connect(listener.local_addr().unwrap()).expect("connect");
    let (_server, _) = listener.accept().expect("accept");
    let t = Instant::now();
    let here = k.read().expect("read in the original namespace");
    let mine = find(
        &here,
        client.local_addr().unwrap(),
        client.peer_addr().unwrap(),
    );
    // Read before sock_diag this time: the iterator gave the socket its cookie, and sock_diag
    // shows that one.
    let (l, r) = (mine.local.to_string(), mine.remote.to_string());
    let diag = diag_cookies(None);
    let listed = diag
        .iter()
        .find(|(dl, dr, _)| *dl == l && *dr == r)
        .unwrap_or_else(|| panic!("ss did not list {l} -> {r}: {diag:?}"));
    assert_eq!(mine.cookie, listed.2);
    eprintln!(
        "KernelSeq::read in the original namespace: {:?} for {} sockets",
        t.elapsed(),
        here.len()
    );
    assert!(
        here.iter().all(|n| !cookies.contains(&n.cookie)),
        "the private namespace's sockets leaked into {here:#?}"
    );
}

/// Runs as any user: without root it is what every user meets.
fn open_without_capabilities_names_them() {
    // Capabilities belong to threads: this one drops its effective set, the process keeps
    // its own.
    let err = std::thread::spawn(|| {
        caps::clear(None, caps::CapSet::Effective).expect("drop the effective set");
        KernelSeq::open().err()
    })
    .join()
    .expect("the thread");
    let err = err.expect("open() without capabilities must fail");
    assert_eq!(err.kind(), "no-privilege", "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("CAP_BPF") && msg.contains("CAP_PERFMON"),
        "{msg}"
    );
}

crate::tests!(
    loopback_connection_numbers_agree_and_advance,
    open_without_capabilities_names_them,
);
