//! Checksum repair for fuzzed packets. A forger sends valid checksums, so checking them is no
//! defence, only a wall that random mutations rarely get over; the targets decode each input
//! as it is and once more with its IPv4 header, ICMP and ICMPv6 checksums made right.

use pnet_packet::icmp::{self, IcmpPacket};
use pnet_packet::icmpv6::{self, Icmpv6Packet};
use pnet_packet::ipv4::{self, Ipv4Packet};

/// A copy of `data` with the checksums `wire::decode` verifies recomputed, where the
/// headers are long enough to hold them.
pub fn repair(data: &[u8]) -> Vec<u8> {
    let mut b = data.to_vec();
    match b.first().map(|v| v >> 4) {
        Some(4) => repair_v4(&mut b),
        Some(6) => repair_v6(&mut b),
        _ => {}
    }
    b
}

fn repair_v4(b: &mut [u8]) {
    let ihl = usize::from(b[0] & 0x0f) * 4;
    if b.len() < 20 || ihl < 20 || b.len() < ihl {
        return;
    }
    let total = usize::from(u16::from_be_bytes([b[2], b[3]])).min(b.len());
    if b[9] == 1 && total >= ihl + 8 {
        let msg = &mut b[ihl..total];
        msg[2] = 0;
        msg[3] = 0;
        if let Some(p) = IcmpPacket::new(msg) {
            let sum = icmp::checksum(&p);
            msg[2..4].copy_from_slice(&sum.to_be_bytes());
        }
    }
    if let Some(p) = Ipv4Packet::new(&b[..ihl]) {
        let sum = ipv4::checksum(&p);
        b[10..12].copy_from_slice(&sum.to_be_bytes());
    }
}

fn repair_v6(b: &mut [u8]) {
    if b.len() < 48 || b[6] != 58 {
        return;
    }
    let end = (40 + usize::from(u16::from_be_bytes([b[4], b[5]]))).min(b.len());
    if end < 48 {
        return;
    }
    let mut addr = [[0u8; 16]; 2];
    addr[0].copy_from_slice(&b[8..24]);
    addr[1].copy_from_slice(&b[24..40]);
    let msg = &mut b[40..end];
    msg[2] = 0;
    msg[3] = 0;
    if let Some(p) = Icmpv6Packet::new(msg) {
        let sum = icmpv6::checksum(&p, &addr[0].into(), &addr[1].into());
        msg[2..4].copy_from_slice(&sum.to_be_bytes());
    }
}
