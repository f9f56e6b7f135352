//! The suite catches broken kernels: a backend that flips one output element, or writes one
//! element past the end of its output, fails the cases of that op (and only those), through the
//! metric or through the guard zone.

#![allow(clippy::unwrap_used)] // a failing test is a panic with the reason

use engram_conformance::cases::{all_cases, Family};
use engram_conformance::harness::{run_case, Status};
use engram_core::hash::LayerHash;
use engram_core::{
    Backend, Capabilities, Element, EngramOps, MoeConfig, MoeOps, Result, Scalar, ScoreFunc,
};
use engram_cpu::{CpuBackend, CpuBuffer};

/// The fault a [`Broken`] backend injects.
#[derive(Clone, Copy, PartialEq)]
enum Fault {
    /// Negate one element inside the output of `gather_rows`.
    FlipGatherElement,
    /// Write one element just past the end of the output of `linear`.
    LinearPastEnd,
}

/// The CPU backend with one deliberately broken op.
struct Broken(CpuBackend, Fault);

impl Backend for Broken {
    type Buffer<T: Scalar> = CpuBuffer<T>;
    fn name(&self) -> &'static str {
        "broken-cpu"
    }
    fn capabilities(&self) -> Capabilities {
        self.0.capabilities()
    }
    fn upload<T: Scalar>(&self, data: &[T]) -> Result<CpuBuffer<T>> {
        self.0.upload(data)
    }
    fn zeros<T: Scalar>(&self, len: usize) -> Result<CpuBuffer<T>> {
        self.0.zeros(len)
    }
    fn guarded<T: Scalar>(&self, len: usize, guard: usize, fill: T) -> Result<CpuBuffer<T>> {
        self.0.guarded(len, guard, fill)
    }
    fn guards_intact<T: Scalar>(&self, b: &CpuBuffer<T>) -> Result<bool> {
        self.0.guards_intact(b)
    }
    fn download<T: Scalar>(&self, b: &CpuBuffer<T>, out: &mut [T]) -> Result<()> {
        self.0.download(b, out)
    }
    fn copy<T: Scalar>(&self, s: &CpuBuffer<T>, d: &mut CpuBuffer<T>) -> Result<()> {
        self.0.copy(s, d)
    }
    fn len<T: Scalar>(&self, b: &CpuBuffer<T>) -> usize {
        self.0.len(b)
    }
    fn synchronize(&self) -> Result<()> {
        self.0.synchronize()
    }
}

type B32 = CpuBuffer<u32>;

impl EngramOps for Broken {
    fn compress_ids(&self, l: &B32, r: &B32, o: &mut B32) -> Result<()> {
        self.0.compress_ids(l, r, o)
    }
    fn hash(
        &self,
        l: &LayerHash,
        k: usize,
        p: u32,
        v: u64,
        i: &B32,
        c: &B32,
        r: &mut B32,
    ) -> Result<()> {
        self.0.hash(l, k, p, v, i, c, r)
    }
    fn hash_decode(
        &self,
        l: &LayerHash,
        k: usize,
        v: u64,
        h: &B32,
        i: &B32,
        r: &mut B32,
    ) -> Result<()> {
        self.0.hash_decode(l, k, v, h, i, r)
    }
    fn gather_rows<T: Element>(
        &self,
        t: &CpuBuffer<T>,
        d: usize,
        l: &LayerHash,
        r: &B32,
        o: &mut CpuBuffer<T>,
    ) -> Result<()> {
        self.0.gather_rows(t, d, l, r, o)?;
        if self.1 == Fault::FlipGatherElement && !o.is_empty() {
            let i = o.len() / 2;
            o[i] = T::from_f64(-o[i].to_f64() - 1.0);
        }
        Ok(())
    }
    fn rms_norm<T: Element>(
        &self,
        x: &CpuBuffer<T>,
        w: &CpuBuffer<T>,
        d: usize,
        e: f64,
        o: &mut CpuBuffer<T>,
    ) -> Result<()> {
        self.0.rms_norm(x, w, d, e, o)
    }
    fn linear<T: Element>(
        &self,
        x: &CpuBuffer<T>,
        w: &CpuBuffer<T>,
        b: Option<&CpuBuffer<T>>,
        i: usize,
        o: &mut CpuBuffer<T>,
    ) -> Result<()> {
        self.0.linear(x, w, b, i, o)?;
        if self.1 == Fault::LinearPastEnd {
            let len = o.len();
            let (raw, start) = o.raw_mut();
            // One element past the end: inside the guard zone when the buffer has one.
            if let Some(slot) = raw.get_mut(start + len) {
                *slot = T::from_f64(0.0);
            }
        }
        Ok(())
    }
    fn gate<T: Element>(
        &self,
        p: &CpuBuffer<T>,
        h: &CpuBuffer<T>,
        k: &CpuBuffer<T>,
        q: &CpuBuffer<T>,
        m: usize,
        d: usize,
        v: &mut CpuBuffer<T>,
        a: &mut CpuBuffer<T>,
    ) -> Result<()> {
        self.0.gate(p, h, k, q, m, d, v, a)
    }
    fn short_conv<T: Element>(
        &self,
        n: &CpuBuffer<T>,
        v: &CpuBuffer<T>,
        w: &CpuBuffer<T>,
        c: usize,
        k: usize,
        d: usize,
        cu: &B32,
        o: &mut CpuBuffer<T>,
    ) -> Result<()> {
        self.0.short_conv(n, v, w, c, k, d, cu, o)
    }
    fn short_conv_decode<T: Element>(
        &self,
        n: &CpuBuffer<T>,
        v: &CpuBuffer<T>,
        w: &CpuBuffer<T>,
        c: usize,
        k: usize,
        d: usize,
        h: &mut CpuBuffer<T>,
        o: &mut CpuBuffer<T>,
    ) -> Result<()> {
        self.0.short_conv_decode(n, v, w, c, k, d, h, o)
    }
    fn capture_state<T: Element>(
        &self,
        i: &B32,
        cu: &B32,
        n: &CpuBuffer<T>,
        keep: usize,
        hist: usize,
        c: usize,
        p: u32,
        si: &mut B32,
        sc: &mut CpuBuffer<T>,
    ) -> Result<()> {
        self.0.capture_state(i, cu, n, keep, hist, c, p, si, sc)
    }
    fn push_ids(&self, h: &mut B32, i: &B32, keep: usize) -> Result<()> {
        self.0.push_ids(h, i, keep)
    }
}

impl MoeOps for Broken {
    fn moe_scores<T: Element>(
        &self,
        x: &CpuBuffer<T>,
        g: &CpuBuffer<T>,
        d: usize,
        f: ScoreFunc,
        s: &mut CpuBuffer<T>,
    ) -> Result<()> {
        self.0.moe_scores(x, g, d, f, s)
    }
    fn moe_route<T: Element>(
        &self,
        s: &CpuBuffer<T>,
        b: &CpuBuffer<T>,
        c: &MoeConfig,
        w: &mut CpuBuffer<T>,
        i: &mut B32,
    ) -> Result<()> {
        self.0.moe_route(s, b, c, w, i)
    }
    fn expert_ffn<T: Element>(
        &self,
        x: &CpuBuffer<T>,
        a: &CpuBuffer<T>,
        b: &CpuBuffer<T>,
        c: &CpuBuffer<T>,
        d: usize,
        o: &mut CpuBuffer<T>,
    ) -> Result<()> {
        self.0.expert_ffn(x, a, b, c, d, o)
    }
    fn routed_experts<T: Element>(
        &self,
        x: &CpuBuffer<T>,
        a: &CpuBuffer<T>,
        b: &CpuBuffer<T>,
        c: &CpuBuffer<T>,
        i: &B32,
        d: usize,
        n: usize,
        o: &mut CpuBuffer<T>,
    ) -> Result<()> {
        self.0.routed_experts(x, a, b, c, i, d, n, o)
    }
    fn moe_combine<T: Element>(
        &self,
        e: &CpuBuffer<T>,
        w: &CpuBuffer<T>,
        s: &CpuBuffer<T>,
        d: usize,
        o: &mut CpuBuffer<T>,
    ) -> Result<()> {
        self.0.moe_combine(e, w, s, d, o)
    }
}

/// Runs the suite with `fault`: cases of `affected` (with data) must fail on `check_name`, cases
/// of `internal` (layers that use the op on buffers of their own) may go either way, every other
/// case must still pass.
fn run_with(fault: Fault, affected: &[Family], internal: &[Family], check_name: &str) {
    let broken = Broken(CpuBackend::new(), fault);
    let mut caught = 0;
    for case in all_cases() {
        let r = run_case(&broken, &case);
        if r.status == Status::NotSupported || case.family == Family::BadInput {
            continue;
        }
        let has_data = r.checks.iter().any(|c| match c.measure {
            engram_conformance::metrics::Measure::Close { .. } => true,
            engram_conformance::metrics::Measure::Exact { total, .. } => total > 0,
        });
        let must_fail = affected.contains(&case.family)
            || (internal.contains(&case.family)
                && fault == Fault::FlipGatherElement
                && (case.name.contains("in_f32") || case.name.contains("in_f64")));
        if must_fail && r.bytes > 0 && has_data && !case.name.contains("empty") {
            assert_eq!(
                r.status,
                Status::Fail,
                "{} should fail under the fault",
                case.name
            );
            if affected.contains(&case.family) {
                assert!(r.detail.contains(check_name), "{}: {}", case.name, r.detail);
            }
            caught += 1;
        } else if !affected.contains(&case.family) && !internal.contains(&case.family) {
            assert_eq!(
                r.status,
                Status::Ok,
                "{} must not be affected: {}",
                case.name,
                r.detail
            );
        }
    }
    assert!(caught > 10, "the fault was caught only {caught} times");
}

#[test]
fn a_flipped_output_element_is_caught_by_the_metric() {
    // Gather is a copy, checked bit for bit. Inside the layers one flipped element of `e` is
    // diluted by the projection: the f32 and f64 layer cases must still see it, the half-precision
    // bounds may not.
    run_with(
        Fault::FlipGatherElement,
        &[Family::Gather],
        &[Family::EngramPrefill, Family::EngramDecode],
        "gathered rows",
    );
}

#[test]
fn a_write_past_the_end_is_caught_by_the_guard_zone() {
    // Only the linear op's own cases give it a guarded output; inside the layers its output is
    // an internal buffer, so those are not expected to notice.
    run_with(
        Fault::LinearPastEnd,
        &[Family::Linear],
        &[Family::EngramPrefill, Family::EngramDecode],
        "guards intact",
    );
}
