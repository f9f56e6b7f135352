// linear_vec4: P = [rows, in / 4, out, has_bias]; linear for `in` a multiple of 4, reading x and w
// four elements at a time along k (16-byte loads in f32, 8-byte in f16/bf16). Invocation
// (tx, ty) of workgroup (x, y) computes rows 64 y + 4 ty .. + 3 by outputs 64 x + 4 tx .. + 3, each
// as the sum over k-quads of 4-element dot products, in increasing k. Grid (ceil(out / 64),
// ceil(rows / 64)); workgroup (16, 16); no workgroup memory (caches serve the reuse: on CPU
// drivers this runs 1.7-3x faster than staging slices in workgroup memory, linear_vec4_tiled).
@compute @workgroup_size(16, 16)
fn linear_vec4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let rows = P[0];
    let quads = P[1];
    let outf = P[2];
    let r0 = wg.y * 64u + lid.y * 4u;
    let c0 = wg.x * 64u + lid.x * 4u;
    if (r0 >= rows || c0 >= outf) {
        return;
    }
    // Rows and outputs past the end repeat the last one (computed, never stored).
    let xr = vec4<u32>(r0, min(r0 + 1u, rows - 1u), min(r0 + 2u, rows - 1u), min(r0 + 3u, rows - 1u)) * quads;
    let wr = vec4<u32>(c0, min(c0 + 1u, outf - 1u), min(c0 + 2u, outf - 1u), min(c0 + 3u, outf - 1u)) * quads;
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var q = 0u; q < quads; q = q + 1u) {
        let b0 = ld4_w(wr.x + q);
        let b1 = ld4_w(wr.y + q);
        let b2 = ld4_w(wr.z + q);
        let b3 = ld4_w(wr.w + q);
        let a0 = ld4_x(xr.x + q);
        acc0 = acc0 + vec4<f32>(dot(a0, b0), dot(a0, b1), dot(a0, b2), dot(a0, b3));
        let a1 = ld4_x(xr.y + q);
        acc1 = acc1 + vec4<f32>(dot(a1, b0), dot(a1, b1), dot(a1, b2), dot(a1, b3));
        let a2 = ld4_x(xr.z + q);
        acc2 = acc2 + vec4<f32>(dot(a2, b0), dot(a2, b1), dot(a2, b2), dot(a2, b3));
        let a3 = ld4_x(xr.w + q);
        acc3 = acc3 + vec4<f32>(dot(a3, b0), dot(a3, b1), dot(a3, b2), dot(a3, b3));
    }
    let bias = bias4(c0, outf);
    store_row(r0, c0, rows, outf, acc0 + bias);
    store_row(r0 + 1u, c0, rows, outf, acc1 + bias);
    store_row(r0 + 2u, c0, rows, outf, acc2 + bias);
    store_row(r0 + 3u, c0, rows, outf, acc3 + bias);
}
