//! Quantizing a set of linear layers with a configured plugin on a worker pool: the step the
//! plain and the calibrated paths share.

use crate::model::Weights;
use crate::plugin::{CalibrationData, PackedMatrix, Plugin, QuantConfig};
use crate::util::par::par_map;
use anyhow::{Context, Result};
use llq_sdk::CalibrationNeed;
use std::collections::HashMap;

/// The configuration each layer is quantized with: the model's options, or those `--opt-layer`
/// gave it (one configuration per distinct option set).
pub struct LayerConfigs<'p> {
    configs: Vec<QuantConfig<'p>>,
    /// Layer name → index into `configs`; absent: `configs[0]`, the model's options.
    of: HashMap<String, usize>,
}

impl<'p> LayerConfigs<'p> {
    /// Every layer with `base`'s options.
    pub fn uniform(base: &QuantConfig<'p>) -> Result<Self> {
        Ok(LayerConfigs { configs: vec![base.with_overrides(&[])?], of: HashMap::new() })
    }

    /// `layers` quantized with `config` instead of the model's options.
    pub fn add(&mut self, config: QuantConfig<'p>, layers: impl IntoIterator<Item = String>) {
        self.configs.push(config);
        let i = self.configs.len() - 1;
        self.of.extend(layers.into_iter().map(|n| (n, i)));
    }

    /// The model's options (what searches input scales and names the method).
    pub fn base(&self) -> &QuantConfig<'p> {
        &self.configs[0]
    }

    /// The full options (canonical JSON) of a layer that has options of its own.
    pub fn own_options(&self, name: &str) -> Option<String> {
        self.of.get(name).map(|&i| self.configs[i].canonical())
    }

    /// The calibration the run needs: the plugin's kind when any layer's options need it
    /// (ABI 1.3 allows only none or that kind), else none.
    pub fn calibration(&self) -> CalibrationNeed {
        self.configs
            .iter()
            .map(|c| c.calibration())
            .find(|n| *n != CalibrationNeed::None)
            .unwrap_or(CalibrationNeed::None)
    }

    /// Whether any layer has options of its own.
    pub fn per_layer(&self) -> bool {
        self.configs.len() > 1
    }
}

/// [`quantize_layers`] with each layer's own configuration; results in the order of `layers`.
pub fn quantize_configured(
    lc: &LayerConfigs,
    weights: &mut Weights,
    layers: &[(String, usize, usize)],
    calib: &HashMap<String, CalibrationData>,
    threads: usize,
    keep_packed: bool,
) -> Result<Vec<LayerResult>> {
    let mut out = vec![];
    for (i, q) in lc.configs.iter().enumerate() {
        let mine: Vec<(String, usize, usize)> =
            layers.iter().filter(|(n, ..)| lc.of.get(n).copied().unwrap_or(0) == i).cloned().collect();
        if !mine.is_empty() {
            out.extend(quantize_layers(q, weights, &mine, calib, threads, keep_packed)?);
        }
    }
    let order: HashMap<&str, usize> = layers.iter().enumerate().map(|(i, (n, ..))| (n.as_str(), i)).collect();
    out.sort_by_key(|r| order.get(r.name.as_str()).copied().unwrap_or(usize::MAX));
    Ok(out)
}

/// One layer, quantized.
pub struct LayerResult {
    pub name: String,
    pub rows: usize,
    pub cols: usize,
    /// Bytes of the packed form.
    pub bytes: u64,
    /// The plugin's metadata for the packed form (JSON).
    pub metadata: String,
    /// The packed matrix, when asked to keep it (a GPU runs it with the plugin's kernels).
    pub packed: Option<PackedMatrix>,
}

/// Quantize one matrix and dequantize it again: the packed form and the values the model
/// computes with, checked finite (a plugin's NaN is an error naming it and the layer).
pub fn quantize_one(
    q: &QuantConfig,
    name: &str,
    rows: usize,
    cols: usize,
    data: &[f32],
    calib: Option<&CalibrationData>,
) -> Result<(PackedMatrix, Vec<f32>)> {
    let t = std::time::Instant::now();
    let p = q.quantize(name, rows, cols, data, calib)?;
    let quantize_s = t.elapsed().as_secs_f64();
    let d = dequantize_finite(q.plugin, name, &p)?;
    // The per-layer split of a calibrated run's `quantize` phase (bench/gpu_speed_11.sh).
    tracing::debug!(
        "{name}: the plugin's quantize {quantize_s:.3} s, dequantize {:.3} s",
        t.elapsed().as_secs_f64() - quantize_s
    );
    Ok((p, d))
}

/// The values a packed layer computes with, checked finite (a plugin's NaN is an error naming
/// it and the layer): what quantizing and importing a checkpoint both run.
pub fn dequantize_finite(plugin: &Plugin, name: &str, p: &PackedMatrix) -> Result<Vec<f32>> {
    let d = plugin.dequantize(p)?;
    if let Some(i) = d.iter().position(|v| !v.is_finite()) {
        anyhow::bail!(
            "plugin {} dequantized layer {name} to a non-finite value ({} at flat index {i})",
            plugin.name(),
            d[i]
        );
    }
    Ok(d)
}

/// Quantize the `layers` (name, rows, cols) of `weights` with `q`, each with its calibration
/// data when there is some, and replace each weight by its dequantized values.
pub fn quantize_layers(
    q: &QuantConfig,
    weights: &mut Weights,
    layers: &[(String, usize, usize)],
    calib: &HashMap<String, CalibrationData>,
    threads: usize,
    keep_packed: bool,
) -> Result<Vec<LayerResult>> {
    let results = par_map(threads, layers, |_, (name, r, c)| {
        let w = weights.get(name).with_context(|| format!("layer {name} is missing"))?;
        quantize_one(q, name, *r, *c, &w.data, calib.get(name))
    })?;
    let mut out = Vec::with_capacity(layers.len());
    for ((name, rows, cols), (p, d)) in layers.iter().zip(results) {
        if let Some(w) = weights.get_mut(name) {
            w.data = d;
        }
        out.push(LayerResult {
            name: name.clone(),
            rows: *rows,
            cols: *cols,
            bytes: p.bytes(),
            metadata: p.metadata.clone(),
            packed: keep_packed.then_some(p),
        });
    }
    Ok(out)
}
