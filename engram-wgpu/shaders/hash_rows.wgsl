// hash_rows: P = [tokens, seqs, n_max, k, pad, compress]; mult = the layer's multipliers as (low,
// high) pairs. rows[t*H + (n-2)*k + j] = (XOR_{i<n} x_{t-i} * mult[i]) mod sizes[(n-2)*k + j], with
// H = (n_max - 1) k and `pad` (a canonical id) before the sequence start. With compress = 1 the
// ids are raw token ids, compressed on the fly as x = lookup[id] (ids checked beforehand); with
// compress = 0 they are canonical already and `lookup` is not read.
@compute @workgroup_size(256)
fn hash_rows(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let t = flat_index(wg, nwg, lid, 256u);
    let tokens = P[0];
    if (t >= tokens) {
        return;
    }
    let n_max = P[2];
    let k = P[3];
    let heads = (n_max - 1u) * k;
    let start = cu[sequence_of(P[1], t)];
    var mix = vec2<u32>(0u, 0u);
    for (var n = 0u; n < n_max; n = n + 1u) {
        var id = P[4];
        if (t >= start + n) {
            id = ids[t - n];
            if (P[5] != 0u) {
                id = lookup[id];
            }
        }
        let term = mul_u32_u64(id, vec2<u32>(mult[2u * n], mult[2u * n + 1u]));
        mix = mix ^ term;
        if (n == 0u) {
            continue;
        }
        for (var j = 0u; j < k; j = j + 1u) {
            let h = (n - 1u) * k + j;
            rows[t * heads + h] = mod_u64_u32(mix, sizes[h]);
        }
    }
}
