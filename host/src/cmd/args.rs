//! Arguments several subcommands share: a plugin with its options, a task's sandbox limits,
//! and the `k=v` option syntax.

use crate::plugin::{Plugin, QuantConfig};
use crate::task::Limits;
use anyhow::{bail, Result};
use std::path::PathBuf;

/// Parse `k=v` (for `--opt` and `--task-opt`).
pub fn parse_opt(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("`{s}` is not key=value"))?;
    if k.trim().is_empty() {
        return Err(format!("`{s}` has an empty key"));
    }
    Ok((k.trim().to_string(), v.trim().to_string()))
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
}

impl MaybePluginArgs {
    /// Load the plugin, if one was named; `--opt` without `--quant` is an error.
    pub fn load(&self) -> Result<Option<Plugin>> {
        if self.quant.is_none() && !self.opts.is_empty() {
            bail!("--opt needs --quant");
        }
        self.quant.as_deref().map(Plugin::load).transpose()
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
            bail!("--task-timeout must be a positive number of seconds");
        }
        Ok(Limits {
            fuel: self.task_fuel,
            timeout: std::time::Duration::from_secs_f64(self.task_timeout),
            memory: self.task_memory << 20,
        })
    }
}
