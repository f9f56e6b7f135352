// scores_act: P = [tokens, experts, softmax]; each row of logits [tokens, experts] through a
// sigmoid, or a softmax (max subtracted first). One invocation per token.
@compute @workgroup_size(64)
fn scores_act(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let t = flat_index(wg, nwg, lid, 64u);
    let e = P[1];
    if (t >= P[0]) {
        return;
    }
    let row = t * e;
    if (P[2] != 0u) {
        var mx = ld_logits(row);
        for (var i = 1u; i < e; i = i + 1u) {
            mx = max(mx, ld_logits(row + i));
        }
        var sum = 0.0;
        for (var i = 0u; i < e; i = i + 1u) {
            sum = sum + exp(ld_logits(row + i) - mx);
        }
        for (var i = 0u; i < e; i = i + 1u) {
            st_scores(row + i, exp(ld_logits(row + i) - mx) / sum);
        }
    } else {
        for (var i = 0u; i < e; i = i + 1u) {
            st_scores(row + i, sigmoid(ld_logits(row + i)));
        }
    }
}
