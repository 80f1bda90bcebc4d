//! FLOW syntax: `LOCAL-REMOTE` with each side `IP:PORT` (IPv6 in brackets), or a bare `REMOTE`.
//!
//! Also accepted, as people paste them (README "Usage"):
//! - IPv4-mapped IPv6 (`[::ffff:198.18.0.2]:9000`, how `ss` prints a dual-stack socket's IPv4
//!   peer) is the IPv4 address it carries: on the wire it is IPv4 (RFC 4291 section 2.5.5.2).
//! - A zone on link-local IPv6 (RFC 4007 section 11): `[fe80::1%eth0]:40000`, or as `ss`
//!   prints it, `[fe80::1]%eth0:40000`; the zone is an interface name or index. Names are kept
//!   unresolved here: they mean something only inside the network namespace kaprobe enters
//!   (`--netns`), after the command line is parsed.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

/// One TCP connection seen from this host: its local and remote endpoints.
///
/// Written `LOCAL-REMOTE` (`198.18.0.2:40000-198.51.100.2:9000`, IPv6 in brackets), as it
/// prints, parses and (with serde) serialises:
///
/// ```
/// let flow: kaprobe::Flow = "198.18.0.2:40000-198.51.100.2:9000".parse()?;
/// assert_eq!(flow.remote, "198.51.100.2:9000".parse()?);
/// assert_eq!(flow.to_string(), "198.18.0.2:40000-198.51.100.2:9000");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Flow {
    /// This host's side.
    pub local: SocketAddr,
    /// The peer's side.
    pub remote: SocketAddr,
}

impl Flow {
    /// Whether the connection is IPv6 (IPv4-mapped addresses are IPv4).
    pub fn is_ipv6(&self) -> bool {
        self.local.is_ipv6()
    }
}

/// `LOCAL-REMOTE`, both sides given; IPv4-mapped IPv6 is the IPv4 address it carries. A
/// zone (`%eth0`) is refused here: it names an interface of one namespace.
impl FromStr for Flow {
    type Err = FlowParseError;

    fn from_str(s: &str) -> Result<Flow, FlowParseError> {
        match s.parse::<FlowSpec>()? {
            FlowSpec::Exact(flow, None) => Ok(flow),
            FlowSpec::Exact(_, Some(scope)) => Err(FlowParseError {
                input: s.to_string(),
                reason: format!("a flow without a zone was expected, not %{scope}"),
            }),
            FlowSpec::Remote(..) => Err(FlowParseError {
                input: s.to_string(),
                reason: "expected LOCAL-REMOTE, both sides".into(),
            }),
        }
    }
}

impl serde::Serialize for Flow {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Flow {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Flow, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Flow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.local, self.remote)
    }
}

/// How the connection's own packets are routed: its `SO_MARK` and the device it is bound to
/// (sock_diag `INET_DIAG_MARK` and `idiag_if`; 0 = none). Probes and injected SYNs carry the
/// same, so policy routing and VRFs send them where the connection's packets go. `uid` is the
/// socket's owner: `ip rule uidrange` policy routing applies to its packets, so the route
/// check asks with it (raw sockets cannot send as another uid; it does not pick one).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Route {
    pub mark: u32,
    pub ifindex: u32,
    pub uid: u32,
}

impl Route {
    /// Mark or device set: the probes need a socket configured like the connection's.
    pub fn is_set(&self) -> bool {
        self.mark != 0 || self.ifindex != 0
    }
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

    /// The name in JSON and in `list`'s `signed=` note: `tcp-md5`, `tcp-ao`.
    pub fn token(self) -> &'static str {
        match self {
            Signature::Md5 => "tcp-md5",
            Signature::Ao => "tcp-ao",
        }
    }
}

/// Longest interface name the kernel accepts (IFNAMSIZ less the terminating NUL).
pub const IFNAME_MAX: usize = 15;

/// An interface name as written on the command line, kept until it can be resolved.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct IfName {
    len: u8,
    bytes: [u8; IFNAME_MAX],
}

impl IfName {
    /// A name the kernel could have given a device: 1 to 15 bytes, no `/`, `:`, `%` or
    /// whitespace, not `.` or `..`.
    pub fn new(s: &str) -> Result<IfName, String> {
        let bad = s.is_empty()
            || s.len() > IFNAME_MAX
            || s == "."
            || s == ".."
            || s.chars()
                .any(|c| c == '/' || c == ':' || c == '%' || c.is_whitespace());
        if bad {
            return Err(format!("'{s}' is not an interface name"));
        }
        let mut bytes = [0; IFNAME_MAX];
        bytes[..s.len()].copy_from_slice(s.as_bytes());
        Ok(IfName {
            len: s.len() as u8,
            bytes,
        })
    }

    pub fn as_str(&self) -> &str {
        // Built from a &str in `new`, cut at a char boundary: always valid UTF-8.
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or("")
    }
}

impl fmt::Debug for IfName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

/// The zone of a link-local IPv6 address (RFC 4007): the interface it is valid on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// `%2`: an interface index.
    Index(u32),
    /// `%eth0`: resolved to an index inside the network namespace kaprobe runs in.
    Name(IfName),
}

impl Scope {
    fn parse(s: &str) -> Result<Scope, String> {
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            return match s.parse::<u32>() {
                Ok(0) => Err("interface index 0 in a %SCOPE; indexes start at 1".into()),
                Ok(n) => Ok(Scope::Index(n)),
                Err(_) => Err(format!("interface index {s} is out of range")),
            };
        }
        IfName::new(s).map(Scope::Name)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Index(n) => write!(f, "{n}"),
            Scope::Name(n) => f.write_str(n.as_str()),
        }
    }
}

/// fe80::/10, where a zone is needed to know which link is meant.
pub fn is_link_local(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V6(v6) if v6.is_unicast_link_local())
}

/// `addr` with its zone: a link-local IPv6 address without a scope id gets `ifindex` (the
/// device the socket is bound to, which the kernel sets for a link-local connection), so
/// that it prints as `[fe80::1%2]:22` and can be used again. Other addresses are unchanged.
pub fn with_zone(addr: SocketAddr, ifindex: u32) -> SocketAddr {
    match addr {
        SocketAddr::V6(mut a)
            if ifindex != 0 && a.scope_id() == 0 && a.ip().is_unicast_link_local() =>
        {
            a.set_scope_id(ifindex);
            SocketAddr::V6(a)
        }
        other => other,
    }
}

/// What the user named on the command line. The scope, when given, says which interface a
/// link-local flow is on (unresolved: see the module comment).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowSpec {
    Exact(Flow, Option<Scope>),
    /// Only the remote side: resolved when exactly one established connection matches.
    Remote(SocketAddr, Option<Scope>),
}

impl FlowSpec {
    pub fn scope(&self) -> Option<Scope> {
        match *self {
            FlowSpec::Exact(_, s) | FlowSpec::Remote(_, s) => s,
        }
    }
}

/// Prints a spec back in a form that parses to the same spec: the zone inside the brackets
/// of every link-local side.
impl fmt::Display for FlowSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let side =
            |f: &mut fmt::Formatter<'_>, a: SocketAddr, scope: Option<Scope>| match (a.ip(), scope)
            {
                (IpAddr::V6(ip), Some(s)) if is_link_local(a.ip()) => {
                    write!(f, "[{ip}%{s}]:{}", a.port())
                }
                _ => write!(f, "{a}"),
            };
        match *self {
            FlowSpec::Exact(flow, scope) => {
                side(f, flow.local, scope)?;
                f.write_str("-")?;
                side(f, flow.remote, scope)
            }
            FlowSpec::Remote(remote, scope) => side(f, remote, scope),
        }
    }
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
        match split_sides(s) {
            None => {
                let (remote, scope) = flow_side(s).map_err(|r| fail(&r))?;
                Ok(FlowSpec::Remote(remote, scope))
            }
            Some((l, r)) => {
                let (local, ls) = flow_side(l).map_err(|e| fail(&format!("local side: {e}")))?;
                let (remote, rs) = flow_side(r).map_err(|e| fail(&format!("remote side: {e}")))?;
                if local.is_ipv6() != remote.is_ipv6() {
                    return Err(fail("local and remote sides mix IPv4 and IPv6"));
                }
                let scope = match (ls, rs) {
                    (Some(a), Some(b)) if a != b => {
                        return Err(fail(&format!(
                            "the sides name different interfaces (%{a} and %{b}); a \
                             connection is on one link"
                        )));
                    }
                    (a, b) => a.or(b),
                };
                Ok(FlowSpec::Exact(Flow { local, remote }, scope))
            }
        }
    }
}

/// Splits `LOCAL-REMOTE` at its dash: the first `-` outside a zone (addresses and ports
/// hold none, but interface names may: `[fe80::1%veth-a]:1-[fe80::2%veth-a]:2`).
fn split_sides(s: &str) -> Option<(&str, &str)> {
    let mut zone = false;
    for (i, c) in s.char_indices() {
        match c {
            '%' => zone = true,
            ']' | '/' | ':' => zone = false,
            '-' if !zone => return Some((&s[..i], &s[i + 1..])),
            _ => {}
        }
    }
    None
}

/// One side of a FLOW: `IP:PORT`, a zone allowed on link-local IPv6.
fn flow_side(s: &str) -> Result<(SocketAddr, Option<Scope>), String> {
    let p = parse_parts(s)?;
    if p.prefix.is_some() {
        return Err(format!(
            "'{s}': a FLOW names one address; /LEN prefixes are for --local and --remote"
        ));
    }
    let Some(port) = p.port else {
        return Err(format!("'{s}' has no port; expected IP:PORT"));
    };
    Ok((SocketAddr::new(p.ip, port), p.scope))
}

/// `IP:PORT` (`[IPv6]:PORT`), port 1..=65535; IPv4-mapped IPv6 becomes IPv4.
pub fn parse_endpoint(s: &str) -> Result<SocketAddr, String> {
    let (ip, port) = split_host_port(s)?;
    let port = match port {
        Some(p) => p,
        None => return Err(format!("'{s}' has no port; expected IP:PORT")),
    };
    Ok(SocketAddr::new(ip, port))
}

/// `IP`, `IP:PORT`, `[IPv6]`, `[IPv6]:PORT`: for filters, where the port is optional.
/// IPv4-mapped IPv6 becomes IPv4; no zone, no prefix.
pub fn split_host_port(s: &str) -> Result<(IpAddr, Option<u16>), String> {
    let p = parse_parts(s)?;
    if let Some(scope) = p.scope {
        return Err(format!(
            "'{s}': a %{scope} zone is only for a FLOW; here give the address alone"
        ));
    }
    if p.prefix.is_some() {
        return Err(format!("'{s}': expected one address, not a /LEN prefix"));
    }
    Ok((p.ip, p.port))
}

/// An address as written, with everything that may come with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddrParts {
    /// IPv4-mapped IPv6 already turned into IPv4.
    pub ip: IpAddr,
    /// `/LEN`, counted on `ip` (a mapped prefix of /96 or more counts on the IPv4 address).
    pub prefix: Option<u8>,
    /// `%ZONE`, only ever on link-local IPv6.
    pub scope: Option<Scope>,
    pub port: Option<u16>,
}

/// Parses `A[%Z][/LEN][:P]` for IPv4 and, for IPv6, `[A[%Z][/LEN]][%Z][/LEN][:P]` (the zone
/// and the prefix inside or after the brackets, as `ip` and `ss` print them).
pub fn parse_parts(s: &str) -> Result<AddrParts, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty address".into());
    }
    if let Some(rest) = s.strip_prefix('[') {
        parse_bracketed(s, rest)
    } else if s.matches(':').count() > 1 {
        Err(format!(
            "'{s}': write IPv6 addresses in brackets, e.g. [2001:db8::1]:9000"
        ))
    } else {
        parse_v4(s)
    }
}

/// `A[%Z][/LEN][:P]` with an IPv4 address.
fn parse_v4(s: &str) -> Result<AddrParts, String> {
    // `after` is `:PORT` from the first ':' on, or empty, as `finish` takes it.
    let (host, after) = s.split_at(s.find(':').unwrap_or(s.len()));
    let (host, prefix) = split_prefix(host)?;
    let (host, scope) = split_scope(host)?;
    let ip = host
        .parse::<Ipv4Addr>()
        .map_err(|_| format!("'{host}' is not an IPv4 address"))?;
    finish(s, IpAddr::V4(ip), prefix, scope, after)
}

/// `[A[%Z][/LEN]][%Z][/LEN][:P]` with an IPv6 address; `rest` is `s` after its `[`.
fn parse_bracketed(s: &str, rest: &str) -> Result<AddrParts, String> {
    let (inner, after) = rest
        .split_once(']')
        .ok_or_else(|| format!("'{s}' has '[' without ']'"))?;
    let (inner, inner_prefix) = split_prefix(inner)?;
    let (host, inner_scope) = split_scope(inner)?;
    let ip: Ipv6Addr = host
        .parse()
        .map_err(|_| format!("'{host}' is not an IPv6 address"))?;
    // After the brackets: [%ZONE][/LEN][:PORT].
    let (zone, after) = match after.strip_prefix('%') {
        Some(z) => {
            let end = z.find(['/', ':']).unwrap_or(z.len());
            (Some(Scope::parse(&z[..end])?), &z[end..])
        }
        None => (None, after),
    };
    let (len, after) = match after.strip_prefix('/') {
        Some(l) => {
            let end = l.find(':').unwrap_or(l.len());
            (Some(parse_len(&l[..end])?), &l[end..])
        }
        None => (None, after),
    };
    let scope = match (inner_scope, zone) {
        (Some(_), Some(_)) => return Err(format!("'{s}' gives a %ZONE twice")),
        (a, b) => a.or(b),
    };
    let prefix = match (inner_prefix, len) {
        (Some(_), Some(_)) => return Err(format!("'{s}' gives a /LEN twice")),
        (a, b) => a.or(b),
    };
    if !after.is_empty() && !after.starts_with(':') {
        return Err(format!("'{s}': expected ':PORT' after ']'"));
    }
    finish(s, IpAddr::V6(ip), prefix, scope, after)
}

/// Checks the parts against each other and normalises IPv4-mapped addresses.
fn finish(
    s: &str,
    ip: IpAddr,
    prefix: Option<u8>,
    scope: Option<Scope>,
    after: &str,
) -> Result<AddrParts, String> {
    let port = match after.strip_prefix(':') {
        Some(p) => Some(parse_port(p)?),
        None if after.is_empty() => None,
        None => return Err(format!("'{s}': expected ':PORT'")),
    };
    let max = if ip.is_ipv6() { 128 } else { 32 };
    if let Some(len) = prefix
        && len > max
    {
        return Err(format!("'{s}': /{len} is longer than the address (/{max})"));
    }
    if let Some(scope) = scope
        && !is_link_local(ip)
    {
        return Err(format!(
            "'{s}': a %ZONE is only for link-local IPv6 (fe80::/10); leave out '%{scope}' \
             (sockets bound to a device, which ss prints as ADDR%DEV, are found without it)"
        ));
    }
    // RFC 4291 2.5.5.2: ::ffff:a.b.c.d is the IPv4 address a.b.c.d.
    let (ip, prefix) = match ip {
        IpAddr::V6(v6) => match (v6.to_ipv4_mapped(), prefix) {
            (Some(v4), None) => (IpAddr::V4(v4), None),
            (Some(v4), Some(len)) if len >= 96 => (IpAddr::V4(v4), Some(len - 96)),
            _ => (ip, prefix),
        },
        v4 => (v4, prefix),
    };
    Ok(AddrParts {
        ip,
        prefix,
        scope,
        port,
    })
}

/// `ip` with the bits past the first `len` cleared (a `len` beyond the address keeps them all).
pub fn masked(ip: IpAddr, len: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(len.min(32)))
                .unwrap_or(0);
            IpAddr::V4((u32::from(a) & mask).into())
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(len.min(128)))
                .unwrap_or(0);
            IpAddr::V6((u128::from(a) & mask).into())
        }
    }
}

fn split_prefix(s: &str) -> Result<(&str, Option<u8>), String> {
    match s.split_once('/') {
        Some((a, l)) => Ok((a, Some(parse_len(l)?))),
        None => Ok((s, None)),
    }
}

fn split_scope(s: &str) -> Result<(&str, Option<Scope>), String> {
    match s.split_once('%') {
        Some((a, z)) => Ok((a, Some(Scope::parse(z)?))),
        None => Ok((s, None)),
    }
}

fn parse_len(l: &str) -> Result<u8, String> {
    if l.is_empty() || l.len() > 3 || !l.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("'/{l}' is not a prefix length"));
    }
    l.parse::<u8>()
        .map_err(|_| format!("'/{l}' is not a prefix length"))
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

/// A local reason a probe could not leave (README "Verdicts and timing"): `unreachable` with this cause.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Cause {
    /// No route to the peer (ENETUNREACH, EHOSTUNREACH from an `unreachable` route).
    NoRoute,
    /// A `prohibit` route (EACCES).
    Prohibited,
    /// A local netfilter rule dropped the probe (EPERM).
    LocalFirewall,
    /// The egress interface is down or has no carrier.
    LinkDown,
}

impl Cause {
    /// The name JSON uses: `no-route`, `prohibited`, `local-firewall`, `link-down`.
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::NoRoute => "no-route",
            Cause::Prohibited => "prohibited",
            Cause::LocalFirewall => "local-firewall",
            Cause::LinkDown => "link-down",
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_link_local_address_gets_its_zone() {
        let ll: std::net::SocketAddr = "[fe80::1]:22".parse().unwrap();
        assert_eq!(super::with_zone(ll, 3).to_string(), "[fe80::1%3]:22");
        assert_eq!(super::with_zone(ll, 0).to_string(), "[fe80::1]:22");
        let zoned: std::net::SocketAddr = "[fe80::1%2]:22".parse().unwrap();
        assert_eq!(super::with_zone(zoned, 3), zoned);
        for other in ["[2001:db8::1]:22", "198.18.0.1:22"] {
            let a: std::net::SocketAddr = other.parse().unwrap();
            assert_eq!(super::with_zone(a, 3), a);
        }
    }

    use super::*;

    fn exact(s: &str) -> Flow {
        match s.parse::<FlowSpec>() {
            Ok(FlowSpec::Exact(f, None)) => f,
            other => panic!("{s}: {other:?}"),
        }
    }

    /// Each input is refused, with one line that contains its needle.
    fn refused_with_reasons(cases: &[(&str, &str)]) {
        for &(input, needle) in cases {
            let err = input.parse::<FlowSpec>().expect_err(input);
            assert!(err.to_string().contains(needle), "{input}: {err}");
            assert!(!err.to_string().contains('\n'));
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
            Ok(FlowSpec::Remote("198.51.100.2:9000".parse().unwrap(), None))
        );
        assert_eq!(
            "[2001:db8::2]:9000".parse::<FlowSpec>(),
            Ok(FlowSpec::Remote(
                "[2001:db8::2]:9000".parse().unwrap(),
                None
            ))
        );
    }

    #[test]
    fn rejects_bad_flows_with_a_reason() {
        refused_with_reasons(&[
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
        ]);
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

    fn scoped(s: &str) -> (Flow, Option<Scope>) {
        match s.parse::<FlowSpec>() {
            Ok(FlowSpec::Exact(f, scope)) => (f, scope),
            other => panic!("{s}: {other:?}"),
        }
    }

    fn name(s: &str) -> Scope {
        Scope::Name(IfName::new(s).unwrap())
    }

    #[test]
    fn link_local_flows_take_a_zone_inside_or_after_the_brackets() {
        let want = Flow {
            local: "[fe80::1]:40000".parse().unwrap(),
            remote: "[fe80::2]:9000".parse().unwrap(),
        };
        for s in [
            "[fe80::1%eth0]:40000-[fe80::2%eth0]:9000",
            "[fe80::1]%eth0:40000-[fe80::2]%eth0:9000",
            "[fe80::1%eth0]:40000-[fe80::2]:9000",
            "[fe80::1]:40000-[fe80::2%eth0]:9000",
        ] {
            assert_eq!(scoped(s), (want, Some(name("eth0"))), "{s}");
        }
        assert_eq!(
            scoped("[fe80::1%7]:40000-[fe80::2%7]:9000"),
            (want, Some(Scope::Index(7)))
        );
        // Interface names may hold dashes; the FLOW's own dash is still found.
        let (f, s) = scoped("[fe80::1%veth-a1]:40000-[fe80::2]%veth-a1:9000");
        assert_eq!((f, s), (want, Some(name("veth-a1"))));
        // No zone: still a valid flow (the lookup finds the socket on whatever link).
        assert_eq!(scoped("[fe80::1]:40000-[fe80::2]:9000"), (want, None));
        assert_eq!(
            "[fe80::2%eth0]:9000".parse::<FlowSpec>(),
            Ok(FlowSpec::Remote(
                "[fe80::2]:9000".parse().unwrap(),
                Some(name("eth0"))
            ))
        );
    }

    #[test]
    fn zoned_flows_print_back_to_the_same_spec() {
        for s in [
            "[fe80::1%eth0]:40000-[fe80::2%eth0]:9000",
            "[fe80::1%3]:40000-[fe80::2%3]:9000",
            "[fe80::2%veth-a1]:9000",
            "198.18.0.2:40000-198.51.100.2:9000",
        ] {
            let spec: FlowSpec = s.parse().unwrap();
            assert_eq!(spec.to_string(), s);
            assert_eq!(spec.to_string().parse::<FlowSpec>(), Ok(spec));
        }
        let spec: FlowSpec = "[fe80::1]%eth0:40000-[fe80::2]:9000".parse().unwrap();
        assert_eq!(spec.to_string(), "[fe80::1%eth0]:40000-[fe80::2%eth0]:9000");
    }

    #[test]
    fn bad_zones_are_refused_with_a_reason() {
        refused_with_reasons(&[
            // A zone on an address that is not link-local.
            (
                "[2001:db8::1%eth0]:1-[2001:db8::2]:9000",
                "only for link-local",
            ),
            ("198.18.0.1%eth0:40000-198.18.0.2:9000", "leave out '%eth0'"),
            ("[::ffff:198.18.0.2%eth0]:9000", "only for link-local"),
            (
                "[fe80::1%eth0]:1-[fe80::2%eth1]:9000",
                "different interfaces",
            ),
            ("[fe80::1%eth0]%eth0:1-[fe80::2]:9000", "twice"),
            ("[fe80::1%]:1-[fe80::2]:9000", "not an interface name"),
            ("[fe80::1%0]:1-[fe80::2]:9000", "index 0"),
            ("[fe80::1%99999999999]:1-[fe80::2]:9000", "out of range"),
            (
                "[fe80::1%abcdefghijklmnop]:1-[fe80::2]:9000",
                "not an interface name",
            ),
            ("[fe80::1%a b]:1-[fe80::2]:9000", "not an interface name"),
            ("[fe80::1%..]:1-[fe80::2]:9000", "not an interface name"),
            ("[2001:db8::]/32:9000", "prefixes are for --local"),
        ]);
    }

    #[test]
    fn ipv4_mapped_addresses_are_the_ipv4_address() {
        // How ss prints a dual-stack [::] server's connection.
        assert_eq!(
            exact("[::ffff:198.18.0.2]:9000-[::ffff:198.18.0.1]:40001"),
            exact("198.18.0.2:9000-198.18.0.1:40001")
        );
        // Mixed forms are one family once normalised.
        assert_eq!(
            exact("[::ffff:198.18.0.2]:9000-198.18.0.1:40001"),
            exact("198.18.0.2:9000-198.18.0.1:40001")
        );
        assert_eq!(
            "[::ffff:c612:2]:9000".parse::<FlowSpec>(),
            Ok(FlowSpec::Remote("198.18.0.2:9000".parse().unwrap(), None))
        );
        assert_eq!(
            split_host_port("[::ffff:198.51.100.2]"),
            Ok(("198.51.100.2".parse().unwrap(), None))
        );
        assert_eq!(
            parse_endpoint("[::ffff:198.51.100.2]:80"),
            Ok("198.51.100.2:80".parse().unwrap())
        );
        // Not mapped: IPv4-compatible (deprecated) and NAT64 addresses stay IPv6.
        assert!(exact("[::198.18.0.2]:1-[::198.18.0.1]:2").is_ipv6());
        assert!(exact("[64:ff9b::c612:2]:1-[64:ff9b::c612:1]:2").is_ipv6());
    }

    #[test]
    fn parts_carry_prefixes_zones_and_ports() {
        let p = parse_parts("198.51.100.0/24:9000").unwrap();
        assert_eq!((p.prefix, p.port), (Some(24), Some(9000)));
        for s in ["[2001:db8::]/32:9000", "[2001:db8::/32]:9000"] {
            let p = parse_parts(s).unwrap();
            assert_eq!(p.ip, "2001:db8::".parse::<IpAddr>().unwrap(), "{s}");
            assert_eq!((p.prefix, p.port), (Some(32), Some(9000)), "{s}");
        }
        let p = parse_parts("[::ffff:198.51.100.0]/120").unwrap();
        assert_eq!(p.ip, "198.51.100.0".parse::<IpAddr>().unwrap());
        assert_eq!(p.prefix, Some(24));
        assert!(parse_parts("198.51.100.0/33").is_err());
        assert!(parse_parts("[2001:db8::]/129").is_err());
        assert!(parse_parts("198.51.100.0/").is_err());
        assert!(parse_parts("198.51.100.0/-1").is_err());
        assert!(split_host_port("198.51.100.0/24").is_err());
        assert!(split_host_port("[fe80::1%eth0]").is_err());
    }
}
