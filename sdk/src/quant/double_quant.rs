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

/// Mean of f32 values in the order torch's CUDA `mean` reduces a contiguous vector
/// (`aten/src/ATen/native/cuda/Reduce.cuh`, `setReduceConfig` and `ReduceOp`): from 128
/// values on, each thread loads vectors of 4 into 4 accumulators (vectors t, t + w, … for
/// block width w = the largest power of two ≤ n/4, at most 512), the n mod 4 tail going to
/// thread t's first accumulator; below 128, thread t takes elements t and t + w (w the largest
/// power of two ≤ n). Each thread combines its accumulators in order; the block folds in
/// shared memory down to 32 lanes (offsets w/2 … 32), then the warp by shuffles at offsets
/// 16, 8, 4, 2, 1. `MeanOps` multiplies by the factor 1/n rounded to f32; it does not divide.
/// This is bitsandbytes' double-quant offset bit for bit on all 94 shapes of the fixture (1 to
/// 8,194 blocks, `quant::bnb_shapes`). It holds while torch uses one thread block: below
/// 4 · 512 · 256 = 524,288 absmax values (33.5 M weights at block 64); above, torch splits
/// the sum over blocks and this order is not theirs.
pub fn mean_f32(v: &[f32]) -> f32 {
    let n = v.len();
    if n == 0 {
        return f32::NAN; // torch: the mean of nothing is NaN
    }
    let last_pow2 = |x: usize| 1usize << (usize::BITS - 1 - x.leading_zeros());
    const VEC: usize = 4;
    let mut lanes: Vec<f32> = if n >= 128 {
        let w = last_pow2(n / VEC).min(512);
        let tail = n - n % VEC;
        (0..w)
            .map(|t| {
                let mut acc = [0f32; VEC];
                let mut idx = t;
                while idx * VEC + VEC - 1 < n {
                    for (i, a) in acc.iter_mut().enumerate() {
                        *a += v[idx * VEC + i];
                    }
                    idx += w;
                }
                if tail + t < n {
                    acc[0] += v[tail + t];
                }
                acc.iter().skip(1).fold(acc[0], |s, a| s + a)
            })
            .collect()
    } else {
        let w = last_pow2(n);
        (0..w)
            .map(|t| {
                // vt0 = 4 accumulators of stride w; with n < 2w at most two are used.
                let mut acc = [0f32; 4];
                let mut idx = t;
                for a in acc.iter_mut() {
                    if idx >= n {
                        break;
                    }
                    *a += v[idx];
                    idx += w;
                }
                acc.iter().skip(1).fold(acc[0], |s, a| s + a)
            })
            .collect()
    };
    // Shared memory folds w/2 … 32, then warp shuffles 16 … 1 (descending in current torch on
    // CUDA: "offset decreasing for better numerics matching Triton"): the same halving, lane t
    // adding lane t + offset.
    let mut w = lanes.len();
    while w > 1 {
        w /= 2;
        for t in 0..w {
            lanes[t] += lanes[t + w];
        }
    }
    lanes[0] * (1.0f32 / n as f32)
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
