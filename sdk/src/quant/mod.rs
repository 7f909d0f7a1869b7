//! Shared quantization math, one module per family, so built-in and third-party methods do
//! not copy each other:
//! - bitsandbytes 0.50, bit for bit with its CUDA kernels: [`codes`] (NF4/FP4),
//!   [`blockwise`], [`double_quant`], [`four_bit`], [`int8`];
//! - integer groups (GPTQ, AWQ, round-to-nearest): [`intgroup`] (format and quantizer),
//!   [`gptq`] and [`awq`] (the algorithms) with [`linalg`].
//!
//! The bitsandbytes conventions, from its `kQuantizeBlockwise`:
//! * a tensor is quantized as one flat sequence, split into blocks of `block` elements; the
//!   last block may be partial (it is padded with zeros, which do not change its absmax);
//! * `absmax` is the f32 max |x| of a block, and values are normalized by multiplying with
//!   the f32 reciprocal `1 / absmax` (not by dividing), then mapped to a code;
//! * 4-bit codes are packed two per byte, the first element in the high nibble.
//!
//! An all-zero block has absmax 0, so bitsandbytes normalizes `0 · (1/0) = NaN`; its decision
//! trees send NaN to code 0 (NF4: −1.0, FP4: +0), which dequantizes to ±0 again. We reproduce
//! that rather than special-casing it, so packed bytes match bit for bit.

pub mod awq;
pub mod blockwise;
pub mod codes;
pub mod double_quant;
pub mod four_bit;
pub mod gptq;
pub mod hqq;
pub mod int8;
pub mod intgroup;
pub mod linalg;
pub mod rcp;

#[cfg(test)]
mod bnb_shapes;

pub use blockwise::*;
pub use codes::*;
pub use double_quant::*;
pub use int8::*;
