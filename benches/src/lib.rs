//! # engram-benches
//!
//! Benchmarks of the Engram kernels. Every figure is reported beside a floor measured in the same
//! run, because the machines we share are noisy: the stacked-projection GEMM alone (through the
//! same GEMM crate) and the bytes that must move over the bandwidth of a large memory copy.

use std::collections::BTreeMap;
use std::time::Instant;

/// The settings a result line of `backend` carries, so that it says which kernels produced it:
/// for `cuda`, every `ENGRAM_CUDA_*` variable among `vars` (its kernel overrides; none set means
/// the defaults), by name; `None` for a backend without such settings.
pub fn backend_settings(
    backend: &str,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Option<BTreeMap<String, String>> {
    (backend == "cuda").then(|| {
        vars.into_iter()
            .filter(|(name, _)| name.starts_with("ENGRAM_CUDA_"))
            .collect()
    })
}

/// Median wall time of `runs` calls of `f` after one warm-up call.
pub fn median_seconds(runs: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut times: Vec<f64> = (0..runs.max(1))
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// Bytes per second of a large copy (counting bytes read and written), from the median of
/// `runs` copies of `bytes` bytes.
pub fn copy_bandwidth(bytes: usize, runs: usize) -> f64 {
    let src = vec![1u8; bytes];
    let mut dst = vec![0u8; bytes];
    let s = median_seconds(runs, || {
        dst.copy_from_slice(&src);
        std::hint::black_box(&mut dst);
    });
    2.0 * bytes as f64 / s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_is_of_the_timed_runs_and_bandwidth_is_positive() {
        let mut calls = 0;
        let s = median_seconds(3, || calls += 1);
        assert_eq!(calls, 4, "one warm-up and three timed calls");
        assert!(s >= 0.0);
        assert!(copy_bandwidth(1 << 20, 3) > 0.0);
    }

    #[test]
    fn a_cuda_line_names_the_overrides_set_and_only_those() {
        let vars = [
            ("ENGRAM_CUDA_PROJ", "wgmma-tma"),
            ("PATH", "/bin"),
            ("ENGRAM_CUDA_ROWS", "first"),
            ("ENGRAM_CPU_THREADS", "2"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let settings = backend_settings("cuda", vars.clone()).unwrap();
        assert_eq!(
            settings.into_iter().collect::<Vec<_>>(),
            [
                ("ENGRAM_CUDA_PROJ".to_owned(), "wgmma-tma".to_owned()),
                ("ENGRAM_CUDA_ROWS".to_owned(), "first".to_owned()),
            ]
        );
        assert_eq!(backend_settings("cuda", []), Some(BTreeMap::new()));
        assert_eq!(backend_settings("cpu", vars), None);
    }
}
