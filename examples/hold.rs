//! Lab helper: holds many idle TCP connections open, for tests and benchmarks.
//!
//! ```text
//! hold listen ADDR:PORT [ADDR:PORT ...]         accept and hold every connection
//!                                               (SO_REUSEPORT: holders may share a port)
//! hold connect FROM_IP TO_ADDR:PORT[,TO_ADDR:PORT...] COUNT [FIRST_LOCAL_PORT]
//!                                               open COUNT connections (round-robin over
//!                                               the targets), then hold them
//! ```
//! Prints `ready N` on stdout once N connections are up (connect mode) or the listeners
//! are bound (listen mode), then holds until stdin reaches EOF or it is killed. Raises its
//! own file-descriptor limit as far as the hard limit allows.
//!
//! In connect mode, SIGUSR1 turns the kernel's own keepalive on for every connection held
//! (`SO_KEEPALIVE` with `TCP_KEEPIDLE`/`TCP_KEEPINTVL` from `HOLD_KEEPALIVE="IDLE INTVL"`,
//! seconds; 5 and 1 without it) and SIGUSR2 turns it off again: scripts/bench-keepalive-cost.sh
//! measures the kernel's keepalive on the very connections it then watches with kaprobe.
//! Each switch prints `keepalive on N` / `keepalive off N` (N: sockets switched).

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};

fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain getrlimit/setrlimit on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

fn connect_from(local: SocketAddr, remote: SocketAddr) -> std::io::Result<TcpStream> {
    let s = socket2::Socket::new(
        socket2::Domain::for_address(remote),
        socket2::Type::STREAM,
        None,
    )?;
    s.set_reuse_address(true)?;
    if local.port() == 0 {
        // The port is chosen at connect() for the whole 4-tuple, so one local port serves
        // many remote addresses; bind() alone would search the address's free ports, which
        // slows to a crawl past some thousands of connections per local address.
        // (A SOL_IP option, for IPv6 sockets too.)
        let _ = set_int(
            s.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            1,
        );
    }
    s.bind(&local.into())?;
    s.connect(&remote.into())?;
    Ok(s.into())
}

/// The keepalive settings SIGUSR1 applies: `HOLD_KEEPALIVE="IDLE INTVL"` (seconds).
fn keepalive_settings() -> (libc::c_int, libc::c_int) {
    let env = std::env::var("HOLD_KEEPALIVE").unwrap_or_default();
    let mut it = env.split_whitespace().map(str::parse::<libc::c_int>);
    match (it.next(), it.next()) {
        (Some(Ok(idle)), Some(Ok(intvl))) if idle > 0 && intvl > 0 => (idle, intvl),
        _ => (5, 1),
    }
}

fn set_int(fd: RawFd, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> bool {
    // SAFETY: setsockopt with a pointer to a local int and its size.
    unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&raw const value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        ) == 0
    }
}

/// Blocks SIGUSR1 and SIGUSR2 in this thread (and the threads it starts later), so that only
/// `keepalive_switch` takes them.
fn block_switch_signals() -> libc::sigset_t {
    // SAFETY: a local signal set, filled and installed as this thread's mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGUSR1);
        libc::sigaddset(&mut set, libc::SIGUSR2);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// Waits for SIGUSR1 / SIGUSR2 and switches the kernel's keepalive of `fds` on / off. The
/// descriptors stay open as long as the process holds its connections.
fn keepalive_switch(set: libc::sigset_t, fds: Vec<RawFd>) {
    let (idle, intvl) = keepalive_settings();
    std::thread::spawn(move || {
        loop {
            let mut sig: libc::c_int = 0;
            // SAFETY: sigwait on the set blocked in every thread, into a local int.
            if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
                continue;
            }
            let on = sig == libc::SIGUSR1;
            let switched = fds
                .iter()
                .filter(|&&fd| {
                    if on {
                        set_int(fd, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, idle)
                            && set_int(fd, libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, intvl)
                            && set_int(fd, libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1)
                    } else {
                        set_int(fd, libc::SOL_SOCKET, libc::SO_KEEPALIVE, 0)
                    }
                })
                .count();
            println!("keepalive {} {switched}", if on { "on" } else { "off" });
            let _ = std::io::stdout().flush();
        }
    });
}

fn hold_until_stdin_closes() {
    let mut sink = Vec::new();
    let _ = std::io::stdin().lock().read_to_end(&mut sink);
}

fn usage() -> ! {
    eprintln!(
        "usage: hold listen ADDR:PORT...  |  hold connect FROM_IP TO_ADDR:PORT[,...] COUNT [FIRST_LOCAL_PORT]"
    );
    std::process::exit(2);
}

fn main() {
    raise_fd_limit();
    let switch_signals = block_switch_signals();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("listen") if args.len() >= 2 => {
            let mut threads = Vec::new();
            for a in &args[1..] {
                let addr: SocketAddr = a.parse().unwrap_or_else(|_| usage());
                let l = listen(addr);
                threads.push(std::thread::spawn(move || {
                    let mut held = Vec::new();
                    for c in l.incoming().flatten() {
                        held.push(c);
                    }
                }));
            }
            println!("ready {}", args.len() - 1);
            let _ = std::io::stdout().flush();
            hold_until_stdin_closes();
        }
        Some("connect") if args.len() >= 4 => {
            let from: IpAddr = args[1].parse().unwrap_or_else(|_| usage());
            let targets: Vec<SocketAddr> = args[2]
                .split(',')
                .map(|t| t.parse().unwrap_or_else(|_| usage()))
                .collect();
            let count: u32 = args[3].parse().unwrap_or_else(|_| usage());
            let first: u32 = args
                .get(4)
                .map_or(Ok(0), |p| p.parse())
                .unwrap_or_else(|_| usage());
            let mut held = Vec::with_capacity(count as usize);
            for i in 0..count {
                let port = if first == 0 { 0 } else { (first + i) as u16 };
                let to = targets[i as usize % targets.len()];
                match connect_from(SocketAddr::new(from, port), to) {
                    Ok(s) => held.push(s),
                    Err(e) => {
                        eprintln!("hold: connection {} of {count} to {to}: {e}", i + 1);
                        std::process::exit(1);
                    }
                }
            }
            keepalive_switch(
                switch_signals,
                held.iter().map(AsRawFd::as_raw_fd).collect(),
            );
            println!("ready {}", held.len());
            let _ = std::io::stdout().flush();
            hold_until_stdin_closes();
        }
        _ => usage(),
    }
}

fn listen(addr: SocketAddr) -> TcpListener {
    let s = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )
    .and_then(|s| {
        s.set_reuse_address(true)?;
        // Several holders may share a port, each keeping a part of the connections (a
        // process may not be allowed more than some thousands of descriptors).
        s.set_reuse_port(true)?;
        s.bind(&addr.into())?;
        s.listen(4096)?;
        Ok(s)
    })
    .unwrap_or_else(|e| {
        eprintln!("hold: listen on {addr}: {e}");
        std::process::exit(1);
    });
    // SAFETY: ownership of the descriptor moves from socket2 to std.
    unsafe { TcpListener::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(s)) }
}
