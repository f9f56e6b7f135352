//! The Engram layer, composed from the oracle's ops: prefill over a packed batch and decode one
//! token per sequence with state. The composition mirrors the default methods of
//! [`crate::ops::EngramOps`] step for step.

use alloc::vec;
use alloc::vec::Vec;

use super::{
    check, check_len, conv_history_len, gate, gather_rows, linear, rms_norm, short_conv,
    short_conv_decode, CONV_NORM_EPS,
};
use crate::batch::PackedBatch;
use crate::dtype::Element;
use crate::error::{Error, Result};
use crate::hash::{hash_packed, LayerHash};
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
        EngramState {
            num_seqs,
            ids: vec![layer.compressed_pad_id; num_seqs * (layer.config.max_ngram_size - 1)],
            conv: vec![T::default(); num_seqs * conv_state_len(&layer.config)],
        }
    }

    /// Checks the state's buffers against the layer and a batch of `num_seqs` sequences.
    pub fn check(&self, layer: &EngramLayer<T>, num_seqs: usize) -> Result<()> {
        check_len("state sequences", self.num_seqs, num_seqs)?;
        check_len(
            "state ids",
            self.ids.len(),
            num_seqs * (layer.config.max_ngram_size - 1),
        )?;
        check_len(
            "state conv",
            self.conv.len(),
            num_seqs * conv_state_len(&layer.config),
        )
    }
}

/// Elements of one sequence's convolution state: `(w - 1) N M d`, or 0 without a convolution.
pub fn conv_state_len(c: &crate::config::EngramConfig) -> usize {
    if c.short_conv {
        conv_history_len(c.kernel_size, c.max_ngram_size) * c.hc_mult * c.hidden_size
    } else {
        0
    }
}

/// The rows each sequence's new token reads in decode: the window is the sequence's history
/// (`[S, N - 1]`, oldest first) followed by its new id (`ids`, `[S]`). `rows`: `[S, H]`.
pub fn hash_decode(
    layer: &LayerHash,
    heads_per_order: usize,
    compressed_vocab: u64,
    history: &[u32],
    ids: &[u32],
    rows: &mut [u32],
) -> Result<()> {
    let seqs = check::hash_decode(layer, heads_per_order, history.len(), ids.len(), rows.len())?;
    let n = layer.multipliers.len();
    let keep = n - 1;
    let heads = keep * heads_per_order;
    for (position, &id) in ids.iter().chain(history).enumerate() {
        if u64::from(id) >= compressed_vocab {
            return Err(Error::IdOutOfRange {
                position: position % seqs.max(1),
                id: u64::from(id),
                limit: compressed_vocab,
            });
        }
    }
    let mut window = vec![0u64; n];
    for s in 0..seqs {
        window[0] = u64::from(ids[s]);
        for k in 1..n {
            window[k] = u64::from(history[s * keep + keep - k]);
        }
        layer.rows_for_window(
            &window,
            heads_per_order,
            &mut rows[s * heads..(s + 1) * heads],
        );
    }
    Ok(())
}

/// Advances each sequence's id history (`[S, keep]`, oldest first) by its new id (`[S]`).
pub fn push_ids(history: &mut [u32], ids: &[u32], keep: usize) -> Result<()> {
    check::push_ids(history.len(), ids.len(), keep)?;
    if keep == 0 {
        return Ok(());
    }
    for (slot, &id) in history.chunks_exact_mut(keep).zip(ids) {
        slot.copy_within(1.., 0);
        slot[keep - 1] = id;
    }
    Ok(())
}

/// Fills the decode state of every sequence of a packed batch after its last token: the last
/// `keep` ids (`state_ids`, `[S, keep]`) and the last `hist` rows of `normed` (`[T, channels]`;
/// `state_conv`, `[S, hist, channels]`), with `pad` / zeros before the sequence's start.
#[allow(clippy::too_many_arguments)]
pub fn capture_state<T: Element>(
    ids: &[u32],
    cu_seqlens: &[u32],
    normed: &[T],
    keep: usize,
    hist: usize,
    channels: usize,
    pad: u32,
    state_ids: &mut [u32],
    state_conv: &mut [T],
) -> Result<()> {
    let batch = PackedBatch::new(cu_seqlens, ids.len())?;
    check::capture_state(
        ids.len(),
        batch.num_sequences(),
        normed.len(),
        keep,
        hist,
        channels,
        state_ids.len(),
        state_conv.len(),
    )?;
    for (s, seq) in batch.sequences().enumerate() {
        for k in 0..keep {
            let pos = (seq.end + k).checked_sub(keep).filter(|&p| p >= seq.start);
            state_ids[s * keep + k] = pos.map_or(pad, |p| ids[p]);
        }
        for k in 0..hist {
            let dst = &mut state_conv[(s * hist + k) * channels..(s * hist + k + 1) * channels];
            match (seq.end + k).checked_sub(hist).filter(|&p| p >= seq.start) {
                Some(p) => dst.copy_from_slice(&normed[p * channels..(p + 1) * channels]),
                None => dst.fill(T::default()),
            }
        }
    }
    Ok(())
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

/// Gather, projection and gate: `value` `[T, M, d]` and `alpha` `[T, M]` from the rows.
fn gated_value<T: Element>(
    layer: &EngramLayer<T>,
    rows: &[u32],
    hidden: &[T],
    alpha: &mut [T],
) -> Result<Vec<T>> {
    let c = &layer.config;
    let w = &layer.weights;
    let (m, d) = (c.hc_mult, c.hidden_size);
    let tokens = hidden.len() / (m * d);
    let mut e = vec![T::default(); tokens * c.d_mem()];
    gather_rows(&w.table, c.d_head(), &layer.hash, rows, &mut e)?;
    let mut proj = vec![T::default(); tokens * (m + 1) * d];
    linear(&e, &w.proj_weight, Some(&w.proj_bias), c.d_mem(), &mut proj)?;
    let mut value = vec![T::default(); tokens * m * d];
    gate(
        &proj,
        hidden,
        &w.key_norm,
        &w.query_norm,
        m,
        d,
        &mut value,
        alpha,
    )?;
    Ok(value)
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
        s.check(layer, batch.num_sequences())?;
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
    let mut alpha = vec![T::default(); ids.len() * c.hc_mult];
    let value = gated_value(layer, &rows, hidden, &mut alpha)?;
    let (channels, kernel, dilation) = (c.hc_mult * c.hidden_size, c.kernel_size, c.max_ngram_size);
    let mut normed = Vec::new();
    if c.short_conv {
        normed = vec![T::default(); value.len()];
        rms_norm(
            &value,
            &layer.weights.conv_norm,
            c.hidden_size,
            CONV_NORM_EPS,
            &mut normed,
        )?;
        short_conv(
            &normed,
            &value,
            &layer.weights.conv_weight,
            channels,
            kernel,
            dilation,
            cu_seqlens,
            out,
        )?;
    } else {
        out.copy_from_slice(&value);
    }
    if let Some(g) = gates {
        g.copy_from_slice(&alpha);
    }
    if let Some(state) = state {
        let hist = if c.short_conv {
            conv_history_len(kernel, dilation)
        } else {
            0
        };
        capture_state(
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
    state.check(layer, seqs)?;
    let mut rows = vec![0u32; seqs * c.num_heads()];
    hash_decode(
        &layer.hash,
        c.n_head_per_ngram,
        layer.compressed_vocab,
        &state.ids,
        ids,
        &mut rows,
    )?;
    let mut alpha = vec![T::default(); seqs * c.hc_mult];
    let value = gated_value(layer, &rows, hidden, &mut alpha)?;
    if c.short_conv {
        let mut normed = vec![T::default(); value.len()];
        rms_norm(
            &value,
            &layer.weights.conv_norm,
            c.hidden_size,
            CONV_NORM_EPS,
            &mut normed,
        )?;
        let channels = c.hc_mult * c.hidden_size;
        short_conv_decode(
            &normed,
            &value,
            &layer.weights.conv_weight,
            channels,
            c.kernel_size,
            c.max_ngram_size,
            &mut state.conv,
            out,
        )?;
    } else {
        out.copy_from_slice(&value);
    }
    if let Some(g) = gates {
        g.copy_from_slice(&alpha);
    }
    push_ids(&mut state.ids, ids, c.max_ngram_size - 1)
}
