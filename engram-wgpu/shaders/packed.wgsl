// The packed-batch search, for kernels with a `cu` (sequence starts) binding.

// The sequence of position t in a packed batch: the largest s with cu[s] <= t (an empty sequence
// shares its start with the next, and the largest such s is the non-empty one).
fn sequence_of(seqs: u32, t: u32) -> u32 {
    var lo = 0u;
    var hi = seqs - 1u;
    while (lo < hi) {
        let mid = (lo + hi + 1u) / 2u;
        if (cu[mid] <= t) {
            lo = mid;
        } else {
            hi = mid - 1u;
        }
    }
    return lo;
}
