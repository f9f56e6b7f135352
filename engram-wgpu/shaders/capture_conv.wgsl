// capture_conv: P = [seqs, hist, channels]; state[s, k, c] = normed[end - hist + k, c], or 0
// before the sequence start. One invocation per state element.
@compute @workgroup_size(256)
fn capture_conv(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wg, nwg, lid, 256u);
    let hist = P[1];
    let c = P[2];
    if (i >= P[0] * hist * c) {
        return;
    }
    let s = i / (hist * c);
    let k = (i / c) % hist;
    let ch = i % c;
    let start = cu[s];
    let end = cu[s + 1u];
    var v = 0.0;
    if (end + k >= hist && end + k - hist >= start) {
        v = ld_normed((end + k - hist) * c + ch);
    }
    st_state(i, v);
}
