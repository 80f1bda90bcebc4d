//! Decoding captured IPv4/IPv6 packets: TCP segments and ICMP errors quoting TCP.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use pnet_packet::icmp::{self, IcmpPacket};
use pnet_packet::icmpv6::{self, Icmpv6Packet};
use pnet_packet::ipv4::{self, Ipv4Packet};

use super::*;
use crate::seq::SeqNumber;

/// A decoded packet that may matter to a probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Packet {
    Tcp(Segment),
    Icmp(IcmpError),
}

/// An ICMP or ICMPv6 error quoting a TCP segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IcmpError {
    /// Who sent the error (a router, or the peer's host).
    pub from: IpAddr,
    pub to: IpAddr,
    pub icmp_type: u8,
    pub code: u8,
    /// The quoted segment's endpoints and sequence number.
    pub quoted_src: SocketAddr,
    pub quoted_dst: SocketAddr,
    pub quoted_seq: SeqNumber,
}

impl IcmpError {
    pub fn is_v6(&self) -> bool {
        self.from.is_ipv6()
    }

    /// The `nft reject`/`iptables` name of this error. One arm per (family, type, code):
    /// ICMP types 3 and 11 (RFC 792; codes 9 and 10 RFC 1122 3.2.2.1, 13 RFC 1812
    /// 5.2.7.1), ICMPv6 types 1 and 3 (RFC 4443 3.1, 3.3).
    pub fn name(&self) -> &'static str {
        match (self.is_v6(), self.icmp_type, self.code) {
            (false, 3, 0) => "net-unreachable",
            (false, 3, 1) => "host-unreachable",
            (false, 3, 2) => "prot-unreachable",
            (false, 3, 3) => "port-unreachable",
            (false, 3, 9) => "net-prohibited",
            (false, 3, 10) => "host-prohibited",
            (false, 3, 13) => "admin-prohibited",
            (false, 3, _) => "destination-unreachable",
            (false, 11, _) => "time-exceeded",
            (true, 1, 0) => "no-route",
            (true, 1, 1) => "admin-prohibited",
            (true, 1, 2) => "beyond-scope",
            (true, 1, 3) => "addr-unreachable",
            (true, 1, 4) => "port-unreachable",
            (true, 1, 5) => "policy-fail",
            (true, 1, 6) => "reject-route",
            (true, 1, _) => "destination-unreachable",
            (true, 3, _) => "time-exceeded",
            _ => "icmp-error",
        }
    }
}

/// Why bytes were not a packet kaprobe uses. Never an error to report: such packets are
/// skipped (and counted at debug level).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("truncated")]
    Truncated,
    #[error("malformed header")]
    Malformed,
    #[error("bad checksum")]
    Checksum,
    #[error("fragment")]
    Fragment,
    #[error("not TCP or an ICMP error about TCP")]
    Unrelated,
}

/// Decodes one IPv4 or IPv6 packet (starting at the IP header).
pub fn decode(bytes: &[u8]) -> Result<Packet, DecodeError> {
    match bytes.first().map(|b| b >> 4) {
        Some(4) => decode_v4(bytes),
        Some(6) => decode_v6(bytes),
        Some(_) => Err(DecodeError::Malformed),
        None => Err(DecodeError::Truncated),
    }
}

/// Checks an IPv4 header; returns (header length, the packet cut to its total length).
fn ipv4_bounds(bytes: &[u8]) -> Result<(usize, &[u8]), DecodeError> {
    if bytes.len() < IPV4_HEADER_LEN {
        return Err(DecodeError::Truncated);
    }
    let ihl = usize::from(bytes[0] & 0x0f) * 4;
    let total = usize::from(be16(bytes, IPV4_TOTAL_LEN_OFFSET));
    if ihl < IPV4_HEADER_LEN || total < ihl {
        return Err(DecodeError::Malformed);
    }
    if bytes.len() < total {
        return Err(DecodeError::Truncated);
    }
    Ok((ihl, &bytes[..total]))
}

fn decode_v4(bytes: &[u8]) -> Result<Packet, DecodeError> {
    let (ihl, bytes) = ipv4_bounds(bytes)?;
    let ip = Ipv4Packet::new(bytes).ok_or(DecodeError::Truncated)?;
    if ipv4::checksum(&ip) != ip.get_checksum() {
        return Err(DecodeError::Checksum);
    }
    // More-fragments set or a non-zero offset: not a whole segment.
    if ip.get_flags() & 1 != 0 || ip.get_fragment_offset() != 0 {
        return Err(DecodeError::Fragment);
    }
    let src = IpAddr::V4(ip.get_source());
    let dst = IpAddr::V4(ip.get_destination());
    let payload = &bytes[ihl..];
    match ip.get_next_level_protocol().0 {
        IPPROTO_TCP => {
            let meta = IpMeta {
                hop_limit: ip.get_ttl(),
                tos: (ip.get_dscp() << 2) | ip.get_ecn(),
                flow_label: 0,
                dont_fragment: ip.get_flags() & 2 != 0,
            };
            decode_tcp(src, dst, payload, meta).map(Packet::Tcp)
        }
        IPPROTO_ICMP => {
            if payload.len() < ICMP_HEADER_LEN {
                return Err(DecodeError::Truncated);
            }
            let msg = IcmpPacket::new(payload).ok_or(DecodeError::Truncated)?;
            if icmp::checksum(&msg) != msg.get_checksum() {
                return Err(DecodeError::Checksum);
            }
            let (icmp_type, code) = (payload[0], payload[1]);
            // 3/4 is "fragmentation needed": path MTU news, not unreachability.
            let is_error = (icmp_type == 3 && code != 4) || icmp_type == 11;
            if !is_error {
                return Err(DecodeError::Unrelated);
            }
            let quoted = &payload[ICMP_HEADER_LEN..];
            let qihl = quoted_ipv4_header_len(quoted)?;
            if quoted[IPV4_PROTOCOL_OFFSET] != IPPROTO_TCP {
                return Err(DecodeError::Unrelated);
            }
            let qsrc = IpAddr::V4(ipv4_addr(quoted, IPV4_SRC_OFFSET));
            let qdst = IpAddr::V4(ipv4_addr(quoted, IPV4_DST_OFFSET));
            quoted_tcp(src, dst, icmp_type, code, qsrc, qdst, &quoted[qihl..]).map(Packet::Icmp)
        }
        _ => Err(DecodeError::Unrelated),
    }
}

/// Checks a quoted IPv4 header and returns its length. The datagram after it may be cut
/// short (RFC 792 quotes 8 bytes of it).
fn quoted_ipv4_header_len(quoted: &[u8]) -> Result<usize, DecodeError> {
    if quoted.len() < IPV4_HEADER_LEN {
        return Err(DecodeError::Truncated);
    }
    if quoted[0] >> 4 != 4 {
        return Err(DecodeError::Malformed);
    }
    let ihl = usize::from(quoted[0] & 0x0f) * 4;
    if ihl < IPV4_HEADER_LEN {
        return Err(DecodeError::Malformed);
    }
    if quoted.len() < ihl {
        return Err(DecodeError::Truncated);
    }
    Ok(ihl)
}

fn quoted_tcp(
    from: IpAddr,
    to: IpAddr,
    icmp_type: u8,
    code: u8,
    qsrc: IpAddr,
    qdst: IpAddr,
    tcp: &[u8],
) -> Result<IcmpError, DecodeError> {
    // RFC 792 quotes the first 8 bytes of the datagram: ports and sequence number.
    if tcp.len() < TCP_SEQ_OFFSET + 4 {
        return Err(DecodeError::Truncated);
    }
    Ok(IcmpError {
        from,
        to,
        icmp_type,
        code,
        quoted_src: SocketAddr::new(qsrc, be16(tcp, TCP_SRC_PORT_OFFSET)),
        quoted_dst: SocketAddr::new(qdst, be16(tcp, TCP_DST_PORT_OFFSET)),
        quoted_seq: SeqNumber(be32(tcp, TCP_SEQ_OFFSET)),
    })
}

/// The big-endian 16 bits at `at`; the caller has checked the length.
pub(super) fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// The big-endian 32 bits at `at`; the caller has checked the length.
fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// The IPv4 address at `at`; the caller has checked the length.
fn ipv4_addr(b: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::from(be32(b, at))
}

/// The IPv6 address at `at`; the caller has checked the length.
pub(super) fn ipv6_addr(b: &[u8], at: usize) -> Ipv6Addr {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[at..at + 16]);
    Ipv6Addr::from(a)
}

fn decode_v6(bytes: &[u8]) -> Result<Packet, DecodeError> {
    if bytes.len() < IPV6_HEADER_LEN {
        return Err(DecodeError::Truncated);
    }
    let payload_len = usize::from(be16(bytes, IPV6_PAYLOAD_LEN_OFFSET));
    if bytes.len() < IPV6_HEADER_LEN + payload_len {
        return Err(DecodeError::Truncated);
    }
    let bytes = &bytes[..IPV6_HEADER_LEN + payload_len];
    let src6 = ipv6_addr(bytes, IPV6_SRC_OFFSET);
    let dst6 = ipv6_addr(bytes, IPV6_DST_OFFSET);
    let (src, dst) = (IpAddr::V6(src6), IpAddr::V6(dst6));
    let payload = &bytes[IPV6_HEADER_LEN..];
    // Extension headers are not walked: a segment behind one is skipped, never classified.
    match bytes[IPV6_NEXT_HEADER_OFFSET] {
        IPPROTO_TCP => {
            // Version (4 bits), traffic class (8), flow label (20).
            let word = be32(bytes, 0);
            let meta = IpMeta {
                hop_limit: bytes[IPV6_HOP_LIMIT_OFFSET],
                tos: ((word >> 20) & 0xff) as u8,
                flow_label: word & 0xf_ffff,
                dont_fragment: false,
            };
            decode_tcp(src, dst, payload, meta).map(Packet::Tcp)
        }
        IPPROTO_ICMPV6 => {
            if payload.len() < ICMP_HEADER_LEN {
                return Err(DecodeError::Truncated);
            }
            let msg = Icmpv6Packet::new(payload).ok_or(DecodeError::Truncated)?;
            if icmpv6::checksum(&msg, &src6, &dst6) != msg.get_checksum() {
                return Err(DecodeError::Checksum);
            }
            let (icmp_type, code) = (payload[0], payload[1]);
            if icmp_type != 1 && icmp_type != 3 {
                return Err(DecodeError::Unrelated);
            }
            let quoted = &payload[ICMP_HEADER_LEN..];
            if quoted.len() < IPV6_HEADER_LEN {
                return Err(DecodeError::Truncated);
            }
            if quoted[0] >> 4 != 6 {
                return Err(DecodeError::Malformed);
            }
            if quoted[IPV6_NEXT_HEADER_OFFSET] != IPPROTO_TCP {
                return Err(DecodeError::Unrelated);
            }
            let qsrc = IpAddr::V6(ipv6_addr(quoted, IPV6_SRC_OFFSET));
            let qdst = IpAddr::V6(ipv6_addr(quoted, IPV6_DST_OFFSET));
            let qtcp = &quoted[IPV6_HEADER_LEN..];
            quoted_tcp(src, dst, icmp_type, code, qsrc, qdst, qtcp).map(Packet::Icmp)
        }
        _ => Err(DecodeError::Unrelated),
    }
}

/// The TCP checksum is not verified. Outgoing segments (the local socket's challenge ACK) are
/// captured before checksum offload fills it in, when it holds only the pseudo-header sum;
/// for incoming ones it is no defence, since a forger computes it, and random corruption that
/// keeps the exact numbers an answer must carry is vanishingly unlikely.
fn decode_tcp(src: IpAddr, dst: IpAddr, tcp: &[u8], ip: IpMeta) -> Result<Segment, DecodeError> {
    if tcp.len() < TCP_HEADER_LEN {
        return Err(DecodeError::Truncated);
    }
    let doff = usize::from(tcp[TCP_DATA_OFFSET_OFFSET] >> 4) * 4;
    if doff < TCP_HEADER_LEN {
        return Err(DecodeError::Malformed);
    }
    if doff > tcp.len() {
        return Err(DecodeError::Truncated);
    }
    Ok(Segment {
        src: SocketAddr::new(src, be16(tcp, TCP_SRC_PORT_OFFSET)),
        dst: SocketAddr::new(dst, be16(tcp, TCP_DST_PORT_OFFSET)),
        seq: SeqNumber(be32(tcp, TCP_SEQ_OFFSET)),
        ack: SeqNumber(be32(tcp, TCP_ACK_OFFSET)),
        flags: tcp[TCP_FLAGS_OFFSET],
        window: be16(tcp, TCP_WINDOW_OFFSET),
        ts: find_timestamps(&tcp[TCP_HEADER_LEN..doff])?,
        payload_len: tcp.len() - doff,
        ip,
    })
}

/// Walks TCP options for the timestamp option; a malformed option list is an error.
fn find_timestamps(mut opts: &[u8]) -> Result<Option<Timestamps>, DecodeError> {
    let mut found = None;
    while let Some(&kind) = opts.first() {
        match kind {
            0 => break,
            1 => opts = &opts[1..],
            _ => {
                let len = usize::from(*opts.get(1).ok_or(DecodeError::Malformed)?);
                if len < 2 || len > opts.len() {
                    return Err(DecodeError::Malformed);
                }
                if kind == 8 {
                    if len != 10 {
                        return Err(DecodeError::Malformed);
                    }
                    found = Some(Timestamps {
                        tsval: be32(opts, 2),
                        tsecr: be32(opts, 6),
                    });
                }
                opts = &opts[len..];
            }
        }
    }
    Ok(found)
}
