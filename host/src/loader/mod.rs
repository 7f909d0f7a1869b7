//! Reading models into [`Config`] + [`Weights`] (HF naming, f32, HF rotate-half Q/K layout)
//! and a [`Tokenizer`], from any of:
//! - an HF directory: `config.json`, `model.safetensors` or sharded `*.safetensors` with
//!   `model.safetensors.index.json`, `tokenizer.json` (bf16/f16/f32 weights);
//! - a GGUF file (llama.cpp): tensors dequantized to f32 — the "unquantized" reference is
//!   then the file's own quantization dequantized, which reports say — Q/K rows un-permuted,
//!   the tokenizer built from the GGUF metadata;
//! - a llama2.c checkpoint (`*.bin`) with `tok512.bin`-style tokenizer beside it;
//! - `synthetic:<preset>`: a published config with seeded random weights (speed only).
//!
//! Every format produces a [`LoadedModel`].

pub mod gguf;
pub mod hf;
mod llama2c;
mod loaded;
pub mod permute;
mod synthetic;

pub use hf::write_hf;
pub use loaded::LoadedModel;

use anyhow::{bail, Context, Result};
use std::path::Path;

/// Load whatever `spec` names.
pub fn load(spec: &str) -> Result<LoadedModel> {
    if let Some(preset) = spec.strip_prefix("synthetic:") {
        return synthetic::load(preset, spec);
    }
    let path = Path::new(spec);
    if !path.exists() {
        bail!("model {spec} does not exist (give an HF directory, a .gguf file, a llama2.c .bin, or synthetic:<preset>)");
    }
    let r = if path.is_dir() {
        hf::load(path)
    } else {
        let mut magic = [0u8; 4];
        use std::io::Read;
        let mut f = std::fs::File::open(path).with_context(|| format!("cannot read model {spec}"))?;
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        if len < 4 {
            bail!("model file {spec} holds {len} bytes: too short to be a GGUF or llama2.c model");
        }
        f.read_exact(&mut magic).with_context(|| format!("cannot read model {spec}"))?;
        if &magic == b"GGUF" {
            gguf::load(path)
        } else if path.extension().is_some_and(|e| e == "bin") {
            llama2c::load(path)
        } else {
            bail!("model file {spec} is neither GGUF nor a llama2.c .bin")
        }
    };
    let m = r.with_context(|| format!("cannot load model {spec}"))?;
    if m.tokenizer.base_vocab_size() > m.config.vocab_size {
        bail!(
            "model {spec}: its tokenizer has {} tokens but the model's vocab_size is {} (wrong tokenizer?)",
            m.tokenizer.base_vocab_size(),
            m.config.vocab_size
        );
    }
    if m.tokenizer.vocab_size() > m.config.vocab_size {
        tracing::warn!("model {spec}: the tokenizer's special tokens reach id {} beyond vocab_size {}; text never encodes to them", m.tokenizer.vocab_size() - 1, m.config.vocab_size);
    }
    Ok(m)
}
