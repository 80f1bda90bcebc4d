//! Checks the lab itself, without kaprobe: each fault does to a real connection what
//! the scenario tests assume it does. If one of these fails, a scenario failure says
//! nothing about kaprobe.

mod common;

use common::{Lab, assert_still_carries_data};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Writes from the client and reports whether the server got the bytes within `wait`.
fn server_receives(client: &TcpStream, server: &TcpStream, wait: Duration) -> bool {
    let msg = b"selfcheck";
    (&*client).write_all(msg).unwrap();
    server.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 9];
    match (&*server).read_exact(&mut buf) {
        Ok(()) => {
            assert_eq!(&buf, msg);
            true
        }
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => false,
        Err(e) => panic!("server read: {e}"),
    }
}

fn check_topologies(v6: bool) {
    for (i, kind) in ["direct", "routed", "nat"].into_iter().enumerate() {
        let lab = Lab::up(kind, None);
        let (c, s) = lab.connect(v6, 9700 + i as u16, 42700 + i as u16);
        assert_still_carries_data(&c, &s);
    }
}

/// A `kind` lab with a connection from A to B whose peer dies without a word (B frozen, the
/// server socket closed) and comes back empty (`restart`); then the client in A writes one byte
/// and reads for up to `wait`. What that read returned.
fn write_after_restart(kind: &str, v6: bool, port: u16, wait: Duration) -> std::io::Result<usize> {
    let lab = Lab::up(kind, None);
    let (client, server) = lab.connect(v6, port, port + 30000);
    lab.fault(&["freeze"]);
    drop(server);
    lab.fault(&["restart"]);
    (&client).write_all(b"x").unwrap();
    let mut buf = [0u8; 1];
    // A signal to the test process (a lab script's child ending, here) can cut a timed read
    // short with EINTR: read again for the rest of the wait.
    let deadline = std::time::Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        client
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        match (&client).read(&mut buf) {
            Err(e) if e.kind() == ErrorKind::Interrupted && !left.is_zero() => continue,
            other => return other,
        }
    }
}

fn restart_resets(v6: bool, kind: &str, port: u16) {
    // The established socket in A survived the restart, and the new peer answers its next
    // segment with RST.
    match write_after_restart(kind, v6, port, Duration::from_secs(5)) {
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        other => panic!("expected ECONNRESET from the restarted peer, got {other:?}"),
    }
}

/// Masquerade forgets every flow it translated out of an interface when that
/// interface goes away (R's eth1 dies with B's namespace), so behind the NAT a
/// restarted peer is never reached: the next segment is invalid and dropped.
/// A restart behind NAT therefore reads as `dead`, not `reset`.
fn restart_behind_nat_is_silent() {
    if !common::require_lab() {
        return;
    }
    for (v6, port) in [(false, 9714), (true, 9715)] {
        match write_after_restart("nat", v6, port, Duration::from_millis(1500)) {
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            other => panic!("expected silence behind the NAT, got {other:?}"),
        }
    }
}

fn blackhole_silences(v6: bool, port: u16) {
    let lab = Lab::up("direct", None);
    let (client, server) = lab.connect(v6, port, port + 30000);
    lab.fault(&["blackhole"]);
    assert!(!server_receives(
        &client,
        &server,
        Duration::from_millis(800)
    ));
    lab.fault(&["unblackhole"]);
    // The retransmission gets through once the hole is gone.
    let mut buf = [0u8; 9];
    server
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    (&server)
        .read_exact(&mut buf)
        .expect("retransmission after unblackhole");
}

fn nat_forgets_idle_flow(v6: bool, port: u16) {
    let lab = Lab::up("nat", Some(2));
    let (client, server) = lab.connect(v6, port, port + 30000);
    // Within the timeout: passes.
    assert_still_carries_data(&client, &server);
    // Past it: the NAT has no entry, the mid-stream segment is invalid and dropped.
    std::thread::sleep(Duration::from_millis(3000));
    assert!(
        !server_receives(&client, &server, Duration::from_millis(1500)),
        "a segment passed the NAT after its entry expired"
    );
}

fn nat_expire_forgets(v6: bool, port: u16) {
    let lab = Lab::up("nat", None);
    let (client, server) = lab.connect(v6, port, port + 30000);
    lab.fault(&["nat-expire"]);
    assert!(!server_receives(
        &client,
        &server,
        Duration::from_millis(800)
    ));
}

fn labs_are_removed_on_drop() {
    let lab = Lab::up_or_skip("routed", None);
    let names: Vec<String> = ['a', 'b', 'r'].iter().map(|&c| lab.ns(c)).collect();
    for n in &names {
        assert!(std::path::Path::new(&format!("/run/netns/{n}")).exists());
    }
    drop(lab);
    for n in &names {
        assert!(
            !std::path::Path::new(&format!("/run/netns/{n}")).exists(),
            "{n} left behind"
        );
    }
}

crate::tests!(
    [crate::cases!(common::require_lab;
        topologies_carry_data_v4 => check_topologies(false),
        topologies_carry_data_v6 => check_topologies(true),
        restart_resets_v4 => {
            restart_resets(false, "direct", 9710);
            restart_resets(false, "routed", 9711);
        },
        restart_resets_v6 => {
            restart_resets(true, "direct", 9712);
            restart_resets(true, "routed", 9713);
        },
    )],
    restart_behind_nat_is_silent,
    [crate::cases!(common::require_lab;
        blackhole_silences_v4 => blackhole_silences(false, 9720),
        blackhole_silences_v6 => blackhole_silences(true, 9721),
        nat_forgets_idle_flow_v4 => nat_forgets_idle_flow(false, 9730),
        nat_forgets_idle_flow_v6 => nat_forgets_idle_flow(true, 9731),
        nat_expire_forgets_v4 => nat_expire_forgets(false, 9740),
        nat_expire_forgets_v6 => nat_expire_forgets(true, 9741),
    )],
    labs_are_removed_on_drop,
);
