// linear_vec4_tiled: P = [rows, in / 4, out, has_bias]; linear_vec4 through workgroup memory, for
// GPUs (on CPU drivers the direct loads of linear_vec4 run faster). Workgroup (16, 16)
// computes a 64 x 64 tile of y through 16-wide slices of k staged in workgroup memory: each
// invocation loads one 4-element quad of x and one of w per slice, and holds the 4 x 4 block of
// rows 4 ty .. 4 ty + 3 by outputs 4 tx .. 4 tx + 3 in four vec4 accumulators (an outer product
// per k). Grid (ceil(out / 64), ceil(rows / 64)). Accumulates in f32, k in increasing order.
var<workgroup> xs: array<f32, 1024>;
var<workgroup> ws: array<f32, 1024>;

@compute @workgroup_size(16, 16)
fn linear_vec4_tiled(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let rows = P[0];
    let quads = P[1];
    let outf = P[2];
    let row0 = wg.y * 64u;
    let col0 = wg.x * 64u;
    let tid = lid.y * 16u + lid.x;
    // What this invocation stages per slice: quad q of row (or output) i of the tile.
    let i = tid / 4u;
    let q = tid % 4u;
    let xrow = min(row0 + i, rows - 1u) * quads;
    let wrow = min(col0 + i, outf - 1u) * quads;
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var k0 = 0u; k0 < quads; k0 = k0 + 4u) {
        var xv = vec4<f32>(0.0);
        var wv = vec4<f32>(0.0);
        if (k0 + q < quads) {
            xv = ld4_x(xrow + k0 + q);
            wv = ld4_w(wrow + k0 + q);
        }
        // k-major: element kk of the slice for tile row i sits at kk * 64 + i.
        for (var j = 0u; j < 4u; j = j + 1u) {
            xs[(4u * q + j) * 64u + i] = xv[j];
            ws[(4u * q + j) * 64u + i] = wv[j];
        }
        workgroupBarrier();
        for (var kk = 0u; kk < 16u; kk = kk + 1u) {
            let xa = kk * 64u + lid.y * 4u;
            let wa = kk * 64u + lid.x * 4u;
            let a = vec4<f32>(xs[xa], xs[xa + 1u], xs[xa + 2u], xs[xa + 3u]);
            let b = vec4<f32>(ws[wa], ws[wa + 1u], ws[wa + 2u], ws[wa + 3u]);
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
