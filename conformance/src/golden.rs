//! Golden files: numbers from the official reference code (see `golden/README.md`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Problems reading a golden file.
#[derive(Debug, thiserror::Error)]
pub enum GoldenError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid JSON of the expected shape.
    #[error("{path} is not valid JSON of the expected shape: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// Why.
        source: serde_json::Error,
    },
}

/// The folder holding the golden files shipped with this crate.
pub fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("golden")
}

/// Every golden file the runner checks: the two public reference files, then the variants
/// (`variants/*.safetensors`, sorted).
pub fn golden_files() -> std::io::Result<Vec<PathBuf>> {
    let mut files = vec![
        golden_dir().join("engram_public.safetensors"),
        golden_dir().join("moe_public.safetensors"),
    ];
    let mut variants = Vec::new();
    for entry in std::fs::read_dir(golden_dir().join("variants"))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "safetensors") {
            variants.push(path);
        }
    }
    variants.sort();
    files.extend(variants);
    Ok(files)
}

/// Reads and parses a JSON golden file.
pub fn read_json<T: for<'de> Deserialize<'de>>(path: impl AsRef<Path>) -> Result<T, GoldenError> {
    let path = path.as_ref().to_path_buf();
    let text = std::fs::read_to_string(&path).map_err(|source| GoldenError::Io {
        path: path.clone(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| GoldenError::Json { path, source })
}

/// One row of `hash_params.json`'s `multipliers`.
#[derive(Debug, Clone, Deserialize)]
pub struct MultiplierRow {
    /// Size of the compressed vocabulary the bound derives from.
    pub compressed_vocab: u64,
    /// The config's seed.
    pub seed: u64,
    /// The layer id.
    pub layer_id: u32,
    /// N.
    pub max_ngram: usize,
    /// The expected multipliers.
    pub multipliers: Vec<u64>,
}

/// One entry of `hash_params.json`'s `prime_tables`.
#[derive(Debug, Clone, Deserialize)]
pub struct PrimeTableCase {
    /// Minimum table size per order.
    pub engram_vocab_size: Vec<u64>,
    /// Heads per order.
    pub n_head: usize,
    /// Layers, in chain order.
    pub layer_ids: Vec<u32>,
    /// Expected primes: layer id (as a string) -> `[order][head]`.
    pub primes: BTreeMap<String, Vec<Vec<u64>>>,
}

/// `hash_params.json`: multipliers and prime tables from the reference's own derivation.
#[derive(Debug, Clone, Deserialize)]
pub struct HashParams {
    /// Expected multipliers for many (vocab, seed, layer, N).
    pub multipliers: Vec<MultiplierRow>,
    /// Expected prime chains.
    pub prime_tables: Vec<PrimeTableCase>,
}
