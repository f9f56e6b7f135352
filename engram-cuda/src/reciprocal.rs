//! Division-free `x mod d` for 64-bit `x` and 32-bit `d`, as the hash kernels do it: the host
//! computes each table size's [`Reciprocal`] once; the kernel multiplies, shifts and subtracts.
//!
//! With `s = ceil(log2 d)` and `m = ceil(2^(64+s) / d)` (a 65-bit number, `2^64 + magic`),
//! `floor(x m / 2^(64+s)) = floor(x / d)` for every `x < 2^64`: the error of `m`,
//! `m d - 2^(64+s)`, is below `d <= 2^s`, so `x` times it stays below `2^(64+s)` (the classic
//! round-up method of Granlund and Montgomery, "Division by invariant integers using
//! multiplication", 1994). The kernel forms `floor(x m / 2^64) = x + mulhi(x, magic)` without
//! overflowing 64 bits as `t + (x - t) / 2`, then shifts by `s - 1`.

/// The constants of `x mod d` for one divisor `d >= 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reciprocal {
    /// `ceil(2^(64+s) / d) - 2^64` (0 for powers of two).
    pub magic: u64,
    /// `s = ceil(log2 d)`; 0 means `d = 1` (every remainder is 0).
    pub shift: u32,
}

impl Reciprocal {
    /// The constants for `d`; `None` for `d = 0`.
    pub fn new(d: u32) -> Option<Self> {
        if d == 0 {
            return None;
        }
        let shift = 32 - (d - 1).leading_zeros(); // ceil(log2 d); 0 for d = 1
        if shift == 0 {
            return Some(Reciprocal { magic: 0, shift });
        }
        // ceil(2^(64+s) / d) - 2^64, computed in 128 bits (64 + s <= 96).
        let numerator = 1u128 << (64 + shift);
        let m = numerator.div_ceil(u128::from(d));
        Some(Reciprocal {
            magic: (m - (1u128 << 64)) as u64,
            shift,
        })
    }

    /// `x mod d` the way the kernels compute it (the host twin of `mod_reciprocal` in
    /// `kernels/fused.cu`).
    pub fn rem(self, x: u64, d: u32) -> u32 {
        if self.shift == 0 {
            return 0;
        }
        let t = ((u128::from(x) * u128::from(self.magic)) >> 64) as u64;
        let q = (t + ((x - t) >> 1)) >> (self.shift - 1);
        (x - q * u64::from(d)) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Divisors at every edge the configuration allows: 1, powers of two and their neighbours,
    /// primes near the demo's table sizes, and the largest 32-bit values.
    fn divisors() -> Vec<u32> {
        let mut d = vec![
            1,
            2,
            3,
            5,
            7,
            646_397,
            646_403,
            4_294_967_291,
            u32::MAX,
            u32::MAX - 1,
        ];
        for s in 1..32 {
            d.extend([(1u32 << s) - 1, 1 << s, (1 << s) + 1]);
        }
        d
    }

    /// Dividends at the edges: small values, multiples of d and their neighbours, the top of the
    /// 64-bit range, and a deterministic scatter in between.
    fn dividends(d: u32) -> Vec<u64> {
        let d = u64::from(d);
        let mut x = vec![
            0,
            1,
            2,
            d - 1,
            d,
            d + 1,
            2 * d - 1,
            2 * d,
            u64::MAX,
            u64::MAX - 1,
        ];
        x.extend([
            u64::MAX / d * d,
            u64::MAX / d * d - 1,
            (u64::MAX / d - 1) * d + 1,
        ]);
        x.extend([1 << 63, (1 << 63) - 1, 1 << 32, (1 << 32) - 1]);
        let mut s = 0x9e37_79b9_7f4a_7c15u64 ^ d;
        for _ in 0..2000 {
            // splitmix64
            s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            x.push(z ^ (z >> 31));
        }
        x
    }

    #[test]
    fn the_reciprocal_remainder_equals_the_division_at_every_edge() {
        for d in divisors() {
            let r = Reciprocal::new(d).expect("d >= 1");
            for x in dividends(d) {
                assert_eq!(r.rem(x, d), (x % u64::from(d)) as u32, "{x} mod {d}");
            }
        }
    }

    #[test]
    fn constants_for_known_divisors() {
        assert_eq!(Reciprocal::new(0), None);
        assert_eq!(Reciprocal::new(1), Some(Reciprocal { magic: 0, shift: 0 }));
        // A power of two needs no magic: the quotient is a shift.
        assert_eq!(
            Reciprocal::new(1 << 20),
            Some(Reciprocal {
                magic: 0,
                shift: 20
            })
        );
        // 2^32 - 1: ceil(2^96 / (2^32 - 1)) = 2^64 + 2^32 + 2.
        assert_eq!(
            Reciprocal::new(u32::MAX),
            Some(Reciprocal {
                magic: (1 << 32) + 2,
                shift: 32
            })
        );
    }
}
