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
