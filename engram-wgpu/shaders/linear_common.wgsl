// Shared by the projection kernels (bindings bias and y, P[3] = has_bias): the bias of outputs
// c0 .. c0 + 3 (zero without one, or past the end), and one row's four outputs stored.
fn bias4(c0: u32, outf: u32) -> vec4<f32> {
    var bias = vec4<f32>(0.0);
    if (P[3] != 0u) {
        for (var j = 0u; j < 4u; j = j + 1u) {
            if (c0 + j < outf) {
                bias[j] = ld_bias(c0 + j);
            }
        }
    }
    return bias;
}

fn store_row(r: u32, c0: u32, rows: u32, outf: u32, v: vec4<f32>) {
    if (r >= rows) {
        return;
    }
    for (var j = 0u; j < 4u; j = j + 1u) {
        if (c0 + j < outf) {
            st_y(r * outf + c0 + j, v[j]);
        }
    }
}
