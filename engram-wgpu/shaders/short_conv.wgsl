// short_conv: P = [tokens, channels, kernel, dilation, seqs]; out[t, c] = value[t, c] + SiLU(
// sum_k w[c, k] normed[t - (kernel - 1 - k) dilation, c]), terms before the sequence start
// dropped. One invocation per (t, c).
@compute @workgroup_size(256)
fn short_conv(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wg, nwg, lid, 256u);
    let c = P[1];
    if (i >= P[0] * c) {
        return;
    }
    let kernel = P[2];
    let t = i / c;
    let ch = i % c;
    let start = cu[sequence_of(P[4], t)];
    var acc = 0.0;
    for (var k = 0u; k < kernel; k = k + 1u) {
        let back = (kernel - 1u - k) * P[3];
        if (t >= start + back) {
            acc = acc + ld_w(ch * kernel + k) * ld_normed((t - back) * c + ch);
        }
    }
    st_out(i, ld_value(i) + acc * sigmoid(acc));
}
