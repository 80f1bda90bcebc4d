//! Why a probe could not get out: the route the kernel picks for the connection's packets
//! (an RTM_GETROUTE lookup with the socket's mark and bound device, what `ip route get` asks)
//! and the state of the interface that route leaves through (README "Verdicts and timing": the
//! `link-down` cause).
//!
//! Nothing here needs a privilege: route lookups and interface flags are open to everyone, so
//! the check still works after the capabilities are gone.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use netlink_packet_core::{NLM_F_REQUEST, NetlinkMessage, NetlinkPayload};
use netlink_packet_route::route::{RouteAttribute, RouteMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::protocols::NETLINK_ROUTE;
use netlink_sys::{Socket, SocketAddr as NlAddr};

use crate::flow::Cause;
use crate::flow::{Flow, Route};

/// What the kernel's route lookup said about the way to the peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteAnswer {
    /// A route leaving through this interface index.
    Egress(u32),
    /// The lookup failed with this errno (ENETUNREACH: no route; EHOSTUNREACH: an
    /// `unreachable` route; EACCES: a `prohibit` route; EINVAL: a `blackhole` route).
    Refused(i32),
}

/// The two interface flags that decide whether a packet can leave through a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkFlags {
    /// IFF_UP: administratively up.
    pub up: bool,
    /// IFF_LOWER_UP: the driver reports carrier (a veth whose other end is down does not).
    pub carrier: bool,
}

impl LinkFlags {
    fn usable(self) -> bool {
        self.up && self.carrier
    }
}

/// The local cause, if any, that keeps the connection's packets from leaving: the pure
/// decision behind `Links::egress_cause`.
///
/// `bound` is the device the socket is bound to (SO_BINDTODEVICE or a VRF), whose packets can
/// leave nowhere else; `egress` the interface the route lookup chose. `None` means the path
/// out looks fine (or could not be judged): the outcome stays what the probes said.
pub fn cause(
    route: RouteAnswer,
    egress: Option<LinkFlags>,
    bound: Option<LinkFlags>,
) -> Option<Cause> {
    if bound.is_some_and(|b| !b.usable()) {
        return Some(Cause::LinkDown);
    }
    match route {
        // The lookup refuses with the errno a send on that route gets: one mapping for both.
        RouteAnswer::Refused(errno) => crate::sys::raw::refusal_cause(errno),
        RouteAnswer::Egress(_) => match egress {
            Some(e) if !e.usable() => Some(Cause::LinkDown),
            _ => None,
        },
    }
}

/// How long one listing of the interfaces answers for: a sweep whose connections all fall
/// silent at once (a cable pulled) asks once, not once per connection.
const FLAGS_FRESH: Duration = Duration::from_secs(1);

/// Every interface's flags by index, from `pnet_datalink::interfaces()` (getifaddrs: every
/// link, with or without addresses).
pub fn all_link_flags() -> HashMap<u32, LinkFlags> {
    pnet_datalink::interfaces()
        .into_iter()
        .map(|i| {
            let flags = LinkFlags {
                up: i.is_up(),
                carrier: i.is_lower_up(),
            };
            (i.index, flags)
        })
        .collect()
}

/// Whether this namespace's loopback device is up (the local stack's own packets, and the
/// `local` source's injected SYN, pass through it).
pub fn loopback_up() -> bool {
    pnet_datalink::interfaces()
        .into_iter()
        .any(|i| i.is_loopback() && i.is_up())
}

/// The addresses of this network namespace's interfaces, from the same listing.
pub fn local_addresses() -> HashSet<IpAddr> {
    pnet_datalink::interfaces()
        .into_iter()
        .flat_map(|i| i.ips)
        .map(|net| net.ip())
        .collect()
}

/// The flags of the interface with this index.
pub fn link_flags(ifindex: u32) -> Option<LinkFlags> {
    all_link_flags().get(&ifindex).copied()
}

/// A NETLINK_ROUTE socket, opened at the first question, and the last interface listing.
#[derive(Default)]
pub struct Links {
    socket: Option<Socket>,
    buf: Vec<u8>,
    flags: Option<(Instant, HashMap<u32, LinkFlags>)>,
}

impl Links {
    pub fn new() -> Links {
        Links::default()
    }

    /// Why the connection's packets cannot leave, if a local reason is found. A lookup that
    /// fails for reasons of its own (no netlink, an odd answer) names no cause.
    pub fn egress_cause(&mut self, flow: &Flow, route: Route) -> Option<Cause> {
        let answer = match self.route_get(flow, route) {
            Ok(a) => a,
            Err(e) => {
                log::debug!("{flow}: route lookup failed: {e}");
                return None;
            }
        };
        log::debug!(
            "{flow}: route lookup (mark {:#x}, oif {}): {answer:?}",
            route.mark,
            route.ifindex
        );
        // A lookup from an address this host does not have (a transparent socket, TPROXY)
        // is refused whatever the path: it judges nothing.
        if matches!(answer, RouteAnswer::Refused(_))
            && !local_addresses().contains(&flow.local.ip())
        {
            return None;
        }
        let egress = match answer {
            RouteAnswer::Egress(oif) => self.flags_of(oif),
            RouteAnswer::Refused(_) => None,
        };
        let bound = match route.ifindex {
            0 => None,
            i => self.flags_of(i),
        };
        cause(answer, egress, bound)
    }

    fn flags_of(&mut self, ifindex: u32) -> Option<LinkFlags> {
        let stale = self
            .flags
            .as_ref()
            .is_none_or(|(at, _)| at.elapsed() > FLAGS_FRESH);
        if stale {
            self.flags = Some((Instant::now(), all_link_flags()));
        }
        self.flags.as_ref()?.1.get(&ifindex).copied()
    }

    /// RTM_GETROUTE for the peer's address from the local one, with the socket's mark and
    /// bound device: the route the connection's own packets take.
    pub fn route_get(&mut self, flow: &Flow, route: Route) -> io::Result<RouteAnswer> {
        let (family, bits) = match flow.remote.ip() {
            IpAddr::V4(_) => (AddressFamily::Inet, 32),
            IpAddr::V6(_) => (AddressFamily::Inet6, 128),
        };
        let mut msg = RouteMessage::default();
        msg.header.address_family = family;
        msg.header.destination_prefix_length = bits;
        msg.header.source_prefix_length = bits;
        msg.attributes
            .push(RouteAttribute::Destination(flow.remote.ip().into()));
        // The source selects `ip rule from` policies, as it does for the socket's packets.
        msg.attributes
            .push(RouteAttribute::Source(flow.local.ip().into()));
        if route.mark != 0 {
            msg.attributes.push(RouteAttribute::Mark(route.mark));
        }
        if route.ifindex != 0 {
            msg.attributes.push(RouteAttribute::Oif(route.ifindex));
        }
        // `ip rule uidrange` policies see the socket's owner, not kaprobe (RTA_UID).
        msg.attributes.push(RouteAttribute::Uid(route.uid));
        let bytes = super::netlink_request(
            NLM_F_REQUEST,
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::GetRoute(msg)),
        );

        let socket = match &mut self.socket {
            Some(s) => s,
            slot => {
                let mut s = Socket::new(NETLINK_ROUTE)?;
                s.bind_auto()?;
                s.connect(&NlAddr::new(0, 0))?;
                slot.insert(s)
            }
        };
        if self.buf.is_empty() {
            self.buf = vec![0; 8192];
        }
        socket.send(&bytes, 0)?;
        let n = socket.recv(&mut &mut self.buf[..], 0)?;
        parse_answer(&self.buf[..n])
    }
}

/// The egress interface from an RTM_NEWROUTE answer, or the errno of an error answer.
fn parse_answer(bytes: &[u8]) -> io::Result<RouteAnswer> {
    let bad = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
    let msg = <NetlinkMessage<RouteNetlinkMessage>>::deserialize(bytes)
        .map_err(|e| bad(format!("undecodable route answer: {e}")))?;
    match msg.payload {
        NetlinkPayload::Error(e) => match e.code {
            Some(code) => Ok(RouteAnswer::Refused(-code.get())),
            None => Err(bad("route lookup acknowledged without an answer".into())),
        },
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(r)) => r
            .attributes
            .iter()
            .find_map(|a| match a {
                RouteAttribute::Oif(i) => Some(RouteAnswer::Egress(*i)),
                _ => None,
            })
            .ok_or_else(|| bad("route answer without an output interface".into())),
        other => Err(bad(format!("unexpected route answer {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FINE: LinkFlags = LinkFlags {
        up: true,
        carrier: true,
    };
    const NO_CARRIER: LinkFlags = LinkFlags {
        up: true,
        carrier: false,
    };
    const DOWN: LinkFlags = LinkFlags {
        up: false,
        carrier: false,
    };

    #[test]
    fn a_route_error_names_its_cause() {
        for (errno, want) in [
            (libc::ENETUNREACH, Some(Cause::NoRoute)),
            (libc::EHOSTUNREACH, Some(Cause::NoRoute)),
            (libc::EACCES, Some(Cause::Prohibited)),
            (libc::ENETDOWN, Some(Cause::LinkDown)),
            // A blackhole route: the send gets EINVAL too, and is named no-route.
            (libc::EINVAL, Some(Cause::NoRoute)),
            (libc::EIO, None),
        ] {
            assert_eq!(
                cause(RouteAnswer::Refused(errno), None, None),
                want,
                "errno {errno}"
            );
        }
    }

    #[test]
    fn an_egress_link_without_carrier_or_down_is_link_down() {
        let via = RouteAnswer::Egress(3);
        assert_eq!(cause(via, Some(NO_CARRIER), None), Some(Cause::LinkDown));
        assert_eq!(cause(via, Some(DOWN), None), Some(Cause::LinkDown));
        assert_eq!(cause(via, Some(FINE), None), None);
        // An interface that vanished between the lookup and the listing: no guess.
        assert_eq!(cause(via, None, None), None);
    }

    #[test]
    fn a_bound_device_without_carrier_wins_over_the_route() {
        assert_eq!(
            cause(RouteAnswer::Egress(3), Some(FINE), Some(NO_CARRIER)),
            Some(Cause::LinkDown)
        );
        assert_eq!(
            cause(RouteAnswer::Refused(libc::ENETUNREACH), None, Some(DOWN)),
            Some(Cause::LinkDown)
        );
        assert_eq!(cause(RouteAnswer::Egress(3), Some(FINE), Some(FINE)), None);
    }

    #[test]
    fn answers_decode_to_an_interface_or_an_errno() {
        let mut r = RouteMessage::default();
        r.header.address_family = AddressFamily::Inet;
        r.attributes.push(RouteAttribute::Oif(7));
        let b = crate::sys::netlink_request(
            0,
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(r)),
        );
        assert_eq!(parse_answer(&b).unwrap(), RouteAnswer::Egress(7));

        let mut e = netlink_packet_core::ErrorMessage::default();
        e.code = std::num::NonZeroI32::new(-libc::EACCES);
        let b = crate::sys::netlink_request::<RouteNetlinkMessage>(0, NetlinkPayload::Error(e));
        assert_eq!(
            parse_answer(&b).unwrap(),
            RouteAnswer::Refused(libc::EACCES)
        );

        assert!(parse_answer(&[1, 2, 3]).is_err());
    }

    #[test]
    fn local_addresses_include_loopback_when_lo_is_up() {
        // A fresh network namespace's `lo` is down and has no address yet.
        if link_flags(1).is_some_and(|lo| lo.up) {
            let locals = local_addresses();
            assert!(locals.contains(&IpAddr::from([127, 0, 0, 1])), "{locals:?}");
        }
    }

    #[test]
    fn the_kernel_routes_loopback_through_lo() {
        // `lo` is ifindex 1 in every network namespace; its carrier follows its admin state.
        let Some(lo) = link_flags(1) else {
            return;
        };
        assert_eq!(lo.up, lo.carrier, "{lo:?}");
        if !lo.up {
            return;
        }
        let flow = Flow {
            local: "127.0.0.1:40000".parse().unwrap(),
            remote: "127.0.0.1:9000".parse().unwrap(),
        };
        let mut links = Links::new();
        assert_eq!(
            links.route_get(&flow, Route::default()).unwrap(),
            RouteAnswer::Egress(1)
        );
        assert_eq!(links.egress_cause(&flow, Route::default()), None);
    }
}
