//! Outside checks (README "Checked against other stacks and tools"): a peer that is not
//! Linux (smoltcp behind a TAP device, `examples/smolpeer.rs`), and Wireshark's TCP
//! dissector reading kaprobe's packets next to the kernel's own keepalive. Needs root,
//! `ip`, `nft` and Wireshark's `tshark`/`dumpcap` (Debian package tshark); skipped otherwise
//! (a failure instead when KAPROBE_REQUIRE_NETNS=1).

mod common;

use common::{
    Capture, Lab, LineReader, ScratchDir, assert_still_carries_data, assert_verdict_fields,
    describe, run_kaprobe, tshark_fields, verdict_json,
};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn ready() -> bool {
    common::require_lab()
        && common::require_tool("tshark", "tshark")
        && common::require_tool("dumpcap", "tshark")
}

fn now_epoch() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

/// kaprobe's `-v --json` events of one kind.
fn events<'a>(stdout: &'a str, kind: &'a str) -> impl Iterator<Item = serde_json::Value> + 'a {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l.trim()).ok())
        .filter(move |v| v["event"] == kind)
}

fn u32_of(v: &serde_json::Value, key: &str) -> u32 {
    v[key]
        .as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or_else(|| panic!("{key} is not a sequence number: {v}"))
}

// ------------------------------------------------------------------ capture reading

/// Wireshark's TCP analysis labels we look at (`tcp.analysis.NAME`).
const LABELS: &[&str] = &[
    "keep_alive",
    "keep_alive_ack",
    "duplicate_ack",
    "retransmission",
    "fast_retransmission",
    "spurious_retransmission",
    "out_of_order",
    "lost_segment",
    "ack_lost_segment",
    "window_update",
    "window_full",
    "zero_window",
    "zero_window_probe",
    "zero_window_probe_ack",
    "reused_ports",
];

const BASE_FIELDS: &[&str] = &[
    "frame.number",
    "frame.time_epoch",
    "tcp.srcport",
    "tcp.flags.syn",
    "tcp.flags.ack",
    "tcp.flags.reset",
    "tcp.flags.fin",
    "tcp.seq_raw",
    "tcp.ack_raw",
    "tcp.len",
    "tcp.stream",
    "sll.hatype",
];

#[derive(Debug, Clone)]
struct Seg {
    frame: u64,
    time: f64,
    sport: u16,
    syn: bool,
    ack_flag: bool,
    rst: bool,
    fin: bool,
    seq: u32,
    ack: u32,
    len: u32,
    stream: u64,
    /// ARPHRD type of the capturing interface (`-i any` captures only): 772 is loopback.
    hatype: Option<u32>,
    labels: Vec<&'static str>,
}

fn flag(s: &str) -> bool {
    matches!(s, "1" | "True" | "true")
}

fn num<T: std::str::FromStr>(s: &str, what: &str) -> T {
    s.parse()
        .unwrap_or_else(|_| panic!("tshark field {what} is not a number: {s:?}"))
}

/// Every TCP segment on `port` (either side) in the capture, with its labels.
fn segments(file: &std::path::Path, port: u16) -> Vec<Seg> {
    let label_fields: Vec<String> = LABELS.iter().map(|l| format!("tcp.analysis.{l}")).collect();
    let mut fields: Vec<&str> = BASE_FIELDS.to_vec();
    fields.extend(label_fields.iter().map(String::as_str));
    let rows = tshark_fields(file, &format!("tcp.port == {port}"), &fields);
    rows.into_iter()
        .map(|r| {
            assert_eq!(r.len(), fields.len(), "tshark row: {r:?}");
            let labels = LABELS
                .iter()
                .zip(&r[BASE_FIELDS.len()..])
                .filter(|(_, v)| !v.is_empty())
                .map(|(l, _)| *l)
                .collect();
            Seg {
                frame: num(&r[0], "frame.number"),
                time: num(&r[1], "frame.time_epoch"),
                sport: num(&r[2], "tcp.srcport"),
                syn: flag(&r[3]),
                ack_flag: flag(&r[4]),
                rst: flag(&r[5]),
                fin: flag(&r[6]),
                seq: num(&r[7], "tcp.seq_raw"),
                ack: num(&r[8], "tcp.ack_raw"),
                len: num(&r[9], "tcp.len"),
                stream: num(&r[10], "tcp.stream"),
                hatype: r[11].parse().ok(),
                labels,
            }
        })
        .collect()
}

/// What a segment on an idle connection is, given the client's SND.NXT and RCV.NXT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Client -> peer, seq = SND.NXT-1: a keepalive probe (kaprobe's or the kernel's).
    Probe,
    /// Client -> peer, seq = SND.NXT: a pure ACK (kaprobe's local challenge ACK).
    Ack,
    /// Peer -> client, ack = SND.NXT: the answer to a probe.
    Answer,
    /// Peer -> client SYN: kaprobe's injected SYN (seen on loopback only).
    InjectedSyn,
    Other,
}

fn classify(s: &Seg, client_port: u16, snd_nxt: u32, rcv_nxt: u32) -> Kind {
    let from_client = s.sport == client_port;
    if s.syn {
        return if !from_client && !s.ack_flag {
            Kind::InjectedSyn
        } else {
            Kind::Other
        };
    }
    if s.rst || s.fin || s.len != 0 || !s.ack_flag {
        return Kind::Other;
    }
    match (from_client, s.seq, s.ack) {
        (true, q, a) if q == snd_nxt.wrapping_sub(1) && a == rcv_nxt => Kind::Probe,
        (true, q, a) if q == snd_nxt && a == rcv_nxt => Kind::Ack,
        (false, q, a) if q == rcv_nxt && a == snd_nxt => Kind::Answer,
        _ => Kind::Other,
    }
}

/// The client's (SND.NXT, RCV.NXT) from the last segment each side sent before `t0`.
fn numbers_before(segs: &[Seg], client_port: u16, t0: f64) -> (u32, u32) {
    let next = |from_client: bool| {
        let s = segs
            .iter()
            .rfind(|s| s.time < t0 && (s.sport == client_port) == from_client)
            .unwrap_or_else(|| panic!("no segment before the probes (client {from_client})"));
        s.seq
            .wrapping_add(s.len)
            .wrapping_add(u32::from(s.syn) + u32::from(s.fin))
    };
    (next(true), next(false))
}

fn of_kind(segs: &[Seg], kinds: &[Kind], kind: Kind) -> Vec<Seg> {
    segs.iter()
        .zip(kinds)
        .filter(|(_, k)| **k == kind)
        .map(|(s, _)| s.clone())
        .collect()
}

fn label_sets(segs: &[Seg]) -> Vec<Vec<&'static str>> {
    segs.iter().map(|s| s.labels.clone()).collect()
}

// ------------------------------------------------------------------ 1. smoltcp as the peer

const SMOL_MAC: &str = "02:6b:70:00:00:02";

/// The smoltcp peer process in B. Dropping it kills it.
struct SmolPeer {
    bin: std::path::PathBuf,
    ns: String,
    port: u16,
    child: Option<(Child, ChildStdin)>,
}

impl SmolPeer {
    fn start(lab: &Lab, port: u16) -> SmolPeer {
        let mut p = SmolPeer {
            bin: common::example_bin("smolpeer"),
            ns: lab.ns('b'),
            port,
            child: None,
        };
        p.spawn();
        p
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "smolpeer already running");
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .arg(&self.bin)
            .args([
                "tap0",
                SMOL_MAC,
                &self.port.to_string(),
                // B's addresses in the lab's plan, and one more in each of A's prefixes: smoltcp
                // has no on-link routes to other prefixes, as the direct lab's kernels do.
                "198.51.100.2/24",
                "198.18.0.254/24",
                "2001:db8:51::2/64",
                "2001:db8:18::fe/64",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("cannot start smolpeer");
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        self.child = Some((child, stdin));
        let mut lines = LineReader::new(stdout);
        assert!(
            lines.wait_for("ready", Duration::from_secs(10)),
            "smolpeer did not get ready: {:?}",
            lines.seen
        );
    }

    /// A crash: SIGKILL, so no FIN or RST leaves; the TAP loses its carrier.
    fn crash(&mut self) {
        if let Some((mut child, stdin)) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            drop(stdin);
        }
    }
}

impl Drop for SmolPeer {
    fn drop(&mut self) {
        self.crash();
    }
}

fn smoltcp_peer(v6: bool, server_port: u16, client_port: u16) {
    let lab = Lab::up("direct", None);
    common::bridge_to_tap(&lab);
    let mut peer = SmolPeer::start(&lab, server_port);
    let dir = ScratchDir::new("smol");
    let mut cap = Capture::start(&lab.ns('a'), "eth0", &[], dir.join("a-eth0.pcapng"));

    let local = SocketAddr::new(lab.a_addr(v6), client_port);
    let remote = SocketAddr::new(lab.b_addr(v6), server_port);
    let flow = common::flow(local, remote);
    let mut client: TcpStream = common::in_netns(&lab.ns('a'), move || {
        common::connect_from(local, remote)
            .unwrap_or_else(|e| panic!("connect {local} -> {remote}: {e}"))
    });
    client.set_read_timeout(Some(common::NET_TIMEOUT)).unwrap();
    let hello = b"hello smoltcp\n";
    client.write_all(hello).expect("write to smolpeer");
    let mut echo = [0u8; 14];
    client.read_exact(&mut echo).expect("echo from smolpeer");
    assert_eq!(&echo, hello, "smolpeer echoed other bytes");
    // Let smoltcp's delayed ACK (10 ms) and ours go out: the connection is idle from here.
    std::thread::sleep(Duration::from_millis(100));

    // 1. Default probe: one probe, one answer.
    let t0 = now_epoch();
    let (code, out, err, _) = run_kaprobe(&lab, &["-v", "probe", &flow]);
    assert_eq!(code, 0, "alive must exit 0\n{}", describe(code, &out, &err));
    let v = verdict_json(&out);
    assert_verdict_fields(&v, local, remote, "alive");
    assert_eq!(v["probes_sent"], 1, "{v}");
    assert!(v["rtt_us"].is_number(), "{v}");
    let learned = events(&out, "learned")
        .next()
        .unwrap_or_else(|| panic!("no learned event\n{out}"));
    let (snd_nxt, rcv_nxt) = (u32_of(&learned, "snd_nxt"), u32_of(&learned, "rcv_nxt"));
    let rtt1 = v["rtt_us"].clone();

    // 2. At once again, 500 ms apart: smoltcp answers an out-of-window segment at most once a
    //    second, so the first probe(s) of this run fall inside its limit and go unanswered.
    let (code, out, err, _) = run_kaprobe(
        &lab,
        &["-v", "probe", "--intvl", "500ms", "--probes", "3", &flow],
    );
    assert_eq!(code, 0, "alive must exit 0\n{}", describe(code, &out, &err));
    let v2 = verdict_json(&out);
    assert_verdict_fields(&v2, local, remote, "alive");
    let probes_before_restart = 1 + v2["probes_sent"].as_u64().unwrap_or(0);

    // 3. The peer crashes and comes back with the same addresses and an empty socket table.
    peer.crash();
    peer.spawn();
    let restarted_at = now_epoch();
    let (code, out, err, _) = run_kaprobe(&lab, &["-v", "probe", &flow]);
    assert_eq!(code, 3, "reset must exit 3\n{}", describe(code, &out, &err));
    let v3 = verdict_json(&out);
    assert_verdict_fields(&v3, local, remote, "reset");
    // The RST reset the local socket too (README "Side effects").
    let mut buf = [0u8; 1];
    match client.read(&mut buf) {
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("the client socket was not reset by the RST: {other:?}"),
    }
    cap.stop();

    // What was on the wire: the probes, smoltcp's answers and their spacing.
    let segs = segments(&cap.file, client_port);
    assert_eq!(
        numbers_before(&segs, client_port, t0),
        (snd_nxt, rcv_nxt),
        "kaprobe learned other numbers than the capture shows: {segs:#?}"
    );
    let before: Vec<Seg> = segs
        .iter()
        .filter(|s| s.time >= t0 && s.time < restarted_at)
        .cloned()
        .collect();
    let before_kinds: Vec<Kind> = before
        .iter()
        .map(|s| classify(s, client_port, snd_nxt, rcv_nxt))
        .collect();
    assert!(
        !before_kinds.contains(&Kind::Other) && !before_kinds.contains(&Kind::InjectedSyn),
        "only challenge ACKs, probes and answers while smoltcp is up: {before:#?}"
    );
    let probes = of_kind(&before, &before_kinds, Kind::Probe);
    let answers = of_kind(&before, &before_kinds, Kind::Answer);
    assert_eq!(
        probes.len() as u64,
        probes_before_restart,
        "probes on the wire vs probes_sent: {segs:#?}"
    );
    assert!(
        answers.len() >= 2,
        "smoltcp answered {} of {} probes: {segs:#?}",
        answers.len(),
        probes.len()
    );
    let spacing: Vec<f64> = answers.windows(2).map(|w| w[1].time - w[0].time).collect();
    for gap in &spacing {
        assert!(
            *gap >= 0.95,
            "smoltcp answered twice within {gap:.3} s (its limit is one per second): {answers:#?}"
        );
    }
    let resets: Vec<&Seg> = segs
        .iter()
        .filter(|s| s.rst && s.sport == server_port && s.time >= restarted_at)
        .collect();
    // The first segment the restarted peer sees (usually the local challenge ACK) makes it
    // resolve the client's address; the RST it owes that segment is dropped meanwhile.
    assert!(
        !resets.is_empty(),
        "no RST from the restarted peer: {segs:#?}"
    );
    for r in &resets {
        assert_eq!(
            r.seq, rcv_nxt,
            "an RST's sequence number is the ACK field of the segment it answers \
             (RFC 9293 3.10.7.1): {r:?}"
        );
    }
    eprintln!(
        "smoltcp {}: rtt {} us; run 2: {} probes sent; answers to probes {:?} s apart; \
         probe labels {:?}; answer labels {:?}; after restart {} probe(s), {} RST(s)",
        if v6 { "IPv6" } else { "IPv4" },
        rtt1,
        v2["probes_sent"],
        spacing,
        label_sets(&probes),
        label_sets(&answers),
        v3["probes_sent"],
        resets.len(),
    );
}

// ------------------------------------------------------------------ 2. Wireshark's dissector

/// Sets SO_KEEPALIVE with TCP_KEEPIDLE = TCP_KEEPINTVL = 1 s.
fn kernel_keepalive(s: &TcpStream) {
    let ka = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(1))
        .with_interval(Duration::from_secs(1));
    socket2::SockRef::from(s)
        .set_tcp_keepalive(&ka)
        .expect("set the twin's keepalive");
}

/// `local`: with `--seq-source local` (an injected SYN and the socket's challenge ACK per
/// run), else with the default `kernel` source (nothing but the probe).
fn wireshark_labels(
    v6: bool,
    local_source: bool,
    server_port: u16,
    probed_port: u16,
    twin_port: u16,
) {
    let lab = Lab::up("direct", None);
    let a = lab.ns('a');
    let dir = ScratchDir::new("ws");
    // Started before the connections: Wireshark's keep-alive test needs every earlier segment.
    let mut eth = Capture::start(&a, "eth0", &[], dir.join("eth0.pcapng"));
    let mut any = Capture::start(&a, "any", &[], dir.join("any.pcapng"));
    // The same with loopback left out (README): SLL2 records the interface index, lo is 1.
    let mut any_no_lo = Capture::start(
        &a,
        "any",
        &["-y", "LINUX_SLL2", "-f", "not ifindex 1"],
        dir.join("any-no-lo.pcapng"),
    );

    let (c1, s1) = lab.connect(v6, server_port, probed_port);
    let (c2, s2) = lab.connect(v6, server_port, twin_port);
    kernel_keepalive(&c2);
    assert_still_carries_data(&c1, &s1);
    assert_still_carries_data(&c2, &s2);
    std::thread::sleep(Duration::from_millis(100));
    let t0 = now_epoch();

    let local = SocketAddr::new(lab.a_addr(v6), probed_port);
    let remote = SocketAddr::new(lab.b_addr(v6), server_port);
    let flow = common::flow(local, remote);
    let mut probes_sent = 0usize;
    let mut learned = Vec::new();
    for _ in 0..3 {
        let mut args = vec!["-v", "probe", &flow];
        if local_source {
            args.extend(["--seq-source", "local"]);
        }
        let (code, out, err, _) = run_kaprobe(&lab, &args);
        assert_eq!(code, 0, "alive must exit 0\n{}", describe(code, &out, &err));
        let v = verdict_json(&out);
        assert_verdict_fields(&v, local, remote, "alive");
        assert_eq!(
            v["source"],
            if local_source { "local" } else { "kernel" },
            "{v}"
        );
        probes_sent += events(&out, "probe").count();
        for l in events(&out, "learned") {
            learned.push((u32_of(&l, "snd_nxt"), u32_of(&l, "rcv_nxt")));
        }
        // Linux answers one out-of-window segment per socket per 500 ms.
        std::thread::sleep(Duration::from_millis(600));
    }
    // Room for the twin's kernel to send its keepalives (1 s idle, then every second).
    let settle = t0 + 3.3 - now_epoch();
    if settle > 0.0 {
        std::thread::sleep(Duration::from_secs_f64(settle));
    }
    Capture::stop_all(&mut [&mut eth, &mut any, &mut any_no_lo]);

    // ---- on the interface: kaprobe's packets are labelled like the kernel's keepalive
    let probed = segments(&eth.file, probed_port);
    let (snd, rcv) = numbers_before(&probed, probed_port, t0);
    assert!(
        learned.iter().all(|l| *l == (snd, rcv)),
        "kaprobe learned {learned:?}, the capture says ({snd}, {rcv})"
    );
    let after: Vec<Seg> = probed.into_iter().filter(|s| s.time >= t0).collect();
    let kinds: Vec<Kind> = after
        .iter()
        .map(|s| classify(s, probed_port, snd, rcv))
        .collect();
    assert!(
        !kinds.contains(&Kind::Other) && !kinds.contains(&Kind::InjectedSyn),
        "only challenge ACKs, probes and answers on the probed connection: {after:#?}"
    );
    let k_probes = of_kind(&after, &kinds, Kind::Probe);
    let k_answers = of_kind(&after, &kinds, Kind::Answer);
    let k_acks = of_kind(&after, &kinds, Kind::Ack);
    assert_eq!(k_probes.len(), probes_sent, "{after:#?}");
    assert_eq!(k_answers.len(), 3, "{after:#?}");
    let acks_per_run = usize::from(local_source);
    assert_eq!(
        k_acks.len(),
        3 * acks_per_run,
        "one challenge ACK per run with the local source, none with the kernel's: {after:#?}"
    );

    let twin = segments(&eth.file, twin_port);
    let (tsnd, trcv) = numbers_before(&twin, twin_port, t0);
    let tafter: Vec<Seg> = twin.into_iter().filter(|s| s.time >= t0).collect();
    let tkinds: Vec<Kind> = tafter
        .iter()
        .map(|s| classify(s, twin_port, tsnd, trcv))
        .collect();
    assert!(
        tkinds
            .iter()
            .all(|k| matches!(k, Kind::Probe | Kind::Answer)),
        "only keepalives and their answers on the twin: {tafter:#?}"
    );
    let t_probes = of_kind(&tafter, &tkinds, Kind::Probe);
    let t_answers = of_kind(&tafter, &tkinds, Kind::Answer);
    assert!(
        t_probes.len() >= 2,
        "the kernel sent {} keepalives in 3.3 s",
        t_probes.len()
    );
    assert!(t_answers.len() + 1 >= t_probes.len(), "{tafter:#?}");

    // Exactly the kernel's labels, probe by probe and answer by answer.
    let one = |l: &'static str| vec![l];
    for (what, segs, want) in [
        ("kernel keepalive", &t_probes, one("keep_alive")),
        ("answer to the kernel's", &t_answers, one("keep_alive_ack")),
        ("kaprobe probe", &k_probes, one("keep_alive")),
        ("answer to kaprobe's", &k_answers, one("keep_alive_ack")),
        ("local challenge ACK", &k_acks, one("duplicate_ack")),
    ] {
        for s in segs.iter() {
            assert_eq!(s.labels, want, "{what} in frame {}: {s:?}", s.frame);
        }
    }

    if !local_source {
        // ---- `-i any`: nothing on loopback, and labelled as on the interface
        let any_after: Vec<Seg> = segments(&any.file, probed_port)
            .into_iter()
            .filter(|s| s.time >= t0)
            .collect();
        let any_kinds: Vec<Kind> = any_after
            .iter()
            .map(|s| classify(s, probed_port, snd, rcv))
            .collect();
        assert!(
            any_kinds
                .iter()
                .all(|k| matches!(k, Kind::Probe | Kind::Answer)),
            "-i any: only probes and answers: {any_after:#?}"
        );
        assert_eq!(
            label_sets(&of_kind(&any_after, &any_kinds, Kind::Probe)),
            label_sets(&k_probes),
            "{any_after:#?}"
        );
        assert_eq!(
            label_sets(&of_kind(&any_after, &any_kinds, Kind::Answer)),
            label_sets(&k_answers),
            "{any_after:#?}"
        );
        drop(any_no_lo);
        // No harm: both connections still carry data after the probes.
        assert_still_carries_data(&c1, &s1);
        assert_still_carries_data(&c2, &s2);
        return;
    }

    // ---- `-i any`: the injected SYN shows up on loopback
    let any_probed = segments(&any.file, probed_port);
    let any_after: Vec<Seg> = any_probed
        .iter()
        .filter(|s| s.time >= t0)
        .cloned()
        .collect();
    let any_kinds: Vec<Kind> = any_after
        .iter()
        .map(|s| classify(s, probed_port, snd, rcv))
        .collect();
    let syns = of_kind(&any_after, &any_kinds, Kind::InjectedSyn);
    assert_eq!(syns.len(), 3, "one injected SYN per run: {any_after:#?}");
    for s in &syns {
        assert_eq!(s.hatype, Some(772), "the SYN is seen on loopback: {s:?}");
        assert!(
            s.labels.contains(&"reused_ports"),
            "Wireshark calls the injected SYN a port reuse: {s:?}"
        );
    }
    let first_stream = any_probed
        .iter()
        .find(|s| s.time < t0)
        .map(|s| s.stream)
        .unwrap_or_else(|| panic!("the connection's start is missing in the any capture"));
    let streams: std::collections::BTreeSet<u64> = syns.iter().map(|s| s.stream).collect();
    assert_eq!(
        streams.len(),
        3,
        "each injected SYN opens a new Wireshark conversation: {syns:#?}"
    );
    let a_probes = of_kind(&any_after, &any_kinds, Kind::Probe);
    let a_answers = of_kind(&any_after, &any_kinds, Kind::Answer);
    let a_acks = of_kind(&any_after, &any_kinds, Kind::Ack);
    assert_eq!(a_probes.len(), probes_sent, "{any_after:#?}");
    // After the SYN Wireshark follows a new conversation: the probe still looks like a
    // keep-alive, but the challenge ACK and the answer lose their labels.
    for p in &a_probes {
        assert_eq!(p.labels, vec!["keep_alive"], "-i any probe: {p:?}");
    }
    for s in a_answers.iter().chain(&a_acks) {
        assert!(
            !s.labels.contains(&"keep_alive_ack") && !s.labels.contains(&"duplicate_ack"),
            "-i any: expected Wireshark to lose track after the injected SYN: {s:?}"
        );
    }

    // ---- `-i any` without loopback: labelled as on the interface
    let nolo: Vec<Seg> = segments(&any_no_lo.file, probed_port)
        .into_iter()
        .filter(|s| s.time >= t0)
        .collect();
    let nolo_kinds: Vec<Kind> = nolo
        .iter()
        .map(|s| classify(s, probed_port, snd, rcv))
        .collect();
    assert!(!nolo_kinds.contains(&Kind::InjectedSyn), "{nolo:#?}");
    assert_eq!(
        label_sets(&of_kind(&nolo, &nolo_kinds, Kind::Probe)),
        label_sets(&k_probes),
        "{nolo:#?}"
    );
    assert_eq!(
        label_sets(&of_kind(&nolo, &nolo_kinds, Kind::Answer)),
        label_sets(&k_answers),
        "{nolo:#?}"
    );
    assert_eq!(
        label_sets(&of_kind(&nolo, &nolo_kinds, Kind::Ack)),
        label_sets(&k_acks),
        "{nolo:#?}"
    );

    eprintln!(
        "wireshark {}: eth0: kaprobe probes {:?}, answers {:?}, challenge ACKs {:?}; \
         kernel keepalives {:?}, answers {:?}; -i any: SYN streams {:?} (connection's first \
         stream {}), SYN labels {:?}, challenge ACKs {:?}, probes {:?}, answers {:?}",
        if v6 { "IPv6" } else { "IPv4" },
        label_sets(&k_probes),
        label_sets(&k_answers),
        label_sets(&k_acks),
        label_sets(&t_probes),
        label_sets(&t_answers),
        streams,
        first_stream,
        label_sets(&syns),
        label_sets(&a_acks),
        label_sets(&a_probes),
        label_sets(&a_answers),
    );
    // No harm: both connections still carry data after the probes and injected SYNs.
    assert_still_carries_data(&c1, &s1);
    assert_still_carries_data(&c2, &s2);
}

fn main() {
    common::run_tests(crate::cases!(ready;
        smoltcp_peer_alive_then_reset_v4 => smoltcp_peer(false, 9701, 41701),
        smoltcp_peer_alive_then_reset_v6 => smoltcp_peer(true, 9702, 41702),
        wireshark_labels_probes_like_kernel_keepalive_v4 =>
            wireshark_labels(false, false, 9711, 41711, 41712),
        wireshark_labels_local_source_v4 =>
            wireshark_labels(false, true, 9713, 41715, 41716),
        wireshark_labels_probes_like_kernel_keepalive_v6 =>
            wireshark_labels(true, false, 9712, 41713, 41714),
        wireshark_labels_local_source_v6 =>
            wireshark_labels(true, true, 9714, 41717, 41718),
    ))
}
