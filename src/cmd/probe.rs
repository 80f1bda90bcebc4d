//! `kaprobe probe FLOW`: the time/intvl/probes loop on one connection, one verdict.

use clap::Args;

use super::Ctx;
use super::args::{FlowArg, ProbeStyle, TimingArgs};
use crate::cmd::prober;
use crate::cmd::source::{self, Guard};
use crate::engine::{Config, Outcome, SeqSource};
use crate::error::{Error, Result};
use crate::exit::ExitStatus;
use crate::flow::Flow;
use crate::sys::diag::Diag;
use crate::sys::snmp::SignatureDrops;

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
    let timing = args.timing.timing();
    if let Some(w) = timing.warning() {
        log::warn!("{w}");
    }
    let spec = args.flow.spec()?;
    let chosen = source::choose(args.style.seq_source)?;
    let source = chosen.source;
    let mut diag = Diag::open()?;
    let conn = prober::resolve_probeable(spec, &mut diag)?;
    let flow = conn.flow;
    source::require_raw()?;
    let wire = Guard::open()?.admit(&flow, source)?;
    if let Some((src, dst)) = wire {
        log::info!("{flow}: NAT-ed on this host: the peer's segments arrive from {src} to {dst}");
    }
    log::info!(
        "{flow}: sequence numbers from the {} source",
        source.as_str()
    );
    if conn.route.is_set() {
        log::info!(
            "{flow}: routed like its socket: {}",
            crate::sys::raw::describe_route(conn.route)
        );
    }
    let cfg = Config {
        flow,
        route: conn.route,
        timing,
        source,
        garbage_octet: args.style.garbage_octet,
    };
    let drops_before = SignatureDrops::read();
    let Some((outcome, ignored)) = prober::probe_one(cfg, diag, chosen.kernel, wire, reporter)?
    else {
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
        Outcome::LearnFailed => Err(Error::Runtime(learn_failed(&flow, source, drops_before))),
    }
}

/// Why the numbers could not be learned, in one line. By now the fleet has checked the route
/// and the egress link (a link down or without carrier would have made the verdict
/// `unreachable`), so what is left is the local host itself.
fn learn_failed(flow: &Flow, source: SeqSource, drops_before: Option<SignatureDrops>) -> String {
    match source {
        SeqSource::Kernel => format!(
            "the kernel's socket iterator did not list {flow} although sock_diag did: it              closed, or it is not in this network namespace"
        ),
        SeqSource::Sniff => {
            format!("no segment of {flow} seen on the wire; try --seq-source local")
        }
        // sock_diag cannot show TCP-AO (nor TCP-MD5 without CAP_NET_ADMIN); the stack's
        // drop counters can, after the fact: our SYNs were unsigned.
        SeqSource::Local
            if let Some(sig) = drops_before.and_then(|before| {
                SignatureDrops::read().and_then(|after| after.rose_since(&before))
            }) =>
        {
            format!(
                "could not learn the sequence numbers of {flow}: the local stack dropped \
                 the injected SYNs as unsigned, so the connection most likely uses {}; \
                 both ends drop unsigned segments, so kaprobe cannot probe it",
                sig.as_str()
            )
        }
        _ => format!(
            "could not learn the sequence numbers of {flow}: the local socket sent no challenge \
             ACK (RFC 5961) to {} injected SYNs, though its route and egress link are up; likely \
             a local firewall dropping the injected SYN (INPUT) or the challenge ACK (OUTPUT), a \
             next hop that no longer answers ARP/ND (the ACK waits for it and never leaves), a \
             TCP-MD5/TCP-AO signed connection, or the socket leaving ESTABLISHED",
            crate::engine::LEARN_TRIES
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_learn_failure_says_what_was_checked_and_what_is_left() {
        let flow = Flow {
            local: "198.18.0.2:40000".parse().unwrap(),
            remote: "198.51.100.2:9000".parse().unwrap(),
        };
        let m = learn_failed(&flow, SeqSource::Local, None);
        assert!(!m.contains('\n'), "one line: {m}");
        for part in [
            "198.18.0.2:40000-198.51.100.2:9000",
            "no challenge ACK",
            "3 injected SYNs",
            "egress link are up",
            "firewall",
            "ARP/ND",
            "TCP-MD5",
            "ESTABLISHED",
        ] {
            assert!(m.contains(part), "{part:?} missing from: {m}");
        }
        assert!(learn_failed(&flow, SeqSource::Sniff, None).contains("--seq-source local"));
    }
}
