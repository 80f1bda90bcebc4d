//! Packet layouts: the probes kaprobe emits and the answers it decodes. No I/O here.
//!
//! Untrusted bytes are length-checked before any field is read (`decode`); probes are
//! emitted from the same `Segment` type into a buffer of exactly `buffer_len()` bytes.

use std::time::Duration;

mod decode;
mod segment;

pub use decode::{DecodeError, IcmpError, Packet, decode};
pub use segment::Segment;

// Field offsets, in bytes from the start of their header, and the lengths around them. The
// decoder and the capture filter's BPF assembler (`sys::bpf`) both read them from here.

/// IPv4 header without options (RFC 791, 3.1); the IHL nibble gives the real length.
pub const IPV4_HEADER_LEN: usize = 20;
/// IPv4 total length, 16 bits.
pub const IPV4_TOTAL_LEN_OFFSET: usize = 2;
/// IPv4 flags (3 bits) and fragment offset (13 bits), one 16-bit word.
pub const IPV4_FRAGMENT_OFFSET: usize = 6;
/// IPv4 protocol, 8 bits.
pub const IPV4_PROTOCOL_OFFSET: usize = 9;
/// IPv4 header checksum, 16 bits.
pub const IPV4_CHECKSUM_OFFSET: usize = 10;
/// IPv4 source address, 4 bytes.
pub const IPV4_SRC_OFFSET: usize = 12;
/// IPv4 destination address, 4 bytes.
pub const IPV4_DST_OFFSET: usize = 16;

/// The fixed IPv6 header (RFC 8200, 3); kaprobe walks no extension headers.
pub const IPV6_HEADER_LEN: usize = 40;
/// IPv6 payload length, 16 bits.
pub const IPV6_PAYLOAD_LEN_OFFSET: usize = 4;
/// IPv6 next header, 8 bits.
pub const IPV6_NEXT_HEADER_OFFSET: usize = 6;
/// IPv6 hop limit, 8 bits.
pub const IPV6_HOP_LIMIT_OFFSET: usize = 7;
/// IPv6 source address, 16 bytes.
pub const IPV6_SRC_OFFSET: usize = 8;
/// IPv6 destination address, 16 bytes.
pub const IPV6_DST_OFFSET: usize = 24;

/// TCP header without options (RFC 9293, 3.1).
pub const TCP_HEADER_LEN: usize = 20;
/// TCP source port, 16 bits.
pub const TCP_SRC_PORT_OFFSET: usize = 0;
/// TCP destination port, 16 bits.
pub const TCP_DST_PORT_OFFSET: usize = 2;
/// TCP sequence number, 32 bits.
pub const TCP_SEQ_OFFSET: usize = 4;
/// TCP acknowledgment number, 32 bits.
pub const TCP_ACK_OFFSET: usize = 8;
/// TCP data offset, the high nibble: the header length in 32-bit words.
pub const TCP_DATA_OFFSET_OFFSET: usize = 12;
/// TCP control bits (`FIN` ... `ACK` below), 8 bits.
pub const TCP_FLAGS_OFFSET: usize = 13;
/// TCP window, 16 bits.
pub const TCP_WINDOW_OFFSET: usize = 14;

/// ICMP and ICMPv6 header before an error's quote: type, code, checksum, 4 unused bytes
/// (RFC 792, RFC 4443 3.1).
pub const ICMP_HEADER_LEN: usize = 8;
/// ICMP and ICMPv6 checksum, 16 bits.
pub const ICMP_CHECKSUM_OFFSET: usize = 2;

/// IP protocol numbers (IANA): the IPv4 protocol and IPv6 next header values.
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_ICMPV6: u8 = 58;

// TCP control bits (RFC 9293, 3.1).
pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const ACK: u8 = 0x10;

/// Where the capture saw a packet. Addresses alone cannot tell direction: a forger can claim
/// the local address, and a segment "from" it must not teach the engine the numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Leaving this host through a real interface.
    Sent,
    /// Arriving from a real interface.
    Received,
    /// On loopback, where both ends are local: only the addresses tell.
    Loopback,
}

/// Two captures of one segment closer than this are one packet seen on two interfaces (a
/// bridge and its port, a VLAN and its parent device), counted once (README "Verdicts and
/// timing"): by the engine among its probes' copies, and by the passive keepalive tracker.
pub const SAME_PACKET_WINDOW: Duration = Duration::from_millis(2);

/// The TCP timestamp option (RFC 7323).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timestamps {
    pub tsval: u32,
    pub tsecr: u32,
}

/// IP header fields copied from the connection's own segments, so a probe looks like the
/// kernel's: TTL / hop limit, TOS / traffic class, IPv6 flow label, IPv4 don't-fragment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpMeta {
    pub hop_limit: u8,
    pub tos: u8,
    pub flow_label: u32,
    pub dont_fragment: bool,
}

impl Default for IpMeta {
    fn default() -> Self {
        IpMeta {
            hop_limit: 64,
            tos: 0,
            flow_label: 0,
            dont_fragment: true,
        }
    }
}

/// Golden packets and checksum repair, for tests and the fuzz targets.
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;

#[cfg(test)]
mod fixtures;
