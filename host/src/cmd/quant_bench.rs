//! `llq-host quant-bench`: a plugin's quantize + dequantize throughput.

use super::args::PluginArgs;
use crate::util::fs::write_json;
use crate::util::par::default_threads;
use anyhow::Result;
use std::path::PathBuf;

/// Benchmark a plugin's quantize + dequantize throughput on Llama-3.2-1B's matrix shapes
/// (1.24 B synthetic weights; needs about 7 GiB of memory).
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub plugin: PluginArgs,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Also write the report as JSON here.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn main(a: Args) -> Result<()> {
    let plugin = a.plugin.load()?;
    let q = plugin.configure(&a.plugin.opts)?;
    let r = crate::bench::quant::quant_bench(&q, default_threads(a.threads))?;
    println!(
        "{} {}: {} matrices, {:.3} B weights, {:.3} bits/weight, {} threads: quantize {:.2} s, dequantize {:.2} s, total {:.2} s ({:.0} M weights/s), max |error| {:.4}",
        r.plugin,
        r.options,
        r.matrices,
        r.weights as f64 / 1e9,
        r.bits_per_weight,
        r.threads,
        r.quantize_s,
        r.dequantize_s,
        r.total_s,
        r.weights_per_s / 1e6,
        r.max_abs_error
    );
    if let Some(out) = a.out {
        write_json(&out, &r)?;
    }
    Ok(())
}
