//! GGUF files (llama.cpp): tensors dequantized to f32 (so the "unquantized" reference is the
//! file's own quantization dequantized, which reports say), Q/K rows un-permuted to the HF
//! layout, the tokenizer rebuilt from the metadata.

use super::loaded::LoadedModel;
use super::permute::unpermute_rows;
use crate::model::config::{layer_tensor, LayerTensor, EMBED, LM_HEAD, NORM};
use crate::model::{check_weights, Config, HostTensor, Weights};
use crate::tokenizer::Tokenizer;
use crate::util::digest::sha256_file;
use anyhow::{anyhow, bail, Result};
use std::path::Path;

pub fn load(path: &Path) -> Result<LoadedModel> {
    use candle_core::quantized::gguf_file;
    let mut f = std::fs::File::open(path)?;
    let content = gguf_file::Content::read(&mut f).map_err(|e| anyhow!("not a readable GGUF file: {e}"))?;
    let md = &content.metadata;
    let get = |k: &str| md.get(k).ok_or_else(|| anyhow!("GGUF metadata has no `{k}`"));
    let arch = get("general.architecture")?.to_string().map_err(|e| anyhow!("{e}"))?.clone();
    if arch != "llama" {
        bail!("GGUF architecture is `{arch}`; llq reads `llama`");
    }
    let u = |k: &str| -> Result<usize> {
        Ok(get(&format!("llama.{k}"))?.to_u32().map_err(|e| anyhow!("llama.{k}: {e}"))? as usize)
    };
    let fl = |k: &str, d: f64| -> f64 {
        md.get(&format!("llama.{k}")).and_then(|v| v.to_f32().ok()).map_or(d, |v| v as f64)
    };
    let heads = u("attention.head_count")?;
    let kvh =
        md.get("llama.attention.head_count_kv").and_then(|v| v.to_u32().ok()).map_or(heads, |v| v as usize);
    let tokens: Vec<String> = get("tokenizer.ggml.tokens")?
        .to_vec()
        .map_err(|e| anyhow!("{e}"))?
        .iter()
        .map(|v| v.to_string().cloned().map_err(|e| anyhow!("tokenizer.ggml.tokens: {e}")))
        .collect::<Result<_>>()?;
    let dev = candle_core::Device::Cpu;
    let mut w = Weights::new();
    let mut qtypes = std::collections::BTreeSet::new();
    let names: Vec<String> = content.tensor_infos.keys().cloned().collect();
    for name in &names {
        let qt = content.tensor(&mut f, name, &dev).map_err(|e| anyhow!("tensor {name}: {e}"))?;
        qtypes.insert(format!("{:?}", qt.dtype()));
        let t = qt.dequantize(&dev).map_err(|e| anyhow!("tensor {name}: {e}"))?;
        let shape = t.dims().to_vec();
        let data: Vec<f32> = t.flatten_all()?.to_vec1()?;
        let ht = HostTensor { shape, data };
        let hf = gguf_to_hf_name(name).ok_or_else(|| anyhow!("unexpected GGUF tensor `{name}`"))?;
        let ht = match hf {
            (_, Some(LayerTensor::Q)) => unpermute_rows(&ht, heads)?,
            (_, Some(LayerTensor::K)) => unpermute_rows(&ht, kvh)?,
            _ => ht,
        };
        w.insert(hf.0, ht);
    }
    let vocab = md.get("llama.vocab_size").and_then(|v| v.to_u32().ok()).map_or(tokens.len(), |v| v as usize);
    let config = Config {
        hidden_size: u("embedding_length")?,
        intermediate_size: u("feed_forward_length")?,
        num_hidden_layers: u("block_count")?,
        num_attention_heads: heads,
        num_key_value_heads: Some(kvh),
        vocab_size: vocab,
        rms_norm_eps: fl("attention.layer_norm_rms_epsilon", 1e-5),
        rope_theta: fl("rope.freq_base", 10_000.0),
        max_position_embeddings: u("context_length").unwrap_or(4096),
        tie_word_embeddings: !w.contains_key(LM_HEAD),
        rope_scaling: None,
        head_dim: None,
    };
    check_weights(&config, &w)?;
    let tokenizer = Tokenizer::from_gguf(md, tokens)?;
    let eos = vec![md.get("tokenizer.ggml.eos_token_id").and_then(|v| v.to_u32().ok()).unwrap_or(2)];
    Ok(LoadedModel {
        id: path.display().to_string(),
        format: "gguf".into(),
        precision_note: format!(
            "GGUF {} dequantized to f32 (not the original bf16 weights)",
            qtypes.into_iter().collect::<Vec<_>>().join("/")
        ),
        config,
        weights: w,
        tokenizer,
        content_hash: sha256_file(path)?,
        eos,
        file_bytes: std::fs::metadata(path)?.len(),
        chat_template: md.get("tokenizer.chat_template").and_then(|v| v.to_string().ok().cloned()),
    })
}

/// The HF name of a llama.cpp tensor (and which layer tensor it is, for the Q/K un-permute).
fn gguf_to_hf_name(name: &str) -> Option<(String, Option<LayerTensor>)> {
    Some(match name {
        "token_embd.weight" => (EMBED.into(), None),
        "output_norm.weight" => (NORM.into(), None),
        "output.weight" => (LM_HEAD.into(), None),
        _ => {
            let rest = name.strip_prefix("blk.")?;
            let (l, t) = rest.split_once('.')?;
            let l: usize = l.parse().ok()?;
            let t = match t {
                "attn_norm.weight" => LayerTensor::InputNorm,
                "ffn_norm.weight" => LayerTensor::PostNorm,
                "attn_q.weight" => LayerTensor::Q,
                "attn_k.weight" => LayerTensor::K,
                "attn_v.weight" => LayerTensor::V,
                "attn_output.weight" => LayerTensor::O,
                "ffn_gate.weight" => LayerTensor::Gate,
                "ffn_up.weight" => LayerTensor::Up,
                "ffn_down.weight" => LayerTensor::Down,
                _ => return None,
            };
            (layer_tensor(l, t), Some(t))
        }
    })
}
