//! `llq-host compare`: a side-by-side Markdown table of runs.

use anyhow::Result;
use std::path::PathBuf;

/// Print a side-by-side Markdown table of runs (their results.json files).
#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(required = true)]
    pub results: Vec<PathBuf>,
    /// Also show each run's prediction for this request id.
    #[arg(long)]
    pub sample: Option<String>,
}

pub fn main(a: Args) -> Result<()> {
    print!("{}", crate::results::compare::compare(&a.results, a.sample.as_deref())?);
    Ok(())
}
