//! Layer weights in the layout the kernels use, loaded by the reference's tensor names.
//!
//! Loading goes through [`TensorSource`], so this crate stays free of I/O: `engram-model` reads
//! safetensors files, tests build sources in memory. The `M + 1` projections of an Engram layer are
//! stacked once here into one `[(M + 1) d, d_mem]` weight (keys `0..M`, then the value), so every
//! backend runs them as one GEMM.

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use crate::config::{EngramConfig, MoeConfig};
use crate::dtype::Element;
use crate::error::{Error, Result};
use crate::hash::{LayerHash, NgramHasher};

/// Where weights come from: named tensors, converted to the caller's element type on read.
pub trait TensorSource {
    /// The shape of tensor `name`, or `None` if there is no such tensor.
    fn shape(&self, name: &str) -> Option<Vec<usize>>;
    /// Reads tensor `name` (row-major) into `out`, converting each element to `T`.
    /// `out.len()` equals the product of its shape.
    fn read<T: Element>(&self, name: &str, out: &mut [T]) -> Result<()>;
    /// Reads an integer tensor (for example `offsets`) widened to `i64`.
    fn read_i64(&self, name: &str) -> Result<Vec<i64>>;
}

fn full_name(prefix: &str, name: &str) -> String {
    format!("{prefix}{name}")
}

/// Reads tensor `prefix + name`, checking its shape, into a fresh vector.
fn load<T: Element, S: TensorSource>(
    src: &S,
    prefix: &str,
    name: &str,
    shape: &[usize],
) -> Result<Vec<T>> {
    let name = full_name(prefix, name);
    let actual = src
        .shape(&name)
        .ok_or_else(|| Error::MissingTensor { name: name.clone() })?;
    if actual != shape {
        return Err(Error::TensorShape {
            name,
            expected: shape.to_vec(),
            actual,
        });
    }
    let mut out = vec![T::default(); shape.iter().product()];
    src.read(&name, &mut out)?;
    Ok(out)
}

/// Appends tensor `prefix + name` of `shape` to `dst`.
fn load_into<T: Element, S: TensorSource>(
    src: &S,
    prefix: &str,
    name: &str,
    shape: &[usize],
    dst: &mut Vec<T>,
) -> Result<()> {
    dst.extend(load::<T, S>(src, prefix, name, shape)?);
    Ok(())
}

/// The weights of one Engram layer, laid out for the kernels.
#[derive(Debug, Clone, PartialEq)]
pub struct EngramWeights<T> {
    /// Every head's table, concatenated: `[total_rows, d_head]`
    /// (`multi_head_embedding.embedding.weight`).
    pub table: Vec<T>,
    /// Stacked projection `[(M + 1) d, d_mem]`: rows `m d..(m + 1) d` are `key_projs.m`, the last
    /// `d` rows `value_proj`.
    pub proj_weight: Vec<T>,
    /// Stacked bias `[(M + 1) d]`, in the same order.
    pub proj_bias: Vec<T>,
    /// RMSNorm weights of the keys, `[M, d]` (`norm1.m`).
    pub key_norm: Vec<T>,
    /// RMSNorm weights of the hidden states, `[M, d]` (`norm2.m`).
    pub query_norm: Vec<T>,
    /// RMSNorm weights before the convolution, `[M, d]` (`short_conv.norms.m`); empty without
    /// the convolution.
    pub conv_norm: Vec<T>,
    /// Depthwise kernel `[M d, w]` (`short_conv.conv.weight` without its middle axis); empty
    /// without the convolution.
    pub conv_weight: Vec<T>,
}

/// One Engram layer: its configuration, hash parameters and weights.
#[derive(Debug, Clone, PartialEq)]
pub struct EngramLayer<T> {
    /// The model's Engram configuration.
    pub config: EngramConfig,
    /// This layer's multipliers, table sizes and offsets.
    pub hash: LayerHash,
    /// Canonical id read before a sequence's start.
    pub compressed_pad_id: u32,
    /// Number of canonical ids (ids must be below it).
    pub compressed_vocab: u64,
    /// The weights.
    pub weights: EngramWeights<T>,
}

impl<T: Element> EngramLayer<T> {
    /// Loads layer `layer_id` from tensors named as the reference's `state_dict`, each prefixed by
    /// `prefix` (for example `"weights."` in the golden files, `""` for a bare module).
    pub fn load<S: TensorSource>(
        config: &EngramConfig,
        hasher: &NgramHasher,
        layer_id: u32,
        source: &S,
        prefix: &str,
    ) -> Result<Self> {
        config.validate()?;
        let hash = hasher.layer(layer_id)?.clone();
        let (m, d, d_mem) = (config.hc_mult, config.hidden_size, config.d_mem());
        let rows = usize::try_from(hash.total_rows())
            .map_err(|_| Error::Overflow { what: "table rows" })?;
        let table = load(
            source,
            prefix,
            "multi_head_embedding.embedding.weight",
            &[rows, config.d_head()],
        )?;
        let offsets_name = full_name(prefix, "multi_head_embedding.offsets");
        if source.shape(&offsets_name).is_some() {
            let stored = source.read_i64(&offsets_name)?;
            let same = stored.len() == hash.offsets.len()
                && stored
                    .iter()
                    .zip(&hash.offsets)
                    .all(|(&a, &b)| a >= 0 && a as u64 == b);
            if !same {
                return Err(Error::TensorValue {
                    name: offsets_name,
                    reason: "differs from the head offsets the config derives",
                });
            }
        }
        let mut proj_weight = Vec::with_capacity((m + 1) * d * d_mem);
        let mut proj_bias = Vec::with_capacity((m + 1) * d);
        for i in 0..m {
            load_into(
                source,
                prefix,
                &format!("key_projs.{i}.weight"),
                &[d, d_mem],
                &mut proj_weight,
            )?;
            load_into(
                source,
                prefix,
                &format!("key_projs.{i}.bias"),
                &[d],
                &mut proj_bias,
            )?;
        }
        load_into(
            source,
            prefix,
            "value_proj.weight",
            &[d, d_mem],
            &mut proj_weight,
        )?;
        load_into(source, prefix, "value_proj.bias", &[d], &mut proj_bias)?;
        let mut key_norm = Vec::with_capacity(m * d);
        let mut query_norm = Vec::with_capacity(m * d);
        let mut conv_norm = Vec::new();
        for i in 0..m {
            load_into(
                source,
                prefix,
                &format!("norm1.{i}.weight"),
                &[d],
                &mut key_norm,
            )?;
            load_into(
                source,
                prefix,
                &format!("norm2.{i}.weight"),
                &[d],
                &mut query_norm,
            )?;
            if config.short_conv {
                load_into(
                    source,
                    prefix,
                    &format!("short_conv.norms.{i}.weight"),
                    &[d],
                    &mut conv_norm,
                )?;
            }
        }
        let conv_weight = if config.short_conv {
            load(
                source,
                prefix,
                "short_conv.conv.weight",
                &[m * d, 1, config.kernel_size],
            )?
        } else {
            Vec::new()
        };
        Ok(EngramLayer {
            config: config.clone(),
            hash,
            compressed_pad_id: hasher.compressed_pad_id(),
            compressed_vocab: hasher.compressed_vocab(),
            weights: EngramWeights {
                table,
                proj_weight,
                proj_bias,
                key_norm,
                query_norm,
                conv_norm,
                conv_weight,
            },
        })
    }
}

/// The weights of one MoE layer, laid out for the kernels.
#[derive(Debug, Clone, PartialEq)]
pub struct MoeWeights<T> {
    /// Gate `[E, dim]` (`gate.weight`).
    pub gate_weight: Vec<T>,
    /// Selection bias `[E]` (`gate.bias`); empty without a bias.
    pub gate_bias: Vec<T>,
    /// Every routed expert's `w1`, stacked: `[E, inter, dim]`.
    pub w1: Vec<T>,
    /// Every routed expert's `w2`, stacked: `[E, dim, inter]`.
    pub w2: Vec<T>,
    /// Every routed expert's `w3`, stacked: `[E, inter, dim]`.
    pub w3: Vec<T>,
    /// Shared experts' `w1` `[shared_inter, dim]`; empty without shared experts.
    pub shared_w1: Vec<T>,
    /// Shared experts' `w2` `[dim, shared_inter]`.
    pub shared_w2: Vec<T>,
    /// Shared experts' `w3` `[shared_inter, dim]`.
    pub shared_w3: Vec<T>,
}

/// One MoE layer: its configuration and weights.
#[derive(Debug, Clone, PartialEq)]
pub struct MoeLayer<T> {
    /// The layer's configuration.
    pub config: MoeConfig,
    /// The weights.
    pub weights: MoeWeights<T>,
}

impl<T: Element> MoeLayer<T> {
    /// Loads the layer from tensors named as the reference's `MoE` `state_dict`
    /// (`gate.weight`, `gate.bias`, `experts.i.w1.weight`, ..., `shared_experts.w1.weight`, ...),
    /// each prefixed by `prefix`.
    pub fn load<S: TensorSource>(config: &MoeConfig, source: &S, prefix: &str) -> Result<Self> {
        config.validate()?;
        let (e, dim, inter) = (config.n_routed_experts, config.dim, config.moe_inter_dim);
        let gate_weight = load(source, prefix, "gate.weight", &[e, dim])?;
        let gate_bias = if config.bias {
            load(source, prefix, "gate.bias", &[e])?
        } else {
            Vec::new()
        };
        let mut w1 = Vec::with_capacity(e * inter * dim);
        let mut w2 = Vec::with_capacity(e * inter * dim);
        let mut w3 = Vec::with_capacity(e * inter * dim);
        for i in 0..e {
            load_into(
                source,
                prefix,
                &format!("experts.{i}.w1.weight"),
                &[inter, dim],
                &mut w1,
            )?;
            load_into(
                source,
                prefix,
                &format!("experts.{i}.w2.weight"),
                &[dim, inter],
                &mut w2,
            )?;
            load_into(
                source,
                prefix,
                &format!("experts.{i}.w3.weight"),
                &[inter, dim],
                &mut w3,
            )?;
        }
        let shared = config.shared_inter_dim();
        let (shared_w1, shared_w2, shared_w3) = if shared > 0 {
            (
                load(source, prefix, "shared_experts.w1.weight", &[shared, dim])?,
                load(source, prefix, "shared_experts.w2.weight", &[dim, shared])?,
                load(source, prefix, "shared_experts.w3.weight", &[shared, dim])?,
            )
        } else {
            (Vec::new(), Vec::new(), Vec::new())
        };
        Ok(MoeLayer {
            config: config.clone(),
            weights: MoeWeights {
                gate_weight,
                gate_bias,
                w1,
                w2,
                w3,
                shared_w1,
                shared_w2,
                shared_w3,
            },
        })
    }
}
