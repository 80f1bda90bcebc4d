//! Golden packets, written out field by field; their checksums were computed independently
//! of this crate. The wire tests check them both ways (emit and decode), and they seed the
//! fuzz corpus. With them, `repair_checksums`, which makes a mutated packet's checksums right
//! again, as a forger's would be.
//!
//! Built for tests, and for the fuzz crate through the `testkit` feature.

use pnet_packet::icmp::{self, IcmpPacket};
use pnet_packet::icmpv6::{self, Icmpv6Packet};
use pnet_packet::ipv4::{self, Ipv4Packet};

use super::decode::{be16, ipv6_addr};
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

/// PROBE4 as the typed packet `emit` writes.
pub fn probe4() -> Segment {
    Segment {
        src: "198.18.0.2:40000".parse().expect("literal"),
        dst: "198.51.100.2:9000".parse().expect("literal"),
        seq: SeqNumber(0x1234_5678),
        ack: SeqNumber(0x9abc_def0),
        flags: ACK,
        window: 502,
        ts: Some(Timestamps {
            tsval: 0x0102_0304,
            tsecr: 0x0506_0708,
        }),
        payload_len: 0,
        ip: IpMeta::default(),
    }
}

/// PROBE6 as the typed packet `emit` writes.
pub fn probe6() -> Segment {
    Segment {
        src: "[2001:db8:18::2]:40000".parse().expect("literal"),
        dst: "[2001:db8:51::2]:9000".parse().expect("literal"),
        ts: None,
        ..probe4()
    }
}

/// Every golden packet, for the tests that mangle them all.
pub fn all_fixtures() -> Vec<Vec<u8>> {
    vec![
        PROBE4.to_vec(),
        PROBE6.to_vec(),
        ACK4.to_vec(),
        RST6.to_vec(),
        ICMP4.to_vec(),
        icmp6(),
    ]
}

/// A copy of `data` with `repair_checksums` applied.
pub fn repaired(data: &[u8]) -> Vec<u8> {
    let mut b = data.to_vec();
    repair_checksums(&mut b);
    b
}

/// Recomputes the checksums `decode` verifies (IPv4 header, ICMP, ICMPv6) where the headers
/// are long enough to hold them, so that a mutated packet is judged on its contents. A forger
/// sends valid checksums: checking them is no defence, only a wall that random mutations
/// rarely get over. Never panics, whatever the bytes.
pub fn repair_checksums(b: &mut [u8]) {
    match b.first().map(|v| v >> 4) {
        Some(4) => {
            repair_icmp4(b);
            fix_ipv4_checksum(b);
        }
        Some(6) => repair_icmp6(b),
        _ => {}
    }
}

// pnet's sums skip the checksum field itself (that is how `decode` compares them with it),
// so the old value need not be cleared first.

/// Recomputes the IPv4 header checksum, if the whole header is there.
pub fn fix_ipv4_checksum(b: &mut [u8]) {
    let Some(ihl) = ipv4_header_len(b) else {
        return;
    };
    if let Some(p) = Ipv4Packet::new(&b[..ihl]) {
        let sum = ipv4::checksum(&p);
        put16(b, IPV4_CHECKSUM_OFFSET, sum);
    }
}

/// Writes `v` big-endian at `at`; the caller has checked the length.
fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

/// The IPv4 header length the IHL nibble gives, if it is valid and the bytes hold it.
fn ipv4_header_len(b: &[u8]) -> Option<usize> {
    let ihl = usize::from(b.first()? & 0x0f) * 4;
    (ihl >= IPV4_HEADER_LEN && b.len() >= ihl).then_some(ihl)
}

/// The ICMP checksum of an IPv4 packet carrying ICMP, over the bytes its total length covers.
fn repair_icmp4(b: &mut [u8]) {
    let Some(ihl) = ipv4_header_len(b) else {
        return;
    };
    if b[IPV4_PROTOCOL_OFFSET] != IPPROTO_ICMP {
        return;
    }
    let total = usize::from(be16(b, IPV4_TOTAL_LEN_OFFSET)).min(b.len());
    if total < ihl + ICMP_HEADER_LEN {
        return;
    }
    let msg = &mut b[ihl..total];
    if let Some(p) = IcmpPacket::new(msg) {
        let sum = icmp::checksum(&p);
        put16(msg, ICMP_CHECKSUM_OFFSET, sum);
    }
}

/// The ICMPv6 checksum of an IPv6 packet carrying ICMPv6 right after the fixed header.
fn repair_icmp6(b: &mut [u8]) {
    let min = IPV6_HEADER_LEN + ICMP_HEADER_LEN;
    if b.len() < min || b[IPV6_NEXT_HEADER_OFFSET] != IPPROTO_ICMPV6 {
        return;
    }
    let payload = usize::from(be16(b, IPV6_PAYLOAD_LEN_OFFSET));
    let end = (IPV6_HEADER_LEN + payload).min(b.len());
    if end < min {
        return;
    }
    let (src, dst) = (ipv6_addr(b, IPV6_SRC_OFFSET), ipv6_addr(b, IPV6_DST_OFFSET));
    let msg = &mut b[IPV6_HEADER_LEN..end];
    if let Some(p) = Icmpv6Packet::new(msg) {
        let sum = icmpv6::checksum(&p, &src, &dst);
        put16(msg, ICMP_CHECKSUM_OFFSET, sum);
    }
}
