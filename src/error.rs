//! Errors a user can meet, each with its exit status (README "Exit status").

use std::io;

use caps::Capability;

use crate::exit::ExitStatus;

/// Why a run could not give a verdict, in one line, with its exit status
/// ([`status`](Error::status)): a library caller's error is the one `kaprobe` would exit
/// with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Bad command line or bad input.
    #[error("{0}")]
    Usage(String),
    /// No such established connection, or it closed during the probe.
    #[error("{0}")]
    NoConnection(String),
    /// A capability is missing.
    #[error("{what} needs {cap}: {}", privilege_hint(*cap))]
    Privilege { what: String, cap: Capability },
    /// A system call failed for a reason the user did not cause.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("{0}")]
    Runtime(String),
    /// Standard output was closed by its reader: the command ends quietly.
    #[doc(hidden)]
    #[error("standard output is closed")]
    OutputClosed,
}

impl Error {
    /// The exit status `kaprobe` gives this error: 2 usage, 5 no connection, 6 privilege,
    /// 7 other failures.
    pub fn status(&self) -> ExitStatus {
        match self {
            Error::Usage(_) => ExitStatus::Usage,
            Error::NoConnection(_) => ExitStatus::NoConnection,
            Error::Privilege { .. } => ExitStatus::Privilege,
            Error::Io { .. } | Error::Runtime(_) => ExitStatus::Failure,
            Error::OutputClosed => ExitStatus::OutputClosed,
        }
    }

    /// The number of [`status`](Error::status).
    pub fn exit_code(&self) -> i32 {
        self.status().code()
    }

    /// Why a signed connection is not probed: exit 7 (README "Policy routing, VRFs, bound
    /// sockets"), before anything is sent.
    #[doc(hidden)]
    pub fn signed(flow: &crate::flow::Flow, sig: crate::flow::Signature) -> Error {
        Error::Runtime(format!(
            "{flow} uses {}: both ends drop unsigned segments, so kaprobe cannot probe it",
            sig.as_str()
        ))
    }

    /// Wraps a failed system call: permission errors become `Privilege` naming `cap`.
    #[doc(hidden)]
    pub fn sys(context: impl Into<String>, cap: Capability, source: io::Error) -> Error {
        let context = context.into();
        if is_permission(&source) {
            Error::Privilege { what: context, cap }
        } else {
            Error::Io { context, source }
        }
    }
}

/// Whether a system call was refused for want of privilege (EPERM, EACCES).
pub fn is_permission(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES))
}

/// How to get `cap`, after the message that names it.
fn privilege_hint(cap: Capability) -> &'static str {
    match cap {
        Capability::CAP_SYS_PTRACE => {
            "run as root, or as the socket owner's user with kernel.yama.ptrace_scope=0 \
             (1 and 2 need CAP_SYS_PTRACE, 3 refuses everyone)"
        }
        Capability::CAP_SETUID | Capability::CAP_SETGID => {
            "start kaprobe as root (it switches to the user once its sockets are open), or \
             leave out --user"
        }
        Capability::CAP_SYS_ADMIN => {
            "run as root, or enter the namespace with `ip netns exec NAME kaprobe ...`"
        }
        _ => {
            "run as root, or grant it to the binary with `setcap cap_net_raw,cap_net_admin+ep $(command -v kaprobe)`"
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
