//! MoE experts on the CPU: every expert's FFN as three projections through the same linear
//! kernels as the Engram layer, and the routed experts as grouped projections over the tokens
//! sorted by expert (each expert's weights read once per batch).

use engram_core::reference::check;
use engram_core::{DType, Element, Error, Result};

use super::{linear, Parallelism};

/// `out = x W^T` (no bias) with the fastest kernel for `T`.
fn project<T: Element>(
    x: &[T],
    w: &[T],
    in_features: usize,
    out: &mut [T],
    par: Parallelism,
) -> Result<()> {
    if T::DTYPE == DType::F32 {
        fn cast<T: Element>(s: &[T]) -> &[f32] {
            bytemuck::cast_slice(s)
        }
        return linear::linear(
            cast(x),
            cast(w),
            None,
            in_features,
            bytemuck::cast_slice_mut(out),
            par,
        );
    }
    linear::linear_widening(x, w, None, in_features, out, par)
}

/// One expert over `rows` tokens: `out = W2 (SiLU(W1 x) * (W3 x))`; same contract as the
/// oracle's `expert_ffn`.
pub fn expert_ffn<T: Element>(
    x: &[T],
    w1: &[T],
    w2: &[T],
    w3: &[T],
    dim: usize,
    out: &mut [T],
    par: Parallelism,
) -> Result<()> {
    let (rows, inter) = check::expert_ffn(x.len(), w1.len(), w2.len(), w3.len(), dim)?;
    let mut a = vec![T::default(); rows * inter];
    let mut b = vec![T::default(); rows * inter];
    project(x, w1, dim, &mut a, par)?;
    project(x, w3, dim, &mut b, par)?;
    for (h, b) in a.iter_mut().zip(&b) {
        let v = h.to_f32();
        *h = T::from_f32(v / (1.0 + (-v).exp()) * b.to_f32());
    }
    project(&a, w2, inter, out, par)
}

/// Every token through each of its experts, grouped by expert; same contract as the oracle's
/// `routed_experts`.
#[allow(clippy::too_many_arguments)]
pub fn routed_experts<T: Element>(
    x: &[T],
    w1: &[T],
    w2: &[T],
    w3: &[T],
    indices: &[u32],
    dim: usize,
    inter: usize,
    out: &mut [T],
    par: Parallelism,
) -> Result<()> {
    let (_, k, experts) = check::routed_experts(
        x.len(),
        w1.len(),
        w2.len(),
        w3.len(),
        indices.len(),
        dim,
        inter,
        out.len(),
    )?;
    if let Some(position) = check::first_at_or_above(indices, experts as u64) {
        return Err(Error::IdOutOfRange {
            position,
            id: u64::from(indices[position]),
            limit: experts as u64,
        });
    }
    // Slots (token, j) grouped by expert, in slot order within each expert.
    let mut by_expert: Vec<Vec<usize>> = vec![Vec::new(); experts];
    for (slot, &e) in indices.iter().enumerate() {
        by_expert[e as usize].push(slot);
    }
    let per_expert = dim * inter;
    let mut xs = Vec::new();
    let mut ys = Vec::new();
    for (e, slots) in by_expert.iter().enumerate() {
        if slots.is_empty() {
            continue;
        }
        xs.clear();
        for &slot in slots {
            let t = slot / k;
            xs.extend_from_slice(&x[t * dim..(t + 1) * dim]);
        }
        ys.clear();
        ys.resize(slots.len() * dim, T::default());
        let span = e * per_expert..(e + 1) * per_expert;
        expert_ffn(
            &xs,
            &w1[span.clone()],
            &w2[span.clone()],
            &w3[span],
            dim,
            &mut ys,
            par,
        )?;
        for (i, &slot) in slots.iter().enumerate() {
            out[slot * dim..(slot + 1) * dim].copy_from_slice(&ys[i * dim..(i + 1) * dim]);
        }
    }
    Ok(())
}
