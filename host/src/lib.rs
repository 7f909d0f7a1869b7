//! # llq-host
//!
//! The native side of llq: it owns the device, loads models, applies quantization plugins
//! (`quant`), runs sandboxed WASM tasks, benchmarks, and writes results. The binary
//! (`llq-host`) is a thin CLI over these modules.

pub mod bench;
pub mod cli;
pub mod generate;
#[cfg(feature = "cuda")]
pub mod gpu;
#[cfg(feature = "cuda")]
pub mod kernel_bench;
pub mod loader;
pub mod model;
pub mod quant;
pub mod quantize_cmd;
pub mod results;
pub mod run_cmd;
pub mod score_cmd;
pub mod task;
pub mod tokenizer;
