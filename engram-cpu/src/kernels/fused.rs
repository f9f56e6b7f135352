//! The Engram prefill with its element-wise tail fused: after the hash, the gather and the
//! stacked projection, one pass over each token computes every branch's gate, scales the value,
//! and normalises it for the convolution, reading the projection and the hidden states once.

use engram_core::hash::LayerHash;
use engram_core::reference::{
    self, check, conv_history_len, CONV_NORM_EPS, GATE_CLAMP, KEY_QUERY_EPS,
};
use engram_core::{Element, EngramConfig, PackedBatch, Result};

use super::hash::{hash_rows, LayerHashKernel, SharedRows};
use super::{linear, norm_gate, Parallelism};

/// One Engram layer's weights as slices (the layout of `engram_core::EngramWeights`).
#[derive(Debug, Clone, Copy)]
pub struct LayerView<'a, T> {
    /// The model's configuration.
    pub config: &'a EngramConfig,
    /// The layer's hash parameters.
    pub hash: &'a LayerHash,
    /// Canonical pad id.
    pub pad: u32,
    /// Canonical ids.
    pub vocab: u64,
    /// `[total_rows, d_head]`.
    pub table: &'a [T],
    /// `[(M + 1) d, d_mem]`.
    pub proj_weight: &'a [T],
    /// `[(M + 1) d]`.
    pub proj_bias: &'a [T],
    /// `[M, d]`.
    pub key_norm: &'a [T],
    /// `[M, d]`.
    pub query_norm: &'a [T],
    /// `[M, d]` or empty.
    pub conv_norm: &'a [T],
    /// `[M d, w]` or empty.
    pub conv_weight: &'a [T],
}

/// For each token: `alpha[t, b]`, `value[t, b] = alpha v`, and (when `conv_norm` is not empty)
/// `normed[t, b] = RMSNorm(value[t, b]) * conv_norm[b]`, in one pass over the token.
#[allow(clippy::too_many_arguments)]
pub fn gate_value_norm<T: Element>(
    proj: &[T],
    hidden: &[T],
    key_norm: &[T],
    query_norm: &[T],
    conv_norm: &[T],
    m: usize,
    d: usize,
    value: &mut [T],
    normed: &mut [T],
    alpha: &mut [T],
    par: Parallelism,
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
    let conv = !conv_norm.is_empty();
    if conv {
        check::len("conv norm", conv_norm.len(), m * d)?;
        check::len("normed", normed.len(), value.len())?;
    }
    let (eps, inv_sqrt_d) = (KEY_QUERY_EPS as f32, 1.0 / (d as f32).sqrt());
    let (vp, np, ap) = (
        SharedRows(value.as_mut_ptr()),
        SharedRows(normed.as_mut_ptr()),
        SharedRows(alpha.as_mut_ptr()),
    );
    par.for_chunks(tokens, 4, |range| {
        for t in range {
            // SAFETY: token t's rows ([t*m*d, (t+1)*m*d) of value and normed, [t*m, (t+1)*m) of
            // alpha) are written by this iteration only (chunks are disjoint), and lie inside
            // the buffers whose lengths `check` matched to `tokens`.
            let (value_t, normed_t, alpha_t) = unsafe {
                (
                    std::slice::from_raw_parts_mut(vp.get().add(t * m * d), m * d),
                    if conv {
                        std::slice::from_raw_parts_mut(np.get().add(t * m * d), m * d)
                    } else {
                        &mut [][..]
                    },
                    std::slice::from_raw_parts_mut(ap.get().add(t * m), m),
                )
            };
            let p = &proj[t * (m + 1) * d..(t + 1) * (m + 1) * d];
            let v = &p[m * d..];
            for b in 0..m {
                let k = &p[b * d..(b + 1) * d];
                let h = &hidden[(t * m + b) * d..(t * m + b + 1) * d];
                let kn = &key_norm[b * d..(b + 1) * d];
                let qn = &query_norm[b * d..(b + 1) * d];
                let (mut sk, mut sh, mut sd) = (0.0f32, 0.0f32, 0.0f32);
                for i in 0..d {
                    let (ki, hi) = (k[i].to_f32(), h[i].to_f32());
                    sk += ki * ki;
                    sh += hi * hi;
                    sd += ki * kn[i].to_f32() * hi * qn[i].to_f32();
                }
                let s =
                    sd * inv_sqrt_d / ((sk / d as f32 + eps).sqrt() * (sh / d as f32 + eps).sqrt());
                let mag = s.abs().max(GATE_CLAMP as f32).sqrt();
                let signed = if s > 0.0 {
                    mag
                } else if s < 0.0 {
                    -mag
                } else {
                    0.0
                };
                let a = T::from_f32(1.0 / (1.0 + (-signed).exp()));
                alpha_t[b] = a;
                let (af, row) = (a.to_f32(), &mut value_t[b * d..(b + 1) * d]);
                let mut ss = 0.0f32;
                for (o, vi) in row.iter_mut().zip(v) {
                    *o = T::from_f32(af * vi.to_f32());
                    let w = o.to_f32();
                    ss += w * w;
                }
                if conv {
                    let inv = 1.0 / (ss / d as f32 + CONV_NORM_EPS as f32).sqrt();
                    let cn = &conv_norm[b * d..(b + 1) * d];
                    for ((n, vi), w) in normed_t[b * d..(b + 1) * d]
                        .iter_mut()
                        .zip(row.iter())
                        .zip(cn)
                    {
                        *n = T::from_f32(vi.to_f32() * inv * w.to_f32());
                    }
                }
            }
        }
    });
    Ok(())
}

/// The whole prefill: same contract and errors as `engram_core::reference::engram_prefill`
/// (`state` is `(ids [S, N - 1], conv [S, (w - 1) N, M d])`).
#[allow(clippy::too_many_arguments)]
pub fn engram_prefill<T: Element>(
    layer: LayerView<'_, T>,
    ids: &[u32],
    cu_seqlens: &[u32],
    hidden: &[T],
    out: &mut [T],
    gates: Option<&mut [T]>,
    state: Option<(&mut [u32], &mut [T])>,
    par: Parallelism,
) -> Result<()> {
    let c = layer.config;
    let (m, d, tokens) = (c.hc_mult, c.hidden_size, ids.len());
    let batch = PackedBatch::new(cu_seqlens, tokens)?;
    check::len("hidden", hidden.len(), tokens * m * d)?;
    check::len("output", out.len(), tokens * m * d)?;
    if let Some(g) = &gates {
        check::len("gates", g.len(), tokens * m)?;
    }
    let keep = c.max_ngram_size - 1;
    let hist = if c.short_conv {
        conv_history_len(c.kernel_size, c.max_ngram_size)
    } else {
        0
    };
    if let Some((si, sc)) = &state {
        check::capture_state(
            tokens,
            batch.num_sequences(),
            tokens * m * d,
            keep,
            hist,
            m * d,
            si.len(),
            sc.len(),
        )?;
    }
    let kernel = LayerHashKernel::new(layer.hash, c.n_head_per_ngram);
    let mut rows = vec![0u32; tokens * kernel.heads()];
    hash_rows(
        &kernel,
        None,
        layer.pad,
        layer.vocab,
        ids,
        cu_seqlens,
        &mut rows,
        par,
    )?;
    let mut e = vec![T::default(); tokens * c.d_mem()];
    norm_gate::gather_rows(layer.table, c.d_head(), layer.hash, &rows, &mut e, par)?;
    let mut proj = vec![T::default(); tokens * (m + 1) * d];
    project(
        &e,
        layer.proj_weight,
        layer.proj_bias,
        c.d_mem(),
        &mut proj,
        par,
    )?;
    let mut local_alpha;
    let alpha = match gates {
        Some(g) => g,
        None => {
            local_alpha = vec![T::default(); tokens * m];
            &mut local_alpha[..]
        }
    };
    let mut value = vec![T::default(); tokens * m * d];
    let mut normed = if c.short_conv {
        vec![T::default(); tokens * m * d]
    } else {
        Vec::new()
    };
    let conv_norm = if c.short_conv {
        layer.conv_norm
    } else {
        &[][..]
    };
    gate_value_norm(
        &proj,
        hidden,
        layer.key_norm,
        layer.query_norm,
        conv_norm,
        m,
        d,
        &mut value,
        &mut normed,
        alpha,
        par,
    )?;
    if c.short_conv {
        norm_gate::short_conv(
            &normed,
            &value,
            layer.conv_weight,
            m * d,
            c.kernel_size,
            c.max_ngram_size,
            cu_seqlens,
            out,
            par,
        )?;
    } else {
        out.copy_from_slice(&value);
    }
    if let Some((si, sc)) = state {
        reference::capture_state(
            ids,
            cu_seqlens,
            &normed,
            keep,
            hist,
            m * d,
            layer.pad,
            si,
            sc,
        )?;
    }
    Ok(())
}

/// The stacked projection: GEMM for f32, the oracle otherwise.
fn project<T: Element>(
    e: &[T],
    w: &[T],
    b: &[T],
    d_mem: usize,
    out: &mut [T],
    par: Parallelism,
) -> Result<()> {
    if T::DTYPE == engram_core::DType::F32 {
        fn cast<T: Element>(s: &[T]) -> &[f32] {
            bytemuck::cast_slice(s)
        }
        return linear::linear(
            cast(e),
            cast(w),
            Some(cast(b)),
            d_mem,
            bytemuck::cast_slice_mut(out),
            par,
        );
    }
    reference::linear(e, w, Some(b), d_mem, out)
}
