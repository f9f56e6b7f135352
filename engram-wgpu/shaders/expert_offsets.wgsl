// expert_offsets: P = [experts]; offsets[e] = where expert e's slots start in the grouped order,
// each expert's run padded to a multiple of 64 (one tile of grouped_linear): offsets[0] = 0,
// offsets[e + 1] = offsets[e] + ceil(counts[e] / 64) * 64. One invocation.
@compute @workgroup_size(1)
fn expert_offsets() {
    var at = 0u;
    for (var e = 0u; e < P[0]; e = e + 1u) {
        offsets[e] = at;
        at = at + (counts[e] + 63u) / 64u * 64u;
    }
    offsets[P[0]] = at;
}
