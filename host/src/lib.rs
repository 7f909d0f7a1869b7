//! # llq-host
//!
//! The native side of llq: it owns the device, loads models, applies quantization plugins,
//! runs sandboxed WASM tasks, benchmarks, and writes results. Layers, top to bottom (each
//! module uses only modules below it; `tests/architecture.rs` checks that no two modules
//! import each other, directly or through others):
//!
//! - [`cli`] → [`cmd`]: the command line, one module per subcommand;
//! - [`sweep`], [`conformance`]: studies as matrices of runs; the plugin conformance suite;
//! - [`bench`]: benchmarks (model speed, plugin throughput, task overhead, kernels);
//! - [`search`]: per-layer bit allocation under a size or KL budget (`search-bits`);
//! - [`checkpoint`]: quantized checkpoints (GGUF, HF bitsandbytes/GPTQ/AWQ) in and out;
//! - [`quant`], [`generate`]: quantizing a model with a plugin; running it on requests;
//! - [`loader`]: reading models from HF, GGUF, llama2.c and synthetic presets;
//! - [`results`]: the typed results schema and the comparison of runs;
//! - [`model`]: the Llama architecture on candle;
//! - [`device`], [`gpu`]: choosing the device; the plugins' CUDA kernels;
//! - [`plugin`], [`task`], [`tokenizer`]: the plugin C ABI, the WASM task sandbox, tokenizers;
//! - [`services`]: what the host offers plugins (ABI 1.4: GPTQ's factorization on the GPU);
//! - [`util`]: small shared helpers.
//!
//! `docs/architecture.md` walks the data path of `run` and says where to add things.

pub mod bench;
pub mod calib;
pub mod checkpoint;
pub mod cli;
pub mod cmd;
pub mod conformance;
pub mod device;
pub mod generate;
#[cfg(feature = "cuda")]
pub mod gpu;
pub mod loader;
pub mod model;
pub mod plugin;
pub mod quant;
pub mod results;
pub mod search;
pub mod services;
pub mod sweep;
pub mod task;
pub mod tokenizer;
pub mod util;
