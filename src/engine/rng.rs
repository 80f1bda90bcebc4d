//! The random numbers of injected SYNs and out-of-window probes.

/// xorshift64*'s output multiplier: it mixes the state's weak low bits into the high half.
const XORSHIFT_STAR_MULTIPLIER: u64 = 0x2545_f491_4f6c_dd1d;

/// xorshift64*: enough to make sequence numbers and nonces unguessable to a blind forger when
/// seeded from the OS; deterministic in tests.
pub(super) struct Rng(u64);

impl Rng {
    pub(super) fn new(seed: u64) -> Rng {
        // A zero state would stay zero forever: any odd seed is a valid one.
        Rng(seed | 1)
    }

    pub(super) fn next_u32(&mut self) -> u32 {
        // The generator's shift triple (12, 25, 27), then the multiplied state's high half,
        // its best-mixed bits.
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        (x.wrapping_mul(XORSHIFT_STAR_MULTIPLIER) >> 32) as u32
    }
}
