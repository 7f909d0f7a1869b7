//! Hugging Face directories: `config.json`, `model.safetensors` or sharded `*.safetensors`
//! with `model.safetensors.index.json`, `tokenizer.json` (bf16/f16/f32 weights); and writing
//! any loaded model back as one (`llq-host convert`).

use super::loaded::LoadedModel;
use crate::model::config::LM_HEAD;
use crate::model::{check_weights, Config, HostTensor, Weights};
use crate::tokenizer::Tokenizer;
use crate::util::digest::{sha256_file, sha256_hex};
use crate::util::fs::write_atomic;
use anyhow::{anyhow, bail, Context, Result};
use safetensors::Dtype;
use std::path::{Path, PathBuf};

/// A tensor a quantized checkpoint stores beside the float weights (packed codes, scales,
/// quantization state), as stored.
pub struct RawTensor {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

/// An HF directory as stored: the model with its float `*.weight` tensors, and for a
/// quantized checkpoint (`quantization_config` in config.json) every other tensor and that
/// configuration.
pub struct HfParts {
    pub model: LoadedModel,
    pub raw: std::collections::BTreeMap<String, RawTensor>,
    pub quantization_config: Option<serde_json::Value>,
}

pub fn load(dir: &Path) -> Result<LoadedModel> {
    let p = read(dir)?;
    if let Some(q) = &p.quantization_config {
        bail!(
            "{} is a quantized checkpoint (quantization_config: quant_method {}): run it as it is stored with its method's plugin and --native (e.g. --quant plugins/nf4.so --native)",
            dir.display(),
            q.get("quant_method").map(|v| v.to_string()).unwrap_or_else(|| "not given".into())
        );
    }
    check_weights(&p.model.config, &p.model.weights)
        .with_context(|| format!("weights in {}", dir.display()))?;
    Ok(p.model)
}

/// Read an HF directory without checking that every weight is there (a quantized
/// checkpoint's linear layers are in [`HfParts::raw`]).
pub fn read(dir: &Path) -> Result<HfParts> {
    let cfg_path = dir.join("config.json");
    let text =
        std::fs::read_to_string(&cfg_path).with_context(|| format!("cannot read {}", cfg_path.display()))?;
    let raw: serde_json::Value = crate::util::json::parse(&text, &cfg_path)?;
    let config: Config = serde_json::from_value(
        rope_parameters(raw.clone()).with_context(|| format!("{}", cfg_path.display()))?,
    )
    .with_context(|| format!("{} is not a Llama config", cfg_path.display()))?;
    config.validate().with_context(|| format!("{}", cfg_path.display()))?;
    let quantization_config = raw.get("quantization_config").filter(|v| !v.is_null()).cloned();
    let mut raw_tensors = std::collections::BTreeMap::new();
    let index = dir.join("model.safetensors.index.json");
    let files: Vec<PathBuf> = if index.exists() {
        let bytes = std::fs::read(&index).with_context(|| format!("cannot read {}", index.display()))?;
        let v: serde_json::Value = crate::util::json::parse(&bytes, &index)?;
        let map =
            v["weight_map"].as_object().with_context(|| format!("{} has no weight_map", index.display()))?;
        let mut f: Vec<PathBuf> = map.values().filter_map(|x| x.as_str()).map(|s| dir.join(s)).collect();
        f.sort();
        f.dedup();
        f
    } else {
        vec![dir.join("model.safetensors")]
    };
    let mut w = Weights::new();
    let mut hasher_input = String::new();
    let mut file_bytes = 0;
    let mut dtypes = std::collections::BTreeSet::new();
    for file in &files {
        let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
        file_bytes += bytes.len() as u64;
        hasher_input.push_str(&sha256_file(file)?);
        let st = safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| anyhow!("{} is not a valid safetensors file: {e}", file.display()))?;
        for (name, view) in st.tensors() {
            let float = matches!(view.dtype(), Dtype::F32 | Dtype::F16 | Dtype::BF16);
            if quantization_config.is_some() && !(float && name.ends_with(".weight")) {
                let t = RawTensor {
                    dtype: view.dtype(),
                    shape: view.shape().to_vec(),
                    data: view.data().to_vec(),
                };
                raw_tensors.insert(name.to_string(), t);
                continue;
            }
            dtypes.insert(format!("{:?}", view.dtype()));
            let data = tensor_to_f32(&name, view.dtype(), view.data())
                .with_context(|| format!("{}", file.display()))?;
            w.insert(name.to_string(), HostTensor { shape: view.shape().to_vec(), data });
        }
    }
    // Tied models may still carry lm_head; untied ones must.
    if config.tie_word_embeddings {
        w.remove(LM_HEAD);
    }
    w.retain(|k, _| !k.ends_with("rotary_emb.inv_freq"));
    let tok = dir.join("tokenizer.json");
    let tokenizer = Tokenizer::from_file(&tok)?;
    // generation_config.json is optional; one that is there must parse, and an eos_token_id
    // that is there must be token ids (a default would change where generation stops).
    let gen_path = dir.join("generation_config.json");
    let gen = match std::fs::read(&gen_path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", gen_path.display())),
        Ok(b) => Some(crate::util::json::parse::<serde_json::Value>(&b, &gen_path)?),
    };
    let mut eos = vec![];
    for (file, src) in [
        (dir.join("config.json"), raw.get("eos_token_id").cloned()),
        (gen_path.clone(), gen.and_then(|g| g.get("eos_token_id").cloned())),
    ] {
        let id = |v: &serde_json::Value| {
            v.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| anyhow::anyhow!("{}: eos_token_id {v} is not a token id", file.display()))
        };
        match src {
            None | Some(serde_json::Value::Null) => {}
            Some(serde_json::Value::Array(a)) => {
                for v in &a {
                    eos.push(id(v)?);
                }
            }
            Some(v) => eos.push(id(&v)?),
        }
    }
    eos.sort();
    eos.dedup();
    let chat_template = chat_template(&dir.join("tokenizer_config.json"))?;
    let hash = sha256_hex(hasher_input.as_bytes());
    let model = LoadedModel {
        id: dir.display().to_string(),
        format: "hf".into(),
        precision_note: format!(
            "{} safetensors, computed in f32",
            dtypes.into_iter().collect::<Vec<_>>().join("/")
        ),
        config,
        weights: w,
        tokenizer,
        content_hash: hash,
        eos,
        file_bytes,
        chat_template,
    };
    Ok(HfParts { model, raw: raw_tensors, quantization_config })
}

/// transformers ≥ 5 writes RoPE as `rope_parameters` (`rope_theta`, and `rope_type` with a
/// scaling's fields) instead of the top-level `rope_theta` / `rope_scaling` that earlier
/// versions (and llq's `Config`) use: move them to where `Config` reads them, so a present
/// value never gives way to the default (found when llq ran a checkpoint transformers 5.17
/// saved: rope_theta 100000 read as 10000). Both forms present must agree.
fn rope_parameters(mut raw: serde_json::Value) -> Result<serde_json::Value> {
    let Some(rp) = raw.get("rope_parameters").filter(|v| !v.is_null()).cloned() else {
        return Ok(raw);
    };
    let o = raw.as_object_mut().context("config is not a JSON object")?;
    let rp = rp.as_object().ok_or_else(|| anyhow!("rope_parameters is {rp}, not an object"))?;
    if let Some(theta) = rp.get("rope_theta") {
        match o.get("rope_theta") {
            Some(t) if t.as_f64() != theta.as_f64() => {
                bail!("rope_theta {t} and rope_parameters.rope_theta {theta} disagree")
            }
            _ => {
                o.insert("rope_theta".into(), theta.clone());
            }
        }
    }
    let kind = rp.get("rope_type").or_else(|| rp.get("type")).and_then(|v| v.as_str()).unwrap_or("default");
    if kind != "default" {
        let mut scaling = rp.clone();
        scaling.remove("rope_theta");
        scaling.insert("rope_type".into(), kind.into());
        scaling.remove("type");
        match o.get("rope_scaling") {
            Some(s) if !s.is_null() && *s != serde_json::Value::Object(scaling.clone()) => {
                bail!(
                    "rope_scaling {s} and rope_parameters {} disagree",
                    serde_json::Value::Object(rp.clone())
                )
            }
            _ => {
                o.insert("rope_scaling".into(), serde_json::Value::Object(scaling));
            }
        }
    }
    Ok(raw)
}

/// `tokenizer_config.json`'s `chat_template`: absent file or key, none; a file that is there
/// must parse, and a template that is there must be a string (transformers' list-of-named-
/// templates form is not supported: say so rather than run without one).
fn chat_template(p: &Path) -> Result<Option<String>> {
    let b = match std::fs::read(p) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        r => r.with_context(|| format!("cannot read {}", p.display()))?,
    };
    let v: serde_json::Value = crate::util::json::parse(&b, p)?;
    match v.get("chat_template") {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(t)) => Ok(Some(t.clone())),
        Some(other) => bail!(
            "{}: chat_template is {}, not a string (named templates are not supported)",
            p.display(),
            match other {
                serde_json::Value::Array(_) => "a list",
                serde_json::Value::Object(_) => "an object",
                _ => "a number or boolean",
            }
        ),
    }
}

/// Convert a safetensors tensor to f32, or say why not.
pub fn tensor_to_f32(name: &str, dtype: Dtype, data: &[u8]) -> Result<Vec<f32>> {
    Ok(match dtype {
        Dtype::F32 => data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        Dtype::F16 => data.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        Dtype::BF16 => {
            data.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect()
        }
        other => {
            bail!("tensor {name}: dtype {other:?} is not a float type llq can quantize (F32, F16, BF16)")
        }
    })
}

/// A tensor to write: name, dtype, shape, little-endian bytes.
pub type TensorBytes = (String, Dtype, Vec<usize>, Vec<u8>);

/// `t` as f32 or bf16 bytes.
pub fn float_tensor(name: &str, t: &HostTensor, bf16: bool) -> TensorBytes {
    let b: Vec<u8> = if bf16 {
        t.data.iter().flat_map(|v| half::bf16::from_f32(*v).to_le_bytes()).collect()
    } else {
        t.data.iter().flat_map(|v| v.to_le_bytes()).collect()
    };
    (name.to_string(), if bf16 { Dtype::BF16 } else { Dtype::F32 }, t.shape.clone(), b)
}

/// Write `m` as an HF directory: config.json, model.safetensors (f32 or bf16),
/// tokenizer.json (and tokenizer_config.json with the chat template, if any).
pub fn write_hf(m: &LoadedModel, dir: &Path, bf16: bool) -> Result<()> {
    let tensors = m.weights.iter().map(|(n, t)| float_tensor(n, t, bf16)).collect();
    write_hf_dir(m, dir, if bf16 { "bfloat16" } else { "float32" }, None, tensors)
}

/// Write an HF directory for `m`'s config and tokenizer with the given tensors, and a
/// `quantization_config` for a quantized checkpoint (`torch_dtype`: what the float tensors
/// hold).
pub fn write_hf_dir(
    m: &LoadedModel,
    dir: &Path,
    torch_dtype: &str,
    quantization_config: Option<serde_json::Value>,
    tensors: Vec<TensorBytes>,
) -> Result<()> {
    let tok = m
        .tokenizer
        .to_json()
        .ok_or_else(|| anyhow!("the tokenizer of {} has no tokenizer.json form", m.id))?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut cfg = serde_json::to_value(&m.config)?;
    let o = cfg.as_object_mut().context("config is not an object")?;
    o.insert("architectures".into(), serde_json::json!(["LlamaForCausalLM"]));
    o.insert("model_type".into(), "llama".into());
    o.insert("torch_dtype".into(), torch_dtype.into());
    o.insert("eos_token_id".into(), serde_json::json!(m.eos));
    o.insert(
        "llq_converted_from".into(),
        serde_json::json!({"id": m.id, "sha256": m.content_hash, "precision": m.precision_note}),
    );
    if let Some(q) = quantization_config {
        o.insert("quantization_config".into(), q);
    }
    let write = |name: &str, bytes: &[u8]| {
        write_atomic(&dir.join(name), bytes)
            .with_context(|| format!("cannot write {}", dir.join(name).display()))
    };
    write("config.json", serde_json::to_string_pretty(&cfg)?.as_bytes())?;
    write("tokenizer.json", tok.as_bytes())?;
    if let Some(t) = &m.chat_template {
        write(
            "tokenizer_config.json",
            serde_json::to_string_pretty(&serde_json::json!({"chat_template": t}))?.as_bytes(),
        )?;
    }
    let views = tensors
        .iter()
        .map(|(n, d, s, b)| {
            Ok((
                n.as_str(),
                safetensors::tensor::TensorView::new(*d, s.clone(), b).map_err(|e| anyhow!("{n}: {e}"))?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    // transformers reads the checkpoint's format from the metadata (`format: pt`).
    let meta = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
    let data = safetensors::serialize(views, Some(meta)).map_err(|e| anyhow!("serializing: {e}"))?;
    write("model.safetensors", &data)
}

#[cfg(test)]
mod tests {
    use super::rope_parameters;
    use serde_json::json;

    #[test]
    fn transformers_5_rope_parameters_are_read() {
        // As transformers 5.17 saved SmolLM2's config (its rope_theta is 100000).
        let c = rope_parameters(json!({"rope_parameters": {"rope_theta": 100000.0, "rope_type": "default"}}))
            .unwrap();
        assert_eq!(c["rope_theta"], json!(100000.0));
        assert!(c.get("rope_scaling").is_none());
        let llama3 = json!({"rope_theta": 500000.0, "rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 8192});
        let c = rope_parameters(json!({ "rope_parameters": llama3 })).unwrap();
        assert_eq!(c["rope_theta"], json!(500000.0));
        assert_eq!(c["rope_scaling"]["factor"], json!(32.0));
        assert_eq!(c["rope_scaling"]["rope_type"], json!("llama3"));
        assert!(c["rope_scaling"].get("rope_theta").is_none());
        // The older form alone is untouched; both forms must agree.
        assert_eq!(rope_parameters(json!({"rope_theta": 1.0})).unwrap(), json!({"rope_theta": 1.0}));
        let e = rope_parameters(json!({"rope_theta": 10000.0, "rope_parameters": {"rope_theta": 100000.0}}))
            .unwrap_err();
        assert!(e.to_string().contains("disagree"), "{e}");
    }
}
