//! `llq-host plugins inspect`: a plugin's descriptor and options as JSON, with the bits per
//! weight its packed form takes for a given shape and option set. `llq-host plugins check`:
//! the conformance suite (crate::conformance), a table and a JSON report, exit status 1 when a
//! check fails.

use super::args::parse_opt;
use crate::plugin::Plugin;
use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::time::Duration;

/// Inspect quantization plugins.
#[derive(clap::Subcommand, Debug)]
pub enum Args {
    /// Print a plugin's descriptor and options as JSON, and its bits per weight.
    Inspect {
        path: PathBuf,
        /// Plugin options (`k=v`, repeatable) for the bits-per-weight figure.
        #[arg(long = "opt", value_parser = parse_opt)]
        opts: Vec<(String, String)>,
        /// The matrix (`ROWSxCOLS`) whose packed size gives the bits per weight (every stored
        /// byte counted; defaults to a 4096×4096 projection).
        #[arg(long, default_value = "4096x4096")]
        shape: String,
    },
    /// Check a plugin against the llq plugin contract (sizes, options, determinism, threads,
    /// hostile inputs, calibration, kernels); exit status 1 if any check fails.
    Check(CheckArgs),
}

#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    pub path: PathBuf,
    /// Plugin options (`k=v`, repeatable): the option set checked.
    #[arg(long = "opt", value_parser = parse_opt)]
    pub opts: Vec<(String, String)>,
    /// Only these checks (comma-separated; `llq-host plugins check --list` names them).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// List the checks and exit.
    #[arg(long)]
    pub list: bool,
    /// Write the JSON report here (`-`: stdout, instead of the table).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Run every check in this process (faster; a crashing plugin ends the whole check).
    #[arg(long)]
    pub in_process: bool,
    /// Seconds each check may take before it is killed and failed.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
}

fn parse_shape(s: &str) -> Result<(usize, usize)> {
    match s.split_once('x').map(|(r, c)| (r.parse::<usize>(), c.parse::<usize>())) {
        Some((Ok(r), Ok(c))) if r > 0 && c > 0 => Ok((r, c)),
        _ => bail!("--shape `{s}` is not ROWSxCOLS with positive sizes (e.g. 4096x4096)"),
    }
}

pub fn main(a: Args) -> Result<()> {
    match a {
        Args::Inspect { path, opts, shape } => {
            let (rows, cols) = parse_shape(&shape)?;
            let p = Plugin::load(&path)?;
            let q = p.configure(&opts)?;
            let bytes = q.packed_size(rows, cols)?;
            let mut v = serde_json::to_value(&p.info)?;
            v["bits_per_weight"] = serde_json::json!({
                "shape": [rows, cols],
                "options": serde_json::from_str::<serde_json::Value>(&q.canonical())?,
                "packed_bytes": bytes,
                "bits": bytes as f64 * 8.0 / (rows * cols) as f64,
            });
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        Args::Check(a) => return check(a),
    }
    Ok(())
}

fn check(a: CheckArgs) -> Result<()> {
    use crate::conformance::{self, checks::CHECKS, report::Status, Isolation};
    if a.list {
        for (name, what) in CHECKS {
            println!("{name:<15} {what}");
        }
        return Ok(());
    }
    let names = conformance::select(&a.only)?;
    if a.timeout == 0 {
        bail!("--timeout must be at least 1 second");
    }
    let exe = std::env::current_exe().context("cannot find the llq-host executable")?;
    let how = if a.in_process {
        Isolation::InProcess
    } else {
        Isolation::Processes { exe: &exe, timeout: Duration::from_secs(a.timeout) }
    };
    let report = conformance::check(&a.path, &a.opts, &names, &how)?;
    let json = serde_json::to_string_pretty(&report)?;
    match a.json.as_deref() {
        Some(p) if p.as_os_str() == "-" => println!("{json}"),
        Some(p) => {
            crate::util::fs::write_atomic(p, json.as_bytes())?;
            print!("{}", report.table());
        }
        None => print!("{}", report.table()),
    }
    if !report.passed {
        let failed: Vec<String> = report
            .checks
            .iter()
            .filter(|c| c.status == Status::Fail)
            .map(|c| format!("{} ({})", c.check, c.summary.chars().take(300).collect::<String>()))
            .collect();
        bail!("plugin {} fails the llq plugin contract: {}", a.path.display(), failed.join("; "));
    }
    Ok(())
}
