//! Least privilege: kaprobe works for an unprivileged user given only file capabilities
//! (`setcap cap_net_raw,cap_net_admin+ep`), drops every capability once its sockets are open,
//! and without the capabilities exits 6 naming the one it lacked.
//!
//! Needs root (to build the lab and to setcap a copy of the binary) and `setcap`; skipped
//! otherwise, a failure instead when KAPROBE_REQUIRE_NETNS=1.

mod common;

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use common::{Lab, assert_still_carries_data, describe, in_netns, verdict_json};

/// The unprivileged user and group the copies run as (`nobody`, `nogroup`).
const NOBODY: u32 = 65534;

fn require_setcap() -> bool {
    if !common::require_lab() {
        return false;
    }
    match Command::new("setcap").arg("-v").output() {
        Ok(_) => true,
        Err(e) => common::skip(format!("cannot run setcap (install libcap2-bin): {e}")),
    }
}

static COPY_COUNTER: AtomicU32 = AtomicU32::new(0);

/// A copy of the kaprobe binary in a private directory everyone may read; removed on drop.
struct BinaryCopy {
    dir: PathBuf,
    exe: PathBuf,
}

impl BinaryCopy {
    fn new(file_caps: Option<&str>) -> BinaryCopy {
        use std::os::unix::fs::PermissionsExt;
        let n = COPY_COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("kaprobe-priv-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        // Guard first, so the directory goes on every path below.
        let copy = BinaryCopy {
            exe: dir.join("kaprobe"),
            dir,
        };
        std::fs::set_permissions(&copy.dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::copy(env!("CARGO_BIN_EXE_kaprobe"), &copy.exe).expect("copy the binary");
        std::fs::set_permissions(&copy.exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        if let Some(caps) = file_caps {
            let out = Command::new("setcap")
                .arg(caps)
                .arg(&copy.exe)
                .output()
                .expect("run setcap");
            assert!(
                out.status.success(),
                "setcap {caps} {}: {}",
                copy.exe.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            let out = Command::new("getcap")
                .arg(&copy.exe)
                .output()
                .expect("getcap");
            let shown = String::from_utf8_lossy(&out.stdout);
            assert!(
                shown.contains("cap_net_admin,cap_net_raw") && shown.contains("ep"),
                "getcap shows {shown:?}"
            );
        }
        copy
    }
}

impl Drop for BinaryCopy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `exe ARGS` as nobody:nogroup inside network namespace `ns` (no --netns: entering a
/// namespace needs CAP_SYS_ADMIN). The child is forked from a thread that entered the
/// namespace, so it starts there. Killed, and the test failed, after the usual bound.
fn run_as_nobody(ns: &str, exe: &Path, args: &[&str]) -> (i32, String, String) {
    let exe = exe.to_path_buf();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    in_netns(ns, move || {
        let mut cmd = Command::new(&exe);
        cmd.args(&args)
            .env(kaprobe::sys::privilege::DEBUG_ENV, "1")
            .env_remove("RUST_LOG")
            // std drops supplementary groups when it changes the uid of a root parent.
            .uid(NOBODY)
            .gid(NOBODY)
            .current_dir("/");
        let (code, stdout, stderr, _) =
            common::run_bounded(cmd, &format!("{} {args:?}", exe.display()));
        (code, stdout, stderr)
    })
}

/// The hex value after `KEY=` on the "caps after drop" line.
fn cap_field(stderr: &str, key: &str) -> u64 {
    let line = stderr
        .lines()
        .find(|l| l.contains("caps after drop:"))
        .unwrap_or_else(|| {
            panic!(
                "no 'caps after drop:' line on stderr (is {} wired after the drop?):\n{stderr}",
                kaprobe::sys::privilege::DEBUG_ENV
            )
        });
    let value = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"));
    u64::from_str_radix(value, 16).unwrap_or_else(|e| panic!("{key}={value}: {e}"))
}

fn file_caps_alive(v6: bool, server_port: u16, client_port: u16) {
    let lab = Lab::up("direct", None);
    let (client, server) = lab.connect(v6, server_port, client_port);
    let local = SocketAddr::new(lab.a_addr(v6), client_port);
    let remote = SocketAddr::new(lab.b_addr(v6), server_port);
    let copy = BinaryCopy::new(Some("cap_net_raw,cap_net_admin+ep"));

    let flow = common::flow(local, remote);
    let (code, out, err) = run_as_nobody(&lab.ns('a'), &copy.exe, &["--json", "probe", &flow]);
    assert_eq!(
        code,
        0,
        "unprivileged kaprobe with file capabilities must find the peer alive\n{}",
        describe(code, &out, &err)
    );
    let v = verdict_json(&out);
    common::assert_verdict_fields(&v, local, remote, "alive");
    // Every capability gone once the sockets were open; the sockets kept working.
    assert_eq!(cap_field(&err, "CapEff"), 0, "{err}");
    assert_eq!(cap_field(&err, "CapPrm"), 0, "{err}");
    assert_eq!(cap_field(&err, "CapInh"), 0, "{err}");
    assert_eq!(cap_field(&err, "CapAmb"), 0, "{err}");
    assert_still_carries_data(&client, &server);
}

fn without_capabilities_exit_6_names_cap_net_raw() {
    if !require_setcap() {
        return;
    }
    let lab = Lab::up("direct", None);
    let (_client, _server) = lab.connect(false, 9703, 41703);
    let local = SocketAddr::new(lab.a_addr(false), 41703);
    let remote = SocketAddr::new(lab.b_addr(false), 9703);
    let copy = BinaryCopy::new(None);

    let flow = common::flow(local, remote);
    for args in [vec!["probe", flow.as_str()], vec!["--json", "probe", &flow]] {
        let (code, out, err) = run_as_nobody(&lab.ns('a'), &copy.exe, &args);
        assert_eq!(
            code,
            6,
            "missing privilege must exit 6\n{}",
            describe(code, &out, &err)
        );
        assert!(
            err.contains("CAP_NET_RAW"),
            "the message must name CAP_NET_RAW\n{}",
            describe(code, &out, &err)
        );
        assert!(err.contains("setcap"), "and say how to grant it\n{err}");
        assert!(!err.contains("panicked"), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "one clear line:\n{err}");
    }
}

crate::tests!(
    [crate::cases!(require_setcap;
        file_capabilities_suffice_and_are_dropped_v4 => file_caps_alive(false, 9701, 41701),
        file_capabilities_suffice_and_are_dropped_v6 => file_caps_alive(true, 9702, 41702),
    )],
    without_capabilities_exit_6_names_cap_net_raw,
);
