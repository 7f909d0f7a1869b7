//! GGUF checkpoints: llama.cpp's block types as the gguf plugin packs them (one `blocks`
//! buffer of the file's bytes, metadata `type`). Blocks run along each row, so the loader's
//! Q/K row reordering (GGUF interleaved pairs ↔ HF rotate-half) moves whole rows of blocks
//! and leaves every block as stored.

use super::stored::{buffer, metadata, packed_layers, Stored, StoredLayer};
use crate::loader::gguf::{gguf_to_hf_name, load_stored};
use crate::loader::permute::permute_byte_rows;
use crate::loader::LoadedModel;
use crate::model::config::{LayerTensor, LM_HEAD};
use crate::plugin::PackedMatrix;
use crate::quant::ModelQuantization;
use crate::util::fs::write_atomic;
use anyhow::{anyhow, bail, Context, Result};
use candle_core::quantized::{gguf_file, GgmlDType, QStorage, QTensor};
use candle_core::Device;
use std::borrow::Cow;
use std::collections::BTreeSet;
use std::path::Path;

/// The gguf plugin's type names, candle's types, and llama.cpp's `LLAMA_FTYPE_MOSTLY_*` for
/// a file mostly of that type (llama.h; the K types' `_S` variants, the pure recipes).
const TYPES: [(&str, GgmlDType, u32); 10] = [
    ("q4_0", GgmlDType::Q4_0, 2),
    ("q4_1", GgmlDType::Q4_1, 3),
    ("q8_0", GgmlDType::Q8_0, 7),
    ("q5_0", GgmlDType::Q5_0, 8),
    ("q5_1", GgmlDType::Q5_1, 9),
    ("q2_k", GgmlDType::Q2K, 10),
    ("q3_k", GgmlDType::Q3K, 11),
    ("q4_k", GgmlDType::Q4K, 14),
    ("q5_k", GgmlDType::Q5K, 16),
    ("q6_k", GgmlDType::Q6K, 18),
];

/// A GGUF file's linear layers as the gguf plugin's packed matrices.
pub fn read(path: &Path) -> Result<Stored> {
    let (model, stored) = load_stored(path)?;
    let mut types = BTreeSet::new();
    let mut layers = vec![];
    for t in stored {
        let Some(&(ty, ..)) = TYPES.iter().find(|x| x.1 == t.ggml_type) else {
            bail!(
                "layer {} is stored as {:?}, not one of the gguf plugin's block types ({}); --native runs quantized layers only",
                t.name,
                t.ggml_type,
                TYPES.map(|x| x.0).join(", ")
            );
        };
        types.insert(ty.to_uppercase());
        let meta = serde_json::json!({ "type": ty });
        layers.push(StoredLayer {
            name: t.name,
            packed: PackedMatrix {
                rows: t.rows,
                cols: t.cols,
                buffers: vec![("blocks".into(), t.bytes)],
                metadata: meta.to_string(),
            },
            options: vec![("type".into(), ty.into())],
        });
    }
    if layers.is_empty() {
        bail!("the file holds no linear layers");
    }
    let format = format!("GGUF {} blocks", types.into_iter().collect::<Vec<_>>().join("/"));
    Ok(Stored { model, layers, format, methods: &["gguf"] })
}

/// Write `m` quantized by the gguf plugin as a GGUF file: the source GGUF's metadata
/// (tokenizer, hyper-parameters) and the tensors llq did not quantize as the source stores
/// them, the quantized layers' blocks (Q/K rows back in GGUF order), and llq's record of
/// the quantization (`llq.quantization.*`).
pub fn export(m: &LoadedModel, q: &ModelQuantization, source: &str, out: &Path) -> Result<()> {
    let mut f = std::fs::File::open(source).with_context(|| {
        format!(
            "--export gguf copies the tokenizer and hyper-parameters of a GGUF model; cannot open {source}"
        )
    })?;
    let content = gguf_file::Content::read(&mut f).map_err(|e| {
        anyhow!(
            "--export gguf copies the tokenizer and hyper-parameters of a GGUF model; {source} is not one ({})",
            e.to_string().lines().next().unwrap_or_default()
        )
    })?;
    let (heads, kvh) = (m.config.num_attention_heads, m.config.kv_heads());
    let packed = packed_layers(q)?;
    let dev = Device::Cpu;
    let mut tensors: Vec<(String, QTensor)> = vec![];
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort_by_key(|n| content.tensor_infos[*n].offset);
    let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
    for name in names {
        let (hf, kind) =
            gguf_to_hf_name(name).ok_or_else(|| anyhow!("{source}: unexpected GGUF tensor `{name}`"))?;
        let t = match packed.iter().find(|(n, _)| *n == hf) {
            Some((_, p)) => {
                let (t, ty) = blocks_tensor(p, kind, heads, kvh).with_context(|| format!("layer {hf}"))?;
                *counts.entry(ty).or_default() += 1;
                t
            }
            None => content.tensor(&mut f, name, &dev).map_err(|e| {
                anyhow!("{source}: tensor {name}: {}", e.to_string().lines().next().unwrap_or_default())
            })?,
        };
        tensors.push((name.clone(), t));
    }
    // lm_head quantized from a tied embedding: a new `output.weight`.
    if !content.tensor_infos.contains_key("output.weight") {
        if let Some((_, p)) = packed.iter().find(|(n, _)| *n == LM_HEAD) {
            let (t, ty) = blocks_tensor(p, None, heads, kvh).context("lm_head")?;
            *counts.entry(ty).or_default() += 1;
            tensors.push(("output.weight".into(), t));
        }
    }
    let written: usize = counts.values().sum();
    if written != packed.len() {
        bail!("{source} has tensors for {written} of the {} quantized layers", packed.len());
    }
    let main = counts.iter().max_by_key(|(_, n)| **n).map(|(t, _)| *t).unwrap_or("q4_0");
    let ftype = TYPES.iter().find(|t| t.0 == main).map(|t| t.2).unwrap_or(0);
    let mut md: Vec<(String, gguf_file::Value)> = content
        .metadata
        .iter()
        .filter(|(k, _)| k.as_str() != "general.file_type" && !k.starts_with("llq."))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    md.push(("general.file_type".into(), gguf_file::Value::U32(ftype)));
    md.push(("llq.quantization.method".into(), gguf_file::Value::String(q.method.clone())));
    md.push(("llq.quantization.options".into(), gguf_file::Value::String(q.options.clone())));
    md.push(("llq.source.sha256".into(), gguf_file::Value::String(m.content_hash.clone())));
    // general.* first, as llama.cpp's writer orders them; the rest by name.
    md.sort_by(|a, b| (!a.0.starts_with("general."), &a.0).cmp(&(!b.0.starts_with("general."), &b.0)));
    let md_refs: Vec<(&str, &gguf_file::Value)> = md.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let t_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut bytes = std::io::Cursor::new(Vec::new());
    gguf_file::write(&mut bytes, &md_refs, &t_refs).map_err(|e| anyhow!("writing GGUF: {e}"))?;
    write_atomic(out, bytes.get_ref())
}

/// A packed layer as a GGUF tensor (Q/K rows back in GGUF order), and its type name.
fn blocks_tensor(
    p: &PackedMatrix,
    kind: Option<LayerTensor>,
    heads: usize,
    kvh: usize,
) -> Result<(QTensor, &'static str)> {
    let meta = metadata(p)?;
    let ty = meta["type"].as_str().ok_or_else(|| anyhow!("packed metadata has no `type`"))?;
    let &(name, dtype, _) =
        TYPES.iter().find(|t| t.0 == ty).ok_or_else(|| anyhow!("`{ty}` is not a GGUF block type"))?;
    let blocks = buffer(p, "blocks")?;
    let blocks = match kind {
        Some(LayerTensor::Q) => permute_byte_rows(blocks, p.rows, heads, false)?,
        Some(LayerTensor::K) => permute_byte_rows(blocks, p.rows, kvh, false)?,
        _ => blocks.to_vec(),
    };
    let storage = QStorage::from_data(Cow::Owned(blocks), &Device::Cpu, dtype).map_err(|e| anyhow!("{e}"))?;
    let t = QTensor::new(storage, (p.rows, p.cols)).map_err(|e| anyhow!("{e}"))?;
    Ok((t, name))
}
