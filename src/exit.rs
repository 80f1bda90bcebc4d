//! The process exit status (README "Exit status"). Every command returns one; `main` turns
//! it into the process status, and nothing else decides a status.

use crate::engine::VerdictKind;

/// The exit status of `kaprobe` (README "Exit status"): what a verdict or an [`Error`]
/// means to a script. [`code`](ExitStatus::code) is the number.
///
/// [`Error`]: crate::Error
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    /// 0: the peer is alive, or the command did what was asked.
    Success,
    /// 1: no answer to any probe.
    Dead,
    /// 2: bad command line or bad input.
    Usage,
    /// 3: the peer answered with an RST.
    Reset,
    /// 4: an ICMP error, or a named local cause.
    Unreachable,
    /// 5: no such established connection, or it closed meanwhile.
    NoConnection,
    /// 6: a capability is missing.
    Privilege,
    /// 7: any other runtime failure.
    Failure,
    /// 130: SIGINT or SIGTERM, after printing what was decided.
    Interrupted,
    #[doc(hidden)]
    /// Standard output was closed by its reader (`| head`): the process ends as `grep` and
    /// `cat` do, by SIGPIPE, which a shell reports as 141. Nothing is printed.
    OutputClosed,
}

impl ExitStatus {
    /// The number the process exits with (for `OutputClosed`, what a shell shows for the
    /// SIGPIPE death).
    pub fn code(self) -> i32 {
        match self {
            ExitStatus::Success => 0,
            ExitStatus::Dead => 1,
            ExitStatus::Usage => 2,
            ExitStatus::Reset => 3,
            ExitStatus::Unreachable => 4,
            ExitStatus::NoConnection => 5,
            ExitStatus::Privilege => 6,
            ExitStatus::Failure => 7,
            ExitStatus::Interrupted => 130,
            ExitStatus::OutputClosed => 128 + libc::SIGPIPE,
        }
    }

    /// The status a verdict gives: 0 alive, 1 dead, 3 reset, 4 unreachable.
    pub fn of_verdict(kind: VerdictKind) -> ExitStatus {
        match kind {
            VerdictKind::Alive => ExitStatus::Success,
            VerdictKind::Dead => ExitStatus::Dead,
            VerdictKind::Reset => ExitStatus::Reset,
            VerdictKind::Unreachable => ExitStatus::Unreachable,
        }
    }

    /// The status of several verdicts: the worst one, in the order dead > unreachable >
    /// reset > alive (README "Exit status"). `None` for no verdict at all.
    pub fn worst_verdict(kinds: impl IntoIterator<Item = VerdictKind>) -> Option<ExitStatus> {
        kinds
            .into_iter()
            .max_by_key(|&k| severity(k))
            .map(ExitStatus::of_verdict)
    }

    /// Ends the process with this status.
    #[doc(hidden)]
    pub fn terminate(self) -> ! {
        if self == ExitStatus::OutputClosed {
            // The Rust runtime ignores SIGPIPE; restore the default and die of it, so that a
            // pipeline sees what it sees from every other filter.
            // SAFETY: plain libc calls with valid arguments; no handler is installed.
            unsafe {
                libc::signal(libc::SIGPIPE, libc::SIG_DFL);
                libc::raise(libc::SIGPIPE);
            }
        }
        std::process::exit(self.code())
    }
}

/// How bad a verdict is, written out rather than taken from the declaration order of
/// `VerdictKind`: alive 0, reset 1, unreachable 2, dead 3.
pub fn severity(kind: VerdictKind) -> u8 {
    match kind {
        VerdictKind::Alive => 0,
        VerdictKind::Reset => 1,
        VerdictKind::Unreachable => 2,
        VerdictKind::Dead => 3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_the_readme() {
        let all = [
            (ExitStatus::Success, 0),
            (ExitStatus::Dead, 1),
            (ExitStatus::Usage, 2),
            (ExitStatus::Reset, 3),
            (ExitStatus::Unreachable, 4),
            (ExitStatus::NoConnection, 5),
            (ExitStatus::Privilege, 6),
            (ExitStatus::Failure, 7),
            (ExitStatus::Interrupted, 130),
            (ExitStatus::OutputClosed, 141),
        ];
        for (s, code) in all {
            assert_eq!(s.code(), code, "{s:?}");
        }
    }

    #[test]
    fn each_verdict_exits_with_its_code() {
        // The engine sits below this module (scripts/check-layers.sh): the verdict-to-code
        // mapping is asserted here, not in the engine's tests.
        let kinds = [
            VerdictKind::Alive,
            VerdictKind::Dead,
            VerdictKind::Reset,
            VerdictKind::Unreachable,
        ];
        let codes = kinds.map(|k| ExitStatus::of_verdict(k).code());
        assert_eq!(codes, [0, 1, 3, 4]);
    }

    #[test]
    fn worst_verdict_is_dead_then_unreachable_then_reset_then_alive() {
        use VerdictKind::*;
        let w = |k: &[VerdictKind]| ExitStatus::worst_verdict(k.iter().copied());
        assert_eq!(w(&[]), None);
        assert_eq!(w(&[Alive, Alive]), Some(ExitStatus::Success));
        assert_eq!(w(&[Alive, Reset]), Some(ExitStatus::Reset));
        assert_eq!(
            w(&[Unreachable, Reset, Alive]),
            Some(ExitStatus::Unreachable)
        );
        assert_eq!(w(&[Unreachable, Dead, Reset]), Some(ExitStatus::Dead));
        assert_eq!(w(&[Dead, Unreachable]), Some(ExitStatus::Dead));
    }
}
