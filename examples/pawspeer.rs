//! Lab helper: a scripted TCP peer with strict PAWS (RFC 7323) that records every keepalive
//! probe it sees (`tests/lab_peers.rs`). It speaks just enough TCP over a TAP device itself:
//! ARP and IPv6 neighbour discovery, a handshake with the timestamp option, an echo of data,
//! and keepalive probes.
//!
//! ```text
//! pawspeer TAP MAC PORT IPV4 IPV6 [--answer-every K] [--delay-ms D] [--paws-step T]
//! ```
//! Attaches to the TAP device TAP in the current network namespace and answers as MAC for
//! IPV4 and IPV6 (the kernel only moves Ethernet frames). Accepts connections on PORT and
//! echoes what it receives.
//!
//! A probe is a segment whose bytes all lie below RCV.NXT (seq = RCV.NXT-1, no payload or one
//! garbage octet). The peer answers it, as RFC 9293 says, with `<SEQ=SND.NXT><ACK=RCV.NXT>`
//! and TSecr = the probe's TSval, but only when the probe's TSval is current: not older than
//! TS.Recent, the last TSval it accepted, plus T ticks (`--paws-step`, default 0: plain
//! PAWS). Probes it answers or ignores on purpose update TS.Recent (they reached it; RFC 7323
//! R3: SEG.SEQ <= Last.ACK.sent). `--answer-every K` answers only probes K, 2K, 3K... and
//! ignores the others (answers lost on the way back); `--delay-ms D` holds every answer D ms
//! before it leaves (a late answer, built when the probe arrived).
//!
//! Output, one JSON object per line on stdout: `{"event":"ready"}`, `{"event":"established"}`,
//! and for every probe `{"event":"probe", "n", "t_us" (arrival, µs since start), "seq", "ack",
//! "len", "tsval", "tsecr", "win", "expect_seq" (RCV.NXT-1), "expect_ack" (SND.NXT),
//! "expect_tsecr" (the last TSval this peer sent), "expect_win" (the window the client
//! advertised last), "ts_recent", "answer":
//! "sent|delayed|ignored|paws"}`. Exits when stdin reaches EOF or when killed.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use serde_json::json;

fn usage() -> ! {
    eprintln!(
        "usage: pawspeer TAP MAC PORT IPV4 IPV6 [--answer-every K] [--delay-ms D] [--paws-step T]"
    );
    std::process::exit(2);
}

fn fail(what: &str, e: impl std::fmt::Display) -> ! {
    eprintln!("pawspeer: {what}: {e}");
    std::process::exit(1);
}

// ------------------------------------------------------------------ TAP device

fn open_tap(name: &str) -> OwnedFd {
    // SAFETY: plain syscalls on a descriptor we own; `ifr` is a zeroed `struct ifreq`.
    unsafe {
        let fd = libc::open(c"/dev/net/tun".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
        if fd < 0 {
            fail("open /dev/net/tun", std::io::Error::last_os_error());
        }
        let fd = OwnedFd::from_raw_fd(fd);
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (d, s) in ifr
            .ifr_name
            .iter_mut()
            .zip(name.bytes().take(libc::IFNAMSIZ - 1))
        {
            *d = s as libc::c_char;
        }
        ifr.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;
        if libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &ifr) < 0 {
            fail("TUNSETIFF", std::io::Error::last_os_error());
        }
        fd
    }
}

fn write_frame(fd: &OwnedFd, frame: &[u8]) {
    // SAFETY: writes `frame.len()` bytes from a live slice.
    let n = unsafe { libc::write(fd.as_raw_fd(), frame.as_ptr().cast(), frame.len()) };
    if n < 0 {
        fail("write to the TAP device", std::io::Error::last_os_error());
    }
}

// ------------------------------------------------------------------ bytes

fn be16(b: &[u8], i: usize) -> u16 {
    u16::from_be_bytes([b[i], b[i + 1]])
}

fn be32(b: &[u8], i: usize) -> u32 {
    u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

/// The Internet checksum (RFC 1071) over `parts`, each of even length but the last.
fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    for p in parts {
        let mut chunks = p.chunks_exact(2);
        for c in &mut chunks {
            sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
        }
        if let [last] = chunks.remainder() {
            sum += u32::from(*last) << 8;
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn pseudo_header(src: IpAddr, dst: IpAddr, proto: u8, len: usize) -> Vec<u8> {
    let mut p = Vec::with_capacity(40);
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
            p.extend_from_slice(&[0, proto]);
            p.extend_from_slice(&(len as u16).to_be_bytes());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
            p.extend_from_slice(&(len as u32).to_be_bytes());
            p.extend_from_slice(&[0, 0, 0, proto]);
        }
        _ => unreachable!("mixed address families"),
    }
    p
}

/// An Ethernet frame carrying `payload` of the IP protocol `proto` from `src` to `dst`.
fn ip_frame(
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    hop_limit: u8,
    payload: &[u8],
) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + 40 + payload.len());
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            f.extend_from_slice(&0x0800u16.to_be_bytes());
            let mut h = [0u8; 20];
            h[0] = 0x45;
            h[2..4].copy_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
            h[6] = 0x40; // DF
            h[8] = hop_limit;
            h[9] = proto;
            h[12..16].copy_from_slice(&s.octets());
            h[16..20].copy_from_slice(&d.octets());
            let c = checksum(&[&h]);
            h[10..12].copy_from_slice(&c.to_be_bytes());
            f.extend_from_slice(&h);
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            f.extend_from_slice(&0x86ddu16.to_be_bytes());
            f.extend_from_slice(&[0x60, 0, 0, 0]);
            f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
            f.extend_from_slice(&[proto, hop_limit]);
            f.extend_from_slice(&s.octets());
            f.extend_from_slice(&d.octets());
        }
        _ => unreachable!("mixed address families"),
    }
    f.extend_from_slice(payload);
    f
}

// ------------------------------------------------------------------ TCP

const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const PSH: u8 = 0x08;
const ACK: u8 = 0x10;
const FIN: u8 = 0x01;
const WINDOW: u16 = 65535;

/// `a` is at or after `b`, modulo 2^32.
fn seq_ge(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) >= 0
}

/// One TCP segment as it arrived.
struct Segment<'a> {
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    win: u16,
    /// (TSval, TSecr)
    ts: Option<(u32, u32)>,
    payload: &'a [u8],
}

fn parse_tcp(src: IpAddr, dst: IpAddr, t: &[u8]) -> Option<Segment<'_>> {
    if t.len() < 20 {
        return None;
    }
    let off = usize::from(t[12] >> 4) * 4;
    if off < 20 || off > t.len() {
        return None;
    }
    let mut ts = None;
    let mut o = 20;
    while o < off {
        match t[o] {
            0 => break,
            1 => o += 1,
            kind => {
                let len = usize::from(*t.get(o + 1)?);
                if len < 2 || o + len > off {
                    return None;
                }
                if kind == 8 && len == 10 {
                    ts = Some((be32(t, o + 2), be32(t, o + 6)));
                }
                o += len;
            }
        }
    }
    Some(Segment {
        src,
        dst,
        sport: be16(t, 0),
        dport: be16(t, 2),
        seq: be32(t, 4),
        ack: be32(t, 8),
        flags: t[13],
        win: be16(t, 14),
        ts,
        payload: &t[off..],
    })
}

/// A TCP segment's bytes (checksummed) with the timestamp option, and MSS on a SYN.
#[allow(clippy::too_many_arguments)]
fn tcp_bytes(
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    ts: (u32, u32),
    payload: &[u8],
) -> Vec<u8> {
    let mut opts = Vec::new();
    if flags & SYN != 0 {
        opts.extend_from_slice(&[2, 4, 0x05, 0xb4]); // MSS 1460
    }
    opts.extend_from_slice(&[1, 1, 8, 10]);
    opts.extend_from_slice(&ts.0.to_be_bytes());
    opts.extend_from_slice(&ts.1.to_be_bytes());
    let hlen = 20 + opts.len();
    let mut t = vec![0u8; hlen];
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[4..8].copy_from_slice(&seq.to_be_bytes());
    t[8..12].copy_from_slice(&ack.to_be_bytes());
    t[12] = ((hlen / 4) as u8) << 4;
    t[13] = flags;
    t[14..16].copy_from_slice(&WINDOW.to_be_bytes());
    t[20..].copy_from_slice(&opts);
    t.extend_from_slice(payload);
    let c = checksum(&[&pseudo_header(src, dst, 6, t.len()), &t]);
    t[16..18].copy_from_slice(&c.to_be_bytes());
    t
}

struct Conn {
    mac: [u8; 6],
    snd_nxt: u32,
    rcv_nxt: u32,
    ts_recent: u32,
    last_tsval_sent: u32,
    /// The window the client advertised last, on a segment this peer took.
    last_win: u16,
    established: bool,
}

struct Peer {
    fd: OwnedFd,
    mac: [u8; 6],
    port: u16,
    v4: Ipv4Addr,
    v6: Ipv6Addr,
    answer_every: u32,
    delay: Duration,
    paws_step: u32,
    start: Instant,
    ts_offset: u32,
    conns: HashMap<(IpAddr, u16), Conn>,
    probes: u32,
    /// Answers held back by `--delay-ms`: when they leave, and the frame.
    held: Vec<(Instant, Vec<u8>)>,
}

fn emit(v: serde_json::Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

impl Peer {
    /// This peer's TSval clock: milliseconds, from a random start.
    fn tsval(&self) -> u32 {
        self.ts_offset
            .wrapping_add(self.start.elapsed().as_millis() as u32)
    }

    fn ours(&self, a: IpAddr) -> bool {
        a == IpAddr::V4(self.v4) || a == IpAddr::V6(self.v6)
    }

    fn frame(&self) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; 2048];
        // SAFETY: reads at most `buf.len()` bytes into a live buffer.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                return None;
            }
            fail("read from the TAP device", e);
        }
        buf.truncate(n as usize);
        Some(buf)
    }

    fn input(&mut self, f: &[u8]) {
        if f.len() < 14 {
            return;
        }
        let src_mac: [u8; 6] = f[6..12].try_into().unwrap();
        match be16(f, 12) {
            0x0806 => self.arp(src_mac, &f[14..]),
            0x0800 if f.len() >= 34 => {
                let ip = &f[14..];
                let ihl = usize::from(ip[0] & 0x0f) * 4;
                let total = usize::from(be16(ip, 2));
                if ip[0] >> 4 != 4 || ip[9] != 6 || total > ip.len() || ihl < 20 || ihl > total {
                    return;
                }
                let src = IpAddr::V4(Ipv4Addr::from(be32(ip, 12)));
                let dst = IpAddr::V4(Ipv4Addr::from(be32(ip, 16)));
                if let Some(seg) = parse_tcp(src, dst, &ip[ihl..total]) {
                    self.tcp(src_mac, &seg);
                }
            }
            0x86dd if f.len() >= 54 => {
                let ip = &f[14..];
                let plen = usize::from(be16(ip, 4));
                if 40 + plen > ip.len() {
                    return;
                }
                let src = IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&ip[8..24]).unwrap()));
                let dst = IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&ip[24..40]).unwrap()));
                let body = &ip[40..40 + plen];
                match ip[6] {
                    6 => {
                        if let Some(seg) = parse_tcp(src, dst, body) {
                            self.tcp(src_mac, &seg);
                        }
                    }
                    58 => self.icmp6(src_mac, src, body),
                    _ => {}
                }
            }
            _ => {}
        }
    }

    /// Answers ARP requests for our IPv4 address.
    fn arp(&self, src_mac: [u8; 6], a: &[u8]) {
        if a.len() < 28 || be16(a, 6) != 1 || a[24..28] != self.v4.octets() {
            return;
        }
        let mut r = Vec::with_capacity(42);
        r.extend_from_slice(&src_mac);
        r.extend_from_slice(&self.mac);
        r.extend_from_slice(&0x0806u16.to_be_bytes());
        r.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 2]);
        r.extend_from_slice(&self.mac);
        r.extend_from_slice(&self.v4.octets());
        r.extend_from_slice(&a[8..14]);
        r.extend_from_slice(&a[14..18]);
        write_frame(&self.fd, &r);
    }

    /// Answers neighbour solicitations for our IPv6 address.
    fn icmp6(&self, src_mac: [u8; 6], src: IpAddr, m: &[u8]) {
        if m.len() < 24 || m[0] != 135 || m[8..24] != self.v6.octets() {
            return;
        }
        let mut na = vec![136, 0, 0, 0];
        // Solicited, override; router only for the unspecified source (DAD): never here.
        na.extend_from_slice(&[0x60, 0, 0, 0]);
        na.extend_from_slice(&self.v6.octets());
        na.extend_from_slice(&[2, 1]);
        na.extend_from_slice(&self.mac);
        let me = IpAddr::V6(self.v6);
        let c = checksum(&[&pseudo_header(me, src, 58, na.len()), &na]);
        na[2..4].copy_from_slice(&c.to_be_bytes());
        write_frame(
            &self.fd,
            &ip_frame(src_mac, self.mac, me, src, 58, 255, &na),
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn send(
        &self,
        mac: [u8; 6],
        seg: &Segment,
        seq: u32,
        ack: u32,
        flags: u8,
        ts: (u32, u32),
        data: &[u8],
    ) -> Vec<u8> {
        let t = tcp_bytes(
            seg.dst, seg.src, seg.dport, seg.sport, seq, ack, flags, ts, data,
        );
        ip_frame(mac, self.mac, seg.dst, seg.src, 6, 64, &t)
    }

    fn tcp(&mut self, src_mac: [u8; 6], seg: &Segment) {
        if !self.ours(seg.dst) || seg.dport != self.port {
            return;
        }
        let key = (seg.src, seg.sport);
        let now_ts = self.tsval();
        if seg.flags & RST != 0 {
            self.conns.remove(&key);
            return;
        }
        if seg.flags & SYN != 0 {
            let Some((tsval, _)) = seg.ts else {
                return; // this peer speaks only with timestamps
            };
            let iss: u32 = kaprobe::sys::random_seed() as u32;
            let conn = Conn {
                mac: src_mac,
                snd_nxt: iss.wrapping_add(1),
                rcv_nxt: seg.seq.wrapping_add(1),
                ts_recent: tsval,
                last_tsval_sent: now_ts,
                last_win: seg.win,
                established: false,
            };
            let f = self.send(
                src_mac,
                seg,
                iss,
                conn.rcv_nxt,
                SYN | ACK,
                (now_ts, tsval),
                &[],
            );
            self.conns.insert(key, conn);
            write_frame(&self.fd, &f);
            return;
        }
        let Some(mut c) = self.conns.remove(&key) else {
            return;
        };
        if seg.flags & ACK == 0 {
            self.conns.insert(key, c);
            return;
        }
        let tsval = seg.ts.map(|t| t.0);
        let len = seg.payload.len() as u32 + u32::from(seg.flags & FIN != 0);
        let end = seg.seq.wrapping_add(len);
        let old = seg.seq != c.rcv_nxt && seq_ge(c.rcv_nxt, end) && c.established;
        if old {
            self.probe(&mut c, seg, now_ts);
            self.conns.insert(key, c);
            return;
        }
        if seg.seq != c.rcv_nxt {
            self.conns.insert(key, c); // out of order: a lossless lab has none
            return;
        }
        // In window: PAWS, then take it.
        if let Some(tsval) = tsval {
            if !seq_ge(tsval, c.ts_recent) {
                self.conns.insert(key, c);
                return;
            }
            c.ts_recent = tsval;
        }
        c.last_win = seg.win;
        if !c.established {
            c.established = true;
            emit(json!({"event": "established", "peer": seg.src.to_string(), "port": seg.sport}));
        }
        if len == 0 {
            self.conns.insert(key, c);
            return;
        }
        c.rcv_nxt = end;
        let mut flags = ACK;
        let data = if seg.payload.is_empty() {
            &[][..]
        } else {
            seg.payload
        };
        if !data.is_empty() {
            flags |= PSH;
        }
        let fin = seg.flags & FIN != 0;
        if fin {
            flags |= FIN;
        }
        let f = self.send(
            c.mac,
            seg,
            c.snd_nxt,
            c.rcv_nxt,
            flags,
            (now_ts, c.ts_recent),
            data,
        );
        c.snd_nxt = c.snd_nxt.wrapping_add(data.len() as u32 + u32::from(fin));
        c.last_tsval_sent = now_ts;
        write_frame(&self.fd, &f);
        if !fin {
            self.conns.insert(key, c);
        }
    }

    fn probe(&mut self, c: &mut Conn, seg: &Segment, now_ts: u32) {
        self.probes += 1;
        let n = self.probes;
        let (tsval, tsecr) = match seg.ts {
            Some((v, e)) => (Some(v), Some(e)),
            None => (None, None),
        };
        let current = tsval.is_some_and(|v| seq_ge(v, c.ts_recent.wrapping_add(self.paws_step)));
        let answer = if !current {
            "paws"
        } else if !n.is_multiple_of(self.answer_every) {
            "ignored"
        } else if self.delay.is_zero() {
            "sent"
        } else {
            "delayed"
        };
        emit(json!({
            "event": "probe",
            "n": n,
            "t_us": self.start.elapsed().as_micros() as u64,
            "seq": seg.seq,
            "ack": seg.ack,
            "len": seg.payload.len(),
            "flags": seg.flags,
            "tsval": tsval,
            "tsecr": tsecr,
            "win": seg.win,
            "expect_seq": c.rcv_nxt.wrapping_sub(1),
            "expect_ack": c.snd_nxt,
            "expect_tsecr": c.last_tsval_sent,
            "expect_win": c.last_win,
            "ts_recent": c.ts_recent,
            "answer": answer,
        }));
        if !current {
            return;
        }
        let v = tsval.unwrap_or(c.ts_recent);
        c.ts_recent = v;
        if !n.is_multiple_of(self.answer_every) {
            return;
        }
        let f = self.send(c.mac, seg, c.snd_nxt, c.rcv_nxt, ACK, (now_ts, v), &[]);
        c.last_tsval_sent = now_ts;
        if self.delay.is_zero() {
            write_frame(&self.fd, &f);
        } else {
            self.held.push((Instant::now() + self.delay, f));
        }
    }

    fn run(&mut self) -> ! {
        loop {
            let now = Instant::now();
            let mut i = 0;
            while i < self.held.len() {
                if self.held[i].0 <= now {
                    let (_, f) = self.held.remove(i);
                    write_frame(&self.fd, &f);
                } else {
                    i += 1;
                }
            }
            let wait = self
                .held
                .iter()
                .map(|(at, _)| at.saturating_duration_since(now))
                .min()
                .map_or(-1, |d| d.as_millis() as i32 + 1);
            let mut pfd = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one live pollfd.
            let r = unsafe { libc::poll(&mut pfd, 1, wait) };
            if r > 0
                && let Some(f) = self.frame()
            {
                self.input(&f);
            }
        }
    }
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut b = [0u8; 6];
    let mut parts = s.split(':');
    for byte in &mut b {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(b)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 5 {
        usage();
    }
    let fd = open_tap(&args[0]);
    let mac = parse_mac(&args[1]).unwrap_or_else(|| usage());
    let port: u16 = args[2].parse().unwrap_or_else(|_| usage());
    let v4: Ipv4Addr = args[3].parse().unwrap_or_else(|_| usage());
    let v6: Ipv6Addr = args[4].parse().unwrap_or_else(|_| usage());
    let (mut answer_every, mut delay_ms, mut paws_step) = (1u32, 0u64, 0u32);
    let mut rest = args[5..].iter();
    while let Some(opt) = rest.next() {
        let val = rest.next().unwrap_or_else(|| usage());
        match opt.as_str() {
            "--answer-every" => answer_every = val.parse().unwrap_or_else(|_| usage()),
            "--delay-ms" => delay_ms = val.parse().unwrap_or_else(|_| usage()),
            "--paws-step" => paws_step = val.parse().unwrap_or_else(|_| usage()),
            _ => usage(),
        }
    }

    // Never outlive the parent: EOF on stdin ends the process.
    std::thread::spawn(|| {
        let mut sink = [0u8; 64];
        let mut stdin = std::io::stdin().lock();
        while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
        std::process::exit(0);
    });

    if answer_every == 0 {
        usage();
    }
    let mut peer = Peer {
        fd,
        mac,
        port,
        v4,
        v6,
        answer_every,
        delay: Duration::from_millis(delay_ms),
        paws_step,
        start: Instant::now(),
        ts_offset: kaprobe::sys::random_seed() as u32,
        conns: HashMap::new(),
        probes: 0,
        held: Vec::new(),
    };
    emit(json!({"event": "ready"}));
    peer.run()
}
