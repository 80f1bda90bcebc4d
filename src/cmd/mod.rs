//! One module per subcommand: its clap arguments and its `run`.

pub mod args;
pub mod config;
pub mod enable;
pub mod list;
pub mod nat_timeout;
pub mod probe;
pub mod prober;
pub mod sniff;
pub mod source;
pub mod sweep;
pub mod watch;

use crate::output::Reporter;

/// What every subcommand gets from the global options.
#[derive(Clone, Debug)]
pub struct Ctx {
    pub json: bool,
    pub verbose: bool,
    /// `-q`: nothing but results and errors.
    pub quiet: bool,
    /// The namespace entered with `--netns`/`--pid`, if any.
    pub netns: Option<crate::sys::netns::Target>,
}

impl Ctx {
    /// What renders the fleet's events and verdicts for this invocation.
    pub fn reporter(&self) -> Reporter {
        Reporter {
            json: self.json,
            verbose: self.verbose,
        }
    }
}
