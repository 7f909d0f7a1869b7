//! `llq-host convert`: any model llq can load, written as an HF directory.

use anyhow::{bail, Result};
use std::path::PathBuf;

/// Write any model llq can load as an HF directory (config.json, model.safetensors,
/// tokenizer.json), e.g. the GGUF SmolLM2 as a normal HF baseline.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(long)]
    pub model: String,
    #[arg(long)]
    pub out: PathBuf,
    /// Store bf16 instead of f32.
    #[arg(long)]
    pub bf16: bool,
    /// Write into --out even when it already holds files (they may be overwritten).
    #[arg(long)]
    pub force: bool,
}

pub fn main(a: Args) -> Result<()> {
    // Checked before the model loads: a model directory written over by mistake is lost.
    if let Ok(mut entries) = std::fs::read_dir(&a.out) {
        if entries.next().is_some() && !a.force {
            bail!(
                "--out {} is not empty; choose an empty folder or pass --force to write over it",
                a.out.display()
            );
        }
    } else if a.out.exists() {
        bail!("--out {} exists and is not a folder", a.out.display());
    }
    let m = crate::loader::load(&a.model)?;
    crate::loader::write_hf(&m, &a.out, a.bf16)?;
    let dtype = if a.bf16 { "bf16" } else { "f32" };
    tracing::info!("wrote {} ({dtype}; {})", a.out.display(), m.precision_note);
    Ok(())
}
