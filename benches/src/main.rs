//! `engram-bench`: the Engram layer and the hash on a backend, each beside its floors, one JSON
//! line per measurement.

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use engram_benches::{backend_settings, copy_bandwidth, median_seconds};
use engram_core::{
    bf16, f16, synthetic, Backend, DeviceEngramLayer, DeviceEngramState, Element, EngramConfig,
    EngramOps, MoeConfig, MoeOps, NgramHasher, ScoreFunc,
};
use engram_cpu::kernels::hash::{hash_rows, LayerHashKernel};
use engram_cpu::kernels::linear::linear;
use engram_cpu::{CpuBackend, Parallelism};

/// Canonical ids of the DeepSeek-V3 tokenizer after compression.
const VOCAB: u64 = 98_627;

#[derive(Parser)]
#[command(
    name = "engram-bench",
    version,
    about = "Engram kernels beside their floors (JSON lines)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum BackendName {
    /// The CPU backend.
    Cpu,
    /// The wgpu backend (the adapter `ENGRAM_WGPU_ADAPTER` names, or the best one).
    Wgpu,
    /// The CUDA backend (this tool built with `--features cuda`, an NVIDIA GPU).
    Cuda,
}

/// The CUDA backend, or why there is none.
#[cfg(feature = "cuda")]
fn cuda_backend() -> engram_core::Result<engram_cuda::CudaBackend> {
    engram_cuda::CudaBackend::new()
}

/// The CUDA backend, or why there is none.
#[cfg(not(feature = "cuda"))]
fn cuda_backend() -> engram_core::Result<CpuBackend> {
    Err(engram_core::Error::NoDevice {
        backend: "cuda",
        reason: "this engram-bench was built without its `cuda` feature".into(),
    })
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum DTypeName {
    F32,
    Bf16,
    F16,
}

#[derive(Subcommand)]
enum Command {
    /// One Engram layer of the reference demo's configuration (hidden 1024, M = 4, N = 3,
    /// 8 heads x 64 per order, 646400-row tables per order): prefill of a batch, or one decode step.
    Engram {
        /// Backends to measure, comma-separated (`cpu,wgpu`: one JSON line each, same run).
        #[arg(long, value_enum, value_delimiter = ',', default_value = "cpu")]
        backend: Vec<BackendName>,
        /// Sequences.
        #[arg(long, default_value_t = 4)]
        batch: usize,
        /// Tokens per sequence (with --decode: tokens primed before the step).
        #[arg(long, default_value_t = 512)]
        seq: usize,
        #[arg(long, value_enum, default_value = "f32")]
        dtype: DTypeName,
        /// Time one decode step of every sequence instead of the prefill.
        #[arg(long)]
        decode: bool,
        /// Timed runs (the median is reported).
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
    /// The stacked projection of the demo layer alone ([tokens, 1280] x [5120, 1280]^T), on each
    /// backend, in GFLOP/s.
    Projection {
        /// Backends to measure, comma-separated.
        #[arg(long, value_enum, value_delimiter = ',', default_value = "cpu")]
        backend: Vec<BackendName>,
        #[arg(long, default_value_t = 512)]
        tokens: usize,
        #[arg(long, value_enum, default_value = "f32")]
        dtype: DTypeName,
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
    /// MoE routing alone (sigmoid scores, bias, group-limited top-k) in DeepSeek-V3's shape:
    /// 256 experts in 8 groups, 4 groups kept, top 8; beside the oracle and the memory floor.
    Route {
        /// Backends to measure, comma-separated.
        #[arg(long, value_enum, value_delimiter = ',', default_value = "cpu")]
        backend: Vec<BackendName>,
        #[arg(long, default_value_t = 4096)]
        tokens: usize,
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
    /// The row gather alone on the demo layer's tables (rows from hashing synthetic ids), beside
    /// the device's copy bandwidth.
    Gather {
        /// Backends to measure, comma-separated.
        #[arg(long, value_enum, value_delimiter = ',', default_value = "cpu")]
        backend: Vec<BackendName>,
        #[arg(long, default_value_t = 16384)]
        tokens: usize,
        #[arg(long, value_enum, default_value = "f32")]
        dtype: DTypeName,
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
    /// The N-gram hash alone (with id compression), in head-rows per second per core.
    Hash {
        /// Tokens hashed per run.
        #[arg(long, default_value_t = 1 << 20)]
        tokens: usize,
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
}

/// The inputs of one measurement, on the host.
struct EngramInputs<T> {
    ids: Vec<u32>,
    cu: Vec<u32>,
    hidden: Vec<T>,
    step_ids: Vec<u32>,
    step_hidden: Vec<T>,
}

/// What the measurement needs besides the backend.
struct EngramRun<'a, T: Element> {
    config: &'a EngramConfig,
    batch: usize,
    decode: bool,
    runs: usize,
    dtype: &'static str,
    inputs: &'a EngramInputs<T>,
}

/// Median seconds of `runs` calls of `op` on `backend`, each waiting for the device to finish;
/// the first error stops the timing and is returned.
fn median_synced<B: Backend>(
    backend: &B,
    runs: usize,
    mut op: impl FnMut() -> engram_core::Result<()>,
) -> engram_core::Result<f64> {
    let mut result = Ok(());
    let seconds = median_seconds(runs, || {
        if result.is_ok() {
            result = op().and_then(|()| backend.synchronize());
        }
    });
    result.map(|()| seconds)
}

/// One decode step's buffers on a backend: a state primed by a prefill of the run's batch, the
/// step's ids and hidden states, and its output.
struct DecodeStep<B: Backend, T: Element> {
    state: DeviceEngramState<B, T>,
    ids: B::Buffer<u32>,
    hidden: B::Buffer<T>,
    out: B::Buffer<T>,
}

/// The buffers of one decode step of every sequence, from a state primed with the batch.
fn primed_step<B: EngramOps, T: Element>(
    backend: &B,
    dev: &DeviceEngramLayer<B, T>,
    run: &EngramRun<'_, T>,
) -> engram_core::Result<DecodeStep<B, T>> {
    let inputs = run.inputs;
    let ids = backend.upload(&inputs.ids)?;
    let cu = backend.upload(&inputs.cu)?;
    let hidden = backend.upload(&inputs.hidden)?;
    let mut primed = backend.zeros::<T>(inputs.hidden.len())?;
    let mut state = DeviceEngramState::new(backend, dev, run.batch)?;
    backend.engram_prefill(dev, &ids, &cu, &hidden, &mut primed, None, Some(&mut state))?;
    Ok(DecodeStep {
        state,
        ids: backend.upload(&inputs.step_ids)?,
        hidden: backend.upload(&inputs.step_hidden)?,
        out: backend.zeros::<T>(inputs.step_hidden.len())?,
    })
}

/// The layer's time on `backend` (prefill of the batch, or one decode step of every sequence
/// from a state primed with `seq` tokens), waiting for the device after every run.
fn time_layer<B: EngramOps, T: Element>(
    backend: &B,
    dev: &DeviceEngramLayer<B, T>,
    run: &EngramRun<'_, T>,
) -> engram_core::Result<f64> {
    if run.decode {
        let mut s = primed_step(backend, dev, run)?;
        return median_synced(backend, run.runs, || {
            backend.engram_decode(dev, &s.ids, &s.hidden, &mut s.state, &mut s.out, None)
        });
    }
    let inputs = run.inputs;
    let ids = backend.upload(&inputs.ids)?;
    let cu = backend.upload(&inputs.cu)?;
    let hidden = backend.upload(&inputs.hidden)?;
    let mut out = backend.zeros::<T>(inputs.hidden.len())?;
    median_synced(backend, run.runs, || {
        backend.engram_prefill(dev, &ids, &cu, &hidden, &mut out, None, None)
    })
}

/// The stacked projection alone on `backend`, in `T` (the device's own GEMM floor).
fn time_projection<B: EngramOps, T: Element>(
    backend: &B,
    dev: &DeviceEngramLayer<B, T>,
    tokens: usize,
    run: &EngramRun<'_, T>,
) -> engram_core::Result<f64> {
    let c = run.config;
    let x = backend.upload(&synthetic::activations::<T>(tokens * c.d_mem(), 1.0, 5))?;
    let mut y = backend.zeros::<T>(tokens * (c.hc_mult + 1) * c.hidden_size)?;
    median_synced(backend, run.runs, || {
        backend.linear(&x, &dev.proj_weight, None, c.d_mem(), &mut y)
    })
}

/// Bytes per second of a large device-to-device copy on `backend` (bytes read and written).
fn device_copy_bandwidth<B: Backend>(backend: &B, runs: usize) -> engram_core::Result<f64> {
    let words = 1usize << 26; // 256 MiB
    let src = backend.zeros::<u32>(words)?;
    let mut dst = backend.zeros::<u32>(words)?;
    let s = median_synced(backend, runs, || backend.copy(&src, &mut dst))?;
    Ok(2.0 * (words * 4) as f64 / s)
}

/// Bytes the layer must move: weights, gathered rows, hidden in and out (and the decode state
/// read and written).
fn layer_bytes<T>(config: &EngramConfig, tokens: usize, decode: bool) -> usize {
    let size = std::mem::size_of::<T>();
    let (m, d) = (config.hc_mult, config.hidden_size);
    let state_bytes = if decode {
        2 * tokens * 12 * m * d * size
    } else {
        0
    };
    (m + 1) * d * config.d_mem() * size
        + tokens * config.num_heads() * config.d_head() * size
        + 2 * tokens * m * d * size
        + state_bytes
}

/// One backend's measurements of the layer.
struct Figures<'a> {
    backend: &'a str,
    device: String,
    threads: usize,
    layer_s: f64,
    gemm_s: f64,
    gemm_via: &'a str,
    bandwidth: f64,
}

/// The JSON line of one backend's figures for `run`.
fn report<T: Element>(
    run: &EngramRun<'_, T>,
    seq: usize,
    tokens: usize,
    bytes: usize,
    f: Figures<'_>,
) -> serde_json::Value {
    let memory_s = bytes as f64 / f.bandwidth;
    serde_json::json!({
        "op": if run.decode { "engram_decode" } else { "engram_prefill" },
        "backend": f.backend,
        "device": f.device,
        "dtype": run.dtype,
        "batch": run.batch,
        "seq": seq,
        "tokens": tokens,
        "threads": f.threads,
        "layer_s": f.layer_s,
        "tokens_per_s": tokens as f64 / f.layer_s,
        "gemm_floor_s": f.gemm_s,
        "gemm_floor_via": f.gemm_via,
        "memory_floor_s": memory_s,
        "layer_over_gemm": f.layer_s / f.gemm_s,
        "layer_over_memory": f.layer_s / memory_s,
        "bytes_moved": bytes,
        "copy_gb_per_s": f.bandwidth / 1e9,
    })
}

/// Seconds per decode step replayed as a CUDA graph (many replays, one synchronisation; the
/// median of five such batches), from a state primed like [`time_layer`]'s.
#[cfg(feature = "cuda")]
fn graph_step<T: Element>(
    b: &engram_cuda::CudaBackend,
    dev: &DeviceEngramLayer<engram_cuda::CudaBackend, T>,
    run: &EngramRun<'_, T>,
) -> engram_core::Result<f64> {
    let mut s = primed_step(b, dev, run)?;
    let mut graph = b.capture_decode(dev, &s.ids, &s.hidden, &mut s.state, &mut s.out)?;
    graph.replay(&s.ids, &s.hidden, &mut s.state, &mut s.out)?;
    graph.check()?;
    let replays = 200;
    let mut result = Ok(());
    let batch = median_seconds(5, || {
        for _ in 0..replays {
            if result.is_ok() {
                result = graph.replay(&s.ids, &s.hidden, &mut s.state, &mut s.out);
            }
        }
        if result.is_ok() {
            result = graph.check();
        }
    });
    result.map(|()| batch / f64::from(replays))
}

/// Seconds per prefill replayed as a CUDA graph (back-to-back replays, one synchronisation;
/// the median of five such batches): the op's time without its wait for the device at the end.
#[cfg(feature = "cuda")]
fn graph_prefill<T: Element>(
    b: &engram_cuda::CudaBackend,
    dev: &DeviceEngramLayer<engram_cuda::CudaBackend, T>,
    run: &EngramRun<'_, T>,
) -> engram_core::Result<f64> {
    let inputs = run.inputs;
    let ids = b.upload(&inputs.ids)?;
    let cu = b.upload(&inputs.cu)?;
    let hidden = b.upload(&inputs.hidden)?;
    let mut out = b.zeros::<T>(inputs.hidden.len())?;
    let mut graph = b.capture_prefill(dev, &ids, &cu, &hidden, &mut out, None)?;
    graph.replay(&ids, &cu, &hidden, &mut out, None)?;
    graph.check()?;
    let replays = 20;
    let mut result = Ok(());
    let batch = median_seconds(5, || {
        for _ in 0..replays {
            if result.is_ok() {
                result = graph.replay(&ids, &cu, &hidden, &mut out, None);
            }
        }
        if result.is_ok() {
            result = graph.check();
        }
    });
    result.map(|()| batch / f64::from(replays))
}

/// The JSON line of a device backend: the layer, its own projection kernel (the GEMM floor on
/// the device) and its device-to-device copy bandwidth, measured one after the other.
fn device_line<B: EngramOps, T: Element>(
    backend: &B,
    device: String,
    dev: &DeviceEngramLayer<B, T>,
    run: &EngramRun<'_, T>,
    seq: usize,
    tokens: usize,
    bytes: usize,
) -> engram_core::Result<serde_json::Value> {
    let layer_s = time_layer(backend, dev, run)?;
    let gemm_s = time_projection(backend, dev, tokens, run)?;
    let bandwidth = device_copy_bandwidth(backend, run.runs)?;
    Ok(report(
        run,
        seq,
        tokens,
        bytes,
        Figures {
            backend: backend.name(),
            device,
            threads: 1,
            layer_s,
            gemm_s,
            gemm_via: "the backend's own linear kernel",
            bandwidth,
        },
    ))
}

fn bench_engram<T: Element>(
    backends: &[BackendName],
    batch: usize,
    seq: usize,
    decode: bool,
    runs: usize,
    dtype: &'static str,
) -> engram_core::Result<Vec<serde_json::Value>> {
    let config = EngramConfig::demo();
    let hasher = NgramHasher::new(&config, VOCAB, 2)?;
    let layer_id = config.layer_ids[0];
    eprintln!(
        "building the layer's tables ({} rows x {}) ...",
        hasher.layer(layer_id)?.total_rows(),
        config.d_head()
    );
    let layer = engram_model::demo::build_layer::<T>(&config, &hasher, layer_id, 0, &|_| {})
        .map_err(|e| engram_core::Error::Backend {
            backend: "cpu",
            message: e.to_string(),
        })?;
    let (m, d, d_mem) = (config.hc_mult, config.hidden_size, config.d_mem());
    let t = batch * seq;
    let inputs = EngramInputs {
        ids: synthetic::ids(t, VOCAB, 1),
        cu: (0..=batch).map(|b| (b * seq) as u32).collect(),
        hidden: synthetic::activations::<T>(t * m * d, 2.0, 2),
        step_ids: synthetic::ids(batch, VOCAB, 3),
        step_hidden: synthetic::activations::<T>(batch * m * d, 2.0, 4),
    };
    let run = EngramRun {
        config: &config,
        batch,
        decode,
        runs,
        dtype,
        inputs: &inputs,
    };
    let tokens = if decode { batch } else { t };
    let bytes = layer_bytes::<T>(&config, tokens, decode);
    let mut lines = Vec::new();
    // Devices first: the CPU backend then takes the host layer without copying it.
    if backends.contains(&BackendName::Cuda) {
        let cuda = cuda_backend()?;
        let device = cuda.capabilities().device;
        eprintln!("cuda on {device} ...");
        let dev = DeviceEngramLayer::upload(&cuda, &layer)?;
        #[allow(unused_mut)]
        let mut line = device_line(&cuda, device, &dev, &run, seq, tokens, bytes)?;
        #[cfg(feature = "cuda")]
        if decode && T::DTYPE != engram_core::DType::F32 {
            let step = graph_step(&cuda, &dev, &run)?;
            let memory_s = line["memory_floor_s"].as_f64().unwrap_or(f64::NAN);
            line["graph_step_s"] = step.into();
            line["graph_over_memory"] = (step / memory_s).into();
        } else if T::DTYPE != engram_core::DType::F32 {
            let prefill = graph_prefill(&cuda, &dev, &run)?;
            let gemm_s = line["gemm_floor_s"].as_f64().unwrap_or(f64::NAN);
            line["graph_prefill_s"] = prefill.into();
            line["graph_prefill_over_gemm"] = (prefill / gemm_s).into();
        }
        lines.push(line);
    }
    if backends.contains(&BackendName::Wgpu) {
        let wgpu = engram_wgpu::WgpuBackend::new()?;
        eprintln!("wgpu on {} ...", wgpu.adapter());
        let dev = DeviceEngramLayer::upload(&wgpu, &layer)?;
        lines.push(device_line(
            &wgpu,
            wgpu.adapter(),
            &dev,
            &run,
            seq,
            tokens,
            bytes,
        )?);
    }
    if backends.contains(&BackendName::Cpu) {
        let cpu = CpuBackend::new();
        let proj_weight = layer.weights.proj_weight.clone();
        let dev = DeviceEngramLayer::upload_owned(&cpu, layer)?;
        let layer_s = time_layer(&cpu, &dev, &run)?;
        // GEMM floor: the stacked projection alone, in f32 through the same crate.
        let x: Vec<f32> = synthetic::activations(tokens * d_mem, 1.0, 5);
        let w: Vec<f32> = proj_weight.iter().map(|v| v.to_f32()).collect();
        let mut y = vec![0.0f32; tokens * (m + 1) * d];
        let gemm_s = median_seconds(runs, || {
            let _ = linear(&x, &w, None, d_mem, &mut y, Parallelism::Rayon);
        });
        let bandwidth = copy_bandwidth(1 << 29, 5);
        lines.push(report(
            &run,
            seq,
            tokens,
            bytes,
            Figures {
                backend: "cpu",
                device: cpu.capabilities().device,
                threads: rayon::current_num_threads(),
                layer_s,
                gemm_s,
                gemm_via: "gemm crate, f32",
                bandwidth,
            },
        ));
    }
    Ok(lines)
}

fn projection_on<B: EngramOps, T: Element>(
    backend: &B,
    tokens: usize,
    runs: usize,
    dtype: &str,
) -> engram_core::Result<serde_json::Value> {
    let config = EngramConfig::demo();
    let (d_mem, outs) = (config.d_mem(), (config.hc_mult + 1) * config.hidden_size);
    let x = backend.upload(&synthetic::activations::<T>(tokens * d_mem, 1.0, 5))?;
    let w = backend.upload(&synthetic::activations::<T>(outs * d_mem, 0.05, 6))?;
    let mut y = backend.zeros::<T>(tokens * outs)?;
    let s = median_synced(backend, runs, || {
        backend.linear(&x, &w, None, d_mem, &mut y)
    })?;
    let flops = 2.0 * (tokens * d_mem * outs) as f64;
    Ok(serde_json::json!({
        "op": "stacked_projection",
        "backend": backend.name(),
        "device": backend.capabilities().device,
        "dtype": dtype,
        "tokens": tokens,
        "seconds": s,
        "gflop_per_s": flops / s / 1e9,
    }))
}

/// The stacked projection through faer instead of the `gemm` crate (same shapes, f32, rayon).
#[cfg(feature = "faer")]
fn projection_faer(tokens: usize, runs: usize) -> serde_json::Value {
    use faer::linalg::matmul::matmul;
    use faer::{Accum, MatMut, MatRef, Par};
    let config = EngramConfig::demo();
    let (d_mem, outs) = (config.d_mem(), (config.hc_mult + 1) * config.hidden_size);
    let x: Vec<f32> = synthetic::activations(tokens * d_mem, 1.0, 5);
    let w: Vec<f32> = synthetic::activations(outs * d_mem, 0.05, 6);
    let mut y = vec![0.0f32; tokens * outs];
    let s = median_seconds(runs, || {
        // y [tokens, outs] = x [tokens, d_mem] * w^T, w stored [outs, d_mem] row-major.
        let xm = MatRef::from_row_major_slice(&x, tokens, d_mem);
        let wt = MatRef::from_row_major_slice(&w, outs, d_mem).transpose();
        let ym = MatMut::from_row_major_slice_mut(&mut y, tokens, outs);
        matmul(ym, Accum::Replace, xm, wt, 1.0f32, Par::rayon(0));
    });
    let flops = 2.0 * (tokens * d_mem * outs) as f64;
    serde_json::json!({
        "op": "stacked_projection",
        "backend": "cpu (faer crate)",
        "dtype": "f32",
        "tokens": tokens,
        "seconds": s,
        "gflop_per_s": flops / s / 1e9,
    })
}

fn bench_projection<T: Element>(
    backends: &[BackendName],
    tokens: usize,
    runs: usize,
    dtype: &str,
) -> engram_core::Result<Vec<serde_json::Value>> {
    let mut lines = Vec::new();
    #[cfg(feature = "faer")]
    if backends.contains(&BackendName::Cpu) && dtype == "f32" {
        lines.push(projection_faer(tokens, runs));
    }
    for b in backends {
        lines.push(match b {
            BackendName::Cpu => projection_on::<_, T>(&CpuBackend::new(), tokens, runs, dtype)?,
            BackendName::Wgpu => {
                projection_on::<_, T>(&engram_wgpu::WgpuBackend::new()?, tokens, runs, dtype)?
            }
            BackendName::Cuda => projection_on::<_, T>(&cuda_backend()?, tokens, runs, dtype)?,
        });
    }
    Ok(lines)
}

fn route_on<B: MoeOps>(
    backend: &B,
    config: &MoeConfig,
    scores: &[f32],
    bias: &[f32],
    runs: usize,
) -> engram_core::Result<f64> {
    let tokens = scores.len() / config.n_routed_experts;
    let k = config.n_activated_experts;
    let (sd, bd) = (backend.upload(scores)?, backend.upload(bias)?);
    let mut w = backend.zeros::<f32>(tokens * k)?;
    let mut ix = backend.zeros::<u32>(tokens * k)?;
    median_synced(backend, runs, || {
        backend.moe_route(&sd, &bd, config, &mut w, &mut ix)
    })
}

fn bench_route(
    backends: &[BackendName],
    tokens: usize,
    runs: usize,
) -> engram_core::Result<Vec<serde_json::Value>> {
    let config = MoeConfig {
        dim: 7168,
        moe_inter_dim: 2048,
        n_routed_experts: 256,
        n_shared_experts: 1,
        n_activated_experts: 8,
        n_expert_groups: 8,
        n_limited_groups: 4,
        route_scale: 2.5,
        score_func: ScoreFunc::Sigmoid,
        bias: true,
    };
    let e = config.n_routed_experts;
    let scores: Vec<f32> = synthetic::activations::<f32>(tokens * e, 1.0, 7)
        .iter()
        .map(|v| 1.0 / (1.0 + (-v).exp()))
        .collect();
    let bias: Vec<f32> = synthetic::activations(e, 0.05, 8);
    let oracle_s = median_seconds(runs.min(3), || {
        let mut w = vec![0.0f32; tokens * 8];
        let mut ix = vec![0u32; tokens * 8];
        let _ = engram_core::reference::moe_route(&scores, &bias, &config, &mut w, &mut ix);
    });
    let bytes = (tokens * e + e + 2 * tokens * config.n_activated_experts) * 4;
    let memory_s = bytes as f64 / copy_bandwidth(1 << 29, 5);
    let mut lines = Vec::new();
    for b in backends {
        let (name, s) = match b {
            BackendName::Cpu => (
                "cpu",
                route_on(&CpuBackend::new(), &config, &scores, &bias, runs)?,
            ),
            BackendName::Cuda => (
                "cuda",
                route_on(&cuda_backend()?, &config, &scores, &bias, runs)?,
            ),
            BackendName::Wgpu => (
                "wgpu",
                route_on(
                    &engram_wgpu::WgpuBackend::new()?,
                    &config,
                    &scores,
                    &bias,
                    runs,
                )?,
            ),
        };
        lines.push(serde_json::json!({
            "op": "moe_route",
            "backend": name,
            "tokens": tokens,
            "experts": e,
            "groups": config.n_expert_groups,
            "top_k": config.n_activated_experts,
            "seconds": s,
            "oracle_s": oracle_s,
            "memory_floor_s": memory_s,
            "over_memory": s / memory_s,
            "oracle_over_this": oracle_s / s,
        }));
    }
    Ok(lines)
}

/// The gather of `rows` from `table` on `backend`: seconds, and the device's copy bandwidth.
fn gather_on<B: EngramOps, T: Element>(
    backend: &B,
    table: &[T],
    d_head: usize,
    layer: &engram_core::hash::LayerHash,
    rows: &[u32],
    runs: usize,
) -> engram_core::Result<(f64, f64)> {
    let table = backend.upload(table)?;
    let rows_d = backend.upload(rows)?;
    let mut out = backend.zeros::<T>(rows.len() * d_head)?;
    let s = median_synced(backend, runs, || {
        backend.gather_rows(&table, d_head, layer, &rows_d, &mut out)
    })?;
    Ok((s, device_copy_bandwidth(backend, runs)?))
}

fn bench_gather<T: Element>(
    backends: &[BackendName],
    tokens: usize,
    runs: usize,
    dtype: &str,
) -> engram_core::Result<Vec<serde_json::Value>> {
    let config = EngramConfig::demo();
    let hasher = NgramHasher::new(&config, VOCAB, 2)?;
    let layer = hasher.layer(config.layer_ids[0])?;
    let kernel = LayerHashKernel::new(layer, config.n_head_per_ngram);
    let ids = synthetic::ids(tokens, VOCAB, 9);
    let cu = [0, tokens as u32];
    let mut rows = vec![0u32; tokens * kernel.heads()];
    hash_rows(
        &kernel,
        None,
        2,
        VOCAB,
        &ids,
        &cu,
        &mut rows,
        Parallelism::Rayon,
    )?;
    let d_head = config.d_head();
    // Any non-zero contents will do (zeros can hide unwritten outputs and time differently).
    let table: Vec<T> = (0..layer.total_rows() as usize * d_head)
        .map(|i| T::from_f64(((i % 251) as f64 - 125.0) / 128.0))
        .collect();
    let bytes = 2 * rows.len() * d_head * std::mem::size_of::<T>() + rows.len() * 4;
    let mut lines = Vec::new();
    for b in backends {
        let (name, (s, bandwidth)) = match b {
            BackendName::Cpu => (
                "cpu",
                gather_on(&CpuBackend::new(), &table, d_head, layer, &rows, runs)?,
            ),
            BackendName::Wgpu => (
                "wgpu",
                gather_on(
                    &engram_wgpu::WgpuBackend::new()?,
                    &table,
                    d_head,
                    layer,
                    &rows,
                    runs,
                )?,
            ),
            BackendName::Cuda => (
                "cuda",
                gather_on(&cuda_backend()?, &table, d_head, layer, &rows, runs)?,
            ),
        };
        lines.push(serde_json::json!({
            "op": "gather_rows",
            "backend": name,
            "dtype": dtype,
            "tokens": tokens,
            "rows": rows.len(),
            "row_bytes": d_head * std::mem::size_of::<T>(),
            "seconds": s,
            "gb_per_s": bytes as f64 / s / 1e9,
            "copy_gb_per_s": bandwidth / 1e9,
            "fraction_of_copy": bytes as f64 / s / bandwidth,
        }));
    }
    Ok(lines)
}

fn bench_hash(tokens: usize, runs: usize) -> engram_core::Result<serde_json::Value> {
    let config = EngramConfig::demo();
    let hasher = NgramHasher::new(&config, VOCAB, 2)?;
    let layer = hasher.layer(config.layer_ids[0])?;
    let kernel = LayerHashKernel::new(layer, config.n_head_per_ngram);
    let raw_vocab = 128_815usize;
    let lookup: Vec<u32> = (0..raw_vocab)
        .map(|i| (i as u64 * 7919 % VOCAB) as u32)
        .collect();
    let ids = synthetic::ids(tokens, raw_vocab as u64, 9);
    let seqs = 1024.min(tokens.max(1));
    let cu: Vec<u32> = (0..=seqs).map(|s| (s * tokens / seqs) as u32).collect();
    let mut rows = vec![0u32; tokens * kernel.heads()];
    let mut result = Ok(());
    let one_core = median_seconds(runs, || {
        if result.is_ok() {
            result = hash_rows(
                &kernel,
                Some(&lookup),
                2,
                VOCAB,
                &ids,
                &cu,
                &mut rows,
                Parallelism::Sequential,
            );
        }
    });
    result?;
    let head_rows = (tokens * kernel.heads()) as f64;
    Ok(serde_json::json!({
        "op": "hash_with_compression",
        "tokens": tokens,
        "heads": kernel.heads(),
        "seconds_one_core": one_core,
        "head_rows_per_s_per_core": head_rows / one_core,
    }))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Engram {
            backend,
            batch,
            seq,
            dtype,
            decode,
            runs,
        } => match dtype {
            DTypeName::F32 => bench_engram::<f32>(&backend, batch, seq, decode, runs, "f32"),
            DTypeName::Bf16 => bench_engram::<bf16>(&backend, batch, seq, decode, runs, "bf16"),
            DTypeName::F16 => bench_engram::<f16>(&backend, batch, seq, decode, runs, "f16"),
        },
        Command::Projection {
            backend,
            tokens,
            dtype,
            runs,
        } => match dtype {
            DTypeName::F32 => bench_projection::<f32>(&backend, tokens, runs, "f32"),
            DTypeName::Bf16 => bench_projection::<bf16>(&backend, tokens, runs, "bf16"),
            DTypeName::F16 => bench_projection::<f16>(&backend, tokens, runs, "f16"),
        },
        Command::Route {
            backend,
            tokens,
            runs,
        } => bench_route(&backend, tokens, runs),
        Command::Gather {
            backend,
            tokens,
            dtype,
            runs,
        } => match dtype {
            DTypeName::F32 => bench_gather::<f32>(&backend, tokens, runs, "f32"),
            DTypeName::Bf16 => bench_gather::<bf16>(&backend, tokens, runs, "bf16"),
            DTypeName::F16 => bench_gather::<f16>(&backend, tokens, runs, "f16"),
        },
        Command::Hash { tokens, runs } => bench_hash(tokens, runs).map(|j| vec![j]),
    };
    match result {
        Ok(lines) => {
            for mut json in lines {
                let backend = json["backend"].as_str().unwrap_or_default().to_owned();
                if let Some(settings) = backend_settings(&backend, std::env::vars()) {
                    json["settings"] = serde_json::json!(settings);
                }
                println!("{json}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
