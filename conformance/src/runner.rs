//! The golden runner: runs a layer stored in the golden format on a backend and compares every
//! output with the reference's numbers.
//!
//! A golden file is a safetensors file with a sibling `.json` of the same stem. The JSON tells
//! the kind: an `engram` object (one Engram layer; `layer_id`, `compressed_vocab_size` and
//! `compressed_pad_id` beside it) or a `cases` list (MoE layers, each with its config and name,
//! the name prefixing its tensors). Tensor names follow `golden/README.md`.

use std::fmt;
use std::path::{Path, PathBuf};

use engram_core::{
    DeviceEngramLayer, DeviceMoeLayer, Element, EngramConfig, EngramLayer, EngramOps, MoeConfig,
    MoeLayer, MoeOps, NgramHasher, TensorSource,
};
use engram_model::{ModelError, SafetensorsFile};

pub use crate::metrics::{Check, Measure};

/// NMSE bound of the f64 path against the reference's `output_f64`.
pub const BOUND_F64: f64 = 1e-12;
/// NMSE bound of the f32 path against the reference's `output_f64`.
pub const BOUND_F32: f64 = 1e-10;

/// Why a golden file could not be run.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// The safetensors file could not be read.
    #[error(transparent)]
    File(#[from] ModelError),
    /// The sibling JSON is missing or malformed.
    #[error("{path}: {reason}")]
    Json {
        /// The JSON file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The file and its JSON disagree, or a layer could not be built or run.
    #[error("{path}: {source}")]
    Layer {
        /// The safetensors file.
        path: PathBuf,
        /// What the core reported.
        source: engram_core::Error,
    },
}

/// Everything a golden run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct GoldenReport {
    /// The file run.
    pub file: PathBuf,
    /// What it holds, in words.
    pub description: String,
    /// The backend that ran it.
    pub backend: String,
    /// Every comparison.
    pub checks: Vec<Check>,
}

impl GoldenReport {
    /// Whether every check passed (and there was at least one).
    pub fn passed(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(Check::passed)
    }
}

impl fmt::Display for GoldenReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{}: {} on backend {}",
            self.file.display(),
            self.description,
            self.backend
        )?;
        for c in &self.checks {
            writeln!(f, "  {c}")?;
        }
        let failed = self.checks.iter().filter(|c| !c.passed()).count();
        write!(
            f,
            "{}: {} checks, {} passed, {} failed",
            if self.passed() { "PASS" } else { "FAIL" },
            self.checks.len(),
            self.checks.len() - failed,
            failed
        )
    }
}

/// The JSON beside a golden file: same stem, `.json`.
pub fn sibling_json(path: &Path) -> PathBuf {
    path.with_extension("json")
}

fn read_sibling_json(path: &Path) -> Result<serde_json::Value, RunnerError> {
    let json_path = sibling_json(path);
    let text = std::fs::read_to_string(&json_path).map_err(|e| RunnerError::Json {
        path: json_path.clone(),
        reason: format!("cannot read the config beside the golden file: {e}"),
    })?;
    serde_json::from_str(&text).map_err(|e| RunnerError::Json {
        path: json_path,
        reason: format!("not valid JSON: {e}"),
    })
}

/// Runs the golden file at `path` on `backend`.
pub fn run_golden<B: EngramOps + MoeOps>(
    backend: &B,
    path: &Path,
) -> Result<GoldenReport, RunnerError> {
    let json = read_sibling_json(path)?;
    let file = SafetensorsFile::open(path)?;
    let layer_err = |source| RunnerError::Layer {
        path: path.to_path_buf(),
        source,
    };
    let (description, checks) = if json.get("engram").is_some() {
        run_engram(backend, &json, &file, path).map_err(layer_err)?
    } else if json.get("cases").is_some() {
        run_moe(backend, &json, &file, path).map_err(layer_err)?
    } else {
        return Err(RunnerError::Json {
            path: sibling_json(path),
            reason: "has neither an `engram` object nor a `cases` list: not a golden config".into(),
        });
    };
    Ok(GoldenReport {
        file: path.to_path_buf(),
        description,
        backend: backend.name().to_owned(),
        checks,
    })
}

fn json_err(reason: &'static str) -> engram_core::Error {
    engram_core::Error::InvalidConfig {
        field: "golden json",
        reason,
    }
}

fn shape_of(file: &SafetensorsFile, name: &str) -> engram_core::Result<Vec<usize>> {
    file.shape(name)
        .ok_or_else(|| engram_core::Error::MissingTensor {
            name: name.to_owned(),
        })
}

fn to_u32(name: &str, values: Vec<i64>) -> engram_core::Result<Vec<u32>> {
    values
        .into_iter()
        .map(|v| {
            u32::try_from(v).map_err(|_| engram_core::Error::TensorValue {
                name: name.to_owned(),
                reason: "holds a value outside 0..2^32",
            })
        })
        .collect()
}

fn widen<T: Element>(v: &[T]) -> Vec<f64> {
    v.iter().map(|x| x.to_f64()).collect()
}

fn run_engram<B: EngramOps>(
    backend: &B,
    json: &serde_json::Value,
    file: &SafetensorsFile,
    _path: &Path,
) -> engram_core::Result<(String, Vec<Check>)> {
    let config: EngramConfig = serde_json::from_value(json.clone())
        .map_err(|_| json_err("does not hold a valid Engram config"))?;
    let vocab = json["compressed_vocab_size"]
        .as_u64()
        .ok_or(json_err("lacks compressed_vocab_size"))?;
    let pad = json["compressed_pad_id"]
        .as_u64()
        .and_then(|p| u32::try_from(p).ok())
        .ok_or(json_err("lacks compressed_pad_id"))?;
    let layer_id = match json.get("layer_id") {
        Some(v) => v
            .as_u64()
            .and_then(|l| u32::try_from(l).ok())
            .ok_or(json_err("has a bad layer_id"))?,
        None => config.layer_ids[0],
    };
    let hasher = NgramHasher::new(&config, vocab, pad)?;
    let ids_shape = shape_of(file, "compressed_ids")?;
    let [batch, seq] = ids_shape[..] else {
        return Err(engram_core::Error::TensorShape {
            name: "compressed_ids".into(),
            expected: vec![0, 0],
            actual: ids_shape,
        });
    };
    let ids = to_u32("compressed_ids", file.read_i64("compressed_ids")?)?;
    let cu: Vec<u32> = (0..=batch).map(|b| (b * seq) as u32).collect();
    let mut checks = Vec::new();

    // Hash rows of every layer the file holds, through the backend's hash op.
    let ids_dev = backend.upload(&ids)?;
    let cu_dev = backend.upload(&cu)?;
    for layer in hasher.layers() {
        let name = format!("hash_ids.layer{}", layer.layer_id);
        if file.shape(&name).is_none() {
            continue;
        }
        let expected = file.read_i64(&name)?;
        let mut rows = backend.zeros::<u32>(ids.len() * hasher.heads_per_position())?;
        backend.hash(
            layer,
            config.n_head_per_ngram,
            pad,
            vocab,
            &ids_dev,
            &cu_dev,
            &mut rows,
        )?;
        let got: Vec<i64> = backend.to_vec(&rows)?.into_iter().map(i64::from).collect();
        checks.push(Check::exact(
            format!("hash rows layer {}", layer.layer_id),
            &got,
            &expected,
        ));
    }

    let (_, expected) = file.read_f64("output_f64")?;
    let hidden_shape = shape_of(file, "hidden_states")?;
    let want = vec![batch, seq, config.hc_mult, config.hidden_size];
    if hidden_shape != want {
        return Err(engram_core::Error::TensorShape {
            name: "hidden_states".into(),
            expected: want,
            actual: hidden_shape,
        });
    }
    let run = |label: &str,
               bound: f64,
               checks: &mut Vec<Check>,
               f64_path: bool|
     -> engram_core::Result<()> {
        let got = if f64_path {
            engram_output::<B, f64>(backend, &config, &hasher, layer_id, file, &ids_dev, &cu_dev)?
        } else {
            engram_output::<B, f32>(backend, &config, &hasher, layer_id, file, &ids_dev, &cu_dev)?
        };
        checks.push(Check::close(
            format!("output {label}"),
            &got,
            &expected,
            bound,
        ));
        Ok(())
    };
    if backend.supports_dtype(engram_core::DType::F64) {
        run("f64", BOUND_F64, &mut checks, true)?;
    }
    run("f32", BOUND_F32, &mut checks, false)?;
    let description = format!(
        "Engram layer {layer_id} (N = {}, K = {}, M = {}, d = {}, kernel {}{}), {batch} x {seq} tokens",
        config.max_ngram_size,
        config.n_head_per_ngram,
        config.hc_mult,
        config.hidden_size,
        config.kernel_size,
        if config.short_conv { "" } else { ", no conv" }
    );
    Ok((description, checks))
}

fn engram_output<B: EngramOps, T: Element>(
    backend: &B,
    config: &EngramConfig,
    hasher: &NgramHasher,
    layer_id: u32,
    file: &SafetensorsFile,
    ids: &B::Buffer<u32>,
    cu: &B::Buffer<u32>,
) -> engram_core::Result<Vec<f64>> {
    let layer = EngramLayer::<T>::load(config, hasher, layer_id, file, "weights.")?;
    let device = DeviceEngramLayer::upload(backend, &layer)?;
    let n: usize = shape_of(file, "hidden_states")?.iter().product();
    let mut hidden = vec![T::default(); n];
    file.read("hidden_states", &mut hidden)?;
    let hidden = backend.upload(&hidden)?;
    let mut out = backend.zeros::<T>(n)?;
    backend.engram_prefill(&device, ids, cu, &hidden, &mut out, None, None)?;
    Ok(widen(&backend.to_vec(&out)?))
}

fn run_moe<B: MoeOps>(
    backend: &B,
    json: &serde_json::Value,
    file: &SafetensorsFile,
    _path: &Path,
) -> engram_core::Result<(String, Vec<Check>)> {
    let cases = json["cases"]
        .as_array()
        .ok_or(json_err("`cases` is not a list"))?;
    let mut checks = Vec::new();
    let mut names = Vec::new();
    for case in cases {
        let name = case["name"]
            .as_str()
            .ok_or(json_err("a case lacks its `name`"))?;
        let config: MoeConfig = serde_json::from_value(case.clone())
            .map_err(|_| json_err("a case does not hold a valid MoE config"))?;
        names.push(format!(
            "{name} ({} experts, top {})",
            config.n_routed_experts, config.n_activated_experts
        ));
        let (_, expected) = file.read_f64(&format!("{name}.output_f64"))?;
        let mut paths = vec![("f32", BOUND_F32, false)];
        if backend.supports_dtype(engram_core::DType::F64) {
            paths.insert(0, ("f64", BOUND_F64, true));
        }
        for (label, bound, f64_path) in paths {
            let (out, weights, indices) = if f64_path {
                moe_output::<B, f64>(backend, &config, file, name)?
            } else {
                moe_output::<B, f32>(backend, &config, file, name)?
            };
            let index_name = if f64_path {
                format!("{name}.route_indices_f64")
            } else {
                format!("{name}.route_indices")
            };
            let expected_indices = file.read_i64(&index_name)?;
            checks.push(Check::exact(
                format!("{name} route indices {label}"),
                &indices,
                &expected_indices,
            ));
            let (_, expected_weights) = file.read_f64(&format!("{name}.route_weights"))?;
            checks.push(Check::close(
                format!("{name} route weights {label}"),
                &weights,
                &expected_weights,
                bound.max(BOUND_F32),
            ));
            checks.push(Check::close(
                format!("{name} output {label}"),
                &out,
                &expected,
                bound,
            ));
        }
    }
    Ok((format!("MoE layers {}", names.join(", ")), checks))
}

type MoeResult = (Vec<f64>, Vec<f64>, Vec<i64>);

fn moe_output<B: MoeOps, T: Element>(
    backend: &B,
    config: &MoeConfig,
    file: &SafetensorsFile,
    name: &str,
) -> engram_core::Result<MoeResult> {
    let layer = MoeLayer::<T>::load(config, file, &format!("{name}.weights."))?;
    let device = DeviceMoeLayer::upload(backend, &layer)?;
    let x_name = format!("{name}.x");
    let n: usize = shape_of(file, &x_name)?.iter().product();
    let mut x = vec![T::default(); n];
    file.read(&x_name, &mut x)?;
    let x = backend.upload(&x)?;
    let tokens = n / config.dim;
    let mut out = backend.zeros::<T>(n)?;
    let mut weights = backend.zeros::<T>(tokens * config.n_activated_experts)?;
    let mut indices = backend.zeros::<u32>(tokens * config.n_activated_experts)?;
    backend.moe_forward(&device, &x, &mut out, &mut weights, &mut indices)?;
    Ok((
        widen(&backend.to_vec(&out)?),
        widen(&backend.to_vec(&weights)?),
        backend
            .to_vec(&indices)?
            .into_iter()
            .map(i64::from)
            .collect(),
    ))
}
