//! TCP sequence numbers: 32-bit values compared modulo 2^32 (RFC 9293 §3.4).

use std::fmt;
use std::ops::{Add, Sub};

#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SeqNumber(pub u32);

impl SeqNumber {
    /// Signed distance from `other` to `self`, wrapping.
    pub fn diff(self, other: SeqNumber) -> i32 {
        self.0.wrapping_sub(other.0) as i32
    }

    /// `self` comes strictly before `other` in sequence space.
    pub fn before(self, other: SeqNumber) -> bool {
        self.diff(other) < 0
    }

    /// `self` comes strictly after `other` in sequence space.
    pub fn after(self, other: SeqNumber) -> bool {
        self.diff(other) > 0
    }
}

impl Add<u32> for SeqNumber {
    type Output = SeqNumber;
    fn add(self, rhs: u32) -> SeqNumber {
        SeqNumber(self.0.wrapping_add(rhs))
    }
}

impl Sub<u32> for SeqNumber {
    type Output = SeqNumber;
    fn sub(self, rhs: u32) -> SeqNumber {
        SeqNumber(self.0.wrapping_sub(rhs))
    }
}

impl fmt::Debug for SeqNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for SeqNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minus_one_wraps_below_zero() {
        assert_eq!(SeqNumber(0) - 1, SeqNumber(u32::MAX));
        assert_eq!(SeqNumber(u32::MAX) + 1, SeqNumber(0));
    }

    #[test]
    fn comparisons_hold_across_wraparound() {
        let near_top = SeqNumber(u32::MAX - 10);
        let wrapped = near_top + 20;
        assert_eq!(wrapped, SeqNumber(9));
        assert!(near_top.before(wrapped));
        assert!(wrapped.after(near_top));
        assert_eq!(wrapped.diff(near_top), 20);
        assert_eq!(near_top.diff(wrapped), -20);
        assert!(!wrapped.before(wrapped));
    }

    #[test]
    fn half_space_is_the_horizon() {
        let a = SeqNumber(0);
        assert!(a.before(a + 0x7fff_ffff));
        assert!(!a.after(a + 0x7fff_ffff));
        assert!(
            (a + 0x8000_0001).before(a),
            "past half the space, order flips"
        );
    }
}
