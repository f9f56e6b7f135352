// gate: P = [tokens, m, d]; for token t and branch b (proj is [T, m + 1, d], its last block v
// the value): alpha[t, b] = gate_alpha (see gate_common.wgsl), value[t, b] = alpha * v. One
// workgroup of 256 per (token, branch).

@compute @workgroup_size(256)
fn gate(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32 /*SUBGROUP_ARGS*/) {
    /*SUBGROUP_INIT*/
    let tb = flat_group(wg, nwg);
    let m = P[1];
    let d = P[2];
    if (tb >= P[0] * m) {
        return;
    }
    let p = (tb / m) * (m + 1u) * d;
    let a = gate_alpha(tb, lid);
    if (lid == 0u) {
        st_alpha(tb, a);
    }
    for (var i = lid; i < d; i = i + 256u) {
        st_value(tb * d + i, a * ld_proj(p + m * d + i));
    }
}
