// linear: P = [rows, in, out, has_bias]; y[r, o] = x[r, :] . w[o, :] (+ bias[o]). x [rows, in],
// w [out, in] (PyTorch's layout), y [rows, out]. Workgroup (16, 16) computes a 64 x 64 tile of y
// through 16-wide slices of k staged in workgroup memory, k-major, four rows (or four outputs)
// per vec4; invocation (tx, ty) holds the 4 x 4 block of rows 4 ty .. 4 ty + 3 and outputs
// 4 tx .. 4 tx + 3 in four vec4 accumulators (an outer product per k). Grid (ceil(out / 64),
// ceil(rows / 64)). Accumulates in f32, k in increasing order.
var<workgroup> xs: array<vec4<f32>, 256>;
var<workgroup> ws: array<vec4<f32>, 256>;

@compute @workgroup_size(16, 16)
fn linear(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let rows = P[0];
    let inf = P[1];
    let outf = P[2];
    let row0 = wg.y * 64u;
    let col0 = wg.x * 64u;
    let tid = lid.y * 16u + lid.x;
    // What this invocation stages: slice column kk of four consecutive rows (and outputs).
    let kk_load = tid % 16u;
    let quad = tid / 16u;
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var k0 = 0u; k0 < inf; k0 = k0 + 16u) {
        let gk = k0 + kk_load;
        var xv = vec4<f32>(0.0);
        var wv = vec4<f32>(0.0);
        if (gk < inf) {
            for (var q = 0u; q < 4u; q = q + 1u) {
                let r = row0 + quad * 4u + q;
                if (r < rows) {
                    xv[q] = ld_x(r * inf + gk);
                }
                let o = col0 + quad * 4u + q;
                if (o < outf) {
                    wv[q] = ld_w(o * inf + gk);
                }
            }
        }
        xs[kk_load * 16u + quad] = xv;
        ws[kk_load * 16u + quad] = wv;
        workgroupBarrier();
        for (var kk = 0u; kk < 16u; kk = kk + 1u) {
            let a = xs[kk * 16u + lid.y];
            let b = ws[kk * 16u + lid.x];
            acc0 = acc0 + a.x * b;
            acc1 = acc1 + a.y * b;
            acc2 = acc2 + a.z * b;
            acc3 = acc3 + a.w * b;
        }
        workgroupBarrier();
    }
    let c0 = col0 + lid.x * 4u;
    let bias = bias4(c0, outf);
    let r0 = row0 + lid.y * 4u;
    store_row(r0, c0, rows, outf, acc0 + bias);
    store_row(r0 + 1u, c0, rows, outf, acc1 + bias);
    store_row(r0 + 2u, c0, rows, outf, acc2 + bias);
    store_row(r0 + 3u, c0, rows, outf, acc3 + bias);
}
