// gate_norm: P = [tokens, m, d, bits of the conv norm's eps]; the gate (see gate.wgsl) and the
// convolution's RMSNorm of the gated value in one workgroup of 256 per (token, branch):
// value[t, b] = alpha * v (rounded to the element type), normed[t, b] = value / sqrt(mean(value^2)
// + eps) * conv_norm[b]. Fixed reduction order.
var<workgroup> red: array<f32, 768>;

fn reduce3(lid: u32) {
    workgroupBarrier();
    for (var s = 128u; s > 0u; s = s >> 1u) {
        if (lid < s) {
            red[lid] = red[lid] + red[lid + s];
            red[256u + lid] = red[256u + lid] + red[256u + lid + s];
            red[512u + lid] = red[512u + lid] + red[512u + lid + s];
        }
        workgroupBarrier();
    }
}

@compute @workgroup_size(256)
fn gate_norm(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
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
    red[lid] = sk;
    red[256u + lid] = sh;
    red[512u + lid] = sd;
    reduce3(lid);
    let eps = 1.1920928955078125e-07;
    let fd = f32(d);
    let rk = 1.0 / sqrt(red[0] / fd + eps);
    let rh = 1.0 / sqrt(red[256] / fd + eps);
    let s = rk * rh * red[512] / sqrt(fd);
    let a = narrow(sigmoid(sign(s) * sqrt(max(abs(s), 1e-6))));
    workgroupBarrier();
    if (lid == 0u) {
        st_alpha(tb, a);
    }
    var sv = 0.0;
    for (var i = lid; i < d; i = i + 256u) {
        let v = narrow(a * ld_proj(p + m * d + i));
        st_value(tb * d + i, v);
        sv = sv + v * v;
    }
    red[lid] = sv;
    red[256u + lid] = 0.0;
    red[512u + lid] = 0.0;
    reduce3(lid);
    let inv = 1.0 / sqrt(red[0] / fd + bitcast<f32>(P[3]));
    for (var i = lid; i < d; i = i + 256u) {
        let v = narrow(a * ld_proj(p + m * d + i));
        st_normed(tb * d + i, v * inv * ld_conv_norm(b * d + i));
    }
}
