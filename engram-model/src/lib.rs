//! # engram-model
//!
//! Model assembly around the Engram kernels.
