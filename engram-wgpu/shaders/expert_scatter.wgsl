// expert_scatter: P = [slots]; order[offsets[e] + i] = the i-th slot routed to expert e, in an
// unspecified order within the expert (every output row is computed from its own slot alone, so
// the order changes no value). cursor starts at zero; unfilled entries of order keep their
// 0xffffffff. One invocation per slot.
@compute @workgroup_size(256)
fn expert_scatter(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let s = flat_index(wg, nwg, lid, 256u);
    if (s < P[0]) {
        let e = idx[s];
        order[offsets[e] + atomicAdd(&cursor[e], 1u)] = s;
    }
}
