//! Raw IP sockets that send whole packets, IP header included.

use std::net::SocketAddr;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::engine::Cause;
use crate::error::{Error, Result};
use crate::flow::Route;
use crate::wire::ProbeRepr;

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
        libc::EACCES => Some(Cause::Prohibited),
        libc::EPERM => Some(Cause::LocalFirewall),
        libc::ENETDOWN => Some(Cause::LinkDown),
        _ => None,
    }
}

/// One send-only raw socket per address family (IPPROTO_RAW implies the header is ours).
/// A family asked for at `open` is opened then, so that a missing privilege shows at once;
/// the other is opened at its first use.
pub struct Sender {
    v4: Option<Socket>,
    v6: Option<Socket>,
    buf: Vec<u8>,
}

fn open(domain: Domain, family: &str) -> Result<Socket> {
    let s = Socket::new(domain, Type::RAW, Some(Protocol::from(libc::IPPROTO_RAW)))
        .map_err(|e| Error::sys(format!("opening a raw {family} socket"), "CAP_NET_RAW", e))?;
    // Never read from: keep its receive queue at the minimum.
    let _ = s.set_recv_buffer_size(0);
    Ok(s)
}

impl Sender {
    /// Opens the sockets the given families need.
    pub fn open(v4: bool, v6: bool) -> Result<Sender> {
        Ok(Sender {
            v4: if v4 {
                Some(open(Domain::IPV4, "IPv4")?)
            } else {
                None
            },
            v6: if v6 {
                Some(open(Domain::IPV6, "IPv6")?)
            } else {
                None
            },
            buf: vec![0; 128],
        })
    }

    /// Opens the families not opened yet, so that no later send needs a privilege: a family
    /// the host does not support stays closed.
    pub fn open_rest(&mut self) -> Result<()> {
        for (slot, domain, name) in [
            (&mut self.v4, Domain::IPV4, "IPv4"),
            (&mut self.v6, Domain::IPV6, "IPv6"),
        ] {
            if slot.is_none() {
                match open(domain, name) {
                    Ok(s) => *slot = Some(s),
                    Err(Error::Io { source, .. })
                        if source.raw_os_error() == Some(libc::EAFNOSUPPORT) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    /// Sends `p` the way the connection's own packets go (`route`: mark and bound device).
    pub fn send(&mut self, p: &ProbeRepr, _route: Route) -> std::result::Result<(), SendError> {
        let len = p.buffer_len();
        if self.buf.len() < len {
            self.buf.resize(len, 0);
        }
        p.emit(&mut self.buf);
        let slot = if p.dst.is_ipv6() {
            &mut self.v6
        } else {
            &mut self.v4
        };
        if slot.is_none() {
            *slot = Some(if p.dst.is_ipv6() {
                open(Domain::IPV6, "IPv6")?
            } else {
                open(Domain::IPV4, "IPv4")?
            });
        }
        let Some(socket) = slot.as_ref() else {
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
        assert_eq!(refusal_cause(libc::EACCES), Some(Cause::Prohibited));
        assert_eq!(refusal_cause(libc::EPERM), Some(Cause::LocalFirewall));
        assert_eq!(refusal_cause(libc::ENETDOWN), Some(Cause::LinkDown));
        assert_eq!(refusal_cause(libc::ENOBUFS), None);
    }
}
