//! Errors of model assembly and I/O.

use std::path::PathBuf;

/// Everything that can go wrong while loading tokenizers, configs and tensors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A `tokenizer.json` that the `tokenizers` crate cannot load.
    #[error("{path}: not a usable tokenizer.json: {source}")]
    Tokenizer {
        /// Where it came from.
        path: PathBuf,
        /// Why.
        source: tokenizers::Error,
    },
    /// Encoding or decoding with a loaded tokenizer failed.
    #[error("tokenizer failed on {what}: {source}")]
    Tokenize {
        /// What was being encoded or decoded.
        what: String,
        /// Why.
        source: tokenizers::Error,
    },
    /// A JSON file that does not parse, or does not describe a valid config.
    #[error("{path}: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// Why.
        source: serde_json::Error,
    },
    /// A JSON file that is not a valid Engram config.
    #[error("{path}: not a valid Engram config: {source}")]
    Config {
        /// The file.
        path: PathBuf,
        /// Why.
        source: serde_json::Error,
    },
    /// A safetensors file that is malformed or lacks what is needed.
    #[error("{path}: {source}")]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// Why.
        source: safetensors::SafeTensorError,
    },
    /// A tensor with an unexpected name, dtype or shape.
    #[error("{path}: tensor `{name}` {problem}")]
    BadTensor {
        /// The file.
        path: PathBuf,
        /// The tensor.
        name: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A problem reported by the kernels' core (bad ids, bad config, unknown layer...).
    #[error(transparent)]
    Core(#[from] engram_core::Error),
}

/// Shorthand for results of this crate.
pub type Result<T> = std::result::Result<T, ModelError>;
