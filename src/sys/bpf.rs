//! Classic BPF programs for the capture socket, so that only the probed connections' TCP
//! segments and the ICMP errors sent to their local addresses reach userspace.
//!
//! The programs run on AF_PACKET SOCK_DGRAM sockets: offset 0 is the IP header, and the
//! ethertype comes from the ancillary `SKF_AD_PROTOCOL` load.

use std::net::IpAddr;

use crate::flow::Flow;
use crate::wire::{
    IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPV4_DST_OFFSET, IPV4_FRAGMENT_OFFSET,
    IPV4_PROTOCOL_OFFSET, IPV4_SRC_OFFSET, IPV6_DST_OFFSET, IPV6_HEADER_LEN,
    IPV6_NEXT_HEADER_OFFSET, IPV6_SRC_OFFSET, TCP_DST_PORT_OFFSET, TCP_SRC_PORT_OFFSET,
};

const LD_W_ABS: u16 = 0x20;
const LD_H_ABS: u16 = 0x28;
const LD_B_ABS: u16 = 0x30;
const LD_H_IND: u16 = 0x48;
const LDX_B_MSH: u16 = 0xb1;
const JA: u16 = 0x05;
const JEQ_K: u16 = 0x15;
const JSET_K: u16 = 0x45;
const RET_K: u16 = 0x06;

const JGT_K: u16 = 0x25;
const JGE_K: u16 = 0x35;

const SKF_AD_PROTOCOL: u32 = 0xffff_f000;
const SKF_AD_PKTTYPE: u32 = 0xffff_f004;
const SKF_AD_IFINDEX: u32 = 0xffff_f008;
const PACKET_OUTGOING: u32 = 4;
/// `lo` is the first device of every network namespace.
const LOOPBACK_IFINDEX: u32 = 1;
/// Remote ports listed one by one up to this many; beyond, their range.
const MAX_PORT_SET: usize = 16;
/// Address pairs matched one by one up to this many.
const MAX_GROUPS: usize = 96;
/// The longest program `flows_filter` hands out. The kernel takes 4096 instructions
/// (BPF_MAXINSNS), but charges a socket's filter to `net.core.optmem_max` (20 KiB on older
/// kernels: 2,560 instructions of 8 bytes), and refuses more with ENOMEM.
pub const MAX_PROGRAM: usize = 2048;
const ETH_P_IP: u32 = 0x0800;
const ETH_P_IPV6: u32 = 0x86dd;
/// Bytes kept of an accepted packet: enough for any header and an ICMP quote.
const SNAP: u32 = 0xffff;
/// Whole packets, however large (a GSO super-packet can exceed 64 KiB).
pub const WHOLE: u32 = u32::MAX;
/// IPv4 more-fragments flag and fragment offset: a packet with any set is not a whole segment.
const FRAGMENT_BITS: u32 = 0x3fff;

/// A header offset or length (from `wire`) as a BPF constant.
const fn k(v: usize) -> u32 {
    v as u32
}

/// A protocol number (from `wire`) as a BPF constant.
const fn proto(p: u8) -> u32 {
    p as u32
}

#[derive(Clone, Copy)]
enum To {
    Next,
    Label(usize),
}

#[derive(Clone, Copy)]
struct Ins {
    op: u16,
    jt: To,
    jf: To,
    k: u32,
}

#[derive(Default)]
struct Asm {
    code: Vec<Ins>,
    labels: Vec<Option<usize>>,
}

impl Asm {
    fn label(&mut self) -> usize {
        self.labels.push(None);
        self.labels.len() - 1
    }
    fn bind(&mut self, l: usize) {
        self.labels[l] = Some(self.code.len());
    }
    fn op(&mut self, op: u16, k: u32) {
        self.code.push(Ins {
            op,
            jt: To::Next,
            jf: To::Next,
            k,
        });
    }
    fn jump(&mut self, op: u16, k: u32, jt: To, jf: To) {
        self.code.push(Ins { op, jt, jf, k });
    }
    /// Continue if A == k, else go to `miss`.
    fn expect(&mut self, k: u32, miss: usize) {
        self.jump(JEQ_K, k, To::Next, To::Label(miss));
    }
    fn ret(&mut self, k: u32) {
        self.op(RET_K, k);
    }
    fn long_jump(&mut self, l: usize) {
        self.jump(JA, 0, To::Label(l), To::Next);
    }

    fn finish(self) -> Vec<libc::sock_filter> {
        let at = |i: usize, to: To| -> usize {
            match to {
                To::Next => 0,
                To::Label(l) => {
                    let target = self.labels[l].expect("label bound");
                    target.checked_sub(i + 1).expect("BPF jumps go forward")
                }
            }
        };
        self.code
            .iter()
            .enumerate()
            .map(|(i, ins)| {
                if ins.op == JA {
                    return libc::sock_filter {
                        code: JA,
                        jt: 0,
                        jf: 0,
                        k: at(i, ins.jt) as u32,
                    };
                }
                let short = |to| u8::try_from(at(i, to)).expect("short BPF jump");
                libc::sock_filter {
                    code: ins.op,
                    jt: short(ins.jt),
                    jf: short(ins.jf),
                    k: ins.k,
                }
            })
            .collect()
    }
}

fn words(ip: IpAddr) -> Vec<u32> {
    match ip {
        IpAddr::V4(a) => vec![u32::from(a)],
        IpAddr::V6(a) => a
            .octets()
            .chunks(4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    }
}

/// Which ports one side of a group of connections may have.
#[derive(Clone, Debug)]
enum Ports {
    Range(u16, u16),
    Set(Vec<u16>),
}

impl Ports {
    fn of(ports: &[u16]) -> Ports {
        let mut set = ports.to_vec();
        set.sort_unstable();
        set.dedup();
        if set.len() <= MAX_PORT_SET {
            Ports::Set(set)
        } else {
            Ports::Range(set[0], set[set.len() - 1])
        }
    }

    /// A holds the port; continue on a match, else go to `miss`.
    fn check(&self, a: &mut Asm, miss: usize) {
        match self {
            Ports::Range(lo, hi) => {
                a.jump(JGE_K, u32::from(*lo), To::Next, To::Label(miss));
                a.jump(JGT_K, u32::from(*hi), To::Label(miss), To::Next);
            }
            Ports::Set(set) => {
                let hit = a.label();
                for p in set {
                    a.jump(JEQ_K, u32::from(*p), To::Label(hit), To::Next);
                }
                a.long_jump(miss);
                a.bind(hit);
            }
        }
    }
}

/// Connections between one local and one remote address.
struct Group {
    local: IpAddr,
    remote: IpAddr,
    local_ports: Ports,
    remote_ports: Ports,
}

/// Segments `src -> dst` whose ports fit; on a match the packet is kept, on a miss the
/// program goes to `miss`. X holds the TCP header offset.
#[allow(clippy::too_many_arguments)]
fn segment(
    a: &mut Asm,
    src_off: u32,
    dst_off: u32,
    src: IpAddr,
    dst: IpAddr,
    sp: &Ports,
    dp: &Ports,
    miss: usize,
) {
    for (i, w) in words(src).into_iter().enumerate() {
        a.op(LD_W_ABS, src_off + 4 * i as u32);
        a.expect(w, miss);
    }
    for (i, w) in words(dst).into_iter().enumerate() {
        a.op(LD_W_ABS, dst_off + 4 * i as u32);
        a.expect(w, miss);
    }
    a.op(LD_H_IND, k(TCP_SRC_PORT_OFFSET));
    sp.check(a, miss);
    a.op(LD_H_IND, k(TCP_DST_PORT_OFFSET));
    dp.check(a, miss);
    a.ret(SNAP);
}

fn groups(flows: &[&Flow]) -> Vec<Group> {
    let mut by_pair: std::collections::BTreeMap<(IpAddr, IpAddr), (Vec<u16>, Vec<u16>)> =
        Default::default();
    for f in flows {
        let e = by_pair.entry((f.local.ip(), f.remote.ip())).or_default();
        e.0.push(f.local.port());
        e.1.push(f.remote.port());
    }
    by_pair
        .into_iter()
        .map(|((local, remote), (lp, rp))| Group {
            local,
            remote,
            local_ports: Ports::of(&lp),
            remote_ports: Ports::of(&rp),
        })
        .collect()
}

/// Our own copies of packets leaving through loopback are dropped: the receiving copy is
/// enough (and a capture of both would see every local packet twice).
fn drop_loopback_copies(a: &mut Asm) {
    let not_lo_out = a.label();
    a.op(LD_W_ABS, SKF_AD_PKTTYPE);
    a.jump(JEQ_K, PACKET_OUTGOING, To::Next, To::Label(not_lo_out));
    a.op(LD_W_ABS, SKF_AD_IFINDEX);
    a.jump(JEQ_K, LOOPBACK_IFINDEX, To::Next, To::Label(not_lo_out));
    a.ret(0);
    a.bind(not_lo_out);
}

/// Every whole TCP segment of both families (optionally on one interface only), kept whole:
/// for `sniff`, which watches any connection.
pub fn tcp_filter(ifindex: Option<u32>) -> Vec<libc::sock_filter> {
    let mut a = Asm::default();
    let (keep, drop, not_v6) = (a.label(), a.label(), a.label());
    if let Some(ix) = ifindex {
        a.op(LD_W_ABS, SKF_AD_IFINDEX);
        a.jump(JEQ_K, ix, To::Next, To::Label(drop));
    }
    drop_loopback_copies(&mut a);
    a.op(LD_W_ABS, SKF_AD_PROTOCOL);
    a.jump(JEQ_K, ETH_P_IPV6, To::Next, To::Label(not_v6));
    a.op(LD_B_ABS, k(IPV6_NEXT_HEADER_OFFSET));
    a.jump(JEQ_K, proto(IPPROTO_TCP), To::Label(keep), To::Label(drop));
    a.bind(not_v6);
    a.jump(JEQ_K, ETH_P_IP, To::Next, To::Label(drop));
    a.op(LD_B_ABS, k(IPV4_PROTOCOL_OFFSET));
    a.jump(JEQ_K, proto(IPPROTO_TCP), To::Next, To::Label(drop));
    a.op(LD_H_ABS, k(IPV4_FRAGMENT_OFFSET));
    a.jump(JSET_K, FRAGMENT_BITS, To::Label(drop), To::Label(keep));
    a.bind(keep);
    a.ret(WHOLE);
    a.bind(drop);
    a.ret(0);
    a.finish()
}

/// How closely a capture filter matches the probed connections. Wider filters let more
/// through, which the I/O loop drops by its own match; they never miss a packet the
/// narrower one keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Width {
    /// Each address pair with its ports.
    Pairs,
    /// TCP to or from the connections' local addresses.
    Locals,
    /// All TCP and all ICMP errors of both families.
    Protocols,
}

impl Width {
    /// The next wider filter, if there is one.
    pub fn wider(self) -> Option<Width> {
        match self {
            Width::Pairs => Some(Width::Locals),
            Width::Locals => Some(Width::Protocols),
            Width::Protocols => None,
        }
    }
}

/// The narrowest filter for `flows` that fits in `MAX_PROGRAM` instructions, and its width.
pub fn fitting_filter(flows: &[Flow]) -> (Vec<libc::sock_filter>, Width) {
    let pairs: std::collections::HashSet<(IpAddr, IpAddr)> = flows
        .iter()
        .map(|f| (f.local.ip(), f.remote.ip()))
        .collect();
    let mut width = if pairs.len() <= MAX_GROUPS {
        Width::Pairs
    } else {
        Width::Locals
    };
    loop {
        let prog = filter_of_width(flows, width);
        match width.wider() {
            Some(wider) if prog.len() > MAX_PROGRAM => width = wider,
            _ => return (prog, width),
        }
    }
}

/// TCP segments of `flows` in either direction, and ICMP / ICMPv6 packets addressed to any
/// of their local addresses (the ICMP quote is checked in userspace). Connections are
/// grouped by address pair, each group matching its local port range (or set) and remote
/// port set, so ten thousand connections to one service make a program of a few
/// instructions. Beyond `MAX_GROUPS` address pairs, TCP is matched on local addresses only,
/// and where even that would be too long, on the protocol alone (`fitting_filter`).
/// Our own copies of packets leaving through loopback are dropped: the receiving copy
/// is enough.
pub fn flows_filter(flows: &[Flow]) -> Vec<libc::sock_filter> {
    fitting_filter(flows).0
}

/// A program that keeps nothing: a capture socket opened with it stays quiet until its real
/// filter is set.
pub fn drop_all() -> Vec<libc::sock_filter> {
    let mut a = Asm::default();
    a.ret(0);
    a.finish()
}

/// `flows_filter` at a given width.
pub fn filter_of_width(flows: &[Flow], width: Width) -> Vec<libc::sock_filter> {
    let mut a = Asm::default();
    let (v4, v6) = (a.label(), a.label());
    let (not_v4, not_v6) = (a.label(), a.label());
    drop_loopback_copies(&mut a);
    a.op(LD_W_ABS, SKF_AD_PROTOCOL);
    a.jump(JEQ_K, ETH_P_IP, To::Next, To::Label(not_v4));
    a.long_jump(v4);
    a.bind(not_v4);
    a.jump(JEQ_K, ETH_P_IPV6, To::Next, To::Label(not_v6));
    a.long_jump(v6);
    a.bind(not_v6);
    a.ret(0);

    for is_v6 in [false, true] {
        let family: Vec<&Flow> = flows.iter().filter(|f| f.is_ipv6() == is_v6).collect();
        a.bind(if is_v6 { v6 } else { v4 });
        family_filter(&mut a, &family, Header::of(is_v6), width);
    }
    a.finish()
}

/// Where one IP family keeps the fields the filter reads.
#[derive(Clone, Copy)]
struct Header {
    v6: bool,
    /// The protocol (IPv4) or next header (IPv6) field.
    proto_off: u32,
    /// ICMP for IPv4, ICMPv6 for IPv6.
    icmp_proto: u32,
    src_off: u32,
    dst_off: u32,
}

impl Header {
    fn of(v6: bool) -> Header {
        if v6 {
            Header {
                v6,
                proto_off: k(IPV6_NEXT_HEADER_OFFSET),
                icmp_proto: proto(IPPROTO_ICMPV6),
                src_off: k(IPV6_SRC_OFFSET),
                dst_off: k(IPV6_DST_OFFSET),
            }
        } else {
            Header {
                v6,
                proto_off: k(IPV4_PROTOCOL_OFFSET),
                icmp_proto: proto(IPPROTO_ICMP),
                src_off: k(IPV4_SRC_OFFSET),
                dst_off: k(IPV4_DST_OFFSET),
            }
        }
    }
}

/// One family's part of [`flows_filter`]: its TCP segments, then the ICMP errors sent to its
/// local addresses; anything else is dropped.
fn family_filter(a: &mut Asm, family: &[&Flow], h: Header, width: Width) {
    let mut locals: Vec<IpAddr> = family.iter().map(|f| f.local.ip()).collect();
    locals.sort();
    locals.dedup();
    let (tcp, icmp, not_tcp, not_icmp) = (a.label(), a.label(), a.label(), a.label());
    a.op(LD_B_ABS, h.proto_off);
    a.jump(JEQ_K, proto(IPPROTO_TCP), To::Next, To::Label(not_tcp));
    a.long_jump(tcp);
    a.bind(not_tcp);
    a.jump(JEQ_K, h.icmp_proto, To::Next, To::Label(not_icmp));
    a.long_jump(icmp);
    a.bind(not_icmp);
    a.ret(0);

    a.bind(tcp);
    tcp_header_in_x(a, h.v6);
    if width == Width::Protocols {
        a.ret(SNAP);
        a.bind(icmp);
        a.ret(SNAP);
        return;
    }
    let groups = groups(family);
    if width == Width::Pairs && groups.len() <= MAX_GROUPS {
        for g in &groups {
            let (reverse, next) = (a.label(), a.label());
            let (lp, rp) = (&g.local_ports, &g.remote_ports);
            segment(a, h.src_off, h.dst_off, g.local, g.remote, lp, rp, reverse);
            a.bind(reverse);
            segment(a, h.src_off, h.dst_off, g.remote, g.local, rp, lp, next);
            a.bind(next);
        }
    } else {
        for ip in &locals {
            for off in [h.src_off, h.dst_off] {
                keep_address(a, off, *ip);
            }
        }
    }
    a.ret(0);

    a.bind(icmp);
    for ip in locals {
        keep_address(a, h.dst_off, ip);
    }
    a.ret(0);
}

/// Sets X to the TCP header's offset. IPv4 fragments are dropped here: a fragment is not a
/// whole segment.
fn tcp_header_in_x(a: &mut Asm, v6: bool) {
    if v6 {
        // The TCP header follows the fixed header directly (extension headers are skipped).
        a.op(LDX_IMM, k(IPV6_HEADER_LEN));
    } else {
        let whole = a.label();
        a.op(LD_H_ABS, k(IPV4_FRAGMENT_OFFSET));
        a.jump(JSET_K, FRAGMENT_BITS, To::Next, To::Label(whole));
        a.ret(0);
        a.bind(whole);
        // X = 4 * (byte 0 & 0xf): the IHL, where the TCP header starts.
        a.op(LDX_B_MSH, 0);
    }
}

/// Keeps the packet if the address at `off` is `ip`; else goes on after this test.
fn keep_address(a: &mut Asm, off: u32, ip: IpAddr) {
    let next = a.label();
    for (i, w) in words(ip).into_iter().enumerate() {
        a.op(LD_W_ABS, off + 4 * i as u32);
        a.expect(w, next);
    }
    a.ret(SNAP);
    a.bind(next);
}

const LDX_IMM: u16 = 0x01;

/// What the kernel knows of a packet besides its bytes, for `run`.
#[cfg(test)]
#[derive(Clone, Copy)]
pub struct Meta {
    pub ethertype: u16,
    pub pkttype: u32,
    pub ifindex: u32,
}

/// Runs a classic BPF program the way the kernel does for the subset emitted here. For tests.
#[cfg(test)]
pub fn run(prog: &[libc::sock_filter], meta: Meta, pkt: &[u8]) -> u32 {
    let (mut acc, mut x, mut pc) = (0u32, 0u32, 0usize);
    let load = |off: usize, size: usize| -> Option<u32> {
        let b = pkt.get(off..off + size)?;
        Some(b.iter().fold(0u32, |v, &byte| (v << 8) | u32::from(byte)))
    };
    loop {
        let ins = prog[pc];
        pc += 1;
        match ins.code {
            LD_W_ABS if ins.k == SKF_AD_PROTOCOL => acc = u32::from(meta.ethertype),
            LD_W_ABS if ins.k == SKF_AD_PKTTYPE => acc = meta.pkttype,
            LD_W_ABS if ins.k == SKF_AD_IFINDEX => acc = meta.ifindex,
            LD_W_ABS => match load(ins.k as usize, 4) {
                Some(v) => acc = v,
                None => return 0,
            },
            LD_H_ABS | LD_B_ABS | LD_H_IND => {
                let size = if ins.code == LD_B_ABS { 1 } else { 2 };
                let off = ins.k as usize + if ins.code == LD_H_IND { x as usize } else { 0 };
                match load(off, size) {
                    Some(v) => acc = v,
                    None => return 0,
                }
            }
            LDX_B_MSH => match pkt.get(ins.k as usize) {
                Some(b) => x = u32::from(b & 0xf) * 4,
                None => return 0,
            },
            LDX_IMM => x = ins.k,
            JA => pc += ins.k as usize,
            JEQ_K => pc += usize::from(if acc == ins.k { ins.jt } else { ins.jf }),
            JGE_K => pc += usize::from(if acc >= ins.k { ins.jt } else { ins.jf }),
            JGT_K => pc += usize::from(if acc > ins.k { ins.jt } else { ins.jf }),
            JSET_K => pc += usize::from(if acc & ins.k != 0 { ins.jt } else { ins.jf }),
            RET_K => return ins.k,
            other => panic!("unexpected BPF op {other:#x}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::testkit::{ACK4, ICMP4, PROBE4, PROBE6, RST6, icmp6};

    const V4: Meta = Meta {
        ethertype: 0x0800,
        pkttype: 0,
        ifindex: 2,
    };
    const V6: Meta = Meta {
        ethertype: 0x86dd,
        pkttype: 0,
        ifindex: 2,
    };
    const ARP: Meta = Meta {
        ethertype: 0x0806,
        pkttype: 0,
        ifindex: 2,
    };

    fn flow(l: &str, r: &str) -> Flow {
        Flow {
            local: l.parse().unwrap(),
            remote: r.parse().unwrap(),
        }
    }

    fn v4() -> Flow {
        flow("198.18.0.2:40000", "198.51.100.2:9000")
    }

    fn v6() -> Flow {
        flow("[2001:db8:18::2]:40000", "[2001:db8:51::2]:9000")
    }

    #[test]
    fn passes_the_flows_segments_both_ways_and_icmp_to_the_local_address() {
        let prog = flows_filter(&[v4(), v6()]);
        assert_eq!(run(&prog, V4, &PROBE4), SNAP);
        assert_eq!(run(&prog, V4, &ACK4), SNAP);
        assert_eq!(run(&prog, V4, &ICMP4), SNAP);
        assert_eq!(run(&prog, V6, &PROBE6), SNAP);
        assert_eq!(run(&prog, V6, &RST6), SNAP);
        assert_eq!(run(&prog, V6, &icmp6()), SNAP);
    }

    #[test]
    fn drops_other_ports_addresses_families_and_ethertypes() {
        let prog = flows_filter(&[v4()]);
        let mut other_port = ACK4;
        other_port[22] = 0x9d;
        assert_eq!(run(&prog, V4, &other_port), 0);
        let mut other_addr = ACK4;
        other_addr[15] = 3;
        assert_eq!(run(&prog, V4, &other_addr), 0);
        let mut fragment = ACK4;
        fragment[7] = 1;
        assert_eq!(run(&prog, V4, &fragment), 0);
        assert_eq!(run(&prog, V6, &PROBE6), 0, "no IPv6 flow asked for");
        assert_eq!(run(&prog, ARP, &PROBE4), 0, "ARP");
        assert_eq!(run(&prog, V4, &PROBE4[..10]), 0, "short packet");
    }

    #[test]
    fn same_address_flows_on_loopback_match_by_port_in_both_directions() {
        let prog = flows_filter(&[flow("198.18.0.2:40000", "198.18.0.2:9000")]);
        let mut out = PROBE4;
        out[16..20].copy_from_slice(&[198, 18, 0, 2]);
        assert_eq!(run(&prog, V4, &out), SNAP);
        let mut back = out;
        back[20..24].copy_from_slice(&[0x23, 0x28, 0x9c, 0x40]);
        assert_eq!(run(&prog, V4, &back), SNAP);
        back[21] = 0x29;
        assert_eq!(run(&prog, V4, &back), 0);
    }

    #[test]
    fn drops_our_own_copy_of_packets_leaving_through_loopback() {
        let prog = flows_filter(&[v4()]);
        let out_lo = Meta {
            pkttype: PACKET_OUTGOING,
            ifindex: 1,
            ..V4
        };
        let in_lo = Meta {
            pkttype: 0,
            ifindex: 1,
            ..V4
        };
        let out_veth = Meta {
            pkttype: PACKET_OUTGOING,
            ifindex: 2,
            ..V4
        };
        assert_eq!(run(&prog, out_lo, &PROBE4), 0);
        assert_eq!(run(&prog, in_lo, &PROBE4), SNAP);
        assert_eq!(run(&prog, out_veth, &PROBE4), SNAP);
    }

    #[test]
    fn ten_thousand_connections_to_one_service_make_a_short_program() {
        let flows: Vec<Flow> = (0..10_000)
            .map(|i| flow(&format!("198.18.0.2:{}", 20000 + i), "198.51.100.2:9000"))
            .collect();
        let prog = flows_filter(&flows);
        assert!(prog.len() < 100, "{} instructions", prog.len());
        let with_ports = |l: u16, r: u16| {
            let mut p = ACK4;
            p[20..22].copy_from_slice(&r.to_be_bytes());
            p[22..24].copy_from_slice(&l.to_be_bytes());
            p
        };
        assert_eq!(run(&prog, V4, &with_ports(20000, 9000)), SNAP);
        assert_eq!(run(&prog, V4, &with_ports(29999, 9000)), SNAP);
        assert_eq!(run(&prog, V4, &with_ports(19999, 9000)), 0);
        assert_eq!(run(&prog, V4, &with_ports(30000, 9000)), 0);
        assert_eq!(run(&prog, V4, &with_ports(25000, 9001)), 0);
    }

    #[test]
    fn thousands_of_address_pairs_fall_back_to_local_addresses() {
        let flows: Vec<Flow> = (0..2000)
            .map(|i| {
                flow(
                    "198.18.0.2:40000",
                    &format!("198.51.{}.{}:9000", i / 250, 1 + i % 250),
                )
            })
            .collect();
        let prog = flows_filter(&flows);
        assert!(prog.len() <= 4096, "{} instructions", prog.len());
        assert_eq!(run(&prog, V4, &ACK4), SNAP);
        let mut other_local = ACK4;
        other_local[19] = 9;
        assert_eq!(run(&prog, V4, &other_local), 0);
    }

    /// 100,000 connections over 256 remote and 64 local addresses (issue 19): the program fits,
    /// wider than the pairs, and still keeps every probed connection's segments.
    #[test]
    fn any_number_of_addresses_makes_a_program_that_fits() {
        let flows: Vec<Flow> = (0..100_000u32)
            .map(|i| {
                let (l, r) = (i % 64, (i / 64) % 256);
                flow(
                    &format!("198.18.{}.{}:{}", l / 250, 1 + l % 250, 20000 + i % 40000),
                    &format!("198.51.100.{}:{}", r, 9000 + (i / 16384)),
                )
            })
            .collect();
        let (prog, width) = fitting_filter(&flows);
        assert!(prog.len() <= MAX_PROGRAM, "{} instructions", prog.len());
        assert_eq!(width, Width::Locals);
        // ACK4 goes to 198.18.0.2, one of the 64 local addresses; 198.18.1.1 is none.
        assert_eq!(run(&prog, V4, &ACK4), SNAP);
        let mut other = ACK4;
        other[16..20].copy_from_slice(&[198, 18, 1, 1]);
        assert_eq!(run(&prog, V4, &other), 0);
        // 72 address pairs with 16 scattered local ports each (the lab's case): the pairs
        // program is too long for a socket, the local addresses' is not.
        let flows: Vec<Flow> = (0..72 * 16u32)
            .map(|i| {
                let port = 30000 + (i % 16) * 72 + i / 16;
                flow(
                    &format!("198.18.0.10:{port}"),
                    &format!("198.51.100.{}:9600", 10 + i / 16),
                )
            })
            .collect();
        assert!(filter_of_width(&flows, Width::Pairs).len() > MAX_PROGRAM);
        let (prog, width) = fitting_filter(&flows);
        assert_eq!(width, Width::Locals);
        assert!(prog.len() <= MAX_PROGRAM);
        // 3,000 local addresses do not fit even one by one: the protocol alone.
        let flows: Vec<Flow> = (0..3000u32)
            .map(|i| {
                flow(
                    &format!("198.18.{}.{}:40000", i / 250, 1 + i % 250),
                    "198.51.100.2:9000",
                )
            })
            .collect();
        let (prog, width) = fitting_filter(&flows);
        assert_eq!(width, Width::Protocols);
        assert!(prog.len() <= MAX_PROGRAM);
        assert_eq!(run(&prog, V4, &ACK4), SNAP);
        assert_eq!(Width::Protocols.wider(), None);
    }

    #[test]
    fn tcp_filter_keeps_tcp_of_both_families_and_nothing_else() {
        let prog = tcp_filter(None);
        assert_eq!(run(&prog, V4, &PROBE4), WHOLE);
        assert_eq!(run(&prog, V6, &PROBE6), WHOLE);
        assert_eq!(run(&prog, V4, &ICMP4), 0);
        assert_eq!(run(&prog, V6, &icmp6()), 0);
        assert_eq!(run(&prog, ARP, &PROBE4), 0);
        let mut first_fragment = PROBE4;
        first_fragment[6] |= 0x20;
        assert_eq!(run(&prog, V4, &first_fragment), 0);
        assert_eq!(run(&prog, V4, &PROBE4[..5]), 0, "short packet");
        let out_lo = Meta {
            pkttype: PACKET_OUTGOING,
            ifindex: 1,
            ..V4
        };
        assert_eq!(
            run(&prog, out_lo, &PROBE4),
            0,
            "our own copy leaving through lo"
        );
    }

    #[test]
    fn tcp_filter_on_one_interface() {
        let prog = tcp_filter(Some(7));
        assert_eq!(run(&prog, Meta { ifindex: 7, ..V4 }, &PROBE4), WHOLE);
        assert_eq!(run(&prog, Meta { ifindex: 2, ..V4 }, &PROBE4), 0);
    }

    #[test]
    fn many_flows_still_assemble_with_short_jumps() {
        let flows: Vec<Flow> = (1..=60)
            .map(|p| flow(&format!("198.18.0.2:{}", 40000 + p), "198.51.100.2:9000"))
            .collect();
        let prog = flows_filter(&flows);
        let mut last = ACK4;
        last[22..24].copy_from_slice(&(40060u16).to_be_bytes());
        assert_eq!(run(&prog, V4, &last), SNAP);
    }
}
