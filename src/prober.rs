//! The I/O loop around the engine: sockets in, actions out.

use std::time::Duration;

use crate::engine::{Config, Outcome};
use crate::error::{Error, Result};
use crate::fleet::Fleet;
use crate::flow::{Flow, FlowSpec};
use crate::output::Reporter;
use crate::sys::diag::Diag;
use crate::sys::privilege::Bounding;

/// Turns what the user named into one established connection.
pub fn resolve(spec: FlowSpec, diag: &mut Diag) -> Result<Flow> {
    match spec {
        FlowSpec::Exact(flow) => match diag.lookup(&flow)? {
            Some(c) if c.established => Ok(flow),
            Some(_) => Err(Error::NoConnection(format!(
                "connection {flow} exists but is not established"
            ))),
            None => Err(Error::NoConnection(format!(
                "no established TCP connection {flow}"
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
                    "no established TCP connection to {remote}"
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

/// Runs the time/intvl/probes loop on one connection until it has an outcome.
pub fn probe_one(cfg: Config, diag: Diag, reporter: Reporter) -> Result<(Outcome, u64)> {
    let mut fleet = Fleet::open(&[cfg.flow], diag, u32::MAX, reporter)?;
    fleet.drop_privileges(&[], Bounding::Drop)?;
    fleet.add(cfg, None);
    loop {
        if let Some((_, outcome, ignored)) = fleet.step(Duration::from_secs(1))?.pop() {
            fleet.close();
            return Ok((outcome, ignored));
        }
    }
}
