//! Tests of the golden packets (`testkit`) both ways, emit and decode, and of the fuzz seeds
//! built from them.

use super::testkit::*;
use super::*;
use crate::seq::SeqNumber;

/// Emits into a buffer pre-filled with 0xa5 so that a byte left unwritten shows.
fn emit_poisoned(p: &Segment) -> Vec<u8> {
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
    let p = Segment {
        payload_len: 1,
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
