//! Arguments several subcommands share: a plugin with its options, a task's sandbox limits,
//! and the `k=v` option syntax.

use crate::calib::text;
use crate::plugin::{Plugin, QuantConfig};
use crate::quant::{CalibMode, CalibSettings, LayerOpt};
use crate::task::Limits;
use anyhow::{bail, Result};
use llq_sdk::CalibrationNeed;
use std::path::PathBuf;

/// Parse `k=v` (for `--opt` and `--task-opt`).
pub fn parse_opt(s: &str) -> Result<(String, String), String> {
    crate::util::kv::parse(s)
}

/// Parse `PATTERN:KEY=VALUE` (for `--opt-layer`): a glob over layer names, then an option.
pub fn parse_layer_opt(s: &str) -> Result<LayerOpt, String> {
    crate::quant::layer_opt::parse(s)
}

/// A quantization plugin and its options, optional (`run`, `bench`).
#[derive(clap::Args, Debug, Clone)]
pub struct MaybePluginArgs {
    /// Quantization plugin (e.g. plugins/nf4.so); none = the model as loaded.
    #[arg(long)]
    pub quant: Option<PathBuf>,
    /// Plugin option, repeatable (e.g. --opt double_quant=true).
    #[arg(long = "opt", value_parser = parse_opt)]
    pub opts: Vec<(String, String)>,
    /// A plugin option for the layers whose name matches a glob, repeatable, the last match
    /// winning (e.g. --opt-layer 'layers.*.mlp.down_proj:type=q6_k'); patterns match the
    /// weight name with or without `model.` and `.weight`.
    #[arg(long = "opt-layer", value_parser = parse_layer_opt, value_name = "PATTERN:KEY=VALUE")]
    pub layer_opts: Vec<LayerOpt>,
    /// A file of `--opt-layer` lines (`PATTERN:KEY=VALUE` each, `#` comments), applied before
    /// the `--opt-layer` arguments: what `search-bits` writes.
    #[arg(long, value_name = "FILE")]
    pub opt_layer_file: Option<PathBuf>,
    /// Run the quantization the model file already stores (GGUF blocks; HF bitsandbytes
    /// 4-bit, GPTQ or AWQ tensors) with the --quant plugin whose packed format it is:
    /// nothing is quantized again, and the options come from the file.
    #[arg(long)]
    pub native: bool,
}

impl MaybePluginArgs {
    /// Load the plugin, if one was named; `--opt` without `--quant` is an error.
    pub fn load(&self) -> Result<Option<Plugin>> {
        if self.native {
            if self.quant.is_none() {
                bail!("--native needs --quant: the plugin whose format the model file stores (e.g. --quant plugins/gguf.so for a GGUF file)");
            }
            if !self.opts.is_empty() || !self.layer_opts.is_empty() || self.opt_layer_file.is_some() {
                bail!("--native runs the file's quantization with the options it was made with: drop --opt, --opt-layer and --opt-layer-file");
            }
        }
        if self.quant.is_none() && !self.opts.is_empty() {
            bail!("--opt needs --quant");
        }
        if self.quant.is_none() && !self.layer_opts.is_empty() {
            bail!("--opt-layer needs --quant");
        }
        if self.quant.is_none() && self.opt_layer_file.is_some() {
            bail!("--opt-layer-file needs --quant");
        }
        self.quant.as_deref().map(Plugin::load).transpose()
    }

    /// Every per-layer option: `--opt-layer-file`'s lines, then `--opt-layer`'s (the last
    /// match of a key winning).
    pub fn all_layer_opts(&self) -> Result<Vec<LayerOpt>> {
        let mut out = match &self.opt_layer_file {
            Some(p) => crate::quant::layer_opt::read_file(p)?,
            None => vec![],
        };
        out.extend(self.layer_opts.iter().cloned());
        Ok(out)
    }

    /// The loaded plugin configured with `--opt`.
    pub fn configure<'p>(&self, plugin: Option<&'p Plugin>) -> Result<Option<QuantConfig<'p>>> {
        plugin.map(|p| p.configure(&self.opts)).transpose()
    }
}

/// A quantization plugin and its options, required (`quantize`, `quant-bench`, `kernels`).
#[derive(clap::Args, Debug, Clone)]
pub struct PluginArgs {
    /// Quantization plugin (e.g. plugins/nf4.so).
    #[arg(long)]
    pub quant: PathBuf,
    /// Plugin option, repeatable (e.g. --opt block_size=64).
    #[arg(long = "opt", value_parser = parse_opt)]
    pub opts: Vec<(String, String)>,
}

impl PluginArgs {
    pub fn load(&self) -> Result<Plugin> {
        Plugin::load(&self.quant)
    }
}

const MAX_TASK_TIMEOUT_S: f64 = 365.0 * 24.0 * 3600.0;
const MAX_TASK_MEMORY_MIB: usize = 4096;
/// 64 GiB: more than any dataset's requests; keeps the shift to bytes far from overflow.
const MAX_TASK_DATA_MIB: usize = 65536;

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
    /// Data a task may return to the host in one call, in MiB (e.g. the requests it makes of
    /// a dataset).
    #[arg(long, default_value_t = Limits::default().data >> 20)]
    pub task_data_limit: usize,
}

impl TaskLimitArgs {
    pub fn limits(&self) -> Result<Limits> {
        if self.task_fuel == 0 {
            bail!("--task-fuel 0 would stop every task call before its first instruction; give at least 1");
        }
        if !(self.task_timeout > 0.0 && self.task_timeout.is_finite()) {
            bail!("--task-timeout must be a positive number of seconds");
        }
        // A year: beyond it the timer's arithmetic overflows (Duration panics on 1e20 s).
        if self.task_timeout > MAX_TASK_TIMEOUT_S {
            bail!(
                "--task-timeout {} is beyond the largest allowed, {MAX_TASK_TIMEOUT_S} s (a year)",
                self.task_timeout
            );
        }
        // wasm32 linear memory is at most 4 GiB (65,536 pages of 64 KiB); larger values would
        // wrap when shifted to bytes.
        if self.task_memory == 0 || self.task_memory > MAX_TASK_MEMORY_MIB {
            bail!(
                "--task-memory {} MiB is outside 1..={MAX_TASK_MEMORY_MIB} (a wasm32 task addresses at most 4 GiB)",
                self.task_memory
            );
        }
        if self.task_data_limit == 0 || self.task_data_limit > MAX_TASK_DATA_MIB {
            bail!("--task-data-limit {} MiB is outside 1..={MAX_TASK_DATA_MIB}", self.task_data_limit);
        }
        Ok(Limits {
            fuel: self.task_fuel,
            timeout: std::time::Duration::from_secs_f64(self.task_timeout),
            memory: self.task_memory << 20,
            data: self.task_data_limit << 20,
            ..Limits::default()
        })
    }
}

/// Calibration for plugins that need it (GPTQ, AWQ, …).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct CalibArgs {
    /// Calibration text: plain UTF-8, or JSONL with a `text` field per line [default: the
    /// Gutenberg calibration books that `make data` fetches].
    #[arg(long)]
    pub calib_data: Option<PathBuf>,
    /// Windows of calibration text [default: 128].
    #[arg(long)]
    pub calib_samples: Option<usize>,
    /// Tokens per window [default: 2048, or the model's positions if fewer].
    #[arg(long)]
    pub calib_seq_len: Option<usize>,
    /// Seed of the window offsets [default: 0].
    #[arg(long)]
    pub calib_seed: Option<u64>,
    /// Which activations each layer sees: sequential (through the quantized earlier layers,
    /// GPTQ's true-sequential), block, or parallel (the unquantized model) [default: sequential].
    #[arg(long)]
    pub calib_mode: Option<CalibMode>,
}

impl CalibArgs {
    pub fn given(&self) -> bool {
        self.calib_data.is_some()
            || self.calib_samples.is_some()
            || self.calib_seq_len.is_some()
            || self.calib_seed.is_some()
            || self.calib_mode.is_some()
    }

    /// The calibration run for `q`, when the plugin needs one (the text is read now, before
    /// the model loads); `--calib-*` for a plugin that needs none is an error rather than
    /// silently ignored.
    pub fn resolve(&self, q: Option<&QuantConfig>) -> Result<Option<CalibSettings>> {
        let need = q.map_or(CalibrationNeed::None, |q| q.calibration());
        if need == CalibrationNeed::None {
            if self.given() {
                match q {
                    Some(q) => {
                        bail!(
                            "plugin {} takes no calibration data with these options; drop the --calib-* options",
                            q.name()
                        )
                    }
                    None => bail!("--calib-* options need a --quant plugin that calibrates"),
                }
            }
            return Ok(None);
        }
        let samples = self.calib_samples.unwrap_or(128);
        if samples == 0 {
            bail!("--calib-samples must be at least 1");
        }
        if self.calib_seq_len == Some(0) {
            bail!("--calib-seq-len must be at least 1");
        }
        let text = match &self.calib_data {
            Some(p) => text::from_file(p)?,
            None => text::default_text()?,
        };
        Ok(Some(CalibSettings {
            text,
            samples,
            seq_len: self.calib_seq_len,
            seed: self.calib_seed.unwrap_or(0),
            mode: self.calib_mode.unwrap_or(CalibMode::Sequential),
            max_sample_rows: 4096,
        }))
    }
}

/// `--decode` of `run` and `bench`: how decode steps run on a GPU (`generate::DecodePath`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DecodeArg {
    Graph,
    Eager,
}

impl DecodeArg {
    pub fn path(self) -> crate::generate::DecodePath {
        match self {
            DecodeArg::Graph => crate::generate::DecodePath::Graph,
            DecodeArg::Eager => crate::generate::DecodePath::Eager,
        }
    }
}
