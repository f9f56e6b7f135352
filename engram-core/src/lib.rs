//! # engram-core
//!
//! The ground every Engram backend stands on: the layer's configuration, exact N-gram hashing
//! (bit-compatible with the official reference, including numpy's random generator), the
//! tokenizer-compression normaliser, and the typed errors every entry point returns.
//!
//! The crate is `#![no_std]` + `alloc` when built without its default `std` feature, so it can be
//! embedded in runtimes that bring their own allocator and threads. It performs no I/O.
//!
//! Modules:
//! - [`config`]: [`EngramConfig`], validated on construction and on deserialisation.
//! - [`hash`]: multipliers ([`hash::numpy`] reproduces `numpy.random.default_rng(..).integers`),
//!   the prime chain of table sizes ([`hash::primes`]) and the N-gram hash over packed batches
//!   ([`NgramHasher`]).
//! - [`vocab`]: the normaliser chain and [`CompressedVocab`], the raw id -> canonical id map.
//! - [`dtype`]: element types ([`Element`]: f32, f64, f16, bf16).
//! - [`weights`]: layer weights in kernel layout, loaded by the reference's tensor names.
//! - [`backend`] and [`ops`]: the contracts a backend implements ([`Backend`], [`EngramOps`],
//!   [`MoeOps`]), with the layer forwards as default methods composed from the ops.
//! - [`reference`]: the scalar oracle of every op and both layers (f64 accumulation).
//! - [`synthetic`]: seeded synthetic layers and inputs for tests, demos and benchmarks.
//! - [`error`]: [`Error`], the one error type of the crate.
#![cfg_attr(not(feature = "std"), no_std)]

extern crate alloc;

pub mod backend;
pub mod batch;
pub mod config;
pub mod dtype;
pub mod error;
pub mod hash;
pub mod ops;
pub mod reference;
pub mod synthetic;
pub mod vocab;
pub mod weights;

pub use backend::{Backend, Capabilities};
pub use batch::{PackedBatch, SeqLensFault};
pub use config::{EngramConfig, MoeConfig, ScoreFunc};
pub use dtype::{bf16, f16, DType, Element, Scalar};
pub use error::{Error, Result};
pub use hash::NgramHasher;
pub use ops::{
    check_decode, check_prefill, compose_engram_decode, compose_engram_prefill, DeviceEngramLayer,
    DeviceEngramState, DeviceMoeLayer, EngramOps, MoeOps,
};
pub use vocab::{normalize, CompressedVocab, CompressedVocabBuilder};
pub use weights::{EngramLayer, EngramWeights, MoeLayer, MoeWeights, TensorSource};
