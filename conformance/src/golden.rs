//! Golden files: numbers from the official reference code (see `golden/README.md`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};
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
    /// The file is not a valid safetensors file.
    #[error("{path} is not a valid safetensors file: {source}")]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// Why.
        source: safetensors::SafeTensorError,
    },
    /// The file is not valid JSON of the expected shape.
    #[error("{path} is not valid JSON of the expected shape: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// Why.
        source: serde_json::Error,
    },
    /// A tensor the caller asked for is absent.
    #[error("tensor `{name}` is missing")]
    MissingTensor {
        /// Its name.
        name: String,
    },
    /// A tensor has another dtype than the caller asked for.
    #[error("tensor `{name}` has dtype {actual:?}, expected {expected:?}")]
    WrongDtype {
        /// Its name.
        name: String,
        /// The dtype asked for.
        expected: Dtype,
        /// The dtype in the file.
        actual: Dtype,
    },
}

/// The folder holding the golden files shipped with this crate.
pub fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("golden")
}

/// A tensor read from a golden file: its shape and its elements in row-major order.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor<T> {
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// Elements, row-major.
    pub data: Vec<T>,
}

/// A whole safetensors file held in memory.
#[derive(Debug)]
pub struct GoldenFile {
    path: PathBuf,
    bytes: Vec<u8>,
}

macro_rules! typed_reader {
    ($name:ident, $t:ty, $dtype:expr) => {
        #[doc = concat!("Reads tensor `name`, which must be stored as `", stringify!($dtype), "`.")]
        pub fn $name(&self, name: &str) -> Result<Tensor<$t>, GoldenError> {
            let view = self.view(name, $dtype)?;
            let data = view
                .data()
                .chunks_exact(std::mem::size_of::<$t>())
                .map(|c| <$t>::from_le_bytes(c.try_into().expect("chunk has the element size")))
                .collect();
            Ok(Tensor {
                shape: view.shape().to_vec(),
                data,
            })
        }
    };
}

impl GoldenFile {
    /// Reads a safetensors file and checks its header.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, GoldenError> {
        let path = path.as_ref().to_path_buf();
        let bytes = std::fs::read(&path).map_err(|source| GoldenError::Io {
            path: path.clone(),
            source,
        })?;
        SafeTensors::deserialize(&bytes).map_err(|source| GoldenError::Safetensors {
            path: path.clone(),
            source,
        })?;
        Ok(GoldenFile { path, bytes })
    }

    fn tensors(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.bytes).expect("header was checked in open")
    }

    /// Names of every tensor in the file.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .tensors()
            .names()
            .into_iter()
            .map(str::to_owned)
            .collect();
        names.sort();
        names
    }

    /// The file this was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn view(
        &self,
        name: &str,
        expected: Dtype,
    ) -> Result<safetensors::tensor::TensorView<'_>, GoldenError> {
        let view = self
            .tensors()
            .tensor(name)
            .map_err(|_| GoldenError::MissingTensor {
                name: name.to_owned(),
            })?;
        if view.dtype() != expected {
            return Err(GoldenError::WrongDtype {
                name: name.to_owned(),
                expected,
                actual: view.dtype(),
            });
        }
        Ok(view)
    }

    typed_reader!(i64s, i64, Dtype::I64);
    typed_reader!(f32s, f32, Dtype::F32);
    typed_reader!(f64s, f64, Dtype::F64);
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
