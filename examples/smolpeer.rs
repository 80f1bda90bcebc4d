//! Lab helper: a TCP echo server on smoltcp, a TCP/IP stack that is not Linux's, for
//! checking kaprobe against a second implementation (README "Checked against other stacks
//! and tools", `tests/lab_stacks.rs`).
//!
//! ```text
//! smolpeer TAP MAC PORT ADDR/PREFIX [ADDR/PREFIX ...]   (at most 4)
//! ```
//! Attaches to the TAP device TAP (creating it if it does not exist) in the current network
//! namespace and answers as MAC with the given IPv4 and/or IPv6 addresses: the kernel only
//! moves Ethernet frames, smoltcp owns the addresses. Accepts up to a few connections on
//! PORT and echoes what it receives. Prints `ready` on stdout once the device is attached,
//! and exits when stdin reaches EOF (so it never outlives the test that started it) or when
//! it is killed. Killing it is a crash: no FIN or RST is sent, and a new instance starts
//! with a fresh socket table.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{Medium, TunTapInterface, wait as phy_wait};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpCidr};

/// Connections served at once (one smoltcp socket each, all listening on PORT).
const SOCKETS: usize = 4;

fn usage() -> ! {
    eprintln!("usage: smolpeer TAP MAC PORT ADDR/PREFIX [ADDR/PREFIX ...] (at most 4)");
    std::process::exit(2);
}

fn fail(what: &str, e: impl std::fmt::Display) -> ! {
    eprintln!("smolpeer: {what}: {e}");
    std::process::exit(1);
}

fn parse_mac(s: &str) -> Option<EthernetAddress> {
    let mut b = [0u8; 6];
    let mut parts = s.split(':');
    for byte in &mut b {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    if parts.next().is_some() {
        return None;
    }
    let mac = EthernetAddress(b);
    mac.is_unicast().then_some(mac)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !(4..=7).contains(&args.len()) {
        usage();
    }
    let tap = &args[0];
    let mac = parse_mac(&args[1]).unwrap_or_else(|| usage());
    let port: u16 = args[2].parse().unwrap_or_else(|_| usage());
    let cidrs: Vec<IpCidr> = args[3..]
        .iter()
        .map(|a| a.parse().unwrap_or_else(|_| usage()))
        .collect();

    let mut device = TunTapInterface::new(tap, Medium::Ethernet)
        .unwrap_or_else(|e| fail(&format!("attach to TAP device {tap}"), e));
    let fd = device.as_raw_fd();

    let mut config = Config::new(HardwareAddress::Ethernet(mac));
    // A different seed on every start, so a restarted peer picks new initial sequence
    // numbers (RFC 6528), as a rebooted host would.
    config.random_seed = kaprobe::sys::random_seed();
    let mut iface = Interface::new(config, &mut device, Instant::now());
    iface.update_ip_addrs(|addrs| {
        for c in &cidrs {
            if addrs.push(*c).is_err() {
                fail("addresses", "too many");
            }
        }
    });

    let mut sockets = SocketSet::new(Vec::new());
    let handles: Vec<SocketHandle> = (0..SOCKETS)
        .map(|_| {
            let rx = tcp::SocketBuffer::new(vec![0; 8192]);
            let tx = tcp::SocketBuffer::new(vec![0; 8192]);
            sockets.add(tcp::Socket::new(rx, tx))
        })
        .collect();

    // Never outlive the parent: EOF on stdin ends the process.
    std::thread::spawn(|| {
        let mut sink = [0u8; 64];
        let mut stdin = std::io::stdin().lock();
        while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
        std::process::exit(0);
    });

    println!("ready");
    let _ = std::io::stdout().flush();

    let mut buf = [0u8; 4096];
    loop {
        let now = Instant::now();
        iface.poll(now, &mut device, &mut sockets);
        for &h in &handles {
            let s = sockets.get_mut::<tcp::Socket>(h);
            if !s.is_open() {
                if let Err(e) = s.listen(port) {
                    fail("listen", format!("{e:?}"));
                }
                continue;
            }
            if !s.may_recv() && s.may_send() {
                // The client closed its side: close ours too.
                s.close();
                continue;
            }
            while s.can_recv() && s.can_send() {
                let n = match s.recv_slice(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                // The buffers are equal in size and the client waits for its echo, so the
                // whole chunk fits; a short send would only shorten the echo.
                let _ = s.send_slice(&buf[..n]);
            }
        }
        let delay = iface.poll_delay(Instant::now(), &sockets);
        if let Err(e) = phy_wait(fd, delay) {
            fail("wait", e);
        }
    }
}
