//! The TCP segment type, decoded and emitted alike, and how it is written out.

use std::net::{IpAddr, SocketAddr};

use pnet_packet::ip::IpNextHeaderProtocols;
use pnet_packet::ipv4::{self, MutableIpv4Packet};
use pnet_packet::ipv6::MutableIpv6Packet;
use pnet_packet::tcp::{self, MutableTcpPacket, TcpPacket};

use super::{FIN, IPV4_HEADER_LEN, IPV6_HEADER_LEN, IpMeta, SYN, TCP_HEADER_LEN, Timestamps};
use crate::seq::SeqNumber;

/// NOP, NOP, kind 8, length 10, TSval, TSecr: the layout Linux uses.
const TS_OPTION: usize = 12;

/// A TCP segment as keepalive logic sees it, both ways: `decode` reads one from the capture,
/// and `emit` writes the probes and injected SYNs kaprobe sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub seq: SeqNumber,
    pub ack: SeqNumber,
    pub flags: u8,
    pub window: u16,
    pub ts: Option<Timestamps>,
    /// Bytes of data. `emit` writes this many zero bytes: the only data kaprobe sends is the
    /// `--garbage-octet`, one byte the peer has already acknowledged, whose value it discards.
    pub payload_len: usize,
    pub ip: IpMeta,
}

impl Segment {
    /// A segment with only addresses, numbers and flags set: no window, options or data,
    /// default IP fields.
    pub fn bare(
        src: SocketAddr,
        dst: SocketAddr,
        seq: SeqNumber,
        ack: SeqNumber,
        flags: u8,
    ) -> Self {
        Segment {
            src,
            dst,
            seq,
            ack,
            flags,
            window: 0,
            ts: None,
            payload_len: 0,
            ip: IpMeta::default(),
        }
    }

    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// The sequence space the segment occupies, SEG.LEN (RFC 9293, 3.4): its data, and one
    /// each for SYN and FIN. The next segment of its sender starts at `seq + seq_len()`.
    pub fn seq_len(&self) -> u32 {
        let ctl = u32::from(self.has(SYN)) + u32::from(self.has(FIN));
        (self.payload_len as u32).wrapping_add(ctl)
    }

    fn tcp_len(&self) -> usize {
        TCP_HEADER_LEN + if self.ts.is_some() { TS_OPTION } else { 0 } + self.payload_len
    }

    fn ip_header_len(&self) -> usize {
        if self.src.is_ipv6() {
            IPV6_HEADER_LEN
        } else {
            IPV4_HEADER_LEN
        }
    }

    /// Bytes `emit` writes: IP header, TCP header, options, payload.
    pub fn buffer_len(&self) -> usize {
        self.ip_header_len() + self.tcp_len()
    }

    /// Writes the whole IP packet, checksums included, into `buf[..buffer_len()]`.
    /// Panics if `buf` is shorter or the two sides differ in family: both are programming
    /// errors, never caused by input.
    pub fn emit(&self, buf: &mut [u8]) {
        let ip_len = self.ip_header_len();
        let total = self.buffer_len();
        let buf = &mut buf[..total];
        self.emit_tcp(&mut buf[ip_len..]);
        match (self.src.ip(), self.dst.ip()) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => {
                set_tcp_checksum(&mut buf[IPV4_HEADER_LEN..], |t| {
                    tcp::ipv4_checksum(t, &src, &dst)
                });
                let mut ip = MutableIpv4Packet::new(&mut buf[..]).expect("sized");
                ip.set_version(4);
                ip.set_header_length(5);
                ip.set_dscp(self.ip.tos >> 2);
                ip.set_ecn(self.ip.tos & 3);
                ip.set_total_length(total as u16);
                ip.set_identification(0);
                ip.set_flags(if self.ip.dont_fragment { 2 } else { 0 });
                ip.set_fragment_offset(0);
                ip.set_ttl(self.ip.hop_limit);
                ip.set_next_level_protocol(IpNextHeaderProtocols::Tcp);
                ip.set_checksum(0);
                ip.set_source(src);
                ip.set_destination(dst);
                let sum = ipv4::checksum(&ip.to_immutable());
                ip.set_checksum(sum);
            }
            (IpAddr::V6(src), IpAddr::V6(dst)) => {
                set_tcp_checksum(&mut buf[IPV6_HEADER_LEN..], |t| {
                    tcp::ipv6_checksum(t, &src, &dst)
                });
                let mut ip = MutableIpv6Packet::new(&mut buf[..]).expect("sized");
                ip.set_version(6);
                ip.set_traffic_class(self.ip.tos);
                ip.set_flow_label(self.ip.flow_label & 0xf_ffff);
                ip.set_payload_length((total - IPV6_HEADER_LEN) as u16);
                ip.set_next_header(IpNextHeaderProtocols::Tcp);
                ip.set_hop_limit(self.ip.hop_limit);
                ip.set_source(src);
                ip.set_destination(dst);
            }
            _ => panic!("Segment with mixed address families"),
        }
    }

    fn emit_tcp(&self, buf: &mut [u8]) {
        let options = if self.ts.is_some() { TS_OPTION } else { 0 };
        {
            let mut tcp = MutableTcpPacket::new(buf).expect("sized");
            tcp.set_source(self.src.port());
            tcp.set_destination(self.dst.port());
            tcp.set_sequence(self.seq.0);
            tcp.set_acknowledgement(self.ack.0);
            tcp.set_data_offset(((TCP_HEADER_LEN + options) / 4) as u8);
            tcp.set_reserved(0);
            tcp.set_flags(self.flags);
            tcp.set_window(self.window);
            tcp.set_checksum(0);
            tcp.set_urgent_ptr(0);
        }
        let mut at = TCP_HEADER_LEN;
        if let Some(ts) = self.ts {
            buf[at..at + 4].copy_from_slice(&[1, 1, 8, 10]);
            buf[at + 4..at + 8].copy_from_slice(&ts.tsval.to_be_bytes());
            buf[at + 8..at + 12].copy_from_slice(&ts.tsecr.to_be_bytes());
            at += TS_OPTION;
        }
        buf[at..at + self.payload_len].fill(0);
    }
}

/// Writes the checksum `sum` computes (over the pseudo-header of the segment's family) into the
/// TCP segment `tcp`, whose checksum field is still zero.
fn set_tcp_checksum(tcp: &mut [u8], sum: impl FnOnce(&TcpPacket) -> u16) {
    let sum = sum(&TcpPacket::new(tcp).expect("sized"));
    MutableTcpPacket::new(tcp).expect("sized").set_checksum(sum);
}
