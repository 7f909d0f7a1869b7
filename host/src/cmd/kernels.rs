//! `llq-host kernels`: a plugin's CUDA kernels checked against its CPU dequantize and timed.

use super::args::PluginArgs;
use anyhow::{bail, Context, Result};
use std::path::PathBuf;

/// Check a plugin's CUDA kernels against its CPU dequantize (fresh random inputs,
/// poisoned outputs) and time them against the copy bandwidth and cuBLAS (needs a GPU
/// and a build with --features cuda).
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub plugin: PluginArgs,
    /// Timed shapes rows x cols (out × in), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "2048x8192,8192x2048,2048x2048,512x2048")]
    pub shapes: Vec<String>,
    /// Batch sizes timed (the fused matvec covers 1–8; larger ones time cuBLAS only).
    #[arg(long, value_delimiter = ',', default_value = "1,4,8")]
    pub batch_sizes: Vec<usize>,
    #[arg(long, default_value_t = 20)]
    pub repeats: usize,
    /// Seed for the random inputs (default: a fresh one, reported).
    #[arg(long)]
    pub seed: Option<u64>,
    #[arg(long, default_value = "cuda")]
    pub device: String,
    /// Write the report as JSON here.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// `ROWSxCOLS`, both positive.
fn parse_shape(s: &str) -> Result<(usize, usize)> {
    let (r, c) = s.split_once('x').with_context(|| format!("shape `{s}` is not ROWSxCOLS"))?;
    Ok((r.trim().parse::<usize>()?, c.trim().parse::<usize>()?))
}

pub fn main(a: Args) -> Result<()> {
    let shapes = a.shapes.iter().map(|s| parse_shape(s)).collect::<Result<Vec<_>>>().context("--shapes")?;
    if a.repeats == 0 || shapes.iter().any(|&(r, c)| r == 0 || c == 0) || a.batch_sizes.contains(&0) {
        bail!("--repeats, --shapes and --batch-sizes must be positive");
    }
    let plugin = a.plugin.load()?;
    let q = plugin.configure(&a.plugin.opts)?;
    #[cfg(feature = "cuda")]
    {
        use crate::bench::kernel::{kernel_bench, print_table, require_passed, KernelBenchSettings};
        let settings = KernelBenchSettings {
            shapes,
            batch_sizes: a.batch_sizes,
            repeats: a.repeats,
            device: a.device,
            seed: a.seed,
        };
        let r = kernel_bench(&q, &settings)?;
        print_table(&r);
        if let Some(out) = a.out {
            crate::util::fs::write_json(&out, &r)?;
        }
        require_passed(&r)
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = (shapes, a.seed, a.device, a.out);
        bail!(
            "plugin {}: checking and timing CUDA kernels needs llq-host built with --features cuda (README, \"GPU\")",
            q.plugin.info.path.display()
        )
    }
}
