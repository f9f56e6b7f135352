//! # engram-model
//!
//! Model assembly around the Engram kernels: tokenizers and the compressed vocabulary built
//! from any HuggingFace `tokenizer.json` ([`tokenizer`]), configs from JSON and tensors from
//! safetensors ([`io`]), and the `engram` command-line tool built on them.

pub mod demo;
pub mod error;
pub mod io;
pub mod safetensors_file;
pub mod tokenizer;

pub use error::{ModelError, Result};
pub use safetensors_file::SafetensorsFile;
pub use tokenizer::EngramTokenizer;
