//! `kaprobe list` against real connections in the lab: filters, the owning process (this
//! test process), the kernel keepalive timer off and on, idle time, the human table, and an
//! empty match.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;

use common::{Lab, describe, flow_of, run_kaprobe, run_kaprobe_bare};
use serde_json::Value;

/// SO_KEEPALIVE on with TCP_KEEPIDLE `idle_s`, through plain setsockopt.
fn keepalive_on(s: &TcpStream, idle_s: libc::c_int) {
    let set = |level, name, value: libc::c_int| {
        common::set_sockopt(s, level, name, &value).unwrap_or_else(|e| panic!("setsockopt: {e}"));
    };
    set(libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1);
    set(libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, idle_s);
}

/// Runs `list ARGS` with --json: (exit code, one object per line, the whole run for messages).
fn list(lab: &Lab, args: &[&str]) -> (i32, Vec<Value>, String) {
    let mut full = vec!["list"];
    full.extend_from_slice(args);
    let (code, out, err, _) = run_kaprobe(lab, &full);
    let rows = out
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    (code, rows, describe(code, &out, &err))
}

fn row<'a>(rows: &'a [Value], s: &TcpStream) -> &'a Value {
    let f = flow_of(s);
    rows.iter()
        .find(|r| r["flow"] == f.as_str())
        .unwrap_or_else(|| panic!("{f} not listed: {rows:?}"))
}

fn flows(rows: &[Value]) -> Vec<String> {
    rows.iter()
        .map(|r| r["flow"].as_str().unwrap().to_string())
        .collect()
}

fn list_shows_owner_idle_and_keepalive_timer() {
    let lab = Lab::up_or_skip("direct", None);
    let (plain, _s1) = lab.connect(false, 9100, 41001);
    let (kept, _s2) = lab.connect(false, 9200, 41002);
    keepalive_on(&kept, 600);

    let (code, rows, d) = list(&lab, &[]);
    assert_eq!(code, 0, "{d}");
    // A sees only its own ends: the two client sockets.
    assert_eq!(rows.len(), 2, "{d}");

    let r = row(&rows, &plain);
    assert_eq!(r["local"], plain.local_addr().unwrap().to_string());
    assert_eq!(r["remote"], plain.peer_addr().unwrap().to_string());
    assert_eq!(r["keepalive"], "off", "{r}");
    assert!(
        r["keepalive_next_ms"].is_null() && r["timer"].is_null(),
        "{r}"
    );
    assert_eq!(r["unacked"], 0, "{r}");
    assert_eq!(r["send_queue"], 0, "{r}");
    assert_eq!(r["recv_queue"], 0, "{r}");
    let idle = r["idle_ms"].as_u64().expect("idle_ms");
    assert!(idle < 10_000, "idle {idle} ms for a fresh connection: {r}");
    let owners = r["owners"].as_array().expect("owners");
    let me = owners
        .iter()
        .find(|o| o["pid"] == std::process::id())
        .unwrap_or_else(|| panic!("this test process is not an owner: {r}"));
    assert_eq!(me["fd"], plain.as_raw_fd(), "{r}");
    assert!(!me["command"].as_str().unwrap_or("").is_empty(), "{r}");

    let r = row(&rows, &kept);
    assert_eq!(r["keepalive"], "on", "{r}");
    assert_eq!(r["timer"], "keepalive", "{r}");
    assert_eq!(r["keepalive_probes"], 0, "{r}");
    let next = r["keepalive_next_ms"].as_u64().expect("keepalive_next_ms");
    assert!(
        (580_000..=600_000).contains(&next),
        "next probe in {next} ms after TCP_KEEPIDLE=600: {r}"
    );
}

fn list_filters_and_empty_match() {
    let lab = Lab::up_or_skip("direct", None);
    let (c1, _s1) = lab.connect(false, 9100, 41011);
    let (c2, _s2) = lab.connect(false, 9200, 41012);
    let (c6, _s6) = lab.connect(true, 9100, 41013);
    let b4: SocketAddr = c1.peer_addr().unwrap();

    let (code, rows, d) = list(&lab, &["--remote", &b4.to_string()]);
    assert_eq!(code, 0, "{d}");
    assert_eq!(flows(&rows), vec![flow_of(&c1)], "{d}");

    let (code, rows, d) = list(&lab, &["--port", "9100"]);
    assert_eq!(code, 0, "{d}");
    let mut want = vec![flow_of(&c1), flow_of(&c6)];
    want.sort();
    let mut got = flows(&rows);
    got.sort();
    assert_eq!(got, want, "{d}");

    let v6_local = format!("[{}]", c6.local_addr().unwrap().ip());
    let (code, rows, d) = list(&lab, &["--local", &v6_local]);
    assert_eq!(code, 0, "{d}");
    assert_eq!(flows(&rows), vec![flow_of(&c6)], "{d}");

    let (code, rows, d) = list(&lab, &["--local", "198.18.0.2:41012", "--port", "9200"]);
    assert_eq!(code, 0, "{d}");
    assert_eq!(flows(&rows), vec![flow_of(&c2)], "{d}");

    let (code, out, err, _) = run_kaprobe(&lab, &["list", "--port", "9999"]);
    assert_eq!(code, 5, "{}", describe(code, &out, &err));
    common::error_json(code, &out, &err, "no-connection");
    assert_eq!(out.lines().count(), 1, "only the error object: {out}");
    assert!(err.contains("no established TCP connection"), "{err}");
}

fn list_prints_an_aligned_table() {
    let lab = Lab::up_or_skip("direct", None);
    let (plain, _s1) = lab.connect(false, 9100, 41021);
    let (kept, _s2) = lab.connect(true, 9100, 41022);
    keepalive_on(&kept, 600);
    let ns = lab.ns('a');
    let (code, out, err, _) = run_kaprobe_bare(&["--netns", &ns, "list"]);
    assert_eq!(code, 0, "{}", describe(code, &out, &err));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    for h in ["Local", "Remote", "Idle", "Unacked", "Keepalive", "Process"] {
        assert!(lines[0].contains(h), "header lacks {h}: {out}");
    }
    let me = format!("{}/", std::process::id());
    let at = |l: &str, s: &str| l.find(s).unwrap_or_else(|| panic!("{s} not in {l}"));
    let plain_line = lines
        .iter()
        .find(|l| l.starts_with(&plain.local_addr().unwrap().to_string()))
        .unwrap_or_else(|| panic!("{out}"));
    let kept_line = lines
        .iter()
        .find(|l| l.starts_with(&kept.local_addr().unwrap().to_string()))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(plain_line.contains(" off "), "{out}");
    assert!(kept_line.contains(" on next="), "{out}");
    // Same columns on every line: the owner starts under "Process".
    assert_eq!(at(lines[0], "Process"), at(plain_line, &me), "{out}");
    assert_eq!(at(lines[0], "Process"), at(kept_line, &me), "{out}");
    assert_eq!(
        at(lines[0], "Keepalive"),
        at(kept_line, " on next=") + 1,
        "{out}"
    );
}

crate::tests!(
    list_shows_owner_idle_and_keepalive_timer,
    list_filters_and_empty_match,
    list_prints_an_aligned_table,
);
