//! The scalar oracle: straightforward code for every op and both layers, accumulating in `f64`.
//!
//! This is what every backend is compared with, so it is written to be read, not to be fast.
//! Each op reads its inputs as `T`, computes in `f64` and rounds its outputs to `T` once; with
//! `T = f64` the whole layer is computed in double precision (the reference's `output_f64`), with
//! `T = f32` each op's output is rounded as PyTorch's float32 run rounds it.
//!
//! Semantics (from the official code; see `conformance/golden/README.md`):
//! - RMSNorm: `x / sqrt(mean(x^2) + eps) * w`, eps = f32 machine epsilon for the key and query
//!   norms, 1e-5 for the convolution's norms;
//! - gate: `s = <RMSNorm(k_m), RMSNorm(h_m)> / sqrt(d)`,
//!   `alpha = sigmoid(sign(s) * sqrt(max(|s|, 1e-6)))`;
//! - short convolution: depthwise, causal, kernel `w`, dilation `N`, no bias, zero before each
//!   sequence's start; `y = u + SiLU(conv(RMSNorm_m(u)))`.

pub mod check;
pub mod engram;
pub mod moe;

use crate::batch::PackedBatch;
use crate::dtype::Element;
use crate::error::Result;
use crate::hash::LayerHash;

pub use engram::{
    capture_state, conv_state_len, engram_decode, engram_prefill, hash_decode, push_ids,
    EngramState,
};
pub use moe::{
    expert_ffn, moe_combine, moe_forward, moe_route, moe_scores, routed_experts, MoeRouting,
};

/// RMSNorm eps of the gate's key and query norms: float32 machine epsilon.
pub const KEY_QUERY_EPS: f64 = f32::EPSILON as f64;
/// RMSNorm eps of the short convolution's norms.
pub const CONV_NORM_EPS: f64 = 1e-5;
/// Lower clamp of `|s|` inside the gate's signed square root.
pub const GATE_CLAMP: f64 = 1e-6;

pub(crate) use check::len as check_len;

/// `1 / (1 + exp(-x))`.
pub fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + libm::exp(-x))
}

/// `x * sigmoid(x)`.
pub fn silu(x: f64) -> f64 {
    x * sigmoid(x)
}

/// The gate's activation: `sigmoid(sign(s) * sqrt(max(|s|, 1e-6)))`; `sign(0) = 0`.
pub fn gate_activation(s: f64) -> f64 {
    let sign = if s > 0.0 {
        1.0
    } else if s < 0.0 {
        -1.0
    } else {
        0.0
    };
    sigmoid(sign * libm::sqrt(s.abs().max(GATE_CLAMP)))
}

/// `out[i] = lookup[raw[i]]`: raw token ids to canonical ids.
pub fn compress_ids(lookup: &[u32], raw: &[u32], out: &mut [u32]) -> Result<()> {
    check::compress_ids(raw.len(), out.len())?;
    check::ids_below(raw, lookup.len() as u64)?;
    for (o, &r) in out.iter_mut().zip(raw) {
        *o = lookup[r as usize];
    }
    Ok(())
}

/// Copies table rows into `out`: `out[t, h * d_head + c] = table[offsets[h] + rows[t, h], c]`.
///
/// `table`: `[total_rows, d_head]`; `rows`: `[T, H]` (within each head's table, as the hash
/// produces them); `out`: `[T, H * d_head]`. Every row is checked against its head's table size.
pub fn gather_rows<T: Element>(
    table: &[T],
    d_head: usize,
    layer: &LayerHash,
    rows: &[u32],
    out: &mut [T],
) -> Result<()> {
    check::gather_rows(table.len(), d_head, layer, rows.len(), out.len())?;
    if let Some(i) = check::first_row_beyond(rows, &layer.table_sizes) {
        return Err(check::row_out_of_range(i, rows[i], &layer.table_sizes));
    }
    let heads = layer.table_sizes.len();
    for (i, &r) in rows.iter().enumerate() {
        let start = (layer.offsets[i % heads] + u64::from(r)) as usize * d_head;
        out[i * d_head..(i + 1) * d_head].copy_from_slice(&table[start..start + d_head]);
    }
    Ok(())
}

/// RMSNorm over groups: `x` is `[rows, G, d]`, `weight` is `[G, d]` (group `g` of every row uses
/// `weight[g]`), `out` like `x`.
pub fn rms_norm<T: Element>(
    x: &[T],
    weight: &[T],
    d: usize,
    eps: f64,
    out: &mut [T],
) -> Result<()> {
    check::rms_norm(x.len(), weight.len(), d, out.len())?;
    for (xs, (os, ws)) in x
        .chunks_exact(d)
        .zip(out.chunks_exact_mut(d).zip(weight.chunks_exact(d).cycle()))
    {
        let ms = xs.iter().map(|v| v.to_f64() * v.to_f64()).sum::<f64>() / d as f64;
        let inv = 1.0 / libm::sqrt(ms + eps);
        for ((o, v), w) in os.iter_mut().zip(xs).zip(ws) {
            *o = T::from_f64(v.to_f64() * inv * w.to_f64());
        }
    }
    Ok(())
}

/// `out = x W^T + b`: `x` `[rows, in]`, `weight` `[out_features, in]` (PyTorch's layout), `bias`
/// `[out_features]`, `out` `[rows, out_features]`.
pub fn linear<T: Element>(
    x: &[T],
    weight: &[T],
    bias: Option<&[T]>,
    in_features: usize,
    out: &mut [T],
) -> Result<()> {
    let (_, out_features) = check::linear(
        x.len(),
        weight.len(),
        bias.map(<[T]>::len),
        in_features,
        out.len(),
    )?;
    for (xs, os) in x
        .chunks_exact(in_features)
        .zip(out.chunks_exact_mut(out_features.max(1)))
    {
        for (j, o) in os.iter_mut().enumerate() {
            let w = &weight[j * in_features..(j + 1) * in_features];
            let mut acc = bias.map_or(0.0, |b| b[j].to_f64());
            for (a, b) in xs.iter().zip(w) {
                acc += a.to_f64() * b.to_f64();
            }
            *o = T::from_f64(acc);
        }
    }
    Ok(())
}

/// The context-aware gate of every branch.
///
/// `proj`: `[T, (M + 1) d]`, the stacked projection (keys `0..M`, then the value); `hidden`:
/// `[T, M, d]`; `key_norm`, `query_norm`: `[M, d]`. Writes `value[t, m] = alpha[t, m] * v[t]`
/// (`[T, M, d]`) and `alpha` (`[T, M]`).
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
) -> Result<()> {
    let tokens = check::gate(
        proj.len(),
        hidden.len(),
        key_norm.len(),
        query_norm.len(),
        m,
        d,
        value.len(),
        alpha.len(),
    )?;
    let inv_sqrt_d = 1.0 / libm::sqrt(d as f64);
    let rms = |xs: &[T]| {
        let ms = xs.iter().map(|v| v.to_f64() * v.to_f64()).sum::<f64>() / d as f64;
        1.0 / libm::sqrt(ms + KEY_QUERY_EPS)
    };
    for t in 0..tokens {
        let p = &proj[t * (m + 1) * d..(t + 1) * (m + 1) * d];
        let v = &p[m * d..];
        for b in 0..m {
            let k = &p[b * d..(b + 1) * d];
            let h = &hidden[(t * m + b) * d..(t * m + b + 1) * d];
            let (rk, rh) = (rms(k), rms(h));
            let kn = &key_norm[b * d..(b + 1) * d];
            let qn = &query_norm[b * d..(b + 1) * d];
            let mut dot = 0.0;
            for i in 0..d {
                dot +=
                    (k[i].to_f64() * rk * kn[i].to_f64()) * (h[i].to_f64() * rh * qn[i].to_f64());
            }
            let a = T::from_f64(gate_activation(dot * inv_sqrt_d));
            alpha[t * m + b] = a;
            let out = &mut value[(t * m + b) * d..(t * m + b + 1) * d];
            for (o, vi) in out.iter_mut().zip(v) {
                *o = T::from_f64(a.to_f64() * vi.to_f64());
            }
        }
    }
    Ok(())
}

/// [`gate`], then the convolution's RMSNorm of the gated value: `normed = rms_norm(value,
/// conv_norm, d, CONV_NORM_EPS)` over `[T, M, d]` with `conv_norm` `[M, d]`. One op so that a
/// backend can fuse the two passes over each branch; the value is still written (the
/// convolution adds it back).
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
) -> Result<()> {
    check::gate_norm(value.len(), conv_norm.len(), m, d, normed.len())?;
    gate(proj, hidden, key_norm, query_norm, m, d, value, alpha)?;
    rms_norm(value, conv_norm, d, CONV_NORM_EPS, normed)
}

/// Number of past positions the causal convolution reads: `(w - 1) * dilation`.
pub fn conv_history_len(kernel: usize, dilation: usize) -> usize {
    kernel.saturating_sub(1) * dilation
}

/// The short convolution over a packed batch: `out[t, c] = value[t, c] +
/// SiLU(sum_k weight[c, k] * normed[t - (w - 1 - k) * dilation, c])`, reading zero before each
/// sequence's start. `normed`, `value`, `out`: `[T, C]`; `weight`: `[C, w]`.
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
) -> Result<()> {
    let tokens = check::short_conv(
        normed.len(),
        value.len(),
        weight.len(),
        channels,
        kernel,
        out.len(),
    )?;
    let batch = PackedBatch::new(cu_seqlens, tokens)?;
    for seq in batch.sequences() {
        for t in seq.clone() {
            for c in 0..channels {
                let mut acc = 0.0;
                for k in 0..kernel {
                    let back = (kernel - 1 - k) * dilation;
                    if t >= seq.start + back {
                        acc += weight[c * kernel + k].to_f64()
                            * normed[(t - back) * channels + c].to_f64();
                    }
                }
                out[t * channels + c] = T::from_f64(value[t * channels + c].to_f64() + silu(acc));
            }
        }
    }
    Ok(())
}

/// One decode step of the short convolution for `S` sequences. `history`: `[S, L, C]` with
/// `L = (w - 1) * dilation`, the last `L` normalised inputs of each sequence, oldest first (zeros
/// before its start); it is advanced by this step's `normed` (`[S, C]`). `value`, `out`: `[S, C]`.
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
    let hist = conv_history_len(kernel, dilation);
    for s in 0..seqs {
        let h = &mut history[s * hist * channels..(s + 1) * hist * channels];
        for c in 0..channels {
            let mut acc =
                weight[c * kernel + kernel - 1].to_f64() * normed[s * channels + c].to_f64();
            for k in 0..kernel - 1 {
                let back = (kernel - 1 - k) * dilation;
                acc += weight[c * kernel + k].to_f64() * h[(hist - back) * channels + c].to_f64();
            }
            out[s * channels + c] = T::from_f64(value[s * channels + c].to_f64() + silu(acc));
        }
        if hist > 0 {
            h.copy_within(channels.., 0);
            h[(hist - 1) * channels..].copy_from_slice(&normed[s * channels..(s + 1) * channels]);
        }
    }
    Ok(())
}

/// Normalised mean squared error `sum (a - b)^2 / sum b^2` of `got` against `expected`
/// (`0` when both are all zero, infinite when only `expected` is).
pub fn nmse(got: &[f64], expected: &[f64]) -> f64 {
    let num: f64 = got
        .iter()
        .zip(expected)
        .map(|(a, b)| (a - b) * (a - b))
        .sum();
    let den: f64 = expected.iter().map(|b| b * b).sum();
    if den == 0.0 {
        if num == 0.0 {
            0.0
        } else {
            f64::INFINITY
        }
    } else {
        num / den
    }
}
