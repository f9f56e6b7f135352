// rms_norm: P = [vectors, d, groups, bits of eps]; out = x / sqrt(mean(x^2) + eps) * w, with
// vector v scaled by w[v % groups]. One workgroup of 256 per vector (reduce3: see reduce_*.wgsl).

@compute @workgroup_size(256)
fn rms_norm(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32 /*SUBGROUP_ARGS*/) {
    /*SUBGROUP_INIT*/
    let v = flat_group(wg, nwg);
    let d = P[1];
    if (v >= P[0]) {
        return;
    }
    var ss = 0.0;
    for (var i = lid; i < d; i = i + 256u) {
        let a = ld_x(v * d + i);
        ss = ss + a * a;
    }
    let total = reduce3(lid, vec3<f32>(ss, 0.0, 0.0));
    let inv = 1.0 / sqrt(total.x / f32(d) + bitcast<f32>(P[3]));
    let wrow = (v % P[2]) * d;
    for (var i = lid; i < d; i = i + 256u) {
        st_out(v * d + i, ld_x(v * d + i) * inv * ld_w(wrow + i));
    }
}
