// routed_linear: P = [tokens, k, in, out, per_slot]; y[t*k + j, o] = x_row . w[idx[t*k + j], o, :]
// with x_row = x[t] (per_slot = 0) or x[t*k + j]. One invocation per output element.
@compute @workgroup_size(256)
fn routed_linear(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wg, nwg, lid, 256u);
    let k = P[1];
    let inf = P[2];
    let outf = P[3];
    if (i >= P[0] * k * outf) {
        return;
    }
    let slot = i / outf;
    let o = i % outf;
    var xr = (slot / k) * inf;
    if (P[4] != 0u) {
        xr = slot * inf;
    }
    let wr = (idx[slot] * outf + o) * inf;
    var acc = 0.0;
    for (var c = 0u; c < inf; c = c + 1u) {
        acc = acc + ld_x(xr + c) * ld_w(wr + c);
    }
    st_y(i, acc);
}
