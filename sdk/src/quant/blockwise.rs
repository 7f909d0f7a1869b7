//! Blockwise absmax quantization as bitsandbytes' `kQuantizeBlockwise` does it: 4-bit codes
//! packed two per byte, and 8-bit codes from a 256-entry map (the dynamic map).

use super::rcp::rcp_approx;

/// Number of blocks of `block` elements covering `n` elements.
pub fn n_blocks(n: usize, block: usize) -> usize {
    n.div_ceil(block)
}

/// Absmax of each block (f32 max |x|).
pub fn blockwise_absmax(data: &[f32], block: usize) -> Vec<f32> {
    data.chunks(block).map(|c| c.iter().fold(0f32, |m, v| m.max(v.abs()))).collect()
}

/// Quantize `data` blockwise to 4-bit codes with `code_of` (e.g. [`nf4_code`]). Returns the
/// packed bytes (`ceil(n/2)`) and the per-block absmax.
pub fn quantize_4bit(data: &[f32], block: usize, code_of: fn(f32) -> u8) -> (Vec<u8>, Vec<f32>) {
    assert!(block >= 2 && block.is_multiple_of(2), "block size must be even");
    let absmax = blockwise_absmax(data, block);
    let mut packed = vec![0u8; data.len().div_ceil(2)];
    for (b, chunk) in data.chunks(block).enumerate() {
        let inv = rcp_approx(absmax[b]);
        let base = b * block / 2;
        for (j, pair) in chunk.chunks(2).enumerate() {
            let hi = code_of(pair[0] * inv);
            // A partial last block is padded with 0.0 (bitsandbytes loads 0 for missing items).
            let lo = code_of(pair.get(1).copied().unwrap_or(0.0) * inv);
            packed[base + j] = (hi << 4) | lo;
        }
    }
    (packed, absmax)
}

/// Dequantize 4-bit packed data: `out[i] = table[code_i] · absmax[i / block]`.
pub fn dequantize_4bit(packed: &[u8], absmax: &[f32], block: usize, table: &[f32; 16], out: &mut [f32]) {
    // Blocks are even-sized, so every block starts on a byte boundary.
    for ((chunk, &a), bytes) in out.chunks_mut(block).zip(absmax).zip(packed.chunks(block / 2)) {
        let mut pairs = chunk.chunks_exact_mut(2);
        for (pair, &b) in (&mut pairs).zip(bytes) {
            pair[0] = table[(b >> 4) as usize] * a;
            pair[1] = table[(b & 15) as usize] * a;
        }
        if let [last] = pairs.into_remainder() {
            *last = table[(bytes[bytes.len() - 1] >> 4) as usize] * a;
        }
    }
}

/// `torch.linspace(start, end, steps)` in float32 as torch's CPU kernel computes it: the first
/// half counts up from `start`, the second half down from `end`, and the compiler contracts
/// `start + step·i` into one fused multiply-add (verified against torch 2.11's output).
fn linspace_f32(start: f32, end: f32, steps: usize) -> Vec<f32> {
    if steps == 1 {
        return vec![start];
    }
    let step = (end - start) / (steps - 1) as f32;
    let half = steps / 2;
    (0..steps)
        .map(|i| {
            if i < half {
                step.mul_add(i as f32, start)
            } else {
                (-step).mul_add((steps - i - 1) as f32, end)
            }
        })
        .collect()
}

/// bitsandbytes' signed dynamic 8-bit map (`create_dynamic_map(signed=True)`, 256 sorted
/// values in [-1, 1]): used to quantize absmax values under double quantization.
pub fn dynamic_map() -> [f32; 256] {
    let max_exp = 7i32;
    let mut data: Vec<f32> = Vec::with_capacity(256);
    for i in 0..max_exp {
        let items = (1usize << i) + 1;
        let b = linspace_f32(0.1, 1.0, items);
        let scale = 10f64.powi(-(max_exp - 1) + i) as f32;
        for k in 0..items - 1 {
            let mean = (b[k] + b[k + 1]) / 2.0;
            data.push(scale * mean);
            data.push(-(scale * mean));
        }
    }
    data.push(0.0);
    data.push(1.0);
    data.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
    let mut out = [0f32; 256];
    out.copy_from_slice(&data);
    out
}

/// bitsandbytes' `dQuantize<0>`: binary search of the sorted 256-entry `code` for the nearest
/// value of `x`, resolving with midpoints exactly as the CUDA kernel does.
pub fn code8(code: &[f32; 256], x: f32) -> u8 {
    let mut pivot: i32 = 127;
    let mut upper_pivot: i32 = 255;
    let mut lower_pivot: i32 = 0;
    let mut lower = -1.0f32;
    let mut upper = 1.0f32;
    let mut val = code[pivot as usize];
    let mut i = 64;
    while i > 0 {
        if x > val {
            lower_pivot = pivot;
            lower = val;
            pivot += i;
        } else {
            upper_pivot = pivot;
            upper = val;
            pivot -= i;
        }
        val = code[pivot as usize];
        i >>= 1;
    }
    if upper_pivot == 255 {
        upper = code[255];
    }
    if lower_pivot == 0 {
        lower = code[0];
    }
    let r = if x > val {
        let mid = (upper + val) * 0.5;
        if x > mid {
            upper_pivot
        } else {
            pivot
        }
    } else {
        let mid = (lower + val) * 0.5;
        if x < mid {
            lower_pivot
        } else {
            pivot
        }
    };
    r as u8
}

/// Blockwise 8-bit quantization with a 256-entry code (bitsandbytes' `quantize_blockwise`).
pub fn quantize_blockwise_8bit(data: &[f32], code: &[f32; 256], block: usize) -> (Vec<u8>, Vec<f32>) {
    let absmax = blockwise_absmax(data, block);
    let mut q = Vec::with_capacity(data.len());
    for (b, chunk) in data.chunks(block).enumerate() {
        let inv = rcp_approx(absmax[b]);
        q.extend(chunk.iter().map(|&v| code8(code, v * inv)));
    }
    (q, absmax)
}

/// Inverse of [`quantize_blockwise_8bit`].
pub fn dequantize_blockwise_8bit(q: &[u8], absmax: &[f32], code: &[f32; 256], block: usize) -> Vec<f32> {
    q.iter().enumerate().map(|(i, &c)| code[c as usize] * absmax[i / block]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::codes::nf4_code;
    use crate::testing::{bnb_reference, f32s};

    #[test]
    fn packing_puts_the_first_element_in_the_high_nibble() {
        let data = [1.0f32, -1.0, 0.0];
        let (p, a) = quantize_4bit(&data, 64, nf4_code);
        assert_eq!(a, vec![1.0]);
        assert_eq!(p, vec![0xF0, 0x77]); // 1.0→15, -1.0→0, 0.0→7, pad 0.0→7
    }

    #[test]
    fn dynamic_map_matches_bitsandbytes() {
        let want = f32s(&bnb_reference()["dynamic_map_f32"]);
        let ours = dynamic_map();
        let diffs: Vec<String> = (0..256)
            .filter(|&i| ours[i].to_bits() != want[i].to_bits())
            .map(|i| format!("[{i}] {} vs {}", ours[i], want[i]))
            .collect();
        assert!(diffs.is_empty(), "{} entries differ: {:?}", diffs.len(), &diffs[..diffs.len().min(8)]);
    }
}
