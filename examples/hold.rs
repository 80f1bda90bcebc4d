//! Lab helper: holds many idle TCP connections open, for tests and benchmarks.
//!
//! ```text
//! hold listen ADDR:PORT [ADDR:PORT ...]         accept and hold every connection
//! hold connect FROM_IP TO_ADDR:PORT COUNT [FIRST_LOCAL_PORT]
//!                                               open COUNT connections, then hold them
//! ```
//! Prints `ready N` on stdout once N connections are up (connect mode) or the listeners
//! are bound (listen mode), then holds until stdin reaches EOF or it is killed. Raises its
//! own file-descriptor limit as far as the hard limit allows.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::FromRawFd;

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
    s.bind(&local.into())?;
    s.connect(&remote.into())?;
    Ok(s.into())
}

fn hold_until_stdin_closes() {
    let mut sink = Vec::new();
    let _ = std::io::stdin().lock().read_to_end(&mut sink);
}

fn usage() -> ! {
    eprintln!(
        "usage: hold listen ADDR:PORT...  |  hold connect FROM_IP TO_ADDR:PORT COUNT [FIRST_LOCAL_PORT]"
    );
    std::process::exit(2);
}

fn main() {
    raise_fd_limit();
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
            let to: SocketAddr = args[2].parse().unwrap_or_else(|_| usage());
            let count: u32 = args[3].parse().unwrap_or_else(|_| usage());
            let first: u32 = args
                .get(4)
                .map_or(Ok(0), |p| p.parse())
                .unwrap_or_else(|_| usage());
            let mut held = Vec::with_capacity(count as usize);
            for i in 0..count {
                let port = if first == 0 { 0 } else { (first + i) as u16 };
                match connect_from(SocketAddr::new(from, port), to) {
                    Ok(s) => held.push(s),
                    Err(e) => {
                        eprintln!("hold: connection {} of {count} to {to}: {e}", i + 1);
                        std::process::exit(1);
                    }
                }
            }
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
