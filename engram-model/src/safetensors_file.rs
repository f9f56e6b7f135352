//! A safetensors file held in memory, readable by name with dtype conversion.

use std::path::{Path, PathBuf};

use engram_core::{Element, TensorSource};
use safetensors::tensor::{Metadata, TensorInfo};
use safetensors::{Dtype, SafeTensors};

use crate::error::{ModelError, Result};

/// A whole safetensors file: its bytes and parsed header.
#[derive(Debug)]
pub struct SafetensorsFile {
    path: PathBuf,
    bytes: Vec<u8>,
    data_start: usize,
    metadata: Metadata,
}

impl SafetensorsFile {
    /// Reads and validates a safetensors file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let bytes = std::fs::read(&path).map_err(|source| ModelError::Io {
            path: path.clone(),
            source,
        })?;
        Self::from_bytes(bytes, path)
    }

    /// Wraps bytes already in memory; `path` names them in errors.
    pub fn from_bytes(bytes: Vec<u8>, path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        // `deserialize` checks offsets, sizes and overlaps; `read_metadata` alone does not.
        SafeTensors::deserialize(&bytes).map_err(|source| ModelError::Safetensors {
            path: path.clone(),
            source,
        })?;
        let (header, metadata) =
            SafeTensors::read_metadata(&bytes).map_err(|source| ModelError::Safetensors {
                path: path.clone(),
                source,
            })?;
        Ok(SafetensorsFile {
            path,
            bytes,
            data_start: 8 + header,
            metadata,
        })
    }

    /// The file this came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Names of every tensor, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.metadata.tensors().into_keys().collect();
        names.sort();
        names
    }

    /// The string metadata of the header (`__metadata__`), if any.
    pub fn metadata(&self, key: &str) -> Option<&str> {
        self.metadata
            .metadata()
            .as_ref()
            .and_then(|m| m.get(key))
            .map(String::as_str)
    }

    fn info(&self, name: &str) -> engram_core::Result<&TensorInfo> {
        self.metadata
            .info(name)
            .ok_or_else(|| engram_core::Error::MissingTensor {
                name: name.to_owned(),
            })
    }

    fn data(&self, info: &TensorInfo) -> &[u8] {
        let (a, b) = info.data_offsets;
        &self.bytes[self.data_start + a..self.data_start + b]
    }

    /// Tensor `name` as `f64` (exact for every float dtype stored), with its shape.
    pub fn read_f64(&self, name: &str) -> engram_core::Result<(Vec<usize>, Vec<f64>)> {
        let info = self.info(name)?;
        let mut out = vec![0.0f64; info.shape.iter().product()];
        self.read(name, &mut out)?;
        Ok((info.shape.clone(), out))
    }
}

fn le<const N: usize>(c: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(c);
    a
}

impl TensorSource for SafetensorsFile {
    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.metadata.info(name).map(|i| i.shape.clone())
    }

    fn read<T: Element>(&self, name: &str, out: &mut [T]) -> engram_core::Result<()> {
        let info = self.info(name)?;
        let data = self.data(info);
        let n: usize = info.shape.iter().product();
        if out.len() != n {
            return Err(engram_core::Error::ShapeMismatch {
                what: "tensor read buffer",
                expected: n,
                actual: out.len(),
            });
        }
        match info.dtype {
            Dtype::F32 => {
                for (o, c) in out.iter_mut().zip(data.chunks_exact(4)) {
                    *o = T::from_f32(f32::from_le_bytes(le(c)));
                }
            }
            Dtype::F64 => {
                for (o, c) in out.iter_mut().zip(data.chunks_exact(8)) {
                    *o = T::from_f64(f64::from_le_bytes(le(c)));
                }
            }
            Dtype::F16 => {
                for (o, c) in out.iter_mut().zip(data.chunks_exact(2)) {
                    *o = T::from_f32(half::f16::from_le_bytes(le(c)).to_f32());
                }
            }
            Dtype::BF16 => {
                for (o, c) in out.iter_mut().zip(data.chunks_exact(2)) {
                    *o = T::from_f32(half::bf16::from_le_bytes(le(c)).to_f32());
                }
            }
            other => {
                return Err(engram_core::Error::TensorDType {
                    name: name.to_owned(),
                    dtype: format!("{other:?}"),
                })
            }
        }
        Ok(())
    }

    fn read_i64(&self, name: &str) -> engram_core::Result<Vec<i64>> {
        let info = self.info(name)?;
        let data = self.data(info);
        Ok(match info.dtype {
            Dtype::I64 => data
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(le(c)))
                .collect(),
            Dtype::I32 => data
                .chunks_exact(4)
                .map(|c| i64::from(i32::from_le_bytes(le(c))))
                .collect(),
            Dtype::U32 => data
                .chunks_exact(4)
                .map(|c| i64::from(u32::from_le_bytes(le(c))))
                .collect(),
            other => {
                return Err(engram_core::Error::TensorDType {
                    name: name.to_owned(),
                    dtype: format!("{other:?}"),
                })
            }
        })
    }
}
