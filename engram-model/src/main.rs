//! The `engram` command-line tool: inspect the compressed vocabulary and the memory rows a text
//! hits.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use engram_core::{CompressedVocab, EngramConfig, NgramHasher};
use engram_model::io::{read_config, write_vocab};
use engram_model::{EngramTokenizer, ModelError};

/// Engram kernels: conditional memory by hashed N-gram lookup.
#[derive(Parser)]
#[command(name = "engram", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
