//! TCP's connection counters from the TCP-MIB (RFC 4022: `tcpActiveOpens`,
//! `tcpPassiveOpens`, `tcpCurrEstab`), as Linux shows them in `/proc/thread-self/net/snmp`
//! for the network namespace of the calling thread (IPv4 and IPv6 together: Linux keeps one
//! TCP MIB per namespace).
//!
//! Reading them costs one small file read where listing the sockets costs a sock_diag dump
//! of every one of them: `watch` reads them to tell whether a connection can have been
//! established since its last dump (README "kaprobe watch"). Also the `TcpExt` counts of
//! segments dropped for a missing TCP-MD5 or TCP-AO signature (`/proc/net/netstat`).

use std::io;

use crate::flow::Signature;

/// The counters, compared as a whole: equal counters mean no connection was opened and
/// none entered ESTABLISHED in between (short of one closing at the same moment, which
/// `watch`'s periodic full look covers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpOpens {
    /// Transitions CLOSED -> SYN-SENT (`connect`).
    pub active: u64,
    /// Transitions LISTEN -> SYN-RCVD (`accept`ed handshakes).
    pub passive: u64,
    /// Connections now ESTABLISHED or CLOSE-WAIT.
    pub curr_estab: u64,
}

const PATH: &str = "/proc/thread-self/net/snmp";

/// The counters of the calling thread's network namespace.
pub fn tcp_opens() -> io::Result<TcpOpens> {
    let text = std::fs::read_to_string(PATH)?;
    parse(&text).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{PATH} has no Tcp ActiveOpens, PassiveOpens and CurrEstab"),
        )
    })
}

/// One group of `/proc/net/snmp` or `/proc/net/netstat` (`Tcp:`, `TcpExt:`, ...): its header
/// line of names and the value line after it, as (name, value) pairs.
pub fn group<'a>(text: &'a str, prefix: &str) -> Option<Vec<(&'a str, &'a str)>> {
    let mut lines = text.lines().filter_map(|l| l.strip_prefix(prefix));
    let names = lines.next()?;
    let values = lines.next()?;
    Some(
        names
            .split_whitespace()
            .zip(values.split_whitespace())
            .collect(),
    )
}

/// The counter `name` of a group from [`group`], if present and a number.
pub fn counter(group: &[(&str, &str)], name: &str) -> Option<u64> {
    group.iter().find(|(n, _)| *n == name)?.1.parse().ok()
}

/// Reads the `Tcp:` header line and the `Tcp:` value line after it.
pub fn parse(text: &str) -> Option<TcpOpens> {
    let tcp = group(text, "Tcp:")?;
    Some(TcpOpens {
        active: counter(&tcp, "ActiveOpens")?,
        passive: counter(&tcp, "PassiveOpens")?,
        curr_estab: counter(&tcp, "CurrEstab")?,
    })
}

/// This network namespace's counts of segments the TCP stack dropped for a missing
/// signature (`TcpExt` in `/proc/net/netstat`): TCP-MD5 (`TCPMD5NotFound`) and TCP-AO
/// (`TCPAORequired`, Linux 6.7+). TCP-AO is invisible to sock_diag, so a rise across a
/// failed learn step (whose injected SYNs are unsigned) is how kaprobe can name it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SignatureDrops {
    pub md5: u64,
    pub ao: u64,
}

impl SignatureDrops {
    /// The current counts; `None` if `/proc` does not tell.
    pub fn read() -> Option<SignatureDrops> {
        let text = std::fs::read_to_string("/proc/thread-self/net/netstat")
            .or_else(|_| std::fs::read_to_string("/proc/self/net/netstat"))
            .ok()?;
        SignatureDrops::parse(&text)
    }

    /// Parses the text of `/proc/net/netstat` (a header line of names, then a line of
    /// values, per group). A kernel without TCP-AO has no `TCPAORequired`: 0.
    pub fn parse(text: &str) -> Option<SignatureDrops> {
        let ext = group(text, "TcpExt:")?;
        let count = |name| ext.iter().find(|(n, _)| *n == name).map(|(_, v)| v.parse());
        Some(SignatureDrops {
            md5: count("TCPMD5NotFound")?.ok()?,
            ao: count("TCPAORequired").transpose().ok()?.unwrap_or(0),
        })
    }

    /// The signature whose drop count rose since `before`, if exactly one did.
    pub fn rose_since(&self, before: &SignatureDrops) -> Option<Signature> {
        match (self.md5 > before.md5, self.ao > before.ao) {
            (true, false) => Some(Signature::Md5),
            (false, true) => Some(Signature::Ao),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_tcp_lines() {
        let text = "\
Ip: Forwarding DefaultTTL InReceives
Ip: 1 64 3055
Tcp: RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens PassiveOpens AttemptFails EstabResets CurrEstab InSegs
Tcp: 1 200 120000 -1 433 350 27 101 12 16176
Udp: InDatagrams NoPorts
Udp: 5 0
";
        assert_eq!(
            parse(text),
            Some(TcpOpens {
                active: 433,
                passive: 350,
                curr_estab: 12
            })
        );
        assert_eq!(parse("Tcp: ActiveOpens PassiveOpens\nTcp: 1 2\n"), None);
        assert_eq!(parse("Tcp: ActiveOpens PassiveOpens CurrEstab\n"), None);
        assert_eq!(
            parse("Tcp: ActiveOpens PassiveOpens CurrEstab\nTcp: 1 x 3\n"),
            None
        );
        assert_eq!(parse(""), None);
    }

    #[test]
    fn follows_this_threads_namespace() {
        // Every Linux with /proc has the file; a connection on the loopback moves it.
        let Ok(before) = tcp_opens() else {
            return;
        };
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let _c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let _s = l.accept().unwrap();
        let after = tcp_opens().unwrap();
        assert!(after.active > before.active, "{before:?} {after:?}");
        assert!(after.passive > before.passive, "{before:?} {after:?}");
    }

    #[test]
    fn signature_drop_counters_are_read_from_tcpext() {
        let text = "TcpExt: SyncookiesSent TCPMD5NotFound TCPMD5Unexpected TCPAORequired\n\
                    TcpExt: 0 7 1 3\n\
                    IpExt: InNoRoutes\n\
                    IpExt: 0\n";
        let d = SignatureDrops::parse(text).unwrap();
        assert_eq!(d, SignatureDrops { md5: 7, ao: 3 });
        let after = SignatureDrops { md5: 7, ao: 6 };
        assert_eq!(after.rose_since(&d), Some(Signature::Ao));
        let after = SignatureDrops { md5: 9, ao: 3 };
        assert_eq!(after.rose_since(&d), Some(Signature::Md5));
        assert_eq!(d.rose_since(&d), None);
        // Older kernels: no TCPAORequired.
        let old = "TcpExt: TCPMD5NotFound\nTcpExt: 2\n";
        assert_eq!(
            SignatureDrops::parse(old),
            Some(SignatureDrops { md5: 2, ao: 0 })
        );
        assert_eq!(SignatureDrops::parse("IpExt: A\nIpExt: 1\n"), None);
        assert!(SignatureDrops::read().is_some());
    }
}
