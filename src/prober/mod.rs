//! The library's entry point: a [`Prober`] opened in a network namespace, which probes one
//! connection or sweeps many (re-exported at the crate root).
//!
//! The command line is built on it: `kaprobe probe` and `kaprobe sweep` run through a
//! `Prober` that asks for the two behaviours a library caller does not get by default
//! (dropping capabilities, and a detached release of the capture socket).

use std::fs::File;
use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::filter::Filter;
use crate::flow::{Flow, FlowSpec};
use crate::sys::netns::{self, Target};

pub mod options;
pub mod report;
pub mod resolve;
pub mod run;
pub mod source;

pub use options::Options;
pub use report::Report;
use run::{Behaviour, Quiet, Watch};

/// The network namespace a [`Prober`] probes in: the connections it sees, and where its
/// probes leave from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Namespace {
    /// The calling thread's own.
    Current,
    /// One of `ip netns`, by name (a file under /run/netns), as `kaprobe --netns NAME`.
    Name(String),
    /// Any network namespace file, e.g. `/proc/PID/ns/net` or a container runtime's, as
    /// `kaprobe --netns PATH`.
    Path(PathBuf),
    /// That of a process, as `kaprobe --pid PID` (`/proc/PID/ns/net`).
    Pid(u32),
}

/// Probes established TCP connections of one network namespace with crafted keepalive
/// probes, and says whether their peers are alive, dead, reset or unreachable.
///
/// Probing needs CAP_NET_RAW and CAP_NET_ADMIN (root has them); the default `kernel`
/// sequence source also CAP_BPF and CAP_PERFMON, and without them the `local` source is
/// used where conntrack says it is safe. A missing capability is [`Error::Privilege`],
/// naming it. Opening a namespace other than [`Namespace::Current`] needs CAP_SYS_ADMIN.
///
/// By default a `Prober` leaves its caller as it found it: it does not drop the caller's
/// capabilities, fork, print (progress goes to the `log` crate, if the caller installed a
/// logger), or move the calling thread into another namespace — each probe or sweep in
/// another namespace runs on a thread of its own, which enters it (`setns` moves only the
/// calling thread) and ends with the call. [`ProberBuilder`] turns on the two behaviours
/// the command line wants.
///
/// ```no_run
/// use kaprobe::{Namespace, Options, Prober, Verdict};
///
/// // A connection of namespace `lab-a`, as `ss -tn` prints it there.
/// let prober = Prober::open(Namespace::Name("lab-a".into()))?;
/// let flow = "198.18.0.2:40000-198.51.100.2:9000".parse()?;
/// let report = prober.probe(&flow, &Options::default())?;
/// match report.verdict {
///     Verdict::Alive => println!("alive, rtt {:?}", report.rtt),
///     other => println!("{flow} {}", other.as_str()),
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Prober {
    /// The namespace file, held open: the namespace it named when opened, even if the name
    /// goes away meanwhile. `None` for the caller's own.
    ns: Option<(Target, File)>,
    behaviour: Behaviour,
}

/// Opens a [`Prober`] with behaviours a library caller does not get by default.
///
/// ```no_run
/// use kaprobe::{Namespace, Prober};
/// // What `kaprobe probe` does, from a single-threaded process.
/// let prober = Prober::builder(Namespace::Current)
///     .drop_privileges(true)
///     .release_detached(true)
///     .open()?;
/// # Ok::<(), kaprobe::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct ProberBuilder {
    ns: Namespace,
    behaviour: Behaviour,
}

impl ProberBuilder {
    /// Once its sockets are open, each run gives up every capability of the thread it runs
    /// on (and empties the bounding set where allowed) but those the `kernel` source still
    /// needs, as `ping` does. For single-threaded programs in [`Namespace::Current`] (the
    /// run is then on the calling thread): capabilities are per thread, and a run refuses
    /// with [`Error::Runtime`] while the process has other threads. Off by default.
    pub fn drop_privileges(mut self, yes: bool) -> Self {
        self.behaviour.drop_privileges = yes;
        self
    }

    /// Closes the capture socket without waiting for the kernel's release of it (an RCU
    /// grace period, 10-20 ms, often longer than the probe): a forked child takes its last
    /// reference and exits when this process does. For short-lived programs; off by
    /// default, when the run waits for the release instead.
    pub fn release_detached(mut self, yes: bool) -> Self {
        self.behaviour.release_detached = yes;
        self
    }

    /// Opens the namespace, as [`Prober::open`].
    pub fn open(self) -> Result<Prober> {
        let ns = match self.ns {
            Namespace::Current => None,
            Namespace::Name(name) => {
                let target = Target::from_netns_arg(&name)?;
                if !matches!(target, Target::Name(_)) {
                    return Err(Error::Usage(format!(
                        "'{name}' is not a namespace name (it has a '/'); give \
                         Namespace::Path for a path"
                    )));
                }
                Some(target)
            }
            Namespace::Path(path) => Some(Target::Path(path)),
            Namespace::Pid(pid) => Some(Target::from_pid(pid)?),
        };
        let ns = match ns {
            None => None,
            Some(target) => {
                let file = netns::open(&target)?;
                // Entered once on a thread of its own, so that a file that is not a
                // network namespace, or a missing privilege, fails here.
                std::thread::scope(|s| {
                    s.spawn(|| netns::enter_file(&target, &file))
                        .join()
                        .unwrap_or_else(|e| std::panic::resume_unwind(e))
                })?;
                Some((target, file))
            }
        };
        Ok(Prober {
            ns,
            behaviour: self.behaviour,
        })
    }
}

impl Prober {
    /// A prober in `ns`, with the default behaviours (see [`Prober`]). Fails with
    /// [`Error::Usage`] when the namespace does not exist or is not a network namespace, and
    /// [`Error::Privilege`] without CAP_SYS_ADMIN.
    pub fn open(ns: Namespace) -> Result<Prober> {
        Prober::builder(ns).open()
    }

    /// A builder for a prober in `ns` with other behaviours.
    pub fn builder(ns: Namespace) -> ProberBuilder {
        ProberBuilder {
            ns,
            behaviour: Behaviour::default(),
        }
    }

    /// Runs the time/intvl/probes loop on the established connection `flow` (as this host
    /// sees it: `local` is this side), then returns its verdict. It takes at most
    /// `time + probes × intvl` after the connection fell idle, plus the connection's RTO.
    ///
    /// Errors: [`Error::NoConnection`] when `flow` is not established (or closed during the
    /// probe), [`Error::Privilege`] for a missing capability, [`Error::Runtime`] when the
    /// connection may not or cannot be probed (signed with TCP-MD5 or TCP-AO, or a `local`
    /// source conntrack would be hurt by); [`Error::status`] gives the exit status
    /// `kaprobe probe` would.
    pub fn probe(&self, flow: &Flow, opts: &Options) -> Result<Report> {
        warn_timing(opts);
        let spec = FlowSpec::Exact(*flow, None);
        let probed = self.run_probe(spec, opts, &Quiet)?;
        let (verdict, ignored) = probed
            .outcome
            .ok_or_else(|| Error::Runtime(format!("the probe of {flow} was stopped")))?;
        Ok(Report::new(probed.flow, &verdict, ignored))
    }

    /// Runs the loop on every established connection `filter` matches, all at once, and
    /// returns their verdicts, sorted by flow. Connections that get no verdict are left out:
    /// signed ones (never probed), those the sequence source may not touch (a warning is
    /// logged), those that closed meanwhile, and those whose numbers could not be learned.
    ///
    /// Errors: [`Error::NoConnection`] when nothing matches, [`Error::Privilege`] for a
    /// missing capability.
    pub fn sweep(&self, filter: &Filter, opts: &Options) -> Result<Vec<Report>> {
        warn_timing(opts);
        let behaviour = self.behaviour;
        self.run(|| {
            let chosen = source::choose(opts.seq_source())?;
            let plan = run::plan(filter, chosen)?;
            let fleets = run::open_fleets(plan, opts, behaviour)?.fleets;
            let mut reports = Vec::new();
            let fleets = run::run_fleets(fleets, &Quiet, &mut |flow, outcome, ignored| {
                if let crate::engine::Outcome::Verdict(v) = outcome {
                    reports.push(Report::new(flow, &v, ignored));
                }
                Ok(())
            })?;
            run::close_fleets(fleets, behaviour);
            reports.sort_by_key(|r| r.flow);
            Ok(reports)
        })
    }

    /// [`Prober::probe`] on what the user named (a bare remote side, a zone), with its
    /// progress shown to and its end decided by `watch`; the outcome is `None` when `watch`
    /// stopped it. The command line's way in.
    #[doc(hidden)]
    pub fn run_probe(
        &self,
        spec: FlowSpec,
        opts: &Options,
        watch: &dyn Watch,
    ) -> Result<run::Probed> {
        let behaviour = self.behaviour;
        self.run(|| run::probe(spec, opts, behaviour, watch))
    }

    /// The behaviours this prober was opened with.
    #[doc(hidden)]
    pub fn behaviour(&self) -> Behaviour {
        self.behaviour
    }

    /// Runs `f` in the prober's namespace: on the calling thread for
    /// [`Namespace::Current`], else on a thread of its own that enters the namespace and
    /// ends with `f`, so that no thread of the caller's changes namespace.
    #[doc(hidden)]
    pub fn run<T: Send>(&self, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
        let Some((target, file)) = &self.ns else {
            return f();
        };
        std::thread::scope(|s| {
            s.spawn(|| {
                netns::enter_file(target, file)?;
                f()
            })
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e))
        })
    }
}

/// The warning `kaprobe` gives for an interval below the peer's rate limit.
fn warn_timing(opts: &Options) {
    if let Some(w) = opts.timing().warning() {
        log::warn!("{w}");
    }
}
