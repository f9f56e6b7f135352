//! The DeepSeek-V3 MoE layer, composed from the oracle's ops.
//!
//! Routing follows the reference `Gate`: scores are `softmax` or `sigmoid` of `x W_g^T`; a bias,
//! when present, shifts the scores used to *choose* experts, never the weights; with groups, a
//! group's score is the sum of its best two biased scores (with a bias) or its best score
//! (without), the best `n_limited_groups` groups are kept, and the top-k experts are chosen among
//! theirs; weights are the chosen experts' unbiased scores, renormalised to sum to one for
//! sigmoid, times `route_scale`.
//!
//! **Tie rule** (the same on every backend): whenever scores are ranked, a higher score comes
//! first and, among equal scores, the lower index (expert or group) comes first; scores are
//! compared with IEEE `totalOrder`, so even NaN has a fixed place.

use alloc::vec;
use alloc::vec::Vec;
use core::cmp::Ordering;

use super::{check, check_len, linear, sigmoid, silu};
use crate::config::{MoeConfig, ScoreFunc};
use crate::dtype::Element;
use crate::error::{Error, Result};
use crate::weights::MoeLayer;

/// The ranking order of the tie rule: higher score first, then lower index.
fn rank(a: (usize, f64), b: (usize, f64)) -> Ordering {
    b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
}

/// Gate scores: `scores[t, e] = f(x[t] . W_g[e])` with `f` softmax over `e` or sigmoid.
/// `x`: `[T, dim]`; `gate_weight`: `[E, dim]`; `scores`: `[T, E]`.
pub fn moe_scores<T: Element>(
    x: &[T],
    gate_weight: &[T],
    dim: usize,
    score_func: ScoreFunc,
    scores: &mut [T],
) -> Result<()> {
    let mut logits = vec![T::default(); scores.len()];
    linear(x, gate_weight, None, dim, &mut logits)?;
    let experts = gate_weight.len() / dim;
    for (ls, ss) in logits
        .chunks_exact(experts)
        .zip(scores.chunks_exact_mut(experts))
    {
        match score_func {
            ScoreFunc::Sigmoid => {
                for (s, l) in ss.iter_mut().zip(ls) {
                    *s = T::from_f64(sigmoid(l.to_f64()));
                }
            }
            ScoreFunc::Softmax => {
                let max = ls
                    .iter()
                    .map(|l| l.to_f64())
                    .fold(f64::NEG_INFINITY, f64::max);
                let sum: f64 = ls.iter().map(|l| libm::exp(l.to_f64() - max)).sum();
                for (s, l) in ss.iter_mut().zip(ls) {
                    *s = T::from_f64(libm::exp(l.to_f64() - max) / sum);
                }
            }
        }
    }
    Ok(())
}

/// Chooses each token's experts and their weights from its scores.
///
/// `scores`: `[T, E]`; `bias`: `[E]` or empty; `weights`: `[T, k]`; `indices`: `[T, k]`, best
/// first (see the tie rule in the module documentation).
pub fn moe_route<T: Element>(
    scores: &[T],
    bias: &[T],
    config: &MoeConfig,
    weights: &mut [T],
    indices: &mut [u32],
) -> Result<()> {
    let tokens = check::moe_route(
        scores.len(),
        bias.len(),
        config,
        weights.len(),
        indices.len(),
    )?;
    let (e, k) = (config.n_routed_experts, config.n_activated_experts);
    let (groups, per_group) = (config.n_expert_groups, config.experts_per_group());
    let mut biased = vec![0.0f64; e];
    let mut order: Vec<(usize, f64)> = Vec::with_capacity(e);
    for t in 0..tokens {
        let s = &scores[t * e..(t + 1) * e];
        for (i, b) in biased.iter_mut().enumerate() {
            *b = s[i].to_f64() + bias.get(i).map_or(0.0, |v| v.to_f64());
        }
        let mut allowed = vec![true; e];
        if groups > 1 {
            let mut group_scores: Vec<(usize, f64)> = (0..groups)
                .map(|g| {
                    let mut members: Vec<f64> = biased[g * per_group..(g + 1) * per_group].to_vec();
                    members.sort_by(|a, b| b.total_cmp(a));
                    let score = if bias.is_empty() {
                        members[0]
                    } else {
                        members[0] + members[1]
                    };
                    (g, score)
                })
                .collect();
            group_scores.sort_by(|a, b| rank(*a, *b));
            allowed.fill(false);
            for &(g, _) in &group_scores[..config.n_limited_groups] {
                allowed[g * per_group..(g + 1) * per_group].fill(true);
            }
        }
        order.clear();
        order.extend((0..e).filter(|&i| allowed[i]).map(|i| (i, biased[i])));
        order.sort_by(|a, b| rank(*a, *b));
        let chosen = &order[..k];
        let mut w: Vec<f64> = chosen.iter().map(|&(i, _)| s[i].to_f64()).collect();
        if config.score_func == ScoreFunc::Sigmoid {
            let sum: f64 = w.iter().sum();
            for v in &mut w {
                *v /= sum;
            }
        }
        for (j, (&(i, _), v)) in chosen.iter().zip(&w).enumerate() {
            indices[t * k + j] = i as u32;
            weights[t * k + j] = T::from_f64(v * config.route_scale);
        }
    }
    Ok(())
}

/// One expert (or the fused shared experts): `out = W2 (SiLU(W1 x) * (W3 x))`.
/// `x`: `[rows, dim]`; `w1`, `w3`: `[inter, dim]`; `w2`: `[dim, inter]`; `out`: `[rows, dim]`.
pub fn expert_ffn<T: Element>(
    x: &[T],
    w1: &[T],
    w2: &[T],
    w3: &[T],
    dim: usize,
    out: &mut [T],
) -> Result<()> {
    let (rows, inter) = check::expert_ffn(x.len(), w1.len(), w2.len(), w3.len(), dim)?;
    let mut a = vec![T::default(); rows * inter];
    let mut b = vec![T::default(); rows * inter];
    linear(x, w1, None, dim, &mut a)?;
    linear(x, w3, None, dim, &mut b)?;
    let h: Vec<T> = a
        .iter()
        .zip(&b)
        .map(|(a, b)| T::from_f64(silu(a.to_f64()) * b.to_f64()))
        .collect();
    linear(&h, w2, None, inter, out)
}

/// Every token through each of its chosen experts: `out[t, j] = expert_{indices[t, j]}(x[t])`.
/// `x`: `[T, dim]`; `w1`, `w3`: `[E, inter, dim]`; `w2`: `[E, dim, inter]`; `indices`: `[T, k]`;
/// `out`: `[T, k, dim]`.
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
) -> Result<()> {
    let (tokens, k, experts) = check::routed_experts(
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
    let per_expert = dim * inter;
    for t in 0..tokens {
        for j in 0..k {
            let span = indices[t * k + j] as usize * per_expert
                ..(indices[t * k + j] as usize + 1) * per_expert;
            expert_ffn(
                &x[t * dim..(t + 1) * dim],
                &w1[span.clone()],
                &w2[span.clone()],
                &w3[span],
                dim,
                &mut out[(t * k + j) * dim..(t * k + j + 1) * dim],
            )?;
        }
    }
    Ok(())
}

/// Weighted sum of each token's expert outputs plus the shared experts' output:
/// `out[t] = shared[t] + sum_j weights[t, j] * expert_out[t, j]`. `expert_out`: `[T, k, dim]`;
/// `weights`: `[T, k]`; `shared`: `[T, dim]` or empty; `out`: `[T, dim]`.
pub fn moe_combine<T: Element>(
    expert_out: &[T],
    weights: &[T],
    shared: &[T],
    dim: usize,
    out: &mut [T],
) -> Result<()> {
    let (tokens, k) = check::moe_combine(
        expert_out.len(),
        weights.len(),
        shared.len(),
        dim,
        out.len(),
    )?;
    for t in 0..tokens {
        for c in 0..dim {
            let mut acc = shared.get(t * dim + c).map_or(0.0, |v| v.to_f64());
            for j in 0..k {
                acc += weights[t * k + j].to_f64() * expert_out[(t * k + j) * dim + c].to_f64();
            }
            out[t * dim + c] = T::from_f64(acc);
        }
    }
    Ok(())
}

/// What routing chose for a batch: `[T, k]` weights and expert indices.
#[derive(Debug, Clone, PartialEq)]
pub struct MoeRouting<T> {
    /// Route weights, `[T, k]`.
    pub weights: Vec<T>,
    /// Expert indices, `[T, k]`, best first.
    pub indices: Vec<u32>,
}

/// The whole MoE layer: `x` `[T, dim]` -> `out` `[T, dim]`; returns the routing it used.
pub fn moe_forward<T: Element>(
    layer: &MoeLayer<T>,
    x: &[T],
    out: &mut [T],
) -> Result<MoeRouting<T>> {
    let c = &layer.config;
    let w = &layer.weights;
    let dim = c.dim;
    if x.len() % dim != 0 {
        return Err(Error::ShapeMismatch {
            what: "moe input",
            expected: dim,
            actual: x.len(),
        });
    }
    check_len("moe output", out.len(), x.len())?;
    let tokens = x.len() / dim;
    let (e, k) = (c.n_routed_experts, c.n_activated_experts);
    let mut scores = vec![T::default(); tokens * e];
    moe_scores(x, &w.gate_weight, dim, c.score_func, &mut scores)?;
    let mut routing = MoeRouting {
        weights: vec![T::default(); tokens * k],
        indices: vec![0; tokens * k],
    };
    moe_route(
        &scores,
        &w.gate_bias,
        c,
        &mut routing.weights,
        &mut routing.indices,
    )?;
    let mut expert_out = vec![T::default(); tokens * k * dim];
    routed_experts(
        x,
        &w.w1,
        &w.w2,
        &w.w3,
        &routing.indices,
        dim,
        c.moe_inter_dim,
        &mut expert_out,
    )?;
    let mut shared = Vec::new();
    if c.n_shared_experts > 0 {
        shared = vec![T::default(); tokens * dim];
        expert_ffn(
            x,
            &w.shared_w1,
            &w.shared_w2,
            &w.shared_w3,
            dim,
            &mut shared,
        )?;
    }
    moe_combine(&expert_out, &routing.weights, &shared, dim, out)?;
    Ok(routing)
}
