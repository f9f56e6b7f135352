// Shared by gate and gate_norm (P = [tokens, m, d, ...], the same bindings): the gate of branch
// b of token t (workgroup tb = t m + b) from its key k = proj[t, b] and hidden h = hidden[t, b]:
// s = (rmsnorm(k) * key_norm[b]) . (rmsnorm(h) * query_norm[b]) / sqrt(d), alpha =
// sigmoid(sign(s) sqrt(max(|s|, 1e-6))) rounded to the element type. Call from
// workgroup-uniform control flow (it sums over the workgroup with reduce3).
fn gate_alpha(tb: u32, lid: u32) -> f32 {
    let m = P[1];
    let d = P[2];
    let b = tb % m;
    let p = (tb / m) * (m + 1u) * d;
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
    return narrow(sigmoid(sign(s) * sqrt(max(abs(s), 1e-6))));
}
