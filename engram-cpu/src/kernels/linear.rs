//! `out = x W^T + b` through the `gemm` crate (packed, cache-blocked, SIMD microkernels with
//! runtime CPU detection). It splits the output, never the reduction, so the result does not
//! depend on the thread count.

use engram_core::reference::check;
use engram_core::Result;

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

#[cfg(test)]
mod tests {
    use super::*;
    use engram_core::reference;
    use engram_core::synthetic;

    #[test]
    fn matches_the_oracle_and_does_not_depend_on_threads() {
        for (rows, inp, outf, bias) in [
            (1, 1, 1, true),
            (7, 13, 5, false),
            (64, 96, 80, true),
            (3, 1024, 17, true),
        ] {
            let x: Vec<f32> = synthetic::activations(rows * inp, 1.0, 1);
            let w: Vec<f32> = synthetic::activations(outf * inp, 0.1, 2);
            let b: Vec<f32> = synthetic::activations(outf, 0.5, 3);
            let bias = bias.then_some(&b[..]);
            let mut expected = vec![0.0f64; rows * outf];
            let wide = |v: &[f32]| v.iter().map(|&a| f64::from(a)).collect::<Vec<_>>();
            let bw = bias.map(wide);
            reference::linear(&wide(&x), &wide(&w), bw.as_deref(), inp, &mut expected).unwrap();
            let mut seq = vec![0.0f32; rows * outf];
            let mut ray = vec![0.0f32; rows * outf];
            linear(&x, &w, bias, inp, &mut seq, Parallelism::Sequential).unwrap();
            linear(&x, &w, bias, inp, &mut ray, Parallelism::Rayon).unwrap();
            assert_eq!(seq, ray, "bitwise independent of the thread count");
            let got: Vec<f64> = seq.iter().map(|&v| f64::from(v)).collect();
            assert!(
                reference::nmse(&got, &expected) < 1e-12,
                "{rows}x{inp}x{outf}"
            );
        }
    }
}
