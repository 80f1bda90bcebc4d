//! `kaprobe watch` in the lab: it keeps an idle flow alive through a NAT that would forget
//! it, kills the socket of a dead peer so a blocked application wakes up, runs --on-dead
//! exec with the flow in its environment, and picks up connections that appear later.

mod common;

use std::io::Read;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::Lab;

fn spawn_watch(lab: &Lab, args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_kaprobe"))
        .args(["--netns", &lab.ns('a'), "--json", "watch"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start kaprobe watch")
}

/// SIGTERM, then the exit code and everything it printed (bounded).
fn stop(mut child: Child) -> (i32, String, String) {
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("watch did not stop on SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (mut out, mut err) = (String::new(), String::new());
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status.code().unwrap_or(-1), out, err)
}

fn states(out: &str) -> Vec<serde_json::Value> {
    out.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "state")
        .collect()
}

fn watch_keeps_an_idle_flow_through_a_nat_that_forgets() {
    let lab = Lab::up_or_skip("nat", Some(3));
    let (watched_c, watched_s) = lab.connect(false, 9601, 44601);
    let (idle_c, idle_s) = lab.connect(false, 9602, 44602);
    let flow = common::flow(
        SocketAddr::new(lab.a_addr(false), 44601),
        SocketAddr::new(lab.b_addr(false), 9601),
    );
    let watch = spawn_watch(&lab, &["--time", "1s", "--intvl", "500ms", &flow]);
    std::thread::sleep(Duration::from_secs(15));

    // The watched connection survived 15 s of application silence, five NAT timeouts.
    common::assert_still_carries_data(&watched_c, &watched_s);
    // The other one did not: the NAT dropped its state, and now drops its segments.
    use std::io::Write;
    idle_s
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let _ = (&idle_c).write_all(b"anyone there?");
    let mut buf = [0u8; 16];
    assert!(
        (&idle_s).read(&mut buf).is_err(),
        "unwatched flow still passed the NAT"
    );

    let (code, out, err) = stop(watch);
    assert_eq!(code, 0, "watch ends cleanly on SIGTERM\n{out}\n{err}");
    let s = states(&out);
    assert_eq!(
        s.first().map(|v| v["state"].clone()),
        Some("alive".into()),
        "{out}"
    );
    assert!(
        s.iter().all(|v| v["state"] == "alive"),
        "only ever alive: {out}"
    );
    let summary: serde_json::Value = out
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap();
    assert_eq!(summary["event"], "summary", "{out}");
    assert!(
        summary["rounds"].as_u64().unwrap() >= 5,
        "probed at least every few seconds: {out}"
    );
}

fn watch_on_dead_kill_wakes_the_blocked_application() {
    let lab = Lab::up_or_skip("direct", None);
    let (client, _server) = lab.connect(false, 9611, 44611);
    let flow = common::flow(
        SocketAddr::new(lab.a_addr(false), 44611),
        SocketAddr::new(lab.b_addr(false), 9611),
    );
    lab.fault(&["blackhole"]);
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let reader = std::thread::spawn(move || {
        let start = Instant::now();
        let mut buf = [0u8; 16];
        let r = (&client).read(&mut buf);
        (r.map_err(|e| e.kind()), start.elapsed())
    });
    let start = Instant::now();
    let mut watch = spawn_watch(
        &lab,
        &[
            "--time",
            "1s",
            "--intvl",
            "500ms",
            "--probes",
            "3",
            "--on-dead",
            "kill",
            &flow,
        ],
    );
    let (result, _) = reader.join().unwrap();
    let woke = start.elapsed();
    // time + probes x intvl = 1 s + 3 x 500 ms, counted from the last segment received.
    assert!(
        result.is_err(),
        "recv returned data after the peer died: {result:?}"
    );
    assert!(
        woke <= Duration::from_millis(3000),
        "recv failed only after {woke:?} (limit 2.5 s + 20 %)"
    );
    assert!(
        woke >= Duration::from_millis(2000),
        "recv failed too early: {woke:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(s) = watch.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "watch of one dead flow did not end"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut out = String::new();
    watch
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert_eq!(
        status.code(),
        Some(1),
        "a single watched flow that died exits 1\n{out}"
    );
    assert!(states(&out).iter().any(|v| v["state"] == "dead"), "{out}");
}

fn watch_on_dead_exec_gets_the_flow_in_its_environment() {
    let lab = Lab::up_or_skip("direct", None);
    let (_c, _s) = lab.connect(true, 9621, 44621);
    let local = SocketAddr::new(lab.a_addr(true), 44621);
    let remote = SocketAddr::new(lab.b_addr(true), 9621);
    lab.fault(&["blackhole"]);
    let file = std::env::temp_dir().join(format!("kaprobe-exec-{}", std::process::id()));
    let _ = std::fs::remove_file(&file);
    let cmd = format!(
        "echo \"$KAPROBE_FLOW $KAPROBE_VERDICT $KAPROBE_LOCAL $KAPROBE_REMOTE\" > {}",
        file.display()
    );
    let watch = spawn_watch(
        &lab,
        &[
            "--time",
            "0s",
            "--intvl",
            "300ms",
            "--probes",
            "2",
            "--on-dead",
            &format!("exec {cmd}"),
            &common::flow(local, remote),
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while !file.exists() {
        assert!(Instant::now() < deadline, "--on-dead exec never ran");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(100));
    let (code, out, _) = stop(watch);
    let got = std::fs::read_to_string(&file).unwrap();
    let _ = std::fs::remove_file(&file);
    assert_eq!(
        got.trim(),
        format!("{} dead {local} {remote}", common::flow(local, remote))
    );
    assert_eq!(code, 0, "{out}");
    // The connection still exists (report-like), so dead is reported once, not every round.
    assert_eq!(
        states(&out).iter().filter(|v| v["state"] == "dead").count(),
        1,
        "{out}"
    );
}

fn watch_with_filters_picks_up_new_connections() {
    let lab = Lab::up_or_skip("direct", None);
    let watch = spawn_watch(
        &lab,
        &[
            "--port", "9631", "--time", "300ms", "--intvl", "300ms", "--rescan", "200ms",
        ],
    );
    std::thread::sleep(Duration::from_millis(500));
    let (c, s) = lab.connect(false, 9631, 44631);
    std::thread::sleep(Duration::from_millis(1500));
    drop((c, s));
    std::thread::sleep(Duration::from_millis(700));
    let (code, out, err) = stop(watch);
    assert_eq!(code, 0, "{out}\n{err}");
    let s = states(&out);
    let flow = common::flow(
        SocketAddr::new(lab.a_addr(false), 44631),
        SocketAddr::new(lab.b_addr(false), 9631),
    );
    assert!(
        s.iter().any(|v| v["flow"] == flow && v["state"] == "alive"),
        "new connection watched: {out}"
    );
    assert!(
        s.iter()
            .any(|v| v["flow"] == flow && v["state"] == "closed"),
        "and dropped when closed: {out}"
    );
}

crate::tests!(
    watch_keeps_an_idle_flow_through_a_nat_that_forgets,
    watch_on_dead_kill_wakes_the_blocked_application,
    watch_on_dead_exec_gets_the_flow_in_its_environment,
    watch_with_filters_picks_up_new_connections,
);
