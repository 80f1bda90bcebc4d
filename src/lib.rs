//! kaprobe: check whether the peer of an established TCP connection is still there.
//!
//! kaprobe crafts the TCP keepalive probe itself — a pure ACK one below the next sequence
//! number the peer expects, on the connection's own 4-tuple, through a raw socket — and
//! reads the answer: an ACK is [`Verdict::Alive`], an RST [`Verdict::Reset`] (the peer
//! restarted), an ICMP error or a local cause [`Verdict::Unreachable`], and silence after
//! every probe [`Verdict::Dead`]. It never sends data, a FIN or an RST on the connection.
//!
//! This library is what the `kaprobe` command line is built on, for test harnesses and
//! services that want the same verdicts from code. Open a [`Prober`] in a network namespace,
//! then [`probe`](Prober::probe) one connection or [`sweep`](Prober::sweep) those a
//! [`Filter`] matches; each verdict comes back as a [`Report`], which serialises as
//! `kaprobe --json` prints it.
//!
//! ```no_run
//! use std::time::Duration;
//! use kaprobe::{Filter, Namespace, Options, Prober, Verdict};
//!
//! // Needs root (CAP_NET_RAW, CAP_NET_ADMIN; CAP_SYS_ADMIN to enter the namespace).
//! let prober = Prober::open(Namespace::Name("lab-a".into()))?;
//! let opts = Options::builder()
//!     .intvl(Duration::from_millis(500))
//!     .probes(3)
//!     .build()?;
//!
//! let flow = "198.18.0.2:40000-198.51.100.2:9000".parse()?;
//! let report = prober.probe(&flow, &opts)?;
//! assert_eq!(report.verdict, Verdict::Alive, "{}", serde_json::to_string(&report)?);
//!
//! let mut filter = Filter::default();
//! filter.port = Some(9000);
//! for report in prober.sweep(&filter, &opts)? {
//!     println!("{} {}", report.flow, report.verdict.as_str());
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! By default the library leaves its caller as it found it: it does not drop capabilities,
//! fork, print, or leave the calling thread in another namespace (see [`Prober`]). Errors
//! are one [`Error`] type whose [`status`](Error::status) is the exit status the command
//! line would give.
//!
//! # Code layout
//!
//! Modules point one way (README "Code layout"; `scripts/check-layers.sh` checks it):
//! `seq`, `flow` → `wire`, `keepalive_track` → `engine` (the pure time/intvl/probes state
//! machine) → `exit`, `error` → `sys` (sockets, netlink, namespaces), `filter` → `fleet` (the
//! I/O loop over narrow traits) → `prober` (this library's entry point), `output`, `metrics`
//! → `cmd` (one module per subcommand) → `cli`. Only the entry point and the types it uses
//! are documented; the other modules are public for the command line, the tests and the
//! fuzz targets, and are not a stable interface.

#![warn(missing_docs)]

#[doc(hidden)]
pub mod cli;
#[doc(hidden)]
pub mod cmd;
#[doc(hidden)]
pub mod engine;
#[doc(hidden)]
pub mod error;
#[doc(hidden)]
pub mod exit;
#[doc(hidden)]
pub mod filter;
#[doc(hidden)]
pub mod fleet;
#[doc(hidden)]
pub mod flow;
#[doc(hidden)]
pub mod keepalive_track;
#[doc(hidden)]
pub mod metrics;
#[doc(hidden)]
pub mod output;
#[doc(hidden)]
pub mod prober;
#[doc(hidden)]
pub mod seq;
#[doc(hidden)]
pub mod sys;
#[doc(hidden)]
pub mod wire;

pub use engine::{Evidence, SeqSource, VerdictKind as Verdict};
pub use error::{Error, Result};
pub use exit::ExitStatus;
pub use filter::{AddrMatch, Filter};
pub use flow::{Cause, Flow, FlowParseError};
pub use prober::options::{Options, OptionsBuilder};
pub use prober::report::{Icmp, Report};
pub use prober::{Namespace, Prober, ProberBuilder};
