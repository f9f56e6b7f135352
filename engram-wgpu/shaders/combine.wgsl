// combine: P = [tokens, k, dim, has_shared]; out[t, c] = shared_out[t, c] + sum_j weights[t, j]
// expert_out[t*k + j, c]. One invocation per output element.
@compute @workgroup_size(256)
fn combine(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wg, nwg, lid, 256u);
    let k = P[1];
    let dim = P[2];
    if (i >= P[0] * dim) {
        return;
    }
    let t = i / dim;
    let c = i % dim;
    var acc = 0.0;
    if (P[3] != 0u) {
        acc = ld_shared_out(i);
    }
    for (var j = 0u; j < k; j = j + 1u) {
        acc = acc + ld_weights(t * k + j) * ld_expert_out((t * k + j) * dim + c);
    }
    st_out(i, acc);
}
