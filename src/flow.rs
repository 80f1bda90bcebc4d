//! FLOW syntax: `LOCAL-REMOTE` with each side `IP:PORT` (IPv6 in brackets), or a bare `REMOTE`.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

/// One TCP connection seen from this host: its local and remote endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Flow {
    pub local: SocketAddr,
    pub remote: SocketAddr,
}

impl Flow {
    pub fn is_ipv6(&self) -> bool {
        self.local.is_ipv6()
    }
}

impl fmt::Display for Flow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.local, self.remote)
    }
}

/// How the connection's own packets are routed: its `SO_MARK` and the device it is bound to
/// (sock_diag `INET_DIAG_MARK` and `idiag_if`; 0 = none). Probes and injected SYNs carry the
/// same, so policy routing and VRFs send them where the connection's packets go.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Route {
    pub mark: u32,
    pub ifindex: u32,
}

/// A signature option the connection's segments must carry (TCP-MD5, RFC 2385; TCP-AO,
/// RFC 5925). Both ends drop unsigned segments, so such a connection cannot be probed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Signature {
    Md5,
    Ao,
}

impl Signature {
    pub fn as_str(self) -> &'static str {
        match self {
            Signature::Md5 => "TCP-MD5 (RFC 2385)",
            Signature::Ao => "TCP-AO (RFC 5925)",
        }
    }
}

/// What the user named on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowSpec {
    Exact(Flow),
    /// Only the remote side: resolved when exactly one established connection matches.
    Remote(SocketAddr),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid flow '{input}': {reason}")]
pub struct FlowParseError {
    pub input: String,
    pub reason: String,
}

impl FromStr for FlowSpec {
    type Err = FlowParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let fail = |reason: &str| FlowParseError {
            input: s.to_string(),
            reason: reason.to_string(),
        };
        let s = s.trim();
        if s.is_empty() {
            return Err(fail(
                "empty; expected LOCAL-REMOTE or REMOTE, e.g. 198.18.0.2:40000-198.51.100.2:9000",
            ));
        }
        match s.split_once('-') {
            None => Ok(FlowSpec::Remote(parse_endpoint(s).map_err(|r| fail(&r))?)),
            Some((l, r)) => {
                let local = parse_endpoint(l).map_err(|e| fail(&format!("local side: {e}")))?;
                let remote = parse_endpoint(r).map_err(|e| fail(&format!("remote side: {e}")))?;
                if local.is_ipv6() != remote.is_ipv6() {
                    return Err(fail("local and remote sides mix IPv4 and IPv6"));
                }
                Ok(FlowSpec::Exact(Flow { local, remote }))
            }
        }
    }
}

/// `IP:PORT` (`[IPv6]:PORT`), port 1..=65535.
pub fn parse_endpoint(s: &str) -> Result<SocketAddr, String> {
    let (ip, port) = split_host_port(s)?;
    let port = match port {
        Some(p) => p,
        None => return Err(format!("'{s}' has no port; expected IP:PORT")),
    };
    if port == 0 {
        return Err(format!("port 0 in '{s}'; ports are 1..65535"));
    }
    Ok(SocketAddr::new(ip, port))
}

/// `IP`, `IP:PORT`, `[IPv6]`, `[IPv6]:PORT`: for filters, where the port is optional.
pub fn split_host_port(s: &str) -> Result<(IpAddr, Option<u16>), String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty address".into());
    }
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("'{s}' has '[' without ']'"))?;
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| format!("'{s}': expected ':PORT' after ']'"))?,
            ),
        };
        let ip: std::net::Ipv6Addr = host
            .parse()
            .map_err(|_| format!("'{host}' is not an IPv6 address"))?;
        (IpAddr::V6(ip), port)
    } else if s.matches(':').count() > 1 {
        return Err(format!(
            "'{s}': write IPv6 addresses in brackets, e.g. [2001:db8::1]:9000"
        ));
    } else {
        match s.split_once(':') {
            Some((h, p)) => (parse_v4(h)?, Some(p)),
            None => (parse_v4(s)?, None),
        }
    };
    let port = match port {
        None => None,
        Some(p) => Some(parse_port(p)?),
    };
    Ok((host, port))
}

fn parse_v4(s: &str) -> Result<IpAddr, String> {
    s.parse::<std::net::Ipv4Addr>()
        .map(IpAddr::V4)
        .map_err(|_| format!("'{s}' is not an IPv4 address"))
}

pub fn parse_port(p: &str) -> Result<u16, String> {
    if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("'{p}' is not a port number"));
    }
    match p.parse::<u32>() {
        Ok(n) if (1..=65535).contains(&n) => Ok(n as u16),
        Ok(0) => Err("port 0; ports are 1..65535".into()),
        _ => Err(format!("port {p} is out of range 1..65535")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact(s: &str) -> Flow {
        match s.parse::<FlowSpec>() {
            Ok(FlowSpec::Exact(f)) => f,
            other => panic!("{s}: {other:?}"),
        }
    }

    #[test]
    fn parses_ipv4_flow() {
        let f = exact("198.18.0.2:40000-198.51.100.2:9000");
        assert_eq!(f.local, "198.18.0.2:40000".parse().unwrap());
        assert_eq!(f.remote, "198.51.100.2:9000".parse().unwrap());
        assert_eq!(f.to_string(), "198.18.0.2:40000-198.51.100.2:9000");
    }

    #[test]
    fn parses_bracketed_ipv6_flow_and_prints_it_back() {
        let s = "[2001:db8::1]:40000-[2001:db8::2]:9000";
        let f = exact(s);
        assert!(f.is_ipv6());
        assert_eq!(f.to_string(), s);
    }

    #[test]
    fn bare_remote_is_accepted() {
        assert_eq!(
            "198.51.100.2:9000".parse::<FlowSpec>(),
            Ok(FlowSpec::Remote("198.51.100.2:9000".parse().unwrap()))
        );
        assert_eq!(
            "[2001:db8::2]:9000".parse::<FlowSpec>(),
            Ok(FlowSpec::Remote("[2001:db8::2]:9000".parse().unwrap()))
        );
    }

    #[test]
    fn rejects_bad_flows_with_a_reason() {
        for (input, needle) in [
            ("", "empty"),
            ("198.18.0.2:0-198.51.100.2:9000", "port 0"),
            ("198.18.0.2:40000-198.51.100.2:65536", "out of range"),
            ("198.18.0.2:40000-198.51.100.2:99999999999", "out of range"),
            ("198.18.0.2:40000-198.51.100.2", "no port"),
            ("198.18.0.2:40000-[2001:db8::2]:9000", "mix IPv4 and IPv6"),
            ("2001:db8::1:40000-[2001:db8::2]:9000", "brackets"),
            ("[2001:db8::1:40000-[2001:db8::2]:9000", "without ']'"),
            ("[2001:db8::zz]:1-[2001:db8::2]:9000", "not an IPv6"),
            ("300.1.1.1:5-1.2.3.4:5", "not an IPv4"),
            ("1.2.3.4:-5-1.2.3.4:5", "not a port"),
            ("1.2.3.4:+5-1.2.3.4:5", "not a port"),
            ("1.2.3.4:5-1.2.3.4:5-1.2.3.4:5", "remote side"),
            ("[::1]x-[::1]:5", "expected ':PORT'"),
        ] {
            let err = input.parse::<FlowSpec>().expect_err(input);
            assert!(err.to_string().contains(needle), "{input}: {err}");
            assert!(!err.to_string().contains('\n'));
        }
    }

    #[test]
    fn filter_addresses_take_optional_ports() {
        assert_eq!(
            split_host_port("198.51.100.2"),
            Ok(("198.51.100.2".parse().unwrap(), None))
        );
        assert_eq!(
            split_host_port("[2001:db8::2]:80"),
            Ok(("2001:db8::2".parse().unwrap(), Some(80)))
        );
    }

    /// Found by the flow_parse fuzz target (input "08"): ports may carry leading zeros, and
    /// a parsed flow prints back without them, in a form that parses to the same flow.
    #[test]
    fn leading_zeros_in_ports_parse_and_print_canonically() {
        assert_eq!(parse_port("08"), Ok(8));
        assert_eq!(parse_port("0000000000000000000000065535"), Ok(65535));
        assert!(parse_port("000").is_err());
        let f = exact("[2001:db8::1]:040000-[2001:db8::2]:09000");
        assert_eq!(f.to_string(), "[2001:db8::1]:40000-[2001:db8::2]:9000");
        assert_eq!(exact(&f.to_string()), f);
    }
}
