//! `kaprobe enable FLOW`: the kernel's own keepalive on a running process's socket.

use clap::Args;

use super::Ctx;
use crate::error::{Error, Result};

#[derive(Args, Debug)]
pub struct EnableArgs {}

pub fn run(_args: &EnableArgs, _ctx: &Ctx) -> Result<i32> {
    Err(Error::Runtime(
        "`enable` is being written in this session".into(),
    ))
}
