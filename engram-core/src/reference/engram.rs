//! The Engram layer, composed from the oracle's ops: prefill over a packed batch and decode one
//! token per sequence with state.

use alloc::vec;
use alloc::vec::Vec;

use super::{check_len, conv_history_len, gate, gather_rows, linear, rms_norm, short_conv, short_conv_decode, CONV_NORM_EPS};
use crate::batch::PackedBatch;
use crate::dtype::Element;
use crate::error::{Error, Result};
use crate::hash::hash_packed;
use crate::weights::EngramLayer;

/// What decoding needs to continue each sequence of a batch.
///
/// - `ids`: `[S, N - 1]`, the sequence's last `N - 1` compressed ids, oldest first (the pad id
///   stands for positions before its start);
/// - `conv`: `[S, (w - 1) N, M d]`, the short convolution's last `(w - 1) N` normalised inputs,
///   oldest first (zeros before the start); empty when the layer has no convolution.
#[derive(Debug, Clone, PartialEq)]
pub struct EngramState<T> {
    /// Number of sequences `S`.
    pub num_seqs: usize,
    /// Last compressed ids, `[S, N - 1]`.
    pub ids: Vec<u32>,
    /// Last normalised convolution inputs, `[S, (w - 1) N, M d]`.
    pub conv: Vec<T>,
}

impl<T: Element> EngramState<T> {
    /// The state of `num_seqs` sequences that have seen no token yet.
    pub fn new(layer: &EngramLayer<T>, num_seqs: usize) -> Self {
        let c = &layer.config;
        EngramState {
            num_seqs,
            ids: vec![layer.compressed_pad_id; num_seqs * (c.max_ngram_size - 1)],
            conv: vec![T::default(); num_seqs * conv_state_len(layer)],
        }
    }

    fn check(&self, layer: &EngramLayer<T>) -> Result<()> {
        let c = &layer.config;
        check_len("state ids", self.ids.len(), self.num_seqs * (c.max_ngram_size - 1))?;
        check_len("state conv", self.conv.len(), self.num_seqs * conv_state_len(layer))
    }
}

/// Elements of one sequence's convolution state.
fn conv_state_len<T>(layer: &EngramLayer<T>) -> usize {
    let c = &layer.config;
    if c.short_conv {
        conv_history_len(c.kernel_size, c.max_ngram_size) * c.hc_mult * c.hidden_size
    } else {
        0
    }
}

/// Everything after the hash: gather, projection, gate, optional convolution. `conv` decides how
/// the convolution sees the past (the packed batch, or the decode history).
fn forward_rows<T: Element>(
    layer: &EngramLayer<T>,
    rows: &[u32],
    hidden: &[T],
    out: &mut [T],
    gates: Option<&mut [T]>,
    conv: impl FnOnce(&[T], &[T], &mut [T]) -> Result<()>,
) -> Result<Vec<T>> {
    let c = &layer.config;
    let w = &layer.weights;
    let (m, d) = (c.hc_mult, c.hidden_size);
    let tokens = hidden.len() / (m * d);
    let mut e = vec![T::default(); tokens * c.d_mem()];
    gather_rows(&w.table, c.d_head(), &layer.hash, rows, &mut e)?;
    let mut proj = vec![T::default(); tokens * (m + 1) * d];
    linear(&e, &w.proj_weight, Some(&w.proj_bias), c.d_mem(), &mut proj)?;
    let mut alpha = vec![T::default(); tokens * m];
    let mut value = vec![T::default(); tokens * m * d];
    gate(&proj, hidden, &w.key_norm, &w.query_norm, m, d, &mut value, &mut alpha)?;
    if let Some(g) = gates {
        g.copy_from_slice(&alpha);
    }
    if !c.short_conv {
        out.copy_from_slice(&value);
        return Ok(Vec::new());
    }
    let mut normed = vec![T::default(); value.len()];
    rms_norm(&value, &w.conv_norm, d, CONV_NORM_EPS, &mut normed)?;
    conv(&normed, &value, out)?;
    Ok(normed)
}

fn check_io<T: Element>(
    layer: &EngramLayer<T>,
    tokens: usize,
    hidden: &[T],
    out: &[T],
    gates: Option<&[T]>,
) -> Result<()> {
    let c = &layer.config;
    let md = c.hc_mult * c.hidden_size;
    check_len("hidden", hidden.len(), tokens * md)?;
    check_len("output", out.len(), tokens * md)?;
    if let Some(g) = gates {
        check_len("gates", g.len(), tokens * c.hc_mult)?;
    }
    Ok(())
}

/// The layer over a packed batch.
///
/// `ids`: compressed ids `[T]`; `cu_seqlens`: `[S + 1]`; `hidden`: `[T, M, d]`; `out`:
/// `[T, M, d]` (the layer's output, without the residual); `gates`: optionally `[T, M]`, each
/// branch's `alpha`; `state`: optionally filled with each sequence's decode state after its last
/// token. Nothing is written unless every input is valid.
pub fn engram_prefill<T: Element>(
    layer: &EngramLayer<T>,
    ids: &[u32],
    cu_seqlens: &[u32],
    hidden: &[T],
    out: &mut [T],
    gates: Option<&mut [T]>,
    state: Option<&mut EngramState<T>>,
) -> Result<()> {
    let c = &layer.config;
    let batch = PackedBatch::new(cu_seqlens, ids.len())?;
    check_io(layer, ids.len(), hidden, out, gates.as_deref())?;
    if let Some(s) = &state {
        if s.num_seqs != batch.num_sequences() {
            return Err(Error::ShapeMismatch {
                what: "state sequences",
                expected: batch.num_sequences(),
                actual: s.num_seqs,
            });
        }
        s.check(layer)?;
    }
    let mut rows = vec![0u32; ids.len() * c.num_heads()];
    hash_packed(
        &[&layer.hash],
        c.n_head_per_ngram,
        layer.compressed_pad_id,
        layer.compressed_vocab,
        ids,
        cu_seqlens,
        &mut [&mut rows],
    )?;
    let (channels, kernel, dilation) = (c.hc_mult * c.hidden_size, c.kernel_size, c.max_ngram_size);
    let normed = forward_rows(layer, &rows, hidden, out, gates, |normed, value, out| {
        short_conv(normed, value, &layer.weights.conv_weight, channels, kernel, dilation, cu_seqlens, out)
    })?;
    if let Some(state) = state {
        let keep = c.max_ngram_size - 1;
        let hist = conv_history_len(kernel, dilation);
        for (s, seq) in batch.sequences().enumerate() {
            for k in 0..keep {
                // Slot k holds x'_{end - keep + k}.
                let pos = (seq.end + k).checked_sub(keep).filter(|&p| p >= seq.start);
                state.ids[s * keep + k] = pos.map_or(layer.compressed_pad_id, |p| ids[p]);
            }
            if c.short_conv {
                for k in 0..hist {
                    let dst = &mut state.conv[(s * hist + k) * channels..(s * hist + k + 1) * channels];
                    match (seq.end + k).checked_sub(hist).filter(|&p| p >= seq.start) {
                        Some(p) => dst.copy_from_slice(&normed[p * channels..(p + 1) * channels]),
                        None => dst.fill(T::default()),
                    }
                }
            }
        }
    }
    Ok(())
}

/// One decode step: each of the `S` sequences of `state` advances by one token.
///
/// `ids`: the new compressed ids `[S]`; `hidden`, `out`: `[S, M, d]`; `gates`: optionally
/// `[S, M]`. `state` is advanced only when every input is valid.
pub fn engram_decode<T: Element>(
    layer: &EngramLayer<T>,
    ids: &[u32],
    hidden: &[T],
    state: &mut EngramState<T>,
    out: &mut [T],
    gates: Option<&mut [T]>,
) -> Result<()> {
    let c = &layer.config;
    let seqs = ids.len();
    check_io(layer, seqs, hidden, out, gates.as_deref())?;
    check_len("state sequences", state.num_seqs, seqs)?;
    state.check(layer)?;
    let keep = c.max_ngram_size - 1;
    // Each sequence's window, oldest first, as a packed batch of N tokens per sequence: the last
    // position of each window is the new token.
    let mut windows = Vec::with_capacity(seqs * (keep + 1));
    for (s, &id) in ids.iter().enumerate() {
        windows.extend_from_slice(&state.ids[s * keep..(s + 1) * keep]);
        windows.push(id);
    }
    let cu: Vec<u32> = (0..=seqs).map(|s| (s * (keep + 1)) as u32).collect();
    let heads = c.num_heads();
    let mut window_rows = vec![0u32; windows.len() * heads];
    hash_packed(
        &[&layer.hash],
        c.n_head_per_ngram,
        layer.compressed_pad_id,
        layer.compressed_vocab,
        &windows,
        &cu,
        &mut [&mut window_rows],
    )?;
    // A window's first ids stand in for the pad-extended past, so only its last position is
    // right; it sees exactly the N ids the hash reads.
    let rows: Vec<u32> = (0..seqs)
        .flat_map(|s| {
            let last = (s + 1) * (keep + 1) - 1;
            window_rows[last * heads..(last + 1) * heads].iter().copied()
        })
        .collect();
    let (channels, kernel, dilation) = (c.hc_mult * c.hidden_size, c.kernel_size, c.max_ngram_size);
    let mut conv_state = state.conv.clone();
    forward_rows(layer, &rows, hidden, out, gates, |normed, value, out| {
        short_conv_decode(normed, value, &layer.weights.conv_weight, channels, kernel, dilation, &mut conv_state, out)
    })?;
    state.conv = conv_state;
    for (s, &id) in ids.iter().enumerate() {
        let slot = &mut state.ids[s * keep..(s + 1) * keep];
        if keep > 0 {
            slot.copy_within(1.., 0);
            slot[keep - 1] = id;
        }
    }
    Ok(())
}
