//! The runs behind [`Prober::probe`](crate::Prober::probe) and
//! [`Prober::sweep`](crate::Prober::sweep), in steps the command line takes too: choose the
//! source, resolve the connections, ask conntrack whether they may be touched, open the
//! fleets, run them to their outcomes.
//!
//! Nothing here prints, forks or drops a capability unless its [`Behaviour`] asks; progress
//! goes to a [`Watch`], which is also asked when to stop.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use caps::Capability;

use super::options::Options;
use super::resolve;
use super::source::{self, Chosen, Guard};
use crate::engine::{Config, Outcome, SeqSource, Verdict};
use crate::error::{Error, Result};
use crate::filter::Filter;
use crate::fleet::{Event, Fleet, conn_view};
use crate::flow::{Flow, FlowSpec, Signature};
use crate::sys::diag::{Conn, Diag};
use crate::sys::kernel_seq::KernelSeq;
use crate::sys::snmp::SignatureDrops;

/// What a run may do to its process beyond probing; nothing by default. The command line
/// asks for both.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Behaviour {
    /// Once the sockets are open, give up every capability of the calling thread (and the
    /// bounding set) but those the `kernel` source still needs. Refused while the process
    /// has more than one thread: capabilities are per thread.
    pub drop_privileges: bool,
    /// Close the capture socket without waiting 10-20 ms for the kernel's release, by
    /// handing its last reference to a forked child that lives until this process exits.
    pub release_detached: bool,
}

/// Progress of a run, and when to end it early.
pub trait Watch: Sync {
    /// Asked between turns (every [`TURN`] at most): true ends the run without waiting for
    /// the outcomes still missing.
    fn stop(&self) -> bool {
        false
    }

    /// Asked before each turn: an error ends the run with it.
    fn turn(&self) -> Result<()> {
        Ok(())
    }

    /// A probe sent or a note on the way; the outcomes are returned by the run.
    fn progress(&self, _event: &Event) {}
}

/// A watch that shows nothing and never stops a run.
pub struct Quiet;

impl Watch for Quiet {}

/// The longest wait in one turn of a run's loop: how soon a stop is noticed.
pub const TURN: Duration = Duration::from_millis(250);

/// The capabilities a fleet keeps after opening its sockets: each pass of the kernel
/// source makes a new BPF iterator, which needs CAP_BPF and CAP_PERFMON.
pub fn kernel_caps(kernel: bool) -> &'static [Capability] {
    if kernel {
        &[Capability::CAP_BPF, Capability::CAP_PERFMON]
    } else {
        &[]
    }
}

/// One turn over `fleet`: the outcomes reached within `wait`, in order, with the progress
/// on the way shown to `watch`.
fn turn(fleet: &mut Fleet, watch: &dyn Watch, wait: Duration) -> Result<Vec<(Flow, Outcome, u64)>> {
    watch.turn()?;
    Ok(crate::fleet::split_outcomes(fleet.step(wait)?, |e| {
        watch.progress(e)
    }))
}

/// Closes `fleet`'s sockets, detached from this process only when asked.
fn close(fleet: Fleet, behaviour: Behaviour) {
    if behaviour.release_detached {
        fleet.close();
    } else {
        drop(fleet);
    }
}

/// Either gives up every capability but `keep`, or opens what dropping would have opened.
fn settle_privileges(fleet: &mut Fleet, keep: &[Capability], behaviour: Behaviour) -> Result<()> {
    if behaviour.drop_privileges {
        fleet.drop_privileges(keep, None)
    } else {
        fleet.open_all_families()
    }
}

/// One connection probed: its flow, and its verdict with the answers ignored on the way
/// (`None` when [`Watch::stop`] ended the run first).
pub struct Probed {
    pub flow: Flow,
    pub outcome: Option<(Verdict, u64)>,
    /// Why the default `kernel` source fell back to `local`, if it did.
    pub fallback: Option<&'static str>,
}

/// The time/intvl/probes loop on the connection `spec` names, to its verdict. A connection
/// that closed during the probe is [`Error::NoConnection`]; numbers that could not be
/// learned, [`Error::Runtime`] with the likely cause.
pub fn probe(
    spec: FlowSpec,
    opts: &Options,
    behaviour: Behaviour,
    watch: &dyn Watch,
) -> Result<Probed> {
    let chosen = source::choose(opts.seq_source())?;
    let source = chosen.source;
    let mut diag = Diag::open()?;
    let conn = resolve::resolve_probeable(spec, &mut diag)?;
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
        timing: opts.timing(),
        source,
        garbage_octet: opts.garbage_octet(),
    };
    let drops_before = SignatureDrops::read();
    let fallback = chosen.fallback;
    let Some((outcome, ignored)) = probe_one(cfg, diag, chosen.kernel, wire, behaviour, watch)?
    else {
        return Ok(Probed {
            flow,
            outcome: None,
            fallback,
        });
    };
    if ignored > 0 {
        log::info!(
            "{flow}: ignored {ignored} {} that did not match the probe",
            if ignored == 1 { "answer" } else { "answers" }
        );
    }
    match outcome {
        Outcome::Verdict(v) => Ok(Probed {
            flow,
            outcome: Some((v, ignored)),
            fallback,
        }),
        Outcome::Closed => Err(Error::NoConnection(format!(
            "connection {flow} closed during the probe"
        ))),
        Outcome::LearnFailed => Err(Error::Runtime(learn_failed(&flow, source, drops_before))),
    }
}

/// Runs the time/intvl/probes loop on one connection until it has an outcome; `None` when
/// `watch` asked to stop first. `kernel` serves the `kernel` source; `wire` is where the
/// peer's segments appear when the flow is NAT-ed here.
fn probe_one(
    cfg: Config,
    diag: Diag,
    kernel: Option<KernelSeq>,
    wire: Option<(SocketAddr, SocketAddr)>,
    behaviour: Behaviour,
    watch: &dyn Watch,
) -> Result<Option<(Outcome, u64)>> {
    let flows = [cfg.flow];
    let keep = kernel_caps(kernel.is_some());
    let mut fleet = Fleet::open(&flows, diag, kernel, u32::MAX)?;
    fleet.prepare_route(cfg.flow.is_ipv6(), cfg.route)?;
    settle_privileges(&mut fleet, keep, behaviour)?;
    fleet.add(cfg, None);
    if let Some((src, dst)) = wire {
        fleet.translate(&cfg.flow, src, dst)?;
    }
    loop {
        if watch.stop() {
            close(fleet, behaviour);
            return Ok(None);
        }
        if let Some((_, outcome, ignored)) = turn(&mut fleet, watch, TURN)?.pop() {
            close(fleet, behaviour);
            return Ok(Some((outcome, ignored)));
        }
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

/// Why a connection a sweep matched gets no probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skipped {
    /// It is signed (TCP-MD5, TCP-AO): both ends drop unsigned segments.
    Signed(Signature),
    /// The source may not touch it (README "Do no harm"); the reason was logged.
    Refused,
}

/// What a sweep will probe: the matching connections, sorted, one per flow.
pub struct Plan {
    pub chosen: Chosen,
    pub diag: Diag,
    /// Every matching connection, probed or not.
    pub all: Vec<Flow>,
    /// Those to probe.
    pub conns: Vec<Conn>,
    /// Those not probed, and why: the signed ones first, then the refused ones.
    pub skipped: Vec<(Flow, Skipped)>,
    /// Where the peer's segments appear on the wire for the flows NAT-ed here.
    pub wires: HashMap<Flow, (SocketAddr, SocketAddr)>,
}

/// Lists the connections `filter` matches ([`Error::NoConnection`] when none does) and
/// asks, for each, whether the chosen source may touch it.
pub fn plan(filter: &Filter, chosen: Chosen) -> Result<Plan> {
    let mut diag = Diag::open()?;
    let mut conns = filter.require_established(&mut diag)?;
    conns.sort_by_key(|c| c.flow);
    // One row per connection, even if the kernel listed a socket twice.
    conns.dedup_by_key(|c| c.flow);
    // Signed connections cannot be probed: no packet for them.
    let mut skipped: Vec<(Flow, Skipped)> = conns
        .iter()
        .filter_map(|c| Some((c.flow, Skipped::Signed(c.signature?))))
        .collect();
    let all: Vec<Flow> = conns.iter().map(|c| c.flow).collect();
    conns.retain(|c| c.signature.is_none());
    // Connections the source must not touch (README "Do no harm") get no packet; NAT-ed
    // ones are captured with the wire's addresses.
    source::require_raw()?;
    let mut guard = Guard::open()?;
    let mut wires = HashMap::new();
    let flows: Vec<Flow> = conns.iter().map(|c| c.flow).collect();
    guard.prefetch(&flows)?;
    conns.retain(|c| match guard.admit(&c.flow, chosen.source) {
        Ok(wire) => {
            wires.extend(wire.map(|w| (c.flow, w)));
            true
        }
        Err(e) => {
            log::warn!("{e}");
            skipped.push((c.flow, Skipped::Refused));
            false
        }
    });
    Ok(Plan {
        chosen,
        diag,
        all,
        conns,
        skipped,
        wires,
    })
}

/// Sweeps smaller than this run on one thread.
const PARALLEL_FROM: usize = 2000;
const MAX_WORKERS: usize = 4;

/// One fleet per worker, each with its slice of the plan's connections added and its
/// routes' raw sockets configured; then, if asked, every privilege is dropped, before any
/// worker thread starts.
pub fn open_fleets(plan: Plan, opts: &Options, behaviour: Behaviour) -> Result<Opened> {
    let Plan {
        chosen,
        diag,
        all,
        conns,
        skipped,
        wires,
    } = plan;
    let source = chosen.source;
    let mut kernel = chosen.kernel;
    // Most of a probe's cost is the kernel's: the injected SYN, the challenge ACK and the probe
    // are processed inside our send calls. Large sweeps use every core, one fleet each, on
    // contiguous slices (so each capture filter stays a few port ranges).
    let workers = if conns.len() >= PARALLEL_FROM {
        std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(MAX_WORKERS)
    } else {
        1
    };
    let per = conns.len().div_ceil(workers);
    let rate = (opts.rate() / workers as u32).max(1);
    let mut fleets = Vec::with_capacity(workers);
    // The first fleet gets the socket the connections were listed with, the others new ones.
    let mut diag = Some(diag);
    for slice in conns.chunks(per.max(1)) {
        let flows: Vec<Flow> = slice.iter().map(|c| c.flow).collect();
        let d = match diag.take() {
            Some(d) => d,
            None => Diag::open()?,
        };
        // Each worker's fleet reads the kernel's numbers with its own iterator.
        let k = match kernel.take() {
            Some(k) => Some(k),
            None if source == SeqSource::Kernel => {
                Some(KernelSeq::open().map_err(|e| Error::Runtime(e.to_string()))?)
            }
            None => None,
        };
        let mut fleet = Fleet::open(&flows, d, k, rate)?;
        for c in slice {
            let cfg = Config {
                flow: c.flow,
                route: c.route,
                timing: opts.timing(),
                source,
                garbage_octet: opts.garbage_octet(),
            };
            fleet.add(cfg, Some(conn_view(c)));
            if let Some(&(src, dst)) = wires.get(&c.flow) {
                fleet.translate(&c.flow, src, dst)?;
            }
            fleet.prepare_route(c.flow.is_ipv6(), c.route)?;
        }
        fleets.push(fleet);
    }
    // Capabilities are per thread: drop them before any worker starts.
    for f in &mut fleets {
        f.open_all_families()?;
    }
    if behaviour.drop_privileges {
        crate::sys::privilege::drop_privileges(kernel_caps(source == SeqSource::Kernel), None)?;
    }
    Ok(Opened {
        fleets,
        all,
        skipped,
    })
}

/// A sweep's fleets, ready to run, with the plan's list of what they do not probe.
pub struct Opened {
    pub fleets: Vec<Fleet>,
    /// Every matching connection, probed or not.
    pub all: Vec<Flow>,
    /// Those not probed, and why.
    pub skipped: Vec<(Flow, Skipped)>,
}

/// Runs every fleet on a thread of its own to the end, or until `watch` asks to stop. Each
/// outcome goes to `decided` on the calling thread as soon as it is reached; its first
/// error stops the workers and is returned. Returns the fleets, for [`close_fleets`].
pub fn run_fleets(
    fleets: Vec<Fleet>,
    watch: &dyn Watch,
    decided: &mut dyn FnMut(Flow, Outcome, u64) -> Result<()>,
) -> Result<Vec<Fleet>> {
    let stopping = AtomicBool::new(false);
    let (tx, rx) = mpsc::channel::<(Flow, Outcome, u64)>();
    let results: Vec<Result<Fleet>> = std::thread::scope(|scope| {
        let handles: Vec<_> = fleets
            .into_iter()
            .map(|f| {
                let tx = tx.clone();
                let stopping = &stopping;
                scope.spawn(move || run_fleet(f, watch, stopping, tx))
            })
            .collect();
        drop(tx);
        let mut failed = None;
        // Ends when every worker has finished and dropped its sender.
        for (flow, outcome, ignored) in rx {
            if failed.is_none()
                && let Err(e) = decided(flow, outcome, ignored)
            {
                failed = Some(e);
                stopping.store(true, Ordering::SeqCst);
            }
        }
        let mut results: Vec<Result<Fleet>> = failed.into_iter().map(Err).collect();
        // A worker's panic is a bug: carry it on rather than turn it into an error.
        results.extend(
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))),
        );
        results
    });
    results.into_iter().collect()
}

/// Closes the fleets a sweep ran; returns the probes they sent.
pub fn close_fleets(fleets: Vec<Fleet>, behaviour: Behaviour) -> u64 {
    let mut probes = 0;
    for fleet in fleets {
        probes += fleet.probes_sent();
        close(fleet, behaviour);
    }
    probes
}

/// Drives one fleet until every connection in it has an outcome, or a stop is requested.
fn run_fleet(
    mut fleet: Fleet,
    watch: &dyn Watch,
    stopping: &AtomicBool,
    tx: mpsc::Sender<(Flow, Outcome, u64)>,
) -> Result<Fleet> {
    while fleet.active() > 0 && !watch.stop() && !stopping.load(Ordering::SeqCst) {
        let outcomes = match turn(&mut fleet, watch, TURN) {
            Ok(outcomes) => outcomes,
            Err(e) => {
                // The other workers have nothing left to report to.
                stopping.store(true, Ordering::SeqCst);
                return Err(e);
            }
        };
        for outcome in outcomes {
            if tx.send(outcome).is_err() {
                return Ok(fleet);
            }
        }
    }
    Ok(fleet)
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
