//! What netfilter's connection tracking knows of a connection (ctnetlink, `IPCTNL_MSG_CT_GET`),
//! asked before anything but the canonical probe is sent on it (README "Do no harm"), and for
//! the addresses its answers carry on the wire when it is NAT-ed on this host.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use netlink_packet_core::{
    NLA_TYPE_MASK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload, NetlinkSerializable,
    Nla,
};
use netlink_packet_netfilter::conntrack::{
    ConntrackAttribute, ConntrackMessage, IPTuple, ProtoTuple, Protocol, Status, Tuple,
};
use netlink_packet_netfilter::nftables::NfTablesMessage;
use netlink_packet_netfilter::nftables::TableMessage;
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
};
use netlink_sys::{Socket, SocketAddr as NlAddr, protocols::NETLINK_NETFILTER};

use crate::flow::Flow;

/// A direction of a tracked connection: from `src` to `dst`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tuple4 {
    pub src: SocketAddr,
    pub dst: SocketAddr,
}

/// The conntrack entry of a connection, seen from the local socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    /// How the peer's segments look on the wire, before netfilter undoes any NAT: equal to
    /// remote → local unless the flow is NAT-ed on this host.
    pub incoming: Tuple4,
    /// Network address translation on this host (SNAT, DNAT, masquerade, redirect).
    pub nat: bool,
    /// Sequence-number adjustment (SYNPROXY, NAT helpers): the wire's numbers differ from
    /// the socket's.
    pub seq_adjust: bool,
}

impl Entry {
    /// Whether segments of the flow carry other addresses on the wire than the socket's.
    pub fn translated(&self, flow: &Flow) -> bool {
        self.incoming.src != flow.remote || self.incoming.dst != flow.local
    }
}

/// What conntrack says about one flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tracking {
    /// The flow has an entry.
    Entry(Entry),
    /// No entry, although this namespace tracks connections (other entries, or a ruleset):
    /// conntrack lost it (`conntrack -F`, a full table, a firewall started late).
    Missing,
    /// Nothing here tracks connections: no conntrack, no entries and no ruleset.
    Untracked,
}

/// A ctnetlink socket in the calling thread's network namespace.
pub struct Conntrack {
    socket: Socket,
    buf: Vec<u8>,
    /// Whether the namespace tracks connections (by family), and when that was asked: one
    /// answer serves every lookup for a while (a sweep asks for thousands of flows).
    tracks: [Option<(bool, Instant)>; 2],
    /// Every entry by family, from one dump (`load_table`), and when it was read.
    table: [Option<(HashMap<TupleKey, RawEntry>, Instant)>; 2],
}

/// A direction's addresses as `key` writes them.
type TupleKey = (IpAddr, u16, IpAddr, u16);

/// How long one answer to "does this namespace track connections?" is reused.
const TRACKS_FRESH: Duration = Duration::from_secs(1);

impl Conntrack {
    /// `None` where the kernel has no netfilter netlink at all (nothing can track then).
    pub fn open() -> io::Result<Option<Conntrack>> {
        let mut socket = match Socket::new(NETLINK_NETFILTER) {
            Ok(s) => s,
            Err(e) if e.raw_os_error() == Some(libc::EPROTONOSUPPORT) => return Ok(None),
            Err(e) => return Err(e),
        };
        socket.bind_auto()?;
        socket.connect(&NlAddr::new(0, 0))?;
        Ok(Some(Conntrack {
            socket,
            buf: vec![0; 64 * 1024],
            tracks: [None, None],
            table: [None, None],
        }))
    }

    /// What conntrack knows of `flow` (local → remote as the socket sees it).
    pub fn track(&mut self, flow: &Flow) -> io::Result<Tracking> {
        if let Some(entry) = self.entry(flow)? {
            return Ok(Tracking::Entry(entry));
        }
        if self.namespace_tracks(flow)? {
            Ok(Tracking::Missing)
        } else {
            Ok(Tracking::Untracked)
        }
    }

    /// Whether this namespace tracks connections of the flow's family: it has entries, or a
    /// ruleset that may match on conntrack state.
    fn namespace_tracks(&mut self, flow: &Flow) -> io::Result<bool> {
        let slot = usize::from(flow.is_ipv6());
        if let Some((tracks, at)) = self.tracks[slot]
            && at.elapsed() < TRACKS_FRESH
        {
            return Ok(tracks);
        }
        let tracks = self.any_entries() || self.any_ruleset()?;
        self.tracks[slot] = Some((tracks, Instant::now()));
        Ok(tracks)
    }

    /// The entry that holds `flow` in either direction; conntrack finds an entry by the tuple
    /// of either direction.
    fn entry(&mut self, flow: &Flow) -> io::Result<Option<Entry>> {
        let slot = usize::from(flow.is_ipv6());
        if let Some((table, at)) = &self.table[slot]
            && at.elapsed() < TRACKS_FRESH
        {
            let found = table.get(&key(flow.local, flow.remote));
            return Ok(found.and_then(|raw| raw.seen_from(flow)));
        }
        let family = family_of(flow);
        let get = ConntrackMessage::Get(vec![ConntrackAttribute::CtaTupleOrig(tuple(
            flow.local,
            flow.remote,
        ))]);
        let msg = NetfilterMessage::new(NetfilterHeader::new(family, 0, 0), get);
        let answers = self.ask(NLM_F_REQUEST, msg)?;
        Ok(answers.iter().find_map(|m| entry_of(m, flow)))
    }

    /// Reads every entry of one family in one dump, so that lookups for the next second are
    /// answered from it: a sweep asks about thousands of flows at once.
    pub fn load_table(&mut self, v6: bool) -> io::Result<()> {
        let family = if v6 {
            NetfilterProtoFamily::IPv6
        } else {
            NetfilterProtoFamily::IPv4
        };
        let dump = ConntrackMessage::Get(Vec::new());
        let msg = NetfilterMessage::new(NetfilterHeader::new(family, 0, 0), dump);
        let answers = self.ask(NLM_F_REQUEST | NLM_F_DUMP, msg)?;
        let mut table = HashMap::with_capacity(answers.len() * 2);
        for raw in answers.iter().filter_map(raw_of) {
            table.insert(key(raw.orig.src, raw.orig.dst), raw);
            table.insert(key(raw.reply.src, raw.reply.dst), raw);
        }
        let slot = usize::from(v6);
        self.tracks[slot] = Some((!table.is_empty() || self.any_ruleset()?, Instant::now()));
        self.table[slot] = Some((table, Instant::now()));
        Ok(())
    }

    /// Whether conntrack holds any entry in this namespace: its own count
    /// (`net.netfilter.nf_conntrack_count`, absent without conntrack). A dump would walk
    /// the whole host's table to find out (5 ms here with the lab's other namespaces).
    fn any_entries(&mut self) -> bool {
        super::sysctl::read_u64_opt("net.netfilter.nf_conntrack_count")
            .ok()
            .flatten()
            .is_some_and(|n| n > 0)
    }

    /// Whether this namespace has an nftables ruleset (iptables-nft included), which may
    /// match on conntrack state even while the table is empty.
    fn any_ruleset(&mut self) -> io::Result<bool> {
        let get = NfTablesMessage::GetTable(TableMessage {
            attributes: Vec::new(),
        });
        let msg = NetfilterMessage::new(
            NetfilterHeader::new(NetfilterProtoFamily::Unspec, 0, 0),
            get,
        );
        Ok(!self.ask_first(NLM_F_REQUEST | NLM_F_DUMP, msg)?.is_empty())
    }

    /// Sends one request and collects every message of its answer; ENOENT is no answer.
    fn ask(&mut self, flags: u16, msg: NetfilterMessage) -> io::Result<Vec<NetfilterMessage>> {
        self.exchange(flags, msg, usize::MAX)
    }

    /// Like `ask`, but a dump stops counting after its first message (it is drained all
    /// the same, so the socket is clean for the next request).
    fn ask_first(
        &mut self,
        flags: u16,
        msg: NetfilterMessage,
    ) -> io::Result<Vec<NetfilterMessage>> {
        self.exchange(flags, msg, 1)
    }

    fn exchange(
        &mut self,
        flags: u16,
        msg: NetfilterMessage,
        keep: usize,
    ) -> io::Result<Vec<NetfilterMessage>> {
        self.socket.send(
            &super::netlink_request(flags, NetlinkPayload::InnerMessage(msg)),
            0,
        )?;
        let dump = flags & NLM_F_DUMP != 0;
        let mut out = Vec::new();
        loop {
            let n = self.socket.recv(&mut &mut self.buf[..], 0)?;
            let mut at = 0;
            while at < n {
                let msg = NetlinkMessage::<NetfilterMessage>::deserialize(&self.buf[at..n])
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                let len = msg.header.length as usize;
                match msg.payload {
                    NetlinkPayload::InnerMessage(m) => {
                        if out.len() < keep {
                            out.push(m);
                        }
                        if !dump {
                            return Ok(out);
                        }
                    }
                    NetlinkPayload::Done(_) => return Ok(out),
                    NetlinkPayload::Error(e) => {
                        return match e.code.map(|c| -c.get()) {
                            None | Some(libc::ENOENT) => Ok(out),
                            Some(code) => Err(io::Error::from_raw_os_error(code)),
                        };
                    }
                    _ => {}
                }
                if len == 0 {
                    break;
                }
                at += len;
            }
        }
    }
}

fn family_of(flow: &Flow) -> NetfilterProtoFamily {
    if flow.is_ipv6() {
        NetfilterProtoFamily::IPv6
    } else {
        NetfilterProtoFamily::IPv4
    }
}

/// The ctnetlink tuple of TCP from `src` to `dst`.
fn tuple(src: SocketAddr, dst: SocketAddr) -> Vec<Tuple> {
    vec![
        Tuple::Ip(vec![
            IPTuple::SourceAddress(src.ip()),
            IPTuple::DestinationAddress(dst.ip()),
        ]),
        Tuple::Proto(vec![
            ProtoTuple::Protocol(Protocol::Tcp),
            ProtoTuple::SourcePort(src.port()),
            ProtoTuple::DestinationPort(dst.port()),
        ]),
    ]
}

/// A tuple attribute as addresses, if it has both addresses and both ports.
fn tuple4(parts: &[Tuple]) -> Option<Tuple4> {
    let (mut src, mut dst, mut sport, mut dport) = (None, None, None, None);
    for part in parts {
        match part {
            Tuple::Ip(ips) => {
                for ip in ips {
                    match ip {
                        IPTuple::SourceAddress(a) => src = Some(*a),
                        IPTuple::DestinationAddress(a) => dst = Some(*a),
                        _ => {}
                    }
                }
            }
            Tuple::Proto(protos) => {
                for p in protos {
                    match p {
                        ProtoTuple::SourcePort(port) => sport = Some(*port),
                        ProtoTuple::DestinationPort(port) => dport = Some(*port),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Some(Tuple4 {
        src: SocketAddr::new(src?, sport?),
        dst: SocketAddr::new(dst?, dport?),
    })
}

/// Compares addresses as the socket and conntrack write them (no scope, no flow label).
fn same(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && canonical(a.ip()) == canonical(b.ip())
}

fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// The entry a GET answered with, seen from `flow`'s socket: whichever direction is the
/// socket's own (local → remote), the other is what arrives on the wire.
fn entry_of(msg: &NetfilterMessage, flow: &Flow) -> Option<Entry> {
    raw_of(msg)?.seen_from(flow)
}

/// An entry as conntrack keeps it: both directions, and what it does to them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct RawEntry {
    orig: Tuple4,
    reply: Tuple4,
    nat: bool,
    seq_adjust: bool,
}

impl RawEntry {
    /// The entry seen from `flow`'s socket: whichever direction is the socket's own (local →
    /// remote), the other is what arrives on the wire.
    fn seen_from(&self, flow: &Flow) -> Option<Entry> {
        let ours = |t: &Tuple4| same(t.src, flow.local) && same(t.dst, flow.remote);
        let incoming = if ours(&self.orig) {
            self.reply
        } else if ours(&self.reply) {
            self.orig
        } else {
            return None;
        };
        Some(Entry {
            incoming,
            nat: self.nat,
            seq_adjust: self.seq_adjust,
        })
    }
}

/// The entry in a conntrack message.
fn raw_of(msg: &NetfilterMessage) -> Option<RawEntry> {
    let NetfilterMessageInner::Conntrack(ConntrackMessage::New(attrs)) = &msg.inner else {
        return None;
    };
    let (mut orig, mut reply, mut status) = (None, None, Status::empty());
    let mut adjusted = false;
    for a in attrs {
        match a {
            ConntrackAttribute::CtaTupleOrig(t) => orig = tuple4(t),
            ConntrackAttribute::CtaTupleReply(t) => reply = tuple4(t),
            ConntrackAttribute::CtaStatus(s) => status = *s,
            // The sequence-adjustment and SYNPROXY extensions show as attributes of their
            // own even before any offset sets the status bit (nested ones carry
            // NLA_F_NESTED in their kind).
            ConntrackAttribute::Other(nla) => {
                adjusted |= matches!(
                    nla.kind() & NLA_TYPE_MASK,
                    CTA_SEQ_ADJ_ORIG | CTA_SEQ_ADJ_REPLY | CTA_SYNPROXY
                );
            }
            _ => {}
        }
    }
    Some(RawEntry {
        orig: orig?,
        reply: reply?,
        nat: status.intersects(Status::SrcNat | Status::DstNat),
        seq_adjust: adjusted || status.contains(Status::SeqAdjust),
    })
}

/// A direction's addresses as a map key: no IPv6 scope, IPv4-mapped as IPv4.
fn key(src: SocketAddr, dst: SocketAddr) -> TupleKey {
    (
        canonical(src.ip()),
        src.port(),
        canonical(dst.ip()),
        dst.port(),
    )
}

/// ctnetlink attribute types (linux/netfilter/nfnetlink_conntrack.h, `enum ctattr_type`).
const CTA_SEQ_ADJ_ORIG: u16 = 15;
const CTA_SEQ_ADJ_REPLY: u16 = 16;
const CTA_SYNPROXY: u16 = 24;

// Keep the payload type's serialisation in view: the request helper needs it.
const _: fn(&NetfilterMessage) -> u16 = NetlinkSerializable::message_type;

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(l: &str, r: &str) -> Flow {
        Flow {
            local: l.parse().unwrap(),
            remote: r.parse().unwrap(),
        }
    }

    fn answer(orig: (&str, &str), reply: (&str, &str), status: Status) -> NetfilterMessage {
        let t = |(s, d): (&str, &str)| tuple(s.parse().unwrap(), d.parse().unwrap());
        NetfilterMessage::new(
            NetfilterHeader::new(NetfilterProtoFamily::IPv4, 0, 0),
            ConntrackMessage::New(vec![
                ConntrackAttribute::CtaTupleOrig(t(orig)),
                ConntrackAttribute::CtaTupleReply(t(reply)),
                ConntrackAttribute::CtaStatus(status),
            ]),
        )
    }

    /// A node's connection to a ClusterIP, DNAT-ed in OUTPUT: the backend answers.
    #[test]
    fn a_client_behind_local_dnat_hears_the_backend() {
        let f = flow("198.18.0.2:40000", "203.0.113.10:80");
        let m = answer(
            ("198.18.0.2:40000", "203.0.113.10:80"),
            ("198.51.100.3:9000", "198.18.0.2:40000"),
            Status::Confirmed | Status::DstNat | Status::DstNatDone,
        );
        let e = entry_of(&m, &f).unwrap();
        assert!(e.nat && !e.seq_adjust && e.translated(&f));
        assert_eq!(e.incoming.src, "198.51.100.3:9000".parse().unwrap());
        assert_eq!(e.incoming.dst, f.local);
    }

    /// A server socket behind a redirect: the socket's direction is the reply tuple, and the
    /// client's segments arrive as the original one.
    #[test]
    fn a_server_behind_a_redirect_hears_the_original_direction() {
        let f = flow("198.51.100.2:9000", "198.18.0.2:40000");
        let m = answer(
            ("198.18.0.2:40000", "198.51.100.2:80"),
            ("198.51.100.2:9000", "198.18.0.2:40000"),
            Status::Confirmed | Status::DstNat,
        );
        let e = entry_of(&m, &f).unwrap();
        assert_eq!(e.incoming.src, f.remote);
        assert_eq!(e.incoming.dst, "198.51.100.2:80".parse().unwrap());
        assert!(e.translated(&f));
    }

    /// A plain tracked flow: nothing translated; SYNPROXY's adjustment is seen.
    #[test]
    fn a_plain_entry_translates_nothing_and_seq_adjust_is_seen() {
        let f = flow("198.18.0.2:40000", "198.51.100.2:9000");
        let m = answer(
            ("198.18.0.2:40000", "198.51.100.2:9000"),
            ("198.51.100.2:9000", "198.18.0.2:40000"),
            Status::Confirmed | Status::SeqAdjust,
        );
        let e = entry_of(&m, &f).unwrap();
        assert!(!e.nat && e.seq_adjust && !e.translated(&f));
        let mut m = answer(
            ("198.18.0.2:40000", "198.51.100.2:9000"),
            ("198.51.100.2:9000", "198.18.0.2:40000"),
            Status::Confirmed,
        );
        assert!(!entry_of(&m, &f).unwrap().seq_adjust);
        if let NetfilterMessageInner::Conntrack(ConntrackMessage::New(attrs)) = &mut m.inner {
            // CTA_SYNPROXY, nested, as the kernel sends it before any offset is set.
            attrs.push(ConntrackAttribute::Other(
                netlink_packet_core::DefaultNla::new(CTA_SYNPROXY | 0x8000, vec![0; 4]),
            ));
        }
        assert!(entry_of(&m, &f).unwrap().seq_adjust, "SYNPROXY extension");
        let other = flow("198.18.0.2:40001", "198.51.100.2:9000");
        assert_eq!(entry_of(&m, &other), None);
    }
}
