//! `llq-host task-bench`: a task's scoring path on synthetic CoQA.

use super::args::TaskLimitArgs;
use crate::util::fs::write_json;
use anyhow::Result;
use std::path::PathBuf;

/// Benchmark a CoQA-style task's scoring path (host↔guest crossings included) on a
/// synthetic official-layout dataset.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(long, default_value = "tasks/coqa.wasm")]
    pub task: PathBuf,
    /// Number of stories (× --turns turns each).
    #[arg(long, default_value_t = 625)]
    pub stories: usize,
    #[arg(long, default_value_t = 16)]
    pub turns: usize,
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub limits: TaskLimitArgs,
}

pub fn main(a: Args) -> Result<()> {
    let r = crate::bench::task::task_bench(&a.task, a.stories, a.turns, a.limits.limits()?)?;
    println!(
        "{}: {} samples ({:.1} MB data): compile {:.2} s, requests {:.3} s, score {:.3} s = {:.2} µs/sample, aggregate {:.3} s (F1 {:.2})",
        r.task,
        r.samples,
        r.data_bytes as f64 / 1e6,
        r.compile_s,
        r.requests_s,
        r.score_s,
        r.score_us_per_sample,
        r.aggregate_s,
        r.f1
    );
    if let Some(out) = a.out {
        write_json(&out, &r)?;
    }
    Ok(())
}
