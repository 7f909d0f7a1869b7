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
pub mod layer_opt;
pub mod layers;
pub mod model;
pub mod size;

pub use calibrated::{CalibMode, CalibSettings};
pub use layer_opt::LayerOpt;
pub use model::{prepare, quantize_model, GpuPath, ModelQuantization, Prepared, QuantizeOptions};
pub use size::model_size;

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
