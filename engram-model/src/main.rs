//! The `engram` command-line tool: inspect the compressed vocabulary and the memory rows a text
//! hits.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use engram_core::{
    bf16, f16, CompressedVocab, Element, EngramConfig, EngramLayer, EngramOps, NgramHasher,
};
use engram_cpu::CpuBackend;
use engram_model::demo::{self, DemoRun};
use engram_model::io::{read_config, write_vocab};
use engram_model::{EngramTokenizer, ModelError};

/// Engram kernels: conditional memory by hashed N-gram lookup.
#[derive(Parser)]
#[command(name = "engram", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Element type of the demo's tables, weights and activations.
#[derive(Clone, Copy, ValueEnum)]
enum DemoDType {
    F32,
    Bf16,
    F16,
}

/// When to colour the terminal heatmap.
#[derive(Clone, Copy, ValueEnum)]
enum ColourChoice {
    /// When standard output is a terminal and NO_COLOR is unset.
    Auto,
    Always,
    Never,
}

#[derive(Subcommand)]
enum Command {
    /// Run one Engram layer (reference demo configuration, seeded random weights) over a sentence
    /// on the CPU backend (or `--backend wgpu`) and show each branch's gate per token.
    Demo {
        /// The sentence.
        #[arg(
            long,
            default_value = "Only Alexander the Great could tame the horse Bucephalus."
        )]
        text: String,
        /// Also write the heatmap as an HTML page here.
        #[arg(long, value_name = "FILE.html")]
        html: Option<PathBuf>,
        /// Engram config (JSON) [default: the reference demo's: hidden 1024, M = 4, N = 3,
        /// 8 heads x 64 per order, tables of about 646k rows per head]
        #[arg(long, value_name = "FILE.json")]
        config: Option<PathBuf>,
        /// Which Engram layer [default: the config's first]
        #[arg(long, value_name = "L")]
        layer: Option<u32>,
        /// Seed of the random weights and embeddings.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Element type of tables, weights and activations.
        #[arg(long, value_enum, default_value = "f32")]
        dtype: DemoDType,
        /// Forwards to time (the median is reported).
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Colour the heatmap.
        #[arg(long, value_enum, default_value = "auto")]
        color: ColourChoice,
        /// A HuggingFace tokenizer.json [default: the built-in DeepSeek-V3 tokenizer]
        #[arg(long)]
        tokenizer: Option<PathBuf>,
        /// The backend to run the layer on (wgpu: any Vulkan, Metal or DX12 adapter; see
        /// ENGRAM_WGPU_ADAPTER).
        #[arg(long, value_enum, default_value = "cpu")]
        backend: DemoBackend,
    },
    /// Build the compressed vocabulary of a tokenizer and report how much it merges.
    Vocab {
        /// A HuggingFace tokenizer.json [default: the built-in DeepSeek-V3 tokenizer]
        #[arg(long)]
        tokenizer: Option<PathBuf>,
        /// Write the lookup table (tensor `lookup`, int64, one entry per raw id) here.
        #[arg(long, value_name = "FILE.safetensors")]
        out: Option<PathBuf>,
        /// How many of the largest merge groups to list.
        #[arg(long, default_value_t = 10)]
        top: usize,
    },
    /// Show, per token of a text, its canonical id and the table row every hash head reads.
    Hash {
        /// The text to tokenize and hash.
        #[arg(long)]
        text: String,
        /// Engram config (JSON, flat or nested as in the golden files) [default: the reference
        /// demo's: N = 3, 8 heads per order, layers 1 and 15]
        #[arg(long, value_name = "FILE.json")]
        config: Option<PathBuf>,
        /// Only this Engram layer [default: every layer of the config]
        #[arg(long, value_name = "L")]
        layer: Option<u32>,
        /// A HuggingFace tokenizer.json [default: the built-in DeepSeek-V3 tokenizer]
        #[arg(long)]
        tokenizer: Option<PathBuf>,
    },
}

/// Why the tool stopped.
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Core(#[from] engram_core::Error),
    #[error("pad_id {pad_id} of the config is not an id of the tokenizer ({vocab} ids)")]
    PadOutOfVocab { pad_id: u32, vocab: usize },
    #[error("writing the output failed: {0}")]
    Output(#[from] std::io::Error),
}

fn load_tokenizer(path: Option<&PathBuf>) -> Result<EngramTokenizer, ModelError> {
    match path {
        Some(p) => EngramTokenizer::from_file(p),
        None => EngramTokenizer::deepseek_v3(),
    }
}

fn tokenizer_name(path: Option<&PathBuf>) -> String {
    path.map_or_else(
        || "built-in DeepSeek-V3 tokenizer.json".to_owned(),
        |p| p.display().to_string(),
    )
}

fn run_vocab(
    out: &mut impl Write,
    tokenizer_path: Option<&PathBuf>,
    out_path: Option<&PathBuf>,
    top: usize,
) -> Result<(), CliError> {
    let tokenizer = load_tokenizer(tokenizer_path)?;
    let vocab = tokenizer.compressed_vocab()?;
    let raw = vocab.num_raw();
    let canonical = vocab.num_canonical() as usize;
    let reduction = if raw == 0 {
        0.0
    } else {
        100.0 * (raw - canonical) as f64 / raw as f64
    };
    writeln!(out, "tokenizer:  {}", tokenizer_name(tokenizer_path))?;
    writeln!(out, "raw ids:    {raw}")?;
    writeln!(out, "canonical:  {canonical}")?;
    writeln!(out, "reduction:  {reduction:.2} %")?;
    let groups = vocab.merge_groups();
    writeln!(
        out,
        "merge groups: {} canonical ids stand for more than one raw id; the largest:",
        groups.len()
    )?;
    writeln!(
        out,
        "  {:>5}  {:>9}  {:<16}  members (raw id: decoded text)",
        "size", "canonical", "key"
    )?;
    for (canonical_id, members) in groups.iter().take(top) {
        let key = vocab
            .keys()
            .get(*canonical_id as usize)
            .map_or("", String::as_str);
        let shown: Vec<String> = members
            .iter()
            .take(6)
            .map(|&m| Ok(format!("{m}: {:?}", tokenizer.decode_one(m)?)))
            .collect::<Result<_, ModelError>>()?;
        let more = if members.len() > shown.len() {
            ", ..."
        } else {
            ""
        };
        writeln!(
            out,
            "  {:>5}  {:>9}  {:<16}  {}{more}",
            members.len(),
            canonical_id,
            format!("{key:?}"),
            shown.join(", ")
        )?;
    }
    if let Some(path) = out_path {
        write_vocab(&vocab, path)?;
        writeln!(
            out,
            "wrote {} (tensor `lookup`, int64 [{raw}])",
            path.display()
        )?;
    }
    Ok(())
}

fn run_hash(
    out: &mut impl Write,
    text: &str,
    config_path: Option<&PathBuf>,
    layer: Option<u32>,
    tokenizer_path: Option<&PathBuf>,
) -> Result<(), CliError> {
    let config = match config_path {
        Some(p) => read_config(p)?,
        None => EngramConfig::demo(),
    };
    let layers: Vec<u32> = match layer {
        Some(l) if config.layer_ids.contains(&l) => vec![l],
        Some(l) => return Err(engram_core::Error::UnknownLayer { layer_id: l }.into()),
        None => config.layer_ids.clone(),
    };
    let tokenizer = load_tokenizer(tokenizer_path)?;
    let vocab: CompressedVocab = tokenizer.compressed_vocab()?;
    let pad = vocab
        .canonical(config.pad_id)
        .map_err(|_| CliError::PadOutOfVocab {
            pad_id: config.pad_id,
            vocab: vocab.num_raw(),
        })?;
    let hasher = NgramHasher::new(&config, u64::from(vocab.num_canonical()), pad)?;
    let raw = tokenizer.encode(text)?;
    let mut canonical = vec![0; raw.len()];
    vocab.compress(&raw, &mut canonical)?;
    let cu_seqlens = [0, raw.len() as u32];
    let heads = hasher.heads_per_position();
    let k = config.n_head_per_ngram;

    writeln!(out, "text:      {text:?}")?;
    writeln!(
        out,
        "tokenizer: {} ({} ids -> {} canonical)",
        tokenizer_name(tokenizer_path),
        vocab.num_raw(),
        vocab.num_canonical()
    )?;
    writeln!(
        out,
        "config:    N = {}, {} heads per order, {} columns per head, pad id {} -> canonical {}",
        config.max_ngram_size,
        k,
        config.d_head(),
        config.pad_id,
        pad
    )?;
    for layer_id in layers {
        let params = hasher.layer(layer_id)?;
        let mut rows = vec![0; raw.len() * heads];
        hasher.hash_layer(layer_id, &canonical, &cu_seqlens, &mut rows)?;
        writeln!(out)?;
        writeln!(
            out,
            "layer {layer_id}: row read by each head (within that head's table); multipliers {:?}",
            params.multipliers
        )?;
        let head_names: Vec<String> = (0..heads)
            .map(|h| format!("{}g.h{}", h / k + 2, h % k))
            .collect();
        write!(
            out,
            "{:>4} {:>7} {:>7}  {:<14}",
            "pos", "raw", "canon", "token"
        )?;
        for name in &head_names {
            write!(out, " {name:>8}")?;
        }
        writeln!(out)?;
        write!(out, "{:>4} {:>7} {:>7}  {:<14}", "", "", "", "table rows:")?;
        for size in &params.table_sizes {
            write!(out, " {size:>8}")?;
        }
        writeln!(out)?;
        for (t, (&r, &c)) in raw.iter().zip(&canonical).enumerate() {
            let token = format!("{:?}", tokenizer.decode_one(r)?);
            write!(out, "{t:>4} {r:>7} {c:>7}  {token:<14}")?;
            for row in &rows[t * heads..(t + 1) * heads] {
                write!(out, " {row:>8}")?;
            }
            writeln!(out)?;
        }
    }
    Ok(())
}

/// Everything `engram demo` was asked for.
/// The backends the demo runs on.
#[derive(Clone, Copy, ValueEnum)]
enum DemoBackend {
    /// The CPU backend.
    Cpu,
    /// The wgpu backend.
    Wgpu,
}

struct DemoArgs<'a> {
    backend: DemoBackend,
    text: &'a str,
    html: Option<&'a PathBuf>,
    config: Option<&'a PathBuf>,
    layer: Option<u32>,
    seed: u64,
    runs: usize,
    colour: bool,
    tokenizer: Option<&'a PathBuf>,
}

fn run_demo<T: Element>(
    out: &mut impl Write,
    args: &DemoArgs<'_>,
    dtype_name: &str,
) -> Result<(), CliError> {
    let config = match args.config {
        Some(p) => read_config(p)?,
        None => EngramConfig::demo(),
    };
    let layer_id = match args.layer {
        Some(l) if config.layer_ids.contains(&l) => l,
        Some(l) => return Err(engram_core::Error::UnknownLayer { layer_id: l }.into()),
        None => config.layer_ids[0],
    };
    let tokenizer = load_tokenizer(args.tokenizer)?;
    let vocab = tokenizer.compressed_vocab()?;
    let pad = vocab
        .canonical(config.pad_id)
        .map_err(|_| CliError::PadOutOfVocab {
            pad_id: config.pad_id,
            vocab: vocab.num_raw(),
        })?;
    let hasher = NgramHasher::new(&config, u64::from(vocab.num_canonical()), pad)?;
    let rows = hasher.layer(layer_id)?.total_rows();
    let table_bytes = rows * config.d_head() as u64 * std::mem::size_of::<T>() as u64;
    writeln!(
        out,
        "config:  hidden {}, M = {}, N = {}, {} heads x {} columns per order, layer {layer_id} of {:?}, {dtype_name}{}",
        config.hidden_size,
        config.hc_mult,
        config.max_ngram_size,
        config.n_head_per_ngram,
        config.d_head(),
        config.layer_ids,
        if config.short_conv { "" } else { ", no short conv" }
    )?;
    writeln!(
        out,
        "tables:  {} heads, {rows} rows x {} columns = {:.2} GB (seeded random, seed {})",
        config.num_heads(),
        config.d_head(),
        table_bytes as f64 / 1e9,
        args.seed
    )?;
    out.flush()?;
    let bar = indicatif::ProgressBar::new(rows).with_style(
        indicatif::ProgressStyle::with_template(
            "building tables {bar:40} {percent:>3}% {bytes_per_sec} {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let row_bytes = config.d_head() as u64 * std::mem::size_of::<T>() as u64;
    bar.set_length(rows * row_bytes);
    let layer = demo::build_layer::<T>(&config, &hasher, layer_id, args.seed, &|n| {
        bar.inc(n * row_bytes)
    })?;
    bar.finish_and_clear();

    let raw = tokenizer.encode(args.text)?;
    let mut canonical = vec![0; raw.len()];
    vocab.compress(&raw, &mut canonical)?;
    let hidden = demo::token_hidden::<T>(&raw, config.hc_mult, config.hidden_size, args.seed);
    /// Moves the layer to `backend` and runs it: the gates, the median time, and where it ran.
    fn on<B: EngramOps, T: Element>(
        backend: &B,
        layer: EngramLayer<T>,
        canonical: &[u32],
        hidden: &[T],
        runs: usize,
    ) -> Result<(Vec<f64>, f64, String), CliError> {
        let device = demo::to_device(backend, layer)?;
        let (gates, median_s) = demo::run_layer(backend, &device, canonical, hidden, runs)?;
        let caps = backend.capabilities();
        Ok((
            gates,
            median_s,
            format!("{} backend ({})", caps.backend, caps.device),
        ))
    }
    let (gates, median_s, place) = match args.backend {
        DemoBackend::Cpu => on(&CpuBackend::new(), layer, &canonical, &hidden, args.runs)?,
        DemoBackend::Wgpu => on(
            &engram_wgpu::WgpuBackend::new()?,
            layer,
            &canonical,
            &hidden,
            args.runs,
        )?,
    };
    let tokens = raw
        .iter()
        .zip(&canonical)
        .map(|(&r, &c)| Ok((r, c, tokenizer.decode_one(r)?)))
        .collect::<Result<Vec<_>, ModelError>>()?;
    let run = DemoRun {
        tokens,
        gates,
        branches: config.hc_mult,
        median_s,
        runs: args.runs.max(1),
    };
    writeln!(out, "text:    {:?}", args.text)?;
    writeln!(
        out,
        "gates:   alpha of each residual branch m per token (0: memory ignored, 1: admitted)"
    )?;
    write!(out, "{}", demo::render_terminal(&run, args.colour))?;
    writeln!(
        out,
        "speed:   {} tokens in {:.3} ms (median of {} forwards) = {:.1} tokens/s on the {place}",
        run.tokens.len(),
        run.median_s * 1e3,
        run.runs,
        run.tokens_per_s(),
    )?;
    if let Some(path) = args.html {
        let page = demo::render_html(&run, &format!("Engram gates: {}", args.text));
        std::fs::write(path, page).map_err(|source| ModelError::Io {
            path: path.clone(),
            source,
        })?;
        writeln!(out, "html:    wrote {}", path.display())?;
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let result = match &cli.command {
        Command::Vocab {
            tokenizer,
            out: out_path,
            top,
        } => run_vocab(&mut out, tokenizer.as_ref(), out_path.as_ref(), *top),
        Command::Hash {
            text,
            config,
            layer,
            tokenizer,
        } => run_hash(&mut out, text, config.as_ref(), *layer, tokenizer.as_ref()),
        Command::Demo {
            text,
            html,
            config,
            layer,
            seed,
            dtype,
            runs,
            color,
            tokenizer,
            backend,
        } => {
            let colour = match color {
                ColourChoice::Always => true,
                ColourChoice::Never => false,
                ColourChoice::Auto => {
                    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
                }
            };
            let args = DemoArgs {
                backend: *backend,
                text,
                html: html.as_ref(),
                config: config.as_ref(),
                layer: *layer,
                seed: *seed,
                runs: *runs,
                colour,
                tokenizer: tokenizer.as_ref(),
            };
            match dtype {
                DemoDType::F32 => run_demo::<f32>(&mut out, &args, "f32"),
                DemoDType::Bf16 => run_demo::<bf16>(&mut out, &args, "bf16"),
                DemoDType::F16 => run_demo::<f16>(&mut out, &args, "f16"),
            }
        }
    };
    let result = result.and_then(|()| out.flush().map_err(CliError::from));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // A reader that stopped early (`| head`) is not an error.
        Err(CliError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
