//! Element-wise kernels and helpers (`pointwise.cu`: RoPE on a pair, SwiGLU, bf16 rounding)
//! that both the decode step's module ([`super::step`]) and the prefill's
//! ([`super::prefill`]) are compiled with, after llq_sdk's header and before their own source.

pub const SOURCE: &str = include_str!("pointwise.cu");
