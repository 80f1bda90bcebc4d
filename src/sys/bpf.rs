//! Classic BPF programs for the capture socket, so that only the probed connections' TCP
//! segments and the ICMP errors sent to their local addresses reach userspace.
//!
//! The programs run on AF_PACKET SOCK_DGRAM sockets: offset 0 is the IP header, and the
//! ethertype comes from the ancillary `SKF_AD_PROTOCOL` load.

use std::net::IpAddr;

use crate::flow::Flow;

const LD_W_ABS: u16 = 0x20;
const LD_H_ABS: u16 = 0x28;
const LD_B_ABS: u16 = 0x30;
const LD_H_IND: u16 = 0x48;
const LDX_B_MSH: u16 = 0xb1;
const JA: u16 = 0x05;
const JEQ_K: u16 = 0x15;
const JSET_K: u16 = 0x45;
const RET_K: u16 = 0x06;

const SKF_AD_PROTOCOL: u32 = 0xffff_f000;
const ETH_P_IP: u32 = 0x0800;
const ETH_P_IPV6: u32 = 0x86dd;
/// Bytes kept of an accepted packet: enough for any header and an ICMP quote.
const SNAP: u32 = 0xffff;

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

/// Matches `src -> dst` on the 4-tuple at the given header offsets; on a match returns the
/// packet, on a miss goes to `miss`. X holds the TCP header offset.
fn tuple(
    a: &mut Asm,
    src_off: u32,
    dst_off: u32,
    src: std::net::SocketAddr,
    dst: std::net::SocketAddr,
    miss: usize,
) {
    for (i, w) in words(src.ip()).into_iter().enumerate() {
        a.op(LD_W_ABS, src_off + 4 * i as u32);
        a.expect(w, miss);
    }
    for (i, w) in words(dst.ip()).into_iter().enumerate() {
        a.op(LD_W_ABS, dst_off + 4 * i as u32);
        a.expect(w, miss);
    }
    a.op(LD_H_IND, 0);
    a.expect(u32::from(src.port()), miss);
    a.op(LD_H_IND, 2);
    a.expect(u32::from(dst.port()), miss);
    a.ret(SNAP);
}

/// TCP segments of `flows` in either direction, and ICMP / ICMPv6 packets addressed to any of
/// their local addresses (the ICMP quote is checked in userspace).
pub fn flows_filter(flows: &[Flow]) -> Vec<libc::sock_filter> {
    let mut a = Asm::default();
    let (v4, v6) = (a.label(), a.label());
    let (not_v4, not_v6) = (a.label(), a.label());
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
        let mut locals: Vec<IpAddr> = family.iter().map(|f| f.local.ip()).collect();
        locals.sort();
        locals.dedup();
        let (tcp, icmp, not_tcp, not_icmp) = (a.label(), a.label(), a.label(), a.label());
        a.bind(if is_v6 { v6 } else { v4 });
        let (proto_off, icmp_proto, src_off, dst_off) = if is_v6 {
            (6, 58, 8, 24)
        } else {
            (9, 1, 12, 16)
        };
        a.op(LD_B_ABS, proto_off);
        a.jump(JEQ_K, 6, To::Next, To::Label(not_tcp));
        a.long_jump(tcp);
        a.bind(not_tcp);
        a.jump(JEQ_K, icmp_proto, To::Next, To::Label(not_icmp));
        a.long_jump(icmp);
        a.bind(not_icmp);
        a.ret(0);

        a.bind(tcp);
        if is_v6 {
            // The TCP header follows the fixed header directly (extension headers are skipped).
            a.op(LDX_IMM, 40);
        } else {
            let whole = a.label();
            a.op(LD_H_ABS, 6);
            a.jump(JSET_K, 0x1fff, To::Next, To::Label(whole));
            a.ret(0);
            a.bind(whole);
            a.op(LDX_B_MSH, 0);
        }
        for f in &family {
            let (reverse, next) = (a.label(), a.label());
            tuple(&mut a, src_off, dst_off, f.local, f.remote, reverse);
            a.bind(reverse);
            tuple(&mut a, src_off, dst_off, f.remote, f.local, next);
            a.bind(next);
        }
        a.ret(0);

        a.bind(icmp);
        for ip in locals {
            let next = a.label();
            for (i, w) in words(ip).into_iter().enumerate() {
                a.op(LD_W_ABS, dst_off + 4 * i as u32);
                a.expect(w, next);
            }
            a.ret(SNAP);
            a.bind(next);
        }
        a.ret(0);
    }
    a.finish()
}

const LDX_IMM: u16 = 0x01;

/// Runs a classic BPF program the way the kernel does for the subset emitted here. For tests.
#[cfg(test)]
pub fn run(prog: &[libc::sock_filter], ethertype: u16, pkt: &[u8]) -> u32 {
    let (mut acc, mut x, mut pc) = (0u32, 0u32, 0usize);
    let load = |off: usize, size: usize| -> Option<u32> {
        let b = pkt.get(off..off + size)?;
        Some(b.iter().fold(0u32, |v, &byte| (v << 8) | u32::from(byte)))
    };
    loop {
        let ins = prog[pc];
        pc += 1;
        match ins.code {
            LD_W_ABS if ins.k == SKF_AD_PROTOCOL => acc = u32::from(ethertype),
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
            JSET_K => pc += usize::from(if acc & ins.k != 0 { ins.jt } else { ins.jf }),
            RET_K => return ins.k,
            other => panic!("unexpected BPF op {other:#x}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::fixtures::{ACK4, ICMP4, PROBE4, PROBE6, RST6, icmp6};

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
        assert_eq!(run(&prog, 0x0800, &PROBE4), SNAP);
        assert_eq!(run(&prog, 0x0800, &ACK4), SNAP);
        assert_eq!(run(&prog, 0x0800, &ICMP4), SNAP);
        assert_eq!(run(&prog, 0x86dd, &PROBE6), SNAP);
        assert_eq!(run(&prog, 0x86dd, &RST6), SNAP);
        assert_eq!(run(&prog, 0x86dd, &icmp6()), SNAP);
    }

    #[test]
    fn drops_other_ports_addresses_families_and_ethertypes() {
        let prog = flows_filter(&[v4()]);
        let mut other_port = ACK4;
        other_port[22] = 0x9d;
        assert_eq!(run(&prog, 0x0800, &other_port), 0);
        let mut other_addr = ACK4;
        other_addr[15] = 3;
        assert_eq!(run(&prog, 0x0800, &other_addr), 0);
        let mut fragment = ACK4;
        fragment[7] = 1;
        assert_eq!(run(&prog, 0x0800, &fragment), 0);
        assert_eq!(run(&prog, 0x86dd, &PROBE6), 0, "no IPv6 flow asked for");
        assert_eq!(run(&prog, 0x0806, &PROBE4), 0, "ARP");
        assert_eq!(run(&prog, 0x0800, &PROBE4[..10]), 0, "short packet");
    }

    #[test]
    fn same_address_flows_on_loopback_match_by_port_in_both_directions() {
        let prog = flows_filter(&[flow("198.18.0.2:40000", "198.18.0.2:9000")]);
        let mut out = PROBE4;
        out[16..20].copy_from_slice(&[198, 18, 0, 2]);
        assert_eq!(run(&prog, 0x0800, &out), SNAP);
        let mut back = out;
        back[20..24].copy_from_slice(&[0x23, 0x28, 0x9c, 0x40]);
        assert_eq!(run(&prog, 0x0800, &back), SNAP);
        back[21] = 0x29;
        assert_eq!(run(&prog, 0x0800, &back), 0);
    }

    #[test]
    fn many_flows_still_assemble_with_short_jumps() {
        let flows: Vec<Flow> = (1..=60)
            .map(|p| flow(&format!("198.18.0.2:{}", 40000 + p), "198.51.100.2:9000"))
            .collect();
        let prog = flows_filter(&flows);
        let mut last = ACK4;
        last[22..24].copy_from_slice(&(40060u16).to_be_bytes());
        assert_eq!(run(&prog, 0x0800, &last), SNAP);
    }
}
