//! The backend proper (with the `std` feature): host vectors as buffers, every op through the
//! kernels of [`crate::kernels`] (or the oracle for f64 and the ops not yet tuned).

use engram_core::hash::LayerHash;
use engram_core::ops::{check_decode, compose_engram_decode, compose_engram_prefill};
use engram_core::reference;
use engram_core::reference::check;
use engram_core::{
    Backend, Capabilities, DType, Element, EngramOps, MoeConfig, MoeOps, Result, ScoreFunc,
};
use engram_core::{DeviceEngramLayer, DeviceEngramState};

use crate::kernels::{self, Parallelism};
use crate::{CpuBuffer, BACKEND_NAME};

/// The CPU backend: host memory, rayon's pool (or the calling thread only).
#[derive(Debug, Default)]
pub struct CpuBackend {
    par: Parallelism,
    scratch: kernels::fused::Scratch,
}

impl CpuBackend {
    /// The backend on rayon's global pool (it has no device to open, so this cannot fail).
    pub fn new() -> Self {
        CpuBackend {
            par: Parallelism::Rayon,
            scratch: Default::default(),
        }
    }

    /// The backend on the calling thread only, for embedders that bring their own threads.
    pub fn sequential() -> Self {
        CpuBackend {
            par: Parallelism::Sequential,
            scratch: Default::default(),
        }
    }

    /// How this backend uses threads.
    pub fn parallelism(&self) -> Parallelism {
        self.par
    }

    /// A layer's weights as the fused kernels take them.
    fn layer_view<'a, T: Element>(
        &self,
        layer: &'a DeviceEngramLayer<Self, T>,
    ) -> kernels::fused::LayerView<'a, T> {
        kernels::fused::LayerView {
            config: &layer.config,
            hash: &layer.hash,
            pad: layer.compressed_pad_id,
            vocab: layer.compressed_vocab,
            table: &layer.table,
            proj_weight: &layer.proj_weight,
            proj_bias: &layer.proj_bias,
            key_norm: &layer.key_norm,
            query_norm: &layer.query_norm,
            conv_norm: &layer.conv_norm,
            conv_weight: &layer.conv_weight,
        }
    }
}

/// Whether the fast (f32-arithmetic) kernels serve `T`; f64 keeps the oracle's f64 arithmetic.
fn fast<T: Element>() -> bool {
    T::DTYPE != DType::F64
}

impl Backend for CpuBackend {
    type Buffer<T: engram_core::Scalar> = CpuBuffer<T>;

    fn name(&self) -> &'static str {
        BACKEND_NAME
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            backend: BACKEND_NAME,
            device: "host CPU".to_owned(),
            float_dtypes: vec![DType::F32, DType::F64, DType::F16, DType::BF16],
        }
    }

    fn upload<T: engram_core::Scalar>(&self, data: &[T]) -> Result<CpuBuffer<T>> {
        Ok(CpuBuffer::from_vec(data.to_vec()))
    }

    fn upload_vec<T: engram_core::Scalar>(&self, data: Vec<T>) -> Result<CpuBuffer<T>> {
        Ok(CpuBuffer::from_vec(data))
    }

    fn zeros<T: engram_core::Scalar>(&self, len: usize) -> Result<CpuBuffer<T>> {
        Ok(CpuBuffer::from_vec(vec![T::default(); len]))
    }

    fn guarded<T: engram_core::Scalar>(
        &self,
        len: usize,
        guard: usize,
        fill: T,
    ) -> Result<CpuBuffer<T>> {
        Ok(CpuBuffer::guarded(len, guard, fill))
    }

    fn guards_intact<T: engram_core::Scalar>(&self, buffer: &CpuBuffer<T>) -> Result<bool> {
        Ok(buffer.guards_intact())
    }

    fn download<T: engram_core::Scalar>(&self, buffer: &CpuBuffer<T>, out: &mut [T]) -> Result<()> {
        check::len("download destination", out.len(), buffer.len())?;
        out.copy_from_slice(buffer);
        Ok(())
    }

    fn copy<T: engram_core::Scalar>(
        &self,
        src: &CpuBuffer<T>,
        dst: &mut CpuBuffer<T>,
    ) -> Result<()> {
        check::len("copy destination", dst.len(), src.len())?;
        dst.copy_from_slice(src);
        Ok(())
    }

    fn len<T: engram_core::Scalar>(&self, buffer: &CpuBuffer<T>) -> usize {
        buffer.len()
    }

    fn synchronize(&self) -> Result<()> {
        Ok(())
    }
}

impl EngramOps for CpuBackend {
    fn engram_prefill<T: Element>(
        &self,
        layer: &DeviceEngramLayer<Self, T>,
        ids: &CpuBuffer<u32>,
        cu_seqlens: &CpuBuffer<u32>,
        hidden: &CpuBuffer<T>,
        out: &mut CpuBuffer<T>,
        gates: Option<&mut CpuBuffer<T>>,
        state: Option<&mut DeviceEngramState<Self, T>>,
    ) -> Result<()> {
        if !fast::<T>() {
            return compose_engram_prefill(self, layer, ids, cu_seqlens, hidden, out, gates, state);
        }
        if let Some(s) = &state {
            let seqs = cu_seqlens.len().saturating_sub(1);
            if s.num_seqs != seqs {
                return Err(engram_core::Error::ShapeMismatch {
                    what: "state sequences",
                    expected: seqs,
                    actual: s.num_seqs,
                });
            }
        }
        kernels::fused::engram_prefill(
            self.layer_view(layer),
            ids,
            cu_seqlens,
            hidden,
            out,
            gates.map(|g| &mut g[..]),
            state.map(|s| (&mut s.ids[..], &mut s.conv[..])),
            &self.scratch,
            self.par,
        )
    }

    fn engram_decode<T: Element>(
        &self,
        layer: &DeviceEngramLayer<Self, T>,
        ids: &CpuBuffer<u32>,
        hidden: &CpuBuffer<T>,
        state: &mut DeviceEngramState<Self, T>,
        out: &mut CpuBuffer<T>,
        gates: Option<&mut CpuBuffer<T>>,
    ) -> Result<()> {
        if !fast::<T>() {
            return compose_engram_decode(self, layer, ids, hidden, state, out, gates);
        }
        check_decode(self, layer, ids, hidden, state, out, gates.as_deref())?;
        kernels::fused::engram_decode(
            self.layer_view(layer),
            ids,
            hidden,
            (&mut state.ids[..], &mut state.conv[..]),
            out,
            gates.map(|g| &mut g[..]),
            &self.scratch,
            self.par,
        )
    }

    fn compress_ids(
        &self,
        lookup: &CpuBuffer<u32>,
        raw: &CpuBuffer<u32>,
        out: &mut CpuBuffer<u32>,
    ) -> Result<()> {
        reference::compress_ids(lookup, raw, out)
    }

    fn hash(
        &self,
        layer: &LayerHash,
        heads_per_order: usize,
        compressed_pad_id: u32,
        compressed_vocab: u64,
        ids: &CpuBuffer<u32>,
        cu_seqlens: &CpuBuffer<u32>,
        rows: &mut CpuBuffer<u32>,
    ) -> Result<()> {
        let kernel = kernels::hash::LayerHashKernel::new(layer, heads_per_order);
        kernels::hash::hash_rows(
            &kernel,
            None,
            compressed_pad_id,
            compressed_vocab,
            ids,
            cu_seqlens,
            rows,
            self.par,
        )
    }

    fn hash_decode(
        &self,
        layer: &LayerHash,
        heads_per_order: usize,
        compressed_vocab: u64,
        history: &CpuBuffer<u32>,
        ids: &CpuBuffer<u32>,
        rows: &mut CpuBuffer<u32>,
    ) -> Result<()> {
        reference::hash_decode(layer, heads_per_order, compressed_vocab, history, ids, rows)
    }

    fn gather_rows<T: Element>(
        &self,
        table: &CpuBuffer<T>,
        d_head: usize,
        layer: &LayerHash,
        rows: &CpuBuffer<u32>,
        out: &mut CpuBuffer<T>,
    ) -> Result<()> {
        if fast::<T>() {
            kernels::norm_gate::gather_rows(table, d_head, layer, rows, out, self.par)
        } else {
            reference::gather_rows(table, d_head, layer, rows, out)
        }
    }

    fn rms_norm<T: Element>(
        &self,
        x: &CpuBuffer<T>,
        weight: &CpuBuffer<T>,
        d: usize,
        eps: f64,
        out: &mut CpuBuffer<T>,
    ) -> Result<()> {
        if fast::<T>() {
            kernels::norm_gate::rms_norm(x, weight, d, eps, out, self.par)
        } else {
            reference::rms_norm(x, weight, d, eps, out)
        }
    }

    fn linear<T: Element>(
        &self,
        x: &CpuBuffer<T>,
        weight: &CpuBuffer<T>,
        bias: Option<&CpuBuffer<T>>,
        in_features: usize,
        out: &mut CpuBuffer<T>,
    ) -> Result<()> {
        let bias = bias.map(|b| &**b);
        if fast::<T>() {
            kernels::linear::fastest(x, weight, bias, in_features, out, self.par)
        } else {
            reference::linear(x, weight, bias, in_features, out)
        }
    }

    fn gate<T: Element>(
        &self,
        proj: &CpuBuffer<T>,
        hidden: &CpuBuffer<T>,
        key_norm: &CpuBuffer<T>,
        query_norm: &CpuBuffer<T>,
        m: usize,
        d: usize,
        value: &mut CpuBuffer<T>,
        alpha: &mut CpuBuffer<T>,
    ) -> Result<()> {
        if fast::<T>() {
            kernels::norm_gate::gate(
                proj, hidden, key_norm, query_norm, m, d, value, alpha, self.par,
            )
        } else {
            reference::gate(proj, hidden, key_norm, query_norm, m, d, value, alpha)
        }
    }

    fn gate_norm<T: Element>(
        &self,
        proj: &CpuBuffer<T>,
        hidden: &CpuBuffer<T>,
        key_norm: &CpuBuffer<T>,
        query_norm: &CpuBuffer<T>,
        conv_norm: &CpuBuffer<T>,
        m: usize,
        d: usize,
        value: &mut CpuBuffer<T>,
        alpha: &mut CpuBuffer<T>,
        normed: &mut CpuBuffer<T>,
    ) -> Result<()> {
        if fast::<T>() {
            kernels::norm_gate::gate_norm(
                proj, hidden, key_norm, query_norm, conv_norm, m, d, value, alpha, normed, self.par,
            )
        } else {
            reference::gate_norm(
                proj, hidden, key_norm, query_norm, conv_norm, m, d, value, alpha, normed,
            )
        }
    }

    fn short_conv<T: Element>(
        &self,
        normed: &CpuBuffer<T>,
        value: &CpuBuffer<T>,
        weight: &CpuBuffer<T>,
        channels: usize,
        kernel: usize,
        dilation: usize,
        cu_seqlens: &CpuBuffer<u32>,
        out: &mut CpuBuffer<T>,
    ) -> Result<()> {
        if fast::<T>() {
            kernels::norm_gate::short_conv(
                normed, value, weight, channels, kernel, dilation, cu_seqlens, out, self.par,
            )
        } else {
            reference::short_conv(
                normed, value, weight, channels, kernel, dilation, cu_seqlens, out,
            )
        }
    }

    fn short_conv_decode<T: Element>(
        &self,
        normed: &CpuBuffer<T>,
        value: &CpuBuffer<T>,
        weight: &CpuBuffer<T>,
        channels: usize,
        kernel: usize,
        dilation: usize,
        history: &mut CpuBuffer<T>,
        out: &mut CpuBuffer<T>,
    ) -> Result<()> {
        if fast::<T>() {
            kernels::norm_gate::short_conv_decode(
                normed, value, weight, channels, kernel, dilation, history, out, self.par,
            )
        } else {
            reference::short_conv_decode(
                normed, value, weight, channels, kernel, dilation, history, out,
            )
        }
    }

    fn capture_state<T: Element>(
        &self,
        ids: &CpuBuffer<u32>,
        cu_seqlens: &CpuBuffer<u32>,
        normed: &CpuBuffer<T>,
        keep: usize,
        hist: usize,
        channels: usize,
        pad: u32,
        state_ids: &mut CpuBuffer<u32>,
        state_conv: &mut CpuBuffer<T>,
    ) -> Result<()> {
        reference::capture_state(
            ids, cu_seqlens, normed, keep, hist, channels, pad, state_ids, state_conv,
        )
    }

    fn push_ids(
        &self,
        history: &mut CpuBuffer<u32>,
        ids: &CpuBuffer<u32>,
        keep: usize,
    ) -> Result<()> {
        reference::push_ids(history, ids, keep)
    }
}

impl MoeOps for CpuBackend {
    fn moe_scores<T: Element>(
        &self,
        x: &CpuBuffer<T>,
        gate_weight: &CpuBuffer<T>,
        dim: usize,
        score_func: ScoreFunc,
        scores: &mut CpuBuffer<T>,
    ) -> Result<()> {
        if fast::<T>() {
            kernels::moe::scores(x, gate_weight, dim, score_func, scores, self.par)
        } else {
            reference::moe_scores(x, gate_weight, dim, score_func, scores)
        }
    }

    fn moe_route<T: Element>(
        &self,
        scores: &CpuBuffer<T>,
        bias: &CpuBuffer<T>,
        config: &MoeConfig,
        weights: &mut CpuBuffer<T>,
        indices: &mut CpuBuffer<u32>,
    ) -> Result<()> {
        kernels::moe::route(scores, bias, config, weights, indices, self.par)
    }

    fn expert_ffn<T: Element>(
        &self,
        x: &CpuBuffer<T>,
        w1: &CpuBuffer<T>,
        w2: &CpuBuffer<T>,
        w3: &CpuBuffer<T>,
        dim: usize,
        out: &mut CpuBuffer<T>,
    ) -> Result<()> {
        if fast::<T>() {
            kernels::moe::expert_ffn(x, w1, w2, w3, dim, out, self.par)
        } else {
            reference::expert_ffn(x, w1, w2, w3, dim, out)
        }
    }

    fn routed_experts<T: Element>(
        &self,
        x: &CpuBuffer<T>,
        w1: &CpuBuffer<T>,
        w2: &CpuBuffer<T>,
        w3: &CpuBuffer<T>,
        indices: &CpuBuffer<u32>,
        dim: usize,
        inter: usize,
        out: &mut CpuBuffer<T>,
    ) -> Result<()> {
        if fast::<T>() {
            kernels::moe::routed_experts(x, w1, w2, w3, indices, dim, inter, out, self.par)
        } else {
            reference::routed_experts(x, w1, w2, w3, indices, dim, inter, out)
        }
    }

    fn moe_combine<T: Element>(
        &self,
        expert_out: &CpuBuffer<T>,
        weights: &CpuBuffer<T>,
        shared: &CpuBuffer<T>,
        dim: usize,
        out: &mut CpuBuffer<T>,
    ) -> Result<()> {
        if fast::<T>() {
            kernels::moe::combine(expert_out, weights, shared, dim, out, self.par)
        } else {
            reference::moe_combine(expert_out, weights, shared, dim, out)
        }
    }
}
