//! The packet decoder on arbitrary bytes: never panics, and every field it returns is one
//! the bytes actually hold — re-emitting a decoded segment and decoding it again gives the
//! same fields.
#![no_main]

use kaprobe::wire::{self, Packet, testkit};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    check(data);
    check(&testkit::repaired(data));
});

fn check(data: &[u8]) {
    match wire::decode(data) {
        Ok(Packet::Tcp(seg)) => {
            assert_eq!(seg.src.is_ipv6(), seg.dst.is_ipv6());
            let header = if seg.src.is_ipv6() { 40 } else { 20 } + 20;
            assert!(
                seg.payload_len + header <= data.len(),
                "payload beyond the bytes"
            );
            // The decoded segment, data included, emitted again: only options other than
            // the timestamps are lost.
            let mut bytes = vec![0; seg.buffer_len()];
            seg.emit(&mut bytes);
            let again = match wire::decode(&bytes) {
                Ok(Packet::Tcp(s)) => s,
                other => panic!("re-emitted segment does not decode: {other:?}"),
            };
            assert_eq!((again.src, again.dst), (seg.src, seg.dst));
            assert_eq!((again.seq, again.ack), (seg.seq, seg.ack));
            assert_eq!(
                (again.flags, again.window, again.ts),
                (seg.flags, seg.window, seg.ts)
            );
            assert_eq!(again.payload_len, seg.payload_len);
            assert_eq!(again.ip.hop_limit, seg.ip.hop_limit);
            assert_eq!(again.ip.tos, seg.ip.tos);
            if seg.src.is_ipv6() {
                assert_eq!(again.ip.flow_label, seg.ip.flow_label);
            } else {
                assert_eq!(again.ip.dont_fragment, seg.ip.dont_fragment);
            }
        }
        Ok(Packet::Icmp(err)) => {
            assert_eq!(err.from.is_ipv6(), err.to.is_ipv6());
            assert_eq!(err.quoted_src.is_ipv6(), err.from.is_ipv6());
            assert_eq!(err.quoted_dst.is_ipv6(), err.from.is_ipv6());
            assert!(!err.name().is_empty());
            // ICMPv4 errors are types 3 and 11, ICMPv6 errors 1 and 3.
            let types: &[u8] = if err.is_v6() { &[1, 3] } else { &[3, 11] };
            assert!(types.contains(&err.icmp_type), "{err:?}");
        }
        Err(_) => {}
    }
}
