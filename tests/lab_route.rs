//! Routing like the socket (README "Policy routing, VRFs, bound sockets"): connections set
//! up the way applications do it — `SO_MARK` plus `ip rule` with the main table sending the
//! peer elsewhere, `SO_BINDTODEVICE`, a link-local connection with its zone, a dual-stack
//! `[::]` server written as `ss` prints it, and TCP-MD5 keys on both ends. Direct lab.

mod common;

use std::net::{IpAddr, SocketAddr, SocketAddrV6, TcpListener, TcpStream};
use std::time::Duration;

use common::*;

const MD5_KEY: &[u8] = b"kaprobe-lab-key";

/// A TCP-MD5 key (RFC 2385) for segments with `peer`.
fn md5_with(peer: IpAddr) -> SockOpts {
    SockOpts {
        md5: Some((peer, MD5_KEY.to_vec())),
        ..Default::default()
    }
}

/// A connection from `client` (in A) to `server` (in B), both made with their options.
fn connect(lab: &Lab, client: SocketAddr, c: SockOpts, server: SocketAddr, s: SockOpts) -> Conn {
    let listener = listen_in(&lab.ns('b'), server, s);
    let target = match (server.ip(), client.ip()) {
        // A dual-stack [::] server is reached at its IPv4 address.
        (IpAddr::V6(v6), IpAddr::V4(_)) if v6.is_unspecified() => {
            SocketAddr::new(lab.b_addr(false), server.port())
        }
        _ => server,
    };
    let stream = connect_in(&lab.ns('a'), client, target, c);
    let accepted = accept_bounded(listener.try_clone().expect("listener"));
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

fn probe(lab: &Lab, f: &str, extra: &[&str]) -> (i32, serde_json::Value, String) {
    let mut args = vec!["probe", f];
    args.extend_from_slice(extra);
    let (code, out, err, _) = run_kaprobe(lab, &args);
    // An error is one "error" object (checked against the schema like every line).
    let v = if out.contains(r#""event":"verdict""#) {
        verdict_json(&out)
    } else {
        common::json_lines(&out);
        serde_json::Value::Null
    };
    (code, v, err)
}

/// `probe FLOW` and `sweep --port P` (the server's port) both find the connection alive.
fn alive_by_probe_and_sweep(lab: &Lab, client: SocketAddr, server: SocketAddr) {
    let (code, v, err) = probe(lab, &flow(client, server), &[]);
    assert_eq!(code, 0, "{}", describe(code, &v.to_string(), &err));
    assert_verdict_fields(&v, client, server, "alive");

    let port = server.port().to_string();
    let (code, out, err, _) = run_kaprobe(lab, &["sweep", "--port", &port]);
    assert_eq!(code, 0, "{}", describe(code, &out, &err));
    assert!(out.contains(r#""verdict":"alive""#), "{out}");
}

/// A's main table sends B's address into a blackhole; only packets marked 0x42 reach B,
/// through table 100. The connection's socket has the mark: its probes must too.
fn policy_routing(v6: bool) {
    let lab = Lab::up("direct", None);
    let b_ip = lab.b_addr(v6).to_string();
    let (fam, host) = if v6 { ("-6", "/128") } else { ("-4", "/32") };
    let peer = format!("{b_ip}{host}");
    lab.exec('a', &["sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0"]);
    lab.exec('a', &["sysctl", "-qw", "net.ipv4.conf.eth0.rp_filter=0"]);
    lab.exec(
        'a',
        &[
            "ip", fam, "route", "add", &peer, "dev", "eth0", "table", "100",
        ],
    );
    lab.exec(
        'a',
        &["ip", fam, "rule", "add", "fwmark", "0x42", "table", "100"],
    );
    lab.exec('a', &["ip", fam, "route", "add", "blackhole", &peer]);
    let client = SocketAddr::new(lab.a_addr(v6), 41001);
    let server = SocketAddr::new(lab.b_addr(v6), 9101);
    let marked = SockOpts {
        mark: Some(0x42),
        ..Default::default()
    };
    let _c = connect(&lab, client, marked, server, SockOpts::default());
    alive_by_probe_and_sweep(&lab, client, server);

    lab.fault(&["blackhole"]);
    let f = flow(client, server);
    let (code, v, err) = probe(&lab, &f, &["--intvl", "500ms", "--probes", "2"]);
    assert_eq!(code, 1, "{}", describe(code, &v.to_string(), &err));
    assert_verdict_fields(&v, client, server, "dead");
    assert_eq!(v["probes_sent"], 2, "{v}");
}

/// SO_BINDTODEVICE: the exact lookup without the device finds nothing; kaprobe still
/// finds the socket, and its SYN and probes leave bound to the same device.
fn bound_socket(v6: bool) {
    let lab = Lab::up("direct", None);
    let client = SocketAddr::new(lab.a_addr(v6), 41002);
    let server = SocketAddr::new(lab.b_addr(v6), 9102);
    let bound = SockOpts {
        device: Some("eth0".into()),
        ..Default::default()
    };
    let _c = connect(&lab, client, bound, server, SockOpts::default());
    // The sweep's later lookups name the device, so it does not see the socket as closed.
    alive_by_probe_and_sweep(&lab, client, server);
}

/// The link-local address of eth0 in namespace `which` of the lab.
fn link_local(lab: &Lab, which: char) -> std::net::Ipv6Addr {
    let text = lab.exec(
        which,
        &[
            "ip", "-6", "-o", "addr", "show", "dev", "eth0", "scope", "link",
        ],
    );
    let word = text
        .split_whitespace()
        .skip_while(|w| *w != "inet6")
        .nth(1)
        .unwrap_or_else(|| panic!("no link-local address on eth0 in {}: {text}", lab.ns(which)));
    word.split('/').next().unwrap().parse().unwrap()
}

/// A link-local connection, written with its zone by name and by index, and without.
fn link_local_flow_with_a_zone_is_alive() {
    let lab = Lab::up_or_skip("direct", None);
    let (la, lb) = (link_local(&lab, 'a'), link_local(&lab, 'b'));
    // lab.sh gives A's eth0 index 10 and B's 13.
    let client = SocketAddr::V6(SocketAddrV6::new(la, 41003, 0, 10));
    let server_bind = SocketAddr::V6(SocketAddrV6::new(lb, 9103, 0, 13));
    let listener: TcpListener = in_netns(&lab.ns('b'), move || {
        TcpListener::bind(server_bind).expect("bind link-local in B")
    });
    let target = SocketAddr::V6(SocketAddrV6::new(lb, 9103, 0, 10));
    let _client: TcpStream = in_netns(&lab.ns('a'), move || {
        let s = app_socket(client, &SockOpts::default()).expect("socket");
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
    let lab = Lab::up_or_skip("direct", None);
    let client = SocketAddr::new(lab.a_addr(false), 41004);
    let any6 = SocketAddr::new(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), 9104);
    let dual = SockOpts {
        v6only: Some(false),
        ..Default::default()
    };
    let _c = connect(&lab, client, SockOpts::default(), any6, dual);
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
    let lab = Lab::up("direct", None);
    let client = SocketAddr::new(lab.a_addr(v6), 41005);
    let server = SocketAddr::new(lab.b_addr(v6), 9105);
    let _c = connect(
        &lab,
        client,
        md5_with(server.ip()),
        server,
        md5_with(client.ip()),
    );
    let f = flow(client, server);
    for extra in [&[][..], &["--seq-source", "peer"][..]] {
        let (code, out, err, wall) = {
            let mut args = vec!["probe", f.as_str()];
            args.extend_from_slice(extra);
            run_kaprobe(&lab, &args)
        };
        assert_eq!(code, 7, "{extra:?}: {}", describe(code, &out, &err));
        let e = common::error_json(code, &out, &err, "failure");
        assert_eq!(out.lines().count(), 1, "only the error object: {out}");
        assert!(e["message"].as_str().unwrap().contains("TCP-MD5"), "{e}");
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

crate::tests!(
    [crate::cases!(require_lab;
        marked_connection_under_policy_routing_v4 => policy_routing(false),
        marked_connection_under_policy_routing_v6 => policy_routing(true),
        device_bound_socket_is_found_and_alive_v4 => bound_socket(false),
        device_bound_socket_is_found_and_alive_v6 => bound_socket(true),
    )],
    link_local_flow_with_a_zone_is_alive,
    mapped_flow_of_a_dual_stack_server_is_alive,
    [crate::cases!(require_lab;
        md5_connection_is_refused_v4 => md5(false),
        md5_connection_is_refused_v6 => md5(true),
    )],
);
