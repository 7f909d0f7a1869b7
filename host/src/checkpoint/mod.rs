//! Quantized checkpoints in and out: the formats people deploy with, read as stored and run
//! with the plugin whose packed format they are (`run --native`), and written from a model
//! quantized by a plugin (`quantize --model M --export FORMAT`).
//!
//! | format | file | plugins | module |
//! |---|---|---|---|
//! | `gguf` | llama.cpp GGUF, blocks of any of the gguf plugin's ten types | gguf | [`gguf`] |
//! | `hf-bnb` | transformers + bitsandbytes 4-bit safetensors (`quant_state`) | nf4, fp4 | [`hf_bnb`] |
//! | `hf-gptq` | AutoGPTQ/GPTQModel safetensors (`qweight`/`qzeros`/`scales`/`g_idx`) | gptq, rtn, awq | [`hf_int`] |
//! | `hf-awq` | AutoAWQ GEMM safetensors (`qweight`/`qzeros`/`scales`) | awq, rtn, gptq | [`hf_int`] |
//!
//! Each converter maps the file's tensors one to one onto the plugin's packed buffers (the
//! formats of `llq_sdk::quant::{intgroup, four_bit}` and of the gguf plugin): import and
//! export move bits, never requantize, so export → import gives the same packed buffers
//! (tested), and the numbers a run computes with are the plugin's own dequantization of them.

pub mod gguf;
pub mod hf_bnb;
pub mod hf_int;
mod stored;

pub use stored::{Stored, StoredLayer};

use crate::loader::LoadedModel;
use crate::model::check_weights;
use crate::model::config::LM_HEAD;
use crate::model::HostTensor;
use crate::plugin::Plugin;
use crate::quant::layers::dequantize_finite;
use crate::quant::model::{kernels_for, place, LayerQuantization};
use crate::quant::{ModelQuantization, Prepared};
use anyhow::{bail, Context, Result};
use candle_core::Device;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// A checkpoint format llq writes (`quantize --export`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    Gguf,
    HfBnb,
    HfGptq,
    HfAwq,
}

impl ExportFormat {
    /// Every format with its `--export` name.
    const ALL: [(&'static str, ExportFormat); 4] = [
        ("gguf", ExportFormat::Gguf),
        ("hf-bnb", ExportFormat::HfBnb),
        ("hf-gptq", ExportFormat::HfGptq),
        ("hf-awq", ExportFormat::HfAwq),
    ];

    /// The `--export` name.
    pub fn name(self) -> &'static str {
        Self::ALL.iter().find(|(_, f)| *f == self).map(|(n, _)| *n).unwrap_or("?")
    }
}

impl std::str::FromStr for ExportFormat {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Self::ALL.iter().find(|(n, _)| *n == s).map(|(_, f)| *f).ok_or_else(|| {
            let names: Vec<&str> = Self::ALL.iter().map(|(n, _)| *n).collect();
            format!("unknown export format `{s}` ({})", names.join(", "))
        })
    }
}

/// Read a quantized checkpoint: a GGUF file, or an HF directory whose config.json has a
/// `quantization_config` (bitsandbytes 4-bit, GPTQ, AWQ).
pub fn read(spec: &str) -> Result<Stored> {
    let path = Path::new(spec);
    if spec.starts_with("synthetic:") || !path.exists() {
        bail!("--native reads a quantized checkpoint (a GGUF file or an HF directory); {spec} is neither");
    }
    if path.is_dir() {
        let parts = crate::loader::hf::read(path).with_context(|| format!("cannot load model {spec}"))?;
        let Some(q) = parts.quantization_config.clone() else {
            bail!("model {spec} has no quantization_config in config.json: it is not a quantized checkpoint, so --native has nothing to keep (quantize it with --quant instead)");
        };
        let method = q.get("quant_method").and_then(|v| v.as_str()).unwrap_or_default().to_string();
        return match method.as_str() {
            "bitsandbytes" => hf_bnb::read(parts, &q),
            "gptq" => hf_int::read(parts, &q, hf_int::Layout::Gptq),
            "awq" => hf_int::read(parts, &q, hf_int::Layout::Awq),
            other => bail!(
                "model {spec}: quantization_config.quant_method `{other}` is not one llq reads (bitsandbytes, gptq, awq)"
            ),
        }
        .with_context(|| format!("model {spec}"));
    }
    gguf::read(path).with_context(|| format!("model {spec}"))
}

/// Load a quantized checkpoint to run as stored: every linear layer is the plugin's
/// dequantization of the stored bits (no quantization runs), and on a GPU with the plugin's
/// kernels the packed layers run as they are.
pub fn import(spec: &str, plugin: &Plugin, device: &Device) -> Result<(LoadedModel, Prepared)> {
    let t = std::time::Instant::now();
    let s = read(spec)?;
    let name = plugin.info.name.as_str();
    if !s.methods.contains(&name) {
        bail!(
            "model {spec} stores {}: --native runs it with the {} plugin, not {} ({})",
            s.format,
            s.methods.join(" or "),
            name,
            plugin.info.path.display()
        );
    }
    let mut m = s.model;
    // The model's options: those most layers have (the others are recorded per layer).
    let mut counts: BTreeMap<&Vec<(String, String)>, usize> = BTreeMap::new();
    for l in &s.layers {
        *counts.entry(&l.options).or_default() += 1;
    }
    let base_opts = counts.iter().max_by_key(|(_, n)| **n).map(|(o, _)| (*o).clone()).unwrap_or_default();
    let base = plugin.configure(&base_opts).with_context(|| format!("the options {} implies", s.format))?;
    // As `quant::prepare`: the packed layers are kept only where the plugin's kernels run them.
    let keep_packed = kernels_for(plugin, device).is_some();
    let mut q = ModelQuantization {
        method: name.to_string(),
        method_version: plugin.info.version.clone(),
        options: base.canonical(),
        layers: s.layers.len(),
        quantized_params: 0,
        quantized_bytes: 0,
        seconds: 0.0,
        calibration: None,
        packed: HashMap::new(),
        per_layer: vec![],
        layer_options: vec![],
        imported: Some(format!("{spec}: {} (no quantization ran)", s.format)),
    };
    for l in s.layers {
        let own = if l.options == base_opts {
            None
        } else {
            Some(plugin.configure(&l.options).with_context(|| format!("layer {}", l.name))?.canonical())
        };
        let p = l.packed;
        let data = dequantize_finite(plugin, &l.name, &p).with_context(|| format!("model {spec}"))?;
        m.weights.insert(l.name.clone(), HostTensor { shape: vec![p.rows, p.cols], data });
        let params = (p.rows * p.cols) as u64;
        q.quantized_params += params;
        q.quantized_bytes += p.bytes();
        q.per_layer.push(LayerQuantization {
            name: l.name.clone(),
            params,
            bytes: p.bytes(),
            options: own,
            metadata: p.metadata.clone(),
        });
        if keep_packed {
            q.packed.insert(l.name, p);
        }
    }
    if m.weights.contains_key(LM_HEAD) {
        m.config.tie_word_embeddings = false;
    }
    check_weights(&m.config, &m.weights).with_context(|| format!("model {spec}"))?;
    m.precision_note = format!(
        "{} as stored, dequantized by the {name} plugin (--native: no unquantized weights)",
        s.format
    );
    q.seconds = t.elapsed().as_secs_f64();
    Ok((m, place(plugin, device, q)))
}

/// Write `m`, quantized as `q` (its packed layers kept), as a checkpoint of `format` at `out`
/// (a file for GGUF, a directory for the HF formats); `source` is the model it was loaded
/// from (GGUF export copies its metadata and unquantized tensors).
pub fn export(
    format: ExportFormat,
    m: &LoadedModel,
    q: &ModelQuantization,
    source: &str,
    out: &Path,
) -> Result<()> {
    if q.packed.len() != q.layers {
        bail!("internal: {} of {} quantized layers kept their packed form", q.packed.len(), q.layers);
    }
    check_export(format, &q.method, source)?;
    match format {
        ExportFormat::Gguf => gguf::export(m, q, source, out),
        ExportFormat::HfBnb => hf_bnb::export(m, q, out),
        ExportFormat::HfGptq => hf_int::export(m, q, out, hf_int::Layout::Gptq),
        ExportFormat::HfAwq => hf_int::export(m, q, out, hf_int::Layout::Awq),
    }
}

/// Whether `method`'s packed format can be written as `format` from `source`: checked before
/// a model is quantized for an export, so no work is lost to a refusal.
pub fn check_export(format: ExportFormat, method: &str, source: &str) -> Result<()> {
    let methods: &[&str] = match format {
        ExportFormat::Gguf => &["gguf"],
        ExportFormat::HfBnb => &["nf4", "fp4"],
        ExportFormat::HfGptq | ExportFormat::HfAwq => hf_int::METHODS,
    };
    if !methods.contains(&method) {
        bail!(
            "--export {}: the {} plugin's packed format has no place in that format (it takes {})",
            format.name(),
            method,
            methods.join(", ")
        );
    }
    if format == ExportFormat::Gguf {
        let mut magic = [0u8; 4];
        let is_gguf = std::fs::File::open(source)
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
            .is_ok_and(|_| &magic == b"GGUF");
        if !is_gguf {
            bail!("--export gguf copies the tokenizer and hyper-parameters of a GGUF model; {source} is not one");
        }
    }
    Ok(())
}
