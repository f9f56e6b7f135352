// reduce3 where the adapter has subgroup operations: each subgroup sums with subgroupAdd, then
// every invocation adds the subgroups' sums in subgroup order (fixed for a given adapter). Call
// from workgroup-uniform control flow. The entry point stores its subgroup built-ins in these.
var<workgroup> red: array<vec3<f32>, 256>;
var<private> sg_lane: u32;
var<private> sg_id: u32;
var<private> sg_count: u32;

fn reduce3(lid: u32, v: vec3<f32>) -> vec3<f32> {
    let s = subgroupAdd(v);
    if (sg_lane == 0u) {
        red[sg_id] = s;
    }
    workgroupBarrier();
    var total = vec3<f32>(0.0);
    for (var i = 0u; i < sg_count; i = i + 1u) {
        total = total + red[i];
    }
    workgroupBarrier();
    return total;
}
