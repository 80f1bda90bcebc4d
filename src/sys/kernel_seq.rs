//! Sequence numbers read straight from the kernel (SPEC "Sequence numbers", `--seq-source
//! kernel`): an eBPF TCP socket iterator (`iter/tcp`, kernel_seq/tcp_seq.bpf.c) writes one
//! fixed-layout record per ESTABLISHED socket, and `KernelSeq::read` parses them.
//!
//! Loading needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN), the kernel's BTF
//! (/sys/kernel/btf/vmlinux, for CO-RE) and Linux 5.9 or later. The loader is `aya`.
//!
//! An iterator lists the sockets of the network namespace of the thread that creates it (at
//! each `read`), so a caller enters the connection's namespace before reading.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use aya::Btf;
use aya_obj::Object;
use aya_obj::btf::BtfKind;
use aya_obj::generated::bpf_insn;
use caps::{CapSet, Capability};

/// The compiled iterator (build.rs).
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tcp_seq.bpf.o"));

/// Where the embedded object came from: "fresh" (compiled by this build) or "committed" (the
/// copy in the repository, used where clang was missing or failed).
pub const OBJECT_ORIGIN: &str = env!("KAPROBE_BPF_OBJECT");

/// The program's name in the object (its C function).
const PROGRAM: &str = "kp_tcp_seq";

const BTF_PATH: &str = "/sys/kernel/btf/vmlinux";

/// One established socket's numbers as the kernel holds them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SockNumbers {
    /// The socket cookie, as sock_diag reports it (the iterator assigns one if the socket had
    /// none yet, as sock_diag does).
    pub cookie: u64,
    /// The local address; an IPv4-mapped IPv6 address is given as IPv4.
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// The device the socket is bound to (SO_BINDTODEVICE), 0 if none.
    pub ifindex: u32,
    pub snd_nxt: u32,
    pub snd_una: u32,
    pub rcv_nxt: u32,
    pub rcv_wup: u32,
    pub rcv_wnd: u32,
    pub rcv_wscale: u8,
    pub snd_wscale: u8,
    /// Both ends agreed on TCP timestamps.
    pub tstamp_ok: bool,
    /// The peer's last TSval that the socket accepted.
    pub ts_recent: u32,
    /// Added to the clock to make this connection's TSval.
    pub tsoffset: u32,
    /// TSval counts microseconds, not milliseconds (Linux 6.7 and later, on request).
    pub usec_ts: bool,
    /// The earliest departure time of the socket's next segment (CLOCK_MONOTONIC ns).
    pub wstamp_ns: u64,
    /// When the iterator read this socket (CLOCK_MONOTONIC ns).
    pub read_ns: u64,
}

impl SockNumbers {
    /// The TSval the kernel would stamp on a segment leaving at monotonic time `mono_ns`
    /// (CLOCK_MONOTONIC ns, see `monotonic_ns`): a segment never leaves before the socket's
    /// `wstamp_ns`, and its clock counts ms or µs from there, plus `tsoffset`. None when the
    /// connection does not use timestamps.
    pub fn tsval_at(&self, mono_ns: u64) -> Option<u32> {
        if !self.tstamp_ok {
            return None;
        }
        let unit = if self.usec_ts { 1_000 } else { 1_000_000 };
        let ticks = self.wstamp_ns.max(mono_ns) / unit;
        Some((ticks as u32).wrapping_add(self.tsoffset))
    }

    /// The window field the kernel would announce now: what is left of the window it last
    /// announced, `rcv_wup + rcv_wnd - rcv_nxt` (0 if negative), scaled down by `rcv_wscale`
    /// and saturated to 16 bits.
    pub fn window(&self) -> u16 {
        let left = self
            .rcv_wup
            .wrapping_add(self.rcv_wnd)
            .wrapping_sub(self.rcv_nxt) as i32;
        let scaled = (left.max(0) as u32)
            .checked_shr(u32::from(self.rcv_wscale))
            .unwrap_or(0);
        u16::try_from(scaled).unwrap_or(u16::MAX)
    }
}

/// Why the kernel source of sequence numbers cannot be used here.
#[derive(Debug)]
pub struct Unavailable {
    kind: UnavailableKind,
    detail: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum UnavailableKind {
    NoPrivilege,
    NoBtf,
    OldKernel,
    LoadFailed,
}

impl Unavailable {
    fn new(kind: UnavailableKind, detail: impl Into<String>) -> Unavailable {
        Unavailable {
            kind,
            detail: detail.into(),
        }
    }

    /// A short machine-readable reason: "no-privilege", "no-btf", "old-kernel" or
    /// "load-failed".
    pub fn kind(&self) -> &'static str {
        match self.kind {
            UnavailableKind::NoPrivilege => "no-privilege",
            UnavailableKind::NoBtf => "no-btf",
            UnavailableKind::OldKernel => "old-kernel",
            UnavailableKind::LoadFailed => "load-failed",
        }
    }
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = &self.detail;
        match self.kind {
            UnavailableKind::NoPrivilege => write!(
                f,
                "reading sequence numbers from the kernel needs CAP_BPF and CAP_PERFMON ({d}): \
                 run as root, or setcap cap_net_raw,cap_net_admin,cap_bpf,cap_perfmon+ep"
            ),
            UnavailableKind::NoBtf => write!(
                f,
                "reading sequence numbers from the kernel needs its BTF ({BTF_PATH}: {d}): a \
                 kernel built with CONFIG_DEBUG_INFO_BTF"
            ),
            UnavailableKind::OldKernel => write!(
                f,
                "reading sequence numbers from the kernel needs Linux 5.9 or later (TCP socket \
                 iterators): {d}"
            ),
            UnavailableKind::LoadFailed => {
                write!(f, "the kernel refused kaprobe's TCP socket iterator: {d}")
            }
        }
    }
}

impl std::error::Error for Unavailable {}

/// The loaded iterator, kept for repeated passes.
pub struct KernelSeq {
    /// The iterator link, which holds the program: each pass makes a new iterator from it
    /// (BPF_ITER_CREATE).
    link: OwnedFd,
    /// The last pass's bytes: the next pass reads into the same buffer, grown once to the
    /// size a pass takes rather than from scratch every time.
    buf: Vec<u8>,
}

/// What `KernelSeq::open` spent its time on, for `-v` and for measurements.
#[derive(Clone, Copy, Debug, Default)]
pub struct OpenTimes {
    /// Parsing the kernel's BTF, once.
    pub btf: Duration,
    /// Parsing the object and relocating it against that BTF (CO-RE, aya-obj).
    pub object: Duration,
    /// Verifying and loading the program, then creating the link.
    pub program: Duration,
}

impl KernelSeq {
    /// Loads the iterator: checks the privilege, parses the kernel's BTF once (for the
    /// relocations and for the iterator's attach point), loads and links the program.
    pub fn open() -> Result<KernelSeq, Unavailable> {
        Self::open_timed().map(|(k, _)| k)
    }

    /// `open`, also telling where its time went.
    pub fn open_timed() -> Result<(KernelSeq, OpenTimes), Unavailable> {
        use UnavailableKind::*;
        check_privilege()?;
        let mut times = OpenTimes::default();

        let t = Instant::now();
        let btf = Btf::from_sys_fs().map_err(|e| {
            if Path::new(BTF_PATH).exists() {
                Unavailable::new(NoBtf, format!("cannot parse it: {e}"))
            } else {
                Unavailable::new(NoBtf, "missing")
            }
        })?;
        times.btf = t.elapsed();

        let t = Instant::now();
        let (insns, license) = relocated(&btf)?;
        let attach = btf
            .id_by_type_name_kind("bpf_iter_tcp", BtfKind::Func)
            .map_err(|_| Unavailable::new(OldKernel, "the kernel's BTF has no bpf_iter_tcp"))?;
        times.object = t.elapsed();

        let t = Instant::now();
        let prog_fd = prog_load(&insns, &license, attach)?;
        let link = link_create(prog_fd.as_fd()).map_err(|e| {
            if crate::error::is_permission(&e) {
                Unavailable::new(NoPrivilege, format!("BPF_LINK_CREATE: {e}"))
            } else {
                Unavailable::new(LoadFailed, format!("BPF_LINK_CREATE: {e}"))
            }
        })?;
        times.program = t.elapsed();
        Ok((
            KernelSeq {
                link,
                buf: Vec::new(),
            },
            times,
        ))
    }

    /// One pass over the current thread's network namespace: every ESTABLISHED TCP socket.
    pub fn read(&mut self) -> io::Result<Vec<SockNumbers>> {
        let fd = iter_create(self.link.as_fd())?;
        self.buf.clear();
        self.buf.reserve(RECORD_SIZE * 64);
        File::from(fd).read_to_end(&mut self.buf)?;
        parse_records(&self.buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }
}

/// CLOCK_MONOTONIC in nanoseconds, the clock of `SockNumbers::read_ns`, `wstamp_ns` and
/// `tsval_at` (the kernel's ktime_get_ns).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: one valid timespec to write; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// Refuses early, with the remedy, where the kernel would refuse every bpf() call: aya's own
/// errors then (a failed feature probe) would name something else. CAP_SYS_ADMIN stands in
/// for both capabilities.
fn check_privilege() -> Result<(), Unavailable> {
    let has = |c| caps::has_cap(None, CapSet::Effective, c).unwrap_or(false);
    if has(Capability::CAP_SYS_ADMIN) {
        return Ok(());
    }
    let missing: Vec<&str> = [
        (Capability::CAP_BPF, "CAP_BPF"),
        (Capability::CAP_PERFMON, "CAP_PERFMON"),
    ]
    .into_iter()
    .filter(|&(c, _)| !has(c))
    .map(|(_, name)| name)
    .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Unavailable::new(
            UnavailableKind::NoPrivilege,
            format!("missing {}", missing.join(" and ")),
        ))
    }
}

/// The program's instructions relocated against the running kernel's BTF (CO-RE), and its
/// licence string. aya-obj does the relocation; the program needs no map and no call to
/// link, so this is all aya's loader would do for it, without a second BTF parse or its
/// feature probes.
fn relocated(btf: &Btf) -> Result<(Vec<bpf_insn>, std::ffi::CString), Unavailable> {
    use UnavailableKind::*;
    let mut obj = Object::parse(OBJECT).map_err(|e| {
        Unavailable::new(LoadFailed, format!("the BPF object: {}", error_chain(&e)))
    })?;
    obj.relocate_btf(btf).map_err(|e| {
        Unavailable::new(LoadFailed, format!("CO-RE relocation: {}", error_chain(&e)))
    })?;
    let prog = obj
        .programs
        .get(PROGRAM)
        .ok_or_else(|| Unavailable::new(LoadFailed, format!("no program {PROGRAM}")))?;
    let func = obj
        .functions
        .get(&prog.function_key())
        .ok_or_else(|| Unavailable::new(LoadFailed, format!("no code for {PROGRAM}")))?;
    Ok((func.instructions.clone(), obj.license.clone()))
}

/// Loads the iterator program (BPF_PROG_LOAD, tracing, attached to `bpf_iter_tcp`). A refusal
/// is loaded again with the verifier's log, for its one telling line.
fn prog_load(
    insns: &[bpf_insn],
    license: &std::ffi::CStr,
    attach_btf_id: u32,
) -> Result<OwnedFd, Unavailable> {
    use UnavailableKind::*;
    let attempt = |log: Option<&mut Vec<u8>>| {
        let mut attr = [0u8; 144];
        let put32 =
            |a: &mut [u8; 144], at: usize, v: u32| a[at..at + 4].copy_from_slice(&v.to_ne_bytes());
        let put64 =
            |a: &mut [u8; 144], at: usize, v: u64| a[at..at + 8].copy_from_slice(&v.to_ne_bytes());
        put32(&mut attr, 0, BPF_PROG_TYPE_TRACING);
        put32(&mut attr, 4, insns.len() as u32);
        put64(&mut attr, 8, insns.as_ptr() as u64);
        put64(&mut attr, 16, license.as_ptr() as u64);
        if let Some(buf) = log {
            put32(&mut attr, 24, 1);
            put32(&mut attr, 28, buf.len() as u32);
            put64(&mut attr, 32, buf.as_mut_ptr() as u64);
        }
        attr[48..48 + PROGRAM.len().min(15)]
            .copy_from_slice(&PROGRAM.as_bytes()[..PROGRAM.len().min(15)]);
        put32(&mut attr, 68, BPF_TRACE_ITER);
        put32(&mut attr, 108, attach_btf_id);
        // SAFETY: attr is a bpf_attr for BPF_PROG_LOAD of the size passed; the pointers in it
        // (instructions, licence, log) stay valid for the call.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_PROG_LOAD,
                attr.as_mut_ptr(),
                attr.len() as libc::c_uint,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = i32::try_from(rc).map_err(|_| io::Error::other("bpf() returned no descriptor"))?;
        // SAFETY: a new descriptor that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    };
    match attempt(None) {
        Ok(fd) => Ok(fd),
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            Err(Unavailable::new(NoPrivilege, format!("BPF_PROG_LOAD: {e}")))
        }
        Err(e) => {
            let mut log = vec![0u8; 1 << 16];
            let _ = attempt(Some(&mut log));
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            let text = String::from_utf8_lossy(&log[..end]).into_owned();
            let line = verifier_line(&text);
            if line.contains("unknown func") || line.contains("invalid func") {
                Err(Unavailable::new(OldKernel, line.to_string()))
            } else {
                Err(Unavailable::new(
                    LoadFailed,
                    format!("BPF_PROG_LOAD: {e}: {line}"),
                ))
            }
        }
    }
}

const BPF_PROG_LOAD: libc::c_int = 5;
const BPF_PROG_TYPE_TRACING: u32 = 26;

/// An error and its sources on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// The verifier's reason in its log: the last line that is neither an instruction (they
/// start with their number or a register state) nor a statistic.
fn verifier_line(log: &str) -> &str {
    const STATS: [&str; 5] = [
        "processed ",
        "verification time",
        "stack depth",
        "func#",
        "from ",
    ];
    log.lines()
        .rev()
        .map(str::trim)
        .find(|l| {
            !l.is_empty()
                && !l.starts_with(|c: char| c.is_ascii_digit() || c == ';' || c == 'R')
                && !STATS.iter().any(|p| l.starts_with(p))
        })
        .unwrap_or("(no verifier log)")
}

/// bpf(2) with `attr`: the command's fields (all of them u32 here), the rest zero.
fn bpf(cmd: libc::c_int, attr: &mut [u32; 16]) -> io::Result<OwnedFd> {
    // SAFETY: attr is a valid, writable bpf_attr prefix of the size passed; the kernel treats
    // the bytes it does not know as zero and checks the ones it reads.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_mut_ptr(),
            std::mem::size_of_val(attr) as libc::c_uint,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = i32::try_from(rc).map_err(|_| io::Error::other("bpf() returned no descriptor"))?;
    // SAFETY: a successful BPF_LINK_CREATE or BPF_ITER_CREATE returns a new descriptor that
    // nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

const BPF_LINK_CREATE: libc::c_int = 28;
const BPF_ITER_CREATE: libc::c_int = 33;
const BPF_TRACE_ITER: u32 = 28;

/// Links the iterator program (BPF_LINK_CREATE, attach type BPF_TRACE_ITER, no target). aya
/// can make this link too, but gives its descriptor back only as one pass's iterator.
fn link_create(prog: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let mut attr = [0u32; 16];
    // link_create: prog_fd, target_fd, attach_type, flags.
    attr[0] = prog.as_raw_fd() as u32;
    attr[2] = BPF_TRACE_ITER;
    bpf(BPF_LINK_CREATE, &mut attr)
}

/// A new iterator over the current thread's network namespace (BPF_ITER_CREATE).
fn iter_create(link: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let mut attr = [0u32; 16];
    // iter_create: link_fd, flags.
    attr[0] = link.as_raw_fd() as u32;
    bpf(BPF_ITER_CREATE, &mut attr)
}

/// The size of one record (struct kp_tcp_seq) and the version this parser reads.
const RECORD_SIZE: usize = 104;
const RECORD_VERSION: u8 = 1;
const FLAG_TSTAMP_OK: u8 = 1 << 0;
const FLAG_USEC_TS: u8 = 1 << 1;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

/// Parses the iterator's output: back-to-back records, host byte order.
fn parse_records(mut bytes: &[u8]) -> Result<Vec<SockNumbers>, String> {
    let mut out = Vec::with_capacity(bytes.len() / RECORD_SIZE);
    while !bytes.is_empty() {
        let Some(rec) = bytes.get(..RECORD_SIZE) else {
            return Err(format!(
                "a truncated socket record: {} of {RECORD_SIZE} bytes",
                bytes.len()
            ));
        };
        out.push(parse_record(rec)?);
        bytes = &bytes[RECORD_SIZE..];
    }
    Ok(out)
}

/// One record of exactly RECORD_SIZE bytes (see tcp_seq.bpf.c, struct kp_tcp_seq).
fn parse_record(r: &[u8]) -> Result<SockNumbers, String> {
    let bytes = |at: usize, n: usize| {
        r.get(at..at + n)
            .ok_or_else(|| format!("a socket record too short for offset {at}"))
    };
    let u8_at = |at: usize| bytes(at, 1).map(|b| b[0]);
    let u16_at = |at| bytes(at, 2).map(|b| u16::from_ne_bytes([b[0], b[1]]));
    let u32_at = |at| bytes(at, 4).map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
    let u64_at = |at| {
        bytes(at, 8).map(|b| {
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            u64::from_ne_bytes(a)
        })
    };
    let addr16 = |at| {
        bytes(at, 16).map(|b| {
            let mut a = [0u8; 16];
            a.copy_from_slice(b);
            a
        })
    };

    let size = u16_at(0)?;
    let version = u8_at(2)?;
    if usize::from(size) != RECORD_SIZE || version != RECORD_VERSION {
        return Err(format!(
            "a socket record of version {version} and {size} bytes (this kaprobe reads \
             version {RECORD_VERSION}, {RECORD_SIZE} bytes)"
        ));
    }
    let flags = u8_at(3)?;
    let family = u16_at(4)?;
    let (local_port, remote_port) = (u16_at(6)?, u16_at(8)?);
    let (local, remote) = (addr16(16)?, addr16(32)?);
    let ip = |a: [u8; 16]| -> Result<IpAddr, String> {
        match family {
            AF_INET => Ok(IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3]))),
            AF_INET6 => Ok(IpAddr::V6(Ipv6Addr::from(a)).to_canonical()),
            other => Err(format!("a socket record of address family {other}")),
        }
    };
    Ok(SockNumbers {
        cookie: u64_at(48)?,
        local: SocketAddr::new(ip(local)?, local_port),
        remote: SocketAddr::new(ip(remote)?, remote_port),
        ifindex: u32_at(12)?,
        snd_nxt: u32_at(56)?,
        snd_una: u32_at(60)?,
        rcv_nxt: u32_at(64)?,
        rcv_wup: u32_at(68)?,
        rcv_wnd: u32_at(72)?,
        rcv_wscale: u8_at(10)?,
        snd_wscale: u8_at(11)?,
        tstamp_ok: flags & FLAG_TSTAMP_OK != 0,
        ts_recent: u32_at(76)?,
        tsoffset: u32_at(80)?,
        usec_ts: flags & FLAG_USEC_TS != 0,
        wstamp_ns: u64_at(88)?,
        read_ns: u64_at(96)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record as the iterator writes it (host byte order), built field by field.
    fn record(family: u16, local: &[u8], remote: &[u8], lport: u16, rport: u16) -> Vec<u8> {
        let mut r = vec![0u8; RECORD_SIZE];
        let put = |r: &mut Vec<u8>, at: usize, b: &[u8]| r[at..at + b.len()].copy_from_slice(b);
        put(&mut r, 0, &(RECORD_SIZE as u16).to_ne_bytes());
        r[2] = RECORD_VERSION;
        r[3] = FLAG_TSTAMP_OK;
        put(&mut r, 4, &family.to_ne_bytes());
        put(&mut r, 6, &lport.to_ne_bytes());
        put(&mut r, 8, &rport.to_ne_bytes());
        r[10] = 7;
        r[11] = 9;
        put(&mut r, 12, &3u32.to_ne_bytes());
        put(&mut r, 16, local);
        put(&mut r, 32, remote);
        put(&mut r, 48, &0x1122_3344_5566_7788u64.to_ne_bytes());
        for (i, v) in [1000u32, 900, 5000, 4800, 65535, 77, 0xffff_fff0]
            .iter()
            .enumerate()
        {
            put(&mut r, 56 + 4 * i, &v.to_ne_bytes());
        }
        put(&mut r, 88, &123_000_000u64.to_ne_bytes());
        put(&mut r, 96, &124_000_000u64.to_ne_bytes());
        r
    }

    fn numbers() -> SockNumbers {
        SockNumbers {
            cookie: 1,
            local: "127.0.0.1:1".parse().unwrap(),
            remote: "127.0.0.1:2".parse().unwrap(),
            ifindex: 0,
            snd_nxt: 0,
            snd_una: 0,
            rcv_nxt: 0,
            rcv_wup: 0,
            rcv_wnd: 0,
            rcv_wscale: 0,
            snd_wscale: 0,
            tstamp_ok: true,
            ts_recent: 0,
            tsoffset: 0,
            usec_ts: false,
            wstamp_ns: 0,
            read_ns: 0,
        }
    }

    /// Records as a little-endian kernel writes them (struct kp_tcp_seq, tcp_seq.bpf.c).
    #[cfg(target_endian = "little")]
    #[rustfmt::skip]
    const GOLDEN_V4: [u8; RECORD_SIZE] = [
        // size 104, version 1, flags tstamp_ok; AF_INET, ports 22 and 50000; wscale 7 and 9;
        // ifindex 3
        0x68, 0x00, 0x01, 0x01, 0x02, 0x00, 0x16, 0x00, 0x50, 0xc3, 0x07, 0x09, 0x03, 0x00, 0x00, 0x00,
        // local 192.0.2.1, remote 198.51.100.7
        0xc0, 0x00, 0x02, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0xc6, 0x33, 0x64, 0x07, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        // cookie, snd_nxt 1000, snd_una 900
        0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, 0xe8, 0x03, 0x00, 0x00, 0x84, 0x03, 0x00, 0x00,
        // rcv_nxt 5000, rcv_wup 4800, rcv_wnd 65535, ts_recent 77
        0x88, 0x13, 0x00, 0x00, 0xc0, 0x12, 0x00, 0x00, 0xff, 0xff, 0x00, 0x00, 0x4d, 0x00, 0x00, 0x00,
        // tsoffset 0xfffffff0, reserved, wstamp_ns 123e6
        0xf0, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xc0, 0xd4, 0x54, 0x07, 0x00, 0x00, 0x00, 0x00,
        // read_ns 124e6
        0x00, 0x17, 0x64, 0x07, 0x00, 0x00, 0x00, 0x00,
    ];

    #[cfg(target_endian = "little")]
    #[rustfmt::skip]
    const GOLDEN_V6: [u8; RECORD_SIZE] = [
        // size 104, version 1, flags tstamp_ok and usec_ts; AF_INET6, ports 443 and 40000
        0x68, 0x00, 0x01, 0x03, 0x0a, 0x00, 0xbb, 0x01, 0x40, 0x9c, 0x07, 0x09, 0x03, 0x00, 0x00, 0x00,
        // local 2001:db8::1, remote 2001:db8::2
        0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,
        0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02,
        0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, 0xe8, 0x03, 0x00, 0x00, 0x84, 0x03, 0x00, 0x00,
        0x88, 0x13, 0x00, 0x00, 0xc0, 0x12, 0x00, 0x00, 0xff, 0xff, 0x00, 0x00, 0x4d, 0x00, 0x00, 0x00,
        0xf0, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xc0, 0xd4, 0x54, 0x07, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x17, 0x64, 0x07, 0x00, 0x00, 0x00, 0x00,
    ];

    fn golden_numbers(local: &str, remote: &str, usec_ts: bool) -> SockNumbers {
        SockNumbers {
            cookie: 0x1122_3344_5566_7788,
            local: local.parse().unwrap(),
            remote: remote.parse().unwrap(),
            ifindex: 3,
            snd_nxt: 1000,
            snd_una: 900,
            rcv_nxt: 5000,
            rcv_wup: 4800,
            rcv_wnd: 65535,
            rcv_wscale: 7,
            snd_wscale: 9,
            tstamp_ok: true,
            ts_recent: 77,
            tsoffset: 0xffff_fff0,
            usec_ts,
            wstamp_ns: 123_000_000,
            read_ns: 124_000_000,
        }
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn parses_golden_v4_and_v6_records() {
        let mut bytes = GOLDEN_V4.to_vec();
        bytes.extend_from_slice(&GOLDEN_V6);
        assert_eq!(
            parse_records(&bytes).unwrap(),
            vec![
                golden_numbers("192.0.2.1:22", "198.51.100.7:50000", false),
                golden_numbers("[2001:db8::1]:443", "[2001:db8::2]:40000", true),
            ]
        );
        // The test helper below writes the same layout.
        let a = record(AF_INET, &[192, 0, 2, 1], &[198, 51, 100, 7], 22, 50000);
        assert_eq!(a, GOLDEN_V4);
    }

    #[test]
    fn parses_v6_records_and_unmaps_v4_mapped_addresses() {
        let a: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let mapped: Ipv6Addr = "::ffff:192.0.2.9".parse().unwrap();
        let mut bytes = record(AF_INET6, &a.octets(), &a.octets(), 443, 40000);
        bytes[3] |= FLAG_USEC_TS;
        bytes.extend(record(AF_INET6, &mapped.octets(), &a.octets(), 80, 1));
        let got = parse_records(&bytes).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].local, "[2001:db8::1]:443".parse().unwrap());
        assert_eq!(got[0].remote, "[2001:db8::1]:40000".parse().unwrap());
        assert!(got[0].usec_ts && got[0].tstamp_ok);
        assert_eq!(got[1].local, "192.0.2.9:80".parse().unwrap());
        assert!(!got[1].usec_ts);
    }

    #[test]
    fn rejects_truncated_and_foreign_records() {
        let r = record(AF_INET, &[10, 0, 0, 1], &[10, 0, 0, 2], 1, 2);
        assert!(parse_records(&r[..RECORD_SIZE - 1]).is_err());
        let mut two = r.clone();
        two.extend_from_slice(&r[..10]);
        assert!(parse_records(&two).unwrap_err().contains("truncated"));
        let mut v2 = r.clone();
        v2[2] = 2;
        assert!(parse_records(&v2).is_err());
        let mut fam = r.clone();
        fam[4..6].copy_from_slice(&1u16.to_ne_bytes());
        assert!(parse_records(&fam).is_err());
        assert_eq!(parse_records(&[]).unwrap(), vec![]);
    }

    #[test]
    fn tsval_counts_ms_or_us_from_the_later_of_clock_and_wstamp() {
        let mut n = numbers();
        n.tsoffset = 5;
        n.wstamp_ns = 1_000_000_000;
        assert_eq!(n.tsval_at(2_500_000_000), Some(2_500 + 5));
        // The next segment may not leave before wstamp_ns (pacing): its TSval is from then.
        assert_eq!(n.tsval_at(10), Some(1_000 + 5));
        n.usec_ts = true;
        assert_eq!(n.tsval_at(2_500_001_999), Some(2_500_001 + 5));
        n.tsoffset = u32::MAX - 1;
        assert_eq!(n.tsval_at(2_500_001_999), Some(2_500_001 - 2));
        n.usec_ts = false;
        // The ms clock itself wraps at 2^32 ticks.
        let wraps = (u64::from(u32::MAX) + 3) * 1_000_000;
        assert_eq!(n.tsval_at(wraps), Some(2u32.wrapping_add(u32::MAX - 1)));
        n.tstamp_ok = false;
        assert_eq!(n.tsval_at(2_500_000_000), None);
    }

    #[test]
    fn window_is_what_is_left_scaled_and_saturated() {
        let mut n = numbers();
        n.rcv_wup = 1000;
        n.rcv_wnd = 65_536;
        n.rcv_nxt = 1000 + 1024;
        n.rcv_wscale = 7;
        assert_eq!(n.window(), ((65_536 - 1024) >> 7) as u16);
        // Wraps around 2^32 like the sequence space.
        n.rcv_wup = u32::MAX - 10;
        n.rcv_nxt = 100;
        assert_eq!(n.window(), ((65_536 - 111) >> 7) as u16);
        // More than announced arrived: nothing left.
        n.rcv_nxt = n.rcv_wup.wrapping_add(n.rcv_wnd).wrapping_add(5);
        assert_eq!(n.window(), 0);
        n.rcv_nxt = n.rcv_wup;
        n.rcv_wscale = 0;
        assert_eq!(n.window(), u16::MAX);
        n.rcv_wnd = 1 << 30;
        n.rcv_wscale = 13;
        assert_eq!(n.window(), u16::MAX);
    }

    #[test]
    fn verifier_line_picks_the_reason() {
        let log = "func#0 @0\n0: R1=ctx() R10=fp0\n0: (79) r2 = *(u64 *)(r1 +0)\n\
                   invalid mem access 'scalar'\nprocessed 12 insns (limit 1000000)\n";
        assert_eq!(verifier_line(log), "invalid mem access 'scalar'");
        assert_eq!(verifier_line(""), "(no verifier log)");
    }

    #[test]
    fn unavailable_says_the_remedy() {
        let e = Unavailable::new(UnavailableKind::NoPrivilege, "missing CAP_BPF");
        assert_eq!(e.kind(), "no-privilege");
        let s = e.to_string();
        assert!(
            s.contains("CAP_BPF and CAP_PERFMON") && s.contains("setcap"),
            "{s}"
        );
        assert!(!s.contains('\n'));
    }
}
