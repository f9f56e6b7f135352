// route: P = [tokens, experts, groups, limited, k, sigmoid, bits of route_scale, has_bias];
// group-limited top-k with the oracle's tie rule (higher score first, then lower index). Each
// biased score s + b is kept exactly as an unevaluated sum (hi, lo) of two f32 (TwoSum), so the
// ranking is that of the exact sums, as the oracle's f64 ranking is. experts <= 1024 and
// groups <= 32 (checked by the host). One invocation per token.

// The exact sum a + b as (rounded sum, rounding error).
fn two_sum(a: f32, b: f32) -> vec2<f32> {
    let s = a + b;
    let bb = s - a;
    let err = (a - (s - bb)) + (b - bb);
    return vec2<f32>(s, err);
}

fn biased(row: u32, i: u32) -> vec2<f32> {
    if (P[7] != 0u) {
        return two_sum(ld_scores(row + i), ld_bias(i));
    }
    return vec2<f32>(ld_scores(row + i), 0.0);
}

// Whether the exact value x.x + x.y exceeds y.x + y.y (both pairs are TwoSum results or sums of
// two of them, so comparing the rounded parts first and the errors on equality is exact).
fn greater(x: vec2<f32>, y: vec2<f32>) -> bool {
    return x.x > y.x || (x.x == y.x && x.y > y.y);
}

// The sum of two exact pairs, renormalised.
fn add_pairs(x: vec2<f32>, y: vec2<f32>) -> vec2<f32> {
    let s = two_sum(x.x, y.x);
    return two_sum(s.x, s.y + x.y + y.y);
}

@compute @workgroup_size(64)
fn route(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let t = flat_index(wg, nwg, lid, 64u);
    if (t >= P[0]) {
        return;
    }
    let e = P[1];
    let groups = P[2];
    let k = P[4];
    let row = t * e;
    let per = e / groups;
    let neg = vec2<f32>(-3.0e38, 0.0);
    var allowed: array<u32, 32>;
    for (var w = 0u; w < 32u; w = w + 1u) {
        allowed[w] = 0u;
    }
    if (groups > 1u) {
        var chosen = 0u;
        for (var r = 0u; r < P[3]; r = r + 1u) {
            var best = groups;
            var best_score = neg;
            for (var g = 0u; g < groups; g = g + 1u) {
                if ((chosen & (1u << g)) != 0u) {
                    continue;
                }
                var b1 = neg;
                var b2 = neg;
                var n1 = false;
                var n2 = false;
                for (var i = g * per; i < (g + 1u) * per; i = i + 1u) {
                    let v = biased(row, i);
                    if (!n1 || greater(v, b1)) {
                        b2 = b1;
                        n2 = n1;
                        b1 = v;
                        n1 = true;
                    } else if (!n2 || greater(v, b2)) {
                        b2 = v;
                        n2 = true;
                    }
                }
                var gs = b1;
                if (P[7] != 0u) {
                    gs = add_pairs(b1, b2);
                }
                if (best == groups || greater(gs, best_score)) {
                    best = g;
                    best_score = gs;
                }
            }
            chosen = chosen | (1u << best);
            for (var i = best * per; i < (best + 1u) * per; i = i + 1u) {
                allowed[i / 32u] = allowed[i / 32u] | (1u << (i % 32u));
            }
        }
    } else {
        for (var i = 0u; i < e; i = i + 1u) {
            allowed[i / 32u] = allowed[i / 32u] | (1u << (i % 32u));
        }
    }
    var sum = 0.0;
    for (var j = 0u; j < k; j = j + 1u) {
        var best = e;
        var best_score = neg;
        for (var i = 0u; i < e; i = i + 1u) {
            if ((allowed[i / 32u] & (1u << (i % 32u))) == 0u) {
                continue;
            }
            let v = biased(row, i);
            if (best == e || greater(v, best_score)) {
                best = i;
                best_score = v;
            }
        }
        allowed[best / 32u] = allowed[best / 32u] & ~(1u << (best % 32u));
        indices[t * k + j] = best;
        sum = sum + ld_scores(row + best);
    }
    let scale = bitcast<f32>(P[6]);
    for (var j = 0u; j < k; j = j + 1u) {
        var w = ld_scores(row + indices[t * k + j]);
        if (P[5] != 0u) {
            w = w / sum;
        }
        st_weights(t * k + j, w * scale);
    }
}
