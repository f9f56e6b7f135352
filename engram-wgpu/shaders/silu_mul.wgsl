// silu_mul: P = [n]; h = SiLU(a) * b, element-wise.
@compute @workgroup_size(256)
fn silu_mul(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wg, nwg, lid, 256u);
    if (i < P[0]) {
        let x = ld_a(i);
        st_h(i, x * sigmoid(x) * ld_b(i));
    }
}
