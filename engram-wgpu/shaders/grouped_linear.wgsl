// grouped_linear: P = [k, in, out, per_slot, experts]; the expert projections over slots grouped
// by expert: for every slot s in `order` (see expert_scatter), y[s, o] = x_row . w[e, o, :] with e
// its expert and x_row = x[s / k] (per_slot = 0: the token's input) or x[s] (per_slot = 1).
// w is [experts, out, in]. Workgroup (16, 16) computes 64 grouped rows (all of one expert, as
// every expert's run starts on a multiple of 64) by 64 outputs, 4 x 4 per invocation, each expert
// weight read once per tile; grid (ceil(out / 64), ceil(len(order) / 64)).
@compute @workgroup_size(16, 16)
fn grouped_linear(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let k = P[0];
    let inf = P[1];
    let outf = P[2];
    let experts = P[4];
    let tile = wg.y * 64u;
    if (tile >= offsets[experts]) {
        return;
    }
    // The expert whose run holds this tile: the largest e with offsets[e] <= tile.
    var lo = 0u;
    var hi = experts - 1u;
    while (lo < hi) {
        let mid = (lo + hi + 1u) / 2u;
        if (offsets[mid] <= tile) {
            lo = mid;
        } else {
            hi = mid - 1u;
        }
    }
    let e = lo;
    let r0 = tile + lid.y * 4u;
    let c0 = wg.x * 64u + lid.x * 4u;
    if (c0 >= outf) {
        return;
    }
    var slot: array<u32, 4>;
    var xr: array<u32, 4>;
    for (var i = 0u; i < 4u; i = i + 1u) {
        slot[i] = order[r0 + i];
        var row = 0u;
        if (slot[i] != 0xffffffffu) {
            row = select(slot[i] / k, slot[i], P[3] != 0u);
        }
        xr[i] = row * inf;
    }
    let wr = (e * outf + vec4<u32>(c0, min(c0 + 1u, outf - 1u), min(c0 + 2u, outf - 1u), min(c0 + 3u, outf - 1u))) * inf;
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var c = 0u; c < inf; c = c + 1u) {
        let b = vec4<f32>(ld_w(wr.x + c), ld_w(wr.y + c), ld_w(wr.z + c), ld_w(wr.w + c));
        acc0 = acc0 + ld_x(xr[0] + c) * b;
        acc1 = acc1 + ld_x(xr[1] + c) * b;
        acc2 = acc2 + ld_x(xr[2] + c) * b;
        acc3 = acc3 + ld_x(xr[3] + c) * b;
    }
    store_slot(slot[0], c0, outf, acc0);
    store_slot(slot[1], c0, outf, acc1);
    store_slot(slot[2], c0, outf, acc2);
    store_slot(slot[3], c0, outf, acc3);
}

fn store_slot(s: u32, c0: u32, outf: u32, v: vec4<f32>) {
    if (s == 0xffffffffu) {
        return;
    }
    for (var j = 0u; j < 4u; j = j + 1u) {
        if (c0 + j < outf) {
            st_y(s * outf + c0 + j, v[j]);
        }
    }
}
