//! Double quantization (bitsandbytes' `compress_statistics=True`): the absmax values
//! themselves quantized to 8 bits with the dynamic map, around their mean.

use super::blockwise::{dequantize_blockwise_8bit, dynamic_map, quantize_blockwise_8bit};

/// Block size bitsandbytes uses for the second-level (double) quantization of absmax values.
pub const DOUBLE_QUANT_BLOCK: usize = 256;

/// Absmax values compressed as bitsandbytes' `compress_statistics=True` does: subtract their
/// mean (`offset`), then 8-bit blockwise quantization (block 256) with the dynamic map.
#[derive(Debug, Clone, PartialEq)]
pub struct DoubleQuant {
    pub codes: Vec<u8>,
    pub offset: f32,
    pub absmax2: Vec<f32>,
}

/// Mean of f32 values the way a GPU reduction computes it: f32 partial sums over 32
/// interleaved lanes, combined as a tree, then divided by the count. torch does not specify
/// its CUDA reduction order; this reproduced bitsandbytes' double-quant offset in every
/// reference case, where an f64 mean was off by one ulp.
pub fn mean_f32(v: &[f32]) -> f32 {
    if v.is_empty() {
        return 0.0;
    }
    let mut lanes = [0f32; 32];
    for (i, x) in v.iter().enumerate() {
        lanes[i % 32] += x;
    }
    let mut n = 32;
    while n > 1 {
        n /= 2;
        for i in 0..n {
            lanes[i] += lanes[i + n];
        }
    }
    lanes[0] / v.len() as f32
}

pub fn double_quantize(absmax: &[f32]) -> DoubleQuant {
    let offset = mean_f32(absmax);
    let centered: Vec<f32> = absmax.iter().map(|a| a - offset).collect();
    let (codes, absmax2) = quantize_blockwise_8bit(&centered, &dynamic_map(), DOUBLE_QUANT_BLOCK);
    DoubleQuant { codes, offset, absmax2 }
}

/// Recover the (approximate) absmax values: `dequantize_blockwise(codes) + offset`.
pub fn double_dequantize(dq: &DoubleQuant) -> Vec<f32> {
    dequantize_blockwise_8bit(&dq.codes, &dq.absmax2, &dynamic_map(), DOUBLE_QUANT_BLOCK)
        .into_iter()
        .map(|a| a + dq.offset)
        .collect()
}
