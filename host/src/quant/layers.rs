//! Quantizing a set of linear layers with a configured plugin on a worker pool: the step the
//! plain and the calibrated paths share.

use crate::model::Weights;
use crate::plugin::{CalibrationData, PackedMatrix, QuantConfig};
use crate::util::par::par_map;
use anyhow::{Context, Result};
use std::collections::HashMap;

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
    let p = q.quantize(name, rows, cols, data, calib)?;
    let d = q.dequantize(&p)?;
    if let Some(i) = d.iter().position(|v| !v.is_finite()) {
        anyhow::bail!(
            "plugin {} dequantized layer {name} to a non-finite value ({} at flat index {i})",
            q.name(),
            d[i]
        );
    }
    Ok((p, d))
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
