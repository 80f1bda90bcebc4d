//! Golden packets, written out field by field, tested both ways (emit and decode). Their
//! checksums were computed independently of this crate. They also seed the fuzz corpus.

use super::*;
use crate::seq::SeqNumber;

/// IPv4 probe 198.18.0.2:40000 -> 198.51.100.2:9000, seq 0x12345678, ack 0x9abcdef0,
/// ACK, window 502, timestamps 0x01020304/0x05060708, TTL 64, DF.
pub const PROBE4: [u8; 52] = [
    0x45, 0x00, 0x00, 0x34, // version 4, IHL 5, TOS 0, total length 52
    0x00, 0x00, 0x40, 0x00, // id 0, DF, offset 0
    0x40, 0x06, 0x4a, 0x7a, // TTL 64, TCP, header checksum
    198, 18, 0, 2, // source
    198, 51, 100, 2, // destination
    0x9c, 0x40, 0x23, 0x28, // ports 40000 -> 9000
    0x12, 0x34, 0x56, 0x78, // seq
    0x9a, 0xbc, 0xde, 0xf0, // ack
    0x80, 0x10, 0x01, 0xf6, // data offset 8 (32 bytes), ACK, window 502
    0xd2, 0xa6, 0x00, 0x00, // TCP checksum, urgent pointer
    0x01, 0x01, 0x08, 0x0a, // NOP, NOP, timestamp kind 8 length 10
    0x01, 0x02, 0x03, 0x04, // TSval
    0x05, 0x06, 0x07, 0x08, // TSecr
];

/// IPv6 probe [2001:db8:18::2]:40000 -> [2001:db8:51::2]:9000, same numbers, no timestamps.
pub const PROBE6: [u8; 60] = [
    0x60, 0x00, 0x00, 0x00, // version 6, traffic class 0, flow label 0
    0x00, 0x14, 0x06, 0x40, // payload 20, next header TCP, hop limit 64
    0x20, 0x01, 0x0d, 0xb8, 0x00, 0x18, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, // source
    0x20, 0x01, 0x0d, 0xb8, 0x00, 0x51, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, // destination
    0x9c, 0x40, 0x23, 0x28, // ports
    0x12, 0x34, 0x56, 0x78, // seq
    0x9a, 0xbc, 0xde, 0xf0, // ack
    0x50, 0x10, 0x01, 0xf6, // data offset 5, ACK, window 502
    0xb0, 0x3d, 0x00, 0x00, // TCP checksum, urgent pointer
];

/// The peer's answer to PROBE4: ACK with SEQ = RCV.NXT (0x9abcdef0), ACK = SND.NXT (0x12345679).
pub const ACK4: [u8; 52] = [
    0x45, 0x00, 0x00, 0x34, 0x00, 0x00, 0x40, 0x00, //
    0x3f, 0x06, 0x4b, 0x7a, // TTL 63, TCP, checksum
    198, 51, 100, 2, 198, 18, 0, 2, // peer -> local
    0x23, 0x28, 0x9c, 0x40, // ports 9000 -> 40000
    0x9a, 0xbc, 0xde, 0xf0, // seq
    0x12, 0x34, 0x56, 0x79, // ack
    0x80, 0x10, 0x01, 0xfd, // offset 8, ACK, window 509
    0xd2, 0x9e, 0x00, 0x00, //
    0x01, 0x01, 0x08, 0x0a, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08,
];

/// A restarted IPv6 peer's RST to PROBE6: SEQ = the probe's ACK field.
pub const RST6: [u8; 60] = [
    0x60, 0x00, 0x00, 0x00, 0x00, 0x14, 0x06, 0x3f, // payload 20, TCP, hop limit 63
    0x20, 0x01, 0x0d, 0xb8, 0x00, 0x51, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, // peer
    0x20, 0x01, 0x0d, 0xb8, 0x00, 0x18, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, // local
    0x23, 0x28, 0x9c, 0x40, // ports
    0x9a, 0xbc, 0xde, 0xf0, // seq = probe's ack
    0x00, 0x00, 0x00, 0x00, // ack
    0x50, 0x04, 0x00, 0x00, // offset 5, RST, window 0
    0x1a, 0xec, 0x00, 0x00, //
];

/// Router 198.18.0.1: ICMP host unreachable (3/1), quoting PROBE4's IP header and 8 bytes.
pub const ICMP4: [u8; 56] = [
    0x45, 0x00, 0x00, 0x38, 0x00, 0x00, 0x00, 0x00, // total 56, no DF
    0x40, 0x01, 0xee, 0x9d, // TTL 64, ICMP, checksum
    198, 18, 0, 1, 198, 18, 0, 2, // router -> local
    0x03, 0x01, 0xd4, 0xe9, // type 3 code 1, ICMP checksum
    0x00, 0x00, 0x00, 0x00, // unused
    0x45, 0x00, 0x00, 0x34, 0x00, 0x00, 0x40, 0x00, 0x40, 0x06, 0x4a,
    0x7a, // quoted IPv4 header
    198, 18, 0, 2, 198, 51, 100, 2, //
    0x9c, 0x40, 0x23, 0x28, 0x12, 0x34, 0x56, 0x78, // quoted ports and seq
];

/// Router 2001:db8:18::1: ICMPv6 administratively prohibited (1/1), quoting all of PROBE6.
pub fn icmp6() -> Vec<u8> {
    let mut v = vec![
        0x60, 0x00, 0x00, 0x00, 0x00, 0x44, 0x3a, 0x40, // payload 68, ICMPv6, hop limit 64
        0x20, 0x01, 0x0d, 0xb8, 0x00, 0x18, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, // router
        0x20, 0x01, 0x0d, 0xb8, 0x00, 0x18, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, // local
        0x01, 0x01, 0x3c, 0xa1, 0x00, 0x00, 0x00, 0x00, // type 1 code 1, checksum, unused
    ];
    v.extend_from_slice(&PROBE6);
    v
}

fn probe4() -> ProbeRepr {
    ProbeRepr {
        src: "198.18.0.2:40000".parse().unwrap(),
        dst: "198.51.100.2:9000".parse().unwrap(),
        seq: SeqNumber(0x1234_5678),
        ack: SeqNumber(0x9abc_def0),
        flags: ACK,
        window: 502,
        ts: Some(Timestamps {
            tsval: 0x0102_0304,
            tsecr: 0x0506_0708,
        }),
        payload: None,
        ip: IpMeta::default(),
    }
}

fn probe6() -> ProbeRepr {
    ProbeRepr {
        src: "[2001:db8:18::2]:40000".parse().unwrap(),
        dst: "[2001:db8:51::2]:9000".parse().unwrap(),
        ts: None,
        ..probe4()
    }
}

/// Emits into a buffer pre-filled with 0xa5 so that a byte left unwritten shows.
fn emit_poisoned(p: &ProbeRepr) -> Vec<u8> {
    let mut buf = vec![0xa5; p.buffer_len() + 8];
    p.emit(&mut buf);
    assert!(
        buf[p.buffer_len()..].iter().all(|&b| b == 0xa5),
        "wrote past buffer_len"
    );
    buf.truncate(p.buffer_len());
    buf
}

#[test]
fn emits_the_ipv4_probe_byte_for_byte() {
    assert_eq!(probe4().buffer_len(), PROBE4.len());
    assert_eq!(emit_poisoned(&probe4()), PROBE4);
}

#[test]
fn emits_the_ipv6_probe_byte_for_byte() {
    assert_eq!(emit_poisoned(&probe6()), PROBE6);
}

#[test]
fn garbage_octet_probe_carries_one_byte_and_valid_checksums() {
    let p = ProbeRepr {
        payload: Some(0),
        ..probe4()
    };
    let bytes = emit_poisoned(&p);
    assert_eq!(bytes.len(), PROBE4.len() + 1);
    let Ok(Packet::Tcp(s)) = decode(&bytes) else {
        panic!()
    };
    assert_eq!(s.payload_len, 1);
    let tcp = pnet_packet::tcp::TcpPacket::new(&bytes[20..]).unwrap();
    let sum = pnet_packet::tcp::ipv4_checksum(
        &tcp,
        &"198.18.0.2".parse().unwrap(),
        &"198.51.100.2".parse().unwrap(),
    );
    assert_eq!(sum, tcp.get_checksum());
}

#[test]
fn decodes_the_probes_back_to_their_fields() {
    for (bytes, repr) in [(&PROBE4[..], probe4()), (&PROBE6[..], probe6())] {
        let Ok(Packet::Tcp(s)) = decode(bytes) else {
            panic!()
        };
        assert_eq!((s.src, s.dst), (repr.src, repr.dst));
        assert_eq!(
            (s.seq, s.ack, s.flags, s.window),
            (repr.seq, repr.ack, repr.flags, repr.window)
        );
        assert_eq!(s.ts, repr.ts);
        assert_eq!(s.payload_len, 0);
        assert_eq!(s.ip.hop_limit, 64);
    }
}

#[test]
fn decodes_the_peers_ack() {
    let Ok(Packet::Tcp(s)) = decode(&ACK4) else {
        panic!()
    };
    assert_eq!(s.src, "198.51.100.2:9000".parse().unwrap());
    assert_eq!(s.seq, SeqNumber(0x9abc_def0));
    assert_eq!(s.ack, SeqNumber(0x1234_5679));
    assert!(s.has(ACK) && !s.has(RST));
    assert_eq!(s.window, 509);
    assert_eq!(s.ip.hop_limit, 63);
    assert!(s.ip.dont_fragment);
}

#[test]
fn decodes_the_rst() {
    let Ok(Packet::Tcp(s)) = decode(&RST6) else {
        panic!()
    };
    assert!(s.has(RST) && !s.has(ACK));
    assert_eq!(s.seq, SeqNumber(0x9abc_def0));
    assert_eq!(s.dst, "[2001:db8:18::2]:40000".parse().unwrap());
}

#[test]
fn decodes_icmp_errors_and_their_quotes() {
    let Ok(Packet::Icmp(e)) = decode(&ICMP4) else {
        panic!()
    };
    assert_eq!((e.icmp_type, e.code, e.name()), (3, 1, "host-unreachable"));
    assert_eq!(e.from.to_string(), "198.18.0.1");
    assert_eq!(e.quoted_src, "198.18.0.2:40000".parse().unwrap());
    assert_eq!(e.quoted_dst, "198.51.100.2:9000".parse().unwrap());
    assert_eq!(e.quoted_seq, SeqNumber(0x1234_5678));

    let Ok(Packet::Icmp(e)) = decode(&icmp6()) else {
        panic!()
    };
    assert_eq!((e.icmp_type, e.code, e.name()), (1, 1, "admin-prohibited"));
    assert_eq!(e.from.to_string(), "2001:db8:18::1");
    assert_eq!(e.quoted_dst, "[2001:db8:51::2]:9000".parse().unwrap());
    assert_eq!(e.quoted_seq, SeqNumber(0x1234_5678));
}

/// Every golden packet, for the tests that mangle them all.
fn all_fixtures() -> Vec<Vec<u8>> {
    vec![
        PROBE4.to_vec(),
        PROBE6.to_vec(),
        ACK4.to_vec(),
        RST6.to_vec(),
        ICMP4.to_vec(),
        icmp6(),
    ]
}

#[test]
fn every_truncation_is_an_error_never_a_panic() {
    for bytes in &all_fixtures() {
        for n in 0..bytes.len() {
            assert!(decode(&bytes[..n]).is_err(), "prefix of {n} bytes decoded");
        }
    }
}

#[test]
fn flipped_bytes_never_panic() {
    for bytes in &all_fixtures() {
        for i in 0..bytes.len() {
            for v in [0x00, 0x01, 0x0f, 0x10, 0x45, 0x7f, 0x80, 0xf0, 0xff] {
                let mut b = bytes.to_vec();
                b[i] = v;
                let _ = decode(&b);
            }
        }
    }
}

fn fix_ipv4_checksum(b: &mut [u8]) {
    b[10] = 0;
    b[11] = 0;
    let ihl = usize::from(b[0] & 0xf) * 4;
    let sum = pnet_packet::ipv4::checksum(&pnet_packet::ipv4::Ipv4Packet::new(&b[..ihl]).unwrap());
    b[10..12].copy_from_slice(&sum.to_be_bytes());
}

#[test]
fn ipv4_options_are_stepped_over() {
    let mut b = PROBE4[..20].to_vec();
    b[0] = 0x46; // IHL 6
    b.extend_from_slice(&[1, 1, 1, 0]); // NOP NOP NOP EOL
    b.extend_from_slice(&PROBE4[20..]);
    b[3] += 4;
    fix_ipv4_checksum(&mut b);
    let Ok(Packet::Tcp(s)) = decode(&b) else {
        panic!("{:?}", decode(&b))
    };
    assert_eq!(s.seq, SeqNumber(0x1234_5678));
}

#[test]
fn bad_headers_are_rejected() {
    let mut bad_sum = PROBE4;
    bad_sum[11] ^= 1;
    assert_eq!(decode(&bad_sum), Err(DecodeError::Checksum));

    let mut small_doff = PROBE4;
    small_doff[32] = 0x40; // data offset 4
    assert_eq!(decode(&small_doff), Err(DecodeError::Malformed));

    let mut big_doff = PROBE4;
    big_doff[32] = 0xf0; // data offset 15 > segment
    assert_eq!(decode(&big_doff), Err(DecodeError::Truncated));

    let mut bad_option = PROBE4;
    bad_option[43] = 9; // timestamp option with length 9
    assert_eq!(decode(&bad_option), Err(DecodeError::Malformed));

    let mut fragment = PROBE4;
    fragment[6] = 0x20; // more fragments
    fix_ipv4_checksum(&mut fragment);
    assert_eq!(decode(&fragment), Err(DecodeError::Fragment));

    let mut hop_by_hop = PROBE6;
    hop_by_hop[6] = 0; // an extension header: skipped, never classified
    assert_eq!(decode(&hop_by_hop), Err(DecodeError::Unrelated));

    let mut icmp_garbage = ICMP4;
    icmp_garbage[28] = 0x65; // quote says IPv6
    assert!(decode(&icmp_garbage).is_err());

    let mut echo = ICMP4;
    echo[20] = 8; // echo request: not an error
    assert!(decode(&echo).is_err());
}

// ------------------------------------------------------------------ fuzz seeds and regressions

/// The seed corpus of the fuzz targets (fuzz/seeds/TARGET/NAME), built from the fixtures above.
/// The engine_packets input is: a setup byte (bit 0 IPv6, bits 1-2 probes-1, bit 3
/// --garbage-octet, bits 4-5 source, bits 6-7 time), an intvl byte, then records; record
/// `0, LEN, BYTES` feeds one packet, `4, N` lets N x 10 ms pass, `5` lets the pending
/// challenge ACK out.
fn fuzz_seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let packet = |bytes: &[u8]| {
        let mut v = vec![0u8, bytes.len() as u8];
        v.extend_from_slice(bytes);
        v
    };
    let with = |setup: u8, records: &[Vec<u8>]| {
        let mut v = vec![setup, 4];
        for r in records {
            v.extend_from_slice(r);
        }
        v
    };
    let wrong_ack4 = {
        let mut b = ACK4;
        b[27] ^= 1; // ack one off (the fuzz harness repairs checksums)
        b
    };
    let wait = vec![4u8, 60];
    let mut seeds: Vec<(&str, &str, Vec<u8>)> = vec![
        ("packet_decode", "probe4", PROBE4.to_vec()),
        ("packet_decode", "probe6", PROBE6.to_vec()),
        ("packet_decode", "ack4", ACK4.to_vec()),
        ("packet_decode", "rst6", RST6.to_vec()),
        ("packet_decode", "icmp4", ICMP4.to_vec()),
        ("packet_decode", "icmp6", icmp6()),
        ("engine_packets", "alive4", with(0x04, &[packet(&ACK4)])),
        ("engine_packets", "reset6", with(0x05, &[packet(&RST6)])),
        ("engine_packets", "icmp4", with(0x02, &[packet(&ICMP4)])),
        ("engine_packets", "icmp6", with(0x03, &[packet(&icmp6())])),
        (
            "engine_packets",
            "dead4",
            with(0x04, &[wait.clone(), wait.clone(), wait.clone()]),
        ),
        (
            "engine_packets",
            "forged4",
            with(
                0x06,
                &[packet(&wrong_ack4), wait.clone(), vec![5], packet(&ACK4)],
            ),
        ),
        ("engine_packets", "peer4", with(0x30, &[packet(&ACK4)])),
        ("engine_packets", "sniff6", with(0x21, &[packet(&RST6)])),
    ];
    for (name, text) in [
        ("v4", "198.18.0.2:40000-198.51.100.2:9000"),
        ("v6", "[2001:db8::1]:40000-[2001:db8::2]:9000"),
        ("remote4", "198.51.100.2:9000"),
        ("remote6", "[2001:db8::2]:9000"),
        ("mapped", "[::ffff:198.18.0.2]:1-[::1]:65535"),
        ("addr4", "198.51.100.2"),
        ("addr6", "[2001:db8::2]"),
        ("port", "65535"),
    ] {
        seeds.push(("flow_parse", name, text.as_bytes().to_vec()));
    }
    seeds
}

fn fuzz_seed_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds")
}

/// `KAPROBE_WRITE_FUZZ_SEEDS=1 cargo test --lib fuzz_seeds` rewrites fuzz/seeds; otherwise
/// this checks that the committed seeds are the fixtures' current bytes.
#[test]
fn fuzz_seeds_match_the_fixtures() {
    let root = fuzz_seed_dir();
    let write = std::env::var("KAPROBE_WRITE_FUZZ_SEEDS").as_deref() == Ok("1");
    for (target, name, bytes) in fuzz_seeds() {
        let path = root.join(target).join(name);
        if write {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &bytes).unwrap();
        } else {
            let on_disk = std::fs::read(&path)
                .unwrap_or_else(|e| panic!("{}: {e} (write the seeds, see above)", path.display()));
            assert_eq!(on_disk, bytes, "{} is stale", path.display());
        }
    }
}

/// Recomputes the checksums `decode` verifies (IPv4 header, ICMP, ICMPv6), so that a mutated
/// packet is judged on its contents, as a forger's would be.
fn repair_checksums(b: &mut [u8]) {
    use pnet_packet::{icmp, icmpv6};
    if b[0] >> 4 == 4 {
        let ihl = usize::from(b[0] & 0xf) * 4;
        if ihl < 20 || b.len() < ihl + 8 {
            return;
        }
        if b[9] == 1 {
            b[ihl + 2..ihl + 4].fill(0);
            let sum = icmp::checksum(&icmp::IcmpPacket::new(&b[ihl..]).unwrap());
            b[ihl + 2..ihl + 4].copy_from_slice(&sum.to_be_bytes());
        }
        fix_ipv4_checksum(b);
    } else if b.len() >= 48 && b[6] == 58 {
        let (src, dst) = (ipv6_at(b, 8), ipv6_at(b, 24));
        b[42..44].fill(0);
        let sum = icmpv6::checksum(&icmpv6::Icmpv6Packet::new(&b[40..]).unwrap(), &src, &dst);
        b[42..44].copy_from_slice(&sum.to_be_bytes());
    }
}

fn ipv6_at(b: &[u8], at: usize) -> std::net::Ipv6Addr {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[at..at + 16]);
    a.into()
}

/// An engine that has learned the fixtures' numbers (SND.NXT 0x12345679, RCV.NXT 0x9abcdef0)
/// and sent its first probe, on PROBE4's or PROBE6's connection.
fn engine_after_first_probe(v6: bool) -> crate::engine::Engine {
    use crate::engine::*;
    use std::time::Duration;
    let p = if v6 { probe6() } else { probe4() };
    let flow = crate::flow::Flow {
        local: p.src,
        remote: p.dst,
    };
    let cfg = Config {
        flow,
        route: Default::default(),
        timing: Timing {
            time: Duration::ZERO,
            intvl: Duration::from_secs(1),
            probes: 3,
        },
        source: SeqSource::Local,
        garbage_octet: false,
    };
    let now = Duration::from_secs(1);
    let mut e = Engine::new(cfg, now, 1);
    let tcp = |src, dst, seq, ack, flags| {
        Packet::Tcp(Segment {
            src,
            dst,
            seq,
            ack,
            flags,
            window: 502,
            ts: None,
            payload_len: 0,
            ip: IpMeta::default(),
        })
    };
    let mut sent = false;
    for _ in 0..20 {
        match e.poll(now) {
            Some(Action::QueryConnection) => e.on_connection(
                now,
                Some(ConnView {
                    idle: Duration::from_secs(60),
                    busy: false,
                    since_ack: Duration::ZERO,
                    rto: Duration::ZERO,
                    progress: (1, 1),
                }),
            ),
            Some(Action::InjectSyn(syn)) => {
                e.on_packet(now, &tcp(syn.src, syn.dst, syn.seq, SeqNumber(0), SYN));
                let rcv = SeqNumber(0x9abc_def0);
                e.on_packet(now, &tcp(p.src, p.dst, SeqNumber(0x1234_5679), rcv, ACK));
            }
            Some(Action::Send { probe, .. }) => {
                assert_eq!((probe.seq, probe.ack), (p.seq, p.ack), "PROBE's numbers");
                sent = true;
            }
            Some(_) => {}
            None => break,
        }
    }
    assert!(sent, "no first probe");
    e
}

/// Hostile input never decides a verdict: every one-byte change to the genuine answers, with
/// checksums made right again, either fails to decode, or leaves the engine undecided unless
/// the changed packet still carries exactly what a genuine answer carries.
#[test]
fn mutated_answers_decide_nothing_unless_still_genuine() {
    use crate::engine::{Action, Outcome};
    use std::time::Duration;
    let (snd, rcv) = (SeqNumber(0x1234_5679), SeqNumber(0x9abc_def0));
    let mut decided = [0usize; 2];
    for (v6, genuine) in [
        (false, ACK4.to_vec()),
        (true, RST6.to_vec()),
        (false, ICMP4.to_vec()),
        (true, icmp6()),
    ] {
        let local = if v6 { probe6().src } else { probe4().src };
        let remote = if v6 { probe6().dst } else { probe4().dst };
        for i in 0..genuine.len() {
            for v in [
                0x00, 0x01, 0x02, 0x10, 0x14, 0x45, 0x60, 0x7f, 0x80, 0xfe, 0xff,
            ] {
                let mut b = genuine.clone();
                b[i] = v;
                repair_checksums(&mut b);
                let Ok(packet) = decode(&b) else { continue };
                let still_genuine = match &packet {
                    Packet::Tcp(s) => {
                        let tuple = s.src == remote && s.dst == local && !s.has(SYN);
                        let ack = s.has(ACK) && !s.has(RST) && s.seq == rcv && s.ack == snd;
                        let rst = s.has(RST) && s.seq == rcv;
                        tuple && (ack || rst)
                    }
                    Packet::Icmp(e) => {
                        e.to == local.ip()
                            && e.quoted_src == local
                            && e.quoted_dst == remote
                            && e.quoted_seq == snd - 1
                    }
                };
                let mut e = engine_after_first_probe(v6);
                let at = Duration::from_millis(1001);
                e.on_packet(at, &packet);
                let mut verdict = None;
                while let Some(a) = e.poll(at) {
                    if let Action::Finish(Outcome::Verdict(v)) = a {
                        verdict = Some(v.kind);
                    }
                }
                assert!(
                    verdict.is_none() || still_genuine,
                    "byte {i} = {v:#04x} of a genuine answer decided {verdict:?}: {packet:?}"
                );
                decided[usize::from(verdict.is_some())] += 1;
            }
        }
    }
    // Both kinds occur: the mutations reach the engine, and the genuine ones still count.
    eprintln!(
        "undecided {}, decided (still genuine) {}",
        decided[0], decided[1]
    );
    assert!(decided[0] > 100 && decided[1] > 10, "{decided:?}");
}
