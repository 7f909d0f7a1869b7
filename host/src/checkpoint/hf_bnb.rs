//! Hugging Face bitsandbytes 4-bit checkpoints (what transformers' `save_pretrained` writes
//! for a model loaded with `BitsAndBytesConfig(load_in_4bit=True)`) ↔ the nf4/fp4 plugins'
//! packed format (`llq_sdk::quant::four_bit`, bit for bit bitsandbytes' own packing).
//!
//! Per linear layer (bitsandbytes `QuantState.as_dict(packed=True)`, `Params4bit`):
//! `<layer>.weight` uint8 `[⌈n/2⌉, 1]` (the codes, first value in the high nibble);
//! `<layer>.weight.absmax` f32 per block, or with double quantization uint8 codes of
//! `absmax − offset` in blocks of 256, with `.nested_absmax` f32 and `.nested_quant_map` (the
//! 8-bit dynamic map); `.quant_map` the 16-value table; and
//! `.quant_state.bitsandbytes__<nf4|fp4>`, a uint8 tensor holding JSON (`quant_type`,
//! `blocksize`, `dtype`, `shape`, and `nested_blocksize`, `nested_dtype`, `nested_offset`).

use super::stored::{buffer, metadata, packed_layers, Stored, StoredLayer};
use crate::loader::hf::{float_tensor, write_hf_dir, HfParts, RawTensor, TensorBytes};
use crate::loader::LoadedModel;
use crate::model::config::LM_HEAD;
use crate::plugin::PackedMatrix;
use crate::quant::ModelQuantization;
use anyhow::{anyhow, bail, Context, Result};
use llq_sdk::quant::blockwise::dynamic_map;
use llq_sdk::quant::codes::{fp4_table, NF4_TABLE};
use llq_sdk::quant::double_quant::DOUBLE_QUANT_BLOCK;
use safetensors::Dtype;
use std::path::Path;

const METHODS: &[&str] = &["nf4", "fp4"];

fn table(quant_type: &str) -> Result<[f32; 16]> {
    match quant_type {
        "nf4" => Ok(NF4_TABLE),
        "fp4" => Ok(fp4_table()),
        other => bail!("quant_type `{other}` is not nf4 or fp4"),
    }
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn f32_values(name: &str, t: &RawTensor) -> Result<Vec<f32>> {
    if t.dtype != Dtype::F32 {
        bail!("{name} is {:?}, expected F32", t.dtype);
    }
    Ok(t.data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}

/// Write `m` quantized by nf4/fp4 as a transformers + bitsandbytes 4-bit checkpoint. The
/// tensors llq does not quantize are written in f32 (what llq computed with) and the quant
/// states say `float32`: a loader casts them to its compute dtype.
pub fn export(m: &LoadedModel, q: &ModelQuantization, out: &Path) -> Result<()> {
    let mut tensors: Vec<TensorBytes> = vec![];
    let mut quantized = std::collections::BTreeSet::new();
    let mut setting: Option<(String, bool)> = None;
    for (name, p) in packed_layers(q)? {
        let meta = metadata(p)?;
        let qt = meta["quant_type"].as_str().context("metadata quant_type")?.to_string();
        let block = meta["block_size"].as_u64().context("metadata block_size")? as usize;
        let dq = meta["double_quant"].as_bool().context("metadata double_quant")?;
        match &setting {
            None => setting = Some((qt.clone(), dq)),
            Some(s) if *s != (qt.clone(), dq) => bail!(
                "layer {name} is {qt} with double_quant={dq}, the others {} with double_quant={}: transformers' quantization_config holds one setting",
                s.0,
                s.1
            ),
            Some(_) => {}
        }
        let n = p.rows * p.cols;
        let nb = n.div_ceil(block);
        let w = name.to_string();
        tensors.push((w.clone(), Dtype::U8, vec![n.div_ceil(2), 1], buffer(p, "codes")?.to_vec()));
        let mut state = serde_json::json!({
            "quant_type": qt,
            "blocksize": block,
            "dtype": "float32",
            "shape": [p.rows, p.cols],
        });
        if dq {
            tensors.push((format!("{w}.absmax"), Dtype::U8, vec![nb], buffer(p, "absmax_codes")?.to_vec()));
            let a2 = buffer(p, "absmax2")?;
            tensors.push((format!("{w}.nested_absmax"), Dtype::F32, vec![a2.len() / 4], a2.to_vec()));
            tensors.push((format!("{w}.nested_quant_map"), Dtype::F32, vec![256], f32_bytes(&dynamic_map())));
            let off = buffer(p, "absmax_offset")?;
            let off = f32::from_le_bytes(
                off.try_into().map_err(|_| anyhow!("layer {name}: absmax_offset is not one f32"))?,
            );
            state["nested_blocksize"] = DOUBLE_QUANT_BLOCK.into();
            state["nested_dtype"] = "float32".into();
            // The f32 offset as the f64 bitsandbytes' `.item()` gives; JSON keeps it exact.
            state["nested_offset"] = (off as f64).into();
        } else {
            tensors.push((format!("{w}.absmax"), Dtype::F32, vec![nb], buffer(p, "absmax")?.to_vec()));
        }
        tensors.push((format!("{w}.quant_map"), Dtype::F32, vec![16], f32_bytes(&table(&qt)?)));
        let json = state.to_string().into_bytes();
        tensors.push((format!("{w}.quant_state.bitsandbytes__{qt}"), Dtype::U8, vec![json.len()], json));
        quantized.insert(w);
    }
    let (qt, dq) = setting.ok_or_else(|| anyhow!("no quantized layers to export"))?;
    for (n, t) in &m.weights {
        if !quantized.contains(n) {
            tensors.push(float_tensor(n, t, false));
        }
    }
    let qc = serde_json::json!({
        "quant_method": "bitsandbytes",
        "load_in_4bit": true,
        "load_in_8bit": false,
        "bnb_4bit_quant_type": qt,
        "bnb_4bit_use_double_quant": dq,
        "bnb_4bit_compute_dtype": "float32",
        "bnb_4bit_quant_storage": "uint8",
        "llm_int8_skip_modules": if quantized.contains(LM_HEAD) { serde_json::Value::Null } else { serde_json::json!(["lm_head"]) },
        "llq": {"method": q.method, "options": serde_json::from_str::<serde_json::Value>(&q.options)?},
    });
    write_hf_dir(m, out, "float32", Some(qc), tensors)
}

/// Read a bitsandbytes 4-bit checkpoint's linear layers as nf4/fp4 packed matrices.
pub fn read(mut parts: HfParts, qc: &serde_json::Value) -> Result<Stored> {
    if qc.get("load_in_4bit").and_then(|v| v.as_bool()) != Some(true) {
        bail!("quantization_config: only bitsandbytes 4-bit checkpoints (load_in_4bit) are read; LLM.int8 checkpoints are not");
    }
    let mut layers_to_read = parts.model.config.linear_layers();
    if parts.raw.keys().any(|k| k.starts_with("lm_head.weight")) {
        layers_to_read.push((LM_HEAD.into(), parts.model.config.vocab_size, parts.model.config.hidden_size));
    }
    let mut types = std::collections::BTreeSet::new();
    let mut layers = vec![];
    for (name, rows, cols) in layers_to_read {
        let mut take = |s: &str| parts.raw.remove(&format!("{name}{s}"));
        let state_key = [".quant_state.bitsandbytes__nf4", ".quant_state.bitsandbytes__fp4"];
        let state = state_key
            .iter()
            .find_map(|k| take(k))
            .ok_or_else(|| anyhow!("layer {name}: no {name}.quant_state.bitsandbytes__nf4/fp4"))?;
        let state: serde_json::Value = serde_json::from_slice(&state.data)
            .map_err(|e| anyhow!("layer {name}: quant_state is not JSON ({e})"))?;
        let qt = state["quant_type"]
            .as_str()
            .ok_or_else(|| anyhow!("layer {name}: quant_state has no quant_type"))?;
        let tab = table(qt).with_context(|| format!("layer {name}"))?;
        let block = state["blocksize"]
            .as_u64()
            .ok_or_else(|| anyhow!("layer {name}: quant_state has no blocksize"))?;
        if state["shape"] != serde_json::json!([rows, cols]) {
            bail!("layer {name}: quant_state shape {} is not [{rows}, {cols}]", state["shape"]);
        }
        let n = rows * cols;
        let nb = n.div_ceil(block as usize);
        let codes = take("").ok_or_else(|| anyhow!("layer {name}: the packed weight is missing"))?;
        if codes.dtype != Dtype::U8 || codes.data.len() != n.div_ceil(2) {
            bail!(
                "layer {name}: weight is {:?} of {} bytes; expected U8 of {}",
                codes.dtype,
                codes.data.len(),
                n.div_ceil(2)
            );
        }
        let qmap = take(".quant_map").ok_or_else(|| anyhow!("layer {name}: .quant_map is missing"))?;
        if f32_values(&format!("{name}.quant_map"), &qmap)? != tab {
            bail!("layer {name}: quant_map is not bitsandbytes' {qt} table (custom code maps are not supported)");
        }
        let absmax = take(".absmax").ok_or_else(|| anyhow!("layer {name}: .absmax is missing"))?;
        let dq = state.get("nested_offset").is_some();
        let mut buffers = vec![("codes".to_string(), codes.data)];
        if dq {
            if state["nested_blocksize"].as_u64() != Some(DOUBLE_QUANT_BLOCK as u64) {
                bail!(
                    "layer {name}: nested_blocksize {} is not {DOUBLE_QUANT_BLOCK}",
                    state["nested_blocksize"]
                );
            }
            let offset = state["nested_offset"]
                .as_f64()
                .ok_or_else(|| anyhow!("layer {name}: nested_offset is not a number"))?;
            let a2 =
                take(".nested_absmax").ok_or_else(|| anyhow!("layer {name}: .nested_absmax is missing"))?;
            let a2v = f32_values(&format!("{name}.nested_absmax"), &a2)?;
            let map = take(".nested_quant_map")
                .ok_or_else(|| anyhow!("layer {name}: .nested_quant_map is missing"))?;
            if f32_values(&format!("{name}.nested_quant_map"), &map)? != dynamic_map() {
                bail!("layer {name}: nested_quant_map is not bitsandbytes' dynamic map");
            }
            if absmax.dtype != Dtype::U8
                || absmax.data.len() != nb
                || a2v.len() != nb.div_ceil(DOUBLE_QUANT_BLOCK)
            {
                bail!(
                    "layer {name}: nested absmax of {} codes and {} scales for {nb} blocks",
                    absmax.data.len(),
                    a2v.len()
                );
            }
            buffers.push(("absmax_codes".into(), absmax.data));
            buffers.push(("absmax_offset".into(), (offset as f32).to_le_bytes().to_vec()));
            buffers.push(("absmax2".into(), a2.data));
        } else {
            let a = f32_values(&format!("{name}.absmax"), &absmax)?;
            if a.len() != nb {
                bail!("layer {name}: {} absmax values for {nb} blocks", a.len());
            }
            buffers.push(("absmax".into(), absmax.data));
        }
        types.insert(qt.to_string());
        let meta = serde_json::json!({"quant_type": qt, "block_size": block, "double_quant": dq});
        layers.push(StoredLayer {
            name,
            packed: PackedMatrix { rows, cols, buffers, metadata: meta.to_string() },
            options: vec![("block_size".into(), block.to_string()), ("double_quant".into(), dq.to_string())],
        });
    }
    if let Some(extra) = parts.raw.keys().next() {
        bail!("tensor {extra} is neither a float weight nor part of a 4-bit layer llq knows");
    }
    if types.len() > 1 {
        bail!("layers mix nf4 and fp4; --native runs one plugin");
    }
    let qt = types.into_iter().next().unwrap_or_default();
    let methods: &'static [&'static str] = if qt == "fp4" { &METHODS[1..] } else { &METHODS[..1] };
    Ok(Stored { model: parts.model, layers, format: format!("bitsandbytes {qt} safetensors"), methods })
}
