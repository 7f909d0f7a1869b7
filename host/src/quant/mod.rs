//! Quantizing a model with a plugin: every linear layer replaced by the plugin's dequantized
//! values (the CPU computes with exactly the plugin's numerics), the packed matrices kept for
//! the device when the plugin ships kernels, and the size accounting of the result.

use crate::loader::LoadedModel;
use crate::model::config::{EMBED, LM_HEAD};
use crate::model::PackedLayers;
use crate::plugin::{PackedMatrix, QuantConfig};
use crate::results::schema::Size;
use crate::util::par::par_map;
use anyhow::{Context, Result};
use candle_core::Device;
use std::collections::HashMap;

/// What quantizing a model's linear layers cost and produced.
#[derive(Debug, Clone)]
pub struct ModelQuantization {
    pub method: String,
    pub method_version: String,
    /// Every option, defaults filled in, as a canonical JSON object.
    pub options: String,
    pub layers: usize,
    /// Parameters in the quantized matrices, and the bytes of their packed form.
    pub quantized_params: u64,
    pub quantized_bytes: u64,
    pub seconds: f64,
    /// The packed matrices by weight name, when asked to keep them (for GPU kernels).
    pub packed: HashMap<String, PackedMatrix>,
}

/// Quantize every linear layer (q/k/v/o/gate/up/down; `lm_head` too when asked) and
/// replace each weight by its dequantized values. Layers run on `threads` threads. With
/// `keep_packed` the packed matrices are kept too (a GPU runs them with the plugin's kernels).
pub fn quantize_model(
    q: &QuantConfig,
    m: &mut LoadedModel,
    include_lm_head: bool,
    threads: usize,
    keep_packed: bool,
) -> Result<ModelQuantization> {
    let t = std::time::Instant::now();
    let (cfg, weights) = (&mut m.config, &mut m.weights);
    let mut layers: Vec<(String, usize, usize)> = cfg.linear_layers();
    if include_lm_head {
        if cfg.tie_word_embeddings {
            // The embedding stays unquantized (a lookup, not a matmul): untie a copy.
            let e = weights.get(EMBED).cloned().context("model has no embedding")?;
            weights.insert(LM_HEAD.into(), e);
            cfg.tie_word_embeddings = false;
        }
        layers.push((LM_HEAD.into(), cfg.vocab_size, cfg.hidden_size));
    }
    let results = par_map(threads, &layers, |_, (name, r, c)| {
        let w = weights.get(name).with_context(|| format!("layer {name} is missing"))?;
        let p = q.quantize(name, *r, *c, &w.data, None)?;
        let d = q.dequantize(&p)?;
        Ok((p.bytes(), d, keep_packed.then_some(p)))
    })?;
    let mut qm = ModelQuantization {
        method: q.plugin.info.name.clone(),
        method_version: q.plugin.info.version.clone(),
        options: q.canonical(),
        layers: layers.len(),
        quantized_params: 0,
        quantized_bytes: 0,
        seconds: 0.0,
        packed: Default::default(),
    };
    for ((name, r, c), (bytes, data, p)) in layers.iter().zip(results) {
        if let Some(p) = p {
            qm.packed.insert(name.clone(), p);
        }
        qm.quantized_params += (*r * *c) as u64;
        qm.quantized_bytes += bytes;
        if let Some(w) = weights.get_mut(name) {
            w.data = data;
        }
    }
    qm.seconds = t.elapsed().as_secs_f64();
    Ok(qm)
}

/// How a quantized model runs on its device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GpuPath {
    /// The CPU, or a GPU without a plugin: dense matrices.
    Dense,
    /// The plugin's CUDA kernels on its packed matrices.
    Kernels,
    /// A GPU, but the plugin has no kernels: its dequantized layers as dense matrices.
    HostDequantized,
}

impl GpuPath {
    pub fn describe(self) -> &'static str {
        match self {
            GpuPath::Dense => "bf16",
            GpuPath::Kernels => "plugin CUDA kernels: fused matvec for ≤ 8 rows, dequantize + cuBLAS above",
            GpuPath::HostDequantized => "layers dequantized on the host (plugin has no kernels)",
        }
    }
}

/// A model quantized for `device`: the accounting, and the packed layers to build the model
/// with (`Llama::with_packed`) when the device runs the plugin's kernels.
pub struct Prepared {
    pub quantization: ModelQuantization,
    pub packed: Option<PackedLayers>,
    pub path: GpuPath,
}

/// Quantize `m` with `q` for `device`, keeping the packed matrices only where they will run
/// (a GPU and a plugin with kernels); a GPU without kernels is warned about.
pub fn prepare(
    q: &QuantConfig,
    m: &mut LoadedModel,
    device: &Device,
    include_lm_head: bool,
    threads: usize,
) -> Result<Prepared> {
    let plugin = q.plugin;
    let kernels = device.is_cuda().then_some(plugin.info.cuda_kernels.as_ref()).flatten();
    let mut quantization = quantize_model(q, m, include_lm_head, threads, kernels.is_some())
        .with_context(|| format!("quantizing with plugin {}", plugin.info.path.display()))?;
    let (packed, path) = match kernels {
        Some(k) => {
            let layers = std::mem::take(&mut quantization.packed);
            (
                Some(PackedLayers { method: plugin.info.name.clone(), kernels: k.clone(), layers }),
                GpuPath::Kernels,
            )
        }
        None if device.is_cuda() => {
            tracing::warn!(
                "plugin {} ships no CUDA kernels: its layers run on the GPU as bf16 matrices dequantized on the host (slow path; speed and memory are bf16's)",
                plugin.info.name
            );
            (None, GpuPath::HostDequantized)
        }
        None => (None, GpuPath::Dense),
    };
    Ok(Prepared { quantization, packed, path })
}

/// What the model's weights take as stored: the quantized layers packed (without a plugin:
/// at 4 bytes, f32 as computed), everything else at 2 bytes per parameter (fp16, as
/// transformers + bitsandbytes keep it).
pub fn model_size(m: &LoadedModel, q: Option<&ModelQuantization>) -> Size {
    let params: u64 = m.weights.values().map(|t| t.data.len() as u64).sum();
    let (qp, qb) = match q {
        Some(q) => (q.quantized_params, q.quantized_bytes),
        None => {
            let p: u64 = m.config.linear_layers().iter().map(|(_, r, c)| (*r * *c) as u64).sum();
            (p, p * 4)
        }
    };
    let other = (params - qp) * 2;
    Size {
        params,
        quantized_params: qp,
        quantized_bytes: qb,
        other_bytes: other,
        total_bytes: qb + other,
        bits_per_weight: 8.0 * qb as f64 / qp.max(1) as f64,
        bits_per_param_overall: 8.0 * (qb + other) as f64 / params.max(1) as f64,
    }
}
