//! Validation shared by the oracle and every backend: each function takes the lengths of an op's
//! buffers and its parameters, answers with the typed error the contract names (the same on
//! every backend), and otherwise returns the dimensions it derived. Value checks that need the
//! data (ids, rows) are separate: [`first_at_or_above`] and [`first_row_beyond`].

use crate::config::MoeConfig;
use crate::error::{Error, Result};
use crate::hash::LayerHash;

/// `actual == expected`, or [`Error::ShapeMismatch`] naming `what`.
pub fn len(what: &'static str, actual: usize, expected: usize) -> Result<()> {
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

/// The first position whose value is at least `limit`, if any.
pub fn first_at_or_above(values: &[u32], limit: u64) -> Option<usize> {
    values.iter().position(|&v| u64::from(v) >= limit)
}

/// [`Error::IdOutOfRange`] for the first id at or above `limit`.
pub fn ids_below(ids: &[u32], limit: u64) -> Result<()> {
    match first_at_or_above(ids, limit) {
        Some(position) => Err(Error::IdOutOfRange {
            position,
            id: u64::from(ids[position]),
            limit,
        }),
        None => Ok(()),
    }
}

/// The first flat index `i` with `rows[i]` beyond its head's table (`i % heads`).
pub fn first_row_beyond(rows: &[u32], table_sizes: &[u32]) -> Option<usize> {
    let heads = table_sizes.len();
    rows.iter()
        .enumerate()
        .position(|(i, &r)| r >= table_sizes[i % heads])
}

/// [`Error::RowOutOfRange`] for flat index `i` of `rows`.
pub fn row_out_of_range(i: usize, row: u32, table_sizes: &[u32]) -> Error {
    let heads = table_sizes.len();
    Error::RowOutOfRange {
        position: i / heads,
        head: i % heads,
        row,
        rows: table_sizes[i % heads],
    }
}

/// `compress_ids`: the output matches the input.
pub fn compress_ids(raw: usize, out: usize) -> Result<()> {
    len("compressed ids", out, raw)
}

/// `hash_decode`: returns the number of sequences.
pub fn hash_decode(
    layer: &LayerHash,
    heads_per_order: usize,
    history: usize,
    ids: usize,
    rows: usize,
) -> Result<usize> {
    let keep = layer.multipliers.len() - 1;
    len("id history", history, ids * keep)?;
    len("decode rows", rows, ids * keep * heads_per_order)?;
    Ok(ids)
}

/// `gather_rows`: returns the number of (position, head) rows.
pub fn gather_rows(
    table: usize,
    d_head: usize,
    layer: &LayerHash,
    rows: usize,
    out: usize,
) -> Result<usize> {
    let heads = layer.table_sizes.len();
    let total =
        usize::try_from(layer.total_rows()).map_err(|_| Error::Overflow { what: "table rows" })?;
    len("table", table, total * d_head)?;
    if heads == 0 || rows % heads != 0 {
        return Err(Error::ShapeMismatch {
            what: "rows",
            expected: heads,
            actual: rows,
        });
    }
    len("gathered rows", out, rows * d_head)?;
    Ok(rows)
}

/// `rms_norm`: returns the number of `d`-wide vectors.
pub fn rms_norm(x: usize, weight: usize, d: usize, out: usize) -> Result<usize> {
    if d == 0 || weight == 0 || weight % d != 0 || x % weight != 0 {
        return Err(Error::ShapeMismatch {
            what: "rms_norm input",
            expected: weight,
            actual: x,
        });
    }
    len("rms_norm output", out, x)?;
    Ok(x / d)
}

/// `linear`: returns `(rows, out_features)`.
pub fn linear(
    x: usize,
    weight: usize,
    bias: Option<usize>,
    in_features: usize,
    out: usize,
) -> Result<(usize, usize)> {
    if in_features == 0 || weight % in_features != 0 || x % in_features != 0 {
        return Err(Error::ShapeMismatch {
            what: "linear input",
            expected: in_features,
            actual: x,
        });
    }
    let out_features = weight / in_features;
    if let Some(b) = bias {
        len("linear bias", b, out_features)?;
    }
    let rows = x / in_features;
    len("linear output", out, rows * out_features)?;
    Ok((rows, out_features))
}

/// `gate`: returns the number of tokens.
#[allow(clippy::too_many_arguments)]
pub fn gate(
    proj: usize,
    hidden: usize,
    key_norm: usize,
    query_norm: usize,
    m: usize,
    d: usize,
    value: usize,
    alpha: usize,
) -> Result<usize> {
    if m == 0 || d == 0 || proj % ((m + 1) * d) != 0 {
        return Err(Error::ShapeMismatch {
            what: "projection",
            expected: (m + 1) * d,
            actual: proj,
        });
    }
    let tokens = proj / ((m + 1) * d);
    len("hidden", hidden, tokens * m * d)?;
    len("key_norm", key_norm, m * d)?;
    len("query_norm", query_norm, m * d)?;
    len("value", value, tokens * m * d)?;
    len("alpha", alpha, tokens * m)?;
    Ok(tokens)
}

fn conv_common(normed: usize, weight: usize, channels: usize, kernel: usize) -> Result<usize> {
    if kernel == 0 {
        return Err(Error::InvalidConfig {
            field: "kernel_size",
            reason: "must be at least 1",
        });
    }
    len("conv weight", weight, channels * kernel)?;
    if channels == 0 || normed % channels != 0 {
        return Err(Error::ShapeMismatch {
            what: "conv input",
            expected: channels,
            actual: normed,
        });
    }
    Ok(normed / channels)
}

/// `gate_norm`, beyond `gate`'s checks: the conv norm weights are `[M, d]` and `normed` is
/// shaped like `value`.
pub fn gate_norm(value: usize, conv_norm: usize, m: usize, d: usize, normed: usize) -> Result<()> {
    len("conv norm weights", conv_norm, m * d)?;
    len("normed value", normed, value)
}

/// `short_conv` (lengths only; `cu_seqlens` is checked against the returned token count).
pub fn short_conv(
    normed: usize,
    value: usize,
    weight: usize,
    channels: usize,
    kernel: usize,
    out: usize,
) -> Result<usize> {
    let tokens = conv_common(normed, weight, channels, kernel)?;
    len("conv value", value, normed)?;
    len("conv output", out, normed)?;
    Ok(tokens)
}

/// `short_conv_decode`: returns the number of sequences.
#[allow(clippy::too_many_arguments)]
pub fn short_conv_decode(
    normed: usize,
    value: usize,
    weight: usize,
    channels: usize,
    kernel: usize,
    dilation: usize,
    history: usize,
    out: usize,
) -> Result<usize> {
    let seqs = conv_common(normed, weight, channels, kernel)?;
    len(
        "conv history",
        history,
        seqs * super::conv_history_len(kernel, dilation) * channels,
    )?;
    len("conv value", value, normed)?;
    len("conv output", out, normed)?;
    Ok(seqs)
}

/// `capture_state` for a batch of `seqs` sequences and `tokens` positions.
#[allow(clippy::too_many_arguments)]
pub fn capture_state(
    tokens: usize,
    seqs: usize,
    normed: usize,
    keep: usize,
    hist: usize,
    channels: usize,
    state_ids: usize,
    state_conv: usize,
) -> Result<()> {
    len("state ids", state_ids, seqs * keep)?;
    len("state conv", state_conv, seqs * hist * channels)?;
    if hist > 0 {
        len("normed conv input", normed, tokens * channels)?;
    }
    Ok(())
}

/// `push_ids`.
pub fn push_ids(history: usize, ids: usize, keep: usize) -> Result<()> {
    len("id history", history, ids * keep)
}

/// `moe_route`: returns the number of tokens.
pub fn moe_route(
    scores: usize,
    bias: usize,
    config: &MoeConfig,
    weights: usize,
    indices: usize,
) -> Result<usize> {
    config.validate()?;
    let (e, k) = (config.n_routed_experts, config.n_activated_experts);
    if scores % e != 0 {
        return Err(Error::ShapeMismatch {
            what: "scores",
            expected: e,
            actual: scores,
        });
    }
    let tokens = scores / e;
    if bias != 0 || config.bias {
        len("gate bias", bias, e)?;
    }
    len("route weights", weights, tokens * k)?;
    len("route indices", indices, tokens * k)?;
    Ok(tokens)
}

/// `expert_ffn`: returns `(rows, inter)`.
pub fn expert_ffn(x: usize, w1: usize, w2: usize, w3: usize, dim: usize) -> Result<(usize, usize)> {
    if dim == 0 || w1 % dim != 0 {
        return Err(Error::ShapeMismatch {
            what: "expert w1",
            expected: dim,
            actual: w1,
        });
    }
    let inter = w1 / dim;
    len("expert w3", w3, inter * dim)?;
    len("expert w2", w2, inter * dim)?;
    Ok((x / dim, inter))
}

/// `routed_experts`: returns `(tokens, k, experts)`.
#[allow(clippy::too_many_arguments)]
pub fn routed_experts(
    x: usize,
    w1: usize,
    w2: usize,
    w3: usize,
    indices: usize,
    dim: usize,
    inter: usize,
    out: usize,
) -> Result<(usize, usize, usize)> {
    let per_expert = dim * inter;
    if per_expert == 0 || x % dim != 0 || w1 % per_expert != 0 {
        return Err(Error::ShapeMismatch {
            what: "expert weights",
            expected: per_expert,
            actual: w1,
        });
    }
    len("expert w3", w3, w1)?;
    len("expert w2", w2, w1)?;
    let tokens = x / dim;
    let k = indices.checked_div(tokens).unwrap_or(0);
    len("route indices", indices, tokens * k)?;
    len("expert outputs", out, tokens * k * dim)?;
    Ok((tokens, k, w1 / per_expert))
}

/// `moe_combine`: returns `(tokens, k)`.
pub fn moe_combine(
    expert_out: usize,
    weights: usize,
    shared: usize,
    dim: usize,
    out: usize,
) -> Result<(usize, usize)> {
    if dim == 0 || out % dim != 0 {
        return Err(Error::ShapeMismatch {
            what: "combine output",
            expected: dim,
            actual: out,
        });
    }
    let tokens = out / dim;
    if tokens == 0 {
        return Ok((0, 0));
    }
    let k = weights / tokens;
    len("route weights", weights, tokens * k)?;
    len("expert outputs", expert_out, tokens * k * dim)?;
    if shared != 0 {
        len("shared output", shared, tokens * dim)?;
    }
    Ok((tokens, k))
}
