//! numpy's default random generator, reproduced bit for bit in plain integer code.
//!
//! The reference draws each layer's hash multipliers with
//! `numpy.random.default_rng(seed).integers(0, high, size=n, dtype=np.int64)`. That call chains
//! three algorithms, each reproduced here:
//! - [`SeedSequence`]: numpy's entropy pool (`numpy/random/bit_generator.pyx`), which turns an
//!   arbitrary non-negative integer into well-mixed 32-bit words;
//! - [`Pcg64`]: the PCG XSL-RR 128/64 generator numpy uses by default (`pcg64.h`), seeded from four
//!   64-bit words of the pool;
//! - [`Pcg64::integers_i64`]: `random_bounded_uint64_fill` from `distributions.c` in its default
//!   (Lemire, unmasked) mode, including the 32-bit path taken when the range fits 32 bits.

use alloc::vec::Vec;

const INIT_A: u32 = 0x43b0_d7e5;
const MULT_A: u32 = 0x931e_8875;
const INIT_B: u32 = 0x8b51_f9dd;
const MULT_B: u32 = 0x58f3_8ded;
const MIX_MULT_L: u32 = 0xca01_f9dd;
const MIX_MULT_R: u32 = 0x4973_f715;
const XSHIFT: u32 = 16;
const POOL_SIZE: usize = 4;

/// numpy's `SeedSequence` for an integer entropy and no spawn key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedSequence {
    pool: [u32; POOL_SIZE],
}

/// The pool's running hash: each call advances the shared constant.
fn hashmix(value: u32, hash_const: &mut u32) -> u32 {
    let mut v = value ^ *hash_const;
    *hash_const = hash_const.wrapping_mul(MULT_A);
    v = v.wrapping_mul(*hash_const);
    v ^ (v >> XSHIFT)
}

fn mix(x: u32, y: u32) -> u32 {
    let r = MIX_MULT_L
        .wrapping_mul(x)
        .wrapping_sub(MIX_MULT_R.wrapping_mul(y));
    r ^ (r >> XSHIFT)
}

impl SeedSequence {
    /// The sequence numpy builds for `SeedSequence(entropy)` (and so for `default_rng(entropy)`).
    pub fn new(entropy: u128) -> Self {
        // numpy splits a Python int into little-endian 32-bit words; zero is one word.
        let mut words = Vec::new();
        let mut n = entropy;
        if n == 0 {
            words.push(0);
        }
        while n > 0 {
            words.push(n as u32);
            n >>= 32;
        }
        let mut pool = [0u32; POOL_SIZE];
        let mut hash_const = INIT_A;
        for (i, slot) in pool.iter_mut().enumerate() {
            *slot = hashmix(words.get(i).copied().unwrap_or(0), &mut hash_const);
        }
        for src in 0..POOL_SIZE {
            for dst in 0..POOL_SIZE {
                if src != dst {
                    let h = hashmix(pool[src], &mut hash_const);
                    pool[dst] = mix(pool[dst], h);
                }
            }
        }
        for &word in words.iter().skip(POOL_SIZE) {
            for slot in pool.iter_mut() {
                let h = hashmix(word, &mut hash_const);
                *slot = mix(*slot, h);
            }
        }
        SeedSequence { pool }
    }

    /// `generate_state(N, np.uint32)`.
    pub fn generate_state_u32<const N: usize>(&self) -> [u32; N] {
        let mut hash_const = INIT_B;
        let mut out = [0u32; N];
        for (i, slot) in out.iter_mut().enumerate() {
            let mut v = self.pool[i % POOL_SIZE] ^ hash_const;
            hash_const = hash_const.wrapping_mul(MULT_B);
            v = v.wrapping_mul(hash_const);
            *slot = v ^ (v >> XSHIFT);
        }
        out
    }

    /// `generate_state(4, np.uint64)`: pairs of 32-bit words, low word first.
    pub fn generate_state_u64x4(&self) -> [u64; 4] {
        let w = self.generate_state_u32::<8>();
        core::array::from_fn(|i| u64::from(w[2 * i]) | (u64::from(w[2 * i + 1]) << 32))
    }
}

const PCG_MULTIPLIER: u128 = (2_549_297_995_355_413_924u128 << 64) | 4_865_540_595_714_422_341;

/// numpy's `PCG64` bit generator (PCG XSL-RR 128/64 with a 128-bit increment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pcg64 {
    state: u128,
    inc: u128,
    /// numpy keeps the high half of a 64-bit draw for the next 32-bit request.
    spare_u32: Option<u32>,
}

impl Pcg64 {
    /// `numpy.random.default_rng(seed)`'s generator.
    pub fn from_seed(seed: u128) -> Self {
        Self::from_seed_sequence(&SeedSequence::new(seed))
    }

    /// `PCG64(seed_sequence)`: the state and increment come from four 64-bit pool words.
    pub fn from_seed_sequence(seq: &SeedSequence) -> Self {
        let v = seq.generate_state_u64x4();
        let init_state = (u128::from(v[0]) << 64) | u128::from(v[1]);
        let init_seq = (u128::from(v[2]) << 64) | u128::from(v[3]);
        let mut rng = Pcg64 {
            state: 0,
            inc: (init_seq << 1) | 1,
            spare_u32: None,
        };
        rng.step();
        rng.state = rng.state.wrapping_add(init_state);
        rng.step();
        rng
    }

    fn step(&mut self) {
        self.state = self
            .state
            .wrapping_mul(PCG_MULTIPLIER)
            .wrapping_add(self.inc);
    }

    /// The next 64-bit output (`next_uint64`).
    pub fn next_u64(&mut self) -> u64 {
        self.step();
        let s = self.state;
        let xored = ((s >> 64) as u64) ^ (s as u64);
        xored.rotate_right((s >> 122) as u32)
    }

    /// The next 32-bit output (`next_uint32`): the low half of a fresh 64-bit draw, then its
    /// high half on the following call.
    pub fn next_u32(&mut self) -> u32 {
        if let Some(v) = self.spare_u32.take() {
            return v;
        }
        let next = self.next_u64();
        self.spare_u32 = Some((next >> 32) as u32);
        next as u32
    }

    /// Lemire's nearly-divisionless draw in `0..=range` (`bounded_lemire_uint64`).
    fn bounded_u64(&mut self, range: u64) -> u64 {
        let excl = range + 1;
        let mut m = u128::from(self.next_u64()) * u128::from(excl);
        let mut leftover = m as u64;
        if leftover < excl {
            let threshold = (u64::MAX - range) % excl;
            while leftover < threshold {
                m = u128::from(self.next_u64()) * u128::from(excl);
                leftover = m as u64;
            }
        }
        (m >> 64) as u64
    }

    /// The 32-bit variant (`buffered_bounded_lemire_uint32`), used when the range fits 32 bits.
    fn bounded_u32(&mut self, range: u32) -> u32 {
        let excl = range + 1;
        let mut m = u64::from(self.next_u32()) * u64::from(excl);
        let mut leftover = m as u32;
        if leftover < excl {
            let threshold = (u32::MAX - range) % excl;
            while leftover < threshold {
                m = u64::from(self.next_u32()) * u64::from(excl);
                leftover = m as u32;
            }
        }
        (m >> 32) as u32
    }

    /// `Generator.integers(low, high, size=n, dtype=np.int64)` (half-open `[low, high)`).
    ///
    /// Returns `None` when `low >= high`, where numpy raises.
    pub fn integers_i64(&mut self, low: i64, high: i64, n: usize) -> Option<Vec<i64>> {
        if low >= high {
            return None;
        }
        // numpy draws on the closed interval [low, high - 1].
        let range = (high - 1).wrapping_sub(low) as u64;
        let offset = low as u64;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let draw = if range == 0 {
                0
            } else if range <= u64::from(u32::MAX) {
                if range == u64::from(u32::MAX) {
                    u64::from(self.next_u32())
                } else {
                    u64::from(self.bounded_u32(range as u32))
                }
            } else if range == u64::MAX {
                self.next_u64()
            } else {
                self.bounded_u64(range)
            };
            out.push(offset.wrapping_add(draw) as i64);
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_sequence_splits_large_entropy_into_words() {
        // Entropy of more than four words takes the "remaining entropy" branch; it must differ
        // from the same low words alone.
        let big = SeedSequence::new((1u128 << 127) | 5);
        let small = SeedSequence::new(5);
        assert_ne!(big, small);
    }

    #[test]
    fn integers_rejects_empty_ranges_and_handles_degenerate_ones() {
        let mut g = Pcg64::from_seed(0);
        assert!(g.integers_i64(3, 3, 1).is_none());
        // A one-value range consumes nothing and returns the low end.
        let before = g.clone();
        assert_eq!(g.integers_i64(9, 10, 3).unwrap(), [9, 9, 9]);
        assert_eq!(g, before);
    }

    #[test]
    fn bounded_draws_stay_in_range() {
        let mut g = Pcg64::from_seed(12345);
        for (low, high) in [
            (0, 7),
            (-5, 5),
            (0, 1 << 40),
            (0, i64::MAX),
            (i64::MIN, i64::MAX),
        ] {
            for v in g.integers_i64(low, high, 200).unwrap() {
                assert!(v >= low && v < high, "{v} not in [{low}, {high})");
            }
        }
    }
}
