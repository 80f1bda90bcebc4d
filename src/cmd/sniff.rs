//! `kaprobe sniff`: keepalive probes and their ACKs seen on the wire, from any sender.
//!
//! Captures every TCP segment (all interfaces, or the one `-i` names), keeps the ones of the
//! selected connections, and lets [`crate::keepalive_track`] say which are keepalive probes
//! and which answer them. One line (or JSON object) per probe and per answer, then a summary
//! when `--count` probes have been seen (and answered, or given [`ACK_WINDOW`] to be), when
//! `--duration` is reached, or on SIGINT/SIGTERM. Exit 0. A closed standard output ends it at
//! the next write.
//!
//! Times are the kernel's receive timestamps of the packets (SIOCGSTAMPNS), so intervals and
//! RTTs do not depend on how quickly this process reads.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::RawFd;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Args;
use serde_json::{Value, json};

use super::Ctx;
use super::args::{OptFlowArg, duration_in};
use crate::error::{Error, Result};
use crate::exit::ExitStatus;
use crate::filter::FilterArgs;
use crate::flow::{Flow, FlowSpec};
use crate::keepalive_track::{ACK_WINDOW, DEFAULT_MAX_CONNECTIONS, Probe, ProbeAck, Seen, Tracker};
use crate::output::{self, count as plural, duration};
use crate::sys::capture::Capture;
use crate::sys::privilege;
use crate::sys::{bpf, catch_stop_signals, stop_requested, wait_readable};
use crate::wire::{self, Packet, Segment};

#[derive(Args, Debug)]
pub struct SniffArgs {
    /// Only this interface (default: all)
    #[arg(short = 'i', long = "interface", value_name = "IFACE")]
    pub iface: Option<String>,
    /// Only this connection: LOCAL-REMOTE, LOCAL REMOTE, or REMOTE alone (every connection
    /// to it)
    #[command(flatten)]
    pub flow: OptFlowArg,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Stop after N keepalive probes, once each is answered or 1s has passed; 1 to 1000000
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub count: Option<u64>,
    /// Stop after this long; at most 30 days
    #[arg(long, value_name = "DUR",
          value_parser = duration_in(Duration::from_millis(1), Duration::from_secs(30 * 86_400)))]
    pub duration: Option<Duration>,
    /// Most connections tracked at once; the least recently seen is forgotten beyond it; 1 to
    /// 10000000
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_CONNECTIONS,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=10_000_000))]
    pub max_connections: usize,
}

/// Which segments the user asked about.
struct Selector {
    spec: Option<FlowSpec>,
    filter: FilterArgs,
    /// This host's addresses, to tell the local side of a connection.
    locals: HashSet<IpAddr>,
}

impl Selector {
    /// The segment's connection as seen from here: the local side first when exactly one
    /// side is local; `None` when both or neither are (then either way round).
    fn orient(&self, a: SocketAddr, b: SocketAddr) -> Option<Flow> {
        match (self.locals.contains(&a.ip()), self.locals.contains(&b.ip())) {
            (true, false) => Some(Flow {
                local: a,
                remote: b,
            }),
            (false, true) => Some(Flow {
                local: b,
                remote: a,
            }),
            _ => None,
        }
    }

    fn matches(&self, seg: &Segment) -> bool {
        let (a, b) = (seg.src, seg.dst);
        match self.spec {
            Some(FlowSpec::Exact(f, _)) => {
                (f.local, f.remote) == (a, b) || (f.local, f.remote) == (b, a)
            }
            Some(FlowSpec::Remote(r, _)) => r == a || r == b,
            None => match self.orient(a, b) {
                Some(f) => self.filter.matches(&f),
                None => {
                    self.filter.matches(&Flow {
                        local: a,
                        remote: b,
                    }) || self.filter.matches(&Flow {
                        local: b,
                        remote: a,
                    })
                }
            },
        }
    }

    /// The FLOW to name an event by: the user's, else local side first, else prober first.
    fn flow(&self, prober: SocketAddr, peer: SocketAddr) -> Flow {
        if let Some(FlowSpec::Exact(f, _)) = self.spec {
            return f;
        }
        self.orient(prober, peer).unwrap_or(Flow {
            local: prober,
            remote: peer,
        })
    }
}

/// Distinct probing directions counted for the summary, at most (memory stays bounded).
const MAX_SENDERS_COUNTED: usize = 1 << 17;

/// What was seen, for the summary.
#[derive(Default)]
struct Stats {
    segments: u64,
    probes: u64,
    acks: u64,
    window_probes: u64,
    retransmissions: u64,
    probed: HashSet<(SocketAddr, SocketAddr)>,
}

impl Stats {
    fn count(&mut self, seen: &Seen) {
        self.segments += 1;
        match seen {
            Seen::KeepaliveProbe(p) => {
                self.probes += 1;
                if self.probed.len() < MAX_SENDERS_COUNTED {
                    self.probed.insert((p.from, p.to));
                }
            }
            Seen::KeepaliveAck(_) => self.acks += 1,
            Seen::WindowProbe => self.window_probes += 1,
            Seen::Retransmission => self.retransmissions += 1,
            _ => {}
        }
    }
}

/// When to stop.
struct Stop {
    count: Option<u64>,
    until: Option<Instant>,
    /// Once `--count` probes are in: the latest their answers are waited for.
    answers_by: Option<Instant>,
}

impl Stop {
    fn done(&self, stats: &Stats) -> bool {
        let now = Instant::now();
        stop_requested()
            || self.until.is_some_and(|t| now >= t)
            || self
                .answers_by
                .is_some_and(|t| now >= t || stats.acks >= stats.probes)
    }

    /// Probes beyond `--count` are neither reported nor counted.
    fn wants_probe(&self, stats: &Stats) -> bool {
        self.count.is_none_or(|n| stats.probes < n)
    }

    fn counted(&mut self, stats: &Stats) {
        if self.answers_by.is_none() && self.count.is_some_and(|n| stats.probes >= n) {
            self.answers_by = Some(Instant::now() + ACK_WINDOW);
        }
    }

    /// How long to wait for packets before looking again.
    fn wait(&self) -> Duration {
        let now = Instant::now();
        [self.until, self.answers_by]
            .into_iter()
            .flatten()
            .map(|t| t.saturating_duration_since(now))
            .fold(Duration::from_secs(1), Duration::min)
    }
}

pub fn run(args: &SniffArgs, ctx: &Ctx) -> Result<ExitStatus> {
    let ifindex = args.iface.as_deref().map(interface_index).transpose()?;
    let spec = args.flow.spec()?;
    let selector = Selector {
        spec,
        filter: args.filter.clone(),
        locals: crate::sys::link::local_addresses(),
    };
    // One connection on all interfaces: the kernel can drop everything else.
    let filter = match (spec, ifindex) {
        (Some(FlowSpec::Exact(flow, _)), None) => bpf::flows_filter(&[flow]),
        _ => bpf::tcp_filter(ifindex),
    };
    let mut cap = Capture::open(&filter)?;
    privilege::drop_privileges(&[], None)?;
    catch_stop_signals();
    log::info!(
        "sniffing TCP keepalives on {}",
        args.iface.as_deref().unwrap_or("all interfaces")
    );
    let started = Instant::now();
    let mut tracker = Tracker::new(args.max_connections);
    let mut stats = Stats::default();
    let mut stop = Stop {
        count: args.count,
        until: args.duration.map(|d| started + d),
        answers_by: None,
    };
    while !stop.done(&stats) {
        // A closed stdout ends the capture (README "Pipes, signals and limits").
        output::check()?;
        let readable = wait_readable(cap.fd(), Some(stop.wait())).map_err(|e| Error::Io {
            context: "waiting on the capture socket".into(),
            source: e,
        })?;
        if readable {
            drain(
                &mut cap,
                &selector,
                &mut tracker,
                &mut stats,
                &mut stop,
                ctx,
            )?;
        }
    }
    print_summary(&stats, &tracker, started.elapsed(), ctx.json)?;
    cap.release_detached();
    Ok(ExitStatus::Success)
}

/// Reads every queued packet, reporting probes and answers.
fn drain(
    cap: &mut Capture,
    selector: &Selector,
    tracker: &mut Tracker,
    stats: &mut Stats,
    stop: &mut Stop,
    ctx: &Ctx,
) -> Result<()> {
    let fd = cap.fd();
    loop {
        let seg = match cap.next_packet()? {
            None => return Ok(()),
            Some(bytes) => match wire::decode(bytes) {
                Ok(Packet::Tcp(seg)) => seg,
                _ => continue,
            },
        };
        if !selector.matches(&seg) {
            continue;
        }
        let now = packet_time(fd);
        let seen = tracker.feed(now, &seg);
        if matches!(seen, Seen::KeepaliveProbe(_)) && !stop.wants_probe(stats) {
            continue;
        }
        stats.count(&seen);
        report(selector, now, &seen, ctx.json)?;
        stop.counted(stats);
    }
}

/// `SIOCGSTAMPNS` (`SIOCGSTAMPNS_OLD`, a native `struct timespec`), missing from libc.
const SIOCGSTAMPNS: libc::c_ulong = 0x8907;

/// The kernel's timestamp of the packet just read, as time since the epoch.
fn packet_time(fd: RawFd) -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: SIOCGSTAMPNS writes one timespec.
    let rc = unsafe { libc::ioctl(fd, SIOCGSTAMPNS as _, &mut ts) };
    if rc == 0 && ts.tv_sec > 0 {
        return Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32);
    }
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// One line per probe and answer; a closed stdout ends the capture here.
fn report(selector: &Selector, now: Duration, seen: &Seen, json: bool) -> Result<()> {
    let object = match (seen, json) {
        (Seen::KeepaliveProbe(p), false) => return output::line(probe_line(now, p)),
        (Seen::KeepaliveAck(a), false) => return output::line(ack_line(now, a)),
        (Seen::KeepaliveProbe(p), true) => {
            event_json("keepalive_probe", now, selector.flow(p.from, p.to), p, None)
        }
        (Seen::KeepaliveAck(a), true) => {
            // The answer as a segment: no payload, and no interval of its own.
            let seg = Probe {
                from: a.from,
                to: a.to,
                seq: a.seq,
                ack: a.ack,
                len: 0,
                interval: None,
            };
            let flow = selector.flow(a.to, a.from);
            event_json("keepalive_ack", now, flow, &seg, Some(a.rtt))
        }
        _ => return Ok(()),
    };
    output::json_line(object)
}

fn probe_line(now: Duration, p: &Probe) -> String {
    let interval = p.interval.map_or("-".to_string(), duration);
    format!(
        "{} {} > {} keepalive probe seq={} ack={} len={} interval={interval}",
        clock(now),
        p.from,
        p.to,
        p.seq,
        p.ack,
        p.len
    )
}

fn ack_line(now: Duration, a: &ProbeAck) -> String {
    format!(
        "{} {} < {} keepalive ack seq={} ack={} rtt={}",
        clock(now),
        a.to,
        a.from,
        a.seq,
        a.ack,
        duration(a.rtt)
    )
}

/// The JSON line of a keepalive probe or of its answer: one builder, so that both carry
/// every field (`null` where one does not apply). `flow` is the connection as the prober
/// sees it, `seg` the segment seen, `rtt` the answer's delay after its probe.
fn event_json(event: &str, now: Duration, flow: Flow, seg: &Probe, rtt: Option<Duration>) -> Value {
    json!({
        "event": event,
        "time": rfc3339(now),
        "flow": flow.to_string(),
        "from": seg.from.to_string(),
        "to": seg.to.to_string(),
        "seq": seg.seq.0,
        "ack": seg.ack.0,
        "len": seg.len,
        "interval_ms": seg.interval.map(output::millis),
        "rtt_us": rtt.map(output::micros),
    })
}

fn print_summary(s: &Stats, t: &Tracker, elapsed: Duration, json: bool) -> Result<()> {
    if json {
        output::json_line(json!({
            "event": "summary",
            "probes": s.probes,
            "acks": s.acks,
            "unanswered": s.probes.saturating_sub(s.acks),
            "senders": s.probed.len(),
            "window_probes": s.window_probes,
            "retransmissions": s.retransmissions,
            "segments": s.segments,
            "connections_tracked": t.connections(),
            "connections_evicted": t.evicted(),
            "elapsed_ms": output::millis(elapsed),
        }))
    } else {
        output::line(summary_line(s, elapsed))
    }
}

fn summary_line(s: &Stats, elapsed: Duration) -> String {
    format!(
        "{}, {} answered, from {} in {} ({} seen; not keepalives: {}, {})",
        plural(s.probes, "keepalive probe"),
        s.acks,
        plural(s.probed.len() as u64, "sender"),
        duration(elapsed),
        plural(s.segments, "segment"),
        plural(s.window_probes, "window probe"),
        plural(s.retransmissions, "retransmission"),
    )
}

/// `09:12:03.120345`, local time.
fn clock(t: Duration) -> String {
    let secs = t.as_secs() as libc::time_t;
    // SAFETY: tm is plain data; localtime_r fills it or returns null.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    if unsafe { libc::localtime_r(&secs, &mut tm) }.is_null() {
        return format!("{:.6}", t.as_secs_f64());
    }
    format!(
        "{:02}:{:02}:{:02}.{:06}",
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        t.subsec_micros()
    )
}

fn rfc3339(t: Duration) -> String {
    humantime::format_rfc3339_micros(UNIX_EPOCH + t).to_string()
}

fn interface_index(name: &str) -> Result<u32> {
    let c = std::ffi::CString::new(name)
        .map_err(|_| Error::Usage(format!("invalid interface name {name:?}")))?;
    // SAFETY: a valid NUL-terminated string.
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => Err(Error::Usage(format!("no interface named {name:?}"))),
        n => Ok(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn selector(spec: Option<&str>, filter: FilterArgs) -> Selector {
        Selector {
            spec: spec.map(|s| s.parse().unwrap()),
            filter,
            locals: ["198.18.0.1".parse().unwrap()].into_iter().collect(),
        }
    }

    fn seg(from: &str, to: &str) -> Segment {
        let one = crate::seq::SeqNumber(1);
        Segment {
            window: 1,
            ..Segment::bare(
                from.parse().unwrap(),
                to.parse().unwrap(),
                one,
                one,
                wire::ACK,
            )
        }
    }

    #[test]
    fn a_flow_matches_both_directions_only() {
        let s = selector(
            Some("198.18.0.1:40001-198.18.0.2:9000"),
            FilterArgs::default(),
        );
        assert!(s.matches(&seg("198.18.0.1:40001", "198.18.0.2:9000")));
        assert!(s.matches(&seg("198.18.0.2:9000", "198.18.0.1:40001")));
        assert!(!s.matches(&seg("198.18.0.1:40002", "198.18.0.2:9000")));
        let r = selector(Some("198.18.0.2:9000"), FilterArgs::default());
        assert!(r.matches(&seg("198.18.0.1:40002", "198.18.0.2:9000")));
        assert!(!r.matches(&seg("198.18.0.1:40002", "198.18.0.2:9001")));
    }

    #[test]
    fn filters_see_the_local_side_first() {
        let f = FilterArgs {
            remote: Some("198.18.0.2".parse().unwrap()),
            ..Default::default()
        };
        let s = selector(None, f);
        assert!(s.matches(&seg("198.18.0.2:9000", "198.18.0.1:40001")));
        let wrong = FilterArgs {
            remote: Some("198.18.0.1".parse().unwrap()),
            ..Default::default()
        };
        assert!(!selector(None, wrong).matches(&seg("198.18.0.2:9000", "198.18.0.1:40001")));
        let flow = s.flow(
            "198.18.0.2:9000".parse().unwrap(),
            "198.18.0.1:40001".parse().unwrap(),
        );
        assert_eq!(flow.to_string(), "198.18.0.1:40001-198.18.0.2:9000");
    }

    #[test]
    fn summary_uses_plurals_and_the_one_duration_style() {
        let mut s = Stats {
            probes: 1,
            acks: 1,
            segments: 2,
            ..Default::default()
        };
        s.probed.insert((
            "198.18.0.2:1".parse().unwrap(),
            "198.51.100.2:2".parse().unwrap(),
        ));
        assert_eq!(
            summary_line(&s, Duration::from_millis(1500)),
            "1 keepalive probe, 1 answered, from 1 sender in 1.5s (2 segments seen; not \
             keepalives: 0 window probes, 0 retransmissions)"
        );
    }

    #[test]
    fn count_waits_for_the_answers_of_the_counted_probes() {
        let mut stop = Stop {
            count: Some(1),
            until: None,
            answers_by: None,
        };
        let mut s = Stats::default();
        assert!(stop.wants_probe(&s) && !stop.done(&s));
        s.probes = 1;
        stop.counted(&s);
        assert!(!stop.wants_probe(&s), "a second probe is not counted");
        assert!(!stop.done(&s), "the answer is still awaited");
        assert!(stop.wait() <= ACK_WINDOW);
        s.acks = 1;
        assert!(stop.done(&s), "answered: done");
        s.acks = 0;
        stop.answers_by = Some(Instant::now());
        assert!(stop.done(&s), "unanswered after the window: done");
    }

    #[test]
    fn wall_clock_formats() {
        let t = Duration::new(1_700_000_000, 120_345_000);
        assert!(clock(t).ends_with(".120345"), "{}", clock(t));
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20.120345Z");
    }
}
