"""Writes golden-format files for configurations other than the public ones, computed with numpy
straight from the semantics in conformance/golden/README.md (not from this project's code), so the
golden runner and every backend can be checked on other orders, head counts, branch counts, kernel
sizes, table sizes, expert counts and groupings.

Each Engram file holds one sequence batch of synthetic compressed ids (no tokenizer involved), the
layer's weights under `weights.`, the hash rows of every layer of its config, hidden states, and
the output computed in float64 (`output_f64`) and float32 (`output_f32`).

Run: python3 tools/gen_golden_variants.py   (numpy 2.4.6, safetensors 0.7)
"""
import json
import pathlib

import numpy as np
from safetensors.numpy import save_file

OUT = pathlib.Path(__file__).resolve().parent.parent / "conformance" / "golden" / "variants"
F32_EPS = float(np.finfo(np.float32).eps)


def is_prime(n):
    if n < 2:
        return False
    d = 2
    while d * d <= n:
        if n % d == 0:
            return False
        d += 1
    return True


def multipliers(vocab, seed, layer, n):
    half = max(1, (np.iinfo(np.int64).max // vocab) // 2)
    r = np.random.default_rng(seed + 10007 * layer).integers(0, half, size=n, dtype=np.int64)
    return r * 2 + 1


def primes(cfg):
    seen, out = set(), {}
    for layer in cfg["layer_ids"]:
        orders = []
        for size in cfg["engram_vocab_size"]:
            start, heads = size - 1, []
            for _ in range(cfg["n_head_per_ngram"]):
                c = start + 1
                while not (is_prime(c) and c not in seen):
                    c += 1
                seen.add(c)
                heads.append(c)
                start = c
            orders.append(heads)
        out[layer] = orders
    return out


def hash_rows(ids, cfg, layer, vocab, pad, table_sizes):
    n_max = cfg["max_ngram_size"]
    m = multipliers(vocab, cfg["seed"], layer, n_max)
    b, t = ids.shape
    shifted = [np.pad(ids, ((0, 0), (k, 0)), constant_values=pad)[:, :t] for k in range(n_max)]
    rows = []
    for n in range(2, n_max + 1):
        mix = shifted[0] * m[0]
        for k in range(1, n):
            mix = np.bitwise_xor(mix, shifted[k] * m[k])
        for p in table_sizes[n - 2]:
            rows.append(mix % p)
    return np.stack(rows, axis=2).astype(np.int64), m


def rms(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def engram_forward(dt, cfg, w, hidden, emb_rows):
    """Forward in dtype `dt`: every intermediate array is kept in `dt`."""
    M, d, N, ksz = cfg["hc_mult"], cfg["hidden_size"], cfg["max_ngram_size"], cfg["kernel_size"]
    c = lambda a: np.asarray(a, dtype=dt)
    e = c(w["table"])[emb_rows].reshape(hidden.shape[0], hidden.shape[1], -1)
    h = c(hidden)
    v = e @ c(w["value_w"]).T + c(w["value_b"])
    value = np.empty_like(h)
    for b in range(M):
        k = e @ c(w["key_w"][b]).T + c(w["key_b"][b])
        nk = rms(k, c(w["norm1"][b]), dt(F32_EPS))
        nh = rms(h[:, :, b, :], c(w["norm2"][b]), dt(F32_EPS))
        s = (nk * nh).sum(-1) / dt(np.sqrt(d))
        g = sigmoid(np.sign(s) * np.sqrt(np.maximum(np.abs(s), dt(1e-6))))
        value[:, :, b, :] = g[..., None] * v
    if not cfg["short_conv"]:
        return value
    xn = np.concatenate([rms(value[:, :, b, :], c(w["conv_norm"][b]), dt(1e-5)) for b in range(M)], axis=-1)
    B, T, C = xn.shape
    y = np.zeros_like(xn)
    cw = c(w["conv_w"])[:, 0, :]
    for k in range(ksz):
        back = (ksz - 1 - k) * N
        if back < T:
            y[:, back:, :] += cw[:, k] * xn[:, : T - back, :]
    y = y * sigmoid(y)
    return value + y.reshape(B, T, M, d)


def engram_case(name, cfg, vocab, pad, layer_id, batch, seqlen, seed):
    rng = np.random.default_rng(seed)
    M, d = cfg["hc_mult"], cfg["hidden_size"]
    d_head = cfg["n_embed_per_ngram"] // cfg["n_head_per_ngram"]
    d_mem = (cfg["max_ngram_size"] - 1) * cfg["n_embed_per_ngram"]
    sizes = primes(cfg)
    ids = rng.integers(0, vocab, size=(batch, seqlen), dtype=np.int64)
    ids[0, 0] = vocab - 1  # the largest id
    tensors = {"compressed_ids": ids, "input_ids": ids.copy()}
    for layer in cfg["layer_ids"]:
        rows, m = hash_rows(ids, cfg, layer, vocab, pad, sizes[layer])
        tensors[f"hash_ids.layer{layer}"] = rows
        tensors[f"multipliers.layer{layer}"] = m
    flat = [p for order in sizes[layer_id] for p in order]
    offsets = np.concatenate([[0], np.cumsum(flat)[:-1]]).astype(np.int64)
    rows = tensors[f"hash_ids.layer{layer_id}"] + offsets
    f = lambda *s, scale=1.0: (rng.uniform(-scale, scale, size=s)).astype(np.float32)
    w = {
        "table": f(sum(flat), d_head, scale=1.7),
        "value_w": f(d, d_mem, scale=d_mem ** -0.5),
        "value_b": f(d, scale=d_mem ** -0.5),
        "key_w": [f(d, d_mem, scale=d_mem ** -0.5) for _ in range(M)],
        "key_b": [f(d, scale=d_mem ** -0.5) for _ in range(M)],
        "norm1": [1 + f(d, scale=0.25) for _ in range(M)],
        "norm2": [1 + f(d, scale=0.25) for _ in range(M)],
        "conv_norm": [1 + f(d, scale=0.25) for _ in range(M)],
        "conv_w": f(M * d, 1, cfg["kernel_size"], scale=cfg["kernel_size"] ** -0.5),
    }
    hidden = f(batch, seqlen, M, d, scale=2.0)
    pre = "weights."
    tensors[pre + "multi_head_embedding.embedding.weight"] = w["table"]
    tensors[pre + "multi_head_embedding.offsets"] = offsets
    tensors[pre + "value_proj.weight"] = w["value_w"]
    tensors[pre + "value_proj.bias"] = w["value_b"]
    for b in range(M):
        tensors[pre + f"key_projs.{b}.weight"] = w["key_w"][b]
        tensors[pre + f"key_projs.{b}.bias"] = w["key_b"][b]
        tensors[pre + f"norm1.{b}.weight"] = w["norm1"][b]
        tensors[pre + f"norm2.{b}.weight"] = w["norm2"][b]
        if cfg["short_conv"]:
            tensors[pre + f"short_conv.norms.{b}.weight"] = w["conv_norm"][b]
    if cfg["short_conv"]:
        tensors[pre + "short_conv.conv.weight"] = w["conv_w"]
    tensors["hidden_states"] = hidden
    tensors["output_f64"] = engram_forward(np.float64, cfg, w, hidden, rows)
    tensors["output_f32"] = engram_forward(np.float32, cfg, w, hidden, rows).astype(np.float32)
    meta = {
        "variant": name,
        "reference": "numpy implementation of conformance/golden/README.md (tools/gen_golden_variants.py)",
        "engram": {k: v for k, v in cfg.items() if k not in ("hidden_size", "hc_mult")},
        "backbone": {"hidden_size": d, "hc_mult": M},
        "layer_id": layer_id,
        "compressed_vocab_size": vocab,
        "compressed_pad_id": pad,
        "table_sizes": {str(k): v for k, v in sizes.items()},
    }
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, OUT / f"{name}.safetensors")
    (OUT / f"{name}.json").write_text(json.dumps(meta, indent=1) + "\n")


def moe_forward(dt, case, w, x):
    c = lambda a: np.asarray(a, dtype=dt)
    x = c(x)
    logits = x @ c(w["gate"]).T
    if case["score_func"] == "softmax":
        z = np.exp(logits - logits.max(-1, keepdims=True))
        scores = z / z.sum(-1, keepdims=True)
    else:
        scores = sigmoid(logits)
    biased = scores + c(w["bias"]) if case["bias"] else scores
    E, G = case["n_routed_experts"], case["n_expert_groups"]
    T = x.shape[0]
    sel = biased.copy()
    if G > 1:
        grouped = biased.reshape(T, G, -1)
        srt = -np.sort(-grouped, axis=-1)
        gs = srt[..., :2].sum(-1) if case["bias"] else srt[..., 0]
        keep = np.argsort(-gs, axis=-1, kind="stable")[:, : case["n_limited_groups"]]
        mask = np.ones((T, G), dtype=bool)
        np.put_along_axis(mask, keep, False, axis=1)
        sel = np.where(np.repeat(mask, E // G, axis=1), -np.inf, biased)
    idx = np.argsort(-sel, axis=-1, kind="stable")[:, : case["n_activated_experts"]]
    wts = np.take_along_axis(scores, idx, axis=1)
    if case["score_func"] == "sigmoid":
        wts = wts / wts.sum(-1, keepdims=True)
    wts = wts * dt(case["route_scale"])

    def ffn(x, w1, w2, w3):
        a = x @ c(w1).T
        return ((a * sigmoid(a)) * (x @ c(w3).T)) @ c(w2).T

    y = np.zeros_like(x)
    for e in range(E):
        tok, slot = np.nonzero(idx == e)
        if len(tok):
            y[tok] += ffn(x[tok], w["w1"][e], w["w2"][e], w["w3"][e]) * wts[tok, slot, None]
    if case["n_shared_experts"] > 0:
        y = y + ffn(x, w["s1"], w["s2"], w["s3"])
    return y, wts, idx


def moe_file(name, cases):
    tensors = {}
    for case in cases:
        rng = np.random.default_rng(case["seed"])
        dim, inter, E = case["dim"], case["moe_inter_dim"], case["n_routed_experts"]
        sh = case["n_shared_experts"] * inter
        f = lambda *s, scale=1.0: rng.uniform(-scale, scale, size=s).astype(np.float32)
        w = {
            "gate": f(E, dim, scale=dim ** -0.5),
            "bias": f(E, scale=0.05),
            "w1": [f(inter, dim, scale=dim ** -0.5) for _ in range(E)],
            "w2": [f(dim, inter, scale=inter ** -0.5) for _ in range(E)],
            "w3": [f(inter, dim, scale=dim ** -0.5) for _ in range(E)],
        }
        if sh:
            w.update(s1=f(sh, dim, scale=dim ** -0.5), s2=f(dim, sh, scale=sh ** -0.5), s3=f(sh, dim, scale=dim ** -0.5))
        x = f(case["tokens"], dim)
        p = case["name"] + "."
        tensors[p + "x"] = x
        tensors[p + "weights.gate.weight"] = w["gate"]
        if case["bias"]:
            tensors[p + "weights.gate.bias"] = w["bias"]
        for e in range(E):
            for k in ("w1", "w2", "w3"):
                tensors[p + f"weights.experts.{e}.{k}.weight"] = w[k][e]
        if sh:
            for k, s in (("w1", "s1"), ("w2", "s2"), ("w3", "s3")):
                tensors[p + f"weights.shared_experts.{k}.weight"] = w[s]
        y64, _, idx64 = moe_forward(np.float64, case, w, x)
        y32, w32, idx32 = moe_forward(np.float32, case, w, x)
        tensors[p + "output_f64"] = y64
        tensors[p + "output_f32"] = y32.astype(np.float32)
        tensors[p + "route_weights"] = w32.astype(np.float32)
        tensors[p + "route_indices"] = idx32.astype(np.int64)
        tensors[p + "route_indices_f64"] = idx64.astype(np.int64)
    meta = {"reference": "numpy implementation of conformance/golden/README.md (tools/gen_golden_variants.py)", "cases": cases}
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, OUT / f"{name}.safetensors")
    (OUT / f"{name}.json").write_text(json.dumps(meta, indent=1) + "\n")


def cfg(vocab_sizes, n, embed, heads, layers, pad, seed, kernel, d, m, conv):
    return {"engram_vocab_size": vocab_sizes, "max_ngram_size": n, "n_embed_per_ngram": embed,
            "n_head_per_ngram": heads, "layer_ids": layers, "pad_id": pad, "seed": seed,
            "kernel_size": kernel, "hidden_size": d, "hc_mult": m, "short_conv": conv}


def moe_case(name, dim, inter, E, shared, k, groups, limited, scale, func, bias, tokens, seed):
    return {"name": name, "dim": dim, "moe_inter_dim": inter, "n_routed_experts": E, "n_shared_experts": shared,
            "n_activated_experts": k, "n_expert_groups": groups, "n_limited_groups": limited,
            "route_scale": scale, "score_func": func, "bias": bias, "tokens": tokens, "seed": seed}


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    engram_case("engram_n2_m1_k3", cfg([97], 2, 16, 2, [1], 0, 3, 3, 24, 1, True), 1000, 0, 1, 2, 9, 31)
    engram_case("engram_n4_noconv", cfg([211, 199, 101], 4, 12, 3, [2, 9], 5, 7, 4, 20, 2, False), 5000, 5, 9, 3, 7, 32)
    engram_case("engram_n5_k1_odd", cfg([31, 37, 41, 43], 5, 6, 1, [0], 1, 12345, 2, 9, 3, True), 50000, 1, 0, 2, 11, 33)
    moe_file("moe_variants", [
        moe_case("sigmoid_groups_nobias", 20, 10, 12, 0, 3, 3, 2, 1.0, "sigmoid", False, 17, 41),
        moe_case("softmax_groups_bias", 16, 8, 8, 1, 2, 4, 3, 2.0, "softmax", True, 13, 42),
        moe_case("topk_all_experts", 10, 5, 6, 2, 6, 1, 1, 0.5, "sigmoid", True, 9, 43),
    ])
    print(f"wrote {OUT}")
