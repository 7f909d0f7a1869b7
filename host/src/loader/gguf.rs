//! GGUF files (llama.cpp): tensors dequantized to f32 (so the "unquantized" reference is the
//! file's own quantization dequantized, which reports say), Q/K rows un-permuted to the HF
//! layout, the tokenizer rebuilt from the metadata.

use super::loaded::LoadedModel;
use super::permute::{permute_byte_rows, unpermute_rows};
use crate::model::config::{layer_tensor, LayerTensor, EMBED, LM_HEAD, NORM};
use crate::model::{check_weights, Config, HostTensor, Weights};
use crate::tokenizer::Tokenizer;
use crate::util::digest::sha256_file;
use anyhow::{anyhow, bail, Result};
use std::path::Path;

pub fn load(path: &Path) -> Result<LoadedModel> {
    Ok(read(path, false)?.0)
}

/// A linear layer as the file stores it: llama.cpp blocks along each row, under its HF name,
/// Q/K rows already in the HF order (whole rows move, so the blocks are unchanged).
pub struct StoredTensor {
    pub name: String,
    pub ggml_type: candle_core::quantized::GgmlDType,
    pub rows: usize,
    pub cols: usize,
    pub bytes: Vec<u8>,
}

/// [`load`], except that every linear layer (q/k/v/o/gate/up/down, and the output projection
/// when the file has one) is returned as stored instead of dequantized into the weights, for
/// running the file's own quantization (the caller fills those weights in and checks them).
pub fn load_stored(path: &Path) -> Result<(LoadedModel, Vec<StoredTensor>)> {
    read(path, true)
}

fn read(path: &Path, keep_stored: bool) -> Result<(LoadedModel, Vec<StoredTensor>)> {
    use candle_core::quantized::gguf_file;
    let mut f = std::fs::File::open(path)?;
    // candle appends a backtrace to its errors when RUST_BACKTRACE is set: keep the message.
    let content = gguf_file::Content::read(&mut f).map_err(|e| {
        anyhow!("not a readable GGUF file: {}", e.to_string().lines().next().unwrap_or_default())
    })?;
    let md = &content.metadata;
    let get = |k: &str| md.get(k).ok_or_else(|| anyhow!("GGUF metadata has no `{k}`"));
    let arch = get("general.architecture")?.to_string().map_err(|e| anyhow!("{e}"))?.clone();
    if arch != "llama" {
        bail!("GGUF architecture is `{arch}`; llq reads `llama`");
    }
    let u = |k: &str| -> Result<usize> {
        Ok(get(&format!("llama.{k}"))?.to_u32().map_err(|e| anyhow!("llama.{k}: {e}"))? as usize)
    };
    // A key that is present must be well-formed: a default stands in only for an absent key,
    // and says so. (A malformed rope base or context length read as a default would give a
    // silently different model.)
    let absent = |k: &str, d: &dyn std::fmt::Display| {
        tracing::info!("GGUF metadata has no `{k}`; using {d}");
    };
    let opt_u = |k: &str| -> Result<Option<usize>> {
        match md.get(k) {
            None => Ok(None),
            Some(v) => match v.to_u32() {
                Ok(0) => bail!("GGUF metadata `{k}` is 0"),
                Ok(n) => Ok(Some(n as usize)),
                Err(e) => {
                    bail!("GGUF metadata `{k}` is malformed ({e}); expected an unsigned 32-bit integer")
                }
            },
        }
    };
    let fl = |k: &str, d: f64| -> Result<f64> {
        let key = format!("llama.{k}");
        match md.get(&key) {
            None => {
                absent(&key, &d);
                Ok(d)
            }
            Some(v) => match v.to_f32() {
                Ok(x) if x.is_finite() && x > 0.0 => Ok(x as f64),
                Ok(x) => bail!("GGUF metadata `{key}` is {x}; it must be a positive number"),
                Err(e) => bail!("GGUF metadata `{key}` is malformed ({e}); expected a 32-bit float"),
            },
        }
    };
    let heads = u("attention.head_count")?;
    let kvh = opt_u("llama.attention.head_count_kv")?.unwrap_or(heads);
    let tokens: Vec<String> = get("tokenizer.ggml.tokens")?
        .to_vec()
        .map_err(|e| anyhow!("{e}"))?
        .iter()
        .map(|v| v.to_string().cloned().map_err(|e| anyhow!("tokenizer.ggml.tokens: {e}")))
        .collect::<Result<_>>()?;
    let vocab = opt_u("llama.vocab_size")?.unwrap_or(tokens.len());
    let context = match opt_u("llama.context_length")? {
        Some(n) => n,
        None => {
            absent("llama.context_length", &4096);
            4096
        }
    };
    // Checked before the tensors are read (seconds for a real model).
    let rms_norm_eps = fl("attention.layer_norm_rms_epsilon", 1e-5)?;
    let rope_theta = fl("rope.freq_base", 10_000.0)?;
    let eos = match md.get("tokenizer.ggml.eos_token_id") {
        Some(v) => vec![v.to_u32().map_err(|e| {
            anyhow!("GGUF metadata `tokenizer.ggml.eos_token_id` is malformed ({e}); expected an unsigned 32-bit integer")
        })?],
        None => {
            absent("tokenizer.ggml.eos_token_id", &2);
            vec![2]
        }
    };
    let dev = candle_core::Device::Cpu;
    let mut w = Weights::new();
    let mut qtypes = std::collections::BTreeSet::new();
    let mut stored = vec![];
    let names: Vec<String> = content.tensor_infos.keys().cloned().collect();
    for name in &names {
        let qt = content
            .tensor(&mut f, name, &dev)
            .map_err(|e| anyhow!("tensor {name}: {}", e.to_string().lines().next().unwrap_or_default()))?;
        qtypes.insert(format!("{:?}", qt.dtype()));
        let hf = gguf_to_hf_name(name).ok_or_else(|| anyhow!("unexpected GGUF tensor `{name}`"))?;
        let linear = matches!(hf.1, Some(t) if LayerTensor::LINEAR.contains(&t)) || hf.0 == LM_HEAD;
        if keep_stored && linear {
            // Kept as stored, not dequantized: the plugin that runs them dequantizes them.
            let (rows, cols) = qt.shape().dims2().map_err(|e| anyhow!("tensor {name}: {e}"))?;
            let raw = qt.data().map_err(|e| anyhow!("tensor {name}: {e}"))?;
            let bytes = match hf.1 {
                Some(LayerTensor::Q) => permute_byte_rows(&raw, rows, heads, true)?,
                Some(LayerTensor::K) => permute_byte_rows(&raw, rows, kvh, true)?,
                _ => raw.into_owned(),
            };
            stored.push(StoredTensor { name: hf.0.clone(), ggml_type: qt.dtype(), rows, cols, bytes });
            continue;
        }
        let t = qt.dequantize(&dev).map_err(|e| anyhow!("tensor {name}: {e}"))?;
        let shape = t.dims().to_vec();
        let data: Vec<f32> = t.flatten_all()?.to_vec1()?;
        let ht = HostTensor { shape, data };
        let ht = match hf {
            (_, Some(LayerTensor::Q)) => unpermute_rows(&ht, heads)?,
            (_, Some(LayerTensor::K)) => unpermute_rows(&ht, kvh)?,
            _ => ht,
        };
        w.insert(hf.0, ht);
    }
    let config = Config {
        hidden_size: u("embedding_length")?,
        intermediate_size: u("feed_forward_length")?,
        num_hidden_layers: u("block_count")?,
        num_attention_heads: heads,
        num_key_value_heads: Some(kvh),
        vocab_size: vocab,
        rms_norm_eps,
        rope_theta,
        max_position_embeddings: context,
        tie_word_embeddings: !content.tensor_infos.contains_key("output.weight"),
        rope_scaling: None,
        head_dim: None,
    };
    if !keep_stored {
        check_weights(&config, &w)?;
    }
    let tokenizer = Tokenizer::from_gguf(md, tokens)?;
    let m = LoadedModel {
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
    };
    Ok((m, stored))
}

/// The HF name of a llama.cpp tensor (and which layer tensor it is, for the Q/K un-permute).
pub fn gguf_to_hf_name(name: &str) -> Option<(String, Option<LayerTensor>)> {
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
