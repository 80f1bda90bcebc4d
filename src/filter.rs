//! Connection filters shared by `list`, `sweep` and `watch`: `--local A[/LEN][:P]`,
//! `--remote A[/LEN][:P]`, `--port P` (either side). Addresses and prefixes are written as
//! `ss` takes them (`ss dst 198.51.100.0/24`): IPv6 in brackets, the prefix inside or after
//! them (`[2001:db8::]/32:9000`, `[2001:db8::/32]:9000`). IPv4-mapped IPv6 is the IPv4
//! address it carries, as in a FLOW.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use clap::Args;

use crate::error::{Error, Result};
use crate::flow::{Flow, masked, parse_parts, parse_port};
use crate::sys::diag::{Conn, Diag};

/// One side of a connection to match: `A`, `A/LEN`, each with an optional `:P` (`[A6]`,
/// `[A6]/LEN`, `[A6]:P`, `[A6]/LEN:P`), written as `ss` takes them.
///
/// ```
/// use kaprobe::AddrMatch;
/// let m: AddrMatch = "198.51.100.0/24:9000".parse()?;
/// assert!(m.matches(&"198.51.100.7:9000".parse()?));
/// assert!(!m.matches(&"198.51.100.7:9001".parse()?));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddrMatch {
    /// The address, or the prefix's network address (host bits cleared).
    pub ip: IpAddr,
    /// `/LEN`; `None` for one address.
    pub len: Option<u8>,
    pub port: Option<u16>,
}

impl AddrMatch {
    /// Whether `a` is this address (or in this prefix), on this port if one is given.
    pub fn matches(&self, a: &SocketAddr) -> bool {
        self.port.is_none_or(|p| p == a.port()) && self.covers(a.ip())
    }

    /// Whether the address is this one, or inside this prefix. An IPv6 prefix covers an
    /// IPv4 address through its mapped form (`[::ffff:0:0]/96` is all of IPv4).
    pub fn covers(&self, ip: IpAddr) -> bool {
        let ip = match (self.ip, ip) {
            (IpAddr::V6(_), IpAddr::V4(v4)) => IpAddr::V6(v4.to_ipv6_mapped()),
            (IpAddr::V4(_), IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => return false,
            },
            _ => ip,
        };
        self.len.map_or(ip, |len| masked(ip, len)) == self.ip
    }
}

impl std::str::FromStr for AddrMatch {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let p = parse_parts(s)?;
        if let Some(scope) = p.scope {
            return Err(format!(
                "'{s}': filters match addresses only; leave out '%{scope}'"
            ));
        }
        Ok(AddrMatch {
            ip: p.prefix.map_or(p.ip, |len| masked(p.ip, len)),
            len: p.prefix,
            port: p.port,
        })
    }
}

/// Canonical text that parses back to the same match: `198.51.100.0/24:9000`,
/// `[2001:db8::]/32`, `[2001:db8::1]:9000`.
impl fmt::Display for AddrMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.ip {
            IpAddr::V4(a) => write!(f, "{a}")?,
            IpAddr::V6(a) => write!(f, "[{a}]")?,
        }
        if let Some(len) = self.len {
            write!(f, "/{len}")?;
        }
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        Ok(())
    }
}

fn port_arg(s: &str) -> std::result::Result<u16, String> {
    parse_port(s)
}

/// Which established connections a sweep probes: every condition given must hold (none
/// given: all of them).
///
/// ```
/// let mut filter = kaprobe::Filter::default();
/// filter.remote = Some("198.51.100.0/24".parse()?);
/// filter.port = Some(9000);
/// assert!(filter.matches(&"198.18.0.2:40000-198.51.100.2:9000".parse()?));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// The local side is this address, or in this prefix (on this port, if given).
    pub local: Option<AddrMatch>,
    /// The remote side is this address, or in this prefix (on this port, if given).
    pub remote: Option<AddrMatch>,
    /// Either side uses this port.
    pub port: Option<u16>,
}

impl Filter {
    /// Whether `f` passes every condition.
    pub fn matches(&self, f: &Flow) -> bool {
        self.local.is_none_or(|m| m.matches(&f.local))
            && self.remote.is_none_or(|m| m.matches(&f.remote))
            && self
                .port
                .is_none_or(|p| f.local.port() == p || f.remote.port() == p)
    }

    /// Like `established` of [`FilterArgs`], nothing matching being an error (exit 5).
    pub(crate) fn require_established(&self, diag: &mut Diag) -> Result<Vec<Conn>> {
        let conns: Vec<Conn> = diag
            .established()?
            .into_iter()
            .filter(|c| self.matches(&c.flow))
            .collect();
        if conns.is_empty() {
            return Err(Error::NoConnection(
                "no established TCP connection matches".into(),
            ));
        }
        Ok(conns)
    }
}

// The doc comments are clap's help text: `[2001:db8::2]` there is an address, not a link.
#[allow(rustdoc::broken_intra_doc_links)]
#[derive(Args, Debug, Clone, Default, PartialEq, Eq)]
pub struct FilterArgs {
    /// Only connections whose local side is A, or in the prefix A/LEN, optionally on port P
    /// (as ss takes them: 198.51.100.0/24:9000; IPv6 in brackets: '[2001:db8::]/32:9000')
    #[arg(long, value_name = "A[/LEN][:P]")]
    pub local: Option<AddrMatch>,
    /// Only connections whose remote side is A, or in the prefix A/LEN, optionally on port P
    /// (IPv4-mapped IPv6 such as [::ffff:198.51.100.2] is the IPv4 address)
    #[arg(long, value_name = "A[/LEN][:P]")]
    pub remote: Option<AddrMatch>,
    /// Only connections with port P on either side
    #[arg(long, value_name = "P", value_parser = port_arg)]
    pub port: Option<u16>,
}

impl FilterArgs {
    /// The filter these options describe.
    pub fn filter(&self) -> Filter {
        Filter {
            local: self.local,
            remote: self.remote,
            port: self.port,
        }
    }

    pub fn matches(&self, f: &Flow) -> bool {
        self.filter().matches(f)
    }

    /// The established connections that match, from one sock_diag dump.
    pub fn established(&self, diag: &mut Diag) -> Result<Vec<Conn>> {
        Ok(diag
            .established()?
            .into_iter()
            .filter(|c| self.matches(&c.flow))
            .collect())
    }

    /// Like `established`, but nothing matching is an error (exit 5).
    pub fn require_established(&self, diag: &mut Diag) -> Result<Vec<Conn>> {
        self.filter().require_established(diag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(s: &str) -> Flow {
        match s.parse::<crate::flow::FlowSpec>().unwrap() {
            crate::flow::FlowSpec::Exact(f, _) => f,
            _ => unreachable!(),
        }
    }

    #[test]
    fn filters_combine_with_and() {
        let f = flow("198.18.0.2:40000-198.51.100.2:9000");
        let mut a = FilterArgs::default();
        assert!(a.matches(&f));
        a.remote = Some("198.51.100.2".parse().unwrap());
        assert!(a.matches(&f));
        a.port = Some(40000);
        assert!(a.matches(&f));
        a.local = Some("198.18.0.2:40001".parse().unwrap());
        assert!(!a.matches(&f));
        let b = FilterArgs {
            port: Some(9001),
            ..Default::default()
        };
        assert!(!b.matches(&f));
        let v6 = FilterArgs {
            remote: Some("[2001:db8::2]:9000".parse().unwrap()),
            ..Default::default()
        };
        assert!(v6.matches(&flow("[2001:db8::1]:1-[2001:db8::2]:9000")));
        assert!(!v6.matches(&f));
    }

    fn m(s: &str) -> AddrMatch {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidr_prefixes_match_the_addresses_inside() {
        let net = m("198.51.100.0/24");
        assert!(net.matches(&sa("198.51.100.2:9000")));
        assert!(net.matches(&sa("198.51.100.255:1")));
        assert!(!net.matches(&sa("198.51.101.2:9000")));
        assert!(!net.matches(&sa("[2001:db8::2]:9000")));
        let with_port = m("198.51.100.0/24:9000");
        assert!(with_port.matches(&sa("198.51.100.7:9000")));
        assert!(!with_port.matches(&sa("198.51.100.7:9001")));
        // Host bits are cleared, as ss and ip do.
        assert_eq!(m("198.51.100.7/24"), net);
        assert!(m("0.0.0.0/0").matches(&sa("203.0.113.9:1")));
        assert!(m("198.51.100.2/32").matches(&sa("198.51.100.2:1")));
        assert!(!m("198.51.100.2/32").matches(&sa("198.51.100.3:1")));
    }

    #[test]
    fn ipv6_prefixes_in_or_after_the_brackets() {
        for s in ["[2001:db8::]/32", "[2001:db8::/32]"] {
            let p = m(s);
            assert!(p.matches(&sa("[2001:db8:18::2]:9000")), "{s}");
            assert!(!p.matches(&sa("[2001:db9::2]:9000")), "{s}");
            assert!(!p.matches(&sa("198.51.100.2:9000")), "{s}");
        }
        for s in ["[2001:db8::]/32:9000", "[2001:db8::/32]:9000"] {
            let p = m(s);
            assert!(p.matches(&sa("[2001:db8::5]:9000")), "{s}");
            assert!(!p.matches(&sa("[2001:db8::5]:9001")), "{s}");
        }
        assert!(m("[::]/0").matches(&sa("[2001:db8::5]:1")));
    }

    #[test]
    fn mapped_addresses_and_prefixes_are_ipv4() {
        assert_eq!(m("[::ffff:198.51.100.2]"), m("198.51.100.2"));
        assert_eq!(m("[::ffff:198.51.100.2]:9000"), m("198.51.100.2:9000"));
        assert_eq!(m("[::ffff:198.51.100.0]/120"), m("198.51.100.0/24"));
        // A prefix shorter than the mapped block stays IPv6, and still covers IPv4 through
        // the mapped form.
        let all_v4 = m("[::ffff:0:0]/96");
        assert_eq!(all_v4, m("0.0.0.0/0"));
        let wide = m("[::]/64");
        assert!(wide.matches(&sa("198.51.100.2:1")));
        assert!(!m("[2001:db8::]/32").matches(&sa("198.51.100.2:1")));
    }

    #[test]
    fn filters_print_back_canonically() {
        for (input, text) in [
            ("198.51.100.7/24", "198.51.100.0/24"),
            ("198.51.100.2", "198.51.100.2"),
            ("198.51.100.0/24:9000", "198.51.100.0/24:9000"),
            ("[2001:db8::/32]:9000", "[2001:db8::]/32:9000"),
            ("[2001:db8::1]", "[2001:db8::1]"),
            ("[::ffff:198.51.100.0]/120:80", "198.51.100.0/24:80"),
        ] {
            let a = m(input);
            assert_eq!(a.to_string(), text, "{input}");
            assert_eq!(m(text), a, "{input}");
        }
    }

    #[test]
    fn bad_filters_are_refused_with_a_reason() {
        for (input, needle) in [
            ("198.51.100.0/33", "longer than the address"),
            ("[2001:db8::]/129", "longer than the address"),
            ("198.51.100.0/", "not a prefix length"),
            ("198.51.100.0/x", "not a prefix length"),
            ("[2001:db8::]/32/32", "not a prefix length"),
            ("[2001:db8::/32]/32", "twice"),
            ("[fe80::1%eth0]", "leave out '%eth0'"),
            ("2001:db8::/32", "brackets"),
            ("198.51.100.0/24:0", "port 0"),
        ] {
            let e = input.parse::<AddrMatch>().expect_err(input);
            assert!(e.contains(needle), "{input}: {e}");
        }
    }
}
