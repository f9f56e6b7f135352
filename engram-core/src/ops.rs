//! The op families: one method per kernel, and the layer forwards composed from them.
//!
//! A backend implements every op of [`EngramOps`] and [`MoeOps`]; the layer forwards
//! ([`EngramOps::engram_prefill`], [`EngramOps::engram_decode`], [`MoeOps::moe_forward`]) are
//! default methods built from the ops, so a backend overrides one only where it fuses steps.
//! [`crate::reference`] holds the oracle of every op with the same name, parameters and layouts;
//! the documentation there is the specification.
//!
//! Layouts are row-major. Element types: tables, weights and activations are one [`Element`] `T`
//! per call (f32, f16, bf16, or f64 where the backend offers it); kernels accumulate in f32 or
//! wider. Ids, rows and sequence offsets are `u32`.

use alloc::vec;

use crate::backend::Backend;
use crate::config::{EngramConfig, MoeConfig, ScoreFunc};
use crate::dtype::Element;
use crate::error::{Error, Result};
use crate::hash::LayerHash;
use crate::reference::{conv_history_len, conv_state_len, EngramState, CONV_NORM_EPS};
use crate::weights::{EngramLayer, MoeLayer};

type Buf<B, T> = <B as Backend>::Buffer<T>;

fn check_len(what: &'static str, actual: usize, expected: usize) -> Result<()> {
    if actual == expected {
        Ok(())
    } else {
        Err(Error::ShapeMismatch {
            what,
            expected,
            actual,
        })
    }
}

fn check_dtype<B: Backend, T: Element>(backend: &B) -> Result<()> {
    if backend.supports_dtype(T::DTYPE) {
        Ok(())
    } else {
        Err(Error::UnsupportedDType {
            backend: backend.name(),
            dtype: T::DTYPE,
        })
    }
}

/// An Engram layer whose weights live on a backend's device.
pub struct DeviceEngramLayer<B: Backend, T: Element> {
    /// The model's Engram configuration.
    pub config: EngramConfig,
    /// This layer's multipliers, table sizes and offsets.
    pub hash: LayerHash,
    /// Canonical id read before a sequence's start.
    pub compressed_pad_id: u32,
    /// Number of canonical ids.
    pub compressed_vocab: u64,
    /// `[total_rows, d_head]`.
    pub table: Buf<B, T>,
    /// `[(M + 1) d, d_mem]`.
    pub proj_weight: Buf<B, T>,
    /// `[(M + 1) d]`.
    pub proj_bias: Buf<B, T>,
    /// `[M, d]`.
    pub key_norm: Buf<B, T>,
    /// `[M, d]`.
    pub query_norm: Buf<B, T>,
    /// `[M, d]` (empty without the convolution).
    pub conv_norm: Buf<B, T>,
    /// `[M d, w]` (empty without the convolution).
    pub conv_weight: Buf<B, T>,
}

impl<B: Backend, T: Element> DeviceEngramLayer<B, T> {
    /// Moves a host layer's weights to the device (without a second host copy where the backend
    /// can keep the vectors).
    pub fn upload_owned(backend: &B, layer: EngramLayer<T>) -> Result<Self> {
        check_dtype::<B, T>(backend)?;
        let w = layer.weights;
        Ok(DeviceEngramLayer {
            config: layer.config,
            hash: layer.hash,
            compressed_pad_id: layer.compressed_pad_id,
            compressed_vocab: layer.compressed_vocab,
            table: backend.upload_vec(w.table)?,
            proj_weight: backend.upload_vec(w.proj_weight)?,
            proj_bias: backend.upload_vec(w.proj_bias)?,
            key_norm: backend.upload_vec(w.key_norm)?,
            query_norm: backend.upload_vec(w.query_norm)?,
            conv_norm: backend.upload_vec(w.conv_norm)?,
            conv_weight: backend.upload_vec(w.conv_weight)?,
        })
    }

    /// Uploads a host layer's weights.
    pub fn upload(backend: &B, layer: &EngramLayer<T>) -> Result<Self> {
        check_dtype::<B, T>(backend)?;
        let w = &layer.weights;
        Ok(DeviceEngramLayer {
            config: layer.config.clone(),
            hash: layer.hash.clone(),
            compressed_pad_id: layer.compressed_pad_id,
            compressed_vocab: layer.compressed_vocab,
            table: backend.upload(&w.table)?,
            proj_weight: backend.upload(&w.proj_weight)?,
            proj_bias: backend.upload(&w.proj_bias)?,
            key_norm: backend.upload(&w.key_norm)?,
            query_norm: backend.upload(&w.query_norm)?,
            conv_norm: backend.upload(&w.conv_norm)?,
            conv_weight: backend.upload(&w.conv_weight)?,
        })
    }
}

/// The decode state of a batch of sequences on a device; the layout of [`EngramState`].
pub struct DeviceEngramState<B: Backend, T: Element> {
    /// Number of sequences.
    pub num_seqs: usize,
    /// `[S, N - 1]` last compressed ids, oldest first.
    pub ids: Buf<B, u32>,
    /// `[S, (w - 1) N, M d]` last normalised convolution inputs, oldest first.
    pub conv: Buf<B, T>,
}

impl<B: Backend, T: Element> DeviceEngramState<B, T> {
    /// The state of `num_seqs` sequences that have seen no token.
    pub fn new(backend: &B, layer: &DeviceEngramLayer<B, T>, num_seqs: usize) -> Result<Self> {
        let keep = layer.config.max_ngram_size - 1;
        Ok(DeviceEngramState {
            num_seqs,
            ids: backend.upload(&vec![layer.compressed_pad_id; num_seqs * keep])?,
            conv: backend.zeros(num_seqs * conv_state_len(&layer.config))?,
        })
    }

    /// Uploads a host state.
    pub fn upload(backend: &B, state: &EngramState<T>) -> Result<Self> {
        Ok(DeviceEngramState {
            num_seqs: state.num_seqs,
            ids: backend.upload(&state.ids)?,
            conv: backend.upload(&state.conv)?,
        })
    }

    /// Copies the state back to the host.
    pub fn download(&self, backend: &B) -> Result<EngramState<T>> {
        Ok(EngramState {
            num_seqs: self.num_seqs,
            ids: backend.to_vec(&self.ids)?,
            conv: backend.to_vec(&self.conv)?,
        })
    }

    fn check(&self, backend: &B, config: &EngramConfig, num_seqs: usize) -> Result<()> {
        check_len("state sequences", self.num_seqs, num_seqs)?;
        check_len(
            "state ids",
            backend.len(&self.ids),
            num_seqs * (config.max_ngram_size - 1),
        )?;
        check_len(
            "state conv",
            backend.len(&self.conv),
            num_seqs * conv_state_len(config),
        )
    }
}

/// The Engram kernels. Each op's semantics, parameters and layouts are those of the function of
/// the same name in [`crate::reference`].
pub trait EngramOps: Backend {
    /// `out[i] = lookup[raw[i]]`; ids beyond `lookup` are [`Error::IdOutOfRange`].
    fn compress_ids(
        &self,
        lookup: &Self::Buffer<u32>,
        raw: &Self::Buffer<u32>,
        out: &mut Self::Buffer<u32>,
    ) -> Result<()>;

    /// One layer's rows over a packed batch (`rows`: `[T, (N - 1) K]`); see
    /// [`crate::hash::hash_packed`].
    #[allow(clippy::too_many_arguments)]
    fn hash(
        &self,
        layer: &LayerHash,
        heads_per_order: usize,
        compressed_pad_id: u32,
        compressed_vocab: u64,
        ids: &Self::Buffer<u32>,
        cu_seqlens: &Self::Buffer<u32>,
        rows: &mut Self::Buffer<u32>,
    ) -> Result<()>;

    /// The rows of each sequence's new token from its id history; see
    /// [`crate::reference::hash_decode`].
    fn hash_decode(
        &self,
        layer: &LayerHash,
        heads_per_order: usize,
        compressed_vocab: u64,
        history: &Self::Buffer<u32>,
        ids: &Self::Buffer<u32>,
        rows: &mut Self::Buffer<u32>,
    ) -> Result<()>;

    /// See [`crate::reference::gather_rows`].
    fn gather_rows<T: Element>(
        &self,
        table: &Self::Buffer<T>,
        d_head: usize,
        layer: &LayerHash,
        rows: &Self::Buffer<u32>,
        out: &mut Self::Buffer<T>,
    ) -> Result<()>;

    /// See [`crate::reference::rms_norm`].
    fn rms_norm<T: Element>(
        &self,
        x: &Self::Buffer<T>,
        weight: &Self::Buffer<T>,
        d: usize,
        eps: f64,
        out: &mut Self::Buffer<T>,
    ) -> Result<()>;

    /// See [`crate::reference::linear`].
    fn linear<T: Element>(
        &self,
        x: &Self::Buffer<T>,
        weight: &Self::Buffer<T>,
        bias: Option<&Self::Buffer<T>>,
        in_features: usize,
        out: &mut Self::Buffer<T>,
    ) -> Result<()>;

    /// See [`crate::reference::gate`].
    #[allow(clippy::too_many_arguments)]
    fn gate<T: Element>(
        &self,
        proj: &Self::Buffer<T>,
        hidden: &Self::Buffer<T>,
        key_norm: &Self::Buffer<T>,
        query_norm: &Self::Buffer<T>,
        m: usize,
        d: usize,
        value: &mut Self::Buffer<T>,
        alpha: &mut Self::Buffer<T>,
    ) -> Result<()>;

    /// See [`crate::reference::gate_norm`]: [`EngramOps::gate`] then the convolution's RMSNorm
    /// of the value. The default runs the two ops; a backend overrides it to fuse them.
    #[allow(clippy::too_many_arguments)]
    fn gate_norm<T: Element>(
        &self,
        proj: &Self::Buffer<T>,
        hidden: &Self::Buffer<T>,
        key_norm: &Self::Buffer<T>,
        query_norm: &Self::Buffer<T>,
        conv_norm: &Self::Buffer<T>,
        m: usize,
        d: usize,
        value: &mut Self::Buffer<T>,
        alpha: &mut Self::Buffer<T>,
        normed: &mut Self::Buffer<T>,
    ) -> Result<()> {
        crate::reference::check::gate_norm(
            self.len(&*value),
            self.len(conv_norm),
            m,
            d,
            self.len(&*normed),
        )?;
        self.gate(proj, hidden, key_norm, query_norm, m, d, value, alpha)?;
        self.rms_norm(value, conv_norm, d, CONV_NORM_EPS, normed)
    }

    /// See [`crate::reference::short_conv`].
    #[allow(clippy::too_many_arguments)]
    fn short_conv<T: Element>(
        &self,
        normed: &Self::Buffer<T>,
        value: &Self::Buffer<T>,
        weight: &Self::Buffer<T>,
        channels: usize,
        kernel: usize,
        dilation: usize,
        cu_seqlens: &Self::Buffer<u32>,
        out: &mut Self::Buffer<T>,
    ) -> Result<()>;

    /// See [`crate::reference::short_conv_decode`].
    #[allow(clippy::too_many_arguments)]
    fn short_conv_decode<T: Element>(
        &self,
        normed: &Self::Buffer<T>,
        value: &Self::Buffer<T>,
        weight: &Self::Buffer<T>,
        channels: usize,
        kernel: usize,
        dilation: usize,
        history: &mut Self::Buffer<T>,
        out: &mut Self::Buffer<T>,
    ) -> Result<()>;

    /// See [`crate::reference::capture_state`].
    #[allow(clippy::too_many_arguments)]
    fn capture_state<T: Element>(
        &self,
        ids: &Self::Buffer<u32>,
        cu_seqlens: &Self::Buffer<u32>,
        normed: &Self::Buffer<T>,
        keep: usize,
        hist: usize,
        channels: usize,
        pad: u32,
        state_ids: &mut Self::Buffer<u32>,
        state_conv: &mut Self::Buffer<T>,
    ) -> Result<()>;

    /// See [`crate::reference::push_ids`].
    fn push_ids(
        &self,
        history: &mut Self::Buffer<u32>,
        ids: &Self::Buffer<u32>,
        keep: usize,
    ) -> Result<()>;

    /// The layer over a packed batch; see [`crate::reference::engram_prefill`]. `gates`
    /// (`[T, M]`) receives each branch's `alpha`; `state` receives each sequence's decode state.
    #[allow(clippy::too_many_arguments)]
    fn engram_prefill<T: Element>(
        &self,
        layer: &DeviceEngramLayer<Self, T>,
        ids: &Self::Buffer<u32>,
        cu_seqlens: &Self::Buffer<u32>,
        hidden: &Self::Buffer<T>,
        out: &mut Self::Buffer<T>,
        gates: Option<&mut Self::Buffer<T>>,
        state: Option<&mut DeviceEngramState<Self, T>>,
    ) -> Result<()> {
        compose_engram_prefill(self, layer, ids, cu_seqlens, hidden, out, gates, state)
    }

    /// One decode step for every sequence of `state`; see [`crate::reference::engram_decode`].
    fn engram_decode<T: Element>(
        &self,
        layer: &DeviceEngramLayer<Self, T>,
        ids: &Self::Buffer<u32>,
        hidden: &Self::Buffer<T>,
        state: &mut DeviceEngramState<Self, T>,
        out: &mut Self::Buffer<T>,
        gates: Option<&mut Self::Buffer<T>>,
    ) -> Result<()> {
        compose_engram_decode(self, layer, ids, hidden, state, out, gates)
    }
}

/// One decode step composed from the ops: what [`EngramOps::engram_decode`] does by default,
/// callable by a backend that overrides the method for some element types only.
pub fn compose_engram_decode<B: EngramOps, T: Element>(
    backend: &B,
    layer: &DeviceEngramLayer<B, T>,
    ids: &Buf<B, u32>,
    hidden: &Buf<B, T>,
    state: &mut DeviceEngramState<B, T>,
    out: &mut Buf<B, T>,
    gates: Option<&mut Buf<B, T>>,
) -> Result<()> {
    let seqs = check_decode(backend, layer, ids, hidden, state, out, gates.as_deref())?;
    let c = &layer.config;
    let (m, d) = (c.hc_mult, c.hidden_size);
    let mut rows = backend.zeros::<u32>(seqs * c.num_heads())?;
    backend.hash_decode(
        &layer.hash,
        c.n_head_per_ngram,
        layer.compressed_vocab,
        &state.ids,
        ids,
        &mut rows,
    )?;
    let (value, normed) = gated_value(backend, layer, &rows, hidden, gates)?;
    if let Some(normed) = normed {
        backend.short_conv_decode(
            &normed,
            &value,
            &layer.conv_weight,
            m * d,
            c.kernel_size,
            c.max_ngram_size,
            &mut state.conv,
            out,
        )?;
    } else {
        backend.copy(&value, out)?;
    }
    backend.push_ids(&mut state.ids, ids, c.max_ngram_size - 1)
}

/// The shape checks of [`EngramOps::engram_prefill`] (element type, and every length against
/// `ids`, `cu_seqlens` and the layer): `(tokens, sequences)`. The contents of `cu_seqlens` are
/// not read here. For backends that override the prefill and must answer bad shapes with the
/// same errors.
#[allow(clippy::too_many_arguments)]
pub fn check_prefill<B: EngramOps, T: Element>(
    backend: &B,
    layer: &DeviceEngramLayer<B, T>,
    ids: &Buf<B, u32>,
    cu_seqlens: &Buf<B, u32>,
    hidden: &Buf<B, T>,
    out: &Buf<B, T>,
    gates: Option<&Buf<B, T>>,
    state: Option<&DeviceEngramState<B, T>>,
) -> Result<(usize, usize)> {
    check_dtype::<B, T>(backend)?;
    let c = &layer.config;
    let (m, d) = (c.hc_mult, c.hidden_size);
    let tokens = backend.len(ids);
    let seqs = backend
        .len(cu_seqlens)
        .checked_sub(1)
        .ok_or(Error::InvalidSeqLens {
            reason: "must hold at least one entry (0 for an empty batch)",
        })?;
    check_len("hidden", backend.len(hidden), tokens * m * d)?;
    check_len("output", backend.len(out), tokens * m * d)?;
    if let Some(g) = gates {
        check_len("gates", backend.len(g), tokens * m)?;
    }
    if let Some(s) = state {
        s.check(backend, c, seqs)?;
    }
    Ok((tokens, seqs))
}

/// The shape checks of [`EngramOps::engram_decode`]: the number of sequences.
pub fn check_decode<B: EngramOps, T: Element>(
    backend: &B,
    layer: &DeviceEngramLayer<B, T>,
    ids: &Buf<B, u32>,
    hidden: &Buf<B, T>,
    state: &DeviceEngramState<B, T>,
    out: &Buf<B, T>,
    gates: Option<&Buf<B, T>>,
) -> Result<usize> {
    check_dtype::<B, T>(backend)?;
    let c = &layer.config;
    let (m, d) = (c.hc_mult, c.hidden_size);
    let seqs = backend.len(ids);
    check_len("hidden", backend.len(hidden), seqs * m * d)?;
    check_len("output", backend.len(out), seqs * m * d)?;
    if let Some(g) = gates {
        check_len("gates", backend.len(g), seqs * m)?;
    }
    state.check(backend, c, seqs)?;
    Ok(seqs)
}

/// The Engram prefill composed from the ops: what [`EngramOps::engram_prefill`] does by default,
/// callable by a backend that overrides the method for some element types only.
#[allow(clippy::too_many_arguments)]
pub fn compose_engram_prefill<B: EngramOps, T: Element>(
    backend: &B,
    layer: &DeviceEngramLayer<B, T>,
    ids: &Buf<B, u32>,
    cu_seqlens: &Buf<B, u32>,
    hidden: &Buf<B, T>,
    out: &mut Buf<B, T>,
    gates: Option<&mut Buf<B, T>>,
    state: Option<&mut DeviceEngramState<B, T>>,
) -> Result<()> {
    let (tokens, _) = check_prefill(
        backend,
        layer,
        ids,
        cu_seqlens,
        hidden,
        out,
        gates.as_deref(),
        state.as_deref(),
    )?;
    let c = &layer.config;
    let (m, d) = (c.hc_mult, c.hidden_size);
    let mut rows = backend.zeros::<u32>(tokens * c.num_heads())?;
    backend.hash(
        &layer.hash,
        c.n_head_per_ngram,
        layer.compressed_pad_id,
        layer.compressed_vocab,
        ids,
        cu_seqlens,
        &mut rows,
    )?;
    let (value, normed) = gated_value(backend, layer, &rows, hidden, gates)?;
    let (channels, kernel, dilation) = (m * d, c.kernel_size, c.max_ngram_size);
    let normed = if let Some(normed) = normed {
        backend.short_conv(
            &normed,
            &value,
            &layer.conv_weight,
            channels,
            kernel,
            dilation,
            cu_seqlens,
            out,
        )?;
        normed
    } else {
        backend.copy(&value, out)?;
        backend.zeros::<T>(0)?
    };
    if let Some(state) = state {
        let hist = if c.short_conv {
            conv_history_len(kernel, dilation)
        } else {
            0
        };
        backend.capture_state(
            ids,
            cu_seqlens,
            &normed,
            c.max_ngram_size - 1,
            hist,
            channels,
            layer.compressed_pad_id,
            &mut state.ids,
            &mut state.conv,
        )?;
    }
    Ok(())
}

/// The gated value and, with the convolution, its RMSNorm.
type GatedValue<B, T> = (Buf<B, T>, Option<Buf<B, T>>);

/// Gather, stacked projection and gate (with the convolution's RMSNorm when the layer has the
/// convolution); returns `value` (`[T, M, d]`) and the normed value, and fills `gates` with each
/// branch's alpha when given (a temporary otherwise).
fn gated_value<B: EngramOps, T: Element>(
    backend: &B,
    layer: &DeviceEngramLayer<B, T>,
    rows: &Buf<B, u32>,
    hidden: &Buf<B, T>,
    gates: Option<&mut Buf<B, T>>,
) -> Result<GatedValue<B, T>> {
    let c = &layer.config;
    let (m, d) = (c.hc_mult, c.hidden_size);
    let tokens = backend.len(hidden) / (m * d);
    let mut local_alpha;
    let alpha = match gates {
        Some(g) => g,
        None => {
            local_alpha = backend.zeros::<T>(tokens * m)?;
            &mut local_alpha
        }
    };
    let mut e = backend.zeros::<T>(tokens * c.d_mem())?;
    backend.gather_rows(&layer.table, c.d_head(), &layer.hash, rows, &mut e)?;
    let mut proj = backend.zeros::<T>(tokens * (m + 1) * d)?;
    backend.linear(
        &e,
        &layer.proj_weight,
        Some(&layer.proj_bias),
        c.d_mem(),
        &mut proj,
    )?;
    let mut value = backend.zeros::<T>(tokens * m * d)?;
    if c.short_conv {
        let mut normed = backend.zeros::<T>(tokens * m * d)?;
        backend.gate_norm(
            &proj,
            hidden,
            &layer.key_norm,
            &layer.query_norm,
            &layer.conv_norm,
            m,
            d,
            &mut value,
            alpha,
            &mut normed,
        )?;
        return Ok((value, Some(normed)));
    }
    backend.gate(
        &proj,
        hidden,
        &layer.key_norm,
        &layer.query_norm,
        m,
        d,
        &mut value,
        alpha,
    )?;
    Ok((value, None))
}

/// A MoE layer whose weights live on a backend's device.
pub struct DeviceMoeLayer<B: Backend, T: Element> {
    /// The layer's configuration.
    pub config: MoeConfig,
    /// `[E, dim]`.
    pub gate_weight: Buf<B, T>,
    /// `[E]` (empty without a bias).
    pub gate_bias: Buf<B, T>,
    /// `[E, inter, dim]`.
    pub w1: Buf<B, T>,
    /// `[E, dim, inter]`.
    pub w2: Buf<B, T>,
    /// `[E, inter, dim]`.
    pub w3: Buf<B, T>,
    /// `[shared_inter, dim]` (empty without shared experts).
    pub shared_w1: Buf<B, T>,
    /// `[dim, shared_inter]`.
    pub shared_w2: Buf<B, T>,
    /// `[shared_inter, dim]`.
    pub shared_w3: Buf<B, T>,
}

impl<B: Backend, T: Element> DeviceMoeLayer<B, T> {
    /// Uploads a host layer's weights.
    pub fn upload(backend: &B, layer: &MoeLayer<T>) -> Result<Self> {
        check_dtype::<B, T>(backend)?;
        let w = &layer.weights;
        Ok(DeviceMoeLayer {
            config: layer.config.clone(),
            gate_weight: backend.upload(&w.gate_weight)?,
            gate_bias: backend.upload(&w.gate_bias)?,
            w1: backend.upload(&w.w1)?,
            w2: backend.upload(&w.w2)?,
            w3: backend.upload(&w.w3)?,
            shared_w1: backend.upload(&w.shared_w1)?,
            shared_w2: backend.upload(&w.shared_w2)?,
            shared_w3: backend.upload(&w.shared_w3)?,
        })
    }
}

/// The MoE kernels. Each op's semantics, parameters and layouts are those of the function of
/// the same name in [`crate::reference`].
pub trait MoeOps: Backend {
    /// See [`crate::reference::moe_scores`].
    fn moe_scores<T: Element>(
        &self,
        x: &Self::Buffer<T>,
        gate_weight: &Self::Buffer<T>,
        dim: usize,
        score_func: ScoreFunc,
        scores: &mut Self::Buffer<T>,
    ) -> Result<()>;

    /// See [`crate::reference::moe_route`] (including its tie rule).
    fn moe_route<T: Element>(
        &self,
        scores: &Self::Buffer<T>,
        bias: &Self::Buffer<T>,
        config: &MoeConfig,
        weights: &mut Self::Buffer<T>,
        indices: &mut Self::Buffer<u32>,
    ) -> Result<()>;

    /// See [`crate::reference::expert_ffn`].
    fn expert_ffn<T: Element>(
        &self,
        x: &Self::Buffer<T>,
        w1: &Self::Buffer<T>,
        w2: &Self::Buffer<T>,
        w3: &Self::Buffer<T>,
        dim: usize,
        out: &mut Self::Buffer<T>,
    ) -> Result<()>;

    /// See [`crate::reference::routed_experts`].
    #[allow(clippy::too_many_arguments)]
    fn routed_experts<T: Element>(
        &self,
        x: &Self::Buffer<T>,
        w1: &Self::Buffer<T>,
        w2: &Self::Buffer<T>,
        w3: &Self::Buffer<T>,
        indices: &Self::Buffer<u32>,
        dim: usize,
        inter: usize,
        out: &mut Self::Buffer<T>,
    ) -> Result<()>;

    /// See [`crate::reference::moe_combine`].
    fn moe_combine<T: Element>(
        &self,
        expert_out: &Self::Buffer<T>,
        weights: &Self::Buffer<T>,
        shared: &Self::Buffer<T>,
        dim: usize,
        out: &mut Self::Buffer<T>,
    ) -> Result<()>;

    /// The whole layer; see [`crate::reference::moe_forward`]. `weights` and `indices` (`[T, k]`)
    /// receive the routing.
    fn moe_forward<T: Element>(
        &self,
        layer: &DeviceMoeLayer<Self, T>,
        x: &Self::Buffer<T>,
        out: &mut Self::Buffer<T>,
        weights: &mut Self::Buffer<T>,
        indices: &mut Self::Buffer<u32>,
    ) -> Result<()> {
        check_dtype::<Self, T>(self)?;
        let c = &layer.config;
        let dim = c.dim;
        let n = self.len(x);
        if n % dim != 0 {
            return Err(Error::ShapeMismatch {
                what: "moe input",
                expected: dim,
                actual: n,
            });
        }
        let tokens = n / dim;
        let k = c.n_activated_experts;
        check_len("moe output", self.len(out), n)?;
        check_len("route weights", self.len(weights), tokens * k)?;
        check_len("route indices", self.len(indices), tokens * k)?;
        let mut scores = self.zeros::<T>(tokens * c.n_routed_experts)?;
        self.moe_scores(x, &layer.gate_weight, dim, c.score_func, &mut scores)?;
        self.moe_route(&scores, &layer.gate_bias, c, weights, indices)?;
        let mut expert_out = self.zeros::<T>(tokens * k * dim)?;
        self.routed_experts(
            x,
            &layer.w1,
            &layer.w2,
            &layer.w3,
            indices,
            dim,
            c.moe_inter_dim,
            &mut expert_out,
        )?;
        let mut shared = self.zeros::<T>(0)?;
        if c.n_shared_experts > 0 {
            shared = self.zeros::<T>(n)?;
            self.expert_ffn(
                x,
                &layer.shared_w1,
                &layer.shared_w2,
                &layer.shared_w3,
                dim,
                &mut shared,
            )?;
        }
        self.moe_combine(&expert_out, weights, &shared, dim, out)
    }
}
