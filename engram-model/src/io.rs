//! Files: configs from JSON, vocabulary lookup tables to and from safetensors.

use std::collections::HashMap;
use std::path::Path;

use engram_core::{CompressedVocab, EngramConfig, TensorSource};
use safetensors::Dtype;

use crate::error::{ModelError, Result};
use crate::safetensors_file::SafetensorsFile;

/// Name of the lookup tensor in a vocabulary file (as the reference writes it).
pub const LOOKUP_TENSOR: &str = "lookup";

/// Reads and validates an [`EngramConfig`] (flat, or nested as in the golden files).
pub fn read_config(path: impl AsRef<Path>) -> Result<EngramConfig> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|source| ModelError::Config {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes `vocab`'s lookup as tensor `lookup` (int64, one entry per raw id), with the raw and
/// canonical counts in the metadata, the layout of the reference's file.
pub fn write_vocab(vocab: &CompressedVocab, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let bytes: Vec<u8> = vocab
        .lookup()
        .iter()
        .flat_map(|&c| i64::from(c).to_le_bytes())
        .collect();
    let view = safetensors::tensor::TensorView::new(Dtype::I64, vec![vocab.num_raw()], &bytes)
        .map_err(|source| ModelError::Safetensors {
            path: path.to_path_buf(),
            source,
        })?;
    let metadata = HashMap::from([
        ("num_raw".to_owned(), vocab.num_raw().to_string()),
        (
            "num_canonical".to_owned(),
            vocab.num_canonical().to_string(),
        ),
    ]);
    let encoded =
        safetensors::serialize([(LOOKUP_TENSOR, view)], Some(metadata)).map_err(|source| {
            ModelError::Safetensors {
                path: path.to_path_buf(),
                source,
            }
        })?;
    std::fs::write(path, encoded).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads a lookup table written by [`write_vocab`] (or by the reference): tensor `lookup`, any
/// integer dtype, one non-negative entry per raw id.
pub fn read_vocab(path: impl AsRef<Path>) -> Result<CompressedVocab> {
    let path = path.as_ref();
    let file = SafetensorsFile::open(path)?;
    let bad = |problem: &str| ModelError::BadTensor {
        path: path.to_path_buf(),
        name: LOOKUP_TENSOR.to_owned(),
        problem: problem.to_owned(),
    };
    match file.shape(LOOKUP_TENSOR) {
        None => return Err(bad("is missing")),
        Some(shape) if shape.len() != 1 => return Err(bad("must be one-dimensional")),
        Some(_) => {}
    }
    let lookup = file
        .read_i64(LOOKUP_TENSOR)
        .map_err(|_| bad("must be int64, int32 or uint32"))?
        .into_iter()
        .map(|v| u32::try_from(v).map_err(|_| bad("holds an entry outside 0..2^32")))
        .collect::<Result<Vec<u32>>>()?;
    Ok(CompressedVocab::from_lookup(lookup)?)
}
