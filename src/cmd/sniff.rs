//! `kaprobe sniff`: keepalive probes and their ACKs seen on the wire.

use clap::Args;

use super::Ctx;
use crate::error::{Error, Result};

#[derive(Args, Debug)]
pub struct SniffArgs {}

pub fn run(_args: &SniffArgs, _ctx: &Ctx) -> Result<i32> {
    Err(Error::Runtime("`sniff` is being written in this session".into()))
}
