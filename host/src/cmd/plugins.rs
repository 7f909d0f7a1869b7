//! `llq-host plugins inspect`: a plugin's descriptor and options as JSON, with the bits per
//! weight its packed form takes for a given shape and option set.

use super::args::parse_opt;
use crate::plugin::Plugin;
use anyhow::{bail, Result};
use std::path::PathBuf;

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
    }
    Ok(())
}
