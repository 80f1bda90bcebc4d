//! Which sequence-number source a run uses, and what must hold before a source that injects
//! packets may touch a connection (README "Do no harm").

use std::net::SocketAddr;

use caps::Capability;

use crate::engine::{LEARN_RETRY, LEARN_TRIES, SeqSource};
use crate::error::{Error, Result};
use crate::flow::Flow;
use crate::sys::conntrack::{Conntrack, Entry, Tracking};
use crate::sys::kernel_seq::KernelSeq;

/// The source chosen for a run, with the loaded iterator when it is `kernel`.
pub struct Chosen {
    pub source: SeqSource,
    pub kernel: Option<KernelSeq>,
    /// Why the default `kernel` source could not be used ("no-privilege", "no-btf",
    /// "old-kernel", "load-failed"), when the run fell back to `local`.
    pub fallback: Option<&'static str>,
}

/// The source asked for; by default (`None`) `kernel` where it can be loaded, else `local`
/// with the reason at `-v` (README "How it works"). Load it inside the namespace the run
/// probes: the iterator lists the namespace of the thread that creates it.
pub fn choose(asked: Option<SeqSource>) -> Result<Chosen> {
    match asked {
        None => match KernelSeq::open() {
            Ok(k) => Ok(Chosen {
                source: SeqSource::Kernel,
                kernel: Some(k),
                fallback: None,
            }),
            Err(why) => {
                log::info!("{why}; learning the numbers with --seq-source local instead");
                Ok(Chosen {
                    source: noted(SeqSource::Local),
                    kernel: None,
                    fallback: Some(why.kind()),
                })
            }
        },
        Some(SeqSource::Kernel) => match KernelSeq::open() {
            Ok(k) => Ok(Chosen {
                source: SeqSource::Kernel,
                kernel: Some(k),
                fallback: None,
            }),
            Err(why) if why.kind() == "no-privilege" => Err(Error::Privilege {
                what: "--seq-source kernel (an eBPF socket iterator)".into(),
                cap: Capability::CAP_BPF,
            }),
            Err(why) => Err(Error::Runtime(why.to_string())),
        },
        Some(other) => Ok(Chosen {
            source: noted(other),
            kernel: None,
            fallback: None,
        }),
    }
}

/// `source`, after a warning where it may mislead and, at `-v`, why kaprobe may wait while
/// it learns the numbers.
fn noted(source: SeqSource) -> SeqSource {
    match source {
        SeqSource::Local => {
            let limit = crate::sys::sysctl::read_u64("net.ipv4.tcp_invalid_ratelimit")
                .map_or("500ms by default".into(), |ms| format!("{ms}ms here"));
            log::info!(
                "learning each connection's sequence numbers from the challenge ACK its \
                 local socket sends to an injected SYN; Linux sends at most one per socket \
                 per net.ipv4.tcp_invalid_ratelimit ({limit}): when the socket has just \
                 sent one, none comes, and kaprobe waits {} before injecting again \
                 ({} SYNs at most)",
                humantime::format_duration(LEARN_RETRY),
                LEARN_TRIES
            );
        }
        // Warned about once it is admitted on a flow (`Guard::admit`): a refusal says enough.
        SeqSource::Kernel | SeqSource::Peer | SeqSource::Sniff => {}
    }
    source
}

/// Refuses early, as opening the capture socket would, when CAP_NET_RAW is missing: without
/// it nothing can be probed, and conntrack's own refusal would name the lesser capability.
pub fn require_raw() -> Result<()> {
    let has = caps::has_cap(None, caps::CapSet::Effective, Capability::CAP_NET_RAW).unwrap_or(true);
    if has {
        Ok(())
    } else {
        Err(Error::Privilege {
            what: "opening the capture socket (AF_PACKET)".into(),
            cap: Capability::CAP_NET_RAW,
        })
    }
}

/// Connection tracking as this namespace has it, asked once per connection.
pub struct Guard {
    conntrack: Option<Conntrack>,
    /// This host's addresses and whether `lo` is up, and when they were listed: one listing
    /// serves every connection for a second (`watch` asks before every round).
    host: Option<(
        std::collections::HashSet<std::net::IpAddr>,
        bool,
        std::time::Instant,
    )>,
    /// `--seq-source peer` was admitted on a flow and warned about (once a run).
    peer_warned: bool,
}

/// How long one listing of this host's addresses answers for.
const HOST_FRESH: std::time::Duration = std::time::Duration::from_secs(1);

impl Guard {
    /// Opens a ctnetlink socket (needs CAP_NET_ADMIN), or none where netfilter has no
    /// netlink: nothing tracks connections then.
    pub fn open() -> Result<Guard> {
        let conntrack = Conntrack::open()
            .map_err(|e| Error::sys("conntrack netlink socket", Capability::CAP_NET_ADMIN, e))?;
        Ok(Guard {
            conntrack,
            host: None,
            peer_warned: false,
        })
    }

    /// This host's addresses and whether `lo` is up, listed at most once a second.
    fn host(&mut self) -> (&std::collections::HashSet<std::net::IpAddr>, bool) {
        if self
            .host
            .as_ref()
            .is_some_and(|h| h.2.elapsed() >= HOST_FRESH)
        {
            self.host = None;
        }
        let (addresses, lo_up, _) = self.host.get_or_insert_with(|| {
            (
                crate::sys::link::local_addresses(),
                crate::sys::link::loopback_up(),
                std::time::Instant::now(),
            )
        });
        (addresses, *lo_up)
    }

    /// Where a NAT-ed flow's peer segments appear on the wire (source, destination), if the
    /// flow is NAT-ed here.
    fn wire(&mut self, flow: &Flow) -> Result<Option<(SocketAddr, SocketAddr)>> {
        Ok(match self.tracking(flow)? {
            Tracking::Entry(e) if e.translated(flow) => Some((e.incoming.src, e.incoming.dst)),
            _ => None,
        })
    }

    /// Reads conntrack's whole table once for many flows (a sweep): their lookups are then
    /// answered from it.
    pub fn prefetch(&mut self, flows: &[Flow]) -> Result<()> {
        const MANY: usize = 16;
        let Some(ct) = self.conntrack.as_mut() else {
            return Ok(());
        };
        for v6 in [false, true] {
            if flows.iter().filter(|f| f.is_ipv6() == v6).count() >= MANY {
                ct.load_table(v6)
                    .map_err(|e| Error::sys("conntrack dump", Capability::CAP_NET_ADMIN, e))?;
            }
        }
        Ok(())
    }

    /// What conntrack knows of `flow`.
    pub fn tracking(&mut self, flow: &Flow) -> Result<Tracking> {
        match self.conntrack.as_mut() {
            None => Ok(Tracking::Untracked),
            Some(ct) => ct
                .track(flow)
                .map_err(|e| Error::sys("conntrack lookup", Capability::CAP_NET_ADMIN, e)),
        }
    }

    /// Whether `source` may be used on `flow`, and where the peer's segments appear on the
    /// wire when the flow is NAT-ed here (source, destination). A source that injects
    /// packets is refused, exit 7 with the cause and the remedy, wherever an injected packet
    /// could change what conntrack does with the connection.
    pub fn admit(
        &mut self,
        flow: &Flow,
        source: SeqSource,
    ) -> Result<Option<(SocketAddr, SocketAddr)>> {
        if !source.injects() {
            return self.wire(flow);
        }
        let (addresses, lo_up) = self.host();
        let here = addresses.contains(&flow.local.ip());
        if !here {
            return Err(Error::Runtime(format!(
                "{flow}: the socket's address is not this host's (a transparent, TPROXY \
                 socket): an injected SYN would be routed off the host; {}",
                remedy(source)
            )));
        }
        let tracking = self.tracking(flow)?;
        let wire = match tracking {
            Tracking::Entry(e) if e.translated(flow) => Some((e.incoming.src, e.incoming.dst)),
            _ => None,
        };
        if let Some(why) = refusal(flow, source, tracking) {
            return Err(Error::Runtime(format!("{why}; {}", remedy(source))));
        }
        if source == SeqSource::Peer && !self.peer_warned {
            // Untracked here, so nothing holds its random numbers against the connection;
            // but a stateful firewall on the path may drop them (README "How it works").
            self.peer_warned = true;
            log::warn!(
                "--seq-source peer sends an out-of-window first probe with random numbers; a \
                 stateful firewall on the path (ct state invalid drop) drops it, which reads \
                 as dead, and its answers cannot be authenticated"
            );
        }
        if source == SeqSource::Local && !lo_up {
            return Err(Error::Runtime(format!(
                "{flow}: the loopback device lo is down, and --seq-source local injects its SYN \
                 through it; bring lo up, or {}",
                remedy(source)
            )));
        }
        Ok(wire)
    }
}

/// Why `source` must not touch `flow`, if it must not.
fn refusal(flow: &Flow, source: SeqSource, tracking: Tracking) -> Option<String> {
    match (source, tracking) {
        (_, Tracking::Untracked) => None,
        (SeqSource::Peer, _) => Some(format!(
            "conntrack tracks {flow}: --seq-source peer sends random sequence numbers, which \
             conntrack may take as the connection's window edge and then drop its real segments"
        )),
        (_, Tracking::Missing) => Some(format!(
            "conntrack has no entry for {flow} (flushed, table full, or a firewall started after \
             it opened): an injected SYN would create a reversed entry, and conntrack would drop \
             the peer's segments for minutes"
        )),
        (_, Tracking::Entry(e)) => entry_refusal(flow, &e),
    }
}

fn entry_refusal(flow: &Flow, e: &Entry) -> Option<String> {
    if e.seq_adjust {
        return Some(format!(
            "conntrack adjusts the sequence numbers of {flow} (SYNPROXY or a NAT helper): \
             numbers learned from an injected SYN's answer would be adjusted twice"
        ));
    }
    if e.nat || e.translated(flow) {
        return Some(format!(
            "{flow} is NAT-ed on this host (its peer's segments arrive from {} to {}): an \
             injected SYN would clash with its conntrack entry and be answered off the host",
            e.incoming.src, e.incoming.dst
        ));
    }
    None
}

fn remedy(source: SeqSource) -> String {
    format!(
        "kaprobe sends nothing with --seq-source {}; read the numbers from the kernel instead \
         (--seq-source kernel, the default where allowed: needs CAP_BPF and CAP_PERFMON, e.g. \
         run as root)",
        source.as_str()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::conntrack::Tuple4;

    fn flow() -> Flow {
        Flow {
            local: "198.18.0.2:40000".parse().unwrap(),
            remote: "203.0.113.10:80".parse().unwrap(),
        }
    }

    fn entry(src: &str, nat: bool, seq_adjust: bool) -> Tracking {
        Tracking::Entry(Entry {
            incoming: Tuple4 {
                src: src.parse().unwrap(),
                dst: flow().local,
            },
            nat,
            seq_adjust,
        })
    }

    #[test]
    fn injecting_sources_are_refused_where_conntrack_would_be_hurt() {
        let f = flow();
        let plain = entry("203.0.113.10:80", false, false);
        assert_eq!(refusal(&f, SeqSource::Local, plain), None);
        assert_eq!(refusal(&f, SeqSource::Local, Tracking::Untracked), None);
        assert_eq!(refusal(&f, SeqSource::Peer, Tracking::Untracked), None);
        let missing = refusal(&f, SeqSource::Local, Tracking::Missing).unwrap();
        assert!(missing.contains("no entry"), "{missing}");
        let nat = refusal(
            &f,
            SeqSource::Local,
            entry("198.51.100.3:9000", true, false),
        )
        .unwrap();
        assert!(
            nat.contains("NAT-ed") && nat.contains("198.51.100.3:9000"),
            "{nat}"
        );
        let adj = refusal(&f, SeqSource::Local, entry("203.0.113.10:80", false, true)).unwrap();
        assert!(adj.contains("SYNPROXY"), "{adj}");
        let peer = refusal(&f, SeqSource::Peer, plain).unwrap();
        assert!(peer.contains("random"), "{peer}");
        assert!(refusal(&f, SeqSource::Peer, Tracking::Missing).is_some());
    }

    #[test]
    fn the_remedy_names_the_kernel_source_and_its_capabilities() {
        let r = remedy(SeqSource::Local);
        assert!(
            r.contains("--seq-source kernel") && r.contains("CAP_BPF"),
            "{r}"
        );
    }
}
