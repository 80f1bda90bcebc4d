//! Borrowing another process's descriptor: `pidfd_open(2)` + `pidfd_getfd(2)` (Linux 5.6+).
//!
//! `pidfd_getfd` needs the same permission as attaching a debugger (PTRACE_MODE_ATTACH):
//! the same user and no Yama restriction, or CAP_SYS_PTRACE; Yama's
//! `kernel.yama.ptrace_scope=3` refuses it even to root.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// A process handle that stays valid (and never names a recycled pid) while it is open.
#[derive(Debug)]
pub struct PidFd(OwnedFd);

impl PidFd {
    pub fn open(pid: u32) -> io::Result<PidFd> {
        let pid =
            libc::pid_t::try_from(pid).map_err(|_| io::Error::from_raw_os_error(libc::ESRCH))?;
        // SAFETY: pidfd_open(pid, flags) takes two integers and returns a new descriptor.
        let rc = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0 as libc::c_uint) };
        Ok(PidFd(owned(rc)?))
    }

    /// Whether the process has exited (its pidfd polls readable), without waiting. A pidfd
    /// needs no permission over the process once open, so this works after kaprobe has
    /// switched to another user.
    pub fn has_exited(&self) -> bool {
        use std::os::fd::AsRawFd;
        let mut p = libc::pollfd {
            fd: self.0.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, no wait.
        let rc = unsafe { libc::poll(&mut p, 1, 0) };
        rc > 0 && p.revents & libc::POLLIN != 0
    }

    /// A duplicate, in this process, of the target's descriptor `fd` (close-on-exec). It
    /// refers to the same open file: socket options set through it apply to the target's
    /// socket.
    pub fn get_fd(&self, fd: RawFd) -> io::Result<OwnedFd> {
        use std::os::fd::AsRawFd;
        // SAFETY: pidfd_getfd(pidfd, targetfd, flags) takes three integers and returns a new
        // descriptor.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_getfd,
                self.0.as_raw_fd(),
                fd,
                0 as libc::c_uint,
            )
        };
        owned(rc)
    }
}

fn owned(rc: libc::c_long) -> io::Result<OwnedFd> {
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = RawFd::try_from(rc).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: the kernel just returned this descriptor to us, and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn duplicates_a_descriptor_of_this_process() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let me = PidFd::open(std::process::id()).unwrap();
        let dup = me.get_fd(listener.as_raw_fd()).unwrap();
        assert_ne!(dup.as_raw_fd(), listener.as_raw_fd());
        let a = std::fs::File::from(OwnedFd::from(listener.try_clone().unwrap()));
        let b = std::fs::File::from(dup);
        assert_eq!(a.metadata().unwrap().ino(), b.metadata().unwrap().ino());
    }

    #[test]
    fn bad_targets_are_errors() {
        let me = PidFd::open(std::process::id()).unwrap();
        let e = me.get_fd(1_000_000).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EBADF));
        // Beyond pid_max (at most 2^22): no such process.
        let e = PidFd::open(1 << 30).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ESRCH));
    }
}
