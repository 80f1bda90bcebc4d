//! Packet layouts: the probes kaprobe emits and the answers it decodes. No I/O here.
//!
//! Untrusted bytes are length-checked before any field is read (`decode`); probes are
//! emitted from a typed `ProbeRepr` into a buffer of exactly `buffer_len()` bytes.

mod decode;
mod emit;

pub use decode::{DecodeError, IcmpError, Packet, Segment, decode};
pub use emit::ProbeRepr;

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;

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

#[cfg(test)]
pub(crate) mod fixtures;
