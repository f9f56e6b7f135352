//! numpy's `default_rng(seed).integers(low, high, dtype=int64)` on the paths the multiplier
//! derivation rarely takes: 32-bit ranges (with numpy's spare 32-bit word), negative lows,
//! full 64-bit ranges and seeds wider than 64 bits. Vectors from `tools/gen_numpy_vectors.py`.

#![allow(clippy::unwrap_used)] // a failing test is a panic with the reason

use engram_conformance::golden::{golden_dir, read_json};
use engram_core::hash::numpy::Pcg64;
use serde::Deserialize;

#[derive(Deserialize)]
struct Draw {
    low: i64,
    high: i64,
    values: Vec<i64>,
}

#[derive(Deserialize)]
struct Case {
    seed: String,
    draws: Vec<Draw>,
}

#[derive(Deserialize)]
struct Vectors {
    cases: Vec<Case>,
}

#[test]
fn integers_match_numpy_on_every_path() {
    let vectors: Vectors = read_json(golden_dir().join("numpy_integers.json")).unwrap();
    assert!(!vectors.cases.is_empty());
    for case in vectors.cases {
        let seed: u128 = case.seed.parse().unwrap();
        let mut rng = Pcg64::from_seed(seed);
        for draw in case.draws {
            let got = rng
                .integers_i64(draw.low, draw.high, draw.values.len())
                .unwrap();
            assert_eq!(
                got, draw.values,
                "seed {seed}, range [{}, {})",
                draw.low, draw.high
            );
        }
    }
}
