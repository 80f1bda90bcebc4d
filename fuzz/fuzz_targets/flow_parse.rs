//! FLOW and filter-address parsing on arbitrary UTF-8: never panics, and whatever parses
//! prints back to text that parses to the same value.
#![no_main]

use std::str::FromStr;

use kaprobe::filter::AddrMatch;
use kaprobe::flow::{FlowSpec, parse_endpoint, parse_port, split_host_port};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    match FlowSpec::from_str(s) {
        Ok(spec) => {
            if let FlowSpec::Exact(flow, _) = spec {
                assert_eq!(flow.local.is_ipv6(), flow.remote.is_ipv6(), "{s:?}");
                assert_ne!(flow.local.port(), 0, "{s:?}");
                assert_ne!(flow.remote.port(), 0, "{s:?}");
            }
            if let FlowSpec::Remote(remote, _) = spec {
                assert_ne!(remote.port(), 0, "{s:?}");
            }
            let text = spec.to_string();
            assert_eq!(
                FlowSpec::from_str(&text),
                Ok(spec),
                "{s:?} printed as {text:?}"
            );
        }
        Err(e) => {
            // A clear message that names the input; one line when the input is one line.
            let msg = e.to_string();
            assert!(!msg.is_empty());
            if !s.contains(['\n', '\r']) {
                assert!(!msg.contains('\n'), "{msg:?}");
            }
        }
    }
    if let Ok(m) = AddrMatch::from_str(s) {
        let text = m.to_string();
        assert_eq!(
            AddrMatch::from_str(&text),
            Ok(m),
            "{s:?} printed as {text:?}"
        );
        if let Some(p) = m.port {
            assert_ne!(p, 0);
        }
    }
    if let Ok(a) = parse_endpoint(s) {
        assert_eq!(split_host_port(s), Ok((a.ip(), Some(a.port()))));
    }
    if let Ok(p) = parse_port(s) {
        // Plain decimal digits; leading zeros are accepted ("08" is port 8).
        assert_eq!(p.to_string(), s.trim_start_matches('0'), "{s:?}");
    }
});
