//! MoE experts on the CPU: every expert's FFN as three projections through the same linear
//! kernels as the Engram layer, and the routed experts as grouped projections over the tokens
//! sorted by expert (each expert's weights read once per batch).

use alloc::vec;
use alloc::vec::Vec;

use engram_core::reference::check;
#[cfg(feature = "std")]
use engram_core::Error;
use engram_core::{Element, Result};

#[cfg(feature = "std")]
use super::linear;
use super::Parallelism;

/// One expert over `rows` tokens: `out = W2 (SiLU(W1 x) * (W3 x))`; same contract as the
/// oracle's `expert_ffn`. (With the `std` feature: the projections go through `gemm`.)
#[cfg(feature = "std")]
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
    linear::fastest(x, w1, None, dim, &mut a, par)?;
    linear::fastest(x, w3, None, dim, &mut b, par)?;
    for (h, b) in a.iter_mut().zip(&b) {
        let v = h.to_f32();
        *h = T::from_f32(v * super::simd::sigmoid(v) * b.to_f32());
    }
    linear::fastest(&a, w2, None, inter, out, par)
}

/// Every token through each of its experts, grouped by expert; same contract as the oracle's
/// `routed_experts`. (With the `std` feature: the projections go through `gemm`.)
#[cfg(feature = "std")]
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

/// The router's scores: `scores = f(x W^T)` with `f` the sigmoid or a softmax over each token's
/// experts; same contract as the oracle's `moe_scores` (`x` `[T, dim]`, `gate_weight` `[E, dim]`,
/// `scores` `[T, E]`; the logits are rounded to `T` before `f`, as there). The logits go through
/// the projections' GEMM straight into `scores`, then `f` runs in place in f32, tokens in
/// parallel.
#[cfg(feature = "std")]
pub fn scores<T: Element>(
    x: &[T],
    gate_weight: &[T],
    dim: usize,
    score_func: engram_core::ScoreFunc,
    scores: &mut [T],
    par: Parallelism,
) -> Result<()> {
    linear::fastest(x, gate_weight, None, dim, scores, par)?;
    let experts = gate_weight.len() / dim;
    match score_func {
        engram_core::ScoreFunc::Sigmoid => par.for_rows(scores, experts, |_, row| {
            for s in row.iter_mut() {
                *s = T::from_f32(super::simd::sigmoid(s.to_f32()));
            }
        }),
        engram_core::ScoreFunc::Softmax => par.for_rows(scores, experts, |_, row| {
            let max = row
                .iter()
                .map(|v| v.to_f32())
                .fold(f32::NEG_INFINITY, f32::max);
            let mut lanes = [0.0f32; super::simd::LANES];
            for (i, v) in row.iter().enumerate() {
                lanes[i % super::simd::LANES] += super::simd::exp(v.to_f32() - max);
            }
            let inv = 1.0 / super::simd::reduce(lanes);
            for s in row.iter_mut() {
                *s = T::from_f32(super::simd::exp(s.to_f32() - max) * inv);
            }
        }),
    }
    Ok(())
}

/// Each token's expert outputs weighted and summed onto the shared experts' output: same
/// contract as the oracle's `moe_combine` (`out[t] = shared[t] + sum_j weights[t, j] *
/// expert_out[t, j]`, `shared` may be empty), f32 arithmetic in order of `j`, tokens in
/// parallel.
pub fn combine<T: Element>(
    expert_out: &[T],
    weights: &[T],
    shared: &[T],
    dim: usize,
    out: &mut [T],
    par: Parallelism,
) -> Result<()> {
    let (tokens, k) = check::moe_combine(
        expert_out.len(),
        weights.len(),
        shared.len(),
        dim,
        out.len(),
    )?;
    if tokens == 0 {
        return Ok(());
    }
    par.for_rows(out, dim, |t, o| {
        const BLOCK: usize = 256;
        let mut acc = [0.0f32; BLOCK];
        for c0 in (0..dim).step_by(BLOCK) {
            let width = BLOCK.min(dim - c0);
            let acc = &mut acc[..width];
            match shared.get(t * dim + c0..t * dim + c0 + width) {
                Some(sh) => acc.iter_mut().zip(sh).for_each(|(a, v)| *a = v.to_f32()),
                None => acc.fill(0.0),
            }
            for j in 0..k {
                let w = weights[t * k + j].to_f32();
                let at = (t * k + j) * dim + c0;
                for (a, v) in acc.iter_mut().zip(&expert_out[at..at + width]) {
                    *a += w * v.to_f32();
                }
            }
            for (o, a) in o[c0..c0 + width].iter_mut().zip(acc.iter()) {
                *o = T::from_f32(*a);
            }
        }
    });
    Ok(())
}

/// The per-token work space of [`route`].
struct RouteScratch {
    biased: Vec<f64>,
    /// The experts of the kept groups, ascending.
    candidates: Vec<usize>,
    group_scores: Vec<f64>,
    group_taken: Vec<bool>,
    /// The best experts so far, in rank order, with their biased scores.
    top: Vec<(usize, f64)>,
}

/// Whether `(i, a)` ranks before `(j, b)`: higher score first (`total_cmp`), then lower index;
/// the oracle's tie rule.
#[inline]
fn ranks_before(i: usize, a: f64, j: usize, b: f64) -> bool {
    match a.total_cmp(&b) {
        core::cmp::Ordering::Greater => true,
        core::cmp::Ordering::Less => false,
        core::cmp::Ordering::Equal => i < j,
    }
}

/// Group-limited top-k routing: same contract, arithmetic (f64) and tie rule as the oracle's
/// `moe_route`, without its per-token allocations and sorts: each group scored once, the kept
/// groups by `n_limited_groups` passes of an arg-max over the groups, the experts by one pass
/// over the kept groups' experts holding the k best in rank order; tokens in parallel (each
/// token's result depends on its own scores only).
pub fn route<T: Element>(
    scores: &[T],
    bias: &[T],
    config: &engram_core::MoeConfig,
    weights: &mut [T],
    indices: &mut [u32],
    par: Parallelism,
) -> Result<()> {
    let tokens = check::moe_route(
        scores.len(),
        bias.len(),
        config,
        weights.len(),
        indices.len(),
    )?;
    let (e, k) = (config.n_routed_experts, config.n_activated_experts);
    if tokens == 0 || k == 0 {
        return Ok(());
    }
    let (groups, per_group) = (config.n_expert_groups, config.experts_per_group());
    let sigmoid = config.score_func == engram_core::ScoreFunc::Sigmoid;
    let new_scratch = || RouteScratch {
        biased: vec![0.0; e],
        candidates: Vec::with_capacity(e),
        group_scores: vec![0.0; groups],
        group_taken: vec![false; groups],
        top: Vec::with_capacity(k + 1),
    };
    let one = |t: usize, w: &mut [T], ix: &mut [u32], sc: &mut RouteScratch| {
        let s = &scores[t * e..(t + 1) * e];
        for (i, b) in sc.biased.iter_mut().enumerate() {
            *b = s[i].to_f64() + bias.get(i).map_or(0.0, |v| v.to_f64());
        }
        sc.candidates.clear();
        if groups > 1 {
            // Each group's score once: its best biased score, plus the second best with a bias.
            for (g, gs) in sc.group_scores.iter_mut().enumerate() {
                let members = &sc.biased[g * per_group..(g + 1) * per_group];
                let (mut top1, mut top2) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
                for (n, &v) in members.iter().enumerate() {
                    if n == 0 || v.total_cmp(&top1).is_gt() {
                        top2 = top1;
                        top1 = v;
                    } else if n == 1 || v.total_cmp(&top2).is_gt() {
                        top2 = v;
                    }
                }
                *gs = if bias.is_empty() { top1 } else { top1 + top2 };
            }
            sc.group_taken.fill(false);
            for _ in 0..config.n_limited_groups {
                let mut best: Option<(usize, f64)> = None;
                for (g, &score) in sc.group_scores.iter().enumerate() {
                    if !sc.group_taken[g]
                        && best.is_none_or(|(bg, bs)| ranks_before(g, score, bg, bs))
                    {
                        best = Some((g, score));
                    }
                }
                if let Some((g, _)) = best {
                    sc.group_taken[g] = true;
                }
            }
            for g in (0..groups).filter(|&g| sc.group_taken[g]) {
                sc.candidates.extend(g * per_group..(g + 1) * per_group);
            }
        } else {
            sc.candidates.extend(0..e);
        }
        // One pass keeping the k best in rank order (insertion into a short sorted list).
        sc.top.clear();
        for &i in &sc.candidates {
            let v = sc.biased[i];
            if sc.top.len() == k {
                let &(li, lv) = &sc.top[k - 1];
                if !ranks_before(i, v, li, lv) {
                    continue;
                }
                sc.top.pop();
            }
            let at = sc
                .top
                .iter()
                .position(|&(j, u)| ranks_before(i, v, j, u))
                .unwrap_or(sc.top.len());
            sc.top.insert(at, (i, v));
        }
        let mut sum = 0.0;
        for (slot, &(i, _)) in ix.iter_mut().zip(&sc.top) {
            *slot = i as u32;
            sum += s[i].to_f64();
        }
        for (wj, &i) in w.iter_mut().zip(ix.iter()) {
            let mut v = s[i as usize].to_f64();
            if sigmoid {
                v /= sum;
            }
            *wj = T::from_f64(v * config.route_scale);
        }
    };
    match par {
        Parallelism::Sequential => {
            let mut sc = new_scratch();
            for (t, (w, ix)) in weights.chunks_mut(k).zip(indices.chunks_mut(k)).enumerate() {
                one(t, w, ix, &mut sc);
            }
        }
        #[cfg(feature = "std")]
        Parallelism::Rayon => {
            use rayon::prelude::*;
            weights
                .par_chunks_mut(k)
                .zip(indices.par_chunks_mut(k))
                .enumerate()
                .for_each_init(new_scratch, |sc, (t, (w, ix))| one(t, w, ix, sc));
        }
    }
    Ok(())
}

#[cfg(test)]
#[cfg(feature = "std")]
mod tests {
    use super::*;
    use engram_core::{bf16, reference, synthetic, ScoreFunc};

    fn wide<T: Element>(v: &[T]) -> Vec<f64> {
        v.iter().map(|a| a.to_f64()).collect()
    }

    /// Scores and combine equal the oracle within the element type's rounding, and give the
    /// same bits on one thread and on the pool.
    fn check<T: Element>(bound: f64) {
        let (tokens, dim, experts, k) = (37, 72, 24, 3);
        let x: Vec<T> = synthetic::activations(tokens * dim, 1.0, 1);
        let w: Vec<T> = synthetic::activations(experts * dim, 0.3, 2);
        for func in [ScoreFunc::Sigmoid, ScoreFunc::Softmax] {
            let mut want = vec![T::default(); tokens * experts];
            reference::moe_scores(&x, &w, dim, func, &mut want).unwrap();
            let (mut one, mut pool) = (want.clone(), want.clone());
            scores(&x, &w, dim, func, &mut one, Parallelism::Sequential).unwrap();
            scores(&x, &w, dim, func, &mut pool, Parallelism::Rayon).unwrap();
            assert_eq!(one, pool);
            let nmse = reference::nmse(&wide(&one), &wide(&want));
            assert!(nmse < bound, "{func:?}: nmse {nmse}");
        }
        let e: Vec<T> = synthetic::activations(tokens * k * dim, 1.0, 3);
        let rw: Vec<T> = synthetic::activations(tokens * k, 1.0, 4);
        let shared: Vec<T> = synthetic::activations(tokens * dim, 1.0, 5);
        for sh in [&shared[..], &[]] {
            let mut want = vec![T::default(); tokens * dim];
            reference::moe_combine(&e, &rw, sh, dim, &mut want).unwrap();
            let (mut one, mut pool) = (want.clone(), want.clone());
            combine(&e, &rw, sh, dim, &mut one, Parallelism::Sequential).unwrap();
            combine(&e, &rw, sh, dim, &mut pool, Parallelism::Rayon).unwrap();
            assert_eq!(one, pool);
            let nmse = reference::nmse(&wide(&one), &wide(&want));
            assert!(nmse < bound, "combine: nmse {nmse}");
        }
        let mut short = vec![T::default(); tokens * dim - 1];
        assert!(combine(&e, &rw, &shared, dim, &mut short, Parallelism::Sequential).is_err());
    }

    #[test]
    fn scores_and_combine_match_the_oracle_in_f32() {
        check::<f32>(1e-12);
    }

    #[test]
    fn scores_and_combine_match_the_oracle_in_bf16() {
        check::<bf16>(1e-4);
    }
}
