//! Quantizing a model with a plugin: every linear layer replaced by the plugin's dequantized
//! values (the CPU computes with exactly the plugin's numerics), the packed matrices kept for
//! the device when the plugin ships kernels, calibration for methods that need it, and the
//! size accounting of the result.
//!
//! - [`layers`]: quantizing a set of layers on a worker pool (the step every path shares);
//! - [`calibrated`]: the calibration run (sequential through the blocks, as GPTQ and AWQ);
//! - [`fold`]: layer groups and the input scales folded into them (AWQ);
//! - [`model`]: the whole model, for a device ([`prepare`]);
//! - [`size`]: what the result stores.

pub mod calibrated;
pub mod fold;
pub mod layers;
pub mod model;
pub mod size;

pub use calibrated::{CalibMode, CalibSettings};
pub use model::{prepare, quantize_model, GpuPath, ModelQuantization, Prepared, QuantizeOptions};
pub use size::model_size;

/// One `--opt-layer`: a plugin option for the layers whose name matches a glob.
#[derive(Debug, Clone)]
pub struct LayerOpt {
    pub pattern: String,
    glob: glob::Pattern,
    pub key: String,
    pub value: String,
}

impl LayerOpt {
    pub fn new(pattern: &str, key: &str, value: &str) -> Result<LayerOpt, String> {
        let glob =
            glob::Pattern::new(pattern).map_err(|e| format!("`{pattern}` is not a glob pattern: {e}"))?;
        Ok(LayerOpt { pattern: pattern.into(), glob, key: key.into(), value: value.into() })
    }

    /// Whether it applies to weight `name` (`model.layers.3.mlp.down_proj.weight` is also
    /// matched as `layers.3.mlp.down_proj`).
    pub fn matches(&self, name: &str) -> bool {
        let short = name.strip_prefix("model.").unwrap_or(name);
        let short = short.strip_suffix(".weight").unwrap_or(short);
        self.glob.matches(name) || self.glob.matches(short)
    }

    /// As given on the command line.
    pub fn spec(&self) -> String {
        format!("{}:{}={}", self.pattern, self.key, self.value)
    }
}

/// What a plugin that brings its own matmul (`has_matmul`, e.g. LLM.int8: int8 activations
/// and fp16 outlier columns) is measured as: `run`, `bench` and the GPU path build the model
/// from its dequantized weights, so its activation numerics are not what ran. Every result of
/// such a plugin carries this label (results.json `quantization.numerics`, bench reports,
/// the sweep report's method column) rather than present it as the full method.
pub const WEIGHT_ONLY: &str = "weight-only: the model computed with the plugin's dequantized weights; \
     its own matmul (LLM.int8: int8 activations with fp16 outlier columns) did not run";

/// [`WEIGHT_ONLY`] for plugins that declare a matmul, none otherwise.
pub fn numerics(plugin: &crate::plugin::Plugin) -> Option<String> {
    plugin.info.has_matmul.then(|| WEIGHT_ONLY.to_string())
}
