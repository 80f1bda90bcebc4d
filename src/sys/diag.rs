//! Finding connections and their `tcp_info` through netlink sock_diag (what `ss` uses).
//!
//! With CAP_NET_ADMIN the kernel adds, unasked, each socket's mark (`INET_DIAG_MARK`) and its
//! TCP-MD5 keys (`INET_DIAG_MD5SIG`); the bound device is always in the header (`idiag_if`).
//! TCP-AO (RFC 5925, Linux 6.7+) is not visible through sock_diag at all: the kernel's TCP
//! diag handler reports MD5 keys and the ULP only, and `tcp_info` has no AO bit. See
//! README "Policy routing, VRFs, bound sockets" for what kaprobe does instead.

use std::net::{IpAddr, SocketAddr};

use caps::Capability;
use netlink_packet_core::{
    ErrorMessage, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload,
    NetlinkSerializable, Nla as _,
};
use netlink_packet_sock_diag::constants::{AF_INET, AF_INET6, IPPROTO_TCP};
use netlink_packet_sock_diag::inet::nlas::{Nla, TcpInfo};
use netlink_packet_sock_diag::inet::{
    ExtensionFlags, InetRequest, InetResponse, SocketId, StateFlags, Timer,
};
use netlink_packet_sock_diag::{SockDiagDestroy, SockDiagMessage};
use netlink_sys::protocols::NETLINK_SOCK_DIAG;
use netlink_sys::{Socket, SocketAddr as NlAddr};

use crate::error::{Error, Result};
use crate::flow::{Flow, Route, Signature, masked};

const TCP_ESTABLISHED: u8 = 1;
/// `INET_DIAG_MD5SIG`: an array of `struct tcp_diag_md5sig`, one per key on the socket.
const INET_DIAG_MD5SIG: u16 = 18;
/// `struct tcp_diag_md5sig`: family (u8), prefix length (u8), key length (u16), address
/// (16 bytes, network order), key (80 bytes).
const MD5SIG_ENTRY_LEN: usize = 100;
/// INET_DIAG_NOCOOKIE: look the socket up by its 4-tuple alone.
const NO_COOKIE: [u8; 8] = [0xff; 8];

/// One TCP socket as sock_diag reports it.
#[derive(Clone, Debug)]
pub struct Conn {
    pub flow: Flow,
    pub established: bool,
    pub inode: u32,
    pub uid: u32,
    pub send_queue: u32,
    pub recv_queue: u32,
    /// The socket's active timer (keepalive, retransmit, ...) as sock_diag reports it.
    pub timer: Option<Timer>,
    pub info: Option<TcpInfo>,
    /// The socket's mark and bound device.
    pub route: Route,
    /// A signature option the connection uses, if any: it cannot be probed.
    pub signature: Option<Signature>,
}

/// An established connection with `timer`, for unit tests of what is shown about a socket.
#[cfg(test)]
pub fn test_conn(timer: Option<Timer>) -> Conn {
    Conn {
        flow: Flow {
            local: "198.18.0.1:40000".parse().expect("literal"),
            remote: "198.18.0.2:9000".parse().expect("literal"),
        },
        established: true,
        inode: 77,
        uid: 0,
        send_queue: 0,
        recv_queue: 3,
        timer,
        info: None,
        route: Default::default(),
        signature: None,
    }
}

pub struct Diag {
    socket: Socket,
    buf: Vec<u8>,
}

impl Diag {
    pub fn open() -> Result<Diag> {
        let sys = |what: &str, e| {
            Error::sys(
                format!("sock_diag netlink socket: {what}"),
                Capability::CAP_NET_ADMIN,
                e,
            )
        };
        let mut socket = Socket::new(NETLINK_SOCK_DIAG).map_err(|e| sys("socket", e))?;
        socket.bind_auto().map_err(|e| sys("bind", e))?;
        socket
            .connect(&NlAddr::new(0, 0))
            .map_err(|e| sys("connect", e))?;
        Ok(Diag {
            socket,
            buf: vec![0; 256 * 1024],
        })
    }

    /// The socket on exactly this 4-tuple, in whatever state, or `None`, when its bound
    /// device is not known: an exact lookup as for an unbound socket first, then, if that
    /// finds nothing, one dump of the sockets on the flow's two ports, which finds sockets
    /// bound to a device (SO_BINDTODEVICE, a VRF, link-local IPv6) too.
    pub fn lookup(&mut self, flow: &Flow) -> Result<Option<Conn>> {
        if let Some(c) = self.lookup_on(flow, 0)? {
            return Ok(Some(c));
        }
        let mut found = self.on_ports(flow)?;
        // Two sockets can share a link-local tuple on different links: prefer a live one.
        found.sort_by_key(|c| (!c.established, c.route.ifindex));
        Ok(found.into_iter().next())
    }

    /// The socket on exactly this 4-tuple and bound device (`ifindex`, 0 for none: the
    /// kernel matches the socket's `sk_bound_dev_if` against it), or `None`.
    pub fn lookup_on(&mut self, flow: &Flow, ifindex: u32) -> Result<Option<Conn>> {
        let mut id = socket_id(flow);
        id.interface_id = ifindex;
        let family = if flow.is_ipv6() { AF_INET6 } else { AF_INET };
        let mut found = Vec::new();
        self.request(NLM_F_REQUEST, family, StateFlags::all(), id, &mut found)?;
        // The kernel matches IPv4-mapped sockets too; keep only the exact tuple.
        Ok(found.into_iter().find(|c| c.flow == *flow))
    }

    /// Every socket on exactly this 4-tuple, whatever it is bound to: one dump per family
    /// that can hold it (an IPv4 flow may live on a dual-stack AF_INET6 socket), filtered
    /// by the kernel on the two ports.
    fn on_ports(&mut self, flow: &Flow) -> Result<Vec<Conn>> {
        let mut found = Vec::new();
        let families: &[u8] = if flow.is_ipv6() {
            &[AF_INET6]
        } else {
            &[AF_INET, AF_INET6]
        };
        for &family in families {
            let mut id = if family == AF_INET6 {
                SocketId::new_v6()
            } else {
                SocketId::new_v4()
            };
            id.source_port = flow.local.port();
            id.destination_port = flow.remote.port();
            self.request(
                NLM_F_REQUEST | NLM_F_DUMP,
                family,
                StateFlags::all(),
                id,
                &mut found,
            )?;
        }
        found.retain(|c| c.flow == *flow);
        Ok(found)
    }

    /// Destroys the local socket of `flow` (SOCK_DESTROY, what `ss -K` does): the owning
    /// application's pending and next calls fail with ECONNABORTED. The kernel finds the
    /// socket as an exact lookup does, so a bound socket is named with its device.
    pub fn destroy(&mut self, flow: &Flow) -> Result<()> {
        let ifindex = self.lookup(flow)?.map_or(0, |c| c.route.ifindex);
        let mut id = socket_id(flow);
        id.interface_id = ifindex;
        let what = format!("destroying the socket of {flow}");
        let request = SockDiagDestroy::new(SockDiagMessage::InetRequest(InetRequest {
            family: if flow.is_ipv6() { AF_INET6 } else { AF_INET },
            protocol: IPPROTO_TCP,
            extensions: ExtensionFlags::empty(),
            states: StateFlags::all(),
            socket_id: id,
        }));
        self.send(NLM_F_REQUEST | NLM_F_ACK, request.into(), &what)?;
        let n = self.recv(&what)?;
        match decode_answer(&self.buf[..n])?.payload {
            NetlinkPayload::Error(e) => match errno(&e) {
                None => Ok(()),
                Some(libc::EOPNOTSUPP) => Err(Error::Runtime(format!(
                    "{what}: this kernel was built without CONFIG_INET_DIAG_DESTROY"
                ))),
                Some(code) => Err(Error::sys(
                    what,
                    Capability::CAP_NET_ADMIN,
                    std::io::Error::from_raw_os_error(code),
                )),
            },
            _ => Ok(()),
        }
    }

    /// Every established TCP connection of both families.
    pub fn established(&mut self) -> Result<Vec<Conn>> {
        let mut out = Vec::new();
        self.request(
            NLM_F_REQUEST | NLM_F_DUMP,
            AF_INET,
            StateFlags::ESTABLISHED,
            SocketId::new_v4(),
            &mut out,
        )?;
        self.request(
            NLM_F_REQUEST | NLM_F_DUMP,
            AF_INET6,
            StateFlags::ESTABLISHED,
            SocketId::new_v6(),
            &mut out,
        )?;
        out.retain(|c| c.established);
        Ok(out)
    }

    /// Asks for the TCP sockets of `family` in `states` that match `id` (exactly, or as a
    /// filter with `NLM_F_DUMP`), with their `tcp_info`, and adds them to `out`.
    fn request(
        &mut self,
        flags: u16,
        family: u8,
        states: StateFlags,
        id: SocketId,
        out: &mut Vec<Conn>,
    ) -> Result<()> {
        let request = SockDiagMessage::InetRequest(InetRequest {
            family,
            protocol: IPPROTO_TCP,
            extensions: ExtensionFlags::INFO,
            states,
            socket_id: id,
        });
        self.send(flags, request.into(), "sock_diag request")?;
        let dump = flags & NLM_F_DUMP != 0;
        loop {
            let n = self.recv("sock_diag answer")?;
            let mut at = 0;
            while at < n {
                let msg = decode_answer(&self.buf[at..n])?;
                let len = msg.header.length as usize;
                if take_answer(msg.payload, dump, out)? {
                    return Ok(());
                }
                if len == 0 {
                    break;
                }
                at += len;
            }
        }
    }

    /// Sends one request; `what` names it in an error.
    fn send<I: NetlinkSerializable>(
        &mut self,
        flags: u16,
        payload: NetlinkPayload<I>,
        what: &str,
    ) -> Result<()> {
        self.socket
            .send(&super::netlink_request(flags, payload), 0)
            .map_err(|e| Error::sys(what, Capability::CAP_NET_ADMIN, e))?;
        Ok(())
    }

    /// Receives one datagram of answers into `buf`; returns its length.
    fn recv(&mut self, what: &str) -> Result<usize> {
        self.socket
            .recv(&mut &mut self.buf[..], 0)
            .map_err(|e| Error::sys(what, Capability::CAP_NET_ADMIN, e))
    }
}

fn decode_answer(bytes: &[u8]) -> Result<NetlinkMessage<SockDiagMessage>> {
    NetlinkMessage::deserialize(bytes)
        .map_err(|e| Error::Runtime(format!("undecodable sock_diag answer: {e}")))
}

/// The errno of a netlink error message; `None` for an ACK.
fn errno(e: &ErrorMessage) -> Option<i32> {
    e.code.map(|c| -c.get())
}

/// Takes one answer to a request into `out`; `true` when it is the request's last: the
/// end of a dump, an error, or the one socket of an exact lookup.
fn take_answer(
    payload: NetlinkPayload<SockDiagMessage>,
    dump: bool,
    out: &mut Vec<Conn>,
) -> Result<bool> {
    match payload {
        NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(r)) => {
            out.push(conn_from(&r));
            Ok(!dump)
        }
        NetlinkPayload::Done(_) => Ok(true),
        NetlinkPayload::Error(e) => match errno(&e) {
            // Exact lookups answer ENOENT when no socket has the tuple.
            Some(libc::ENOENT) | None => Ok(true),
            Some(code) => Err(Error::sys(
                "sock_diag",
                Capability::CAP_NET_ADMIN,
                std::io::Error::from_raw_os_error(code),
            )),
        },
        _ => Ok(false),
    }
}

/// The exact 4-tuple, without a cookie.
fn socket_id(flow: &Flow) -> SocketId {
    let mut id = if flow.is_ipv6() {
        SocketId::new_v6()
    } else {
        SocketId::new_v4()
    };
    id.source_address = flow.local.ip();
    id.source_port = flow.local.port();
    id.destination_address = flow.remote.ip();
    id.destination_port = flow.remote.port();
    id.cookie = NO_COOKIE;
    id
}

fn conn_from(r: &InetResponse) -> Conn {
    let h = &r.header;
    let mut info = None;
    let mut mark = 0;
    let mut md5 = None;
    for nla in &r.nlas {
        match nla {
            Nla::TcpInfo(i) => info = Some(i.clone()),
            Nla::Mark(m) => mark = *m,
            Nla::Other(attr) if attr.kind() == INET_DIAG_MD5SIG => {
                let mut value = vec![0; attr.value_len()];
                attr.emit_value(&mut value);
                md5 = Some(value);
            }
            _ => {}
        }
    }
    // An AF_INET6 socket carrying IPv4 shows ::ffff:a.b.c.d (RFC 4291, 2.5.5.2); on the wire
    // it is IPv4: `to_canonical` gives that.
    let flow = Flow {
        local: SocketAddr::new(
            h.socket_id.source_address.to_canonical(),
            h.socket_id.source_port,
        ),
        remote: SocketAddr::new(
            h.socket_id.destination_address.to_canonical(),
            h.socket_id.destination_port,
        ),
    };
    let signature = md5
        .filter(|keys| md5_signs(keys, flow.remote.ip()))
        .map(|_| Signature::Md5);
    Conn {
        flow,
        established: h.state == TCP_ESTABLISHED,
        inode: h.inode,
        uid: h.uid,
        send_queue: h.send_queue,
        recv_queue: h.recv_queue,
        timer: h.timer.clone(),
        info,
        route: Route {
            mark,
            ifindex: h.socket_id.interface_id,
            uid: h.uid,
        },
        signature,
    }
}

/// Whether one of the socket's TCP-MD5 keys (the value of `INET_DIAG_MD5SIG`) covers the
/// peer's address: then the kernel signs every segment and drops unsigned ones (RFC 2385).
/// A socket can hold keys for other peers only (a listener's copies); those do not sign
/// this connection. The kernel does not report a key's VRF binding, so a key for the same
/// address on another VRF counts too: kaprobe then refuses rather than probe blindly. A
/// value that does not parse counts as signed, for the same reason.
fn md5_signs(keys: &[u8], peer: IpAddr) -> bool {
    if keys.is_empty() || !keys.len().is_multiple_of(MD5SIG_ENTRY_LEN) {
        return !keys.is_empty();
    }
    keys.chunks_exact(MD5SIG_ENTRY_LEN).any(|k| {
        let family = k[0];
        let prefix = k[1];
        let addr = &k[4..20];
        let key_ip = match u16::from(family) {
            f if f == AF_INET as u16 => {
                IpAddr::V4(std::net::Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3]))
            }
            f if f == AF_INET6 as u16 => {
                let mut b = [0u8; 16];
                b.copy_from_slice(addr);
                IpAddr::V6(std::net::Ipv6Addr::from(b)).to_canonical()
            }
            _ => return true,
        };
        prefix_covers(key_ip, prefix, peer)
    })
}

/// Whether `net/len` contains `ip` (families must agree).
fn prefix_covers(net: IpAddr, len: u8, ip: IpAddr) -> bool {
    net.is_ipv4() == ip.is_ipv4() && masked(net, len) == masked(ip, len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(family: u8, prefix: u8, addr: IpAddr) -> Vec<u8> {
        let mut e = vec![0u8; MD5SIG_ENTRY_LEN];
        e[0] = family;
        e[1] = prefix;
        e[2] = 6; // key length, little endian on x86; not read
        match addr {
            IpAddr::V4(a) => e[4..8].copy_from_slice(&a.octets()),
            IpAddr::V6(a) => e[4..20].copy_from_slice(&a.octets()),
        }
        e[20..26].copy_from_slice(b"secret");
        e
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn md5_keys_sign_only_the_peers_they_cover() {
        let v4 = entry(AF_INET, 32, ip("198.18.0.2"));
        assert!(md5_signs(&v4, ip("198.18.0.2")));
        assert!(!md5_signs(&v4, ip("198.18.0.3")));
        let net = entry(AF_INET, 24, ip("198.18.0.0"));
        assert!(md5_signs(&net, ip("198.18.0.77")));
        assert!(!md5_signs(&net, ip("198.18.1.77")));
        let any = entry(AF_INET, 0, ip("0.0.0.0"));
        assert!(md5_signs(&any, ip("203.0.113.1")));
        let v6 = entry(AF_INET6, 128, ip("2001:db8::2"));
        assert!(md5_signs(&v6, ip("2001:db8::2")));
        assert!(!md5_signs(&v6, ip("198.18.0.2")));
        // A mapped key covers the IPv4 peer of a dual-stack socket.
        let mapped = entry(AF_INET6, 128, ip("::ffff:198.18.0.2"));
        assert!(md5_signs(&mapped, ip("198.18.0.2")));
        // Several keys: any one covering the peer signs.
        let both = [entry(AF_INET, 32, ip("198.18.0.9")), v4.clone()].concat();
        assert!(md5_signs(&both, ip("198.18.0.2")));
        // Nothing, or something that does not parse.
        assert!(!md5_signs(&[], ip("198.18.0.2")));
        assert!(md5_signs(&v4[..99], ip("198.18.0.2")));
        assert!(md5_signs(
            &entry(99, 32, ip("198.18.0.9")),
            ip("198.18.0.2")
        ));
    }
}
