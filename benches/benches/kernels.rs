//! Criterion benches of the CPU kernels at the reference demo's widths (hidden 1024, M = 4,
//! N = 3, 8 heads x 64 per order), 512 tokens: `cargo bench -p engram-benches`. Throughput is
//! reported in elements (head-rows for the hash and the gather, multiply-adds for the GEMM,
//! values for the element-wise kernels); ratios to the floors come from `engram-bench`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use engram_core::bf16;
use engram_core::reference::CONV_NORM_EPS;
use engram_core::{synthetic, EngramConfig, NgramHasher};
use engram_cpu::kernels::hash::{hash_rows, LayerHashKernel};
use engram_cpu::kernels::{fused, linear, linear16, norm_gate, Parallelism};

const TOKENS: usize = 512;
const VOCAB: u64 = 98_627;

fn kernels(c: &mut Criterion) {
    let mut config = EngramConfig::demo();
    config.engram_vocab_size = vec![65_536, 65_536];
    let hasher = NgramHasher::new(&config, VOCAB, 2).expect("demo config is valid");
    let layer_id = config.layer_ids[0];
    let hash = hasher.layer(layer_id).expect("layer exists").clone();
    let (m, d, d_mem, heads) = (
        config.hc_mult,
        config.hidden_size,
        config.d_mem(),
        config.num_heads(),
    );
    let ids = synthetic::ids(TOKENS, VOCAB, 1);
    let cu = [0u32, TOKENS as u32];
    let par = Parallelism::Rayon;
    let mut g = c.benchmark_group("cpu");
    g.sample_size(10);

    let kernel = LayerHashKernel::new(&hash, config.n_head_per_ngram);
    let mut rows = vec![0u32; TOKENS * heads];
    g.throughput(Throughput::Elements((TOKENS * heads) as u64));
    g.bench_function("hash", |b| {
        b.iter(|| hash_rows(&kernel, None, 2, VOCAB, &ids, &cu, &mut rows, par).expect("valid"))
    });

    let table: Vec<f32> =
        synthetic::activations(hash.total_rows() as usize * config.d_head(), 1.0, 2);
    let mut e = vec![0.0f32; TOKENS * d_mem];
    g.bench_function("gather", |b| {
        b.iter(|| {
            norm_gate::gather_rows(&table, config.d_head(), &hash, &rows, &mut e, par)
                .expect("valid")
        })
    });

    let w: Vec<f32> = synthetic::activations((m + 1) * d * d_mem, 0.03, 3);
    let bias: Vec<f32> = synthetic::activations((m + 1) * d, 0.03, 4);
    let mut proj = vec![0.0f32; TOKENS * (m + 1) * d];
    g.throughput(Throughput::Elements((TOKENS * (m + 1) * d * d_mem) as u64));
    g.bench_function("stacked_projection", |b| {
        b.iter(|| linear::linear(&e, &w, Some(&bias), d_mem, &mut proj, par).expect("valid"))
    });
    let half = |v: &[f32]| v.iter().map(|&x| bf16::from_f32(x)).collect::<Vec<_>>();
    let (e16, w16, bias16) = (half(&e), half(&w), half(&bias));
    let mut proj16 = vec![bf16::ZERO; proj.len()];
    g.bench_function("stacked_projection_bf16", |b| {
        b.iter(|| {
            linear16::linear16(&e16, &w16, Some(&bias16), d_mem, &mut proj16, par).expect("valid")
        })
    });

    let hidden: Vec<f32> = synthetic::activations(TOKENS * m * d, 2.0, 5);
    let norms: Vec<f32> = synthetic::activations(m * d, 1.0, 6);
    let (mut value, mut alpha) = (vec![0.0f32; TOKENS * m * d], vec![0.0f32; TOKENS * m]);
    g.throughput(Throughput::Elements((TOKENS * m * d) as u64));
    g.bench_function("gate", |b| {
        b.iter(|| {
            norm_gate::gate(
                &proj, &hidden, &norms, &norms, m, d, &mut value, &mut alpha, par,
            )
            .expect("valid")
        })
    });

    let mut normed = vec![0.0f32; TOKENS * m * d];
    g.bench_function("rms_norm", |b| {
        b.iter(|| {
            norm_gate::rms_norm(&value, &norms, d, CONV_NORM_EPS, &mut normed, par).expect("valid")
        })
    });

    let conv_w: Vec<f32> = synthetic::activations(m * d * config.kernel_size, 0.5, 7);
    let mut out = vec![0.0f32; TOKENS * m * d];
    g.bench_function("short_conv", |b| {
        b.iter(|| {
            norm_gate::short_conv(
                &normed,
                &value,
                &conv_w,
                m * d,
                config.kernel_size,
                config.max_ngram_size,
                &cu,
                &mut out,
                par,
            )
            .expect("valid")
        })
    });

    // The prefill's whole tail after the projection, in one pass (f32 and bf16).
    let (mut tail_out, mut tail_alpha) = (vec![0.0f32; TOKENS * m * d], vec![0.0f32; TOKENS * m]);
    g.bench_function("gate_conv", |b| {
        b.iter(|| {
            fused::gate_conv(
                &proj,
                &bias,
                &hidden,
                &norms,
                &norms,
                &norms,
                &conv_w,
                m,
                d,
                config.kernel_size,
                config.max_ngram_size,
                &cu,
                &mut tail_out,
                &mut tail_alpha,
                None,
                par,
            )
            .expect("valid")
        })
    });
    let (p16, h16, n16, c16) = (half(&proj), half(&hidden), half(&norms), half(&conv_w));
    let (mut out16, mut alpha16) = (
        vec![bf16::ZERO; TOKENS * m * d],
        vec![bf16::ZERO; TOKENS * m],
    );
    g.bench_function("gate_conv_bf16", |b| {
        b.iter(|| {
            fused::gate_conv(
                &p16,
                &bias16,
                &h16,
                &n16,
                &n16,
                &n16,
                &c16,
                m,
                d,
                config.kernel_size,
                config.max_ngram_size,
                &cu,
                &mut out16,
                &mut alpha16,
                None,
                par,
            )
            .expect("valid")
        })
    });
    g.finish();
}

criterion_group!(benches, kernels);
criterion_main!(benches);
