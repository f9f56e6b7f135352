// capture_ids: P = [seqs, keep, pad]; state[s*keep + i] = the id at end - keep + i, or pad before
// the sequence start. One invocation per (s, i).
@compute @workgroup_size(256)
fn capture_ids(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let x = flat_index(wg, nwg, lid, 256u);
    let keep = P[1];
    if (x >= P[0] * keep) {
        return;
    }
    let s = x / keep;
    let i = x % keep;
    let start = cu[s];
    let end = cu[s + 1u];
    var id = P[2];
    if (end + i >= keep && end + i - keep >= start) {
        id = ids[end + i - keep];
    }
    state[x] = id;
}
