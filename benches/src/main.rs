//! `engram-bench`: the Engram layer and the hash on a backend, each beside its floors, one JSON
//! line per measurement.

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use engram_benches::{copy_bandwidth, median_seconds};
use engram_core::{
    bf16, synthetic, Backend, DeviceEngramLayer, DeviceEngramState, Element, EngramConfig,
    EngramOps, NgramHasher,
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

#[derive(Clone, Copy, ValueEnum)]
enum BackendName {
    /// The CPU backend.
    Cpu,
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum DTypeName {
    F32,
    Bf16,
}

#[derive(Subcommand)]
enum Command {
    /// One Engram layer of the reference demo's configuration (hidden 1024, M = 4, N = 3,
    /// 8 heads x 64 per order, 646400-row tables per order): prefill of a batch, or one decode step.
    Engram {
        #[arg(long, value_enum, default_value = "cpu")]
        backend: BackendName,
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
    /// The N-gram hash alone (with id compression), in head-rows per second per core.
    Hash {
        /// Tokens hashed per run.
        #[arg(long, default_value_t = 1 << 20)]
        tokens: usize,
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
}

fn bench_engram<T: Element>(
    batch: usize,
    seq: usize,
    decode: bool,
    runs: usize,
    dtype: &str,
) -> engram_core::Result<serde_json::Value> {
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
    let cpu = CpuBackend::new();
    let (m, d, d_mem) = (config.hc_mult, config.hidden_size, config.d_mem());
    let proj_weight = layer.weights.proj_weight.clone();
    let dev = DeviceEngramLayer::upload_owned(&cpu, layer)?;
    let size = std::mem::size_of::<T>();
    let heads = config.num_heads();
    let weight_bytes = (m + 1) * d * d_mem * size;
    let (tokens, layer_s) = if decode {
        let ids = cpu.upload(&synthetic::ids(batch * seq, VOCAB, 1))?;
        let cu = cpu.upload(&(0..=batch).map(|b| (b * seq) as u32).collect::<Vec<_>>())?;
        let hidden = cpu.upload(&synthetic::activations::<T>(batch * seq * m * d, 2.0, 2))?;
        let mut out = cpu.zeros::<T>(batch * seq * m * d)?;
        let mut state = DeviceEngramState::new(&cpu, &dev, batch)?;
        cpu.engram_prefill(&dev, &ids, &cu, &hidden, &mut out, None, Some(&mut state))?;
        let step_ids = cpu.upload(&synthetic::ids(batch, VOCAB, 3))?;
        let step_hidden = cpu.upload(&synthetic::activations::<T>(batch * m * d, 2.0, 4))?;
        let mut step_out = cpu.zeros::<T>(batch * m * d)?;
        let mut result = Ok(());
        let s = median_seconds(runs, || {
            if result.is_ok() {
                result = cpu.engram_decode(
                    &dev,
                    &step_ids,
                    &step_hidden,
                    &mut state,
                    &mut step_out,
                    None,
                );
            }
        });
        result?;
        (batch, s)
    } else {
        let t = batch * seq;
        let ids = cpu.upload(&synthetic::ids(t, VOCAB, 1))?;
        let cu = cpu.upload(&(0..=batch).map(|b| (b * seq) as u32).collect::<Vec<_>>())?;
        let hidden = cpu.upload(&synthetic::activations::<T>(t * m * d, 2.0, 2))?;
        let mut out = cpu.zeros::<T>(t * m * d)?;
        let mut result = Ok(());
        let s = median_seconds(runs, || {
            if result.is_ok() {
                result = cpu.engram_prefill(&dev, &ids, &cu, &hidden, &mut out, None, None);
            }
        });
        result?;
        (t, s)
    };
    // Floors, same run. GEMM: the stacked projection alone, in f32 through the same crate.
    let x: Vec<f32> = synthetic::activations(tokens * d_mem, 1.0, 5);
    let w: Vec<f32> = proj_weight.iter().map(|v| v.to_f32()).collect();
    let mut y = vec![0.0f32; tokens * (m + 1) * d];
    let gemm_s = median_seconds(runs, || {
        let _ = linear(&x, &w, None, d_mem, &mut y, Parallelism::Rayon);
    });
    // Memory: weights, gathered rows, hidden in and out (and the decode state read and written).
    let state_bytes = if decode {
        2 * tokens * 12 * m * d * size
    } else {
        0
    };
    let bytes = weight_bytes
        + tokens * heads * config.d_head() * size
        + 2 * tokens * m * d * size
        + state_bytes;
    let bandwidth = copy_bandwidth(1 << 29, 5);
    let memory_s = bytes as f64 / bandwidth;
    Ok(serde_json::json!({
        "op": if decode { "engram_decode" } else { "engram_prefill" },
        "backend": "cpu",
        "dtype": dtype,
        "batch": batch,
        "seq": seq,
        "tokens": tokens,
        "threads": rayon::current_num_threads(),
        "layer_s": layer_s,
        "tokens_per_s": tokens as f64 / layer_s,
        "gemm_floor_s": gemm_s,
        "memory_floor_s": memory_s,
        "layer_over_gemm": layer_s / gemm_s,
        "layer_over_memory": layer_s / memory_s,
        "bytes_moved": bytes,
        "copy_gb_per_s": bandwidth / 1e9,
    }))
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
            backend: BackendName::Cpu,
            batch,
            seq,
            dtype,
            decode,
            runs,
        } => match dtype {
            DTypeName::F32 => bench_engram::<f32>(batch, seq, decode, runs, "f32"),
            DTypeName::Bf16 => bench_engram::<bf16>(batch, seq, decode, runs, "bf16"),
        },
        Command::Hash { tokens, runs } => bench_hash(tokens, runs),
    };
    match result {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
