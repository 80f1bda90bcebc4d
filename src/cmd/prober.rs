//! The command line as a client of the library (`crate::prober`): the `Prober` the probing
//! commands open, their options in the library's terms, and their progress shown by the
//! command's `Reporter`; and the turn of the I/O loop `watch` takes.

use std::time::Duration;

pub use crate::prober::resolve::{resolve_conn, resolve_probeable};
pub use crate::prober::run::{TURN, kernel_caps};

use super::args::{ProbeStyle, TimingArgs};
use crate::engine::Outcome;
use crate::error::Result;
use crate::fleet::{Event, Fleet};
use crate::flow::Flow;
use crate::output::Reporter;
use crate::prober::run::Watch;
use crate::prober::{Namespace, Options, Prober};

/// The prober of `probe` and `sweep`: in the namespace `cli` entered for `--netns`/`--pid`
/// (the process's only thread runs there), dropping every capability once the sockets are
/// open, and leaving the capture socket's release to a child so that the exit status comes
/// without waiting for it.
pub fn command_prober() -> Result<Prober> {
    Prober::builder(Namespace::Current)
        .drop_privileges(true)
        .release_detached(true)
        .open()
}

/// The library's options for what the command line says; clap has checked the same bounds.
pub fn options(timing: &TimingArgs, style: &ProbeStyle, rate: Option<u32>) -> Result<Options> {
    let mut b = Options::builder()
        .time(timing.time)
        .intvl(timing.intvl)
        .probes(timing.probes)
        .garbage_octet(style.garbage_octet);
    if let Some(source) = style.seq_source {
        b = b.seq_source(source.source());
    }
    if let Some(rate) = rate {
        b = b.rate(rate);
    }
    b.build()
}

/// A run's progress as the command shows it: ended by SIGINT/SIGTERM, or once standard
/// output has failed or its reader has gone away (README "Pipes, signals and limits");
/// probes and notes through the `Reporter`.
pub struct Shown(pub Reporter);

impl Watch for Shown {
    fn stop(&self) -> bool {
        crate::sys::stop_requested()
    }

    fn turn(&self) -> Result<()> {
        crate::output::check()
    }

    fn progress(&self, event: &Event) {
        self.0.progress(event);
    }
}

/// One turn of a command's loop over `fleet`: `Err` once standard output has failed or its
/// reader has gone away (README "Pipes, signals and limits"), else the outcomes the fleet
/// reached within `wait`, in order, with its progress shown by `reporter`.
pub fn turn(
    fleet: &mut Fleet,
    reporter: Reporter,
    wait: Duration,
) -> Result<Vec<(Flow, Outcome, u64)>> {
    crate::output::check()?;
    Ok(reporter.outcomes(fleet.step(wait)?))
}
