// gate: P = [tokens, m, d]; for token t and branch b: k = proj[t, b], v = proj[t, m] (proj is
// [T, m + 1, d]), h = hidden[t, b]; s = (rmsnorm(k) * key_norm[b]) . (rmsnorm(h) * query_norm[b])
// / sqrt(d); alpha[t, b] = sigmoid(sign(s) sqrt(max(|s|, 1e-6))) rounded to the element type;
// value[t, b] = alpha * v. One workgroup of 256 per (token, branch) (reduce3: see reduce_*.wgsl).

@compute @workgroup_size(256)
fn gate(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32 /*SUBGROUP_ARGS*/) {
    /*SUBGROUP_INIT*/
    let tb = flat_group(wg, nwg);
    let m = P[1];
    let d = P[2];
    if (tb >= P[0] * m) {
        return;
    }
    let t = tb / m;
    let b = tb % m;
    let p = t * (m + 1u) * d;
    var sk = 0.0;
    var sh = 0.0;
    var sd = 0.0;
    for (var i = lid; i < d; i = i + 256u) {
        let ki = ld_proj(p + b * d + i);
        let hi = ld_hidden(tb * d + i);
        sk = sk + ki * ki;
        sh = sh + hi * hi;
        sd = sd + ki * ld_key_norm(b * d + i) * hi * ld_query_norm(b * d + i);
    }
    let sums = reduce3(lid, vec3<f32>(sk, sh, sd));
    let eps = 1.1920928955078125e-07;
    let fd = f32(d);
    let rk = 1.0 / sqrt(sums.x / fd + eps);
    let rh = 1.0 / sqrt(sums.y / fd + eps);
    let s = rk * rh * sums.z / sqrt(fd);
    let a = narrow(sigmoid(sign(s) * sqrt(max(abs(s), 1e-6))));
    if (lid == 0u) {
        st_alpha(tb, a);
    }
    for (var i = lid; i < d; i = i + 256u) {
        st_value(tb * d + i, a * ld_proj(p + m * d + i));
    }
}
