//! The edges: sockets, netlink, namespaces, clocks. Everything here talks to the kernel.

pub mod bpf;
pub mod capture;
pub mod conntrack;
pub mod diag;
pub mod keepalive;
pub mod kernel_seq;
pub mod link;
pub mod netns;
pub mod notify;
pub mod owner;
pub mod pidfd;
pub mod privilege;
pub mod raw;
pub mod snmp;
pub mod sysctl;

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

/// One netlink request as bytes to send: `payload` under a header with `flags` (sequence
/// number and port 0: each socket here has one request in flight at a time).
pub fn netlink_request<I: netlink_packet_core::NetlinkSerializable>(
    flags: u16,
    payload: netlink_packet_core::NetlinkPayload<I>,
) -> Vec<u8> {
    let mut header = netlink_packet_core::NetlinkHeader::default();
    header.flags = flags;
    let mut msg = netlink_packet_core::NetlinkMessage::new(header, payload);
    msg.finalize();
    let mut bytes = vec![0; msg.buffer_len()];
    msg.serialize(&mut bytes);
    bytes
}

/// Sets an integer socket option that `socket2` has no setter for.
pub fn setsockopt_int(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: an int option, passed with its exact size; the kernel checks the descriptor.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Waits until `fd` is readable or `timeout` passes (`None`: forever). True if readable;
/// false on timeout or when a signal interrupted the wait (callers loop and check flags).
pub fn wait_readable(fd: RawFd, timeout: Option<Duration>) -> io::Result<bool> {
    let ms = match timeout {
        None => -1,
        // Round up so a sub-millisecond wait does not spin.
        Some(t) => i32::try_from(t.as_micros().div_ceil(1000)).unwrap_or(i32::MAX),
    };
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, count 1.
    let n = unsafe { libc::poll(&mut pfd, 1, ms) };
    if n >= 0 {
        return Ok(n > 0);
    }
    let err = io::Error::last_os_error();
    match err.kind() {
        io::ErrorKind::Interrupted => Ok(false),
        _ => Err(err),
    }
}

/// True when standard output is a pipe or socket whose reader has gone away (poll reports
/// POLLERR or POLLHUP on it), so a command that rarely writes can stop without waiting for
/// its next write to fail.
pub fn stdout_reader_gone() -> bool {
    let mut pfd = libc::pollfd {
        fd: libc::STDOUT_FILENO,
        events: 0,
        revents: 0,
    };
    // SAFETY: one valid pollfd, count 1, no wait.
    let n = unsafe { libc::poll(&mut pfd, 1, 0) };
    n > 0 && pfd.revents & (libc::POLLERR | libc::POLLHUP) != 0
}

/// A seed from the kernel's random pool, for sequence numbers and nonces.
pub fn random_seed() -> u64 {
    let mut buf = [0u8; 8];
    // SAFETY: writes at most buf.len() bytes into buf.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n == 8 {
        u64::from_ne_bytes(buf)
    } else {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        t ^ (u64::from(std::process::id()) << 32)
    }
}

static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_stop_signal(_: libc::c_int) {
    STOP.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// Makes SIGINT, SIGTERM and SIGHUP set a flag (see `stop_requested`) and interrupt waits, so that a
/// command can print what it has decided (README "Pipes, signals and limits"). A second
/// signal ends the process at once. Blocking socket calls resume after the handler
/// (SA_RESTART); `poll` never does, so waits return early.
pub fn catch_stop_signals() {
    // SAFETY: the handler only stores to an atomic; sa is fully initialised before use.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_stop_signal as *const () as usize;
        sa.sa_flags = libc::SA_RESTART | libc::SA_RESETHAND;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGINT, &sa, std::ptr::null_mut());
        libc::sigaction(libc::SIGTERM, &sa, std::ptr::null_mut());
        // A hangup (the terminal gone, or `systemctl kill -s HUP`) ends the run the same
        // way: what was decided is printed, and `watch` tells systemd it is stopping.
        libc::sigaction(libc::SIGHUP, &sa, std::ptr::null_mut());
    }
}

/// True once SIGINT or SIGTERM arrived (or `request_stop` was called).
pub fn stop_requested() -> bool {
    STOP.load(std::sync::atomic::Ordering::SeqCst)
}

/// Asks every loop that watches `stop_requested` to end, as a signal would.
pub fn request_stop() {
    STOP.store(true, std::sync::atomic::Ordering::SeqCst);
}
