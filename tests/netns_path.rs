//! `--netns PATH` and `--pid PID`: the namespaces of containers, which have no name under
//! /run/netns. The lab tests need root, `ip` and `nft` (a failure instead of a skip when
//! KAPROBE_REQUIRE_NETNS=1); the argument tests run anywhere.

mod common;

use common::{Lab, assert_verdict_fields, describe, run_kaprobe_bare, verdict_json};
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A process started in a namespace with `ip netns exec`; killed on drop.
struct InNetns(Child);

impl InNetns {
    /// `ip netns exec NS sleep 30`, returned once the process is really in NS.
    fn start(ns: &str) -> InNetns {
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "sleep", "30"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot run ip netns exec");
        let guard = InNetns(child);
        let want = std::fs::metadata(format!("/run/netns/{ns}")).expect("stat /run/netns/NS");
        let ns_file = format!("/proc/{}/ns/net", guard.pid());
        let deadline = Instant::now() + Duration::from_secs(5);
        // `ip netns exec` enters the namespace, then execs: wait until it has.
        loop {
            if let Ok(m) = std::fs::metadata(&ns_file)
                && m.ino() == want.ino()
                && m.dev() == want.dev()
            {
                break;
            }
            assert!(Instant::now() < deadline, "{ns_file} never became {ns}");
            std::thread::sleep(Duration::from_millis(10));
        }
        guard
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for InNetns {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn alive_with(global: &[&str], lab: &Lab, server_port: u16, client_port: u16) {
    let (client, server) = lab.connect(false, server_port, client_port);
    let local = SocketAddr::new(lab.a_addr(false), client_port);
    let remote = SocketAddr::new(lab.b_addr(false), server_port);
    let flow = common::flow(local, remote);
    let mut args = global.to_vec();
    args.extend(["--json", "probe", &flow]);
    let (code, out, err, _) = run_kaprobe_bare(&args);
    assert_eq!(code, 0, "alive must exit 0\n{}", describe(code, &out, &err));
    let v = verdict_json(&out);
    assert_verdict_fields(&v, local, remote, "alive");
    drop((client, server));
}

fn netns_given_as_a_path_alive() {
    let lab = Lab::up_or_skip("direct", None);
    let path = format!("/run/netns/{}", lab.ns('a'));
    alive_with(&["--netns", &path], &lab, 9301, 41301);
}

fn netns_of_a_process_by_proc_path_and_by_pid_alive() {
    let lab = Lab::up_or_skip("direct", None);
    let proc = InNetns::start(&lab.ns('a'));
    let pid = proc.pid().to_string();
    let path = format!("/proc/{pid}/ns/net");
    alive_with(&["--netns", &path], &lab, 9302, 41302);
    alive_with(&["--pid", &pid], &lab, 9303, 41303);
    // Global options go after the subcommand too.
    let (client, server) = lab.connect(false, 9304, 41304);
    let flow = common::flow(
        SocketAddr::new(lab.a_addr(false), 41304),
        SocketAddr::new(lab.b_addr(false), 9304),
    );
    let (code, out, err, _) = run_kaprobe_bare(&["probe", &flow, "--json", "--pid", &pid]);
    assert_eq!(code, 0, "{}", describe(code, &out, &err));
    drop((client, server));
}

/// Exit status and the one line of stderr.
fn refused(args: &[&str]) -> (i32, String) {
    let (code, out, err, _) = run_kaprobe_bare(args);
    assert!(
        out.is_empty(),
        "nothing on stdout: {}",
        describe(code, &out, &err)
    );
    // One line says what is wrong; clap's own errors may add its pointer to `--help` (README
    // "Unix habits"), nothing else.
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| {
            !l.trim().is_empty()
                && !l.starts_with("For more information, try")
                && !l.starts_with("Usage: ")
        })
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "one line on stderr: {}",
        describe(code, &out, &err)
    );
    (code, lines[0].to_string())
}

fn bad_paths_and_pids_are_one_line_and_exit_2() {
    let flow = "198.18.0.1:40000-198.18.0.2:9000";
    let cases: &[(&[&str], &str)] = &[
        (&["--netns", "/nonexistent/kaprobe-ns"], "does not exist"),
        (
            &["--netns", "kaprobe-no-such-namespace-x"],
            "no network namespace named",
        ),
        (
            &["--netns", "/proc/self/ns/mnt"],
            "is not a network namespace",
        ),
        (&["--netns", "/etc/hostname"], "is not a network namespace"),
        (&["--pid", "4194305"], "no process with PID 4194305"),
        (&["--pid", "0"], "--pid"),
        (&["--pid", "abc"], "--pid"),
        (&["--pid", "1", "--netns", "x"], "--netns"),
    ];
    for (global, want) in cases {
        let mut args = global.to_vec();
        args.extend(["probe", flow]);
        let (code, line) = refused(&args);
        assert_eq!(code, 2, "{args:?}: {line}");
        assert!(line.contains(want), "{args:?}: {line}");
    }
}

fn entering_without_cap_sys_admin_exits_6_naming_it() {
    // SAFETY: no arguments.
    if unsafe { libc::geteuid() } != 0 {
        common::skip("needs root to run kaprobe with CAP_SYS_ADMIN taken away");
    }
    // Root, but with CAP_SYS_ADMIN out of the bounding set: it is not in the new program's
    // permitted set, so setns fails with EPERM.
    let pid = std::process::id().to_string();
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--bounding-set",
        "-sys_admin",
        "--inh-caps",
        "-sys_admin",
        "--",
    ])
    .arg(env!("CARGO_BIN_EXE_kaprobe"))
    .args(["--pid", &pid, "probe", "198.18.0.1:40000-198.18.0.2:9000"]);
    let (code, out, err, _) = common::run_bounded(cmd, "setpriv kaprobe --pid");
    assert_eq!(code, 6, "{}", describe(code, &out, &err));
    assert!(err.contains("CAP_SYS_ADMIN"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

crate::tests!(
    netns_given_as_a_path_alive,
    netns_of_a_process_by_proc_path_and_by_pid_alive,
    bad_paths_and_pids_are_one_line_and_exit_2,
    entering_without_cap_sys_admin_exits_6_naming_it,
);
