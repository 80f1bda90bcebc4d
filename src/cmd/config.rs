//! `kaprobe config`: the keepalive sysctls and what they mean.

use clap::Args;

use super::Ctx;
use crate::error::{Error, Result};

#[derive(Args, Debug)]
pub struct ConfigArgs {}

pub fn run(_args: &ConfigArgs, _ctx: &Ctx) -> Result<i32> {
    Err(Error::Runtime(
        "`config` is being written in this session".into(),
    ))
}
