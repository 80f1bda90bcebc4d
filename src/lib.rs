//! kaprobe: check whether the peer of an established TCP connection is still there.
//!
//! `wire` holds packet layouts (no I/O), `engine` the pure time/intvl/probes state machine,
//! `sys` the sockets, netlink and namespaces, `cli` the command line and output.

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
