//! The capture socket: AF_PACKET, all interfaces, both directions, filtered in the kernel.
//!
//! ETH_P_ALL because protocol-bound packet sockets do not see outgoing frames, and the local
//! socket's challenge ACK is outgoing. SOCK_DGRAM so every packet starts at its IP header.

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use caps::Capability;
use socket2::{Domain, Protocol, Socket, Type};

use crate::error::{Error, Result};
use crate::wire::Origin;

/// `lo` is the first device of every network namespace.
const LOOPBACK_IFINDEX: i32 = 1;

pub struct Capture {
    socket: Socket,
    buf: Vec<u8>,
}

impl Capture {
    /// Opens the socket with `filter` attached before it can receive anything.
    pub fn open(filter: &[libc::sock_filter]) -> Result<Capture> {
        // Protocol 0: the socket receives nothing until bound, so no unfiltered packet can
        // slip in between socket() and the filter.
        let socket =
            Socket::new(Domain::PACKET, Type::DGRAM, Some(Protocol::from(0))).map_err(|e| {
                Error::sys(
                    "opening the capture socket (AF_PACKET)",
                    Capability::CAP_NET_RAW,
                    e,
                )
            })?;
        socket
            .attach_filter(filter)
            .map_err(|e| Error::sys("attaching the capture filter", Capability::CAP_NET_RAW, e))?;
        // Answers must not be lost in our own queue: SO_RCVBUFFORCE passes rmem_max with
        // CAP_NET_ADMIN; SO_RCVBUF is capped at it.
        let want: libc::c_int = 64 << 20;
        let forced = super::setsockopt_int(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            want,
        );
        if forced.is_err() {
            let _ = socket.set_recv_buffer_size(want as usize);
        }
        // SAFETY: sockaddr_ll is plain data, for which all zeroes is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        sll.sll_ifindex = 0;
        // SAFETY: sll is a valid sockaddr_ll of the size given.
        let rc = unsafe {
            libc::bind(
                socket.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(Error::sys(
                "binding the capture socket",
                Capability::CAP_NET_RAW,
                io::Error::last_os_error(),
            ));
        }
        socket
            .set_nonblocking(true)
            .map_err(|e| Error::sys("capture socket", Capability::CAP_NET_RAW, e))?;
        Ok(Capture {
            socket,
            buf: vec![0; 65536],
        })
    }

    /// Replaces the filter (atomically: no packet sees neither).
    pub fn set_filter(&mut self, filter: &[libc::sock_filter]) -> Result<()> {
        self.socket
            .attach_filter(filter)
            .map_err(|e| Error::sys("replacing the capture filter", Capability::CAP_NET_RAW, e))
    }

    /// Closes the socket without making this process wait for it.
    ///
    /// Releasing an AF_PACKET socket waits for an RCU grace period (`packet_release` calls
    /// `synchronize_net`): 10-20 ms here, several times the whole probe. A child process
    /// takes the last reference and drops it once this process has exited, so the caller
    /// (a script waiting on our exit status) does not pay for it.
    pub fn release_detached(self) {
        let mut pipe = [0; 2];
        // SAFETY: pipe2 writes two descriptors into the array.
        if unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return;
        }
        let keep = self.socket.as_raw_fd();
        // SAFETY: the process is single-threaded here; the child only calls close, read, _exit.
        match unsafe { libc::fork() } {
            // SAFETY: in the child: closes descriptors it inherited and owns alone, reads one
            // byte into a local, and leaves with _exit (no destructors, no atexit handlers).
            0 => unsafe {
                // Hold nothing else, stdout above all, so pipelines see EOF at our exit.
                for fd in 0..1024 {
                    if fd != keep && fd != pipe[0] {
                        libc::close(fd);
                    }
                }
                let mut byte = 0u8;
                // Returns at EOF, when the parent has exited and its write end is closed.
                libc::read(pipe[0], (&mut byte as *mut u8).cast(), 1);
                libc::_exit(0);
            },
            // SAFETY: closes the two pipe ends this function opened and nothing else owns.
            -1 => unsafe {
                libc::close(pipe[0]);
                libc::close(pipe[1]);
            },
            // SAFETY: closes the read end, which only the child uses.
            _ => unsafe {
                // The write end stays open until this process exits.
                libc::close(pipe[0]);
            },
        }
    }

    /// Packets the kernel dropped because this socket's queue was full, since the last call
    /// (`PACKET_STATISTICS` counts from the previous read).
    pub fn drops(&self) -> io::Result<u32> {
        // SAFETY: tpacket_stats is plain data, for which all zeroes is a valid value.
        let mut stats: libc::tpacket_stats = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::tpacket_stats>() as libc::socklen_t;
        // SAFETY: `stats` is valid for writes of `len` bytes.
        let rc = unsafe {
            libc::getsockopt(
                self.socket.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&mut stats as *mut libc::tpacket_stats).cast(),
                &mut len,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(stats.tp_drops)
    }

    pub fn fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }

    /// The next queued packet, or `None` when the queue is empty.
    pub fn next_packet(&mut self) -> Result<Option<&[u8]>> {
        Ok(self.next_with_origin()?.map(|(bytes, _)| bytes))
    }

    /// The next queued packet and where it was seen: leaving this host, arriving, or on
    /// loopback (where both ends are local and only addresses tell direction).
    pub fn next_with_origin(&mut self) -> Result<Option<(&[u8], Origin)>> {
        loop {
            // SAFETY: sockaddr_ll is plain data, for which all zeroes is a valid value.
            let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            // SAFETY: buf is valid for writes of its length; `from` for `len` bytes.
            let n = unsafe {
                libc::recvfrom(
                    self.socket.as_raw_fd(),
                    self.buf.as_mut_ptr().cast(),
                    self.buf.len(),
                    libc::MSG_TRUNC,
                    (&mut from as *mut libc::sockaddr_ll).cast(),
                    &mut len,
                )
            };
            if n >= 0 {
                let n = (n as usize).min(self.buf.len());
                let origin = if from.sll_ifindex == LOOPBACK_IFINDEX {
                    Origin::Loopback
                } else if from.sll_pkttype == libc::PACKET_OUTGOING {
                    Origin::Sent
                } else {
                    Origin::Received
                };
                return Ok(Some((&self.buf[..n], origin)));
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::WouldBlock => return Ok(None),
                io::ErrorKind::Interrupted => continue,
                _ => {
                    return Err(Error::Io {
                        context: "reading the capture socket".into(),
                        source: e,
                    });
                }
            }
        }
    }
}
