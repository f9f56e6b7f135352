//! The crate's error type: a plain enum (no allocation needed to report most problems), so it
//! works in `no_std` builds. Every public entry point that can fail returns [`Result`].

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use crate::dtype::DType;

/// Shorthand for `core::result::Result<T, engram_core::Error>`.
pub type Result<T> = core::result::Result<T, Error>;

/// Everything that can go wrong in `engram-core`. Each variant names the problem precisely
/// enough for a user to fix the input without reading the source.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value is out of range or inconsistent with another one.
    InvalidConfig {
        /// The offending field, as named in the JSON configuration.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A token id is not below the size of the vocabulary it indexes.
    IdOutOfRange {
        /// Position of the id in the input.
        position: usize,
        /// The id found there.
        id: u64,
        /// The exclusive upper bound (the vocabulary size).
        limit: u64,
    },
    /// `cu_seqlens` does not describe a packed batch of the given length.
    InvalidSeqLens {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A buffer does not have the length the configuration implies.
    ShapeMismatch {
        /// Which buffer.
        what: &'static str,
        /// The length it must have.
        expected: usize,
        /// The length it has.
        actual: usize,
    },
    /// A layer id that the configuration does not list.
    UnknownLayer {
        /// The requested layer id.
        layer_id: u32,
    },
    /// A table size or another derived quantity does not fit the integer type that holds it.
    Overflow {
        /// Which quantity.
        what: &'static str,
    },
    /// A vocabulary lookup table that is not a map onto `0..num_canonical`.
    InvalidVocab {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A table row index beyond its head's table.
    RowOutOfRange {
        /// Position (token) of the index.
        position: usize,
        /// The head whose table it indexes.
        head: usize,
        /// The row found.
        row: u32,
        /// Rows of that head's table.
        rows: u32,
    },
    /// A weight tensor the layer needs is absent.
    MissingTensor {
        /// Its full name.
        name: String,
    },
    /// A weight tensor has another shape than the config implies.
    TensorShape {
        /// Its full name.
        name: String,
        /// The shape the config implies.
        expected: Vec<usize>,
        /// The shape found.
        actual: Vec<usize>,
    },
    /// A tensor is stored in a dtype that cannot be read (or converted) here.
    TensorDType {
        /// Its full name.
        name: String,
        /// The dtype found, by its safetensors name.
        dtype: String,
    },
    /// A stored tensor's values disagree with what the config derives (for example the
    /// embedding `offsets`).
    TensorValue {
        /// Its full name.
        name: String,
        /// What disagrees.
        reason: &'static str,
    },
    /// The backend cannot run this op on this dtype.
    UnsupportedDType {
        /// The backend.
        backend: &'static str,
        /// The dtype asked for.
        dtype: DType,
    },
    /// A backend that is compiled in but has no usable device here.
    NoDevice {
        /// The backend.
        backend: &'static str,
        /// Why (driver missing, no adapter, ...).
        reason: String,
    },
    /// A backend-specific failure (driver error, out of device memory, ...).
    Backend {
        /// The backend.
        backend: &'static str,
        /// What it reported.
        message: String,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidConfig { field, reason } => {
                write!(f, "invalid config: `{field}` {reason}")
            }
            Error::IdOutOfRange {
                position,
                id,
                limit,
            } => write!(
                f,
                "token id {id} at position {position} is out of range (vocabulary size {limit})"
            ),
            Error::InvalidSeqLens { reason } => write!(f, "invalid cu_seqlens: {reason}"),
            Error::ShapeMismatch {
                what,
                expected,
                actual,
            } => write!(
                f,
                "shape mismatch: `{what}` has {actual} elements, expected {expected}"
            ),
            Error::UnknownLayer { layer_id } => {
                write!(f, "layer {layer_id} is not an Engram layer of this config")
            }
            Error::Overflow { what } => write!(f, "{what} does not fit its integer type"),
            Error::InvalidVocab { reason } => write!(f, "invalid vocabulary lookup: {reason}"),
            Error::RowOutOfRange {
                position,
                head,
                row,
                rows,
            } => write!(
                f,
                "row {row} of head {head} at position {position} is beyond its table ({rows} rows)"
            ),
            Error::MissingTensor { name } => write!(f, "tensor `{name}` is missing"),
            Error::TensorShape {
                name,
                expected,
                actual,
            } => write!(
                f,
                "tensor `{name}` has shape {actual:?}, the config implies {expected:?}"
            ),
            Error::TensorDType { name, dtype } => {
                write!(
                    f,
                    "tensor `{name}` has dtype {dtype}, which cannot be read here"
                )
            }
            Error::TensorValue { name, reason } => write!(f, "tensor `{name}`: {reason}"),
            Error::UnsupportedDType { backend, dtype } => {
                write!(f, "the {backend} backend does not support {dtype}")
            }
            Error::NoDevice { backend, reason } => {
                write!(f, "the {backend} backend has no usable device: {reason}")
            }
            Error::Backend { backend, message } => write!(f, "{backend} backend: {message}"),
        }
    }
}

impl core::error::Error for Error {}
