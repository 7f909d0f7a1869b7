//! The `llq-host` command line (clap derive). Each subcommand is a thin layer over a module;
//! errors are printed with their context chain and give exit status 1 (2 for usage errors).

use crate::quant::{parse_opt, Plugin};
use crate::task::{Limits, TaskRuntime};
use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(name = "llq-host", version, about = "llq: what does this quantization method do to this model's accuracy, speed, memory and size?")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Inspect quantization plugins.
    Plugins {
        #[command(subcommand)]
        command: PluginsCommand,
    },
    /// Quantize every 2-D tensor of a safetensors file with a plugin.
    Quantize {
        /// Plugin library (e.g. plugins/nf4.so).
        #[arg(long)]
        quant: PathBuf,
        /// Plugin option, repeatable (e.g. --opt block_size=64).
        #[arg(long = "opt", value_parser = parse_opt)]
        opts: Vec<(String, String)>,
        #[arg(long)]
        input: PathBuf,
        #[arg(long)]
        output: PathBuf,
        /// Write the dequantized f32 tensors instead of the packed buffers.
        #[arg(long)]
        dequantize: bool,
    },
    /// Benchmark a plugin's quantize + dequantize throughput on Llama-3.2-1B's matrix shapes
    /// (1.24 B synthetic weights; needs about 7 GiB of memory).
    QuantBench {
        #[arg(long)]
        quant: PathBuf,
        #[arg(long = "opt", value_parser = parse_opt)]
        opts: Vec<(String, String)>,
        /// Worker threads (default: all cores).
        #[arg(long)]
        threads: Option<usize>,
        /// Also write the report as JSON here.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Benchmark a CoQA-style task's scoring path (host↔guest crossings included) on a
    /// synthetic official-layout dataset.
    TaskBench {
        #[arg(long, default_value = "tasks/coqa.wasm")]
        task: PathBuf,
        /// Number of stories (× --turns turns each).
        #[arg(long, default_value_t = 625)]
        stories: usize,
        #[arg(long, default_value_t = 16)]
        turns: usize,
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        limits: TaskLimitArgs,
    },
    /// The main job: a model, quantized by a plugin, answering a task's requests; writes
    /// results.json and samples.jsonl to --out.
    Run {
        /// HF directory, .gguf file, llama2.c .bin, or synthetic:<preset>.
        #[arg(long)]
        model: String,
        /// Quantization plugin (e.g. plugins/nf4.so); none = the model as loaded (f32).
        #[arg(long)]
        quant: Option<PathBuf>,
        /// Plugin option, repeatable (e.g. --opt double_quant=true).
        #[arg(long = "opt", value_parser = parse_opt)]
        opts: Vec<(String, String)>,
        /// Also quantize lm_head (transformers + bitsandbytes leave it unquantized).
        #[arg(long)]
        quantize_lm_head: bool,
        /// Task component (e.g. tasks/coqa.wasm).
        #[arg(long)]
        task: PathBuf,
        #[arg(long = "task-opt", value_parser = parse_opt)]
        task_opts: Vec<(String, String)>,
        /// Dataset passed to the task.
        #[arg(long)]
        data: PathBuf,
        /// Only the first N requests.
        #[arg(long)]
        limit: Option<usize>,
        /// Output directory (default: results/runs/<model>-<method>-<task>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Continue a run in --out: samples already in its samples.jsonl are kept.
        #[arg(long)]
        resume: bool,
        /// Generation requests per batch (left-padded).
        #[arg(long, default_value_t = 1)]
        batch_size: usize,
        /// Threads for quantization (default: all cores).
        #[arg(long)]
        threads: Option<usize>,
        /// Tokens per window for rolling log-likelihood.
        #[arg(long, default_value_t = 2048)]
        window: usize,
        /// Wrap each generation prompt in the model's chat template as one user turn
        /// (lm-eval's --apply_chat_template); for instruct models.
        #[arg(long)]
        chat_template: bool,
        /// For rolling log-likelihood tasks (perplexity): also run the unquantized model and
        /// report per-token KL divergence and top-1 agreement against it (llama.cpp's KLD).
        #[arg(long)]
        kl_baseline: bool,
        /// cpu, cuda, cuda:N, or auto (a GPU when built with --features cuda and present).
        #[arg(long, default_value = "auto")]
        device: String,
        #[command(flatten)]
        limits: TaskLimitArgs,
    },
    /// Write any model llq can load as an HF directory (config.json, model.safetensors,
    /// tokenizer.json), e.g. the GGUF SmolLM2 as a normal HF baseline.
    Convert {
        #[arg(long)]
        model: String,
        #[arg(long)]
        out: PathBuf,
        /// Store bf16 instead of f32.
        #[arg(long)]
        bf16: bool,
    },
    /// Print a side-by-side Markdown table of runs (their results.json files).
    Compare {
        #[arg(required = true)]
        results: Vec<PathBuf>,
        /// Also show each run's prediction for this request id.
        #[arg(long)]
        sample: Option<String>,
    },
    /// Check a plugin's CUDA kernels against its CPU dequantize (fresh random inputs,
    /// poisoned outputs) and time them against the copy bandwidth and cuBLAS (needs a GPU
    /// and a build with --features cuda).
    Kernels {
        #[arg(long)]
        quant: PathBuf,
        #[arg(long = "opt", value_parser = parse_opt)]
        opts: Vec<(String, String)>,
        /// Timed shapes rows x cols (out × in), comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "2048x8192,8192x2048,2048x2048,512x2048")]
        shapes: Vec<String>,
        /// Batch sizes timed (the fused matvec covers 1–8; larger ones time cuBLAS only).
        #[arg(long, value_delimiter = ',', default_value = "1,4,8")]
        batch_sizes: Vec<usize>,
        #[arg(long, default_value_t = 20)]
        repeats: usize,
        /// Seed for the random inputs (default: a fresh one, reported).
        #[arg(long)]
        seed: Option<u64>,
        #[arg(long, default_value = "cuda")]
        device: String,
        /// Write the report as JSON here.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Prefill and decode speed of a model, optionally quantized (CPU or GPU).
    Bench {
        #[arg(long)]
        model: String,
        #[arg(long)]
        quant: Option<PathBuf>,
        #[arg(long = "opt", value_parser = parse_opt)]
        opts: Vec<(String, String)>,
        /// Prompt lengths for prefill, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "128,512")]
        prompt_lens: Vec<usize>,
        /// Batch sizes for decode, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1,4")]
        batch_sizes: Vec<usize>,
        /// Decode steps timed per repeat.
        #[arg(long, default_value_t = 16)]
        decode_steps: usize,
        #[arg(long, default_value_t = 3)]
        repeats: usize,
        #[arg(long)]
        threads: Option<usize>,
        #[arg(long)]
        out: Option<PathBuf>,
        /// cpu, cuda, cuda:N, or auto.
        #[arg(long, default_value = "auto")]
        device: String,
    },
    /// Inspect WASM tasks.
    Tasks {
        #[command(subcommand)]
        command: TasksCommand,
    },
    /// Score existing predictions with a task, without a model. Prints the task's native
    /// report (for CoQA official mode: the official script's JSON) to stdout.
    Score {
        /// Task component (e.g. tasks/coqa.wasm).
        #[arg(long)]
        task: PathBuf,
        /// Dataset passed to the task (e.g. coqa-dev-v1.0.json).
        #[arg(long)]
        data: PathBuf,
        /// Predictions: the task's external layout (CoQA: [{"id","turn_id","answer"}]) or
        /// llq's per-sample JSONL.
        #[arg(long)]
        predictions: PathBuf,
        /// Task option, repeatable (e.g. --task-opt mode=lm-eval).
        #[arg(long = "task-opt", value_parser = parse_opt)]
        task_opts: Vec<(String, String)>,
        /// Also write a JSON report (metrics with standard errors, failures) here.
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        limits: TaskLimitArgs,
    },
}

/// Sandbox limits for a task, per call.
#[derive(clap::Args, Debug, Clone)]
pub struct TaskLimitArgs {
    /// Fuel (about one unit per WASM instruction) a single task call may use.
    #[arg(long, default_value_t = Limits::default().fuel)]
    pub task_fuel: u64,
    /// Seconds a single task call may take.
    #[arg(long, default_value_t = Limits::default().timeout.as_secs_f64())]
    pub task_timeout: f64,
    /// Linear memory a task may use, in MiB.
    #[arg(long, default_value_t = Limits::default().memory >> 20)]
    pub task_memory: usize,
}

impl TaskLimitArgs {
    pub fn limits(&self) -> Result<Limits> {
        if !(self.task_timeout > 0.0 && self.task_timeout.is_finite()) {
            anyhow::bail!("--task-timeout must be a positive number of seconds");
        }
        Ok(Limits { fuel: self.task_fuel, timeout: std::time::Duration::from_secs_f64(self.task_timeout), memory: self.task_memory << 20 })
    }
}

#[derive(Subcommand, Debug)]
pub enum TasksCommand {
    /// Print a task's description (name, version, metrics, options) as JSON.
    Inspect {
        path: PathBuf,
        #[command(flatten)]
        limits: TaskLimitArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum PluginsCommand {
    /// Print a plugin's descriptor and options as JSON.
    Inspect { path: PathBuf },
}

fn init_logging() {
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    // The WASM compiler logs every function it compiles at debug level: keep it quiet
    // unless RUST_LOG names it.
    let asked = std::env::var("RUST_LOG").unwrap_or_default();
    for noisy in ["cranelift_codegen", "cranelift_frontend", "regalloc2", "wasmtime", "wasmtime_internal_cranelift", "wasmtime_environ"] {
        if !asked.contains(noisy) {
            if let Ok(d) = format!("{noisy}=warn").parse() {
                filter = filter.add_directive(d);
            }
        }
    }
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).try_init();
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
        Command::Plugins { command: PluginsCommand::Inspect { path } } => {
            let p = Plugin::load(&path)?;
            println!("{}", serde_json::to_string_pretty(&p.info)?);
        }
        Command::Run { model, quant, opts, quantize_lm_head, task, task_opts, data, limit, out, resume, batch_size, threads, window, chat_template, kl_baseline, device, limits } => {
            let stem = |p: &std::path::Path| p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            let out = out.unwrap_or_else(|| {
                let m = model.trim_end_matches('/').rsplit('/').next().unwrap_or("model").replace(':', "-");
                let q = quant.as_deref().map(stem).unwrap_or_else(|| "none".into());
                PathBuf::from("results/runs").join(format!("{m}-{q}-{}", stem(&task)))
            });
            let threads = threads.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
            let s = crate::run_cmd::run(&crate::run_cmd::RunArgs {
                model, quant, opts, task, task_opts, data, limit, out, batch_size, resume, quantize_lm_head, threads, window, chat_template, kl_baseline, device,
                limits: limits.limits()?,
                command_line: std::env::args().collect(),
            })?;
            for m in s.results["metrics"].as_array().into_iter().flatten() {
                let se = m["stderr"].as_f64().map(|v| format!(" ± {v:.4}")).unwrap_or_default();
                println!("{}: {:.4}{se}", m["name"].as_str().unwrap_or(""), m["value"].as_f64().unwrap_or(f64::NAN));
            }
            println!("results: {}", s.results_path.display());
            if s.failed > 0 {
                anyhow::bail!("{} samples failed (see samples.jsonl); the results cover the others", s.failed);
            }
        }
        Command::Convert { model, out, bf16 } => {
            let m = crate::loader::load(&model)?;
            crate::loader::write_hf(&m, &out, bf16)?;
            tracing::info!("wrote {} ({}; {})", out.display(), if bf16 { "bf16" } else { "f32" }, m.precision_note);
        }
        Command::Compare { results, sample } => print!("{}", crate::results::compare(&results, sample.as_deref())?),
        Command::Bench { model, quant, opts, prompt_lens, batch_sizes, decode_steps, repeats, threads, out, device } => {
            if repeats == 0 || decode_steps == 0 || prompt_lens.contains(&0) || batch_sizes.contains(&0) {
                anyhow::bail!("--repeats, --decode-steps, --prompt-lens and --batch-sizes must be positive");
            }
            let threads = threads.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
            let plugin = quant.as_deref().map(Plugin::load).transpose()?;
            let popts = match &plugin {
                Some(p) => {
                    let (j, o) = p.options(&opts)?;
                    Some((p, j, o.to_json()))
                }
                None => None,
            };
            let r = crate::bench::model_bench(&model, popts.as_ref().map(|(p, j, c)| (*p, j.as_str(), c.clone())), &prompt_lens, &batch_sizes, decode_steps, repeats, threads, &device)?;
            println!("{} [{}] {} {} on {}", r.model, r.precision, r.method, r.options, r.device);
            if let Some(e) = r.logits_rel_err_vs_cpu {
                println!("  logits vs the CPU f32 model (32-token prompt): max relative error {e:.2e}");
            }
            if let Some(d) = r.dequantize_all_s {
                println!("  dequantize all layers once: {:.1} ms (per-call dequantization would add this to every forward)", d * 1e3);
            }
            for p in &r.prefill {
                println!("  prefill {:>5} tokens: {:8.1} ms (min {:.1}, max {:.1}) = {:7.1} tok/s", p.prompt_tokens, p.seconds.median * 1e3, p.seconds.min * 1e3, p.seconds.max * 1e3, p.tokens_per_s);
            }
            for d in &r.decode {
                let roof = d.roofline_fraction.map(|f| format!(", {:.0}% of the {:.2} ms roofline", 100.0 * f, d.roofline_s.unwrap_or(0.0) * 1e3)).unwrap_or_default();
                println!("  decode batch {:>3} (context {}): {:7.2} ms/step (min {:.2}, max {:.2}) = {:7.1} tok/s{roof}", d.batch, d.context, d.step_seconds.median * 1e3, d.step_seconds.min * 1e3, d.step_seconds.max * 1e3, d.tokens_per_s);
            }
            if let (Some(m), Some(p)) = (r.device_memory_bytes, r.peak_device_memory_bytes) {
                println!("  device memory: {:.2} GB after loading, {:.2} GB at peak", m as f64 / 1e9, p as f64 / 1e9);
            }
            if let Some(out) = out {
                crate::results::write_atomic(&out, serde_json::to_string_pretty(&r)?.as_bytes()).with_context(|| format!("cannot write {}", out.display()))?;
            }
        }
        Command::Kernels { quant, opts, shapes, batch_sizes, repeats, seed, device, out } => {
            let shapes = shapes
                .iter()
                .map(|s| {
                    let (r, c) = s.split_once('x').with_context(|| format!("shape `{s}` is not ROWSxCOLS"))?;
                    Ok((r.trim().parse::<usize>()?, c.trim().parse::<usize>()?))
                })
                .collect::<Result<Vec<_>>>()
                .context("--shapes")?;
            if repeats == 0 || shapes.iter().any(|&(r, c)| r == 0 || c == 0) || batch_sizes.contains(&0) {
                anyhow::bail!("--repeats, --shapes and --batch-sizes must be positive");
            }
            let p = Plugin::load(&quant)?;
            let (json, o) = p.options(&opts)?;
            kernels_cmd(&p, &json, o.to_json(), &shapes, &batch_sizes, repeats, &device, seed, out.as_deref())?;
        }
        Command::TaskBench { task, stories, turns, out, limits } => {
            let r = crate::bench::task_bench(&task, stories, turns, limits.limits()?)?;
            println!(
                "{}: {} samples ({:.1} MB data): compile {:.2} s, requests {:.3} s, score {:.3} s = {:.2} µs/sample, aggregate {:.3} s (F1 {:.2})",
                r.task, r.samples, r.data_bytes as f64 / 1e6, r.compile_s, r.requests_s, r.score_s, r.score_us_per_sample, r.aggregate_s, r.f1
            );
            if let Some(out) = out {
                crate::results::write_atomic(&out, serde_json::to_string_pretty(&r)?.as_bytes())
                    .with_context(|| format!("cannot write report {}", out.display()))?;
            }
        }
        Command::Tasks { command: TasksCommand::Inspect { path, limits } } => {
            let mut rt = TaskRuntime::load(&path, limits.limits()?)?;
            let i = rt.describe()?;
            let j = serde_json::json!({
                "name": i.name, "version": i.version, "description": i.description,
                "metrics": i.metrics.iter().map(|m| serde_json::json!({"name": m.name, "higher_is_better": m.higher_is_better, "help": m.help})).collect::<Vec<_>>(),
                "options": i.options.iter().map(|o| serde_json::json!({"name": o.name, "kind": o.kind, "default": o.default, "help": o.help})).collect::<Vec<_>>(),
            });
            println!("{}", serde_json::to_string_pretty(&j)?);
        }
        Command::Score { task, data, predictions, task_opts, out, limits } => {
            let native = crate::score_cmd::run(&crate::score_cmd::ScoreArgs {
                task: &task,
                data: &data,
                predictions: &predictions,
                options: &task_opts,
                limits: limits.limits()?,
                out: out.as_deref(),
            })?;
            println!("{native}");
        }
        Command::Quantize { quant, opts, input, output, dequantize } => {
            let plugin = Plugin::load(&quant)?;
            let (json, options) = plugin.options(&opts)?;
            let (q, c) = crate::quantize_cmd::run(&crate::quantize_cmd::QuantizeArgs {
                plugin: &plugin,
                opts_json: &json,
                options_canonical: options.to_json(),
                input: &input,
                output: &output,
                dequantize,
            })?;
            tracing::info!("{}: quantized {q} tensors, copied {c}, wrote {}", plugin.name(), output.display());
        }
        Command::QuantBench { quant, opts, threads, out } => {
            let plugin = Plugin::load(&quant)?;
            let (json, options) = plugin.options(&opts)?;
            let threads = threads.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
            let r = crate::bench::quant_bench(&plugin, &json, options.to_json(), threads)?;
            println!(
                "{} {}: {} matrices, {:.3} B weights, {:.3} bits/weight, {} threads: quantize {:.2} s, dequantize {:.2} s, total {:.2} s ({:.0} M weights/s), max |error| {:.4}",
                r.plugin, r.options, r.matrices, r.weights as f64 / 1e9, r.bits_per_weight, r.threads,
                r.quantize_s, r.dequantize_s, r.total_s, r.weights_per_s / 1e6, r.max_abs_error
            );
            if let Some(out) = out {
                crate::results::write_atomic(&out, serde_json::to_string_pretty(&r)?.as_bytes())
                    .with_context(|| format!("cannot write report {}", out.display()))?;
            }
        }
    }
    Ok(())
}

#[cfg(feature = "cuda")]
#[allow(clippy::too_many_arguments)]
fn kernels_cmd(p: &Plugin, json: &str, canon: String, shapes: &[(usize, usize)], batches: &[usize], repeats: usize, device: &str, seed: Option<u64>, out: Option<&std::path::Path>) -> Result<()> {
    let r = crate::kernel_bench::kernels_cmd(p, json, canon, shapes, batches, repeats, device, seed)?;
    crate::kernel_bench::print_table(&r);
    if let Some(out) = out {
        crate::results::write_atomic(out, serde_json::to_string_pretty(&r)?.as_bytes()).with_context(|| format!("cannot write {}", out.display()))?;
    }
    crate::kernel_bench::require_passed(&r)
}

#[cfg(not(feature = "cuda"))]
#[allow(clippy::too_many_arguments)]
fn kernels_cmd(p: &Plugin, _: &str, _: String, _: &[(usize, usize)], _: &[usize], _: usize, _: &str, _: Option<u64>, _: Option<&std::path::Path>) -> Result<()> {
    anyhow::bail!(
        "plugin {}: checking and timing CUDA kernels needs llq-host built with --features cuda (README, \"GPU\")",
        p.info.path.display()
    )
}
