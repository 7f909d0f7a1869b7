//! Host-side tensors: what every loader produces and what quantization rewrites before the
//! model is built on a device.

use super::config::Config;
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;

/// A tensor in host memory, f32, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// All of a model's tensors by HF name.
pub type Weights = BTreeMap<String, HostTensor>;

/// Check that `weights` holds exactly the tensors `cfg` needs, with the right shapes, and
/// only finite values: what every file loader calls, whatever the method.
pub fn check_weights(cfg: &Config, weights: &Weights) -> Result<()> {
    check_shapes(cfg, weights)?;
    check_finite(weights)
}

/// Exactly the tensors `cfg` needs, with the right shapes: a checkpoint with tensors the
/// config does not use (e.g. more layers than `num_hidden_layers`) would otherwise run as a
/// silently truncated model.
pub fn check_shapes(cfg: &Config, weights: &Weights) -> Result<()> {
    let expected = cfg.expected_tensors();
    for (name, shape) in &expected {
        let t = weights.get(name).with_context(|| format!("tensor `{name}` is missing"))?;
        if &t.shape != shape {
            bail!("tensor `{name}` has shape {:?}, the config implies {:?}", t.shape, shape);
        }
        if t.data.len() != shape.iter().product::<usize>() {
            bail!("tensor `{name}` holds {} values for shape {:?}", t.data.len(), shape);
        }
    }
    let names: std::collections::BTreeSet<&str> = expected.iter().map(|(n, _)| n.as_str()).collect();
    let extra: Vec<&str> = weights.keys().map(String::as_str).filter(|k| !names.contains(k)).collect();
    if !extra.is_empty() {
        bail!(
            "{} tensor(s) the config ({} layers) does not use: {}{}; the checkpoint and its config disagree",
            extra.len(),
            cfg.num_hidden_layers,
            extra.iter().take(5).map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", "),
            if extra.len() > 5 { ", …" } else { "" }
        );
    }
    Ok(())
}

/// Only finite values: a NaN or infinity would otherwise show only later, as a NaN perplexity
/// (or not at all, under greedy generation).
pub fn check_finite(weights: &Weights) -> Result<()> {
    use rayon::prelude::*;
    let bad = weights
        .par_iter()
        .find_map_first(|(name, t)| t.data.iter().position(|v| !v.is_finite()).map(|i| (name, i, t.data[i])));
    if let Some((name, i, v)) = bad {
        let n = weights[name].data.iter().filter(|v| !v.is_finite()).count();
        bail!("tensor `{name}` holds {n} non-finite value(s) (the first, {v}, at flat index {i})");
    }
    Ok(())
}
