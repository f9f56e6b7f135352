//! `out = x W^T + b` through the `gemm` crate (packed, cache-blocked, SIMD microkernels with
//! runtime CPU detection). It splits the output, never the reduction, so the result does not
//! depend on the thread count.

use engram_core::reference::check;
use engram_core::Result;

use super::hash::SharedRows;
use super::Parallelism;

/// Element types the GEMM runs natively.
pub trait GemmElement: Copy + Send + Sync + 'static {
    /// One.
    const ONE: Self;
}

impl GemmElement for f32 {
    const ONE: Self = 1.0;
}

impl GemmElement for f64 {
    const ONE: Self = 1.0;
}

/// `out[r, j] = sum_i x[r, i] w[j, i] + bias[j]`: `x` `[rows, in]`, `weight` `[out, in]`
/// (PyTorch's layout), `out` `[rows, out]`. Same validation as the oracle's `linear`.
pub fn linear<T: GemmElement>(
    x: &[T],
    weight: &[T],
    bias: Option<&[T]>,
    in_features: usize,
    out: &mut [T],
    par: Parallelism,
) -> Result<()> {
    let (rows, out_features) = check::linear(
        x.len(),
        weight.len(),
        bias.map(<[T]>::len),
        in_features,
        out.len(),
    )?;
    if rows == 0 || out_features == 0 {
        return Ok(());
    }
    if let Some(b) = bias {
        for row in out.chunks_exact_mut(out_features) {
            row.copy_from_slice(b);
        }
    }
    let parallelism = match par {
        Parallelism::Sequential => gemm::Parallelism::None,
        Parallelism::Rayon => gemm::Parallelism::Rayon(0),
    };
    // SAFETY: every pointer addresses a live slice whose length `check::linear` matched to the
    // shapes: dst `rows x out_features` (row stride out_features), lhs `rows x in` (row stride
    // in), rhs `in x out_features` read from `weight` transposed (column stride in, row stride
    // 1). dst does not alias the inputs (it is a distinct `&mut`).
    unsafe {
        gemm::gemm(
            rows,
            out_features,
            in_features,
            out.as_mut_ptr(),
            1,
            out_features as isize,
            bias.is_some(),
            x.as_ptr(),
            1,
            in_features as isize,
            weight.as_ptr(),
            in_features as isize,
            1,
            T::ONE,
            T::ONE,
            false,
            false,
            false,
            parallelism,
        );
    }
    Ok(())
}

/// Outputs per panel of [`linear_widening`]: a panel of widened weights (`PANEL x in` f32, 640 KB
/// for in = 1280) stays in the L2 cache while the GEMM runs over all rows.
const PANEL: usize = 128;

/// `out = x W^T + b` for element types the GEMM crate lacks (bf16, f16). The weights are widened
/// to f32 one panel of `PANEL` (128) outputs at a time into a buffer that stays in cache (never the
/// whole matrix), the activations once per call, and each panel runs through the `gemm` crate's
/// f32 kernels single-threaded; panels run in parallel. Each output comes from one fixed panel
/// call, so the result does not depend on the thread count. Same contract as [`linear`].
pub fn linear_widening<T: engram_core::Element>(
    x: &[T],
    weight: &[T],
    bias: Option<&[T]>,
    in_features: usize,
    out: &mut [T],
    par: Parallelism,
) -> Result<()> {
    let (rows, out_features) = check::linear(
        x.len(),
        weight.len(),
        bias.map(<[T]>::len),
        in_features,
        out.len(),
    )?;
    if rows == 0 || out_features == 0 {
        return Ok(());
    }
    let xf: Vec<f32> = x.iter().map(|v| v.to_f32()).collect();
    let panels = out_features.div_ceil(PANEL);
    let dst = SharedRows(out.as_mut_ptr());
    let panel = |p: usize, wf: &mut Vec<f32>, yf: &mut Vec<f32>| {
        let j0 = p * PANEL;
        let n = PANEL.min(out_features - j0);
        wf.clear();
        wf.extend(
            weight[j0 * in_features..(j0 + n) * in_features]
                .iter()
                .map(|v| v.to_f32()),
        );
        yf.clear();
        yf.resize(rows * n, 0.0);
        if let Some(b) = bias {
            for row in yf.chunks_exact_mut(n) {
                for (y, bj) in row.iter_mut().zip(&b[j0..j0 + n]) {
                    *y = bj.to_f32();
                }
            }
        }
        // SAFETY: dst `yf` is `rows x n` (row stride n); lhs `xf` is `rows x in` (row stride
        // in); rhs is `wf` (`n x in`, row-major) read transposed as `in x n` (column stride in,
        // row stride 1); all are live, correctly sized, and dst aliases neither input.
        unsafe {
            gemm::gemm(
                rows,
                n,
                in_features,
                yf.as_mut_ptr(),
                1,
                n as isize,
                bias.is_some(),
                xf.as_ptr(),
                1,
                in_features as isize,
                wf.as_ptr(),
                in_features as isize,
                1,
                1.0f32,
                1.0f32,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
        for (r, src) in yf.chunks_exact(n).enumerate() {
            // SAFETY: panel p owns columns j0..j0 + n of every row of `out` (`rows x
            // out_features`, its length checked above) and no other panel writes them, so this
            // slice is written by one thread only and lies inside `out`.
            let row =
                unsafe { core::slice::from_raw_parts_mut(dst.get().add(r * out_features + j0), n) };
            for (o, &v) in row.iter_mut().zip(src) {
                *o = T::from_f32(v);
            }
        }
    };
    match par {
        Parallelism::Sequential => {
            let (mut wf, mut yf) = (Vec::new(), Vec::new());
            (0..panels).for_each(|p| panel(p, &mut wf, &mut yf));
        }
        Parallelism::Rayon => {
            use rayon::prelude::*;
            (0..panels)
                .into_par_iter()
                .for_each_init(|| (Vec::new(), Vec::new()), |(wf, yf), p| panel(p, wf, yf));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use engram_core::{bf16, reference, synthetic, Element};

    type Kernel<T> = fn(&[T], &[T], Option<&[T]>, usize, &mut [T], Parallelism) -> Result<()>;

    /// `kernel` equals the f64 oracle within `bound` (NMSE) and gives the same bits on one
    /// thread and on the pool.
    fn check_kernel<T: Element>(
        kernel: Kernel<T>,
        shapes: &[(usize, usize, usize, bool)],
        bound: f64,
    ) {
        for &(rows, inp, outf, bias) in shapes {
            let x: Vec<T> = synthetic::activations(rows * inp, 1.0, 1);
            let w: Vec<T> = synthetic::activations(outf * inp, 0.1, 2);
            let b: Vec<T> = synthetic::activations(outf, 0.5, 3);
            let bias = bias.then_some(&b[..]);
            let wide = |v: &[T]| v.iter().map(|a| a.to_f64()).collect::<Vec<_>>();
            let mut expected = vec![0.0f64; rows * outf];
            let bw = bias.map(wide);
            reference::linear(&wide(&x), &wide(&w), bw.as_deref(), inp, &mut expected).unwrap();
            let mut seq = vec![T::default(); rows * outf];
            let mut ray = vec![T::default(); rows * outf];
            kernel(&x, &w, bias, inp, &mut seq, Parallelism::Sequential).unwrap();
            kernel(&x, &w, bias, inp, &mut ray, Parallelism::Rayon).unwrap();
            assert_eq!(seq, ray, "bitwise independent of the thread count");
            assert!(
                reference::nmse(&wide(&seq), &expected) < bound,
                "{rows}x{inp}x{outf}"
            );
        }
    }

    #[test]
    fn gemm_matches_the_oracle_and_does_not_depend_on_threads() {
        let shapes = [
            (1, 1, 1, true),
            (7, 13, 5, false),
            (64, 96, 80, true),
            (3, 1024, 17, true),
        ];
        check_kernel::<f32>(linear::<f32>, &shapes, 1e-12);
    }

    #[test]
    fn bf16_widening_matches_the_oracle_and_does_not_depend_on_threads() {
        let shapes = [
            (1, 1, 1, true),
            (7, 13, 5, false),
            (9, 96, 80, true),
            (64, 1024, 33, true),
            // Three panels, the last one partial.
            (70, 40, 2 * PANEL + 9, true),
        ];
        check_kernel::<bf16>(linear_widening::<bf16>, &shapes, 1e-4);
    }
}
