//! `kaprobe sweep` against real connections in the lab: mixed verdicts in one run, filters,
//! IPv6, an empty match, and 2,000 connections with no false `dead`.

mod common;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::{Lab, assert_still_carries_data, describe, in_netns, run_kaprobe};

/// Closes a socket with an RST that never leaves (the caller drops B's output first):
/// the socket is gone at once, with no FIN_WAIT state left answering probes.
fn vanish(stream: TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    common::set_sockopt(&stream, libc::SOL_SOCKET, libc::SO_LINGER, &linger)
        .unwrap_or_else(|e| panic!("SO_LINGER: {e}"));
    drop(stream);
}

fn sweep_json(
    lab: &Lab,
    args: &[&str],
) -> (i32, Vec<serde_json::Value>, serde_json::Value, String) {
    let mut full = vec!["sweep"];
    full.extend_from_slice(args);
    let (code, out, err, _) = run_kaprobe(lab, &full);
    let mut rows = Vec::new();
    let mut summary = serde_json::Value::Null;
    for line in out.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        match v["event"].as_str() {
            Some("verdict") => rows.push(v),
            Some("summary") => summary = v,
            _ => {}
        }
    }
    (code, rows, summary, describe(code, &out, &err))
}

fn verdict_of(rows: &[serde_json::Value], remote_port: u16) -> Vec<&str> {
    rows.iter()
        .filter(|v| {
            v["remote"]
                .as_str()
                .unwrap()
                .ends_with(&format!(":{remote_port}"))
        })
        .map(|v| v["verdict"].as_str().unwrap())
        .collect()
}

fn mixed_verdicts(v6: bool, base: u16) {
    let lab = Lab::up("routed", None);
    let (alive_port, dead_port, reset_port, unreach_port) = (base, base + 1, base + 2, base + 3);
    let mut keep = Vec::new();
    for (i, port) in [alive_port, alive_port, dead_port, reset_port, unreach_port]
        .into_iter()
        .enumerate()
    {
        keep.push(lab.connect(
            v6,
            if i == 1 { port + 10 } else { port },
            42000 + base % 1000 + i as u16,
        ));
    }
    let b = lab.ns('b');
    let r = lab.ns('r');
    // dead: B stops answering on one port.
    common::nft(
        &b,
        &format!(
            "table inet kpdead {{\n chain input {{ type filter hook input priority 0; tcp dport {dead_port} drop; }}\n}}\n"
        ),
    );
    // reset: B's socket for one connection disappears without a word.
    common::nft(
        &b,
        &format!(
            "table inet kpquiet {{\n chain output {{ type filter hook output priority 0; tcp sport {reset_port} drop; }}\n}}\n"
        ),
    );
    let (reset_client, server) = keep.remove(3);
    vanish(server);
    common::nft(&b, "delete table inet kpquiet\n");
    // unreachable: the router rejects one port.
    let (family, reject) = if v6 {
        ("ip6", "icmpv6 type admin-prohibited")
    } else {
        ("ip", "icmp type admin-prohibited")
    };
    common::nft(
        &r,
        &format!(
            "table inet kpreject {{\n chain forward {{ type filter hook forward priority -10; meta nfproto ipv{} tcp dport {unreach_port} reject with {reject}; }}\n}}\n",
            if family == "ip6" { 6 } else { 4 }
        ),
    );

    let remote = lab.b_addr(v6).to_string();
    let remote = if v6 { format!("[{remote}]") } else { remote };
    let (code, rows, summary, all) = sweep_json(
        &lab,
        &["--remote", &remote, "--probes", "2", "--intvl", "500ms"],
    );
    assert_eq!(code, 1, "worst verdict is dead\n{all}");
    assert_eq!(rows.len(), 5, "{all}");
    assert_eq!(verdict_of(&rows, alive_port), ["alive"], "{all}");
    assert_eq!(verdict_of(&rows, alive_port + 10), ["alive"], "{all}");
    assert_eq!(verdict_of(&rows, dead_port), ["dead"], "{all}");
    assert_eq!(verdict_of(&rows, reset_port), ["reset"], "{all}");
    assert_eq!(verdict_of(&rows, unreach_port), ["unreachable"], "{all}");
    assert_eq!(summary["connections"], 5, "{all}");
    assert_eq!(summary["alive"], 2, "{all}");
    assert_eq!(summary["dead"], 1, "{all}");
    assert_eq!(summary["reset"], 1, "{all}");
    assert_eq!(summary["unreachable"], 1, "{all}");
    // JSON verdicts stream in the order they are decided: dead takes every probe, so last.
    let order: Vec<&str> = rows
        .iter()
        .map(|v| v["verdict"].as_str().unwrap())
        .collect();
    assert_eq!(order.last(), Some(&"dead"), "{all}");
    drop((keep, reset_client));
}

fn sweep_filters_select_connections() {
    let lab = Lab::up_or_skip("direct", None);
    let _c1 = lab.connect(false, 9401, 43401);
    let _c2 = lab.connect(false, 9402, 43402);
    let _c3 = lab.connect(true, 9401, 43403);
    let count = |args: &[&str]| {
        let (code, rows, summary, all) = sweep_json(&lab, args);
        assert_eq!(code, 0, "{all}");
        assert_eq!(
            summary["connections"].as_u64().unwrap() as usize,
            rows.len(),
            "{all}"
        );
        rows.len()
    };
    assert_eq!(
        count(&[]),
        3,
        "no filter: everything, IPv4 and IPv6 in one run"
    );
    assert_eq!(count(&["--port", "9401"]), 2);
    assert_eq!(count(&["--port", "43402"]), 1, "--port matches either side");
    assert_eq!(count(&["--remote", "198.51.100.2:9402"]), 1);
    assert_eq!(count(&["--remote", "[2001:db8:51::2]"]), 1);
    assert_eq!(count(&["--local", "198.18.0.2", "--port", "9401"]), 1);

    let (code, _, _, all) = sweep_json(&lab, &["--port", "1"]);
    assert_eq!(code, 5, "nothing matched\n{all}");
}

fn raise_fd_limit(want: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        if lim.rlim_cur < want {
            lim.rlim_cur = want.min(lim.rlim_max);
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
        }
    }
}

fn sweep_2000_connections_no_false_dead() {
    if !common::require_lab() {
        return;
    }
    const N: usize = 2000;
    raise_fd_limit(3 * N as u64 + 256);
    let lab = Lab::up("routed", None);
    let server: SocketAddr = "198.51.100.2:9500".parse().unwrap();
    let listener: TcpListener = in_netns(&lab.ns('b'), move || {
        TcpListener::bind(server).expect("bind")
    });
    let acceptor = std::thread::spawn(move || {
        let mut held = Vec::with_capacity(N);
        while held.len() < N {
            held.push(listener.accept().expect("accept").0);
        }
        held
    });
    let clients: Vec<TcpStream> = in_netns(&lab.ns('a'), move || {
        (0..N)
            .map(|i| {
                let local: SocketAddr = format!("198.18.0.2:{}", 30000 + i).parse().unwrap();
                common::connect_from(local, server).expect("connect")
            })
            .collect()
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while !acceptor.is_finished() {
        assert!(
            Instant::now() < deadline,
            "accepting {N} connections took too long"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let servers = acceptor.join().unwrap();

    let (code, rows, summary, all) = sweep_json(
        &lab,
        &[
            "--remote",
            "198.51.100.2:9500",
            "--probes",
            "2",
            "--intvl",
            "500ms",
        ],
    );
    let tail: String = all.lines().rev().take(5).collect::<Vec<_>>().join("\n");
    assert_eq!(code, 0, "{tail}");
    assert_eq!(rows.len(), N, "{tail}");
    assert_eq!(summary["alive"], N, "{tail}");
    assert_eq!(summary["dead"], 0, "{tail}");
    assert!(
        rows.iter()
            .all(|v| v["verdict"] == "alive" && v["probes_sent"] == 1),
        "{tail}"
    );
    drop((clients, servers));
}

/// Issue 19: 72 remote addresses x 16 connections outgrew the capture filter ("attaching
/// the capture filter: Invalid argument", exit 7): 72 address pairs, each with 16 scattered
/// local ports listed one by one. The filter widens instead, says so, and every verdict is
/// right.
fn sweep_many_address_pairs_widens_the_filter() {
    if !common::require_lab() {
        return;
    }
    const REMOTES: usize = 72;
    const PER_REMOTE: usize = 16;
    raise_fd_limit(3 * (REMOTES * PER_REMOTE) as u64 + 256);
    let lab = Lab::up("direct", None);
    let remote = |i: usize| format!("198.51.100.{}", 10 + i);
    let local = "198.18.0.10";
    for i in 0..REMOTES {
        lab.exec(
            'b',
            &[
                "ip",
                "addr",
                "add",
                &format!("{}/24", remote(i)),
                "dev",
                "eth0",
            ],
        );
    }
    let local_net = format!("{local}/24");
    lab.exec('a', &["ip", "addr", "add", &local_net, "dev", "eth0"]);
    let any: SocketAddr = "0.0.0.0:9600".parse().unwrap();
    let listener: TcpListener =
        in_netns(&lab.ns('b'), move || TcpListener::bind(any).expect("bind"));
    let n = REMOTES * PER_REMOTE;
    let acceptor = std::thread::spawn(move || {
        (0..n)
            .map(|_| listener.accept().expect("accept").0)
            .collect::<Vec<_>>()
    });
    let clients: Vec<TcpStream> = in_netns(&lab.ns('a'), move || {
        (0..n)
            .map(|i| {
                // Scattered: no port range covers one address pair's local ports.
                let port = 30000 + (i % PER_REMOTE) * REMOTES + i / PER_REMOTE;
                let from: SocketAddr = format!("{local}:{port}").parse().unwrap();
                let to: SocketAddr = format!("{}:9600", remote(i / PER_REMOTE)).parse().unwrap();
                common::connect_from(from, to).expect("connect")
            })
            .collect()
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while !acceptor.is_finished() {
        assert!(
            Instant::now() < deadline,
            "accepting {n} connections took too long"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let servers = acceptor.join().unwrap();
    let (code, rows, summary, all) = sweep_json(&lab, &["--port", "9600", "--probes", "2"]);
    let tail: String = all.lines().rev().take(5).collect::<Vec<_>>().join("\n");
    assert_eq!(code, 0, "{tail}");
    assert_eq!(rows.len(), n, "{tail}");
    assert_eq!(summary["alive"], n, "{tail}");
    assert!(
        all.contains("capture filter keeps TCP of their local addresses"),
        "{tail}"
    );
    assert_still_carries_data(&clients[0], &servers[0]);
    drop((clients, servers));
}

crate::tests!(
    [crate::cases!(common::require_lab;
        sweep_mixed_verdicts_v4 => mixed_verdicts(false, 9300),
        sweep_mixed_verdicts_v6 => mixed_verdicts(true, 9320),
    )],
    sweep_filters_select_connections,
    sweep_2000_connections_no_false_dead,
    sweep_many_address_pairs_widens_the_filter,
);
