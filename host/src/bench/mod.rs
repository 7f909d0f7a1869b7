//! Benchmarks that are not tests, one module each: model speed ([`model`]), plugin
//! quantize/dequantize throughput ([`quant`]), task scoring overhead ([`task`]) and, with
//! the `cuda` feature, kernel checks and timings ([`kernel`]) and the fused prefill
//! attention's check against f32 attention ([`attention`]).

pub mod attention;
#[cfg(feature = "cuda")]
pub mod kernel;
pub mod model;
pub mod quant;
pub mod task;
