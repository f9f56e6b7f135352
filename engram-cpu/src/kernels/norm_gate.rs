//! Row-parallel kernels for the layer's element-wise part: gather, RMSNorm, the gate and the
//! short convolution. Elements are widened to f32 in registers (bf16 and f16 included, no f32
//! copies of tables or activations) and every row accumulates in f32 in a fixed order, so the
//! result does not depend on the thread count.

use alloc::vec;
use alloc::vec::Vec;

use engram_core::hash::LayerHash;
use engram_core::reference::check;
use engram_core::{Element, PackedBatch, Result};

use super::Parallelism;

#[inline(always)]
fn sum_squares<T: Element>(xs: &[T]) -> f32 {
    xs.iter().map(|v| v.to_f32() * v.to_f32()).sum()
}

/// Copies table rows: same contract as the oracle's `gather_rows`.
pub fn gather_rows<T: Element>(
    table: &[T],
    d_head: usize,
    layer: &LayerHash,
    rows_in: &[u32],
    out: &mut [T],
    par: Parallelism,
) -> Result<()> {
    check::gather_rows(table.len(), d_head, layer, rows_in.len(), out.len())?;
    if let Some(i) = check::first_row_beyond(rows_in, &layer.table_sizes) {
        return Err(check::row_out_of_range(i, rows_in[i], &layer.table_sizes));
    }
    let heads = layer.table_sizes.len();
    par.for_rows(out, d_head, |i, dst| {
        let start = (layer.offsets[i % heads] + u64::from(rows_in[i])) as usize * d_head;
        dst.copy_from_slice(&table[start..start + d_head]);
    });
    Ok(())
}

/// RMSNorm over groups: same contract as the oracle's `rms_norm`.
pub fn rms_norm<T: Element>(
    x: &[T],
    weight: &[T],
    d: usize,
    eps: f64,
    out: &mut [T],
    par: Parallelism,
) -> Result<()> {
    check::rms_norm(x.len(), weight.len(), d, out.len())?;
    let groups = weight.len() / d;
    let eps = eps as f32;
    par.for_rows(out, d, |v, o| {
        let xs = &x[v * d..(v + 1) * d];
        let ws = &weight[(v % groups) * d..(v % groups + 1) * d];
        let inv = 1.0 / libm::sqrtf(sum_squares(xs) / d as f32 + eps);
        for ((o, xv), wv) in o.iter_mut().zip(xs).zip(ws) {
            *o = T::from_f32(xv.to_f32() * inv * wv.to_f32());
        }
    });
    Ok(())
}

/// The gate of every branch: same contract as the oracle's `gate`. It is the prefill's fused
/// pass ([`super::fused::gate_value_norm`]) with a zero bias and no convolution norm.
#[allow(clippy::too_many_arguments)]
pub fn gate<T: Element>(
    proj: &[T],
    hidden: &[T],
    key_norm: &[T],
    query_norm: &[T],
    m: usize,
    d: usize,
    value: &mut [T],
    alpha: &mut [T],
    par: Parallelism,
) -> Result<()> {
    gate_maybe_norm(
        proj,
        hidden,
        key_norm,
        query_norm,
        &[],
        m,
        d,
        value,
        alpha,
        &mut [],
        par,
    )
}

/// The gate and the convolution's RMSNorm of the value in one pass per token: same contract as
/// the oracle's `gate_norm`.
#[allow(clippy::too_many_arguments)]
pub fn gate_norm<T: Element>(
    proj: &[T],
    hidden: &[T],
    key_norm: &[T],
    query_norm: &[T],
    conv_norm: &[T],
    m: usize,
    d: usize,
    value: &mut [T],
    alpha: &mut [T],
    normed: &mut [T],
    par: Parallelism,
) -> Result<()> {
    check::gate_norm(value.len(), conv_norm.len(), m, d, normed.len())?;
    gate_maybe_norm(
        proj, hidden, key_norm, query_norm, conv_norm, m, d, value, alpha, normed, par,
    )
}

/// The fused pass with a zero projection bias (the op's projection already holds it), and the
/// conv norm when `conv_norm` is not empty.
#[allow(clippy::too_many_arguments)]
fn gate_maybe_norm<T: Element>(
    proj: &[T],
    hidden: &[T],
    key_norm: &[T],
    query_norm: &[T],
    conv_norm: &[T],
    m: usize,
    d: usize,
    value: &mut [T],
    alpha: &mut [T],
    normed: &mut [T],
    par: Parallelism,
) -> Result<()> {
    check::gate(
        proj.len(),
        hidden.len(),
        key_norm.len(),
        query_norm.len(),
        m,
        d,
        value.len(),
        alpha.len(),
    )?;
    let zero_bias = vec![T::default(); (m + 1) * d];
    super::fused::gate_value_norm(
        proj, &zero_bias, hidden, key_norm, query_norm, conv_norm, m, d, value, normed, alpha, par,
    )
}

/// The short convolution over a packed batch: same contract as the oracle's `short_conv`.
#[allow(clippy::too_many_arguments)]
pub fn short_conv<T: Element>(
    normed: &[T],
    value: &[T],
    weight: &[T],
    channels: usize,
    kernel: usize,
    dilation: usize,
    cu_seqlens: &[u32],
    out: &mut [T],
    par: Parallelism,
) -> Result<()> {
    let tokens = check::short_conv(
        normed.len(),
        value.len(),
        weight.len(),
        channels,
        kernel,
        out.len(),
    )?;
    let reach = ConvReach::new(&PackedBatch::new(cu_seqlens, tokens)?, tokens, dilation);
    let taps = conv_taps(weight, channels, kernel);
    let isa = super::simd::detected();
    let dst = super::hash::SharedRows(out.as_mut_ptr());
    par.for_chunks(tokens, 16, |range| {
        let mut rows = vec![NO_ROW; kernel];
        for t in range {
            reach.taps(t, &mut rows);
            // SAFETY: token t's output row lies inside `out` (`tokens x channels`, checked) and
            // only this chunk, which owns t, writes it.
            let o =
                unsafe { core::slice::from_raw_parts_mut(dst.get().add(t * channels), channels) };
            let v = &value[t * channels..(t + 1) * channels];
            conv_token(isa, &taps, normed, &rows, v, o);
        }
    });
    Ok(())
}

/// A tap with no input row (before the sequence's start).
pub(crate) const NO_ROW: usize = usize::MAX;

/// Which earlier tokens the causal convolution reads: each token's sequence start and the
/// dilation.
pub(crate) struct ConvReach {
    start: Vec<usize>,
    dilation: usize,
}

impl ConvReach {
    pub(crate) fn new(batch: &PackedBatch<'_>, tokens: usize, dilation: usize) -> Self {
        let mut start = vec![0usize; tokens];
        for seq in batch.sequences() {
            start[seq.clone()].fill(seq.start);
        }
        ConvReach { start, dilation }
    }

    /// The first token of token `t`'s sequence.
    pub(crate) fn start(&self, t: usize) -> usize {
        self.start[t]
    }

    /// Fills `rows` (one entry per tap, oldest first) with the token each tap of token `t`
    /// reads, `t - (w - 1 - k) dilation`, or [`NO_ROW`] where that lies before `t`'s sequence.
    pub(crate) fn taps(&self, t: usize, rows: &mut [usize]) {
        let kernel = rows.len();
        for (k, r) in rows.iter_mut().enumerate() {
            let back = (kernel - 1 - k) * self.dilation;
            *r = if t >= self.start[t] + back {
                t - back
            } else {
                NO_ROW
            };
        }
    }
}

/// The kernel `[C, w]` transposed to `[w, C]` and widened, so that each tap's inner loop runs
/// over contiguous channels (vectorisable).
pub(crate) fn conv_taps<T: Element>(weight: &[T], channels: usize, kernel: usize) -> Vec<f32> {
    let mut taps = vec![0.0f32; kernel * channels];
    for c in 0..channels {
        for k in 0..kernel {
            taps[k * channels + c] = weight[c * kernel + k].to_f32();
        }
    }
    taps
}

/// One token of the convolution: `out = value + SiLU(sum_k taps[k] * rows[tap_rows[k]])` over
/// `C` channels, where `rows` holds normed rows of `C` and `tap_rows[k]` is tap k's row in it
/// ([`NO_ROW`]: the tap lies before the sequence and adds nothing). Runs on AVX2 + FMA where
/// `isa` has them.
pub(crate) fn conv_token<T: Element>(
    isa: super::simd::Isa,
    taps: &[f32],
    rows: &[T],
    tap_rows: &[usize],
    value: &[T],
    out: &mut [T],
) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `detected()` found AVX2 and FMA (AVX-512 implies them) on this CPU, or, without
        // std, the build targets them, so every CPU that runs it has them.
        super::simd::Isa::Avx2Fma | super::simd::Isa::Avx512 => unsafe {
            conv_token_avx2(taps, rows, tap_rows, value, out)
        },
        _ => conv_token_body(taps, rows, tap_rows, value, out),
    }
}

/// [`conv_token`]'s arithmetic, in blocks of channels: taps outermost so the inner loop runs over
/// contiguous channels.
#[inline(always)]
pub(crate) fn conv_token_body<T: Element>(
    taps: &[f32],
    rows: &[T],
    tap_rows: &[usize],
    value: &[T],
    o: &mut [T],
) {
    const BLOCK: usize = 256;
    let c = o.len();
    let mut acc = [0.0f32; BLOCK];
    for c0 in (0..c).step_by(BLOCK) {
        let width = BLOCK.min(c - c0);
        let acc = &mut acc[..width];
        acc.fill(0.0);
        for (k, &row) in tap_rows.iter().enumerate() {
            if row == NO_ROW {
                continue;
            }
            let src = &rows[row * c + c0..row * c + c0 + width];
            let w = &taps[k * c + c0..k * c + c0 + width];
            for ((s, x), wk) in acc.iter_mut().zip(src).zip(w) {
                *s += wk * x.to_f32();
            }
        }
        let v = &value[c0..c0 + width];
        for ((o, s), v) in o[c0..c0 + width].iter_mut().zip(acc.iter()).zip(v) {
            *o = T::from_f32(v.to_f32() + s * super::simd::sigmoid(*s));
        }
    }
}

/// [`conv_token_body`] compiled for AVX2 + FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn conv_token_avx2<T: Element>(
    taps: &[f32],
    rows: &[T],
    tap_rows: &[usize],
    value: &[T],
    out: &mut [T],
) {
    conv_token_body(taps, rows, tap_rows, value, out)
}

/// One decode step of the short convolution for every sequence: same contract as the oracle's
/// `short_conv_decode` (history `[S, (kernel - 1) dilation, channels]`, oldest first, shifted by
/// one and ended with the new normed input). f32 arithmetic, tap by tap over contiguous history
/// rows; sequences in parallel (each touches only its own history and output).
#[allow(clippy::too_many_arguments)]
pub fn short_conv_decode<T: Element>(
    normed: &[T],
    value: &[T],
    weight: &[T],
    channels: usize,
    kernel: usize,
    dilation: usize,
    history: &mut [T],
    out: &mut [T],
    par: Parallelism,
) -> Result<()> {
    let seqs = check::short_conv_decode(
        normed.len(),
        value.len(),
        weight.len(),
        channels,
        kernel,
        dilation,
        history.len(),
        out.len(),
    )?;
    if seqs == 0 || channels == 0 {
        return Ok(());
    }
    let hist = (kernel - 1) * dilation;
    let one = |s: usize, h: &mut [T], o: &mut [T], acc: &mut Vec<f32>| {
        let x = &normed[s * channels..(s + 1) * channels];
        let v = &value[s * channels..(s + 1) * channels];
        acc.clear();
        acc.extend(
            x.iter()
                .enumerate()
                .map(|(c, xc)| weight[c * kernel + kernel - 1].to_f32() * xc.to_f32()),
        );
        for k in 0..kernel - 1 {
            let back = (kernel - 1 - k) * dilation;
            let row = &h[(hist - back) * channels..(hist - back + 1) * channels];
            for (c, (a, r)) in acc.iter_mut().zip(row).enumerate() {
                *a += weight[c * kernel + k].to_f32() * r.to_f32();
            }
        }
        for ((oc, &a), vc) in o.iter_mut().zip(acc.iter()).zip(v) {
            *oc = T::from_f32(vc.to_f32() + a * super::simd::sigmoid(a));
        }
        if hist > 0 {
            h.copy_within(channels.., 0);
            h[(hist - 1) * channels..].copy_from_slice(x);
        }
    };
    let hist_len = hist * channels;
    match par {
        Parallelism::Sequential => {
            let mut acc = Vec::with_capacity(channels);
            for s in 0..seqs {
                let h = &mut history[s * hist_len..(s + 1) * hist_len];
                one(s, h, &mut out[s * channels..(s + 1) * channels], &mut acc);
            }
        }
        #[cfg(feature = "std")]
        Parallelism::Rayon => {
            // An empty history (kernel 1) still gives every sequence its own (empty) slice.
            let mut empty: Vec<&mut [T]> = Vec::new();
            let hs: Vec<&mut [T]> = if hist_len == 0 {
                empty.extend((0..seqs).map(|_| &mut [][..]));
                empty
            } else {
                history.chunks_mut(hist_len).collect()
            };
            use rayon::prelude::*;
            hs.into_par_iter()
                .zip(out.par_chunks_mut(channels))
                .enumerate()
                .for_each_init(
                    || Vec::with_capacity(channels),
                    |acc, (s, (h, o))| one(s, h, o, acc),
                );
        }
    }
    Ok(())
}
