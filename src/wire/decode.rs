use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use pnet_packet::icmp::{self, IcmpPacket};
use pnet_packet::icmpv6::{self, Icmpv6Packet};
use pnet_packet::ipv4::{self, Ipv4Packet};

use super::{IpMeta, Timestamps};
use crate::seq::SeqNumber;

const PROTO_TCP: u8 = 6;
const PROTO_ICMP: u8 = 1;
const PROTO_ICMPV6: u8 = 58;

/// A decoded packet that may matter to a probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Packet {
    Tcp(Segment),
    Icmp(IcmpError),
}

/// A TCP segment, as far as keepalive logic cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub seq: SeqNumber,
    pub ack: SeqNumber,
    pub flags: u8,
    pub window: u16,
    pub ts: Option<Timestamps>,
    pub payload_len: usize,
    pub ip: IpMeta,
}

impl Segment {
    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
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

    /// The `nft reject`/`iptables` name of this error.
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
    if bytes.len() < 20 {
        return Err(DecodeError::Truncated);
    }
    let ihl = usize::from(bytes[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([bytes[2], bytes[3]]));
    if ihl < 20 || total < ihl {
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
        PROTO_TCP => {
            let meta = IpMeta {
                hop_limit: ip.get_ttl(),
                tos: (ip.get_dscp() << 2) | ip.get_ecn(),
                flow_label: 0,
                dont_fragment: ip.get_flags() & 2 != 0,
            };
            decode_tcp(src, dst, payload, meta).map(Packet::Tcp)
        }
        PROTO_ICMP => {
            if payload.len() < 8 {
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
            let quoted = &payload[8..];
            let (qihl, _) = quoted_ipv4_bounds(quoted)?;
            if quoted[9] != PROTO_TCP {
                return Err(DecodeError::Unrelated);
            }
            let qsrc = IpAddr::V4(Ipv4Addr::new(
                quoted[12], quoted[13], quoted[14], quoted[15],
            ));
            let qdst = IpAddr::V4(Ipv4Addr::new(
                quoted[16], quoted[17], quoted[18], quoted[19],
            ));
            quoted_tcp(src, dst, icmp_type, code, qsrc, qdst, &quoted[qihl..]).map(Packet::Icmp)
        }
        _ => Err(DecodeError::Unrelated),
    }
}

/// A quoted IPv4 header may come with its datagram cut short (RFC 792 quotes 8 bytes).
fn quoted_ipv4_bounds(quoted: &[u8]) -> Result<(usize, ()), DecodeError> {
    if quoted.len() < 20 {
        return Err(DecodeError::Truncated);
    }
    if quoted[0] >> 4 != 4 {
        return Err(DecodeError::Malformed);
    }
    let ihl = usize::from(quoted[0] & 0x0f) * 4;
    if ihl < 20 {
        return Err(DecodeError::Malformed);
    }
    if quoted.len() < ihl {
        return Err(DecodeError::Truncated);
    }
    Ok((ihl, ()))
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
    if tcp.len() < 8 {
        return Err(DecodeError::Truncated);
    }
    Ok(IcmpError {
        from,
        to,
        icmp_type,
        code,
        quoted_src: SocketAddr::new(qsrc, u16::from_be_bytes([tcp[0], tcp[1]])),
        quoted_dst: SocketAddr::new(qdst, u16::from_be_bytes([tcp[2], tcp[3]])),
        quoted_seq: SeqNumber(u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]])),
    })
}

fn ipv6_addr(b: &[u8]) -> Ipv6Addr {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[..16]);
    Ipv6Addr::from(a)
}

fn decode_v6(bytes: &[u8]) -> Result<Packet, DecodeError> {
    if bytes.len() < 40 {
        return Err(DecodeError::Truncated);
    }
    let payload_len = usize::from(u16::from_be_bytes([bytes[4], bytes[5]]));
    if bytes.len() < 40 + payload_len {
        return Err(DecodeError::Truncated);
    }
    let bytes = &bytes[..40 + payload_len];
    let src6 = ipv6_addr(&bytes[8..24]);
    let dst6 = ipv6_addr(&bytes[24..40]);
    let (src, dst) = (IpAddr::V6(src6), IpAddr::V6(dst6));
    let payload = &bytes[40..];
    // Extension headers are not walked: a segment behind one is skipped, never classified.
    match bytes[6] {
        PROTO_TCP => {
            let word = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
            let meta = IpMeta {
                hop_limit: bytes[7],
                tos: ((word >> 20) & 0xff) as u8,
                flow_label: word & 0xf_ffff,
                dont_fragment: false,
            };
            decode_tcp(src, dst, payload, meta).map(Packet::Tcp)
        }
        PROTO_ICMPV6 => {
            if payload.len() < 8 {
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
            let quoted = &payload[8..];
            if quoted.len() < 40 {
                return Err(DecodeError::Truncated);
            }
            if quoted[0] >> 4 != 6 {
                return Err(DecodeError::Malformed);
            }
            if quoted[6] != PROTO_TCP {
                return Err(DecodeError::Unrelated);
            }
            let qsrc = IpAddr::V6(ipv6_addr(&quoted[8..24]));
            let qdst = IpAddr::V6(ipv6_addr(&quoted[24..40]));
            quoted_tcp(src, dst, icmp_type, code, qsrc, qdst, &quoted[40..]).map(Packet::Icmp)
        }
        _ => Err(DecodeError::Unrelated),
    }
}

fn decode_tcp(src: IpAddr, dst: IpAddr, tcp: &[u8], ip: IpMeta) -> Result<Segment, DecodeError> {
    if tcp.len() < 20 {
        return Err(DecodeError::Truncated);
    }
    let doff = usize::from(tcp[12] >> 4) * 4;
    if doff < 20 {
        return Err(DecodeError::Malformed);
    }
    if doff > tcp.len() {
        return Err(DecodeError::Truncated);
    }
    let be16 = |i: usize| u16::from_be_bytes([tcp[i], tcp[i + 1]]);
    let be32 = |i: usize| u32::from_be_bytes([tcp[i], tcp[i + 1], tcp[i + 2], tcp[i + 3]]);
    Ok(Segment {
        src: SocketAddr::new(src, be16(0)),
        dst: SocketAddr::new(dst, be16(2)),
        seq: SeqNumber(be32(4)),
        ack: SeqNumber(be32(8)),
        flags: tcp[13],
        window: be16(14),
        ts: find_timestamps(&tcp[20..doff])?,
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
                    let v = |i: usize| {
                        u32::from_be_bytes([opts[i], opts[i + 1], opts[i + 2], opts[i + 3]])
                    };
                    found = Some(Timestamps {
                        tsval: v(2),
                        tsecr: v(6),
                    });
                }
                opts = &opts[len..];
            }
        }
    }
    Ok(found)
}
