//! `kaprobe list`: established connections with idle time, owner and keepalive timer.

use clap::Args;

use super::Ctx;
use crate::error::{Error, Result};

#[derive(Args, Debug)]
pub struct ListArgs {}

pub fn run(_args: &ListArgs, _ctx: &Ctx) -> Result<i32> {
    Err(Error::Runtime(
        "`list` is being written in this session".into(),
    ))
}
