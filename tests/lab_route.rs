//! Routing like the socket (README "Policy routing, VRFs, bound sockets"): connections set
//! up the way applications do it — `SO_MARK` plus `ip rule` with the main table sending the
//! peer elsewhere, `SO_BINDTODEVICE`, a link-local connection with its zone, a dual-stack
//! `[::]` server written as `ss` prints it, and TCP-MD5 keys on both ends. Direct lab.

mod common;

use std::net::{IpAddr, SocketAddr, SocketAddrV6, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use socket2::{Domain, Socket, Type};

/// What a test socket is made with, as an application would.
#[derive(Clone, Default)]
struct Opts {
    mark: Option<u32>,
    device: Option<&'static str>,
    /// A TCP-MD5 key for this peer address.
    md5: Option<IpAddr>,
    /// A listener that takes IPv4 too (IPV6_V6ONLY off).
    dual_stack: bool,
}

const MD5_KEY: &[u8] = b"kaprobe-lab-key";

/// `setsockopt(TCP_MD5SIG)` with `struct tcp_md5sig` (RFC 2385 keys, one peer address).
fn set_md5(fd: i32, peer: IpAddr) {
    // struct tcp_md5sig: sockaddr_storage (128), flags (u8), prefixlen (u8), keylen (u16),
    // ifindex (i32), key (80).
    let mut opt = [0u8; 216];
    match peer {
        IpAddr::V4(a) => {
            opt[0..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
            opt[4..8].copy_from_slice(&a.octets());
        }
        IpAddr::V6(a) => {
            opt[0..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
            opt[8..24].copy_from_slice(&a.octets());
        }
    }
    opt[130..132].copy_from_slice(&(MD5_KEY.len() as u16).to_ne_bytes());
    opt[136..136 + MD5_KEY.len()].copy_from_slice(MD5_KEY);
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_MD5SIG,
            opt.as_ptr().cast(),
            opt.len() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "TCP_MD5SIG: {}", std::io::Error::last_os_error());
}

fn socket_for(addr: &SocketAddr, o: &Opts) -> Socket {
    let domain = if addr.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let s = Socket::new(domain, Type::STREAM, None).expect("socket");
    s.set_reuse_address(true).unwrap();
    if let Some(m) = o.mark {
        s.set_mark(m).expect("SO_MARK");
    }
    if let Some(d) = o.device {
        s.bind_device(Some(d.as_bytes())).expect("SO_BINDTODEVICE");
    }
    if let Some(peer) = o.md5 {
        set_md5(s.as_raw_fd(), peer);
    }
    if o.dual_stack {
        s.set_only_v6(false).unwrap();
    }
    s
}

/// A connection from `client` (in A) to `server` (in B), both made with their options.
fn connect(lab: &Lab, client: SocketAddr, c: Opts, server: SocketAddr, s: Opts) -> Conn {
    let listener: TcpListener = in_netns(&lab.ns('b'), move || {
        let sock = socket_for(&server, &s);
        sock.bind(&server.into())
            .unwrap_or_else(|e| panic!("bind {server} in B: {e}"));
        sock.listen(8).unwrap();
        sock.into()
    });
    let target = match (server.ip(), client.ip()) {
        // A dual-stack [::] server is reached at its IPv4 address.
        (IpAddr::V6(v6), IpAddr::V4(_)) if v6.is_unspecified() => {
            SocketAddr::new(lab.b_addr(false), server.port())
        }
        _ => server,
    };
    let stream: TcpStream = in_netns(&lab.ns('a'), move || {
        let sock = socket_for(&client, &c);
        sock.bind(&client.into())
            .unwrap_or_else(|e| panic!("bind {client} in A: {e}"));
        sock.set_write_timeout(Some(NET_TIMEOUT)).unwrap();
        sock.connect(&target.into())
            .unwrap_or_else(|e| panic!("connect {client} -> {target} in A: {e}"));
        sock.into()
    });
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + NET_TIMEOUT;
    let accepted = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(Instant::now() < deadline, "accept in B timed out");
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("accept in B: {e}"),
        }
    };
    Conn {
        _client: stream,
        _server: accepted,
        _listener: listener,
    }
}

/// Both ends and the listener, held open for the test's duration.
struct Conn {
    _client: TcpStream,
    _server: TcpStream,
    _listener: TcpListener,
}

fn ip_cmd(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn sysctl(ns: &str, kv: &str) {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "sysctl", "-qw", kv])
        .output()
        .expect("run sysctl");
    assert!(out.status.success(), "sysctl {kv} in {ns}");
}

fn probe(lab: &Lab, f: &str, extra: &[&str]) -> (i32, serde_json::Value, String) {
    let mut args = vec!["probe", f];
    args.extend_from_slice(extra);
    let (code, out, err, _) = run_kaprobe(lab, &args);
    let v = if out.trim().is_empty() {
        serde_json::Value::Null
    } else {
        verdict_json(&out)
    };
    (code, v, err)
}

/// A's main table sends B's address into a blackhole; only packets marked 0x42 reach B,
/// through table 100. The connection's socket has the mark: its probes must too.
fn policy_routing(v6: bool) {
    if !require_lab() {
        return;
    }
    let lab = Lab::up("direct", None);
    let a = lab.ns('a');
    let b_ip = lab.b_addr(v6).to_string();
    let (fam, host) = if v6 { ("-6", "/128") } else { ("-4", "/32") };
    let peer = format!("{b_ip}{host}");
    sysctl(&a, "net.ipv4.conf.all.rp_filter=0");
    sysctl(&a, "net.ipv4.conf.eth0.rp_filter=0");
    ip_cmd(&[
        "-n", &a, fam, "route", "add", &peer, "dev", "eth0", "table", "100",
    ]);
    ip_cmd(&[
        "-n", &a, fam, "rule", "add", "fwmark", "0x42", "table", "100",
    ]);
    ip_cmd(&["-n", &a, fam, "route", "add", "blackhole", &peer]);
    let client = SocketAddr::new(lab.a_addr(v6), 41001);
    let server = SocketAddr::new(lab.b_addr(v6), 9101);
    let marked = Opts {
        mark: Some(0x42),
        ..Default::default()
    };
    let _c = connect(&lab, client, marked, server, Opts::default());
    let f = flow(client, server);

    let (code, v, err) = probe(&lab, &f, &[]);
    assert_eq!(code, 0, "{}", describe(code, &v.to_string(), &err));
    assert_verdict_fields(&v, client, server, "alive");

    let (code, out, err, _) = run_kaprobe(&lab, &["sweep", "--port", "9101"]);
    assert_eq!(code, 0, "{}", describe(code, &out, &err));
    assert!(out.contains(r#""verdict":"alive""#), "{out}");

    lab.fault(&["blackhole"]);
    let (code, v, err) = probe(&lab, &f, &["--intvl", "500ms", "--probes", "2"]);
    assert_eq!(code, 1, "{}", describe(code, &v.to_string(), &err));
    assert_verdict_fields(&v, client, server, "dead");
    assert_eq!(v["probes_sent"], 2, "{v}");
}

fn marked_connection_under_policy_routing_v4() {
    policy_routing(false);
}

fn marked_connection_under_policy_routing_v6() {
    policy_routing(true);
}

/// SO_BINDTODEVICE: the exact lookup without the device finds nothing; kaprobe still
/// finds the socket, and its SYN and probes leave bound to the same device.
fn bound_socket(v6: bool) {
    if !require_lab() {
        return;
    }
    let lab = Lab::up("direct", None);
    let client = SocketAddr::new(lab.a_addr(v6), 41002);
    let server = SocketAddr::new(lab.b_addr(v6), 9102);
    let bound = Opts {
        device: Some("eth0"),
        ..Default::default()
    };
    let _c = connect(&lab, client, bound, server, Opts::default());
    let f = flow(client, server);
    let (code, v, err) = probe(&lab, &f, &[]);
    assert_eq!(code, 0, "{}", describe(code, &v.to_string(), &err));
    assert_verdict_fields(&v, client, server, "alive");

    // The sweep's later lookups name the device, so it does not see the socket as closed.
    let (code, out, err, _) = run_kaprobe(&lab, &["sweep", "--port", "9102"]);
    assert_eq!(code, 0, "{}", describe(code, &out, &err));
    assert!(out.contains(r#""verdict":"alive""#), "{out}");
}

fn device_bound_socket_is_found_and_alive_v4() {
    bound_socket(false);
}

fn device_bound_socket_is_found_and_alive_v6() {
    bound_socket(true);
}

fn link_local(ns: &str) -> std::net::Ipv6Addr {
    let out = Command::new("ip")
        .args([
            "-n", ns, "-6", "-o", "addr", "show", "dev", "eth0", "scope", "link",
        ])
        .output()
        .expect("ip addr");
    let text = String::from_utf8_lossy(&out.stdout);
    let word = text
        .split_whitespace()
        .skip_while(|w| *w != "inet6")
        .nth(1)
        .unwrap_or_else(|| panic!("no link-local address on eth0 in {ns}: {text}"));
    word.split('/').next().unwrap().parse().unwrap()
}

/// A link-local connection, written with its zone by name and by index, and without.
fn link_local_flow_with_a_zone_is_alive() {
    if !require_lab() {
        return;
    }
    let lab = Lab::up("direct", None);
    let (la, lb) = (link_local(&lab.ns('a')), link_local(&lab.ns('b')));
    // lab.sh gives A's eth0 index 10 and B's 13.
    let client = SocketAddr::V6(SocketAddrV6::new(la, 41003, 0, 10));
    let server_bind = SocketAddr::V6(SocketAddrV6::new(lb, 9103, 0, 13));
    let listener: TcpListener = in_netns(&lab.ns('b'), move || {
        TcpListener::bind(server_bind).expect("bind link-local in B")
    });
    let target = SocketAddr::V6(SocketAddrV6::new(lb, 9103, 0, 10));
    let _client: TcpStream = in_netns(&lab.ns('a'), move || {
        let s = socket_for(&client, &Opts::default());
        s.bind(&client.into()).expect("bind link-local in A");
        s.connect(&target.into()).expect("connect link-local");
        s.into()
    });
    let _server = listener.accept().expect("accept");
    for f in [
        format!("[{la}%eth0]:41003-[{lb}%eth0]:9103"),
        format!("[{la}]%eth0:41003-[{lb}]%eth0:9103"),
        format!("[{la}%10]:41003-[{lb}]:9103"),
        format!("[{la}]:41003-[{lb}]:9103"),
    ] {
        let (code, v, err) = probe(&lab, &f, &[]);
        assert_eq!(code, 0, "{f}: {}", describe(code, &v.to_string(), &err));
        assert_eq!(v["verdict"], "alive", "{f}: {v}");
        assert_eq!(v["flow"], format!("[{la}]:41003-[{lb}]:9103"), "{v}");
        // The local socket's challenge ACK is rate-limited per socket (500 ms).
        std::thread::sleep(Duration::from_millis(550));
    }
    let (code, _, err) = probe(&lab, &format!("[{la}%nosuch0]:41003-[{lb}]:9103"), &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no such interface"), "{err}");
}

/// A dual-stack `[::]` server: ss prints its IPv4 connection with mapped addresses.
fn mapped_flow_of_a_dual_stack_server_is_alive() {
    if !require_lab() {
        return;
    }
    let lab = Lab::up("direct", None);
    let client = SocketAddr::new(lab.a_addr(false), 41004);
    let any6 = SocketAddr::new(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), 9104);
    let dual = Opts {
        dual_stack: true,
        ..Default::default()
    };
    let _c = connect(&lab, client, Opts::default(), any6, dual);
    let (b4, a4) = (lab.b_addr(false), lab.a_addr(false));
    let mapped = format!("[::ffff:{b4}]:9104-[::ffff:{a4}]:41004");
    let ns = lab.ns('b');
    let (code, out, err, _) = run_kaprobe_bare(&["--netns", &ns, "--json", "probe", &mapped]);
    assert_eq!(code, 0, "{}", describe(code, &out, &err));
    let v = verdict_json(&out);
    let (local, remote) = (SocketAddr::new(b4, 9104), SocketAddr::new(a4, 41004));
    assert_verdict_fields(&v, local, remote, "alive");
    // A bare mapped REMOTE and a mapped filter name the same connection.
    std::thread::sleep(Duration::from_millis(550));
    let bare = format!("[::ffff:{a4}]:41004");
    let (code, out, err, _) = run_kaprobe_bare(&["--netns", &ns, "--json", "probe", &bare]);
    assert_eq!(code, 0, "{}", describe(code, &out, &err));
    let filter = format!("[::ffff:{a4}]/128");
    let (code, out, err, _) =
        run_kaprobe_bare(&["--netns", &ns, "--json", "list", "--remote", &filter]);
    assert_eq!(code, 0, "{}", describe(code, &out, &err));
    assert_eq!(out.lines().count(), 1, "{out}");
}

/// TCP-MD5 on both ends: refused before anything is sent, exit 7 naming the option.
fn md5(v6: bool) {
    if !require_lab() {
        return;
    }
    let lab = Lab::up("direct", None);
    let client = SocketAddr::new(lab.a_addr(v6), 41005);
    let server = SocketAddr::new(lab.b_addr(v6), 9105);
    let c = Opts {
        md5: Some(server.ip()),
        ..Default::default()
    };
    let s = Opts {
        md5: Some(client.ip()),
        ..Default::default()
    };
    let _c = connect(&lab, client, c, server, s);
    let f = flow(client, server);
    for extra in [&[][..], &["--seq-source", "peer"][..]] {
        let (code, out, err, wall) = {
            let mut args = vec!["probe", f.as_str()];
            args.extend_from_slice(extra);
            run_kaprobe(&lab, &args)
        };
        assert_eq!(code, 7, "{extra:?}: {}", describe(code, &out, &err));
        assert!(out.is_empty(), "{out}");
        assert!(
            err.contains("uses TCP-MD5 (RFC 2385): both ends drop unsigned segments"),
            "{err}"
        );
        // Refused at once, not after learning or probing failed.
        assert!(wall < Duration::from_secs(1), "{wall:?}");
    }
    let (code, out, err, _) = run_kaprobe(&lab, &["sweep", "--port", "9105"]);
    assert_eq!(code, 7, "{}", describe(code, &out, &err));
    let row: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(row["verdict"], "signed", "{row}");
    assert_eq!(row["signature"], "tcp-md5", "{row}");
    assert_eq!(row["probes_sent"], 0, "{row}");
    assert!(out.contains(r#""signed":1"#), "{out}");
    let (code, out, err, _) = run_kaprobe(&lab, &["list", "--port", "9105"]);
    assert_eq!(code, 0, "{}", describe(code, &out, &err));
    assert!(out.contains(r#""signature":"tcp-md5""#), "{out}");
}

fn md5_connection_is_refused_v4() {
    md5(false);
}

fn md5_connection_is_refused_v6() {
    md5(true);
}

crate::tests!(
    marked_connection_under_policy_routing_v4,
    marked_connection_under_policy_routing_v6,
    device_bound_socket_is_found_and_alive_v4,
    device_bound_socket_is_found_and_alive_v6,
    link_local_flow_with_a_zone_is_alive,
    mapped_flow_of_a_dual_stack_server_is_alive,
    md5_connection_is_refused_v4,
    md5_connection_is_refused_v6,
);
