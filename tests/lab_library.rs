//! The library for harness authors (the crate root's `Prober`): `examples/harness.rs` run as root in
//! its own namespaces, and a `Prober` called from this multi-threaded test process, which
//! must find its calling thread's capabilities and namespace as they were, and no child
//! process left behind.

mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::process::Command;
use std::time::Duration;

use common::{Lab, describe, run_bounded_for};
use kaprobe::{ExitStatus, Filter, Flow, Namespace, Options, Prober, Verdict};

/// The example, built and run: alive, dead after a blackhole, reset after a restart.
fn harness_example_passes() {
    let bin = common::example_bin("harness");
    let (code, out, err, took) = run_bounded_for(
        Command::new(&bin),
        "examples/harness",
        Duration::from_secs(60),
    );
    assert_eq!(code, 0, "{}", describe(code, &out, &err));
    assert!(
        out.contains("alive, dead and reset as expected"),
        "{}",
        describe(code, &out, &err)
    );
    // Three verdicts, as JSON: each line after "expect VERDICT: " is a Report.
    let verdicts: Vec<String> = out
        .lines()
        .filter_map(|l| l.split_once(": "))
        .filter(|(head, _)| head.starts_with("expect "))
        .map(|(_, json)| {
            let v: serde_json::Value = serde_json::from_str(json).expect(json);
            v["verdict"].as_str().expect(json).to_string()
        })
        .collect();
    assert_eq!(verdicts, ["alive", "dead", "reset"], "{out}");
    // It cleaned up: none of its namespaces is left.
    let left = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let left = String::from_utf8_lossy(&left.stdout);
    assert!(
        !left.lines().any(|l| l.starts_with("kph")),
        "left behind: {left}"
    );
    assert!(took < Duration::from_secs(30), "took {took:?}");
}

/// What the calling thread is: its capability sets and network namespace, as /proc shows
/// them.
#[derive(Debug, PartialEq, Eq)]
struct Caller {
    cap_eff: String,
    cap_prm: String,
    netns: u64,
}

impl Caller {
    fn now() -> Caller {
        let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .unwrap_or_else(|| panic!("no {name} in /proc/thread-self/status"))
                .trim()
                .to_string()
        };
        Caller {
            cap_eff: field("CapEff:"),
            cap_prm: field("CapPrm:"),
            netns: std::fs::metadata("/proc/thread-self/ns/net").unwrap().ino(),
        }
    }
}

/// The PIDs of this process's children that are forks of it (running this very program,
/// not one they exec'd), from every thread's list. Other tests of this binary run programs
/// meanwhile (cargo, `ip`, the example): those children exec at once.
fn forks() -> BTreeSet<u32> {
    let me = std::fs::read_link("/proc/self/exe").unwrap();
    let mut pids = BTreeSet::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let path = task.unwrap().path().join("children");
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        pids.extend(
            text.split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok())
                .filter(|pid| {
                    std::fs::read_link(format!("/proc/{pid}/exe")).ok().as_ref() == Some(&me)
                }),
        );
    }
    pids
}

/// The forks of this process that were not there `before` and are still there a moment
/// later (a program another test runs is a fork of this one only until it execs).
fn new_forks(before: &BTreeSet<u32>) -> Vec<u32> {
    let first = forks();
    std::thread::sleep(Duration::from_millis(300));
    let later = forks();
    first
        .intersection(&later)
        .filter(|p| !before.contains(p))
        .copied()
        .collect()
}

fn threads() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap()
}

/// The library, with its defaults, from a process with several threads: a probe and a sweep
/// in another namespace give verdicts, and the calling thread keeps its capabilities and its
/// namespace; no child process is left.
fn the_library_leaves_its_caller_as_it_was() {
    let lab = Lab::up_or_skip("direct", None);
    let (_client, _server) = lab.connect(false, 9851, 41851);
    let (local, remote) = lab.ends(false, 9851, 41851);
    let flow = Flow { local, remote };
    // Another thread runs throughout, as in any test harness or service.
    let (stop, parked) = std::sync::mpsc::channel::<()>();
    let other = std::thread::spawn(move || parked.recv());
    assert!(threads() > 1);

    let before = Caller::now();
    let forks_before = forks();
    let prober = Prober::open(Namespace::Name(lab.ns('a'))).expect("open the lab's namespace");
    let opts = Options::builder()
        .intvl(Duration::from_millis(500))
        .build()
        .unwrap();
    let report = prober.probe(&flow, &opts).expect("probe");
    assert_eq!(report.verdict, Verdict::Alive, "{report:?}");
    assert_eq!((report.local, report.remote), (local, remote));
    assert_eq!(report.exit_status(), ExitStatus::Success);
    let filter = Filter {
        port: Some(9851),
        ..Filter::default()
    };
    let swept = prober.sweep(&filter, &opts).expect("sweep");
    assert_eq!(swept.len(), 1, "{swept:?}");
    assert_eq!(swept[0].verdict, Verdict::Alive, "{swept:?}");
    // The same prober, again: nothing it did stays behind between calls.
    assert_eq!(prober.probe(&flow, &opts).unwrap().verdict, Verdict::Alive);
    drop(prober);

    assert_eq!(Caller::now(), before, "the calling thread changed");
    let left = new_forks(&forks_before);
    assert!(left.is_empty(), "child processes left: {left:?}");
    // Not a connection of this (the test's own) namespace.
    let here = Prober::open(Namespace::Current).unwrap();
    let e = here.probe(&flow, &opts).unwrap_err();
    assert_eq!(e.status(), ExitStatus::NoConnection, "{e}");
    drop(stop);
    let _ = other.join();
}

/// A namespace that does not exist is a usage error (exit 2), naming it.
fn a_missing_namespace_is_a_usage_error() {
    let name = format!("kaprobe-no-such-ns-{}", std::process::id());
    let e = Prober::open(Namespace::Name(name.clone())).unwrap_err();
    assert_eq!(e.status(), ExitStatus::Usage, "{e}");
    assert!(e.to_string().contains(&name), "{e}");
    let e = Prober::open(Namespace::Pid(0)).unwrap_err();
    assert_eq!(e.status(), ExitStatus::Usage, "{e}");
    let e = Prober::open(Namespace::Name("a/b".into())).unwrap_err();
    assert_eq!(e.status(), ExitStatus::Usage, "{e}");
}

crate::tests!(
    [crate::cases!(common::require_lab;
        harness_example_passes => harness_example_passes(),
    )],
    the_library_leaves_its_caller_as_it_was,
    a_missing_namespace_is_a_usage_error,
);
