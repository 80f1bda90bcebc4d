//! The sequence-number source a probing command asked for, chosen by the library (see
//! `crate::prober::source`, where the "Do no harm" checks live too).

pub use crate::prober::source::{Chosen, Guard, require_raw};

use super::args::SeqSourceArg;
use crate::error::Result;

/// The source the user asked for with `--seq-source`; by default `kernel` where it can be
/// loaded, else `local`.
/// The reason for a fallback goes into every verdict object (`"fallback"`).
pub fn choose(arg: Option<SeqSourceArg>) -> Result<Chosen> {
    let chosen = crate::prober::source::choose(arg.map(SeqSourceArg::source))?;
    if let Some(why) = chosen.fallback {
        crate::output::set_source_fallback(why);
    }
    Ok(chosen)
}
