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

/// Check that `weights` holds exactly the tensors `cfg` needs, with the right shapes.
pub fn check_weights(cfg: &Config, weights: &Weights) -> Result<()> {
    for (name, shape) in cfg.expected_tensors() {
        let t = weights.get(&name).with_context(|| format!("tensor `{name}` is missing"))?;
        if t.shape != shape {
            bail!("tensor `{name}` has shape {:?}, the config implies {:?}", t.shape, shape);
        }
        if t.data.len() != shape.iter().product::<usize>() {
            bail!("tensor `{name}` holds {} values for shape {:?}", t.data.len(), shape);
        }
    }
    Ok(())
}
