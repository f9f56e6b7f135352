// gather: P = [d_head, heads, n_rows, win_start, win_end]; out[r*d_head + c] =
// table[(offsets[r % heads] + rows[r]) * d_head + c] for the rows whose first element lies in
// [win_start, win_end); `table` is bound from element win_start on (a table larger than one
// storage binding is gathered window by window). Rows are checked beforehand. One invocation per
// output element.
@compute @workgroup_size(256)
fn gather(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wg, nwg, lid, 256u);
    let d_head = P[0];
    if (i >= P[2] * d_head) {
        return;
    }
    let r = i / d_head;
    let c = i % d_head;
    let start = (offsets[r % P[1]] + rows[r]) * d_head;
    if (start >= P[3] && start < P[4]) {
        st_out(i, ld_table(start - P[3] + c));
    }
}
