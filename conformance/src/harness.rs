//! Runs the suite's cases on a backend: builds each case's inputs from its seed, runs the
//! backend's op with every output between guard zones, runs the oracle on the same (rounded)
//! inputs in f64, and compares.

use std::fmt;
use std::time::Instant;

use engram_core::reference::{self, EngramState};
use engram_core::synthetic::{self, SplitMix64};
use engram_core::{
    bf16, f16, DType, DeviceEngramLayer, DeviceEngramState, DeviceMoeLayer, Element, EngramLayer,
    EngramOps, Error, MoeLayer, MoeOps, NgramHasher, Scalar, ScoreFunc,
};

use crate::cases::{
    BadInput, Case, ConvDecodeShape, EngramShape, Family, FfnShape, IdPattern, LinearShape,
    MoeShape, NormShape, Params, CASE_VOCAB,
};
use crate::metrics::{Check, Measure};

/// Elements of each guard zone around every output.
pub const GUARD: usize = 16;
/// The compressed pad id of the cases.
const PAD: u32 = 1;

/// How a case ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Every check passed.
    Ok,
    /// A check failed, or the backend returned an unexpected error.
    Fail,
    /// The backend lacks what the case needs (a dtype); nothing was checked.
    NotSupported,
    /// There was no backend to run on (no device).
    Skipped,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Ok => "OK",
            Status::Fail => "FAIL",
            Status::NotSupported => "NOT_SUPPORTED",
            Status::Skipped => "SKIPPED",
        })
    }
}

/// The outcome of one case.
#[derive(Debug, Clone)]
pub struct CaseResult {
    /// The case's name.
    pub name: String,
    /// How it ended.
    pub status: Status,
    /// Every comparison made.
    pub checks: Vec<Check>,
    /// Why it failed or was not run, if it was not OK.
    pub detail: String,
    /// Floating-point operations of the op run.
    pub flops: u64,
    /// Bytes the op must move at least.
    pub bytes: u64,
    /// Wall time of the backend's op (synchronised), when it ran.
    pub seconds: Option<f64>,
}

impl CaseResult {
    fn from_checks(
        name: String,
        checks: Vec<Check>,
        cost: (u64, u64),
        seconds: Option<f64>,
    ) -> Self {
        let failed: Vec<String> = checks
            .iter()
            .filter(|c| !c.passed())
            .map(|c| c.to_string())
            .collect();
        CaseResult {
            name,
            status: if failed.is_empty() && !checks.is_empty() {
                Status::Ok
            } else {
                Status::Fail
            },
            detail: if checks.is_empty() {
                "no check ran".into()
            } else {
                failed.join("; ")
            },
            checks,
            flops: cost.0,
            bytes: cost.1,
            seconds,
        }
    }

    fn without_checks(name: String, status: Status, detail: String) -> Self {
        CaseResult {
            name,
            status,
            checks: Vec::new(),
            detail,
            flops: 0,
            bytes: 0,
            seconds: None,
        }
    }

    /// A case that could not run because there is no backend.
    pub fn skipped(name: &str, reason: &str) -> Self {
        Self::without_checks(name.to_owned(), Status::Skipped, reason.to_owned())
    }
}

/// NMSE bound of a float output in `dtype`, against the f64 oracle on the same rounded inputs.
/// Scaled to the dtype's precision: outputs pass through a few roundings to `dtype`.
pub fn nmse_bound(dtype: DType) -> f64 {
    match dtype {
        DType::F64 => 1e-24,
        DType::F32 => 1e-10,
        DType::F16 => 1e-5,
        DType::BF16 => 1e-3,
        _ => 0.0,
    }
}

/// The value every output (and its guards) holds before the op runs.
pub trait Fill: Scalar {
    /// That value.
    fn fill() -> Self;
}

impl Fill for u32 {
    fn fill() -> Self {
        0xDEAD_BEEF
    }
}

macro_rules! float_fill {
    ($($t:ty),*) => {$(
        impl Fill for $t {
            fn fill() -> Self {
                <$t as Element>::from_f64(-12345.0)
            }
        }
    )*};
}
float_fill!(f32, f64, f16, bf16);

/// A float element the harness can run: an [`Element`] with a fill value.
pub trait CaseElement: Element + Fill {}
impl<T: Element + Fill> CaseElement for T {}

/// Runs one case on `backend`.
pub fn run_case<B: EngramOps + MoeOps>(backend: &B, case: &Case) -> CaseResult {
    if case.dtype.is_float()
        && !backend.supports_dtype(case.dtype)
        && case.family != Family::BadInput
    {
        return CaseResult::without_checks(
            case.name.clone(),
            Status::NotSupported,
            format!("the {} backend has no {}", backend.name(), case.dtype),
        );
    }
    let outcome = match case.dtype {
        DType::F32 | DType::U32 => run_typed::<B, f32>(backend, case),
        DType::F64 => run_typed::<B, f64>(backend, case),
        DType::F16 => run_typed::<B, f16>(backend, case),
        DType::BF16 => run_typed::<B, bf16>(backend, case),
        other => Err(Failure::Unsupported(format!("no case runs on {other}"))),
    };
    match outcome {
        Ok(run) => CaseResult::from_checks(case.name.clone(), run.checks, cost(case), run.seconds),
        Err(Failure::Backend(e)) => CaseResult::without_checks(
            case.name.clone(),
            Status::Fail,
            format!("backend error: {e}"),
        ),
        Err(Failure::Unsupported(why)) => {
            CaseResult::without_checks(case.name.clone(), Status::NotSupported, why)
        }
    }
}

enum Failure {
    Backend(Error),
    Unsupported(String),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Backend(e)
    }
}

type Run = std::result::Result<Outcome, Failure>;

/// Checks and timing gathered while a case runs.
#[derive(Default)]
struct Outcome {
    checks: Vec<Check>,
    seconds: Option<f64>,
}

impl Outcome {
    fn close<T: Element>(&mut self, name: &str, got: &[T], expected: &[f64], bound: f64) {
        let got: Vec<f64> = got.iter().map(|v| v.to_f64()).collect();
        self.checks
            .push(Check::close(name.to_owned(), &got, expected, bound));
    }

    fn exact<T: Copy + Into<i64>>(&mut self, name: &str, got: &[T], expected: &[T]) {
        let g: Vec<i64> = got.iter().map(|&v| v.into()).collect();
        let e: Vec<i64> = expected.iter().map(|&v| v.into()).collect();
        self.checks.push(Check::exact(name.to_owned(), &g, &e));
    }

    fn flag(&mut self, name: &str, ok: bool) {
        self.checks.push(Check {
            name: name.to_owned(),
            measure: Measure::Exact {
                mismatches: usize::from(!ok),
                total: 1,
            },
        });
    }

    /// Downloads a guarded output and checks its guards.
    fn guarded<B: EngramOps, S: Scalar>(
        &mut self,
        b: &B,
        name: &str,
        buf: &B::Buffer<S>,
    ) -> std::result::Result<Vec<S>, Failure> {
        let ok = b.guards_intact(buf)?;
        self.flag(&format!("{name} guards intact"), ok);
        Ok(b.to_vec(buf)?)
    }

    /// Runs and times one op, including the wait for the device to finish it.
    fn time<B: engram_core::Backend>(
        &mut self,
        b: &B,
        f: impl FnOnce() -> engram_core::Result<()>,
    ) -> engram_core::Result<()> {
        let start = Instant::now();
        let r = f().and_then(|()| b.synchronize());
        self.seconds = Some(start.elapsed().as_secs_f64());
        r
    }
}

fn widen<T: Element>(v: &[T]) -> Vec<f64> {
    v.iter().map(|x| x.to_f64()).collect()
}

fn out<B: EngramOps, S: Fill>(b: &B, len: usize) -> std::result::Result<B::Buffer<S>, Failure> {
    Ok(b.guarded(len, GUARD, S::fill())?)
}

fn cu_seqlens(lens: &[usize]) -> Vec<u32> {
    let mut cu = vec![0u32];
    for &l in lens {
        cu.push(cu[cu.len() - 1] + l as u32);
    }
    cu
}

/// Converts a host Engram layer to another element type (to run the oracle in f64 on exactly the
/// values the backend got).
/// The same layer with every weight converted to `U` (through f64): the oracle's copy of a
/// layer a backend runs in `T`.
pub fn convert_layer<T: Element, U: Element>(l: &EngramLayer<T>) -> EngramLayer<U> {
    let c = |v: &Vec<T>| {
        v.iter()
            .map(|x| U::from_f64(x.to_f64()))
            .collect::<Vec<U>>()
    };
    let w = &l.weights;
    EngramLayer {
        config: l.config.clone(),
        hash: l.hash.clone(),
        compressed_pad_id: l.compressed_pad_id,
        compressed_vocab: l.compressed_vocab,
        weights: engram_core::EngramWeights {
            table: c(&w.table),
            proj_weight: c(&w.proj_weight),
            proj_bias: c(&w.proj_bias),
            key_norm: c(&w.key_norm),
            query_norm: c(&w.query_norm),
            conv_norm: c(&w.conv_norm),
            conv_weight: c(&w.conv_weight),
        },
    }
}

fn convert_moe<T: Element, U: Element>(l: &MoeLayer<T>) -> MoeLayer<U> {
    let c = |v: &Vec<T>| {
        v.iter()
            .map(|x| U::from_f64(x.to_f64()))
            .collect::<Vec<U>>()
    };
    let w = &l.weights;
    MoeLayer {
        config: l.config.clone(),
        weights: engram_core::MoeWeights {
            gate_weight: c(&w.gate_weight),
            gate_bias: c(&w.gate_bias),
            w1: c(&w.w1),
            w2: c(&w.w2),
            w3: c(&w.w3),
            shared_w1: c(&w.shared_w1),
            shared_w2: c(&w.shared_w2),
            shared_w3: c(&w.shared_w3),
        },
    }
}

/// The ids, batch and hidden states of an Engram shape.
struct EngramInputs<T> {
    layer: EngramLayer<T>,
    hasher: NgramHasher,
    ids: Vec<u32>,
    cu: Vec<u32>,
    hidden: Vec<T>,
}

fn engram_inputs<T: Element>(
    shape: &EngramShape,
    seed: u64,
) -> std::result::Result<EngramInputs<T>, Failure> {
    let c = &shape.config;
    let hasher = NgramHasher::new(c, CASE_VOCAB, PAD)?;
    let layer = synthetic::engram_layer::<T>(c, &hasher, c.layer_ids[0], seed, &mut |_, _| {})?;
    let total: usize = shape.lens.iter().sum();
    let ids = match shape.ids {
        IdPattern::Random => synthetic::ids(total, CASE_VOCAB, seed),
        IdPattern::Largest => vec![(CASE_VOCAB - 1) as u32; total],
    };
    Ok(EngramInputs {
        layer,
        hasher,
        ids,
        cu: cu_seqlens(&shape.lens),
        hidden: synthetic::activations(total * c.hc_mult * c.hidden_size, 2.0, seed ^ 1),
    })
}

/// What the oracle's prefill gives: the output, the gates and the decode state it leaves.
type OraclePrefill = (Vec<f64>, Vec<f64>, EngramState<f64>);

/// The oracle's prefill of `inputs` (in f64, on the layer's own weights).
fn oracle_prefill<T: Element>(
    inputs: &EngramInputs<T>,
    oracle: &EngramLayer<f64>,
) -> std::result::Result<OraclePrefill, Failure> {
    let mut expected = vec![0.0; inputs.hidden.len()];
    let mut gates = vec![0.0; inputs.ids.len() * oracle.config.hc_mult];
    let mut state = EngramState::new(oracle, inputs.cu.len().saturating_sub(1));
    reference::engram_prefill(
        oracle,
        &inputs.ids,
        &inputs.cu,
        &widen(&inputs.hidden),
        &mut expected,
        Some(&mut gates),
        Some(&mut state),
    )?;
    Ok((expected, gates, state))
}

fn run_typed<B: EngramOps + MoeOps, T: CaseElement>(b: &B, case: &Case) -> Run {
    let seed = case.seed();
    let bound = nmse_bound(case.dtype);
    match (&case.family, &case.params) {
        (Family::CompressIds, Params::Compress { ids, raw_vocab, .. }) => {
            compress_case(b, *ids, *raw_vocab, seed)
        }
        (Family::Hash, Params::Engram(s)) => hash_case::<B>(b, s, seed),
        (Family::Gather, Params::Engram(s)) => gather_case::<B, T>(b, s, seed),
        (Family::RmsNorm, Params::Norm(s)) => norm_case::<B, T>(b, s, seed, bound),
        (Family::Linear, Params::Linear(s)) => linear_case::<B, T>(b, s, seed, bound),
        (Family::Gate, Params::Engram(s)) => gate_case::<B, T>(b, s, seed, bound),
        (Family::ShortConv, Params::Engram(s)) => conv_case::<B, T>(b, s, seed, bound),
        (Family::ShortConvDecode, Params::ConvDecode(s)) => {
            conv_decode_case::<B, T>(b, s, seed, bound)
        }
        (Family::EngramPrefill, Params::Engram(s)) => prefill_case::<B, T>(b, s, seed, bound),
        (Family::EngramDecode, Params::Engram(s)) => decode_case::<B, T>(b, s, seed, bound),
        (Family::MoeRoute, Params::Moe(s)) => route_case::<B, T>(b, s, seed, bound),
        (Family::ExpertFfn, Params::Ffn(s)) => ffn_case::<B, T>(b, s, seed, bound),
        (Family::MoeLayer | Family::MoeLayerAllExperts, Params::Moe(s)) => {
            moe_layer_case::<B, T>(b, s, seed, bound)
        }
        (Family::BadInput, Params::Bad(bad)) => bad_case(b, *bad),
        _ => Err(Failure::Unsupported(format!(
            "case {} has parameters of another family",
            case.name
        ))),
    }
}

fn compress_case<B: EngramOps>(b: &B, n: usize, raw_vocab: usize, seed: u64) -> Run {
    let mut g = SplitMix64::stream(seed, 1);
    let lookup: Vec<u32> = (0..raw_vocab)
        .map(|_| g.below(raw_vocab as u64 / 2 + 1) as u32)
        .collect();
    let mut raw: Vec<u32> = (0..n).map(|_| g.below(raw_vocab as u64) as u32).collect();
    if let Some(last) = raw.last_mut() {
        *last = raw_vocab as u32 - 1;
    }
    let expected: Vec<u32> = raw.iter().map(|&r| lookup[r as usize]).collect();
    let (lookup_d, raw_d) = (b.upload(&lookup)?, b.upload(&raw)?);
    let mut o = Outcome::default();
    let mut got = out::<B, u32>(b, n)?;
    o.time(b, || b.compress_ids(&lookup_d, &raw_d, &mut got))?;
    let got = o.guarded(b, "ids", &got)?;
    o.exact("compressed ids", &got, &expected);
    Ok(o)
}

fn hash_case<B: EngramOps>(b: &B, s: &EngramShape, seed: u64) -> Run {
    let inputs = engram_inputs::<f32>(s, seed)?;
    let c = &s.config;
    let layer = inputs.hasher.layer(c.layer_ids[0])?;
    let mut expected = vec![0u32; inputs.ids.len() * c.num_heads()];
    inputs
        .hasher
        .hash_layer(layer.layer_id, &inputs.ids, &inputs.cu, &mut expected)?;
    let (ids, cu) = (b.upload(&inputs.ids)?, b.upload(&inputs.cu)?);
    let mut rows = out::<B, u32>(b, expected.len())?;
    let mut o = Outcome::default();
    o.time(b, || {
        b.hash(
            layer,
            c.n_head_per_ngram,
            PAD,
            CASE_VOCAB,
            &ids,
            &cu,
            &mut rows,
        )
    })?;
    let got = o.guarded(b, "rows", &rows)?;
    o.exact("rows", &got, &expected);
    Ok(o)
}

/// What gathering `rows` from `table` gives: a gather is a copy, so the expected values are the
/// table's own, bit for bit.
fn gathered<T: Element>(
    table: &[T],
    layer: &engram_core::hash::LayerHash,
    d_head: usize,
    rows: &[u32],
) -> Vec<f64> {
    rows.iter()
        .enumerate()
        .flat_map(|(i, &r)| {
            let start =
                (layer.offsets[i % layer.table_sizes.len()] + u64::from(r)) as usize * d_head;
            table[start..start + d_head].iter().map(|v| v.to_f64())
        })
        .collect()
}

/// The rows a gather case reads: the hash's, or alternately the first and last row of each head.
fn gather_rows_of<T>(
    s: &EngramShape,
    inputs: &EngramInputs<T>,
) -> std::result::Result<Vec<u32>, Failure> {
    let c = &s.config;
    let layer = inputs.hasher.layer(c.layer_ids[0])?;
    let heads = c.num_heads();
    let mut rows = vec![0u32; inputs.ids.len() * heads];
    if s.rows_at_ends {
        for (i, r) in rows.iter_mut().enumerate() {
            *r = if (i / heads) % 2 == 0 {
                0
            } else {
                layer.table_sizes[i % heads] - 1
            };
        }
    } else {
        inputs
            .hasher
            .hash_layer(layer.layer_id, &inputs.ids, &inputs.cu, &mut rows)?;
    }
    Ok(rows)
}

fn gather_case<B: EngramOps, T: CaseElement>(b: &B, s: &EngramShape, seed: u64) -> Run {
    let inputs = engram_inputs::<T>(s, seed)?;
    let c = &s.config;
    let rows = gather_rows_of(s, &inputs)?;
    let layer = &inputs.layer.hash;
    let d_head = c.d_head();
    let expected = gathered(&inputs.layer.weights.table, layer, d_head, &rows);
    let (table, rows_d) = (b.upload(&inputs.layer.weights.table)?, b.upload(&rows)?);
    let mut e = out::<B, T>(b, expected.len())?;
    let mut o = Outcome::default();
    o.time(b, || b.gather_rows(&table, d_head, layer, &rows_d, &mut e))?;
    let got = o.guarded(b, "gathered", &e)?;
    o.close("gathered rows (exact copy)", &got, &expected, 0.0);
    Ok(o)
}

fn norm_case<B: EngramOps, T: CaseElement>(b: &B, s: &NormShape, seed: u64, bound: f64) -> Run {
    let x: Vec<T> = synthetic::activations(s.rows * s.groups * s.d, 3.0, seed);
    let mut w: Vec<T> = vec![T::default(); s.groups * s.d];
    synthetic::fill_uniform(&mut w, 1.0, seed, 2);
    let mut expected = vec![0.0; x.len()];
    reference::rms_norm(
        &widen(&x),
        &widen(&w),
        s.d,
        reference::CONV_NORM_EPS,
        &mut expected,
    )?;
    let (xd, wd) = (b.upload(&x)?, b.upload(&w)?);
    let mut y = out::<B, T>(b, x.len())?;
    let mut o = Outcome::default();
    o.time(b, || {
        b.rms_norm(&xd, &wd, s.d, reference::CONV_NORM_EPS, &mut y)
    })?;
    let got = o.guarded(b, "normed", &y)?;
    o.close("normed", &got, &expected, bound);
    Ok(o)
}

fn linear_case<B: EngramOps, T: CaseElement>(b: &B, s: &LinearShape, seed: u64, bound: f64) -> Run {
    let x: Vec<T> = synthetic::activations(s.rows * s.inputs, 1.0, seed);
    let mut w: Vec<T> = vec![T::default(); s.outputs * s.inputs];
    synthetic::fill_uniform(&mut w, 1.0 / (s.inputs as f64).sqrt(), seed, 2);
    let mut bias: Vec<T> = vec![T::default(); s.outputs];
    synthetic::fill_uniform(&mut bias, 0.5, seed, 3);
    let mut expected = vec![0.0; s.rows * s.outputs];
    let wb = widen(&bias);
    reference::linear(
        &widen(&x),
        &widen(&w),
        s.bias.then_some(&wb[..]),
        s.inputs,
        &mut expected,
    )?;
    let (xd, wd, bd) = (b.upload(&x)?, b.upload(&w)?, b.upload(&bias)?);
    let mut y = out::<B, T>(b, expected.len())?;
    let mut o = Outcome::default();
    o.time(b, || {
        b.linear(&xd, &wd, s.bias.then_some(&bd), s.inputs, &mut y)
    })?;
    let got = o.guarded(b, "output", &y)?;
    o.close("output", &got, &expected, bound);
    Ok(o)
}

fn gate_case<B: EngramOps, T: CaseElement>(b: &B, s: &EngramShape, seed: u64, bound: f64) -> Run {
    let c = &s.config;
    let (m, d) = (c.hc_mult, c.hidden_size);
    let tokens: usize = s.lens.iter().sum();
    let proj: Vec<T> = synthetic::activations(tokens * (m + 1) * d, 1.5, seed);
    let hidden: Vec<T> = synthetic::activations(tokens * m * d, 2.0, seed ^ 7);
    let mut kn: Vec<T> = vec![T::default(); m * d];
    let mut qn: Vec<T> = vec![T::default(); m * d];
    synthetic::fill_uniform(&mut kn, 1.0, seed, 3);
    synthetic::fill_uniform(&mut qn, 1.0, seed, 4);
    let mut value = vec![0.0; tokens * m * d];
    let mut alpha = vec![0.0; tokens * m];
    reference::gate(
        &widen(&proj),
        &widen(&hidden),
        &widen(&kn),
        &widen(&qn),
        m,
        d,
        &mut value,
        &mut alpha,
    )?;
    let (pd, hd, knd, qnd) = (
        b.upload(&proj)?,
        b.upload(&hidden)?,
        b.upload(&kn)?,
        b.upload(&qn)?,
    );
    let mut v = out::<B, T>(b, value.len())?;
    let mut a = out::<B, T>(b, alpha.len())?;
    let mut o = Outcome::default();
    o.time(b, || b.gate(&pd, &hd, &knd, &qnd, m, d, &mut v, &mut a))?;
    let got_v = o.guarded(b, "value", &v)?;
    let got_a = o.guarded(b, "alpha", &a)?;
    o.close("value", &got_v, &value, bound);
    o.close("alpha", &got_a, &alpha, bound);
    // gate_norm: the same gate, and the convolution's RMSNorm of the value.
    let mut cn: Vec<T> = vec![T::default(); m * d];
    synthetic::fill_uniform(&mut cn, 1.0, seed, 5);
    let mut normed = vec![0.0; value.len()];
    reference::gate_norm(
        &widen(&proj),
        &widen(&hidden),
        &widen(&kn),
        &widen(&qn),
        &widen(&cn),
        m,
        d,
        &mut value,
        &mut alpha,
        &mut normed,
    )?;
    let cnd = b.upload(&cn)?;
    let mut v = out::<B, T>(b, value.len())?;
    let mut a = out::<B, T>(b, alpha.len())?;
    let mut n = out::<B, T>(b, normed.len())?;
    b.gate_norm(&pd, &hd, &knd, &qnd, &cnd, m, d, &mut v, &mut a, &mut n)?;
    let got_v = o.guarded(b, "gate_norm value", &v)?;
    let got_a = o.guarded(b, "gate_norm alpha", &a)?;
    let got_n = o.guarded(b, "gate_norm normed", &n)?;
    o.close("gate_norm value", &got_v, &value, bound);
    o.close("gate_norm alpha", &got_a, &alpha, bound);
    o.close("gate_norm normed", &got_n, &normed, bound);
    Ok(o)
}

fn conv_case<B: EngramOps, T: CaseElement>(b: &B, s: &EngramShape, seed: u64, bound: f64) -> Run {
    let c = &s.config;
    let channels = c.hc_mult * c.hidden_size;
    let tokens: usize = s.lens.iter().sum();
    let normed: Vec<T> = synthetic::activations(tokens * channels, 2.0, seed);
    let value: Vec<T> = synthetic::activations(tokens * channels, 1.0, seed ^ 3);
    let mut w: Vec<T> = vec![T::default(); channels * c.kernel_size];
    synthetic::fill_uniform(&mut w, 0.5, seed, 5);
    let cu = cu_seqlens(&s.lens);
    let mut expected = vec![0.0; normed.len()];
    reference::short_conv(
        &widen(&normed),
        &widen(&value),
        &widen(&w),
        channels,
        c.kernel_size,
        c.max_ngram_size,
        &cu,
        &mut expected,
    )?;
    let (nd, vd, wd, cud) = (
        b.upload(&normed)?,
        b.upload(&value)?,
        b.upload(&w)?,
        b.upload(&cu)?,
    );
    let mut y = out::<B, T>(b, expected.len())?;
    let mut o = Outcome::default();
    o.time(b, || {
        b.short_conv(
            &nd,
            &vd,
            &wd,
            channels,
            c.kernel_size,
            c.max_ngram_size,
            &cud,
            &mut y,
        )
    })?;
    let got = o.guarded(b, "output", &y)?;
    o.close("output", &got, &expected, bound);
    Ok(o)
}

fn conv_decode_case<B: EngramOps, T: CaseElement>(
    b: &B,
    s: &ConvDecodeShape,
    seed: u64,
    bound: f64,
) -> Run {
    let hist = reference::conv_history_len(s.kernel, s.dilation);
    let normed: Vec<T> = synthetic::activations(s.seqs * s.channels, 2.0, seed);
    let value: Vec<T> = synthetic::activations(s.seqs * s.channels, 1.0, seed ^ 3);
    let history: Vec<T> = synthetic::activations(s.seqs * hist * s.channels, 2.0, seed ^ 5);
    let mut w: Vec<T> = vec![T::default(); s.channels * s.kernel];
    synthetic::fill_uniform(&mut w, 0.5, seed, 5);
    let mut expected = vec![0.0; normed.len()];
    let mut expected_hist = widen(&history);
    reference::short_conv_decode(
        &widen(&normed),
        &widen(&value),
        &widen(&w),
        s.channels,
        s.kernel,
        s.dilation,
        &mut expected_hist,
        &mut expected,
    )?;
    let (nd, vd, wd) = (b.upload(&normed)?, b.upload(&value)?, b.upload(&w)?);
    let mut hd = out::<B, T>(b, history.len())?;
    b.copy(&b.upload(&history)?, &mut hd)?;
    let mut y = out::<B, T>(b, expected.len())?;
    let mut o = Outcome::default();
    o.time(b, || {
        b.short_conv_decode(
            &nd, &vd, &wd, s.channels, s.kernel, s.dilation, &mut hd, &mut y,
        )
    })?;
    let got = o.guarded(b, "output", &y)?;
    let got_hist = o.guarded(b, "history", &hd)?;
    o.close("output", &got, &expected, bound);
    o.close("history (exact shift)", &got_hist, &expected_hist, 0.0);
    Ok(o)
}

fn prefill_case<B: EngramOps, T: CaseElement>(
    b: &B,
    s: &EngramShape,
    seed: u64,
    bound: f64,
) -> Run {
    let inputs = engram_inputs::<T>(s, seed)?;
    let oracle = convert_layer::<T, f64>(&inputs.layer);
    let seqs = s.lens.len();
    let (expected, expected_gates, expected_state) = oracle_prefill(&inputs, &oracle)?;
    let dev = DeviceEngramLayer::upload(b, &inputs.layer)?;
    let (ids, cu, hidden) = (
        b.upload(&inputs.ids)?,
        b.upload(&inputs.cu)?,
        b.upload(&inputs.hidden)?,
    );
    let mut y = out::<B, T>(b, expected.len())?;
    let mut g = out::<B, T>(b, expected_gates.len())?;
    let mut state = DeviceEngramState::new(b, &dev, seqs)?;
    let mut o = Outcome::default();
    o.time(b, || {
        b.engram_prefill(
            &dev,
            &ids,
            &cu,
            &hidden,
            &mut y,
            Some(&mut g),
            Some(&mut state),
        )
        .and_then(|()| b.synchronize())
    })?;
    let got = o.guarded(b, "output", &y)?;
    let got_g = o.guarded(b, "gates", &g)?;
    o.close("output", &got, &expected, bound);
    o.close("gates", &got_g, &expected_gates, bound);
    let st = state.download(b)?;
    o.exact("state ids", &st.ids, &expected_state.ids);
    o.close("state conv", &st.conv, &expected_state.conv, bound);
    Ok(o)
}

fn decode_case<B: EngramOps, T: CaseElement>(b: &B, s: &EngramShape, seed: u64, bound: f64) -> Run {
    let inputs = engram_inputs::<T>(s, seed)?;
    let c = &s.config;
    let md = c.hc_mult * c.hidden_size;
    let oracle = convert_layer::<T, f64>(&inputs.layer);
    // Prefill every sequence but its last token, then decode the last tokens together.
    let prefix_lens: Vec<usize> = s.lens.iter().map(|l| l.saturating_sub(1)).collect();
    let (mut pre_ids, mut pre_hidden, mut last_ids, mut last_hidden) =
        (vec![], vec![], vec![], vec![]);
    for (i, r) in inputs.cu.windows(2).enumerate() {
        let (start, end) = (r[0] as usize, r[1] as usize);
        if end == start {
            return Err(Failure::Unsupported(format!(
                "decode shape {} has an empty sequence {i}",
                s.name
            )));
        }
        pre_ids.extend_from_slice(&inputs.ids[start..end - 1]);
        pre_hidden.extend_from_slice(&inputs.hidden[start * md..(end - 1) * md]);
        last_ids.push(inputs.ids[end - 1]);
        last_hidden.extend_from_slice(&inputs.hidden[(end - 1) * md..end * md]);
    }
    let pre_cu = cu_seqlens(&prefix_lens);
    let seqs = s.lens.len();
    let mut state = EngramState::new(&oracle, seqs);
    let mut scratch = vec![0.0; pre_ids.len() * md];
    reference::engram_prefill(
        &oracle,
        &pre_ids,
        &pre_cu,
        &widen(&pre_hidden),
        &mut scratch,
        None,
        Some(&mut state),
    )?;
    let mut expected = vec![0.0; seqs * md];
    let mut expected_gates = vec![0.0; seqs * c.hc_mult];
    reference::engram_decode(
        &oracle,
        &last_ids,
        &widen(&last_hidden),
        &mut state,
        &mut expected,
        Some(&mut expected_gates),
    )?;

    let dev = DeviceEngramLayer::upload(b, &inputs.layer)?;
    let mut dstate = DeviceEngramState::new(b, &dev, seqs)?;
    let mut pre_out = b.zeros::<T>(pre_ids.len() * md)?;
    b.engram_prefill(
        &dev,
        &b.upload(&pre_ids)?,
        &b.upload(&pre_cu)?,
        &b.upload(&pre_hidden)?,
        &mut pre_out,
        None,
        Some(&mut dstate),
    )?;
    let (ids, hidden) = (b.upload(&last_ids)?, b.upload(&last_hidden)?);
    let mut y = out::<B, T>(b, expected.len())?;
    let mut g = out::<B, T>(b, expected_gates.len())?;
    let mut o = Outcome::default();
    o.time(b, || {
        b.engram_decode(&dev, &ids, &hidden, &mut dstate, &mut y, Some(&mut g))
    })?;
    let got = o.guarded(b, "output", &y)?;
    let got_g = o.guarded(b, "gates", &g)?;
    o.close("output", &got, &expected, bound);
    o.close("gates", &got_g, &expected_gates, bound);
    let st = dstate.download(b)?;
    o.exact("state ids", &st.ids, &state.ids);
    o.close("state conv", &st.conv, &state.conv, bound);
    Ok(o)
}

/// Scores for a route case: sigmoid-like values in (0, 1), softmax rows summing to one, or, for
/// the tie case, values on a grid of eighths (and a bias on sixteenths) so sums are exact and
/// many scores are equal.
fn route_inputs<T: Element>(s: &MoeShape, seed: u64) -> (Vec<T>, Vec<T>) {
    let (e, tokens) = (s.config.n_routed_experts, s.tokens);
    let mut g = SplitMix64::stream(seed, 9);
    let mut scores = Vec::with_capacity(tokens * e);
    for _ in 0..tokens {
        let row: Vec<f64> = (0..e)
            .map(|_| {
                let u = 0.5 + 0.49 * g.next_signed_unit();
                if s.ties {
                    (u * 8.0).floor() / 8.0 + 0.0625
                } else {
                    u
                }
            })
            .collect();
        let sum: f64 = row.iter().sum();
        for v in row {
            let v = if s.config.score_func == ScoreFunc::Softmax && !s.ties {
                v / sum
            } else {
                v
            };
            scores.push(T::from_f64(v));
        }
    }
    let bias = if s.config.bias {
        (0..e)
            .map(|_| {
                let v = 0.05 * g.next_signed_unit();
                T::from_f64(if s.ties { (v * 16.0).round() / 16.0 } else { v })
            })
            .collect()
    } else {
        Vec::new()
    };
    (scores, bias)
}

fn route_case<B: MoeOps, T: CaseElement>(b: &B, s: &MoeShape, seed: u64, bound: f64) -> Run {
    let (scores, bias) = route_inputs::<T>(s, seed);
    let k = s.config.n_activated_experts;
    let mut weights = vec![0.0; s.tokens * k];
    let mut indices = vec![0u32; s.tokens * k];
    reference::moe_route(
        &widen(&scores),
        &widen(&bias),
        &s.config,
        &mut weights,
        &mut indices,
    )?;
    let (sd, bd) = (b.upload(&scores)?, b.upload(&bias)?);
    let mut w = b.guarded(weights.len(), GUARD, T::fill())?;
    let mut i = b.guarded(indices.len(), GUARD, u32::fill())?;
    let mut o = Outcome::default();
    o.time(b, || b.moe_route(&sd, &bd, &s.config, &mut w, &mut i))?;
    let (w_ok, i_ok) = (b.guards_intact(&w)?, b.guards_intact(&i)?);
    o.flag("weights guards intact", w_ok);
    o.flag("indices guards intact", i_ok);
    o.exact("indices", &b.to_vec(&i)?, &indices);
    o.close("weights", &b.to_vec(&w)?, &weights, bound);
    Ok(o)
}

fn ffn_case<B: MoeOps, T: CaseElement>(b: &B, s: &FfnShape, seed: u64, bound: f64) -> Run {
    let x: Vec<T> = synthetic::activations(s.rows * s.dim, 1.0, seed);
    let mk = |n, scale, stream| {
        let mut v: Vec<T> = vec![T::default(); n];
        synthetic::fill_uniform(&mut v, scale, seed, stream);
        v
    };
    let (w1, w2, w3) = (
        mk(s.inter * s.dim, 1.0 / (s.dim as f64).sqrt(), 2),
        mk(s.dim * s.inter, 1.0 / (s.inter as f64).sqrt(), 3),
        mk(s.inter * s.dim, 1.0 / (s.dim as f64).sqrt(), 4),
    );
    let mut expected = vec![0.0; x.len()];
    reference::expert_ffn(
        &widen(&x),
        &widen(&w1),
        &widen(&w2),
        &widen(&w3),
        s.dim,
        &mut expected,
    )?;
    let (xd, w1d, w2d, w3d) = (
        b.upload(&x)?,
        b.upload(&w1)?,
        b.upload(&w2)?,
        b.upload(&w3)?,
    );
    let mut y = b.guarded(expected.len(), GUARD, T::fill())?;
    let mut o = Outcome::default();
    o.time(b, || b.expert_ffn(&xd, &w1d, &w2d, &w3d, s.dim, &mut y))?;
    let ok = b.guards_intact(&y)?;
    o.flag("output guards intact", ok);
    o.close("output", &b.to_vec(&y)?, &expected, bound);
    Ok(o)
}

fn moe_layer_case<B: MoeOps, T: CaseElement>(b: &B, s: &MoeShape, seed: u64, bound: f64) -> Run {
    let layer = synthetic::moe_layer::<T>(&s.config, seed)?;
    let oracle = convert_moe::<T, f64>(&layer);
    let x: Vec<T> = synthetic::activations(s.tokens * s.config.dim, 1.0, seed);
    let mut expected = vec![0.0; x.len()];
    let routing = reference::moe_forward(&oracle, &widen(&x), &mut expected)?;
    let dev = DeviceMoeLayer::upload(b, &layer)?;
    let xd = b.upload(&x)?;
    let k = s.config.n_activated_experts;
    let mut y = b.guarded(expected.len(), GUARD, T::fill())?;
    let mut w = b.guarded(s.tokens * k, GUARD, T::fill())?;
    let mut i = b.guarded(s.tokens * k, GUARD, u32::fill())?;
    let mut o = Outcome::default();
    o.time(b, || b.moe_forward(&dev, &xd, &mut y, &mut w, &mut i))?;
    let all_ok = b.guards_intact(&y)? && b.guards_intact(&w)? && b.guards_intact(&i)?;
    o.flag("guards intact", all_ok);
    o.exact("route indices", &b.to_vec(&i)?, &routing.indices);
    o.close("route weights", &b.to_vec(&w)?, &routing.weights, bound);
    o.close("output", &b.to_vec(&y)?, &expected, bound);
    Ok(o)
}

/// Runs `op`, which must fail with `expected`, and checks that `outputs` still hold only the
/// fill value.
fn expect_error<B: EngramOps>(
    o: &mut Outcome,
    b: &B,
    result: engram_core::Result<()>,
    expected: Error,
    untouched: std::result::Result<bool, Failure>,
) -> std::result::Result<(), Failure> {
    match result {
        Err(e) if e == expected => o.flag(&format!("returns {expected}"), true),
        Err(e) => o.flag(&format!("returns {expected} (got: {e})"), false),
        Ok(()) => o.flag(&format!("returns {expected} (got: success)"), false),
    }
    let _ = b;
    o.flag("writes nothing", untouched?);
    Ok(())
}

fn all_fill<B: EngramOps, S: Fill>(
    b: &B,
    buf: &B::Buffer<S>,
) -> std::result::Result<bool, Failure> {
    let fill = S::fill();
    Ok(b.guards_intact(buf)?
        && b.to_vec(buf)?
            .iter()
            .all(|v| bytemuck::bytes_of(v) == bytemuck::bytes_of(&fill)))
}

/// The Engram shape of the suite named `name`.
fn engram_shape(name: &str) -> std::result::Result<EngramShape, Failure> {
    crate::cases::engram_shapes()
        .into_iter()
        .find(|s| s.name == name)
        .ok_or_else(|| Failure::Unsupported(format!("shape {name} missing")))
}

/// Whether a rejected layer call left its output and gates at their fill and its state as it
/// was (`before`).
fn untouched_layer<B: EngramOps>(
    b: &B,
    out: &B::Buffer<bf16>,
    gates: &B::Buffer<bf16>,
    state: &DeviceEngramState<B, bf16>,
    before: &EngramState<bf16>,
) -> std::result::Result<bool, Failure> {
    Ok(all_fill(b, out)? && all_fill(b, gates)? && state.download(b)? == *before)
}

/// The checks of the good bf16 layer call after a rejected one: output and gates (each with the
/// oracle's values) and the state against the oracle's.
fn check_good_call<B: EngramOps>(
    o: &mut Outcome,
    b: &B,
    (out, expected): (&B::Buffer<bf16>, &[f64]),
    (gates, expected_gates): (&B::Buffer<bf16>, &[f64]),
    state: &DeviceEngramState<B, bf16>,
    expected_state: &EngramState<f64>,
) -> std::result::Result<(), Failure> {
    let bound = nmse_bound(DType::BF16);
    o.close("its output", &b.to_vec(out)?, expected, bound);
    o.close("its gates", &b.to_vec(gates)?, expected_gates, bound);
    let st = state.download(b)?;
    o.exact("its state ids", &st.ids, &expected_state.ids);
    o.close("its state conv", &st.conv, &expected_state.conv, bound);
    Ok(())
}

/// A whole prefill in bf16 with gates and the decode state, on a shape of whole 16-byte rows over
/// several 128-token tiles (what a device's fast path takes, whose kernels may check the batch
/// on the device while they run), on a bad batch: the oracle's error with output, gates and
/// state untouched, then the good batch on the same backend and state against the oracle.
fn bad_prefill_case<B: EngramOps>(b: &B, bad: BadInput) -> Run {
    let shape = engram_shape("tensor_tiles")?;
    let inputs = engram_inputs::<bf16>(&shape, 98)?;
    let c = &shape.config;
    let (tokens, seqs) = (inputs.ids.len(), shape.lens.len());
    let (mut ids, mut cu) = (inputs.ids.clone(), inputs.cu.clone());
    let expected = if bad == BadInput::PrefillIdBeyondVocab {
        // In the last tile, after the first sequence.
        ids[tokens - 3] = CASE_VOCAB as u32 + 7;
        Error::IdOutOfRange {
            position: tokens - 3,
            id: CASE_VOCAB + 7,
            limit: CASE_VOCAB,
        }
    } else {
        cu.swap(1, 2);
        Error::InvalidSeqLens {
            reason: "must not decrease",
        }
    };
    let dev = DeviceEngramLayer::upload(b, &inputs.layer)?;
    let hidden = b.upload(&inputs.hidden)?;
    let mut y = out::<B, bf16>(b, inputs.hidden.len())?;
    let mut g = out::<B, bf16>(b, tokens * c.hc_mult)?;
    let mut state = DeviceEngramState::new(b, &dev, seqs)?;
    let before = state.download(b)?;
    let r = b.engram_prefill(
        &dev,
        &b.upload(&ids)?,
        &b.upload(&cu)?,
        &hidden,
        &mut y,
        Some(&mut g),
        Some(&mut state),
    );
    let untouched = untouched_layer(b, &y, &g, &state, &before);
    let mut o = Outcome::default();
    expect_error(&mut o, b, r, expected, untouched)?;
    let oracle = convert_layer::<bf16, f64>(&inputs.layer);
    let (expected, expected_gates, expected_state) = oracle_prefill(&inputs, &oracle)?;
    let r = b.engram_prefill(
        &dev,
        &b.upload(&inputs.ids)?,
        &b.upload(&inputs.cu)?,
        &hidden,
        &mut y,
        Some(&mut g),
        Some(&mut state),
    );
    o.flag("the good batch right after", r.is_ok());
    check_good_call(
        &mut o,
        b,
        (&y, &expected),
        (&g, &expected_gates),
        &state,
        &expected_state,
    )?;
    Ok(o)
}

/// A bf16 decode step with gates, from the state a prefill of the fast-path shape left (or that
/// state uploaded with a bad id in its history), with a bad window id: the oracle's error with
/// output, gates and state untouched, then the good step (from the good state) against the
/// oracle.
fn bad_decode_fast_case<B: EngramOps>(b: &B, bad: BadInput) -> Run {
    let shape = engram_shape("tensor_tiles")?;
    let inputs = engram_inputs::<bf16>(&shape, 97)?;
    let c = &shape.config;
    let md = c.hc_mult * c.hidden_size;
    let (seqs, keep) = (shape.lens.len(), c.max_ngram_size - 1);
    let dev = DeviceEngramLayer::upload(b, &inputs.layer)?;
    let mut primed = out::<B, bf16>(b, inputs.hidden.len())?;
    let mut state = DeviceEngramState::new(b, &dev, seqs)?;
    b.engram_prefill(
        &dev,
        &b.upload(&inputs.ids)?,
        &b.upload(&inputs.cu)?,
        &b.upload(&inputs.hidden)?,
        &mut primed,
        None,
        Some(&mut state),
    )?;
    let good_state = state.download(b)?;
    let step_ids = synthetic::ids(seqs, CASE_VOCAB, 3);
    let step_hidden = synthetic::activations::<bf16>(seqs * md, 2.0, 4);
    let mut ids = step_ids.clone();
    let expected = if bad == BadInput::DecodeTilesIdBeyondVocab {
        ids[1] = CASE_VOCAB as u32 + 4;
        Error::IdOutOfRange {
            position: 1,
            id: CASE_VOCAB + 4,
            limit: CASE_VOCAB,
        }
    } else {
        // The oldest id of the last sequence's history: flat position seqs + (seqs - 1) keep
        // over the step's ids then the history, reported modulo seqs as the oracle does.
        let mut bad_state = good_state.clone();
        bad_state.ids[(seqs - 1) * keep] = CASE_VOCAB as u32 + 6;
        state = DeviceEngramState::upload(b, &bad_state)?;
        Error::IdOutOfRange {
            position: (seqs + (seqs - 1) * keep) % seqs,
            id: CASE_VOCAB + 6,
            limit: CASE_VOCAB,
        }
    };
    let before = state.download(b)?;
    let hidden = b.upload(&step_hidden)?;
    let mut y = out::<B, bf16>(b, seqs * md)?;
    let mut g = out::<B, bf16>(b, seqs * c.hc_mult)?;
    let r = b.engram_decode(
        &dev,
        &b.upload(&ids)?,
        &hidden,
        &mut state,
        &mut y,
        Some(&mut g),
    );
    let untouched = untouched_layer(b, &y, &g, &state, &before);
    let mut o = Outcome::default();
    expect_error(&mut o, b, r, expected, untouched)?;
    let oracle = convert_layer::<bf16, f64>(&inputs.layer);
    let (_, _, mut oracle_state) = oracle_prefill(&inputs, &oracle)?;
    let mut expected = vec![0.0; seqs * md];
    let mut expected_gates = vec![0.0; seqs * c.hc_mult];
    reference::engram_decode(
        &oracle,
        &step_ids,
        &widen(&step_hidden),
        &mut oracle_state,
        &mut expected,
        Some(&mut expected_gates),
    )?;
    let mut state = DeviceEngramState::upload(b, &good_state)?;
    let r = b.engram_decode(
        &dev,
        &b.upload(&step_ids)?,
        &hidden,
        &mut state,
        &mut y,
        Some(&mut g),
    );
    o.flag("the good step right after", r.is_ok());
    check_good_call(
        &mut o,
        b,
        (&y, &expected),
        (&g, &expected_gates),
        &state,
        &oracle_state,
    )?;
    Ok(o)
}

fn bad_case<B: EngramOps + MoeOps>(b: &B, bad: BadInput) -> Run {
    let shape = engram_shape("len1_in_batch")?;
    let inputs = engram_inputs::<f32>(&shape, 99)?;
    let c = &shape.config;
    let md = c.hc_mult * c.hidden_size;
    let tokens = inputs.ids.len();
    let layer = inputs.hasher.layer(c.layer_ids[0])?;
    let k = c.n_head_per_ngram;
    let mut o = Outcome::default();
    let cu = b.upload(&inputs.cu)?;
    let hash_with = |o: &mut Outcome,
                     ids: Vec<u32>,
                     cu_host: Vec<u32>,
                     expected: Error|
     -> std::result::Result<(), Failure> {
        let (idd, cud) = (b.upload(&ids)?, b.upload(&cu_host)?);
        let mut rows = out::<B, u32>(b, ids.len() * c.num_heads())?;
        let r = b.hash(layer, k, PAD, CASE_VOCAB, &idd, &cud, &mut rows);
        expect_error(o, b, r, expected, all_fill(b, &rows))?;
        // A rejected call leaves the backend as it was: the good batch hashes right after it
        // (a backend that validates on the device must not keep the failure it recorded).
        let mut good = vec![0u32; inputs.ids.len() * c.num_heads()];
        inputs
            .hasher
            .hash_layer(layer.layer_id, &inputs.ids, &inputs.cu, &mut good)?;
        let mut rows = out::<B, u32>(b, good.len())?;
        let r = b.hash(
            layer,
            k,
            PAD,
            CASE_VOCAB,
            &b.upload(&inputs.ids)?,
            &cu,
            &mut rows,
        );
        o.flag("the good batch right after", r.is_ok());
        o.exact("its rows", &b.to_vec(&rows)?, &good);
        Ok(())
    };
    let bad_id = |pos: usize, id: u32| {
        let mut ids = inputs.ids.clone();
        ids[pos] = id;
        ids
    };
    let seqlens = |reason: &'static str| Error::InvalidSeqLens { reason };
    match bad {
        BadInput::HashIdAtVocab => hash_with(
            &mut o,
            bad_id(3, CASE_VOCAB as u32),
            inputs.cu.clone(),
            Error::IdOutOfRange {
                position: 3,
                id: CASE_VOCAB,
                limit: CASE_VOCAB,
            },
        )?,
        BadInput::HashIdMax => hash_with(
            &mut o,
            bad_id(tokens - 1, u32::MAX),
            inputs.cu.clone(),
            Error::IdOutOfRange {
                position: tokens - 1,
                id: u64::from(u32::MAX),
                limit: CASE_VOCAB,
            },
        )?,
        BadInput::SeqlensDecreasing => {
            let mut cu = inputs.cu.clone();
            cu.swap(1, 2);
            hash_with(&mut o, inputs.ids.clone(), cu, seqlens("must not decrease"))?
        }
        BadInput::SeqlensNotEndingAtTotal => {
            let mut cu = inputs.cu.clone();
            *cu.last_mut().unwrap_or(&mut 0) -= 1;
            hash_with(
                &mut o,
                inputs.ids.clone(),
                cu,
                seqlens("must end at the number of tokens in the batch"),
            )?
        }
        BadInput::SeqlensNotStartingAtZero => {
            let mut cu = inputs.cu.clone();
            cu[0] = 1;
            hash_with(&mut o, inputs.ids.clone(), cu, seqlens("must start at 0"))?
        }
        BadInput::SeqlensEmpty => hash_with(
            &mut o,
            inputs.ids.clone(),
            vec![],
            seqlens("must hold at least one entry (0 for an empty batch)"),
        )?,
        BadInput::CompressIdBeyondRaw => {
            let lookup = b.upload(&[0u32, 1, 1, 2])?;
            let raw = b.upload(&[3u32, 0, 4])?;
            let mut y = out::<B, u32>(b, 3)?;
            let r = b.compress_ids(&lookup, &raw, &mut y);
            expect_error(
                &mut o,
                b,
                r,
                Error::IdOutOfRange {
                    position: 2,
                    id: 4,
                    limit: 4,
                },
                all_fill(b, &y),
            )?
        }
        BadInput::PrefillHiddenWrongLen | BadInput::PrefillOutputWrongLen => {
            let dev = DeviceEngramLayer::upload(b, &inputs.layer)?;
            let ids = b.upload(&inputs.ids)?;
            let (hidden_len, out_len) = if bad == BadInput::PrefillHiddenWrongLen {
                (tokens * md - 1, tokens * md)
            } else {
                (tokens * md, tokens * md + 1)
            };
            let hidden = b.upload(&inputs.hidden[..hidden_len.min(inputs.hidden.len())])?;
            let mut y = out::<B, f32>(b, out_len)?;
            let r = b.engram_prefill(&dev, &ids, &cu, &hidden, &mut y, None, None);
            let expected = if bad == BadInput::PrefillHiddenWrongLen {
                Error::ShapeMismatch {
                    what: "hidden",
                    expected: tokens * md,
                    actual: hidden_len,
                }
            } else {
                Error::ShapeMismatch {
                    what: "output",
                    expected: tokens * md,
                    actual: out_len,
                }
            };
            expect_error(&mut o, b, r, expected, all_fill(b, &y))?
        }
        BadInput::GatherRowBeyondTable => {
            // Rows of whole 16-byte chunks (this shape's) and odd-width rows ("odd_widths",
            // 3 values): backends may gather the two differently.
            let odd = engram_shape("odd_widths")?;
            let odd_inputs = engram_inputs::<f32>(&odd, 99)?;
            for (config, inputs) in [(c, &inputs), (&odd.config, &odd_inputs)] {
                let layer = inputs.hasher.layer(config.layer_ids[0])?;
                let (heads, d_head) = (config.num_heads(), config.d_head());
                let table = b.upload(&inputs.layer.weights.table)?;
                let gather = |rows: &[u32]| -> std::result::Result<_, Failure> {
                    let mut y = out::<B, f32>(b, rows.len() * d_head)?;
                    let r = b.gather_rows(&table, d_head, layer, &b.upload(rows)?, &mut y);
                    Ok((r, y))
                };
                let mut rows = vec![0u32; 2 * heads];
                rows[heads + 1] = layer.table_sizes[1];
                let (r, y) = gather(&rows)?;
                expect_error(
                    &mut o,
                    b,
                    r,
                    Error::RowOutOfRange {
                        position: 1,
                        head: 1,
                        row: layer.table_sizes[1],
                        rows: layer.table_sizes[1],
                    },
                    all_fill(b, &y),
                )?;
                // Then the good rows on the same backend (as after a bad hash).
                rows[heads + 1] = 0;
                let (r, y) = gather(&rows)?;
                o.flag("the good rows right after", r.is_ok());
                let expected = gathered(&inputs.layer.weights.table, layer, d_head, &rows);
                o.close("their rows (exact copy)", &b.to_vec(&y)?, &expected, 0.0);
            }
        }
        BadInput::HashDecodeHistoryBeyondVocab => {
            // Three windows; sequence 1's oldest history id is bad: its flat position over the
            // new ids then the history is seqs + keep, reported modulo the sequences.
            let (seqs, keep) = (3, layer.multipliers.len() - 1);
            let ids = inputs.ids[..seqs].to_vec();
            let good: Vec<u32> = (0..seqs * keep).map(|i| inputs.ids[i % tokens]).collect();
            let mut history = good.clone();
            history[keep] = CASE_VOCAB as u32 + 7;
            let new_d = b.upload(&ids)?;
            let mut rows = out::<B, u32>(b, seqs * c.num_heads())?;
            let r = b.hash_decode(
                layer,
                k,
                CASE_VOCAB,
                &b.upload(&history)?,
                &new_d,
                &mut rows,
            );
            let expected = Error::IdOutOfRange {
                position: (seqs + keep) % seqs,
                id: CASE_VOCAB + 7,
                limit: CASE_VOCAB,
            };
            expect_error(&mut o, b, r, expected, all_fill(b, &rows))?;
            // Then the good windows on the same backend, against the oracle's rows.
            let mut expected = vec![0u32; seqs * c.num_heads()];
            reference::hash_decode(layer, k, CASE_VOCAB, &good, &ids, &mut expected)?;
            let r = b.hash_decode(layer, k, CASE_VOCAB, &b.upload(&good)?, &new_d, &mut rows);
            o.flag("the good windows right after", r.is_ok());
            o.exact("their rows", &b.to_vec(&rows)?, &expected);
        }
        BadInput::DecodeStateWrongSequences | BadInput::DecodeIdBeyondVocab => {
            let dev = DeviceEngramLayer::upload(b, &inputs.layer)?;
            let seqs = 3;
            let state_seqs = if bad == BadInput::DecodeStateWrongSequences {
                2
            } else {
                seqs
            };
            let mut state = DeviceEngramState::new(b, &dev, state_seqs)?;
            let before = state.download(b)?;
            let mut ids = inputs.ids[..seqs].to_vec();
            if bad == BadInput::DecodeIdBeyondVocab {
                ids[2] = CASE_VOCAB as u32 + 5;
            }
            let (idd, hd) = (b.upload(&ids)?, b.upload(&inputs.hidden[..seqs * md])?);
            let mut y = out::<B, f32>(b, seqs * md)?;
            let r = b.engram_decode(&dev, &idd, &hd, &mut state, &mut y, None);
            let expected = if bad == BadInput::DecodeStateWrongSequences {
                Error::ShapeMismatch {
                    what: "state sequences",
                    expected: seqs,
                    actual: state_seqs,
                }
            } else {
                Error::IdOutOfRange {
                    position: 2,
                    id: CASE_VOCAB + 5,
                    limit: CASE_VOCAB,
                }
            };
            let untouched = all_fill(b, &y).and_then(|ok| Ok(ok && state.download(b)? == before));
            expect_error(&mut o, b, r, expected, untouched)?;
            if bad == BadInput::DecodeIdBeyondVocab {
                // Then the good step on the same backend and state, against the oracle's.
                let good = &inputs.ids[..seqs];
                let oracle = convert_layer::<f32, f64>(&inputs.layer);
                let mut oracle_state = EngramState::new(&oracle, seqs);
                let mut expected = vec![0.0; seqs * md];
                reference::engram_decode(
                    &oracle,
                    good,
                    &widen(&inputs.hidden[..seqs * md]),
                    &mut oracle_state,
                    &mut expected,
                    None,
                )?;
                let r = b.engram_decode(&dev, &b.upload(good)?, &hd, &mut state, &mut y, None);
                o.flag("the good step right after", r.is_ok());
                o.close(
                    "its output",
                    &b.to_vec(&y)?,
                    &expected,
                    nmse_bound(DType::F32),
                );
            }
        }
        BadInput::PrefillIdBeyondVocab | BadInput::PrefillSeqlensDecreasing => {
            return bad_prefill_case(b, bad)
        }
        BadInput::DecodeTilesIdBeyondVocab | BadInput::DecodeTilesHistoryBeyondVocab => {
            return bad_decode_fast_case(b, bad)
        }
        BadInput::LinearBiasWrongLen => {
            let x = b.upload(&[1.0f32; 6])?;
            let w = b.upload(&[0.5f32; 12])?;
            let bias = b.upload(&[0.0f32; 3])?;
            let mut y = out::<B, f32>(b, 8)?;
            let r = b.linear(&x, &w, Some(&bias), 3, &mut y);
            expect_error(
                &mut o,
                b,
                r,
                Error::ShapeMismatch {
                    what: "linear bias",
                    expected: 4,
                    actual: 3,
                },
                all_fill(b, &y),
            )?
        }
        BadInput::MoeInputWrongLen | BadInput::RouteBiasWrongLen => {
            let shape = crate::cases::moe_shapes()
                .into_iter()
                .find(|s| s.name == "sigmoid_grouped_bias")
                .ok_or_else(|| Failure::Unsupported("shape missing".into()))?;
            let cfg = &shape.config;
            let (kk, e) = (cfg.n_activated_experts, cfg.n_routed_experts);
            if bad == BadInput::MoeInputWrongLen {
                let layer = synthetic::moe_layer::<f32>(cfg, 5)?;
                let dev = DeviceMoeLayer::upload(b, &layer)?;
                let x = b.upload(&vec![0.5f32; 2 * cfg.dim + 1])?;
                let mut y = out::<B, f32>(b, 2 * cfg.dim + 1)?;
                let mut w = out::<B, f32>(b, 2 * kk)?;
                let mut i = out::<B, u32>(b, 2 * kk)?;
                let r = b.moe_forward(&dev, &x, &mut y, &mut w, &mut i);
                let untouched =
                    all_fill(b, &y).and_then(|a| Ok(a && all_fill(b, &w)? && all_fill(b, &i)?));
                expect_error(
                    &mut o,
                    b,
                    r,
                    Error::ShapeMismatch {
                        what: "moe input",
                        expected: cfg.dim,
                        actual: 2 * cfg.dim + 1,
                    },
                    untouched,
                )?
            } else {
                let scores = b.upload(&vec![0.5f32; 2 * e])?;
                let bias = b.upload(&vec![0.0f32; e - 1])?;
                let mut w = out::<B, f32>(b, 2 * kk)?;
                let mut i = out::<B, u32>(b, 2 * kk)?;
                let r = b.moe_route(&scores, &bias, cfg, &mut w, &mut i);
                let untouched = all_fill(b, &w).and_then(|a| Ok(a && all_fill(b, &i)?));
                expect_error(
                    &mut o,
                    b,
                    r,
                    Error::ShapeMismatch {
                        what: "gate bias",
                        expected: e,
                        actual: e - 1,
                    },
                    untouched,
                )?
            }
        }
        BadInput::UnsupportedDtype => {
            let lacking = [DType::F64, DType::F16, DType::BF16, DType::F32]
                .into_iter()
                .find(|d| !b.supports_dtype(*d));
            let Some(dtype) = lacking else {
                return Err(Failure::Unsupported(format!(
                    "the {} backend supports every float dtype",
                    b.name()
                )));
            };
            let r = match dtype {
                DType::F64 => {
                    DeviceEngramLayer::upload(b, &convert_layer::<f32, f64>(&inputs.layer))
                        .map(|_| ())
                }
                DType::F16 => {
                    DeviceEngramLayer::upload(b, &convert_layer::<f32, f16>(&inputs.layer))
                        .map(|_| ())
                }
                DType::BF16 => {
                    DeviceEngramLayer::upload(b, &convert_layer::<f32, bf16>(&inputs.layer))
                        .map(|_| ())
                }
                _ => DeviceEngramLayer::upload(b, &inputs.layer).map(|_| ()),
            };
            expect_error(
                &mut o,
                b,
                r,
                Error::UnsupportedDType {
                    backend: b.name(),
                    dtype,
                },
                Ok(true),
            )?
        }
    }
    Ok(o)
}

/// Floating-point operations and the bytes an op must move at least, for GB/s and GFLOP/s.
pub fn cost(case: &Case) -> (u64, u64) {
    let size = case.dtype.size() as u64;
    match &case.params {
        Params::Compress { ids, .. } => (0, 12 * *ids as u64),
        Params::Norm(s) => {
            let n = (s.rows * s.groups * s.d) as u64;
            (4 * n, 2 * n * size)
        }
        Params::Linear(s) => {
            let (r, i, o) = (s.rows as u64, s.inputs as u64, s.outputs as u64);
            (2 * r * i * o, (r * i + i * o + r * o) * size)
        }
        Params::ConvDecode(s) => {
            let n = (s.seqs * s.channels) as u64;
            (
                2 * n * s.kernel as u64,
                n * size * (3 + 2 * (s.kernel as u64 - 1) * s.dilation as u64),
            )
        }
        Params::Ffn(s) => {
            let (r, d, i) = (s.rows as u64, s.dim as u64, s.inter as u64);
            (6 * r * d * i, (3 * d * i + 2 * r * d) * size)
        }
        Params::Moe(s) => {
            let c = &s.config;
            let (t, d, i, k, e) = (
                s.tokens as u64,
                c.dim as u64,
                c.moe_inter_dim as u64,
                c.n_activated_experts as u64,
                c.n_routed_experts as u64,
            );
            match case.family {
                Family::MoeRoute => (t * e * 4, t * e * size + t * k * (4 + size)),
                _ => (
                    2 * t * d * e + 6 * t * k * d * i,
                    (e * d + 3 * e * d * i + 2 * t * d) * size,
                ),
            }
        }
        Params::Engram(s) => {
            let c = &s.config;
            let t: u64 = if case.family == Family::EngramDecode {
                s.lens.len() as u64
            } else {
                s.lens.iter().sum::<usize>() as u64
            };
            let (m, d, dm, h) = (
                c.hc_mult as u64,
                c.hidden_size as u64,
                c.d_mem() as u64,
                c.num_heads() as u64,
            );
            match case.family {
                Family::Hash => (t * h * 3, t * 4 + t * h * 4),
                Family::Gather => (0, 2 * t * dm * size + t * h * 4),
                Family::Gate => (
                    t * m * d * 8,
                    (t * (m + 1) * d + 2 * t * m * d + 2 * m * d) * size,
                ),
                Family::ShortConv => (t * m * d * 2 * c.kernel_size as u64, 3 * t * m * d * size),
                _ => (
                    2 * t * dm * (m + 1) * d + t * m * d * 20,
                    ((m + 1) * d * dm + t * dm + 2 * t * m * d) * size + t * h * 4,
                ),
            }
        }
        Params::Bad(_) => (0, 0),
    }
}
