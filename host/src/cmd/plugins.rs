//! `llq-host plugins inspect`: a plugin's descriptor and options as JSON.

use crate::plugin::Plugin;
use anyhow::Result;
use std::path::PathBuf;

/// Inspect quantization plugins.
#[derive(clap::Subcommand, Debug)]
pub enum Args {
    /// Print a plugin's descriptor and options as JSON.
    Inspect { path: PathBuf },
}

pub fn main(a: Args) -> Result<()> {
    match a {
        Args::Inspect { path } => {
            let p = Plugin::load(&path)?;
            println!("{}", serde_json::to_string_pretty(&p.info)?);
        }
    }
    Ok(())
}
