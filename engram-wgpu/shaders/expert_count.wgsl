// expert_count: P = [slots]; counts[e] = the number of slots (token, choice) routed to expert e
// (counts starts at zero; indices checked beforehand). One invocation per slot.
@compute @workgroup_size(256)
fn expert_count(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let s = flat_index(wg, nwg, lid, 256u);
    if (s < P[0]) {
        atomicAdd(&counts[idx[s]], 1u);
    }
}
