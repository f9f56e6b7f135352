//! Metrics: how an output is compared with the oracle or the reference.

use std::fmt;

use engram_core::reference::nmse;

/// One comparison of an output with the reference.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    /// What was compared (`"output f32"`, `"sigmoid_grouped route indices f64"`, ...).
    pub name: String,
    /// What was measured.
    pub measure: Measure,
}

/// How a check measured agreement.
#[derive(Debug, Clone, PartialEq)]
pub enum Measure {
    /// Floating-point outputs: largest absolute error and NMSE against a bound.
    Close {
        /// `max |got - expected|`.
        max_abs: f64,
        /// `sum (got - expected)^2 / sum expected^2`.
        nmse: f64,
        /// The largest NMSE that passes.
        bound: f64,
    },
    /// Integer outputs, which must be equal.
    Exact {
        /// Elements that differ.
        mismatches: usize,
        /// Elements compared.
        total: usize,
    },
}

impl Check {
    /// Whether the check is within its bound (any NaN fails).
    pub fn passed(&self) -> bool {
        match self.measure {
            Measure::Close {
                nmse,
                bound,
                max_abs,
            } => nmse <= bound && max_abs.is_finite(),
            Measure::Exact { mismatches, .. } => mismatches == 0,
        }
    }

    /// Compares floating-point outputs: NMSE against `bound`; any NaN or length mismatch fails.
    pub fn close(name: String, got: &[f64], expected: &[f64], bound: f64) -> Self {
        let mut max_abs: f64 = 0.0;
        for (a, b) in got.iter().zip(expected) {
            let d = (a - b).abs();
            // NaN anywhere must fail, so it must survive the max.
            max_abs = if d.is_nan() { f64::NAN } else { max_abs.max(d) };
        }
        let mut n = nmse(got, expected);
        if got.len() != expected.len() || n.is_nan() {
            n = f64::INFINITY;
        }
        Check {
            name,
            measure: Measure::Close {
                max_abs,
                nmse: n,
                bound,
            },
        }
    }

    /// Compares integer outputs, which must be equal.
    pub fn exact(name: String, got: &[i64], expected: &[i64]) -> Self {
        let mismatches = got.iter().zip(expected).filter(|(a, b)| a != b).count()
            + got.len().abs_diff(expected.len());
        Check {
            name,
            measure: Measure::Exact {
                mismatches,
                total: expected.len(),
            },
        }
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = if self.passed() { "OK" } else { "FAIL" };
        match self.measure {
            Measure::Close {
                max_abs,
                nmse,
                bound,
            } => write!(
                f,
                "{:<40} max_abs {max_abs:<10.3e} nmse {nmse:<10.3e} bound {bound:<8.0e} {status}",
                self.name
            ),
            Measure::Exact { mismatches, total } => write!(
                f,
                "{:<40} exact: {mismatches} of {total} differ{:>27} {status}",
                self.name, ""
            ),
        }
    }
}
