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
//! CAP_SETPCAP, which root has and a `setcap cap_net_raw,cap_net_admin+ep` binary does not).
//! With the bounding set empty, even a root process cannot regain capabilities by exec'ing a
//! program.
//!
//! `watch --user USER` also gives up uid 0, as `tcpdump -Z` and `chronyd -u` do: in the same
//! step, after the bounding set (while CAP_SETPCAP is still there) and before the other sets,
//! it takes the user's primary group as its only group, then the user's uid, with
//! `PR_SET_KEEPCAPS` so that the capabilities it still needs survive the change of uid.
//!
//! Capabilities belong to threads, not processes: drop them while the process has a single
//! thread (kaprobe has one), or the other threads keep theirs. `drop_capabilities` refuses
//! otherwise. A thread started later can give up its own with `drop_thread_capabilities`.
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
    /// The bounding set was emptied. False when the process lacked CAP_SETPCAP, as a
    /// file-capability binary or a systemd unit's user with ambient capabilities does: then
    /// the bounding set stays, which only matters to programs this process would exec, and
    /// those start without capabilities all the same when the process is not root.
    pub bounding: bool,
}

/// The user `watch --user` switches to: its uid, and its primary group as its only group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// As given on the command line, for messages.
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

impl User {
    /// Looks up `--user USER`: a name from the user database (getpwnam_r, so NSS sources
    /// count), or a number. A number the database lacks is taken as the uid, with the
    /// group of the same number (as `nobody`, 65534, has on Debian). An unknown name is a
    /// usage error (exit 2).
    pub fn lookup(arg: &str) -> Result<User> {
        let usage = |why: String| Error::Usage(format!("--user {arg}: {why}"));
        if arg.is_empty() || arg.contains('\0') {
            return Err(usage("not a user name or uid".into()));
        }
        let numeric = arg.parse::<u32>().ok();
        // u32::MAX is (uid_t)-1, which setresuid reads as "leave unchanged".
        if numeric == Some(u32::MAX) {
            return Err(usage("not a valid uid".into()));
        }
        let found = match numeric {
            Some(uid) => passwd_entry(|pwd, buf, len, res| {
                // SAFETY: every pointer is valid for the call; `buf` holds `len` bytes.
                unsafe { libc::getpwuid_r(uid, pwd, buf, len, res) }
            }),
            None => {
                let name = std::ffi::CString::new(arg)
                    .map_err(|_| usage("not a user name or uid".into()))?;
                passwd_entry(|pwd, buf, len, res| {
                    // SAFETY: as above; `name` is a NUL-terminated string that outlives it.
                    unsafe { libc::getpwnam_r(name.as_ptr(), pwd, buf, len, res) }
                })
            }
        }
        .map_err(|e| Error::Runtime(format!("--user {arg}: reading the user database: {e}")))?;
        match (found, numeric) {
            (Some((uid, gid)), _) => Ok(User {
                name: arg.to_string(),
                uid,
                gid,
            }),
            (None, Some(uid)) => Ok(User {
                name: arg.to_string(),
                uid,
                gid: uid,
            }),
            (None, None) => Err(usage("no such user".into())),
        }
    }

    /// Fails with exit 6, naming the capability, unless the calling thread may switch to
    /// this user: CAP_SETUID and CAP_SETGID effective (root has both).
    pub fn check_allowed(&self) -> Result<()> {
        let effective = CapSets::current()
            .map_err(|e| Error::Runtime(format!("reading capabilities: {e}")))?
            .effective;
        for cap in [Capability::CAP_SETUID, Capability::CAP_SETGID] {
            if effective & cap.bitmask() == 0 {
                return Err(Error::Privilege {
                    what: format!("--user {} (switching uid and gid)", self.name),
                    cap,
                });
            }
        }
        Ok(())
    }
}

/// The uid and gid of the passwd entry `call` (getpwnam_r or getpwuid_r) finds, or `None`
/// when there is none; the buffer grows while the entry does not fit.
fn passwd_entry(
    call: impl Fn(
        *mut libc::passwd,
        *mut libc::c_char,
        libc::size_t,
        *mut *mut libc::passwd,
    ) -> libc::c_int,
) -> io::Result<Option<(u32, u32)>> {
    let mut len = 1024;
    loop {
        let mut buf = vec![0 as libc::c_char; len];
        // SAFETY: a passwd is plain data; all zeroes is a valid value to be overwritten.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = call(&mut pwd, buf.as_mut_ptr(), len, &mut result);
        match rc {
            0 if result.is_null() => return Ok(None),
            0 => return Ok(Some((pwd.pw_uid, pwd.pw_gid))),
            libc::ERANGE if len < 1 << 20 => len *= 4,
            // "Not found" as some NSS modules report it.
            libc::ENOENT | libc::ESRCH | libc::EBADF => return Ok(None),
            e => return Err(io::Error::from_raw_os_error(e)),
        }
    }
}

/// Gives up every capability but `keep` (single-threaded callers only: capabilities are per
/// thread), switching to `user` on the way if given, and reports the result when
/// KAPROBE_DEBUG_CAPS=1. Every command calls this once its sockets are open.
pub fn drop_privileges(keep: &[Capability], user: Option<&User>) -> Result<()> {
    let dropped = drop_capabilities(keep, user)
        .map_err(|e| Error::Runtime(format!("dropping privileges: {e}")))?;
    if !dropped.bounding {
        log::debug!(
            "capability bounding set left as it is: dropping from it needs CAP_SETPCAP, \
             which this process lacks (programs it execs still start without capabilities \
             unless it runs as root)"
        );
    }
    if let Some(u) = user {
        log::debug!("now running as uid {} gid {} ({})", u.uid, u.gid, u.name);
    }
    debug_report();
    Ok(())
}

/// Drops every capability but those in `keep` (which stay only if already permitted) from
/// every set of the calling thread: ambient, bounding (when allowed), inheritable, permitted
/// and effective. With `user`, switches to its gid (its only group) and uid after the
/// bounding set and before the rest. Fails, dropping nothing, if the process has more than
/// one thread.
pub fn drop_capabilities(keep: &[Capability], user: Option<&User>) -> io::Result<Dropped> {
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

    // The bounding set, all of it, while CAP_SETPCAP is still effective. What this process
    // keeps is in its permitted set, which the bounding set does not limit; it only limits
    // what an exec'd program gains.
    let bounding = before.effective & Capability::CAP_SETPCAP.bitmask() != 0;
    if bounding {
        let known = caps::runtime::procfs_all_supported(None)
            .unwrap_or_else(|_| caps::runtime::thread_all_supported());
        for cap in known {
            caps::drop(None, CapSet::Bounding, cap).map_err(io_err)?;
        }
    }

    if let Some(user) = user {
        switch_user(user)?;
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

/// One libc call's result as an io::Result.
fn check(what: &str, rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    Err(io::Error::new(e.kind(), format!("{what}: {e}")))
}

/// Takes `user`'s primary group as the only group, then its uid (real, effective and
/// saved), keeping the permitted set across the change (PR_SET_KEEPCAPS; the effective set
/// is emptied by the kernel and raised again by the caller). Needs CAP_SETGID and
/// CAP_SETUID; single-threaded callers only (glibc would otherwise signal every thread).
fn switch_user(user: &User) -> io::Result<()> {
    let gid: libc::gid_t = user.gid;
    let uid: libc::uid_t = user.uid;
    // SAFETY: plain system calls with valid arguments; `groups` outlives the call.
    unsafe {
        let groups = [gid];
        check("setgroups", libc::setgroups(1, groups.as_ptr()))?;
        check("setresgid", libc::setresgid(gid, gid, gid))?;
        check(
            "prctl(PR_SET_KEEPCAPS)",
            libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0),
        )?;
        check("setresuid", libc::setresuid(uid, uid, uid))?;
        check(
            "prctl(PR_SET_KEEPCAPS)",
            libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0),
        )?;
    }
    let ids = Ids::current()?;
    if ids.uids != [uid; 3] || ids.gids != [gid; 3] || ids.groups != [gid] {
        return Err(io::Error::other(format!(
            "the switch to uid {uid} gid {gid} did not hold: {ids:?}"
        )));
    }
    Ok(())
}

/// The calling thread's real, effective and saved uids and gids, and its supplementary
/// groups.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ids {
    pub uids: [u32; 3],
    pub gids: [u32; 3],
    pub groups: Vec<u32>,
}

impl Ids {
    pub fn current() -> io::Result<Ids> {
        let (mut r, mut e, mut s) = (0, 0, 0);
        let (mut rg, mut eg, mut sg) = (0, 0, 0);
        // SAFETY: each pointer is to a local that outlives the call.
        unsafe {
            check("getresuid", libc::getresuid(&mut r, &mut e, &mut s))?;
            check("getresgid", libc::getresgid(&mut rg, &mut eg, &mut sg))?;
        }
        // SAFETY: a size of 0 only asks for the count.
        let n = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut groups = vec![0 as libc::gid_t; n as usize];
        // SAFETY: `groups` has room for `n` entries.
        let n = unsafe { libc::getgroups(n, groups.as_mut_ptr()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        groups.truncate(n as usize);
        Ok(Ids {
            uids: [r, e, s],
            gids: [rg, eg, sg],
            groups,
        })
    }
}

/// Sets `PR_SET_NO_NEW_PRIVS`: nothing this process execs gains a privilege, through a
/// set-user-ID bit or file capabilities, and the flag passes to every descendant. `watch`
/// sets it once its privileges are dropped.
pub fn set_no_new_privs() -> Result<()> {
    // SAFETY: a plain prctl with valid arguments.
    let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    check("prctl(PR_SET_NO_NEW_PRIVS)", rc)
        .map_err(|e| Error::Runtime(format!("setting no_new_privs: {e}")))
}

/// The header and data of the capget/capset system calls (linux/capability.h), version 3:
/// two data words, capabilities 0-31 and 32-63.
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAP_VERSION_3: u32 = 0x2008_0522;

/// Clears every capability set of the calling thread only (capabilities are per thread):
/// ambient, bounding (where CAP_SETPCAP allows; a thread started after `drop_privileges`
/// already has an empty one), inheritable, permitted and effective. The other threads keep
/// theirs. The metrics HTTP thread calls this first thing, and `watch --on-dead exec` in
/// the forked child before exec.
///
/// It only makes system calls and allocates nothing, so it is async-signal-safe: fit for
/// `CommandExt::pre_exec`.
pub fn drop_thread_capabilities() -> io::Result<()> {
    let mut header = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: a version 3 header and two data words, as the kernel expects; pid 0 is the
    // calling thread.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a plain prctl; kernels before 4.3 answer EINVAL (no ambient set), left be.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    };
    let effective = u64::from(data[0].effective) | u64::from(data[1].effective) << 32;
    if effective & Capability::CAP_SETPCAP.bitmask() != 0 {
        // Up to the kernel's last capability: beyond it, EINVAL.
        for cap in 0..64 {
            // SAFETY: a plain prctl with valid arguments.
            if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) } != 0 {
                break;
            }
        }
    }
    let mut header = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    let none = [CapData::default(); 2];
    // SAFETY: as above; the kernel only reads `none`.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut header, none.as_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
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
        drop_capabilities(keep, None)
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
    /// Runs `step` in a forked child (single-threaded, so capability changes are the whole
    /// process's) and asserts that it returned Ok; an Err carries the number of the check
    /// that failed, as the child's exit status.
    fn in_child(step: impl FnOnce() -> std::result::Result<i32, i32>) {
        // SAFETY: the child runs `step` (system calls and /proc reads) and leaves with _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", io::Error::last_os_error());
        if pid == 0 {
            let code = step().unwrap_or_else(|c| c);
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
    fn a_single_threaded_process_drops_everything() {
        let keep_raw = CapSets::current().unwrap().permitted & bit(CAP_NET_RAW) != 0;
        // The child only drops capabilities and reads /proc.
        in_child(|| {
            let d = drop_all_except(&[CAP_NET_RAW]).map_err(|_| 10)?;
            let s = CapStatus::read().map_err(|_| 11)?;
            let expect = if keep_raw { bit(CAP_NET_RAW) } else { 0 };
            if s.eff != expect || s.prm != expect {
                return Err(12);
            }
            if s.inh != 0 || s.amb != 0 {
                return Err(13);
            }
            if d.bounding && s.bnd != 0 {
                return Err(14);
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
        });
    }

    /// capset is per thread: a spawned thread that calls drop_thread_capabilities ends with
    /// nothing, while the thread that spawned it keeps what it had.
    #[test]
    fn drop_thread_capabilities_clears_only_the_calling_thread() {
        let before = CapStatus::read().unwrap();
        let other = std::thread::spawn(|| {
            let inherited = CapStatus::read()?;
            drop_thread_capabilities()?;
            Ok::<_, io::Error>((inherited, CapStatus::read()?))
        })
        .join()
        .expect("the thread panicked")
        .expect("drop_thread_capabilities failed");
        let (inherited, after) = other;
        println!("main before: {before}\nthread before: {inherited}\nthread after: {after}");
        assert_eq!(
            inherited.eff, before.eff,
            "a new thread starts with the spawner's sets"
        );
        assert_eq!((after.eff, after.prm, after.inh, after.amb), (0, 0, 0, 0));
        if before.eff & bit(Capability::CAP_SETPCAP) != 0 {
            assert_eq!(after.bnd, 0, "bounding set emptied with CAP_SETPCAP");
        }
        let main = CapStatus::read().unwrap();
        assert_eq!(
            (main.eff, main.prm, main.bnd),
            (before.eff, before.prm, before.bnd)
        );
        if unsafe { libc::geteuid() } == 0 {
            assert_ne!(
                main.eff, 0,
                "as root the main thread keeps its capabilities"
            );
        }
    }

    #[test]
    fn looks_up_users_by_name_and_number() {
        let root = User::lookup("root").unwrap();
        assert_eq!((root.uid, root.gid), (0, 0));
        assert_eq!(User::lookup("0").unwrap().uid, 0);
        // A uid the database lacks: that uid, and the group of the same number.
        let n = User::lookup("3999999").unwrap();
        assert_eq!((n.uid, n.gid), (3_999_999, 3_999_999));
        for bad in ["", "kaprobe-no-such-user", "a\0b", "4294967295"] {
            match User::lookup(bad) {
                Err(e @ Error::Usage(_)) => {
                    assert!(e.to_string().starts_with("--user "), "{e}");
                    assert!(!e.to_string().contains('\n'), "one line: {e}");
                }
                other => panic!("--user {bad:?}: {other:?}"),
            }
        }
    }

    /// As root, in a forked (single-threaded) child: the switch to nobody keeps exactly the
    /// capabilities asked for, empties the bounding set, and leaves one group.
    #[test]
    fn switches_user_keeping_only_what_is_asked() {
        let Ok(nobody) = User::lookup("nobody") else {
            return;
        };
        if unsafe { libc::geteuid() } != 0 {
            let err = nobody.check_allowed().expect_err("not root");
            assert_eq!(err.status(), crate::exit::ExitStatus::Privilege, "{err}");
            return;
        }
        nobody.check_allowed().unwrap();
        // The child only makes system calls and reads /proc.
        in_child(|| {
            let d = drop_capabilities(&[CAP_NET_ADMIN], Some(&nobody)).map_err(|_| 10)?;
            set_no_new_privs().map_err(|_| 11)?;
            let ids = Ids::current().map_err(|_| 12)?;
            if ids.uids != [nobody.uid; 3]
                || ids.gids != [nobody.gid; 3]
                || ids.groups != [nobody.gid]
            {
                return Err(13);
            }
            let s = CapStatus::read().map_err(|_| 14)?;
            if s.eff != bit(CAP_NET_ADMIN) || s.prm != bit(CAP_NET_ADMIN) {
                return Err(15);
            }
            if !d.bounding || s.bnd != 0 || s.inh != 0 || s.amb != 0 {
                return Err(16);
            }
            let status = std::fs::read_to_string("/proc/thread-self/status").map_err(|_| 17)?;
            if !status.lines().any(|l| l == "NoNewPrivs:\t1") {
                return Err(18);
            }
            // uid 0 does not come back.
            if unsafe { libc::setuid(0) } == 0 {
                return Err(19);
            }
            Ok(0)
        });
    }

    #[test]
    fn names_the_capabilities_kaprobe_needs() {
        assert_eq!(CAP_NET_RAW.to_string(), "CAP_NET_RAW");
        assert_eq!(CAP_NET_ADMIN.to_string(), "CAP_NET_ADMIN");
        assert_eq!(bit(Capability::CAP_CHECKPOINT_RESTORE), 1 << 40);
    }
}
