//! The I/O loop around the engine: sockets in, actions out.

use std::time::Duration;

use crate::engine::{Config, Outcome};
use crate::error::{Error, Result};
use crate::fleet::Fleet;
use crate::flow::{Flow, FlowSpec};
use crate::output::Reporter;
use crate::sys::diag::{Conn, Diag};
use crate::sys::privilege::Bounding;
use crate::sys::raw;

/// Turns what the user named into one established connection.
pub fn resolve(spec: FlowSpec, diag: &mut Diag) -> Result<Flow> {
    resolve_conn(spec, diag).map(|c| c.flow)
}

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
                Some(_) => Err(Error::NoConnection(format!(
                    "connection {flow} exists but is not established"
                ))),
                None => Err(Error::NoConnection(format!(
                    "no established TCP connection {flow}"
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
                    "no established TCP connection to {remote}"
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

/// Runs the time/intvl/probes loop on one connection until it has an outcome.
pub fn probe_one(cfg: Config, diag: Diag, reporter: Reporter) -> Result<(Outcome, u64)> {
    let mut fleet = Fleet::open(&[cfg.flow], diag, u32::MAX, reporter)?;
    fleet.prepare_route(cfg.flow.is_ipv6(), cfg.route)?;
    fleet.drop_privileges(&[], Bounding::Drop)?;
    fleet.add(cfg, None);
    loop {
        if let Some((_, outcome, ignored)) = fleet.step(Duration::from_secs(1))?.pop() {
            fleet.close();
            return Ok((outcome, ignored));
        }
    }
}
