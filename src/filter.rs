//! Connection filters shared by `list`, `sweep` and `watch`: `--local A[:P]`, `--remote A[:P]`,
//! `--port P` (either side).

use std::net::{IpAddr, SocketAddr};

use clap::Args;

use crate::error::{Error, Result};
use crate::flow::{Flow, parse_port, split_host_port};
use crate::sys::diag::{Conn, Diag};

/// `IP` or `IP:PORT` (`[IPv6]` or `[IPv6]:PORT`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddrMatch {
    pub ip: IpAddr,
    pub port: Option<u16>,
}

impl AddrMatch {
    pub fn matches(&self, a: &SocketAddr) -> bool {
        a.ip() == self.ip && self.port.is_none_or(|p| p == a.port())
    }
}

impl std::str::FromStr for AddrMatch {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let (ip, port) = split_host_port(s)?;
        Ok(AddrMatch { ip, port })
    }
}

fn port_arg(s: &str) -> std::result::Result<u16, String> {
    parse_port(s)
}

#[derive(Args, Debug, Clone, Default, PartialEq, Eq)]
pub struct FilterArgs {
    /// Only connections whose local side is A (or A:P)
    #[arg(long, value_name = "A[:P]")]
    pub local: Option<AddrMatch>,
    /// Only connections whose remote side is A (or A:P)
    #[arg(long, value_name = "A[:P]")]
    pub remote: Option<AddrMatch>,
    /// Only connections with port P on either side
    #[arg(long, value_name = "P", value_parser = port_arg)]
    pub port: Option<u16>,
}

impl FilterArgs {
    pub fn matches(&self, f: &Flow) -> bool {
        self.local.is_none_or(|m| m.matches(&f.local))
            && self.remote.is_none_or(|m| m.matches(&f.remote))
            && self
                .port
                .is_none_or(|p| f.local.port() == p || f.remote.port() == p)
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
        let conns = self.established(diag)?;
        if conns.is_empty() {
            return Err(Error::NoConnection(
                "no established TCP connection matches".into(),
            ));
        }
        Ok(conns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(s: &str) -> Flow {
        match s.parse::<crate::flow::FlowSpec>().unwrap() {
            crate::flow::FlowSpec::Exact(f) => f,
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
}
