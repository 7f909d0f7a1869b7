//! `synthetic:<preset>`: a published config with seeded random weights (speed and size only).

use super::loaded::LoadedModel;
use crate::model::config::preset;
use crate::model::{HostTensor, Weights};
use crate::tokenizer::Tokenizer;
use crate::util::synth::synthetic_weights;
use anyhow::Result;
use std::path::Path;

pub fn load(name: &str, spec: &str) -> Result<LoadedModel> {
    let config = preset(name)?;
    let mut w = Weights::new();
    for (i, (tname, shape)) in config.expected_tensors().into_iter().enumerate() {
        let n: usize = shape.iter().product();
        let data = if shape.len() == 1 { vec![1.0; n] } else { synthetic_weights(i as u64 + 1, n, 0.02) };
        w.insert(tname, HostTensor { shape, data });
    }
    // The preset's real tokenizer when `make models` fetched it, else one token per byte.
    let tok_path = Path::new("models").join(match name {
        "llama-3.2-1b" => "llama-3.2/tokenizer.json",
        _ => "-",
    });
    let tokenizer = if tok_path.is_file() {
        Tokenizer::from_file(&tok_path)?
    } else {
        if name != "tiny" {
            tracing::warn!(
                "{} not found (make models fetches it): synthetic:{name} uses a byte tokenizer",
                tok_path.display()
            );
        }
        Tokenizer::bytes(config.vocab_size)
    };
    Ok(LoadedModel {
        id: spec.to_string(),
        format: "synthetic".into(),
        precision_note: "synthetic seeded random weights (speed and size only; accuracy is meaningless)"
            .into(),
        content_hash: format!("synthetic:{name}:seed1"),
        eos: vec![],
        file_bytes: 0,
        chat_template: None,
        config,
        weights: w,
        tokenizer,
    })
}
