// hash_decode: P = [seqs, n_max, k]; the window of sequence s is history[s] (n_max - 1 ids, oldest
// first) then ids[s].
@compute @workgroup_size(256)
fn hash_decode(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let s = flat_index(wg, nwg, lid, 256u);
    if (s >= P[0]) {
        return;
    }
    let n_max = P[1];
    let k = P[2];
    let keep = n_max - 1u;
    let heads = keep * k;
    var mix = mul_u32_u64(ids[s], vec2<u32>(mult[0], mult[1]));
    for (var n = 1u; n < n_max; n = n + 1u) {
        mix = mix ^ mul_u32_u64(history[s * keep + keep - n], vec2<u32>(mult[2u * n], mult[2u * n + 1u]));
        for (var j = 0u; j < k; j = j + 1u) {
            let h = (n - 1u) * k + j;
            rows[s * heads + h] = mod_u64_u32(mix, sizes[h]);
        }
    }
}
