//! The Engram prefill with its element-wise tail fused: after the hash, the gather and the
//! stacked projection, one pass over each token computes every branch's gate, scales the value,
//! and normalises it for the convolution, reading the projection and the hidden states once.
//! The per-token pass ([`gate_value_norm`]) needs no `std`; the prefill around it does (threads,
//! `gemm`, the scratch pool).

use alloc::{vec, vec::Vec};

use engram_core::hash::LayerHash;
#[cfg(feature = "std")]
use engram_core::reference::{self, conv_history_len};
use engram_core::reference::{check, CONV_NORM_EPS, GATE_CLAMP, KEY_QUERY_EPS};
use engram_core::{Element, EngramConfig, PackedBatch, Result};

use super::hash::SharedRows;
#[cfg(feature = "std")]
use super::hash::{hash_rows, LayerHashKernel};
#[cfg(feature = "std")]
use super::linear;
use super::norm_gate::{self, NO_ROW};
use super::{simd, Parallelism};

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
/// `normed[t, b] = RMSNorm(value[t, b]) * conv_norm[b]`, in one pass over the token. `proj` is the
/// stacked projection *without* its bias, which is added here (`bias`: `[(M + 1) d]`).
#[allow(clippy::too_many_arguments)]
pub fn gate_value_norm<T: Element>(
    proj: &[T],
    bias: &[T],
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
    check::len("projection bias", bias.len(), (m + 1) * d)?;
    let conv = !conv_norm.is_empty();
    if conv {
        check::len("conv norm", conv_norm.len(), m * d)?;
        check::len("normed", normed.len(), value.len())?;
    }
    let (vp, np, ap) = (
        SharedRows(value.as_mut_ptr()),
        SharedRows(normed.as_mut_ptr()),
        SharedRows(alpha.as_mut_ptr()),
    );
    let weights = GateWeights::new(bias, key_norm, query_norm, conv_norm, m, d);
    let isa = simd::detected();
    par.for_chunks(tokens, 4, |range| {
        for t in range {
            // SAFETY: token t's rows ([t*m*d, (t+1)*m*d) of value and normed, [t*m, (t+1)*m)
            // of alpha) are written by this iteration only (chunks are disjoint), and lie
            // inside the buffers whose lengths `check` matched to `tokens`.
            let (value_t, normed_t, alpha_t) = unsafe {
                (
                    core::slice::from_raw_parts_mut(vp.get().add(t * m * d), m * d),
                    if conv {
                        core::slice::from_raw_parts_mut(np.get().add(t * m * d), m * d)
                    } else {
                        &mut [][..]
                    },
                    core::slice::from_raw_parts_mut(ap.get().add(t * m), m),
                )
            };
            let p = &proj[t * (m + 1) * d..(t + 1) * (m + 1) * d];
            let h = &hidden[t * m * d..(t + 1) * m * d];
            weights.token(isa, p, h, value_t, normed_t, alpha_t);
        }
    });
    Ok(())
}

/// Everything after the projection in one pass over the tokens: each token's gates (`alpha`,
/// `[T, M]`), gated value, its RMSNorm (`conv_norm`), and the causal convolution (`conv_weight`,
/// `[M d, w]`, dilation `dil`) with SiLU: `out = value + SiLU(conv(normed))`, `[T, M d]`. `proj` is
/// the stacked projection without its bias (`bias`, `[(M + 1) d]`).
///
/// Tokens run in chunks (in parallel), in order within a chunk. A chunk keeps the normed rows its
/// convolution still needs in a ring of `(w - 1) dil + 1` rows, so neither the value nor the
/// normed value goes to memory; it first recomputes the `(w - 1) dil` tokens before it in its
/// sequence (the same bits the chunk that owns them computes). With `state_conv`
/// (`[S, (w - 1) dil, M d]`) the last `(w - 1) dil` normed rows of every sequence are written
/// there, zeros before the sequence's start, as the oracle's `capture_state` does.
#[allow(clippy::too_many_arguments)]
pub fn gate_conv<T: Element>(
    proj: &[T],
    bias: &[T],
    hidden: &[T],
    key_norm: &[T],
    query_norm: &[T],
    conv_norm: &[T],
    conv_weight: &[T],
    m: usize,
    d: usize,
    kernel: usize,
    dil: usize,
    cu_seqlens: &[u32],
    out: &mut [T],
    alpha: &mut [T],
    state_conv: Option<&mut [T]>,
    par: Parallelism,
) -> Result<()> {
    let tokens = check::gate(
        proj.len(),
        hidden.len(),
        key_norm.len(),
        query_norm.len(),
        m,
        d,
        out.len(),
        alpha.len(),
    )?;
    let md = m * d;
    check::len("projection bias", bias.len(), (m + 1) * d)?;
    check::len("conv norm", conv_norm.len(), md)?;
    check::short_conv(
        out.len(),
        out.len(),
        conv_weight.len(),
        md,
        kernel,
        out.len(),
    )?;
    let batch = PackedBatch::new(cu_seqlens, tokens)?;
    let hist = kernel.saturating_sub(1) * dil;
    let reach = norm_gate::ConvReach::new(&batch, tokens, dil);
    // Where each token's normed row goes in the state, if anywhere; the slots before a short
    // sequence's start are zeroed here.
    let mut state_slot: Vec<usize> = Vec::new();
    let state_ptr = match state_conv {
        Some(sc) => {
            check::len("state conv", sc.len(), batch.num_sequences() * hist * md)?;
            state_slot = vec![NO_ROW; tokens];
            for (s, seq) in batch.sequences().enumerate() {
                for k in 0..hist {
                    match (seq.end + k).checked_sub(hist).filter(|&p| p >= seq.start) {
                        Some(p) => state_slot[p] = s * hist + k,
                        None => sc[(s * hist + k) * md..(s * hist + k + 1) * md].fill(T::default()),
                    }
                }
            }
            Some(SharedRows(sc.as_mut_ptr()))
        }
        None => None,
    };
    if tokens == 0 {
        return Ok(());
    }
    let taps = norm_gate::conv_taps(conv_weight, md, kernel);
    let ring_rows = hist + 1;
    let (op, ap) = (SharedRows(out.as_mut_ptr()), SharedRows(alpha.as_mut_ptr()));
    let weights = GateWeights::new(bias, key_norm, query_norm, conv_norm, m, d);
    let isa = simd::detected();
    par.for_chunks(tokens, 64, |range| {
        let mut ring = vec![T::default(); ring_rows * md];
        let mut value = vec![T::default(); md];
        let mut spare_alpha = vec![T::default(); m];
        let mut tap_rows = vec![NO_ROW; kernel];
        let first = reach
            .start(range.start)
            .max(range.start.saturating_sub(hist));
        for t in first..range.end {
            let owned = t >= range.start;
            let slot = t % ring_rows;
            // Tokens before the chunk write a spare alpha row.
            let alpha_t = if owned {
                // SAFETY: token t's alpha row lies inside `alpha` (`tokens x m`, checked) and
                // only the chunk that owns t writes it.
                unsafe { core::slice::from_raw_parts_mut(ap.get().add(t * m), m) }
            } else {
                &mut spare_alpha[..]
            };
            let normed_t = &mut ring[slot * md..(slot + 1) * md];
            weights.token(
                isa,
                &proj[t * (m + 1) * d..(t + 1) * (m + 1) * d],
                &hidden[t * md..(t + 1) * md],
                &mut value,
                normed_t,
                alpha_t,
            );
            if !owned {
                continue;
            }
            if let (Some(sp), Some(&slot_s)) = (state_ptr, state_slot.get(t)) {
                if slot_s != NO_ROW {
                    // SAFETY: state row `slot_s` lies inside the state (`S x hist x md`,
                    // checked) and belongs to token t alone, which this chunk owns.
                    let dst =
                        unsafe { core::slice::from_raw_parts_mut(sp.get().add(slot_s * md), md) };
                    dst.copy_from_slice(&ring[slot * md..(slot + 1) * md]);
                }
            }
            // The taps' tokens, as rows of the ring.
            reach.taps(t, &mut tap_rows);
            for r in tap_rows.iter_mut().filter(|r| **r != NO_ROW) {
                *r %= ring_rows;
            }
            // SAFETY: token t's output row lies inside `out` (`tokens x md`, checked) and only
            // this chunk, which owns t, writes it.
            let out_t = unsafe { core::slice::from_raw_parts_mut(op.get().add(t * md), md) };
            norm_gate::conv_token(isa, &taps, &ring, &tap_rows, &value, out_t);
        }
    });
    Ok(())
}

/// The gate pass's per-layer vectors (the projection's bias, the key, query and convolution
/// norms) in element type `N`.
#[derive(Clone, Copy)]
struct GateVectors<'a, N> {
    bias: &'a [N],
    key_norm: &'a [N],
    query_norm: &'a [N],
    /// Empty when the layer has no convolution.
    conv_norm: &'a [N],
    m: usize,
    d: usize,
}

/// The gate pass's per-layer vectors as the tokens read them: f16 ones widened to f32 once per
/// call (each f16 widening costs several operations, and every token reads every vector), the
/// others as they are (widening them costs one operation or none, and f32 copies would double
/// the bytes each token reads).
struct GateWeights<'a, T> {
    own: GateVectors<'a, T>,
    wide: Option<[Vec<f32>; 4]>,
}

impl<'a, T: Element> GateWeights<'a, T> {
    fn new(
        bias: &'a [T],
        key_norm: &'a [T],
        query_norm: &'a [T],
        conv_norm: &'a [T],
        m: usize,
        d: usize,
    ) -> Self {
        let own = GateVectors {
            bias,
            key_norm,
            query_norm,
            conv_norm,
            m,
            d,
        };
        let widen = |v: &[T]| v.iter().map(|x| x.to_f32()).collect();
        let wide = (T::DTYPE == engram_core::DType::F16).then(|| {
            [
                widen(bias),
                widen(key_norm),
                widen(query_norm),
                widen(conv_norm),
            ]
        });
        GateWeights { own, wide }
    }

    /// One token of the gate pass on AVX2 + FMA where `isa` has them: `p` its projection row,
    /// `h` its hidden row; writes its values, normed values (when there is a convolution norm)
    /// and gates.
    fn token(
        &self,
        isa: simd::Isa,
        p: &[T],
        h: &[T],
        value_t: &mut [T],
        normed_t: &mut [T],
        alpha_t: &mut [T],
    ) {
        match &self.wide {
            Some([bias, key_norm, query_norm, conv_norm]) => {
                let w = GateVectors {
                    bias: &bias[..],
                    key_norm: &key_norm[..],
                    query_norm: &query_norm[..],
                    conv_norm: &conv_norm[..],
                    m: self.own.m,
                    d: self.own.d,
                };
                gate_token_on(isa, &w, p, h, value_t, normed_t, alpha_t)
            }
            None => gate_token_on(isa, &self.own, p, h, value_t, normed_t, alpha_t),
        }
    }
}

/// [`gate_token`], compiled for AVX2 + FMA where `isa` has them.
fn gate_token_on<T: Element, N: Element>(
    isa: simd::Isa,
    w: &GateVectors<'_, N>,
    p: &[T],
    h: &[T],
    value_t: &mut [T],
    normed_t: &mut [T],
    alpha_t: &mut [T],
) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `detected()` found AVX2 and FMA (AVX-512 implies them) on this CPU, or,
        // without std, the build targets them.
        simd::Isa::Avx2Fma | simd::Isa::Avx512 => unsafe {
            gate_token_avx2(w, p, h, value_t, normed_t, alpha_t)
        },
        _ => gate_token(w, p, h, value_t, normed_t, alpha_t),
    }
}

/// One token of the gate pass (see [`GateWeights::token`]); `N` is the vectors' element type.
#[inline(always)]
fn gate_token<T: Element, N: Element>(
    w: &GateVectors<'_, N>,
    p: &[T],
    h: &[T],
    value_t: &mut [T],
    normed_t: &mut [T],
    alpha_t: &mut [T],
) {
    const L: usize = simd::LANES;
    let (m, d) = (w.m, w.d);
    let (eps, inv_sqrt_d) = (KEY_QUERY_EPS as f32, 1.0 / libm::sqrtf(d as f32));
    let v = &p[m * d..];
    let vb = &w.bias[m * d..];
    for b in 0..m {
        let k = &p[b * d..(b + 1) * d];
        let kb = &w.bias[b * d..(b + 1) * d];
        let hb = &h[b * d..(b + 1) * d];
        let kn = &w.key_norm[b * d..(b + 1) * d];
        let qn = &w.query_norm[b * d..(b + 1) * d];
        let (mut sk, mut sh, mut sd) = ([0.0f32; L], [0.0f32; L], [0.0f32; L]);
        let n = d / L * L;
        for ((((kc, kbc), hc), knc), qnc) in k[..n]
            .chunks_exact(L)
            .zip(kb[..n].chunks_exact(L))
            .zip(hb[..n].chunks_exact(L))
            .zip(kn[..n].chunks_exact(L))
            .zip(qn[..n].chunks_exact(L))
        {
            for l in 0..L {
                let (ki, hi) = (kc[l].to_f32() + kbc[l].to_f32(), hc[l].to_f32());
                sk[l] += ki * ki;
                sh[l] += hi * hi;
                sd[l] += ki * knc[l].to_f32() * hi * qnc[l].to_f32();
            }
        }
        for i in n..d {
            let (ki, hi) = (k[i].to_f32() + kb[i].to_f32(), hb[i].to_f32());
            sk[0] += ki * ki;
            sh[0] += hi * hi;
            sd[0] += ki * kn[i].to_f32() * hi * qn[i].to_f32();
        }
        let (sk, sh, sd) = (simd::reduce(sk), simd::reduce(sh), simd::reduce(sd));
        let s =
            sd * inv_sqrt_d / (libm::sqrtf(sk / d as f32 + eps) * libm::sqrtf(sh / d as f32 + eps));
        let mag = libm::sqrtf(s.abs().max(GATE_CLAMP as f32));
        let signed = if s > 0.0 {
            mag
        } else if s < 0.0 {
            -mag
        } else {
            0.0
        };
        let a = T::from_f32(simd::sigmoid(signed));
        alpha_t[b] = a;
        let (af, row) = (a.to_f32(), &mut value_t[b * d..(b + 1) * d]);
        let mut ss = [0.0f32; L];
        for ((oc, vc), vbc) in row[..n]
            .chunks_exact_mut(L)
            .zip(v[..n].chunks_exact(L))
            .zip(vb[..n].chunks_exact(L))
        {
            for l in 0..L {
                oc[l] = T::from_f32(af * (vc[l].to_f32() + vbc[l].to_f32()));
                let x = oc[l].to_f32();
                ss[l] += x * x;
            }
        }
        for i in n..d {
            row[i] = T::from_f32(af * (v[i].to_f32() + vb[i].to_f32()));
            let x = row[i].to_f32();
            ss[0] += x * x;
        }
        if !w.conv_norm.is_empty() {
            let inv = 1.0 / libm::sqrtf(simd::reduce(ss) / d as f32 + CONV_NORM_EPS as f32);
            let cn = &w.conv_norm[b * d..(b + 1) * d];
            for ((o, vi), c) in normed_t[b * d..(b + 1) * d]
                .iter_mut()
                .zip(row.iter())
                .zip(cn)
            {
                *o = T::from_f32(vi.to_f32() * inv * c.to_f32());
            }
        }
    }
}

/// Reusable working memory for the prefill (with the `std` feature), so its intermediates (rows, gathered rows, the
/// projection, values, normalised values) are not fresh pages, page-faulted and zeroed on every
/// call. Held by the backend; freed with it.
#[cfg(feature = "std")]
#[derive(Debug, Default)]
pub struct Scratch {
    pool: std::sync::Mutex<Vec<Vec<u64>>>,
}

#[cfg(feature = "std")]
impl Scratch {
    /// A buffer of at least `bytes` bytes (contents unspecified).
    fn take(&self, bytes: usize) -> Vec<u64> {
        let words = bytes.div_ceil(8);
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        match pool.iter().position(|v| v.len() >= words) {
            Some(i) => pool.swap_remove(i),
            None => vec![0u64; words],
        }
    }

    /// Returns a buffer to the pool.
    fn give(&self, v: Vec<u64>) {
        self.pool.lock().unwrap_or_else(|e| e.into_inner()).push(v);
    }

    /// One buffer of at least `bytes[i]` bytes for each `i`, given back to the pool when the
    /// result drops (whether the call that took them succeeded or not).
    fn take_all<const N: usize>(&self, bytes: [usize; N]) -> Taken<'_, N> {
        Taken {
            scratch: self,
            bufs: bytes.map(|b| self.take(b)),
        }
    }
}

/// Buffers taken from a [`Scratch`] pool for one call.
#[cfg(feature = "std")]
struct Taken<'a, const N: usize> {
    scratch: &'a Scratch,
    bufs: [Vec<u64>; N],
}

#[cfg(feature = "std")]
impl<const N: usize> Drop for Taken<'_, N> {
    fn drop(&mut self) {
        for b in &mut self.bufs {
            self.scratch.give(std::mem::take(b));
        }
    }
}

/// The stacked projection (without its bias) of the table rows `rows` names: gathered into `e`,
/// then through the fastest GEMM for `T`.
#[cfg(feature = "std")]
fn project_rows<T: Element>(
    layer: &LayerView<'_, T>,
    rows: &[u32],
    e: &mut [T],
    proj: &mut [T],
    par: Parallelism,
) -> Result<()> {
    let c = layer.config;
    norm_gate::gather_rows(layer.table, c.d_head(), layer.hash, rows, e, par)?;
    linear::fastest(e, layer.proj_weight, None, c.d_mem(), proj, par)
}

/// The gate pass alone, its gated values straight into `out` (layers without the convolution).
#[cfg(feature = "std")]
fn gate_into_out<T: Element>(
    layer: &LayerView<'_, T>,
    proj: &[T],
    hidden: &[T],
    out: &mut [T],
    alpha: &mut [T],
    par: Parallelism,
) -> Result<()> {
    let c = layer.config;
    gate_value_norm(
        proj,
        layer.proj_bias,
        hidden,
        layer.key_norm,
        layer.query_norm,
        &[],
        c.hc_mult,
        c.hidden_size,
        out,
        &mut [],
        alpha,
        par,
    )
}

/// The lengths the prefill and the decode both check: `hidden` and `out` `[count, M d]`, `gates`
/// (when given) `[count, M]`.
#[cfg(feature = "std")]
fn check_layer_io<T>(
    hidden: &[T],
    out: &[T],
    gates: Option<&[T]>,
    count: usize,
    m: usize,
    d: usize,
) -> Result<()> {
    check::len("hidden", hidden.len(), count * m * d)?;
    check::len("output", out.len(), count * m * d)?;
    if let Some(g) = gates {
        check::len("gates", g.len(), count * m)?;
    }
    Ok(())
}

#[cfg(feature = "std")]
/// The first `n` elements of a scratch buffer as `T` (element sizes 2, 4, 8 divide its 8-byte
/// words and its 8-byte alignment suits them).
fn view<T: bytemuck::Pod>(v: &mut [u64], n: usize) -> &mut [T] {
    &mut bytemuck::cast_slice_mut::<u64, T>(v)[..n]
}

/// [`gate_token`] compiled for AVX2 + FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn gate_token_avx2<T: Element, N: Element>(
    w: &GateVectors<'_, N>,
    p: &[T],
    h: &[T],
    value_t: &mut [T],
    normed_t: &mut [T],
    alpha_t: &mut [T],
) {
    gate_token(w, p, h, value_t, normed_t, alpha_t)
}

/// The whole prefill: same contract and errors as `engram_core::reference::engram_prefill`
/// (`state` is `(ids [S, N - 1], conv [S, (w - 1) N, M d])`).
#[cfg(feature = "std")]
#[allow(clippy::too_many_arguments)]
pub fn engram_prefill<T: Element>(
    layer: LayerView<'_, T>,
    ids: &[u32],
    cu_seqlens: &[u32],
    hidden: &[T],
    out: &mut [T],
    gates: Option<&mut [T]>,
    state: Option<(&mut [u32], &mut [T])>,
    scratch: &Scratch,
    par: Parallelism,
) -> Result<()> {
    let c = layer.config;
    let (m, d, tokens) = (c.hc_mult, c.hidden_size, ids.len());
    let batch = PackedBatch::new(cu_seqlens, tokens)?;
    check_layer_io(hidden, out, gates.as_deref(), tokens, m, d)?;
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
    let size = std::mem::size_of::<T>();
    let (n_rows, n_e, n_proj) = (
        tokens * kernel.heads(),
        tokens * c.d_mem(),
        tokens * (m + 1) * d,
    );
    let mut work = scratch.take_all([n_rows * 4, n_e * size, n_proj * size, tokens * m * size]);
    let [rows_b, e_b, proj_b, alpha_b] = &mut work.bufs;
    let rows = view::<u32>(rows_b, n_rows);
    hash_rows(
        &kernel,
        None,
        layer.pad,
        layer.vocab,
        ids,
        cu_seqlens,
        rows,
        par,
    )?;
    let proj = view::<T>(proj_b, n_proj);
    project_rows(&layer, rows, view::<T>(e_b, n_e), proj, par)?;
    let alpha = gates.unwrap_or_else(|| view::<T>(alpha_b, tokens * m));
    let (state_ids, state_conv) = match state {
        Some((si, sc)) => (Some(si), Some(sc)),
        None => (None, None),
    };
    if c.short_conv {
        gate_conv(
            proj,
            layer.proj_bias,
            hidden,
            layer.key_norm,
            layer.query_norm,
            layer.conv_norm,
            layer.conv_weight,
            m,
            d,
            c.kernel_size,
            c.max_ngram_size,
            cu_seqlens,
            out,
            alpha,
            state_conv,
            par,
        )?;
    } else {
        gate_into_out(&layer, proj, hidden, out, alpha, par)?;
    }
    if let Some(si) = state_ids {
        // The ids' part of the state (the convolution's came from the pass above).
        reference::capture_state::<T>(
            ids,
            cu_seqlens,
            &[],
            keep,
            0,
            m * d,
            layer.pad,
            si,
            &mut [],
        )?;
    }
    Ok(())
}

/// One decode step for every sequence: same contract and errors as
/// `engram_core::reference::engram_decode` (`ids` `[S]`, `hidden` and `out` `[S, M d]`, state
/// `(ids [S, N - 1], conv [S, (w - 1) N, M d])`, advanced in place), through the same kernels as
/// the prefill, with its intermediates in `scratch` (no fresh pages per step). Nothing is
/// written when an id is out of range.
#[cfg(feature = "std")]
#[allow(clippy::too_many_arguments)]
pub fn engram_decode<T: Element>(
    layer: LayerView<'_, T>,
    ids: &[u32],
    hidden: &[T],
    state: (&mut [u32], &mut [T]),
    out: &mut [T],
    gates: Option<&mut [T]>,
    scratch: &Scratch,
    par: Parallelism,
) -> Result<()> {
    let c = layer.config;
    let (m, d, seqs) = (c.hc_mult, c.hidden_size, ids.len());
    let (state_ids, state_conv) = state;
    let keep = c.max_ngram_size - 1;
    check_layer_io(hidden, out, gates.as_deref(), seqs, m, d)?;
    check::len("state ids", state_ids.len(), seqs * keep)?;
    if c.short_conv {
        let hist = conv_history_len(c.kernel_size, c.max_ngram_size);
        check::len("state conv", state_conv.len(), seqs * hist * m * d)?;
    }
    let size = std::mem::size_of::<T>();
    let (n_rows, n_e, n_proj, n_val) = (
        seqs * c.num_heads(),
        seqs * c.d_mem(),
        seqs * (m + 1) * d,
        seqs * m * d,
    );
    let mut work = scratch.take_all([
        n_rows * 4,
        n_e * size,
        n_proj * size,
        n_val * size,
        n_val * size,
        seqs * m * size,
    ]);
    let [rows_b, e_b, proj_b, value_b, normed_b, alpha_b] = &mut work.bufs;
    let rows = view::<u32>(rows_b, n_rows);
    reference::hash_decode(
        layer.hash,
        c.n_head_per_ngram,
        layer.vocab,
        state_ids,
        ids,
        rows,
    )?;
    let proj = view::<T>(proj_b, n_proj);
    project_rows(&layer, rows, view::<T>(e_b, n_e), proj, par)?;
    let alpha = gates.unwrap_or_else(|| view::<T>(alpha_b, seqs * m));
    if c.short_conv {
        let (value, normed) = (view::<T>(value_b, n_val), view::<T>(normed_b, n_val));
        gate_value_norm(
            proj,
            layer.proj_bias,
            hidden,
            layer.key_norm,
            layer.query_norm,
            layer.conv_norm,
            m,
            d,
            value,
            normed,
            alpha,
            par,
        )?;
        norm_gate::short_conv_decode(
            normed,
            value,
            layer.conv_weight,
            m * d,
            c.kernel_size,
            c.max_ngram_size,
            state_conv,
            out,
            par,
        )?;
    } else {
        gate_into_out(&layer, proj, hidden, out, alpha, par)?;
    }
    reference::push_ids(state_ids, ids, keep)
}

#[cfg(test)]
#[cfg(feature = "std")]
mod tests {
    use super::*;
    use engram_core::{bf16, synthetic};

    /// The fused tail's outputs: `(out, alpha, state_conv)`.
    type Tail<T> = (Vec<T>, Vec<T>, Vec<T>);

    /// Sequences shorter than the convolution's reach, and long ones spanning several chunks.
    const CU: [u32; 7] = [0, 1, 5, 200, 201, 450, 700];
    const M: usize = 2;
    const D: usize = 40;
    const KERNEL: usize = 4;
    const DIL: usize = 3;
    const HIST: usize = (KERNEL - 1) * DIL;

    struct Inputs<T> {
        proj: Vec<T>,
        bias: Vec<T>,
        hidden: Vec<T>,
        key_norm: Vec<T>,
        query_norm: Vec<T>,
        conv_norm: Vec<T>,
        conv_weight: Vec<T>,
    }

    fn inputs<T: Element>() -> Inputs<T> {
        let tokens = CU[CU.len() - 1] as usize;
        Inputs {
            proj: synthetic::activations(tokens * (M + 1) * D, 1.0, 1),
            bias: synthetic::activations((M + 1) * D, 0.3, 2),
            hidden: synthetic::activations(tokens * M * D, 1.5, 3),
            key_norm: synthetic::activations(M * D, 1.0, 4),
            query_norm: synthetic::activations(M * D, 1.0, 5),
            conv_norm: synthetic::activations(M * D, 1.0, 6),
            conv_weight: synthetic::activations(M * D * KERNEL, 0.5, 7),
        }
    }

    /// Runs [`gate_conv`] on `x` with `state` for the state's convolution rows: `(out, alpha)`.
    fn run_tail<T: Element>(
        x: &Inputs<T>,
        par: Parallelism,
        state: &mut [T],
    ) -> Result<(Vec<T>, Vec<T>)> {
        let tokens = CU[CU.len() - 1] as usize;
        let mut out = vec![T::default(); tokens * M * D];
        let mut alpha = vec![T::default(); tokens * M];
        gate_conv(
            &x.proj,
            &x.bias,
            &x.hidden,
            &x.key_norm,
            &x.query_norm,
            &x.conv_norm,
            &x.conv_weight,
            M,
            D,
            KERNEL,
            DIL,
            &CU,
            &mut out,
            &mut alpha,
            Some(state),
            par,
        )?;
        Ok((out, alpha))
    }

    fn fused<T: Element>(x: &Inputs<T>, par: Parallelism) -> Tail<T> {
        // Poisoned, so that a slot the pass forgets shows.
        let mut state = vec![T::from_f32(7.0); (CU.len() - 1) * HIST * M * D];
        let (out, alpha) = run_tail(x, par, &mut state).unwrap();
        (out, alpha, state)
    }

    /// The oracle's composition in f64: bias, gate, RMSNorm, convolution, state capture.
    fn oracle<T: Element>(x: &Inputs<T>) -> Tail<f64> {
        let tokens = CU[CU.len() - 1] as usize;
        let wide = |v: &[T]| v.iter().map(|a| a.to_f64()).collect::<Vec<f64>>();
        let mut proj = wide(&x.proj);
        for row in proj.chunks_exact_mut((M + 1) * D) {
            for (p, b) in row.iter_mut().zip(&x.bias) {
                *p += b.to_f64();
            }
        }
        let (mut value, mut alpha, mut normed) = (
            vec![0.0; tokens * M * D],
            vec![0.0; tokens * M],
            vec![0.0; tokens * M * D],
        );
        reference::gate_norm(
            &proj,
            &wide(&x.hidden),
            &wide(&x.key_norm),
            &wide(&x.query_norm),
            &wide(&x.conv_norm),
            M,
            D,
            &mut value,
            &mut alpha,
            &mut normed,
        )
        .unwrap();
        let mut out = vec![0.0; tokens * M * D];
        reference::short_conv(
            &normed,
            &value,
            &wide(&x.conv_weight),
            M * D,
            KERNEL,
            DIL,
            &CU,
            &mut out,
        )
        .unwrap();
        let ids = vec![0u32; tokens];
        let mut state = vec![0.0; (CU.len() - 1) * HIST * M * D];
        reference::capture_state(&ids, &CU, &normed, 0, HIST, M * D, 0, &mut [], &mut state)
            .unwrap();
        (out, alpha, state)
    }

    fn check<T: Element>(bound: f64) {
        let x = inputs::<T>();
        let one = fused(&x, Parallelism::Sequential);
        let pool = fused(&x, Parallelism::Rayon);
        assert!(one == pool, "the chunking changes no bit");
        let want = oracle(&x);
        let wide = |v: &[T]| v.iter().map(|a| a.to_f64()).collect::<Vec<f64>>();
        for (what, got, want) in [
            ("out", &one.0, &want.0),
            ("alpha", &one.1, &want.1),
            ("state", &one.2, &want.2),
        ] {
            let nmse = reference::nmse(&wide(got), want);
            assert!(nmse < bound, "{what}: nmse {nmse}");
        }
    }

    #[test]
    fn the_fused_tail_matches_the_oracle_in_f32() {
        check::<f32>(1e-9);
    }

    #[test]
    fn the_fused_tail_matches_the_oracle_in_bf16() {
        check::<bf16>(1e-3);
    }

    /// No tokens: nothing to compute, on one thread too, and every state slot is zero.
    #[test]
    fn an_empty_batch_zeroes_the_state() {
        let x = inputs::<f32>();
        let mut state = vec![7.0f32; 2 * HIST * M * D];
        let (mut out, mut alpha) = (Vec::new(), Vec::new());
        gate_conv(
            &x.proj[..0],
            &x.bias,
            &x.hidden[..0],
            &x.key_norm,
            &x.query_norm,
            &x.conv_norm,
            &x.conv_weight,
            M,
            D,
            KERNEL,
            DIL,
            &[0, 0, 0],
            &mut out,
            &mut alpha,
            Some(&mut state),
            Parallelism::Sequential,
        )
        .unwrap();
        assert!(state.iter().all(|&v| v == 0.0));
    }

    #[test]
    fn a_wrong_state_length_is_an_error() {
        let err = run_tail(&inputs::<f32>(), Parallelism::Sequential, &mut [0.0; 3]);
        assert!(matches!(err, Err(engram_core::Error::ShapeMismatch { .. })));
    }
}
