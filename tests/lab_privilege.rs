//! Least privilege in `watch` (issue 19), read off /proc as the kernel reports it: started as
//! root, the running daemon, each of its threads, and the `--on-dead exec` commands it starts
//! hold only what they need. With `--user nobody` every uid and gid is nobody's; the
//! capabilities left are the ones the watch still uses (CAP_NET_ADMIN with filters, CAP_BPF
//! and CAP_PERFMON for the kernel sequence source); the bounding set is empty; NoNewPrivs is
//! set. An exec'd command has no capability at all, as nobody or, without --user, as uid 0.
//!
//! Needs root (labs and `--user`); shown as ignored otherwise.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{Background, Lab};

const CAP_NET_ADMIN: u64 = 1 << 12;
const CAP_PERFMON: u64 = 1 << 38;
const CAP_BPF: u64 = 1 << 39;

/// The fields of a /proc/PID/status file.
fn status_of(path: &str) -> HashMap<String, String> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

fn hex(st: &HashMap<String, String>, key: &str) -> u64 {
    let v = st.get(key).unwrap_or_else(|| panic!("no {key} in {st:?}"));
    u64::from_str_radix(v, 16).unwrap_or_else(|e| panic!("{key} {v}: {e}"))
}

/// The uid and gid of `nobody` in /etc/passwd.
fn nobody() -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.first() == Some(&"nobody")).then(|| (f[2].parse().ok(), f[3].parse().ok()))
        })
        .and_then(|(u, g)| Some((u?, g?)))
        .expect("no nobody in /etc/passwd")
}

/// The line /proc shows for four equal ids (real, effective, saved, file system).
fn ids(id: u32) -> String {
    format!("{id}\t{id}\t{id}\t{id}")
}

/// What one process or thread must show: `uid`/`gid` everywhere, only capabilities from
/// `allowed`, empty inheritable, ambient and bounding sets, NoNewPrivs.
fn assert_confined(what: &str, st: &HashMap<String, String>, uid: u32, gid: u32, allowed: u64) {
    let (eff, prm) = (hex(st, "CapEff"), hex(st, "CapPrm"));
    println!(
        "{what}: Uid {} Gid {} Groups {:?} CapEff {eff:016x} CapPrm {prm:016x} CapInh {:016x} \
         CapBnd {:016x} CapAmb {:016x} NoNewPrivs {}",
        st["Uid"],
        st["Gid"],
        st.get("Groups").map(String::as_str).unwrap_or(""),
        hex(st, "CapInh"),
        hex(st, "CapBnd"),
        hex(st, "CapAmb"),
        st["NoNewPrivs"],
    );
    assert_eq!(st["Uid"], ids(uid), "{what}: Uid");
    assert_eq!(st["Gid"], ids(gid), "{what}: Gid");
    assert_eq!(
        eff & !allowed,
        0,
        "{what}: CapEff {eff:016x} beyond {allowed:016x}"
    );
    assert_eq!(
        prm & !allowed,
        0,
        "{what}: CapPrm {prm:016x} beyond {allowed:016x}"
    );
    assert_eq!(hex(st, "CapInh"), 0, "{what}: CapInh");
    assert_eq!(hex(st, "CapAmb"), 0, "{what}: CapAmb");
    assert_eq!(hex(st, "CapBnd"), 0, "{what}: CapBnd");
    assert_eq!(st["NoNewPrivs"], "1", "{what}: NoNewPrivs");
}

/// `kaprobe --netns A --json watch ARGS...` in the background.
fn spawn_watch(lab: &Lab, args: &[&str]) -> Background {
    let full: Vec<&str> = std::iter::once("watch")
        .chain(args.iter().copied())
        .collect();
    Background::start(lab, &full)
}

fn alive_line(flow: &str) -> impl Fn(&serde_json::Value) -> bool + '_ {
    move |v| v["event"] == "state" && v["flow"] == flow && v["state"] == "alive"
}

/// The running daemon, with and without `--user nobody`, watching by filters (so it keeps
/// CAP_NET_ADMIN) with `--metrics` (so it has HTTP threads): every thread is checked.
fn running_daemon(user: Option<&str>, port: u16) {
    let lab = Lab::up_or_skip("direct", None);
    let (uid, gid) = match user {
        Some(_) => nobody(),
        None => (0, 0),
    };
    let (c, s) = lab.connect(false, port, port + 35000);
    let flow = common::flow(
        SocketAddr::new(lab.a_addr(false), port + 35000),
        SocketAddr::new(lab.b_addr(false), port),
    );
    let remote = lab.b_addr(false).to_string();
    let port_arg = port.to_string();
    let mut args = vec![
        "--remote",
        &remote,
        "--port",
        &port_arg,
        "--time",
        "500ms",
        "--intvl",
        "500ms",
        "--metrics",
        "127.0.0.1:0",
    ];
    if let Some(u) = user {
        args.extend(["--user", u]);
    }
    let mut watch = spawn_watch(&lab, &args);
    let alive = watch.wait_json(Duration::from_secs(10), alive_line(&flow));
    let pid = watch.pid();
    let main = status_of(&format!("/proc/{pid}/status"));
    let mut threads = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/task")).expect("task dir") {
        let tid = entry.expect("task entry").file_name();
        let tid = tid.to_string_lossy().to_string();
        threads.push((
            tid.clone(),
            status_of(&format!("/proc/{pid}/task/{tid}/status")),
        ));
    }
    // Probing goes on (every 500 ms) after the reads, and nothing changes its verdict.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(watch.exited(), None, "watch ended");
    common::assert_still_carries_data(&c, &s);
    let (code, out, err) = watch.stop();
    assert!(alive.is_some(), "never alive\n{out}\n{err}");
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(!err.contains("panicked"), "{err}");

    let kept = CAP_NET_ADMIN | CAP_BPF | CAP_PERFMON;
    assert_confined(&format!("daemon {pid}"), &main, uid, gid, kept);
    let eff = hex(&main, "CapEff");
    assert_ne!(
        eff & CAP_NET_ADMIN,
        0,
        "watch by filters keeps CAP_NET_ADMIN"
    );
    assert_eq!(
        eff,
        hex(&main, "CapPrm"),
        "nothing permitted but not effective"
    );
    if user.is_some() {
        assert_eq!(
            main.get("Groups").map(String::as_str),
            Some(gid.to_string().as_str())
        );
    }
    assert!(
        threads.len() > 1,
        "--metrics runs at least one thread: {threads:?}"
    );
    let mut http = 0;
    for (tid, st) in &threads {
        assert_confined(
            &format!("  thread {tid} ({})", st["Name"]),
            st,
            uid,
            gid,
            kept,
        );
        // The thread that faces the network holds no capability at all.
        if st["Name"] == "kaprobe-metrics" {
            http += 1;
            for set in ["CapEff", "CapPrm", "CapInh"] {
                assert_eq!(hex(st, set), 0, "{set} of the HTTP thread {tid}");
            }
        }
    }
    assert_eq!(http, 1, "one HTTP thread: {threads:?}");
    // Not uid 0: the daemon cannot read /etc/shadow or write root's files.
    if user.is_some() {
        assert_ne!(main["Uid"], ids(0));
    }
}

fn watch_as_nobody_keeps_only_what_it_needs() {
    running_daemon(Some("nobody"), 9701);
}

fn watch_as_root_keeps_only_what_it_needs() {
    running_daemon(None, 9702);
}

type Pair = (std::net::TcpStream, std::net::TcpStream);

/// Two connections A -> B, server ports `port` and `port + 1`; the first one's peer goes
/// silent (B drops everything on `port`), the second stays alive.
fn one_silent_peer(lab: &Lab, port: u16) -> (Pair, Pair) {
    let silent = lab.connect(false, port, port + 35000);
    let alive = lab.connect(false, port + 1, port + 35001);
    common::nft(
        &lab.ns('b'),
        &format!(
            "table inet kpsilent {{\n\
             chain input {{ type filter hook input priority -10; policy accept;\n\
             tcp dport {port} drop\n}}\n\
             chain output {{ type filter hook output priority -10; policy accept;\n\
             tcp sport {port} drop\n}}\n}}\n"
        ),
    );
    (silent, alive)
}

/// A scratch directory any user may write in (the exec'd command may run as nobody), and
/// the path there for a copy of /proc/self/status.
fn status_file(name: &str) -> (common::ScratchDir, std::path::PathBuf) {
    let dir = common::ScratchDir::new(name);
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o777))
            .expect("chmod the scratch directory");
    }
    let file = dir.join("status");
    (dir, file)
}

/// `--on-dead exec` for one connection whose peer goes silent: the command, a child of
/// kaprobe's `sh`, writes its own /proc/self/status. The other connection is alive, and the
/// application on it still exchanges data.
fn exec_child(user: Option<&str>, port: u16) {
    let lab = Lab::up_or_skip("direct", None);
    let (uid, gid) = match user {
        Some(_) => nobody(),
        None => (0, 0),
    };
    let (_silent, (c, s)) = one_silent_peer(&lab, port);
    let (_dir, file) = status_file("privexec");
    let cmd = format!(
        "cat /proc/self/status > {}.tmp && mv {0}.tmp {0}",
        file.display()
    );
    let remote = lab.b_addr(false).to_string();
    let on_dead = format!("exec {cmd}");
    let mut args = vec![
        "--remote",
        &remote,
        "--time",
        "0s",
        "--intvl",
        "300ms",
        "--probes",
        "2",
        "--on-dead",
        &on_dead,
    ];
    if let Some(u) = user {
        args.extend(["--user", u]);
    }
    let watch = spawn_watch(&lab, &args);
    let deadline = Instant::now() + Duration::from_secs(8);
    while !file.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    common::assert_still_carries_data(&c, &s);
    let (code, out, err) = watch.stop();
    assert!(
        file.exists(),
        "--on-dead exec never wrote its status\n{out}\n{err}"
    );
    assert_eq!(code, 0, "{out}\n{err}");
    let alive = common::flow(
        SocketAddr::new(lab.a_addr(false), port + 35001),
        SocketAddr::new(lab.b_addr(false), port + 1),
    );
    assert!(
        out.lines()
            .any(|l| l.contains(&alive) && l.contains("\"alive\"")),
        "the other connection is alive: {out}"
    );
    let st = status_of(&file.to_string_lossy());
    assert_confined("exec'd command", &st, uid, gid, 0);
    assert_eq!(hex(&st, "CapEff"), 0);
    assert_eq!(hex(&st, "CapPrm"), 0);
}

fn exec_child_as_nobody_has_no_capability() {
    exec_child(Some("nobody"), 9711);
}

fn exec_child_as_root_has_no_capability() {
    exec_child(None, 9721);
}

/// An unknown user: exit 2 and one line, before any socket is opened.
fn unknown_user_exits_2() {
    let lab = Lab::up_or_skip("direct", None);
    let remote = lab.b_addr(false).to_string();
    let (code, out, err, _) = common::run_kaprobe(
        &lab,
        &[
            "watch",
            "--remote",
            &remote,
            "--user",
            "kaprobe-no-such-user",
        ],
    );
    assert_eq!(code, 2, "{out}\n{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(
        err.contains("--user kaprobe-no-such-user: no such user"),
        "{err}"
    );
}

/// `kaprobe ARGS...` in namespace `ns` under `setpriv SETPRIV...` (as the user and with the
/// capabilities a systemd unit would give it), stdout and stderr to files in `dir`.
fn spawn_setpriv(
    ns: &str,
    setpriv: &[&str],
    args: &[&str],
    dir: &common::ScratchDir,
) -> std::process::Child {
    let out = std::fs::File::create(dir.join("stdout")).expect("create stdout file");
    let err = std::fs::File::create(dir.join("stderr")).expect("create stderr file");
    std::process::Command::new("ip")
        .args(["netns", "exec", ns, "setpriv"])
        .args(setpriv)
        .arg(env!("CARGO_BIN_EXE_kaprobe"))
        .args(args)
        .env("KAPROBE_DEBUG_CAPS", "1")
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(err)
        .current_dir("/")
        .spawn()
        .expect("run setpriv")
}

/// The systemd unit's case: not root, CAP_NET_RAW and CAP_NET_ADMIN as ambient capabilities
/// and the only ones in the bounding set, no_new_privs. Without CAP_SETPCAP kaprobe cannot
/// empty the bounding set and says so (debug); the ambient set is cleared all the same, so
/// the `--on-dead exec` command, not root, starts with no capability.
fn ambient_capabilities_as_in_the_systemd_unit() {
    let lab = Lab::up_or_skip("direct", None);
    if !common::require_tool("setpriv", "util-linux") {
        return;
    }
    let (uid, gid) = nobody();
    let port = 9731;
    let (_silent, (c, s)) = one_silent_peer(&lab, port);
    let (dir, file) = status_file("privamb");
    let on_dead = format!(
        "exec cat /proc/self/status > {}.tmp && mv {0}.tmp {0}",
        file.display()
    );
    let remote = lab.b_addr(false).to_string();
    let (uid_s, gid_s) = (uid.to_string(), gid.to_string());
    let caps = "+net_raw,+net_admin";
    let mut child = spawn_setpriv(
        &lab.ns('a'),
        &[
            "--reuid",
            &uid_s,
            "--regid",
            &gid_s,
            "--clear-groups",
            "--inh-caps",
            caps,
            "--ambient-caps",
            caps,
            "--bounding-set",
            "-all,+net_raw,+net_admin",
            "--no-new-privs",
        ],
        &[
            "-vv",
            "watch",
            "--remote",
            &remote,
            "--time",
            "0s",
            "--intvl",
            "300ms",
            "--probes",
            "2",
            "--on-dead",
            &on_dead,
        ],
        &dir,
    );
    let deadline = Instant::now() + Duration::from_secs(8);
    while !file.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let daemon = status_of(&format!("/proc/{}/status", child.id()));
    common::assert_still_carries_data(&c, &s);
    common::terminate(&mut child);
    let err = std::fs::read_to_string(dir.join("stderr")).unwrap_or_default();
    let out = std::fs::read_to_string(dir.join("stdout")).unwrap_or_default();
    assert!(
        file.exists(),
        "--on-dead exec never wrote its status\n{out}\n{err}"
    );
    assert!(err.contains("caps after drop:"), "{err}");
    assert!(
        err.contains("bounding set left as it is: dropping from it needs CAP_SETPCAP"),
        "the kept bounding set is said (debug)\n{err}"
    );
    let alive = common::flow(
        SocketAddr::new(lab.a_addr(false), port + 35001),
        SocketAddr::new(lab.b_addr(false), port + 1),
    );
    assert!(
        out.lines()
            .any(|l| l.contains(&alive) && l.contains("alive")),
        "the other connection is alive: {out}"
    );
    let bnd = CAP_NET_ADMIN | 1 << 13;
    for (what, st, allowed) in [
        ("daemon", &daemon, CAP_NET_ADMIN),
        ("exec'd command", &status_of(&file.to_string_lossy()), 0),
    ] {
        println!(
            "{what}: Uid {} CapEff {:016x} CapPrm {:016x} CapBnd {:016x} CapAmb {:016x} NoNewPrivs {}",
            st["Uid"],
            hex(st, "CapEff"),
            hex(st, "CapPrm"),
            hex(st, "CapBnd"),
            hex(st, "CapAmb"),
            st["NoNewPrivs"]
        );
        assert_eq!(st["Uid"], ids(uid), "{what}");
        assert_eq!(hex(st, "CapEff") & !allowed, 0, "{what}");
        assert_eq!(hex(st, "CapPrm") & !allowed, 0, "{what}");
        assert_eq!(hex(st, "CapAmb"), 0, "{what}");
        assert_eq!(hex(st, "CapBnd"), bnd, "{what}: the bounding set stays");
        assert_eq!(st["NoNewPrivs"], "1", "{what}");
    }
}

/// `--user` without CAP_SETUID (not root): exit 6, one line naming the capability.
fn user_without_root_exits_6() {
    let lab = Lab::up_or_skip("direct", None);
    if !common::require_tool("setpriv", "util-linux") {
        return;
    }
    let (uid, gid) = nobody();
    let dir = common::ScratchDir::new("privsix");
    let (uid_s, gid_s) = (uid.to_string(), gid.to_string());
    let remote = lab.b_addr(false).to_string();
    let mut child = spawn_setpriv(
        &lab.ns('a'),
        &["--reuid", &uid_s, "--regid", &gid_s, "--clear-groups"],
        &["watch", "--remote", &remote, "--user", "nobody"],
        &dir,
    );
    let status = common::wait_within(&mut child, Duration::from_secs(10), "kaprobe --user");
    let err = std::fs::read_to_string(dir.join("stderr")).unwrap_or_default();
    assert_eq!(status.code(), Some(6), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(
        err.contains("--user nobody") && err.contains("CAP_SETUID"),
        "{err}"
    );
}

crate::tests!(
    watch_as_nobody_keeps_only_what_it_needs,
    watch_as_root_keeps_only_what_it_needs,
    exec_child_as_nobody_has_no_capability,
    exec_child_as_root_has_no_capability,
    unknown_user_exits_2,
    ambient_capabilities_as_in_the_systemd_unit,
    user_without_root_exits_6,
);
