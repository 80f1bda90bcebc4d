//! The I/O loop around the engine: sockets in, actions out.

use std::time::{Duration, Instant};

use crate::engine::{Action, Config, Engine, Outcome};
use crate::error::{Error, Result};
use crate::flow::{Flow, FlowSpec};
use crate::output::Reporter;
use crate::sys::capture::Capture;
use crate::sys::diag::Diag;
use crate::sys::raw::Sender;
use crate::sys::{bpf, random_seed, wait_readable};
use crate::wire::decode;

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
pub fn probe_one(cfg: Config, diag: &mut Diag, reporter: &Reporter) -> Result<(Outcome, u64)> {
    let flow = cfg.flow;
    let mut capture = Capture::open(&bpf::flows_filter(&[flow]))?;
    let mut sender = Sender::open(!flow.is_ipv6(), flow.is_ipv6())?;
    let clock = Instant::now();
    let mut engine = Engine::new(cfg, Duration::ZERO, random_seed());
    loop {
        while let Some(action) = engine.poll(clock.elapsed()) {
            match action {
                Action::QueryConnection => {
                    let view = diag
                        .lookup(&flow)?
                        .filter(|c| c.established)
                        .map(|c| c.view());
                    engine.on_connection(clock.elapsed(), view);
                }
                Action::InjectSyn(syn) => sender.send(&syn)?,
                Action::Send { probe, index } => {
                    sender.send(&probe)?;
                    reporter.probe(&flow, &probe, index, clock.elapsed());
                }
                Action::Note(note) => reporter.note(&flow, &note, clock.elapsed()),
                Action::Finish(outcome) => {
                    capture.release_detached();
                    return Ok((outcome, engine.ignored()));
                }
            }
        }
        let Some(at) = engine.poll_at() else {
            return Err(Error::Runtime(
                "prober stalled with nothing to wait for".into(),
            ));
        };
        wait_readable(capture.fd(), Some(at.saturating_sub(clock.elapsed()))).map_err(|e| {
            Error::Io {
                context: "waiting for packets".into(),
                source: e,
            }
        })?;
        while let Some(bytes) = capture.next_packet()? {
            match decode(bytes) {
                Ok(packet) => engine.on_packet(clock.elapsed(), &packet),
                Err(e) => log::debug!("skipped a captured packet: {e}"),
            }
        }
    }
}
