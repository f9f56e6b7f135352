// compress_ids: P = [n]; out[i] = lookup[raw[i]] (ids checked beforehand).
@compute @workgroup_size(256)
fn compress_ids(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wg, nwg, lid, 256u);
    if (i < P[0]) {
        out[i] = lookup[raw[i]];
    }
}
