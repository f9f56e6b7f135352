//! # engram-conformance
//!
//! The suite that holds every Engram implementation to the same numbers. Its first layer is
//! [`golden`]: the files produced by running the official reference code (shipped in this crate's
//! `golden/` folder, so a fresh clone checks itself), and [`runner`], which runs a layer stored in
//! that format on any backend and compares every output with the reference.

pub mod cases;
pub mod extremes;
pub mod golden;
pub mod harness;
pub mod metrics;
pub mod runner;
pub mod testgen;
