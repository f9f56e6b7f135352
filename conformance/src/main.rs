//! `engram-conformance`: run golden files (and, later, the whole case suite) on a backend.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
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
}

#[derive(Subcommand)]
enum Command {
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

fn run(files: &[PathBuf], backend: BackendName) -> Result<Vec<GoldenReport>, RunnerError> {
    files
        .iter()
        .map(|f| match backend {
            BackendName::Cpu => run_golden(&engram_cpu::CpuBackend::new(), f),
        })
        .collect()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Golden { files, backend } => match run(&files, backend) {
            Ok(reports) => {
                let mut all = true;
                for r in &reports {
                    println!("{r}");
                    all &= r.passed();
                }
                if all {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
    }
}
