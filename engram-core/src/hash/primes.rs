//! Table sizes: deterministic primality for `u64` and the reference's chain of distinct primes.

use alloc::collections::BTreeSet;

use crate::error::{Error, Result};

fn mul_mod(a: u64, b: u64, m: u64) -> u64 {
    ((u128::from(a) * u128::from(b)) % u128::from(m)) as u64
}

fn pow_mod(mut base: u64, mut exp: u64, m: u64) -> u64 {
    let mut acc = 1 % m;
    base %= m;
    while exp > 0 {
        if exp & 1 == 1 {
            acc = mul_mod(acc, base, m);
        }
        base = mul_mod(base, base, m);
        exp >>= 1;
    }
    acc
}

/// Deterministic primality test for every `u64`.
///
/// Miller-Rabin with the first twelve primes as bases, which has no strong pseudoprime below
/// 3.3 * 10^24 (Sorenson and Webster, 2015), so the answer is exact on the whole `u64` range.
pub fn is_prime(n: u64) -> bool {
    const BASES: [u64; 12] = [2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37];
    if n < 2 {
        return false;
    }
    for p in BASES {
        if n % p == 0 {
            return n == p;
        }
    }
    let s = (n - 1).trailing_zeros();
    let d = (n - 1) >> s;
    'bases: for a in BASES {
        let mut x = pow_mod(a, d, n);
        if x == 1 || x == n - 1 {
            continue;
        }
        for _ in 1..s {
            x = mul_mod(x, x, n);
            if x == n - 1 {
                continue 'bases;
            }
        }
        return false;
    }
    true
}

/// The reference's `find_next_prime(start, seen)`: the smallest prime above `start` that `seen`
/// does not hold. Fails only if the search would leave `u64`.
pub fn next_unused_prime(start: u64, seen: &BTreeSet<u64>) -> Result<u64> {
    let mut candidate = start;
    loop {
        candidate = candidate.checked_add(1).ok_or(Error::Overflow {
            what: "next prime table size",
        })?;
        if is_prime(candidate) && !seen.contains(&candidate) {
            return Ok(candidate);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Trial division, the obviously-correct oracle for small n.
    fn is_prime_slow(n: u64) -> bool {
        n >= 2 && (2..).take_while(|d| d * d <= n).all(|d| n % d != 0)
    }

    #[test]
    fn agrees_with_trial_division_below_100k() {
        for n in 0..100_000 {
            assert_eq!(is_prime(n), is_prime_slow(n), "n = {n}");
        }
    }

    #[test]
    fn known_large_primes_and_strong_pseudoprimes() {
        // Largest prime below 2^64, and 2^61 - 1 (a Mersenne prime).
        assert!(is_prime(18_446_744_073_709_551_557));
        assert!(is_prime((1 << 61) - 1));
        assert!(!is_prime(u64::MAX));
        // Strong pseudoprimes to several small bases (OEIS A014233 entries).
        for n in [
            2_047u64,
            1_373_653,
            25_326_001,
            3_215_031_751,
            2_152_302_898_747,
            3_474_749_660_383,
            341_550_071_728_321,
            3_825_123_056_546_413_051,
        ] {
            assert!(!is_prime(n), "{n} is composite");
        }
        // Carmichael numbers.
        for n in [561u64, 1105, 1729, 2465, 2821, 6601] {
            assert!(!is_prime(n));
        }
    }

    #[test]
    fn next_unused_prime_skips_taken_ones_and_reports_overflow() {
        let mut seen = BTreeSet::new();
        assert_eq!(next_unused_prime(9, &seen).unwrap(), 11);
        seen.insert(11);
        assert_eq!(next_unused_prime(9, &seen).unwrap(), 13);
        assert_eq!(next_unused_prime(10, &seen).unwrap(), 13);
        assert!(matches!(
            next_unused_prime(18_446_744_073_709_551_557, &seen),
            Err(Error::Overflow { .. })
        ));
    }
}
