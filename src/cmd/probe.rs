//! `kaprobe probe FLOW`: the time/intvl/probes loop on one connection, one verdict.

use clap::Args;

use super::Ctx;
use super::args::{FlowArg, ProbeStyle, TimingArgs};
use crate::engine::{Config, Outcome, SeqSource};
use crate::error::{Error, Result};
use crate::exit::ExitStatus;
use crate::output::Reporter;
use crate::prober;
use crate::sys::diag::Diag;

#[derive(Args, Debug)]
pub struct ProbeArgs {
    #[command(flatten)]
    pub flow: FlowArg,
    #[command(flatten)]
    pub timing: TimingArgs,
    #[command(flatten)]
    pub style: ProbeStyle,
}

pub fn run(args: &ProbeArgs, ctx: &Ctx) -> Result<ExitStatus> {
    crate::sys::catch_stop_signals();
    let reporter = Reporter {
        json: ctx.json,
        verbose: ctx.verbose,
    };
    let timing = args.timing.timing();
    if let Some(w) = timing.warning() {
        log::warn!("{w}");
    }
    let source = args.style.seq_source.source();
    let mut diag = Diag::open()?;
    let flow = prober::resolve(args.flow.spec()?, &mut diag)?;
    let cfg = Config {
        flow,
        route: Default::default(),
        timing,
        source,
        garbage_octet: args.style.garbage_octet,
    };
    let Some((outcome, ignored)) = prober::probe_one(cfg, diag, reporter)? else {
        reporter.unfinished(&flow, "interrupted", None)?;
        return Ok(ExitStatus::Interrupted);
    };
    if ignored > 0 {
        log::info!(
            "{flow}: ignored {} that did not match the probe",
            crate::output::count(ignored, "answer")
        );
    }
    match outcome {
        Outcome::Verdict(v) => {
            reporter.verdict(&flow, &v, ignored)?;
            Ok(ExitStatus::of_verdict(v.kind))
        }
        Outcome::Closed => Err(Error::NoConnection(format!(
            "connection {flow} closed during the probe"
        ))),
        Outcome::LearnFailed => Err(Error::Runtime(match source {
            SeqSource::Sniff => {
                format!("no segment of {flow} seen on the wire; try --seq-source local")
            }
            _ => format!(
                "could not learn the sequence numbers of {flow}: the local socket sent no \
                 challenge ACK to {} injected SYNs",
                crate::engine::LEARN_TRIES
            ),
        })),
    }
}
