//! Least privilege: once its sockets are open, kaprobe gives up the capabilities it no longer
//! needs, like `ping` does.
//!
//! Opening the capture socket (AF_PACKET) and the raw sockets needs CAP_NET_RAW, and forcing
//! the capture buffer size needs CAP_NET_ADMIN, as does giving a raw socket a connection's
//! `SO_MARK` (CAP_NET_RAW suffices since Linux 5.17); using them afterwards needs nothing (the
//! kernel checks at `socket()` and `setsockopt()`), and neither do sock_diag lookups and dumps
//! or replacing a socket filter. (sock_diag answers then leave out each socket's mark and
//! TCP-MD5 keys, which it shows only to CAP_NET_ADMIN: `watch` with filters keeps that one.)
//! So after opening them every capability can go: effective, permitted and inheritable sets,
//! the ambient set, and the bounding set where that is allowed (dropping from it needs
//! CAP_SETPCAP, which root has and a `setcap cap_net_raw,cap_net_admin+ep` binary does not). With the bounding set empty, even a root process cannot regain
//! capabilities by exec'ing a program.
//!
//! Capabilities belong to threads, not processes: drop them while the process has a single
//! thread (kaprobe has one), or the other threads keep theirs. `drop_capabilities` refuses
//! otherwise.
//!
//! The system calls (`capget`/`capset`, `prctl`) are the `caps` crate's; capabilities are its
//! `Capability`, whose names (`CAP_NET_RAW`) the error messages show.

use std::fmt;
use std::io;

use caps::{CapSet, Capability, CapsHashSet};

use crate::error::{Error, Result};

/// A `caps` failure as an I/O error, for messages.
fn io_err(e: caps::errors::CapsError) -> io::Error {
    io::Error::other(e.to_string())
}

/// The bits of `caps`, as /proc/PID/status shows a set.
fn mask<'a>(caps: impl IntoIterator<Item = &'a Capability>) -> u64 {
    caps.into_iter().fold(0, |m, c| m | c.bitmask())
}

/// The calling thread's effective, permitted and inheritable sets, as bit masks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CapSets {
    pub effective: u64,
    pub permitted: u64,
    pub inheritable: u64,
}

impl CapSets {
    /// The calling thread's sets.
    pub fn current() -> io::Result<CapSets> {
        let read = |set| caps::read(None, set).map(|c| mask(&c)).map_err(io_err);
        Ok(CapSets {
            effective: read(CapSet::Effective)?,
            permitted: read(CapSet::Permitted)?,
            inheritable: read(CapSet::Inheritable)?,
        })
    }

    /// Sets the calling thread's sets. Lowering them is always allowed; inheritable and
    /// effective go first, as each must stay within the permitted set of the moment.
    fn apply(&self) -> io::Result<()> {
        let of = |m: u64| -> CapsHashSet {
            caps::all()
                .into_iter()
                .filter(|c| m & c.bitmask() != 0)
                .collect()
        };
        for (set, m) in [
            (CapSet::Inheritable, self.inheritable),
            (CapSet::Effective, self.effective),
            (CapSet::Permitted, self.permitted),
        ] {
            caps::set(None, set, &of(m)).map_err(io_err)?;
        }
        Ok(())
    }
}

/// What `drop_capabilities` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dropped {
    /// The sets now in force.
    pub sets: CapSets,
    /// The bounding set was emptied (but for the kept capabilities). False when asked to keep
    /// it, or when the process lacked CAP_SETPCAP, as a file-capability binary does: then the
    /// bounding set stays, which only matters to programs this process would exec.
    pub bounding: bool,
}

/// What happens to the bounding set, which limits what programs this process execs may gain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bounding {
    /// Empty it (but for the kept capabilities) where allowed: nothing this process execs
    /// gains a capability, not even as root. The default.
    Drop,
    /// Leave it: a command this process execs as root (`watch --on-dead exec CMD`) runs with
    /// root's capabilities, as it would have from a shell.
    Keep,
}

/// Gives up every capability but `keep` (single-threaded callers only: capabilities are per
/// thread), and reports the result when KAPROBE_DEBUG_CAPS=1. Every command calls this once
/// its sockets are open.
pub fn drop_privileges(keep: &[Capability], bounding: Bounding) -> Result<()> {
    drop_capabilities(keep, bounding)
        .map_err(|e| Error::Runtime(format!("dropping capabilities: {e}")))?;
    debug_report();
    Ok(())
}

/// Drops every capability but those in `keep` (which stay only if already permitted) from
/// every set of the calling thread: ambient, bounding (unless `bounding_set` says keep it, and
/// when allowed), inheritable, permitted and effective. Fails, dropping nothing, if the
/// process has more than one thread.
pub fn drop_capabilities(keep: &[Capability], bounding_set: Bounding) -> io::Result<Dropped> {
    let status = CapStatus::read()?;
    if status.threads > 1 {
        return Err(io::Error::other(format!(
            "cannot drop capabilities: {} threads are running and capabilities are per thread",
            status.threads
        )));
    }
    let keep_mask = mask(keep);
    let before = CapSets::current()?;

    // Ambient first: it needs no privilege, and an ambient capability would otherwise
    // survive into programs this process execs. Kernels before 4.3 have no ambient set.
    if caps::runtime::ambient_set_supported().is_ok() {
        caps::clear(None, CapSet::Ambient).map_err(io_err)?;
    }

    // The bounding set, while CAP_SETPCAP is still effective.
    let bounding =
        bounding_set == Bounding::Drop && before.effective & Capability::CAP_SETPCAP.bitmask() != 0;
    if bounding {
        let known = caps::runtime::procfs_all_supported(None)
            .unwrap_or_else(|_| caps::runtime::thread_all_supported());
        for cap in known.into_iter().filter(|c| keep_mask & c.bitmask() == 0) {
            caps::drop(None, CapSet::Bounding, cap).map_err(io_err)?;
        }
    }

    let kept = before.permitted & keep_mask;
    let wanted = CapSets {
        effective: kept,
        permitted: kept,
        inheritable: 0,
    };
    wanted.apply()?;
    let after = CapSets::current()?;
    if after != wanted {
        return Err(io::Error::other(format!(
            "capabilities did not drop: effective {:016x} permitted {:016x} inheritable {:016x}",
            after.effective, after.permitted, after.inheritable
        )));
    }
    Ok(Dropped {
        sets: after,
        bounding,
    })
}

/// The capability lines of /proc/thread-self/status, as the kernel reports them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CapStatus {
    pub inh: u64,
    pub prm: u64,
    pub eff: u64,
    pub bnd: u64,
    pub amb: u64,
    pub threads: u32,
}

impl CapStatus {
    /// Reads the calling thread's status (the process's on kernels without thread-self).
    pub fn read() -> io::Result<CapStatus> {
        let text = match std::fs::read_to_string("/proc/thread-self/status") {
            Ok(t) => t,
            Err(_) => std::fs::read_to_string("/proc/self/status")?,
        };
        CapStatus::parse(&text)
            .ok_or_else(|| io::Error::other("no capability lines in /proc/self/status"))
    }

    /// Parses the text of a /proc/PID/status file; `None` without a CapEff line.
    pub fn parse(text: &str) -> Option<CapStatus> {
        let mut s = CapStatus::default();
        let mut seen_eff = false;
        for line in text.lines() {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            let hex = || u64::from_str_radix(value, 16).ok();
            match key {
                "CapInh" => s.inh = hex()?,
                "CapPrm" => s.prm = hex()?,
                "CapEff" => {
                    s.eff = hex()?;
                    seen_eff = true;
                }
                "CapBnd" => s.bnd = hex()?,
                "CapAmb" => s.amb = hex()?,
                "Threads" => s.threads = value.parse().ok()?,
                _ => {}
            }
        }
        seen_eff.then_some(s)
    }
}

impl fmt::Display for CapStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CapEff={:016x} CapPrm={:016x} CapInh={:016x} CapBnd={:016x} CapAmb={:016x}",
            self.eff, self.prm, self.inh, self.bnd, self.amb
        )
    }
}

/// The environment variable that turns on `debug_report`.
pub const DEBUG_ENV: &str = "KAPROBE_DEBUG_CAPS";

/// With KAPROBE_DEBUG_CAPS=1, writes the thread's capability sets as /proc reports them to
/// stderr: `caps after drop: CapEff=... CapPrm=... CapInh=... CapBnd=... CapAmb=...`. A
/// test hook; `drop_privileges` calls it.
pub fn debug_report() {
    if std::env::var(DEBUG_ENV).as_deref() != Ok("1") {
        return;
    }
    match CapStatus::read() {
        Ok(s) => eprintln!("caps after drop: {s}"),
        Err(e) => eprintln!("caps after drop: cannot read /proc/thread-self/status: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Capability::{CAP_NET_ADMIN, CAP_NET_RAW};

    fn bit(cap: Capability) -> u64 {
        cap.bitmask()
    }

    fn drop_all_except(keep: &[Capability]) -> io::Result<Dropped> {
        drop_capabilities(keep, Bounding::Drop)
    }

    fn drop_all() -> io::Result<Dropped> {
        drop_all_except(&[])
    }

    const STATUS: &str = "Name:\tkaprobe\nUmask:\t0022\nState:\tR (running)\nThreads:\t1\n\
        CapInh:\t0000000000000000\nCapPrm:\t0000000000003000\nCapEff:\t0000000000003000\n\
        CapBnd:\t000001ffffffffff\nCapAmb:\t0000000000000000\nNoNewPrivs:\t0\n";

    #[test]
    fn parses_the_capability_lines() {
        let s = CapStatus::parse(STATUS).unwrap();
        assert_eq!(s.eff, bit(CAP_NET_RAW) | bit(CAP_NET_ADMIN));
        assert_eq!(s.prm, 0x3000);
        assert_eq!(s.inh, 0);
        assert_eq!(s.bnd, 0x1ff_ffff_ffff);
        assert_eq!(s.threads, 1);
        assert_eq!(
            s.to_string(),
            "CapEff=0000000000003000 CapPrm=0000000000003000 CapInh=0000000000000000 \
             CapBnd=000001ffffffffff CapAmb=0000000000000000"
        );
    }

    #[test]
    fn rejects_status_text_without_capabilities_or_with_garbage() {
        assert_eq!(CapStatus::parse("Name:\tx\n"), None);
        assert_eq!(CapStatus::parse("CapEff:\tzz\n"), None);
        assert_eq!(CapStatus::parse(""), None);
    }

    #[test]
    fn reads_this_threads_status_and_sets() {
        let status = CapStatus::read().unwrap();
        let sets = CapSets::current().unwrap();
        // Same thread, same moment: /proc and capget agree.
        assert_eq!(status.eff, sets.effective);
        assert_eq!(status.prm, sets.permitted);
        assert_eq!(status.inh, sets.inheritable);
        assert!(status.threads >= 1);
    }

    #[test]
    fn refuses_to_drop_while_other_threads_run() {
        // The test harness runs tests on threads: this process has several.
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let other = std::thread::spawn(move || rx.recv());
        let before = CapSets::current().unwrap();
        let err = drop_all().expect_err("must refuse with two threads");
        assert!(err.to_string().contains("threads"), "{err}");
        assert_eq!(CapSets::current().unwrap(), before, "nothing dropped");
        drop(tx);
        let _ = other.join();
    }

    /// A forked child has one thread: there the drop goes through, and /proc shows it.
    #[test]
    fn a_single_threaded_process_drops_everything() {
        let keep_raw = CapSets::current().unwrap().permitted & bit(CAP_NET_RAW) != 0;
        // SAFETY: the child only drops capabilities, reads /proc and exits with _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", io::Error::last_os_error());
        if pid == 0 {
            let code = (|| {
                let d = drop_all_except(&[CAP_NET_RAW]).map_err(|_| 10)?;
                let s = CapStatus::read().map_err(|_| 11)?;
                let expect = if keep_raw { bit(CAP_NET_RAW) } else { 0 };
                if s.eff != expect || s.prm != expect {
                    return Err(12);
                }
                if s.inh != 0 || s.amb != 0 {
                    return Err(13);
                }
                if d.bounding && s.bnd != expect {
                    return Err(14);
                }
                let d0_bounding = d.bounding;
                let d = drop_capabilities(&[], Bounding::Keep).map_err(|_| 19)?;
                let s = CapStatus::read().map_err(|_| 20)?;
                if d.bounding || s.eff != 0 || (d0_bounding && s.bnd != expect) {
                    return Err(21);
                }
                let d = drop_all().map_err(|_| 15)?;
                let s = CapStatus::read().map_err(|_| 16)?;
                if s.eff != 0 || s.prm != 0 || d.sets != CapSets::default() {
                    return Err(17);
                }
                // Dropped for good: nothing comes back.
                let again = CapSets {
                    effective: bit(CAP_NET_RAW),
                    permitted: bit(CAP_NET_RAW),
                    inheritable: 0,
                };
                if again.apply().is_ok() {
                    return Err(18);
                }
                Ok(0)
            })()
            .unwrap_or_else(|c| c);
            // SAFETY: ends the child without running the parent's atexit handlers.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: waits for the child just forked.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(rc, pid);
        assert!(libc::WIFEXITED(status), "child did not exit: {status:#x}");
        assert_eq!(
            libc::WEXITSTATUS(status),
            0,
            "child failed step (see codes)"
        );
    }

    #[test]
    fn names_the_capabilities_kaprobe_needs() {
        assert_eq!(CAP_NET_RAW.to_string(), "CAP_NET_RAW");
        assert_eq!(CAP_NET_ADMIN.to_string(), "CAP_NET_ADMIN");
        assert_eq!(bit(Capability::CAP_CHECKPOINT_RESTORE), 1 << 40);
    }
}
