// short_conv_decode: P = [seqs, channels, kernel, dilation]; the conv for one new token per
// sequence from its history ([S, (kernel - 1) dilation, channels], oldest first), which then
// shifts by one and ends with the new normed input. One invocation per (s, c).
@compute @workgroup_size(256)
fn short_conv_decode(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wg, nwg, lid, 256u);
    let c = P[1];
    if (i >= P[0] * c) {
        return;
    }
    let kernel = P[2];
    let s = i / c;
    let ch = i % c;
    let len = (kernel - 1u) * P[3];
    let h = s * len * c;
    var acc = ld_w(ch * kernel + kernel - 1u) * ld_normed(i);
    for (var k = 0u; k + 1u < kernel; k = k + 1u) {
        let back = (kernel - 1u - k) * P[3];
        acc = acc + ld_w(ch * kernel + k) * ld_history(h + (len - back) * c + ch);
    }
    st_out(i, ld_value(i) + acc * sigmoid(acc));
    for (var j = 0u; j + 1u < len; j = j + 1u) {
        st_history(h + j * c + ch, ld_history(h + (j + 1u) * c + ch));
    }
    if (len > 0u) {
        st_history(h + (len - 1u) * c + ch, ld_normed(i));
    }
}
