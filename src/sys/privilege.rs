//! Least privilege: once its sockets are open, kaprobe gives up the capabilities it no longer
//! needs, like `ping` does.
//!
//! Opening the capture socket (AF_PACKET) and the raw sockets needs CAP_NET_RAW, and forcing
//! the capture buffer size needs CAP_NET_ADMIN, as does giving a raw socket a connection's
//! `SO_MARK` (CAP_NET_RAW suffices since Linux 5.17); using them afterwards needs nothing (the
//! kernel checks at `socket()` and `setsockopt()`), and neither do sock_diag lookups and dumps
//! or replacing a socket filter. (sock_diag answers then leave out each socket's mark and
//! TCP-MD5 keys, which it shows only to CAP_NET_ADMIN: `watch` with filters keeps that one.) So after opening them every capability can go: effective, permitted and
//! inheritable sets (capset), the ambient set, and the bounding set where that is allowed
//! (dropping from it needs CAP_SETPCAP, which root has and a `setcap cap_net_raw,cap_net_admin+ep`
//! binary does not). With the bounding set empty, even a root process cannot regain
//! capabilities by exec'ing a program.
//!
//! Capabilities belong to threads, not processes: drop them while the process has a single
//! thread (kaprobe has one), or the other threads keep theirs. `drop_all_except` refuses
//! otherwise.

use std::fmt;
use std::io;

pub const CAP_SETPCAP: u32 = 8;
pub const CAP_NET_ADMIN: u32 = 12;
pub const CAP_NET_RAW: u32 = 13;
pub const CAP_SYS_PTRACE: u32 = 19;
pub const CAP_SYS_ADMIN: u32 = 21;

/// `_LINUX_CAPABILITY_VERSION_3`: 64-bit sets, as two 32-bit halves.
const CAPABILITY_VERSION_3: u32 = 0x2008_0522;
/// The highest capability number a kernel could know, when /proc does not say.
const CAP_LAST_FALLBACK: u32 = 63;

#[repr(C)]
struct CapUserHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapUserData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// The name the man pages use, for messages.
pub fn cap_name(cap: u32) -> String {
    match cap {
        CAP_SETPCAP => "CAP_SETPCAP".into(),
        CAP_NET_ADMIN => "CAP_NET_ADMIN".into(),
        CAP_NET_RAW => "CAP_NET_RAW".into(),
        CAP_SYS_PTRACE => "CAP_SYS_PTRACE".into(),
        CAP_SYS_ADMIN => "CAP_SYS_ADMIN".into(),
        n => format!("capability {n}"),
    }
}

fn bit(cap: u32) -> u64 {
    1u64.checked_shl(cap).unwrap_or(0)
}

/// The calling thread's effective, permitted and inheritable sets, from `capget`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CapSets {
    pub effective: u64,
    pub permitted: u64,
    pub inheritable: u64,
}

impl CapSets {
    pub fn has_effective(&self, cap: u32) -> bool {
        self.effective & bit(cap) != 0
    }

    /// The calling thread's sets.
    pub fn current() -> io::Result<CapSets> {
        let mut header = CapUserHeader {
            version: CAPABILITY_VERSION_3,
            pid: 0,
        };
        let mut data = [CapUserData::default(); 2];
        // SAFETY: a version-3 header and the two data structs version 3 reads and writes.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_capget,
                &mut header as *mut CapUserHeader,
                data.as_mut_ptr(),
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        let join = |lo: u32, hi: u32| u64::from(lo) | (u64::from(hi) << 32);
        Ok(CapSets {
            effective: join(data[0].effective, data[1].effective),
            permitted: join(data[0].permitted, data[1].permitted),
            inheritable: join(data[0].inheritable, data[1].inheritable),
        })
    }

    /// Sets the calling thread's sets. Lowering them is always allowed.
    fn apply(&self) -> io::Result<()> {
        let mut header = CapUserHeader {
            version: CAPABILITY_VERSION_3,
            pid: 0,
        };
        let half = |v: u64, hi: bool| if hi { (v >> 32) as u32 } else { v as u32 };
        let data = [false, true].map(|hi| CapUserData {
            effective: half(self.effective, hi),
            permitted: half(self.permitted, hi),
            inheritable: half(self.inheritable, hi),
        });
        // SAFETY: a version-3 header and the two data structs version 3 reads.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_capset,
                &mut header as *mut CapUserHeader,
                data.as_ptr(),
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// What `drop_all_except` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dropped {
    /// The sets now in force.
    pub sets: CapSets,
    /// The bounding set was emptied (but for the kept capabilities). False when asked to keep
    /// it, or when the process lacked CAP_SETPCAP, as a file-capability binary does: then the
    /// bounding set stays, which only matters to programs this process would exec.
    pub bounding: bool,
}

/// The highest capability number this kernel knows.
fn cap_last() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(CAP_LAST_FALLBACK)
        .min(CAP_LAST_FALLBACK)
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

/// Drops every capability but those in `keep` (which stay only if already permitted) from
/// every set of the calling thread: ambient, bounding (when allowed), inheritable,
/// permitted and effective. Call it after the sockets are open. Fails, dropping nothing, if
/// the process has more than one thread.
pub fn drop_all_except(keep: &[u32]) -> io::Result<Dropped> {
    drop_capabilities(keep, Bounding::Drop)
}

/// `drop_all_except`, choosing what happens to the bounding set.
pub fn drop_capabilities(keep: &[u32], bounding_set: Bounding) -> io::Result<Dropped> {
    let status = CapStatus::read()?;
    if status.threads > 1 {
        return Err(io::Error::other(format!(
            "cannot drop capabilities: {} threads are running and capabilities are per thread",
            status.threads
        )));
    }
    let keep_mask = keep.iter().fold(0u64, |m, &c| m | bit(c));
    let before = CapSets::current()?;

    // Ambient first: it needs no privilege, and an ambient capability would otherwise
    // survive into programs this process execs. EINVAL: a kernel without ambient sets.
    // SAFETY: prctl with integer arguments only.
    let rc = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    if rc != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINVAL) {
            return Err(e);
        }
    }

    // The bounding set, while CAP_SETPCAP is still effective.
    let bounding = bounding_set == Bounding::Drop && before.has_effective(CAP_SETPCAP);
    if bounding {
        for cap in 0..=cap_last() {
            if keep_mask & bit(cap) != 0 {
                continue;
            }
            // SAFETY: prctl with integer arguments only.
            let rc = unsafe {
                libc::prctl(
                    libc::PR_CAPBSET_DROP,
                    cap as libc::c_ulong,
                    0 as libc::c_ulong,
                    0 as libc::c_ulong,
                    0 as libc::c_ulong,
                )
            };
            if rc != 0 {
                let e = io::Error::last_os_error();
                // EINVAL: past the last capability this kernel knows.
                if e.raw_os_error() == Some(libc::EINVAL) {
                    break;
                }
                return Err(e);
            }
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

/// Drops every capability.
pub fn drop_all() -> io::Result<Dropped> {
    drop_all_except(&[])
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
/// test hook; call it right after `drop_all_except`.
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
        assert_eq!(cap_name(CAP_NET_RAW), "CAP_NET_RAW");
        assert_eq!(cap_name(CAP_NET_ADMIN), "CAP_NET_ADMIN");
        assert_eq!(cap_name(40), "capability 40");
        assert_eq!(bit(64), 0);
    }
}
