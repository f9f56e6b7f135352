//! `engram-conformance`: the suite's cases and the golden files, on a chosen backend.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use engram_conformance::cases::{all_cases, perf_cases, Case};
use engram_conformance::harness::{run_case, CaseResult, Status};
use engram_conformance::runner::{run_golden, GoldenReport, RunnerError};

/// The conformance suite of the Engram kernels.
#[derive(Parser)]
#[command(name = "engram-conformance", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum BackendName {
    /// The CPU backend.
    Cpu,
    /// The CUDA backend (needs this tool built with `--features cuda` and an NVIDIA GPU).
    Cuda,
    /// The wgpu backend (any Vulkan, Metal or DX12 adapter; Mesa's lavapipe without a GPU).
    Wgpu,
}

/// Runs `f` on the chosen backend, or returns why that backend cannot run here.
fn with_backend<R>(
    name: BackendName,
    f: impl FnOnce(&dyn Runner) -> R,
) -> Result<R, engram_core::Error> {
    match name {
        BackendName::Cpu => Ok(f(&engram_cpu::CpuBackend::new())),
        BackendName::Wgpu => Ok(f(&engram_wgpu::WgpuBackend::new()?)),
        #[cfg(feature = "cuda")]
        BackendName::Cuda => Ok(f(&engram_cuda::CudaBackend::new()?)),
        #[cfg(not(feature = "cuda"))]
        BackendName::Cuda => Err(engram_core::Error::NoDevice {
            backend: "cuda",
            reason: "this engram-conformance was built without its `cuda` feature".into(),
        }),
    }
}

/// What the CLI does with a backend, as an object so one code path serves every backend.
trait Runner {
    fn case(&self, case: &Case) -> CaseResult;
    fn golden(&self, file: &std::path::Path) -> Result<GoldenReport, RunnerError>;
}

impl<B: engram_core::EngramOps + engram_core::MoeOps> Runner for B {
    fn case(&self, case: &Case) -> CaseResult {
        run_case(self, case)
    }
    fn golden(&self, file: &std::path::Path) -> Result<GoldenReport, RunnerError> {
        run_golden(self, file)
    }
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum Mode {
    /// Every case over the shapes that find bugs: OK / FAIL / NOT_SUPPORTED / SKIPPED.
    Eval,
    /// Model-sized shapes: GB/s and GFLOP/s per case.
    Perf,
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum Format {
    /// Aligned columns.
    Table,
    /// Comma-separated values with a header.
    Csv,
}

#[derive(Subcommand)]
enum Command {
    /// Run the suite's cases on a backend.
    Run {
        /// The backend to run on.
        #[arg(long, value_enum, default_value = "cpu")]
        backend: BackendName,
        /// Only cases whose name (`family/in_dtype/shape`) matches this regular expression.
        #[arg(long, value_name = "REGEX")]
        filter: Option<String>,
        /// Eval (correctness over edge shapes) or perf (model-sized shapes, throughput).
        #[arg(long, value_enum, default_value = "eval")]
        mode: Mode,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Run a golden file (safetensors + sibling .json) and compare every output with the reference.
    Golden {
        /// The golden safetensors file(s).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The backend to run on.
        #[arg(long, value_enum, default_value = "cpu")]
        backend: BackendName,
    },
}

/// Why the tool stopped early.
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error("--filter is not a valid regular expression: {0}")]
    Filter(String),
    #[error(transparent)]
    Golden(#[from] RunnerError),
    #[error(transparent)]
    Backend(#[from] engram_core::Error),
    #[error("writing the output failed: {0}")]
    Output(#[from] std::io::Error),
}

fn run_golden_files(
    out: &mut impl Write,
    files: &[PathBuf],
    backend: BackendName,
) -> Result<bool, CliError> {
    let reports: Vec<GoldenReport> = with_backend(backend, |b| {
        files.iter().map(|f| b.golden(f)).collect::<Result<_, _>>()
    })??;
    let mut all = true;
    for r in &reports {
        writeln!(out, "{r}")?;
        all &= r.passed();
    }
    Ok(all)
}

fn rate(amount: u64, seconds: Option<f64>) -> f64 {
    match seconds {
        Some(s) if s > 0.0 => amount as f64 / s / 1e9,
        _ => 0.0,
    }
}

fn print_result(
    out: &mut dyn Write,
    r: &CaseResult,
    mode: Mode,
    format: Format,
) -> std::io::Result<()> {
    let gbs = rate(r.bytes, r.seconds);
    let gflops = rate(r.flops, r.seconds);
    let ms = r.seconds.map_or(0.0, |s| s * 1e3);
    match (format, mode) {
        (Format::Csv, _) => writeln!(
            out,
            "{},{},{:.6},{:.3},{:.3},\"{}\"",
            r.name,
            r.status,
            ms,
            gbs,
            gflops,
            r.detail.replace('"', "'")
        ),
        (Format::Table, Mode::Perf) => writeln!(
            out,
            "{:<14} {:<52} {:>10.3} ms {:>9.2} GB/s {:>9.2} GFLOP/s",
            r.status.to_string(),
            r.name,
            ms,
            gbs,
            gflops
        ),
        (Format::Table, Mode::Eval) => {
            if r.status == Status::Ok {
                writeln!(out, "{:<14} {}", r.status.to_string(), r.name)
            } else {
                writeln!(
                    out,
                    "{:<14} {}  ({})",
                    r.status.to_string(),
                    r.name,
                    r.detail
                )
            }
        }
    }
}

fn run_cases(
    out: &mut dyn Write,
    backend: BackendName,
    filter: Option<&str>,
    mode: Mode,
    format: Format,
) -> Result<bool, CliError> {
    let re = filter.map(regex::Regex::new).transpose().map_err(|e| {
        CliError::Filter(
            e.to_string()
                .lines()
                .last()
                .unwrap_or_default()
                .trim()
                .to_owned(),
        )
    })?;
    let cases: Vec<Case> = match mode {
        Mode::Eval => all_cases(),
        Mode::Perf => perf_cases(),
    }
    .into_iter()
    .filter(|c| re.as_ref().is_none_or(|re| re.is_match(&c.name)))
    .collect();
    if format == Format::Csv {
        writeln!(out, "case,status,ms,gb_per_s,gflop_per_s,detail")?;
    }
    let mut counts = [0usize; 4];
    let mut report = |out: &mut dyn Write, result: &CaseResult| -> std::io::Result<()> {
        counts[match result.status {
            Status::Ok => 0,
            Status::Fail => 1,
            Status::NotSupported => 2,
            Status::Skipped => 3,
        }] += 1;
        print_result(out, result, mode, format)?;
        out.flush()
    };
    let ran = with_backend(backend, |b| -> std::io::Result<()> {
        for case in &cases {
            report(out, &b.case(case))?;
        }
        Ok(())
    });
    match ran {
        Ok(written) => written?,
        // No backend here: every case is SKIPPED, with the reason.
        Err(e) => {
            for case in &cases {
                report(out, &CaseResult::skipped(&case.name, &e.to_string()))?;
            }
        }
    }
    if format == Format::Table {
        writeln!(
            out,
            "{} cases: {} OK, {} FAIL, {} NOT_SUPPORTED, {} SKIPPED",
            cases.len(),
            counts[0],
            counts[1],
            counts[2],
            counts[3]
        )?;
    }
    Ok(counts[1] == 0)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let outcome = match &cli.command {
        Command::Run {
            backend,
            filter,
            mode,
            format,
        } => run_cases(&mut out, *backend, filter.as_deref(), *mode, *format),
        Command::Golden { files, backend } => run_golden_files(&mut out, files, *backend),
    };
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        // A reader that stopped early (`| head`) is not an error.
        Err(CliError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
