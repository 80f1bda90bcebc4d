//! Raw IP sockets that send whole packets, IP header included.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use caps::Capability;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::error::{Error, Result};
use crate::flow::Cause;
use crate::flow::{Route, Scope};
use crate::wire::Segment;

/// Why a send failed: a refusal by the local host is one connection's outcome (README
/// "Verdicts"), anything else is the run's.
#[derive(Debug)]
pub enum SendError {
    /// The local host would not send it: `unreachable` with this cause.
    Refused(Cause, std::io::Error),
    Failed(Error),
}

impl From<Error> for SendError {
    fn from(e: Error) -> SendError {
        SendError::Failed(e)
    }
}

/// The local cause behind a `sendto` error on an open raw socket. The socket is open, so a
/// permission error here is never a missing capability: EACCES comes from a `prohibit` route
/// (RTN_PROHIBIT), EPERM from a netfilter OUTPUT verdict (NF_DROP).
pub fn refusal_cause(errno: i32) -> Option<Cause> {
    match errno {
        libc::ENETUNREACH | libc::EHOSTUNREACH => Some(Cause::NoRoute),
        // A `blackhole` route (RTN_BLACKHOLE) refuses with EINVAL: the packet has nowhere to go.
        libc::EINVAL => Some(Cause::NoRoute),
        libc::EACCES => Some(Cause::Prohibited),
        libc::EPERM => Some(Cause::LocalFirewall),
        libc::ENETDOWN => Some(Cause::LinkDown),
        _ => None,
    }
}

/// The part of a route a raw socket is configured with: mark and device (the owner's uid
/// cannot be taken on).
fn socket_key(route: Route) -> Route {
    Route { uid: 0, ..route }
}

/// Send-only raw sockets (IPPROTO_RAW implies the header is ours), one per address family
/// and route: a connection's probes and injected SYNs leave with its own `SO_MARK` and
/// device binding (README "Policy routing, VRFs, bound sockets"), so policy routing rules
/// (`ip rule fwmark`) and VRF tables route them as they route the connection.
///
/// The injected SYN goes through the same socket as the probes. Its destination is local,
/// and binding does not stop local delivery: bound to the connection's plain device, the
/// SYN still reaches the (bound) socket and draws its challenge ACK (checked by hand and in
/// `tests/lab_route.rs`, IPv4, IPv6 and link-local). For a VRF member the binding is needed:
/// the VRF's local addresses are routed in its own table, which only a lookup bound to the
/// VRF device consults.
///
/// Opening a raw socket needs CAP_NET_RAW, setting a mark CAP_NET_ADMIN (or CAP_NET_RAW
/// since Linux 5.17); the kernel checks both only then. So every socket a run needs is
/// opened while those are held (`open`, `prepare`, `open_rest`), and sends afterwards need
/// none. A route first seen after the drop cannot be opened (see `prepare`).
pub struct Sender {
    sockets: HashMap<(bool, Route), Socket>,
    buf: Vec<u8>,
}

fn family_name(v6: bool) -> &'static str {
    if v6 { "IPv6" } else { "IPv4" }
}

/// A raw socket of the family, configured for `route`.
fn open(v6: bool, route: Route) -> Result<Socket> {
    let domain = if v6 { Domain::IPV6 } else { Domain::IPV4 };
    let family = family_name(v6);
    let s =
        Socket::new(domain, Type::RAW, Some(Protocol::from(libc::IPPROTO_RAW))).map_err(|e| {
            Error::sys(
                format!("opening a raw {family} socket"),
                Capability::CAP_NET_RAW,
                e,
            )
        })?;
    // Never read from: keep its receive queue at the minimum.
    let _ = s.set_recv_buffer_size(0);
    if route.mark != 0 {
        s.set_mark(route.mark).map_err(|e| {
            Error::sys(
                format!("setting SO_MARK {:#x} on a raw {family} socket", route.mark),
                Capability::CAP_NET_ADMIN,
                e,
            )
        })?;
    }
    if route.ifindex != 0 {
        bind_to_index(&s, route.ifindex).map_err(|e| {
            let what = format!(
                "binding a raw {family} socket to {}",
                interface_label(route.ifindex)
            );
            match e.raw_os_error() {
                Some(libc::ENODEV) => Error::Io {
                    context: format!("{what}: the device is gone"),
                    source: e,
                },
                _ => Error::sys(what, Capability::CAP_NET_RAW, e),
            }
        })?;
    }
    Ok(s)
}

/// SO_BINDTOIFINDEX (Linux 5.0): the socket's packets leave through that device, or, for a
/// VRF device, are routed in the VRF's table.
fn bind_to_index(s: &Socket, ifindex: u32) -> std::io::Result<()> {
    let value = libc::c_int::try_from(ifindex)
        .map_err(|_| std::io::Error::from_raw_os_error(libc::ENODEV))?;
    super::setsockopt_int(
        s.as_raw_fd(),
        libc::SOL_SOCKET,
        libc::SO_BINDTOIFINDEX,
        value,
    )
}

/// The name of interface `ifindex` in this network namespace, if it has one.
pub fn interface_name(ifindex: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: buf holds IF_NAMESIZE bytes, as if_indextoname requires.
    let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: if_indextoname wrote a NUL-terminated name into buf.
    let name = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
    Some(name.to_string_lossy().into_owned())
}

/// `eth0 (ifindex 2)`, or `ifindex 2` when the device has no name here any more.
pub fn interface_label(ifindex: u32) -> String {
    match interface_name(ifindex) {
        Some(n) => format!("{n} (ifindex {ifindex})"),
        None => format!("ifindex {ifindex}"),
    }
}

/// `mark 0x42, bound to eth0 (ifindex 2)`, for messages.
pub fn describe_route(route: Route) -> String {
    let mut parts = Vec::new();
    if route.mark != 0 {
        parts.push(format!("mark {:#x}", route.mark));
    }
    if route.ifindex != 0 {
        parts.push(format!("bound to {}", interface_label(route.ifindex)));
    }
    if parts.is_empty() {
        "no mark and no device".into()
    } else {
        parts.join(", ")
    }
}

/// The interface index a zone names, in the network namespace the calling thread is in.
pub fn scope_index(scope: Scope) -> std::result::Result<u32, String> {
    match scope {
        Scope::Index(i) => match interface_name(i) {
            Some(_) => Ok(i),
            None => Err(format!(
                "%{i}: no interface has index {i} in this network namespace"
            )),
        },
        Scope::Name(name) => {
            let c = std::ffi::CString::new(name.as_str())
                .map_err(|_| format!("%{}: not an interface name", name.as_str()))?;
            // SAFETY: a NUL-terminated string.
            match unsafe { libc::if_nametoindex(c.as_ptr()) } {
                0 => Err(format!(
                    "%{}: no such interface in this network namespace",
                    name.as_str()
                )),
                i => Ok(i),
            }
        }
    }
}

impl Sender {
    /// Opens the unmarked, unbound sockets the given families need.
    pub fn open(v4: bool, v6: bool) -> Result<Sender> {
        let mut s = Sender {
            sockets: HashMap::new(),
            buf: vec![0; 128],
        };
        for (want, v6) in [(v4, false), (v6, true)] {
            if want {
                s.prepare(v6, Route::default())?;
            }
        }
        Ok(s)
    }

    /// Opens the socket for `route` in that family unless it is open. Call it while the
    /// privileges are held; afterwards it fails with `Error::Privilege` for a new route.
    pub fn prepare(&mut self, v6: bool, route: Route) -> Result<()> {
        let route = socket_key(route);
        if let std::collections::hash_map::Entry::Vacant(slot) = self.sockets.entry((v6, route)) {
            slot.insert(open(v6, route)?);
        }
        Ok(())
    }

    /// Whether a socket for `route` in that family is open.
    pub fn has(&self, v6: bool, route: Route) -> bool {
        self.sockets.contains_key(&(v6, socket_key(route)))
    }

    /// Opens the unmarked, unbound socket of each family not opened yet, so that no later
    /// send on a default route needs a privilege: a family the host does not support stays
    /// closed.
    pub fn open_rest(&mut self) -> Result<()> {
        for v6 in [false, true] {
            match self.prepare(v6, Route::default()) {
                Ok(()) => {}
                Err(Error::Io { source, .. })
                    if source.raw_os_error() == Some(libc::EAFNOSUPPORT) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Sends `p` the way the connection's own packets go (`route`: mark and bound device).
    pub fn send(&mut self, p: &Segment, route: Route) -> std::result::Result<(), SendError> {
        let len = p.buffer_len();
        if self.buf.len() < len {
            self.buf.resize(len, 0);
        }
        p.emit(&mut self.buf);
        let v6 = p.dst.is_ipv6();
        // Normally prepared before the privileges went; if not, try now (as root that works).
        self.prepare(v6, route)?;
        let Some(socket) = self.sockets.get(&(v6, socket_key(route))) else {
            return Err(Error::Runtime(format!("no raw socket for {}", p.dst)).into());
        };
        // The port of a raw socket's destination must be 0.
        let to = SockAddr::from(SocketAddr::new(p.dst.ip(), 0));
        match socket.send_to(&self.buf[..len], &to) {
            Ok(_) => Ok(()),
            Err(e) => match e.raw_os_error().and_then(refusal_cause) {
                Some(cause) => Err(SendError::Refused(cause, e)),
                None => Err(SendError::Failed(Error::Io {
                    context: format!("sending to {}", p.dst.ip()),
                    source: e,
                })),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_refusals_are_named_causes_not_missing_privileges() {
        assert_eq!(refusal_cause(libc::ENETUNREACH), Some(Cause::NoRoute));
        assert_eq!(refusal_cause(libc::EHOSTUNREACH), Some(Cause::NoRoute));
        assert_eq!(refusal_cause(libc::EINVAL), Some(Cause::NoRoute));
        assert_eq!(refusal_cause(libc::EACCES), Some(Cause::Prohibited));
        assert_eq!(refusal_cause(libc::EPERM), Some(Cause::LocalFirewall));
        assert_eq!(refusal_cause(libc::ENETDOWN), Some(Cause::LinkDown));
        assert_eq!(refusal_cause(libc::ENOBUFS), None);
    }
}
