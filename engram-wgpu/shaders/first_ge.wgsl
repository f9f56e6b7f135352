// first_ge: P = [n, limit]; first = min index i with v[i] >= limit (untouched when none; starts at
// 0xffffffff).
@compute @workgroup_size(256)
fn first_ge(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wg, nwg, lid, 256u);
    if (i < P[0] && v[i] >= P[1]) {
        atomicMin(&first[0], i);
    }
}
