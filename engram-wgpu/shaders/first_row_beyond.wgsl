// first_row_beyond: P = [n, heads]; first = min flat index i with rows[i] >= sizes[i % heads].
@compute @workgroup_size(256)
fn first_row_beyond(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wg, nwg, lid, 256u);
    if (i < P[0] && rows[i] >= sizes[i % P[1]]) {
        atomicMin(&first[0], i);
    }
}
