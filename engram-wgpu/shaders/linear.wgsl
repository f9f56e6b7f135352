// linear: P = [rows, in, out, has_bias]; y[r, o] = x[r, :] . w[o, :] (+ bias[o]). x [rows, in],
// w [out, in] (PyTorch's layout), y [rows, out]. Workgroup (16, 16) computes a 64 x 64 tile of y,
// four rows by four columns per invocation, through 64 x 16 tiles of x and w in workgroup memory;
// grid (ceil(out / 64), ceil(rows / 64)). Accumulates in f32, k in increasing order.
var<workgroup> xs: array<f32, 1024>;
var<workgroup> ws: array<f32, 1024>;

@compute @workgroup_size(16, 16)
fn linear(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let rows = P[0];
    let inf = P[1];
    let outf = P[2];
    let row0 = wg.y * 64u;
    let col0 = wg.x * 64u;
    let tid = lid.y * 16u + lid.x;
    var acc: array<f32, 16>;
    for (var q = 0u; q < 16u; q = q + 1u) {
        acc[q] = 0.0;
    }
    for (var k0 = 0u; k0 < inf; k0 = k0 + 16u) {
        for (var j = 0u; j < 4u; j = j + 1u) {
            let e = tid + j * 256u;
            let r = e / 16u;
            let gk = k0 + e % 16u;
            var xv = 0.0;
            if (row0 + r < rows && gk < inf) {
                xv = ld_x((row0 + r) * inf + gk);
            }
            xs[e] = xv;
            var wv = 0.0;
            if (col0 + r < outf && gk < inf) {
                wv = ld_w((col0 + r) * inf + gk);
            }
            ws[e] = wv;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < 16u; kk = kk + 1u) {
            var a: array<f32, 4>;
            var b: array<f32, 4>;
            for (var q = 0u; q < 4u; q = q + 1u) {
                a[q] = xs[(lid.y + 16u * q) * 16u + kk];
                b[q] = ws[(lid.x + 16u * q) * 16u + kk];
            }
            for (var i = 0u; i < 4u; i = i + 1u) {
                for (var j = 0u; j < 4u; j = j + 1u) {
                    acc[i * 4u + j] = acc[i * 4u + j] + a[i] * b[j];
                }
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i = i + 1u) {
        let r = row0 + lid.y + 16u * i;
        for (var j = 0u; j < 4u; j = j + 1u) {
            let c = col0 + lid.x + 16u * j;
            if (r < rows && c < outf) {
                var v = acc[i * 4u + j];
                if (P[3] != 0u) {
                    v = v + ld_bias(c);
                }
                st_y(r * outf + c, v);
            }
        }
    }
}
