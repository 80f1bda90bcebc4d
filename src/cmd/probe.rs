//! `kaprobe probe FLOW`: the time/intvl/probes loop on one connection, one verdict.

use clap::Args;

use super::Ctx;
use super::args::{FlowArg, ProbeStyle, TimingArgs};
use crate::cmd::prober;
use crate::error::Result;
use crate::exit::ExitStatus;

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
    let reporter = ctx.reporter();
    let opts = prober::options(&args.timing, &args.style, None)?;
    if let Some(w) = args.timing.timing().warning() {
        log::warn!("{w}");
    }
    let spec = args.flow.spec()?;
    let probed = prober::command_prober()?.run_probe(spec, &opts, &prober::Shown(reporter))?;
    let flow = probed.flow;
    if let Some(why) = probed.fallback {
        crate::output::set_source_fallback(why);
    }
    let Some((verdict, ignored)) = probed.outcome else {
        reporter.unfinished(&flow, "interrupted", None)?;
        return Ok(ExitStatus::Interrupted);
    };
    reporter.verdict(&flow, &verdict, ignored)?;
    Ok(ExitStatus::of_verdict(verdict.kind))
}
