//! The CUDA hash (reciprocal modulo on 64-bit mixes) against the oracle at the extremes of every
//! operand: table sizes up to 2^32 - 1, products up to 2^64 - 1, prefill and decode. Without a
//! device (or without the `cuda` feature) the test reports SKIPPED with the reason.

mod common;

#[test]
fn reciprocal_hashing_equals_the_oracle_at_the_extremes() {
    common::on_device(
        "hash extremes",
        |#[cfg_attr(not(feature = "cuda"), allow(unused_variables))] b| {
            #[cfg(feature = "cuda")]
            if let Err(e) = engram_conformance::extremes::hash_at_the_extremes(b) {
                panic!("{e}");
            }
        },
    );
}
