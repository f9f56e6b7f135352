// copy: P = [n]; dst = src, element by element (the element-exact copy for 16-bit types, whose
// buffers may end in half a word).
@compute @workgroup_size(256)
fn copy(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wg, nwg, lid, 256u);
    if (i < P[0]) {
        st_dst(i, ld_src(i));
    }
}
