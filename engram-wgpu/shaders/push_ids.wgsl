// push_ids: P = [seqs, keep]; each history shifts left by one and ends with the new id.
@compute @workgroup_size(256)
fn push_ids(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let s = flat_index(wg, nwg, lid, 256u);
    let keep = P[1];
    if (s >= P[0] || keep == 0u) {
        return;
    }
    for (var i = 0u; i + 1u < keep; i = i + 1u) {
        history[s * keep + i] = history[s * keep + i + 1u];
    }
    history[s * keep + keep - 1u] = ids[s];
}
