//! What the user named, resolved to one established connection as sock_diag reports it,
//! with a hint when only the reverse or the local side matches.

use crate::error::{Error, Result};
use crate::flow::{Flow, FlowSpec};
use crate::sys::diag::{Conn, Diag};
use crate::sys::raw;

/// Turns what the user named into one established connection, as sock_diag reports it
/// (with its mark, bound device and signature). A zone (`%eth0`) is resolved here, inside
/// the network namespace the command runs in.
pub fn resolve_conn(spec: FlowSpec, diag: &mut Diag) -> Result<Conn> {
    let ifindex = match spec.scope() {
        Some(scope) => Some(raw::scope_index(scope).map_err(Error::Usage)?),
        None => None,
    };
    match spec {
        FlowSpec::Exact(flow, _) => {
            let found = match ifindex {
                Some(i) => diag.lookup_on(&flow, i)?,
                None => diag.lookup(&flow)?,
            };
            match found {
                Some(c) if c.established => Ok(c),
                Some(c) => Err(Error::NoConnection(format!(
                    "connection {flow} is in state {}, not established",
                    state_name(&c)
                ))),
                None => Err(Error::NoConnection(format!(
                    "no established TCP connection {flow}{}",
                    reversed_hint(diag, &flow)?
                ))),
            }
        }
        FlowSpec::Remote(remote, _) => {
            let mut matches: Vec<Conn> = diag
                .established()?
                .into_iter()
                .filter(|c| c.flow.remote == remote)
                .filter(|c| ifindex.is_none_or(|i| c.route.ifindex == i))
                .collect();
            matches.sort_by_key(|c| c.flow);
            matches.dedup_by_key(|c| c.flow);
            match matches.len() {
                0 => Err(Error::NoConnection(format!(
                    "no established TCP connection to {remote}{}",
                    local_side_hint(diag, remote)?
                ))),
                1 => Ok(matches.remove(0)),
                n => Err(Error::Usage(format!(
                    "{n} established connections go to {remote}: {}; name one as LOCAL-REMOTE",
                    matches
                        .iter()
                        .map(|c| c.flow.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))),
            }
        }
    }
}

/// [`resolve_conn`] for a command that probes the connection: a signed one is refused
/// (exit 7, README "Policy routing, VRFs, bound sockets") before anything is sent.
pub fn resolve_probeable(spec: FlowSpec, diag: &mut Diag) -> Result<Conn> {
    let conn = resolve_conn(spec, diag)?;
    match conn.signature {
        Some(sig) => Err(Error::signed(&conn.flow, sig)),
        None => Ok(conn),
    }
}

/// `; FLOW reversed is: LOCAL comes first` when the other orientation is established.
fn reversed_hint(diag: &mut Diag, flow: &Flow) -> Result<String> {
    let reversed = Flow {
        local: flow.remote,
        remote: flow.local,
    };
    Ok(match diag.lookup(&reversed)? {
        Some(c) if c.established => {
            format!("; {reversed} is: name the connection with this host's side (LOCAL) first")
        }
        _ => String::new(),
    })
}

/// A hint when the address given as REMOTE is the local side of a connection.
fn local_side_hint(diag: &mut Diag, addr: std::net::SocketAddr) -> Result<String> {
    let mut local: Vec<Flow> = diag
        .established()?
        .into_iter()
        .map(|c| c.flow)
        .filter(|f| f.local == addr)
        .collect();
    local.sort();
    Ok(match local.first() {
        Some(f) => format!(
            "; {addr} is this host's side of {f}: give REMOTE ({}), or LOCAL-REMOTE",
            f.remote
        ),
        None => String::new(),
    })
}

/// The TCP state of a socket, named as RFC 9293 names it.
fn state_name(c: &Conn) -> &'static str {
    if matches!(
        c.timer,
        Some(netlink_packet_sock_diag::inet::Timer::TimeWait)
    ) {
        return "TIME-WAIT";
    }
    match c.info.as_ref().map(|i| i.state) {
        Some(1) => "ESTABLISHED",
        Some(2) => "SYN-SENT",
        Some(3) | Some(12) => "SYN-RECEIVED",
        Some(4) => "FIN-WAIT-1",
        Some(5) => "FIN-WAIT-2",
        Some(6) => "TIME-WAIT",
        Some(7) => "CLOSED",
        Some(8) => "CLOSE-WAIT",
        Some(9) => "LAST-ACK",
        Some(10) => "LISTEN",
        Some(11) => "CLOSING",
        _ => "unknown",
    }
}
