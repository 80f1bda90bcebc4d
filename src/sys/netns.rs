//! `--netns NAME|PATH` and `--pid PID`: enter a network namespace before doing anything, as
//! `ip netns exec NAME` or `nsenter -t PID -n` would.
//!
//! A value without `/` names a namespace of `ip netns` (a file under /run/netns); a value
//! with `/` is the path of any namespace file: `/proc/PID/ns/net`, a container runtime's
//! `/var/run/docker/netns/ID`, or a bind mount of one. `--pid PID` is `/proc/PID/ns/net`.
//! Containers' namespaces have no name under /run/netns, hence the paths (README, "Fleet").

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use caps::Capability;

/// Where `ip netns add NAME` puts its namespace files.
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// The namespace the user asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// `--netns NAME`: /run/netns/NAME.
    Name(String),
    /// `--netns PATH`: any namespace file.
    Path(PathBuf),
    /// `--pid PID`: /proc/PID/ns/net.
    Pid(u32),
}

impl Target {
    /// Reads the value of `--netns`: a path when it contains `/`, otherwise a name.
    pub fn from_netns_arg(value: &str) -> Result<Target> {
        if value.contains('/') {
            return Ok(Target::Path(PathBuf::from(value)));
        }
        if value.is_empty() || value == "." || value == ".." || value.contains('\0') {
            return Err(Error::Usage(format!(
                "invalid network namespace name '{value}' (a name from `ip netns list`, \
                 or a path such as /proc/PID/ns/net)"
            )));
        }
        Ok(Target::Name(value.to_string()))
    }

    /// Reads the value of `--pid`.
    pub fn from_pid(pid: u32) -> Result<Target> {
        if pid == 0 {
            return Err(Error::Usage(
                "--pid 0 is not a process; give the PID of a process in the namespace".into(),
            ));
        }
        Ok(Target::Pid(pid))
    }

    /// The namespace file to open.
    pub fn path(&self) -> PathBuf {
        match self {
            Target::Name(name) => Path::new(NETNS_RUN_DIR).join(name),
            Target::Path(path) => path.clone(),
            Target::Pid(pid) => PathBuf::from(format!("/proc/{pid}/ns/net")),
        }
    }

    /// How messages call it.
    fn describe(&self) -> String {
        match self {
            Target::Name(name) => format!("network namespace '{name}'"),
            Target::Path(path) => format!("network namespace {}", path.display()),
            Target::Pid(pid) => format!("network namespace of PID {pid}"),
        }
    }
}

/// The namespace named by `--netns` or `--pid`, if any.
pub fn target_from_args(netns: Option<&str>, pid: Option<u32>) -> Result<Option<Target>> {
    match (netns, pid) {
        (None, None) => Ok(None),
        (Some(_), Some(_)) => Err(Error::Usage(
            "--netns and --pid both name a namespace; give one".into(),
        )),
        (Some(value), None) => Target::from_netns_arg(value).map(Some),
        (None, Some(pid)) => Target::from_pid(pid).map(Some),
    }
}

/// Whether the target still names the namespace this thread is in: its file is still there
/// (`ip netns del` removes it; a `--pid` process that exits takes /proc/PID with it) and is
/// the same namespace. kaprobe's own membership keeps a deleted namespace alive, so a
/// long-running command asks this to let it go. A file this process may no longer look at
/// (/proc/PID/ns/net after `watch --user`) cannot be judged, and counts as there: see
/// [`Presence`] for `--pid`.
pub fn still_there(target: &Target) -> bool {
    use std::os::unix::fs::MetadataExt;
    let ours = std::fs::metadata("/proc/thread-self/ns/net");
    let theirs = std::fs::metadata(target.path());
    match (ours, theirs) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        // Our own namespace file is always there; without it nothing can be judged.
        (Err(_), _) => true,
        (Ok(_), Err(e)) if crate::error::is_permission(&e) => true,
        (Ok(_), Err(_)) => false,
    }
}

/// The target, watched for its going away: [`still_there`], and for `--pid` also the
/// process itself through a pidfd opened at the start, which keeps telling after kaprobe
/// has given up the permission to look at /proc/PID/ns/net (`watch --user`).
#[derive(Debug)]
pub struct Presence {
    target: Target,
    pidfd: Option<crate::sys::pidfd::PidFd>,
}

impl Presence {
    /// Opens the pidfd of a `--pid` target (none if that fails: then only the file counts).
    pub fn open(target: &Target) -> Presence {
        let pidfd = match target {
            Target::Pid(pid) => crate::sys::pidfd::PidFd::open(*pid).ok(),
            _ => None,
        };
        Presence {
            target: target.clone(),
            pidfd,
        }
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Whether the namespace is still there (its process, for `--pid`).
    pub fn still_there(&self) -> bool {
        if self.pidfd.as_ref().is_some_and(|p| p.has_exited()) {
            return false;
        }
        still_there(&self.target)
    }
}

/// How messages call the target.
pub fn describe(target: &Target) -> String {
    target.describe()
}

/// The one call `cli::run` makes: enters the namespace named by `--netns` or `--pid`, if any.
/// The two options exclude each other (clap checks; here both given is a usage error too).
pub fn enter_from_args(netns: Option<&str>, pid: Option<u32>) -> Result<()> {
    match (netns, pid) {
        (None, None) => Ok(()),
        (Some(_), Some(_)) => Err(Error::Usage(
            "--netns and --pid both name a namespace; give one".into(),
        )),
        (Some(value), None) => enter_target(&Target::from_netns_arg(value)?),
        (None, Some(pid)) => enter_target(&Target::from_pid(pid)?),
    }
}

/// Opens the target's namespace file and moves the calling thread into it. Call it while the
/// process has one thread: setns moves only the calling thread.
pub fn enter_target(target: &Target) -> Result<()> {
    enter_file(target, &open(target)?)
}

/// Moves the calling thread into the namespace of `file`, opened from `target` by [`open`].
pub fn enter_file(target: &Target, file: &File) -> Result<()> {
    // SAFETY: a valid open descriptor; setns changes only this thread's network namespace.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(setns_error(target, io::Error::last_os_error()));
    }
    Ok(())
}

/// Opens the target's namespace file (a missing one is a usage error, naming it).
pub fn open(target: &Target) -> Result<File> {
    let path = target.path();
    File::open(&path).map_err(|e| open_error(target, &path, e))
}

/// What a failed open of the namespace file means to the user.
fn open_error(target: &Target, path: &Path, e: io::Error) -> Error {
    let shown = path.display();
    match (e.raw_os_error(), target) {
        (Some(libc::ENOENT), Target::Pid(pid)) => {
            if Path::new(&format!("/proc/{pid}")).exists() {
                Error::Usage(format!(
                    "process {pid} has no network namespace to enter ({shown} is gone: \
                     the process is exiting)"
                ))
            } else {
                Error::Usage(format!("no process with PID {pid}"))
            }
        }
        (Some(libc::ENOENT), Target::Name(name)) => Error::Usage(format!(
            "no network namespace named '{name}' ({shown} does not exist; see `ip netns list`)"
        )),
        (Some(libc::ENOENT | libc::ENOTDIR), _) => Error::Usage(format!(
            "no network namespace at {shown}: it does not exist"
        )),
        (Some(libc::ELOOP | libc::ENAMETOOLONG), _) => {
            Error::Usage(format!("cannot open {shown}: {e}"))
        }
        // Another user's /proc/PID/ns/net: opening it needs ptrace access (root has it).
        _ => Error::sys(format!("opening {shown}"), Capability::CAP_SYS_ADMIN, e),
    }
}

/// What a failed setns means to the user.
fn setns_error(target: &Target, e: io::Error) -> Error {
    let path = target.path();
    match e.raw_os_error() {
        // setns(2): EINVAL when the file is not a namespace of the requested type.
        Some(libc::EINVAL) => Error::Usage(format!(
            "{} is not a network namespace{}",
            path.display(),
            match target {
                // `ip netns delete` unmounts the namespace but a stale file can remain.
                Target::Name(_) => " (a leftover file? see `ip netns list`)",
                _ => " (give /proc/PID/ns/net or a runtime's netns file)",
            }
        )),
        _ => Error::sys(
            format!("entering the {}", target.describe()),
            Capability::CAP_SYS_ADMIN,
            e,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::ExitStatus;

    /// Runs `f` on its own thread, so a successful setns cannot move the test runner's threads.
    fn on_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::spawn(f).join().expect("thread panicked")
    }

    fn is_root() -> bool {
        // SAFETY: no arguments, cannot fail.
        unsafe { libc::geteuid() == 0 }
    }

    #[test]
    fn a_value_with_a_slash_is_a_path_otherwise_a_name() {
        assert_eq!(
            Target::from_netns_arg("lab-a").unwrap(),
            Target::Name("lab-a".into())
        );
        assert_eq!(
            Target::from_netns_arg("/proc/42/ns/net").unwrap(),
            Target::Path("/proc/42/ns/net".into())
        );
        assert_eq!(
            Target::from_netns_arg("./ns").unwrap(),
            Target::Path("./ns".into())
        );
        assert_eq!(
            Target::from_netns_arg("lab-a").unwrap().path(),
            PathBuf::from("/run/netns/lab-a")
        );
        assert_eq!(
            Target::from_pid(42).unwrap().path(),
            PathBuf::from("/proc/42/ns/net")
        );
    }

    #[test]
    fn bad_names_and_pid_0_are_usage_errors() {
        for bad in ["", ".", ".."] {
            let e = Target::from_netns_arg(bad).unwrap_err();
            assert_eq!(e.status(), ExitStatus::Usage, "{bad:?}: {e}");
            assert!(
                e.to_string().contains("invalid network namespace name"),
                "{e}"
            );
        }
        let e = Target::from_pid(0).unwrap_err();
        assert_eq!(e.status(), ExitStatus::Usage);
        let e = enter_from_args(Some("x"), Some(1)).unwrap_err();
        assert_eq!(e.status(), ExitStatus::Usage);
        assert!(enter_from_args(None, None).is_ok());
    }

    #[test]
    fn missing_namespaces_and_processes_are_one_line_usage_errors() {
        let cases: [(Target, &str); 4] = [
            (
                Target::Name(format!("kaprobe-no-such-ns-{}", std::process::id())),
                "no network namespace named",
            ),
            (
                Target::Path("/nonexistent/kaprobe/ns".into()),
                "does not exist",
            ),
            // /proc/self/status is a file: "status/x" is ENOTDIR.
            (
                Target::Path("/proc/self/status/net".into()),
                "does not exist",
            ),
            // Above the kernel's PID_MAX_LIMIT (2^22): no such process, ever.
            (Target::Pid(4_194_305), "no process with PID 4194305"),
        ];
        for (target, want) in cases {
            let e = enter_target(&target).unwrap_err();
            let msg = e.to_string();
            assert_eq!(e.status(), ExitStatus::Usage, "{target:?}: {msg}");
            assert!(msg.contains(want), "{target:?}: {msg}");
            assert!(!msg.contains('\n'), "{msg}");
        }
    }

    #[test]
    fn files_that_are_not_network_namespaces_are_refused() {
        // setns checks the namespace type before any privilege: EINVAL as root or not.
        for path in [
            "/proc/self/ns/mnt",
            "/proc/self/status",
            "/proc/self/ns/uts",
        ] {
            let target = Target::Path(path.into());
            let e = on_thread(move || enter_target(&target)).unwrap_err();
            let msg = e.to_string();
            assert_eq!(e.status(), ExitStatus::Usage, "{path}: {msg}");
            assert!(msg.contains("is not a network namespace"), "{path}: {msg}");
        }
        // A directory opens fine but is not a namespace either.
        let target = Target::Path("/proc/self".into());
        let e = on_thread(move || enter_target(&target)).unwrap_err();
        assert!(e.to_string().contains("is not a network namespace"), "{e}");
    }

    #[test]
    fn entering_our_own_namespace_by_path_and_by_pid_works_as_root() {
        if !is_root() {
            // Without CAP_SYS_ADMIN the same call is a privilege error naming it.
            let target = Target::Pid(std::process::id());
            let e = on_thread(move || enter_target(&target)).unwrap_err();
            assert_eq!(e.status(), ExitStatus::Privilege, "{e}");
            assert!(e.to_string().contains("CAP_SYS_ADMIN"), "{e}");
            return;
        }
        let pid = std::process::id();
        // The thread ends right after: nothing else runs in the namespace it entered.
        on_thread(move || enter_from_args(None, Some(pid))).expect("enter by --pid");
        on_thread(|| enter_from_args(Some("/proc/self/ns/net"), None)).expect("enter by path");
    }
}
