//! A whole model quantized by a plugin for a device: which layers, calibrated or not, and
//! what the device runs (the plugin's kernels on packed matrices, or dense matrices).

use super::calibrated::{quantize_calibrated, CalibSettings};
use super::layer_opt::LayerOpt;
use super::layers::{quantize_configured, LayerConfigs};
use crate::loader::LoadedModel;
use crate::model::config::{EMBED, LM_HEAD};
use crate::model::PackedLayers;
use crate::plugin::{PackedMatrix, Plugin, QuantConfig};
use crate::results::schema::CalibrationInfo;
use anyhow::{bail, Context, Result};
use candle_core::Device;
use llq_sdk::{CalibrationNeed, CudaKernels};
use std::collections::HashMap;

/// A linear layer: weight name, rows, cols.
type Layer = (String, usize, usize);
/// Options `--opt-layer` sets for a layer, in order.
type Overrides = Vec<(String, String)>;

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
    /// The calibration run, for methods that need one.
    pub calibration: Option<CalibrationInfo>,
    /// The packed matrices by weight name, when asked to keep them (for GPU kernels).
    pub packed: HashMap<String, PackedMatrix>,
    /// Every quantized layer's size, in model order, with the options `--opt-layer` changed.
    pub per_layer: Vec<LayerQuantization>,
    /// The `--opt-layer` arguments, as given.
    pub layer_options: Vec<String>,
    /// Set when the layers were read from a quantized checkpoint (`run --native`): which
    /// file and format; nothing was quantized.
    pub imported: Option<String>,
}

/// One quantized layer's size, and its options where `--opt-layer` changed them.
#[derive(Debug, Clone)]
pub struct LayerQuantization {
    pub name: String,
    pub params: u64,
    pub bytes: u64,
    /// The layer's full options (canonical JSON) when they differ from the model's.
    pub options: Option<String>,
    /// The plugin's metadata for the layer (JSON).
    pub metadata: String,
}

/// How to quantize a model.
pub struct QuantizeOptions<'a> {
    /// Also quantize lm_head (untying it from the embedding).
    pub include_lm_head: bool,
    /// Worker threads for the layers.
    pub threads: usize,
    /// Calibration, for plugins that need it.
    pub calibration: Option<&'a CalibSettings>,
    /// Per-layer options (`--opt-layer`), in order; the last match of a key wins.
    pub layer_opts: &'a [LayerOpt],
}

/// Quantize every linear layer (q/k/v/o/gate/up/down; `lm_head` too when asked) and
/// replace each weight by its dequantized values; a plugin that needs calibration gets it
/// from a calibration run on `device`. With `keep_packed` the packed matrices are kept too (a
/// GPU runs them with the plugin's kernels).
pub fn quantize_model(
    q: &QuantConfig,
    m: &mut LoadedModel,
    o: &QuantizeOptions,
    device: &Device,
    keep_packed: bool,
) -> Result<ModelQuantization> {
    let t = std::time::Instant::now();
    let mut layers: Vec<(String, usize, usize)> = m.config.linear_layers();
    if o.include_lm_head {
        if m.config.tie_word_embeddings {
            // The embedding stays unquantized (a lookup, not a matmul): untie a copy.
            let e = m.weights.get(EMBED).cloned().context("model has no embedding")?;
            m.weights.insert(LM_HEAD.into(), e);
            m.config.tie_word_embeddings = false;
        }
        layers.push((LM_HEAD.into(), m.config.vocab_size, m.config.hidden_size));
    }
    // Layers whose options `--opt-layer` changes, grouped by their resulting options.
    let mut groups: Vec<(Overrides, Vec<Layer>)> = vec![];
    for l in &layers {
        let over: Vec<(String, String)> = o
            .layer_opts
            .iter()
            .filter(|p| p.matches(&l.0))
            .map(|p| (p.key.clone(), p.value.clone()))
            .collect();
        match groups.iter_mut().find(|(g, _)| *g == over) {
            Some((_, ls)) => ls.push(l.clone()),
            None => groups.push((over, vec![l.clone()])),
        }
    }
    for p in o.layer_opts {
        if !layers.iter().any(|l| p.matches(&l.0)) {
            bail!(
                "--opt-layer {}: `{}` matches none of the {} layers quantized",
                p.spec(),
                p.pattern,
                layers.len()
            );
        }
    }
    // One configuration per distinct option set, checked by the plugin's option specs.
    let mut lc = LayerConfigs::uniform(q)?;
    for (over, ls) in groups.iter().filter(|(over, _)| !over.is_empty()) {
        let qc = q.with_overrides(over).with_context(|| {
            format!("--opt-layer options {over:?} for {} layers (e.g. {})", ls.len(), ls[0].0)
        })?;
        lc.add(qc, ls.iter().map(|l| l.0.clone()));
    }
    let (results, calibration) = match (lc.calibration(), o.calibration) {
        (CalibrationNeed::None, _) => {
            (quantize_configured(&lc, &mut m.weights, &layers, &HashMap::new(), o.threads, keep_packed)?, None)
        }
        (_, _) if lc.per_layer() && q.plugin.info.group_scales => bail!(
            "--opt-layer is not supported yet for plugins that fold input scales ({}): their layer groups share one scale",
            q.plugin.info.name
        ),
        (_, Some(s)) => {
            let (r, info) = quantize_calibrated(&lc, m, &layers, s, device, o.threads, keep_packed)?;
            (r, Some(info))
        }
        (_, None) => bail!(
            "plugin {} needs calibration data: run `make data` for the default calibration books or pass --calib-data",
            q.plugin.info.path.display()
        ),
    };
    let mut qm = ModelQuantization {
        method: q.plugin.info.name.clone(),
        method_version: q.plugin.info.version.clone(),
        options: q.canonical(),
        layers: layers.len(),
        quantized_params: 0,
        quantized_bytes: 0,
        seconds: 0.0,
        calibration,
        packed: Default::default(),
        per_layer: vec![],
        layer_options: o.layer_opts.iter().map(LayerOpt::spec).collect(),
        imported: None,
    };
    for r in results {
        qm.quantized_params += (r.rows * r.cols) as u64;
        qm.quantized_bytes += r.bytes;
        qm.per_layer.push(LayerQuantization {
            name: r.name.clone(),
            params: (r.rows * r.cols) as u64,
            bytes: r.bytes,
            options: lc.own_options(&r.name),
            metadata: r.metadata,
        });
        if let Some(p) = r.packed {
            qm.packed.insert(r.name, p);
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
            GpuPath::Kernels => "plugin CUDA kernels: fused matvec for ≤ 8 rows (≤ 64 on tensor cores, kernel header v1.3), dequantize + cuBLAS above",
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
    o: &QuantizeOptions,
) -> Result<Prepared> {
    let plugin = q.plugin;
    let quantization = quantize_model(q, m, o, device, kernels_for(plugin, device).is_some())
        .with_context(|| format!("quantizing with plugin {}", plugin.info.path.display()))?;
    Ok(place(plugin, device, quantization))
}

/// The plugin's kernels, when `device` is a GPU and the plugin ships them.
pub fn kernels_for<'a>(plugin: &'a Plugin, device: &Device) -> Option<&'a CudaKernels> {
    device.is_cuda().then_some(plugin.info.cuda_kernels.as_ref()).flatten()
}

/// A quantization (quantized here, or read from a checkpoint) placed for `device`: its packed
/// layers handed to the plugin's kernels where they will run (`kernels_for`), else dense; a
/// GPU without kernels is warned about.
pub fn place(plugin: &Plugin, device: &Device, mut quantization: ModelQuantization) -> Prepared {
    let (packed, path) = match kernels_for(plugin, device) {
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
    Prepared { quantization, packed, path }
}
