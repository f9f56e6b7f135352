// reduce3 for every adapter: the sum of `v` over the workgroup of 256 invocations, by a tree in
// workgroup memory (fixed order). Call from workgroup-uniform control flow.
var<workgroup> red: array<vec3<f32>, 256>;

fn reduce3(lid: u32, v: vec3<f32>) -> vec3<f32> {
    red[lid] = v;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s = s >> 1u) {
        if (lid < s) {
            red[lid] = red[lid] + red[lid + s];
        }
        workgroupBarrier();
    }
    let total = red[0];
    workgroupBarrier();
    return total;
}
