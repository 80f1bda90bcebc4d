//! The I/O loop around the engine: sockets in, actions out.

use std::time::Duration;

use crate::engine::{Config, Outcome};
use crate::error::{Error, Result};
use crate::fleet::Fleet;
use crate::flow::{Flow, FlowSpec};
use crate::output::Reporter;
use crate::sys::diag::{Conn, Diag};
use crate::sys::privilege::Bounding;
use crate::sys::stop_requested;

/// Turns what the user named into one established connection.
pub fn resolve(spec: FlowSpec, diag: &mut Diag) -> Result<Flow> {
    match spec {
        FlowSpec::Exact(flow) => match diag.lookup(&flow)? {
            Some(c) if c.established => Ok(flow),
            Some(c) => Err(Error::NoConnection(format!(
                "connection {flow} is in state {}, not established",
                state_name(&c)
            ))),
            None => Err(Error::NoConnection(format!(
                "no established TCP connection {flow}{}",
                reversed_hint(diag, &flow)?
            ))),
        },
        FlowSpec::Remote(remote) => {
            let mut matches: Vec<Flow> = diag
                .established()?
                .into_iter()
                .map(|c| c.flow)
                .filter(|f| f.remote == remote)
                .collect();
            matches.sort();
            matches.dedup();
            match matches.as_slice() {
                [] => Err(Error::NoConnection(format!(
                    "no established TCP connection to {remote}{}",
                    local_side_hint(diag, remote)?
                ))),
                [one] => Ok(*one),
                many => Err(Error::Usage(format!(
                    "{} established connections go to {remote}: {}; name one as LOCAL-REMOTE",
                    many.len(),
                    many.iter()
                        .map(|f| f.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))),
            }
        }
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

/// Runs the time/intvl/probes loop on one connection until it has an outcome; `None` when
/// SIGINT/SIGTERM came first (see `sys::catch_stop_signals`).
pub fn probe_one(cfg: Config, diag: Diag, reporter: Reporter) -> Result<Option<(Outcome, u64)>> {
    let mut fleet = Fleet::open(&[cfg.flow], diag, u32::MAX, reporter)?;
    fleet.drop_privileges(&[], Bounding::Drop)?;
    fleet.add(cfg, None);
    loop {
        if stop_requested() {
            fleet.close();
            return Ok(None);
        }
        crate::output::check()?;
        if let Some((_, outcome, ignored)) = fleet.step(Duration::from_millis(250))?.pop() {
            fleet.close();
            return Ok(Some((outcome, ignored)));
        }
    }
}
