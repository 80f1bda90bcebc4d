//! kaprobe: check whether the peer of an established TCP connection is still there.
//!
//! Modules point one way (README "Code layout"; `scripts/check-layers.sh` checks it):
//! `seq`, `flow` → `wire`, `keepalive_track` → `engine` (the pure time/intvl/probes state
//! machine) → `exit`, `error` → `sys` (sockets, netlink, namespaces), `filter` → `fleet` (the
//! I/O loop over narrow traits) → `output`, `metrics` → `cmd` (one module per subcommand) →
//! `cli`.

pub mod cli;
pub mod cmd;
pub mod engine;
pub mod error;
pub mod exit;
pub mod filter;
pub mod fleet;
pub mod flow;
pub mod keepalive_track;
pub mod metrics;
pub mod output;
pub mod seq;
pub mod sys;
pub mod wire;
