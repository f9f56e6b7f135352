// gate_norm: P = [tokens, m, d, bits of the conv norm's eps]; the gate (gate_common.wgsl) and the
// convolution's RMSNorm of the gated value in one workgroup of 256 per (token, branch):
// value[t, b] = alpha * v (rounded to the element type), normed[t, b] = value / sqrt(mean(value^2)
// + eps) * conv_norm[b] (reduce3: see reduce_*.wgsl).
@compute @workgroup_size(256)
fn gate_norm(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32 /*SUBGROUP_ARGS*/) {
    /*SUBGROUP_INIT*/
    let tb = flat_group(wg, nwg);
    let m = P[1];
    let d = P[2];
    if (tb >= P[0] * m) {
        return;
    }
    let b = tb % m;
    let p = (tb / m) * (m + 1u) * d;
    let a = gate_alpha(tb, lid);
    if (lid == 0u) {
        st_alpha(tb, a);
    }
    var sv = 0.0;
    for (var i = lid; i < d; i = i + 256u) {
        let v = narrow(a * ld_proj(p + m * d + i));
        st_value(tb * d + i, v);
        sv = sv + v * v;
    }
    let inv = 1.0 / sqrt(reduce3(lid, vec3<f32>(sv, 0.0, 0.0)).x / f32(d) + bitcast<f32>(P[3]));
    for (var i = lid; i < d; i = i + 256u) {
        let v = narrow(a * ld_proj(p + m * d + i));
        st_normed(tb * d + i, v * inv * ld_conv_norm(b * d + i));
    }
}
