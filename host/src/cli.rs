//! The `llq-host` command line: the subcommand enum and dispatch. Each subcommand's
//! arguments, run and output live in its own module under [`crate::cmd`]; errors are printed
//! with their context chain and give exit status 1 (2 for usage errors).

use crate::cmd;
use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "llq-host",
    version,
    about = "llq: what does this quantization method do to this model's accuracy, speed, memory and size?"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Inspect quantization plugins.
    Plugins {
        #[command(subcommand)]
        command: cmd::plugins::Args,
    },
    Quantize(cmd::quantize::Args),
    QuantBench(cmd::quant_bench::Args),
    TaskBench(cmd::task_bench::Args),
    Run(cmd::run::Args),
    Convert(cmd::convert::Args),
    Compare(cmd::compare::Args),
    Kernels(cmd::kernels::Args),
    Bench(cmd::bench::Args),
    /// Inspect WASM tasks.
    Tasks {
        #[command(subcommand)]
        command: cmd::tasks::Args,
    },
    Score(cmd::score::Args),
    SearchBits(cmd::search_bits::Args),
    /// A study as a matrix of runs: plan, run (resumable, sharded), status.
    Sweep {
        #[command(subcommand)]
        command: cmd::sweep::Args,
    },
}

fn init_logging() {
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    // The WASM compiler logs every function it compiles at debug level: keep it quiet
    // unless RUST_LOG names it.
    let asked = std::env::var("RUST_LOG").unwrap_or_default();
    for noisy in [
        "cranelift_codegen",
        "cranelift_frontend",
        "regalloc2",
        "wasmtime",
        "wasmtime_internal_cranelift",
        "wasmtime_environ",
    ] {
        if !asked.contains(noisy) {
            if let Ok(d) = format!("{noisy}=warn").parse() {
                filter = filter.add_directive(d);
            }
        }
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

/// Entry point; returns the process exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    init_logging();
    match run(cli) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Plugins { command } => cmd::plugins::main(command),
        Command::Quantize(a) => cmd::quantize::main(a),
        Command::QuantBench(a) => cmd::quant_bench::main(a),
        Command::TaskBench(a) => cmd::task_bench::main(a),
        Command::Run(a) => cmd::run::main(a),
        Command::Convert(a) => cmd::convert::main(a),
        Command::Compare(a) => cmd::compare::main(a),
        Command::Kernels(a) => cmd::kernels::main(a),
        Command::Bench(a) => cmd::bench::main(a),
        Command::Tasks { command } => cmd::tasks::main(command),
        Command::Score(a) => cmd::score::main(a),
        Command::SearchBits(a) => cmd::search_bits::main(a),
        Command::Sweep { command } => cmd::sweep::main(command),
    }
}
