//! Shared quantization math, bit-compatible with bitsandbytes 0.50 (its CUDA kernels).
//!
//! Conventions taken from bitsandbytes' `kQuantizeBlockwise`:
//! * a tensor is quantized as one flat sequence, split into blocks of `block` elements; the
//!   last block may be partial (it is padded with zeros, which do not change its absmax);
//! * `absmax` is the f32 max |x| of a block, and values are normalized by multiplying with
//!   the f32 reciprocal `1 / absmax` (not by dividing), then mapped to a code;
//! * 4-bit codes are packed two per byte, the first element in the high nibble.
//!
//! An all-zero block has absmax 0, so bitsandbytes normalizes `0 · (1/0) = NaN`; its decision
//! trees send NaN to code 0 (NF4: −1.0, FP4: +0), which dequantizes to ±0 again. We reproduce
//! that rather than special-casing it, so packed bytes match bit for bit.

/// bitsandbytes' NF4 code table (`get_4bit_type("nf4")`), index = code.
pub const NF4_TABLE: [f32; 16] = [
    -1.0,
    -0.696_192_800_998_687_7,
    -0.525_073_051_452_636_7,
    -0.394_917_488_098_144_53,
    -0.284_441_381_692_886_35,
    -0.184_773_430_228_233_34,
    -0.091_050_036_251_544_95,
    0.0,
    0.079_580_299_556_255_34,
    0.160_930_201_411_247_25,
    0.246_112_301_945_686_34,
    0.337_915_241_718_292_24,
    0.440_709_829_330_444_34,
    0.562_617_003_917_694_1,
    0.722_956_836_223_602_3,
    1.0,
];

/// bitsandbytes' FP4 (e2m1) code magnitudes before normalization, codes 0..7; bit 3 is the sign.
const FP4_MAGNITUDES: [f32; 8] = [0.0, 0.0625, 8.0, 12.0, 4.0, 6.0, 2.0, 3.0];

/// bitsandbytes' FP4 table (`get_4bit_type("fp4")`: the magnitudes divided by 12 in f32).
pub fn fp4_table() -> [f32; 16] {
    let mut t = [0f32; 16];
    for (i, m) in FP4_MAGNITUDES.iter().enumerate() {
        t[i] = m / 12.0;
        t[i + 8] = -(m / 12.0);
    }
    t
}

/// bitsandbytes' NF4 decision thresholds (`dQuantizeNF4`), ascending: the midpoints between
/// consecutive table entries, as bitsandbytes' decimal literals rounded directly to f32 (as
/// NVCC does; several differ by one ulp from the same decimals rounded through f64, and that
/// decides ties).
#[allow(clippy::excessive_precision)]
pub const NF4_THRESHOLDS: [f32; 15] = [
    -0.8480964004993439, -0.6106329262256622, -0.4599952697753906, -0.33967943489551544,
    -0.23460740596055984, -0.13791173323988914, -0.045525018125772476, 0.03979014977812767,
    0.1202552504837513, 0.2035212516784668, 0.2920137718319893, 0.3893125355243683,
    0.5016634166240692, 0.6427869200706482, 0.8614784181118011,
];

/// NF4 code of a normalized value. bitsandbytes walks a binary decision tree over
/// [`NF4_THRESHOLDS`]; counting the thresholds strictly below `x` gives the same code (a
/// value exactly on a midpoint takes the lower code; NaN compares false everywhere and gets
/// code 0) without branches, so the compiler vectorizes it.
#[inline(always)]
pub fn nf4_code(x: f32) -> u8 {
    NF4_THRESHOLDS.iter().map(|&t| (x > t) as u8).sum()
}

/// bitsandbytes' FP4 pivots (`dQuantizeFP4`) on |x|, ascending.
#[allow(clippy::excessive_precision)]
pub const FP4_PIVOTS: [f32; 7] = [0.00260417, 0.0859375, 0.20833333, 0.29166667, 0.4166667, 0.583333, 0.8333333];
/// FP4 magnitude codes in ascending magnitude order: 0, 0.0625, 2, 3, 4, 6, 8, 12 (÷12).
const FP4_BY_RANK: [u8; 8] = [0b000, 0b001, 0b110, 0b111, 0b100, 0b101, 0b010, 0b011];

/// FP4 code of a normalized value: the sign in bit 3 (`x < 0`), the magnitude code from the
/// number of pivots strictly below |x| — the same result as bitsandbytes' decision tree.
#[inline(always)]
pub fn fp4_code(x: f32) -> u8 {
    let sign = if x < 0.0 { 0b1000 } else { 0 };
    let a = x.abs();
    let rank: u8 = FP4_PIVOTS.iter().map(|&t| (a > t) as u8).sum();
    FP4_BY_RANK[rank as usize] | sign
}

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
    assert!(block >= 2 && block % 2 == 0, "block size must be even");
    let absmax = blockwise_absmax(data, block);
    let mut packed = vec![0u8; data.len().div_ceil(2)];
    for (b, chunk) in data.chunks(block).enumerate() {
        let inv = 1.0f32 / absmax[b];
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
        .map(|i| if i < half { step.mul_add(i as f32, start) } else { (-step).mul_add((steps - i - 1) as f32, end) })
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
        if x > mid { upper_pivot } else { pivot }
    } else {
        let mid = (lower + val) * 0.5;
        if x < mid { lower_pivot } else { pivot }
    };
    r as u8
}

/// Blockwise 8-bit quantization with a 256-entry code (bitsandbytes' `quantize_blockwise`).
pub fn quantize_blockwise_8bit(data: &[f32], code: &[f32; 256], block: usize) -> (Vec<u8>, Vec<f32>) {
    let absmax = blockwise_absmax(data, block);
    let mut q = Vec::with_capacity(data.len());
    for (b, chunk) in data.chunks(block).enumerate() {
        let inv = 1.0f32 / absmax[b];
        q.extend(chunk.iter().map(|&v| code8(code, v * inv)));
    }
    (q, absmax)
}

/// Inverse of [`quantize_blockwise_8bit`].
pub fn dequantize_blockwise_8bit(q: &[u8], absmax: &[f32], code: &[f32; 256], block: usize) -> Vec<f32> {
    q.iter().enumerate().map(|(i, &c)| code[c as usize] * absmax[i / block]).collect()
}

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

/// Round to f16 precision and back (what `.half()` does to a value), round-to-nearest-even.
pub fn to_f16(x: f32) -> f32 {
    half::f16::from_f32(x).to_f32()
}

/// LLM.int8 row-wise quantization of one row (already in f16 precision): absmax over the
/// values with |x| < `threshold` (all values when `threshold` is 0), then
/// `q = round_half_even(x · (127 · (1/absmax)))`; values at or above the threshold become 0.
pub fn int8_quantize_row(row: &[f32], threshold: f32, out: &mut [i8]) -> f32 {
    let sparse = threshold > 0.0;
    let absmax = row
        .iter()
        .filter(|v| !sparse || v.abs() < threshold)
        .fold(0f32, |m, v| m.max(v.abs()));
    // bitsandbytes computes `__fdividef(127, absmax)`, i.e. 127 · (1/absmax): two roundings.
    let scale = 127.0f32 * (1.0f32 / absmax);
    for (o, &v) in out.iter_mut().zip(row) {
        *o = if sparse && v.abs() >= threshold { 0 } else { (v * scale).round_ties_even() as i8 };
    }
    absmax
}

/// bitsandbytes' `MM_DEQUANT_CONST` (≈ 1 / 127²) used to rescale int32 products.
pub const INT8_MM_DEQUANT: f32 = 6.200012e-05;
/// bitsandbytes' dequantization factor for one int8 weight (≈ 1 / 127).
pub const INT8_DEQUANT: f32 = 7.874_015_718_698_502e-3;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nf4_tree_picks_the_nearest_code_and_lower_on_ties() {
        // Midpoints between consecutive table entries, computed from the table.
        for c in 0..15 {
            let lo = NF4_TABLE[c];
            let hi = NF4_TABLE[c + 1];
            assert_eq!(nf4_code(lo) as usize, c, "table value {lo}");
            let mid = ((lo as f64 + hi as f64) / 2.0) as f32;
            // Just above and below the midpoint go to the nearer side.
            assert_eq!(nf4_code(mid + 1e-4) as usize, c + 1);
            assert_eq!(nf4_code(mid - 1e-4) as usize, c);
        }
        assert_eq!(nf4_code(1.0), 15);
        assert_eq!(nf4_code(-1.0), 0);
        assert_eq!(nf4_code(0.0), 7);
        assert_eq!(nf4_code(f32::NAN), 0);
    }

    /// bitsandbytes' `dQuantizeNF4` decision tree, transcribed from its CUDA source.
    #[allow(clippy::excessive_precision)]
    fn bnb_nf4_tree(x: f32) -> u8 {
        if x > 0.03979014977812767 {
            if x > 0.3893125355243683 {
                if x > 0.6427869200706482 {
                    if x > 0.8614784181118011 { 15 } else { 14 }
                } else if x > 0.5016634166240692 { 13 } else { 12 }
            } else if x > 0.2035212516784668 {
                if x > 0.2920137718319893 { 11 } else { 10 }
            } else if x > 0.1202552504837513 { 9 } else { 8 }
        } else if x > -0.33967943489551544 {
            if x > -0.13791173323988914 {
                if x > -0.045525018125772476 { 7 } else { 6 }
            } else if x > -0.23460740596055984 { 5 } else { 4 }
        } else if x > -0.6106329262256622 {
            if x > -0.4599952697753906 { 3 } else { 2 }
        } else if x > -0.8480964004993439 { 1 } else { 0 }
    }

    /// bitsandbytes' `dQuantizeFP4`, transcribed from its CUDA source.
    #[allow(clippy::excessive_precision)]
    fn bnb_fp4_tree(x: f32) -> u8 {
        let sign = if x < 0.0 { 8 } else { 0 };
        let x = x.abs();
        let c = if x > 0.29166667 {
            if x > 0.583333 {
                if x > 0.8333333 { 3 } else { 2 }
            } else if x > 0.4166667 { 5 } else { 4 }
        } else if x > 0.0859375 {
            if x > 0.20833333 { 7 } else { 6 }
        } else if x > 0.00260417 { 1 } else { 0 };
        c + sign
    }

    #[test]
    fn branchless_codes_equal_the_bitsandbytes_trees() {
        let mut xs: Vec<f32> = (-20000..=20000).map(|i| i as f32 / 19000.0).collect();
        for t in NF4_THRESHOLDS.iter().chain(FP4_PIVOTS.iter()) {
            for v in [*t, -*t] {
                xs.extend([f32::from_bits(v.to_bits() - 1), v, f32::from_bits(v.to_bits() + 1)]);
            }
        }
        xs.extend([f32::NAN, -f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0]);
        for x in xs {
            assert_eq!(nf4_code(x), bnb_nf4_tree(x), "nf4 {x}");
            assert_eq!(fp4_code(x), bnb_fp4_tree(x), "fp4 {x}");
        }
    }

    #[test]
    fn fp4_table_and_tree_agree() {
        let t = fp4_table();
        assert_eq!(t[3], 1.0);
        assert_eq!(t[1], 0.0625 / 12.0);
        assert_eq!(t[11], -1.0);
        for (c, v) in t.iter().enumerate() {
            if c == 8 {
                continue; // -0 encodes as +0 (sign comes from x < 0)
            }
            assert_eq!(fp4_code(*v) as usize, c, "value {v}");
        }
        assert_eq!(fp4_code(-0.0), 0);
        assert_eq!(fp4_code(f32::NAN), 0);
    }

    #[test]
    fn packing_puts_the_first_element_in_the_high_nibble() {
        let data = [1.0f32, -1.0, 0.0];
        let (p, a) = quantize_4bit(&data, 64, nf4_code);
        assert_eq!(a, vec![1.0]);
        assert_eq!(p, vec![0xF0, 0x77]); // 1.0→15, -1.0→0, 0.0→7, pad 0.0→7
    }

    #[test]
    fn int8_rounds_half_to_even() {
        // absmax 127 → scale 1: 2.5 → 2, 3.5 → 4, -2.5 → -2.
        let mut q = [0i8; 4];
        let a = int8_quantize_row(&[127.0, 2.5, 3.5, -2.5], 0.0, &mut q);
        assert_eq!(a, 127.0);
        assert_eq!(q, [127, 2, 4, -2]);
        // With a threshold, outliers are excluded from absmax and zeroed.
        let a = int8_quantize_row(&[10.0, 2.0, -1.0, 0.5], 6.0, &mut q);
        assert_eq!(a, 2.0);
        assert_eq!(q, [0, 127, -64, 32]); // -63.5 → -64 (even), 31.75 → 32
    }
}

/// The bitsandbytes 4-bit formats (NF4, FP4) as one parameterized method, so the `nf4` and
/// `fp4` plugins differ only in their table and decision tree.
pub mod four_bit {
    use super::*;
    use crate::{bail, f32_to_bytes, OptionKind, OptionSpec, Options, PackedView, Quantized, Result, Weights};

    /// One 4-bit data type.
    #[derive(Clone, Copy)]
    pub struct Format {
        /// `"nf4"` or `"fp4"` (recorded in metadata).
        pub quant_type: &'static str,
        pub code_of: fn(f32) -> u8,
        pub table: fn() -> [f32; 16],
    }

    pub const NF4: Format = Format { quant_type: "nf4", code_of: nf4_code, table: || NF4_TABLE };
    pub const FP4: Format = Format { quant_type: "fp4", code_of: fp4_code, table: fp4_table };

    /// Block sizes bitsandbytes' CUDA kernels accept.
    pub const BLOCK_SIZES: [&str; 7] = ["64", "128", "256", "512", "1024", "2048", "4096"];

    pub fn options() -> Vec<OptionSpec> {
        vec![
            OptionSpec::new("block_size", OptionKind::Int, "64", "elements per absmax block (bitsandbytes: 64)")
                .choices(&BLOCK_SIZES),
            OptionSpec::new(
                "double_quant",
                OptionKind::Bool,
                "false",
                "quantize the absmax values too (8-bit dynamic map, block 256), as bnb_4bit_use_double_quant",
            ),
        ]
    }

    fn layout(rows: u64, cols: u64, opts: &Options) -> Result<(usize, usize, bool)> {
        let n = rows.checked_mul(cols).ok_or("matrix too large")? as usize;
        Ok((n, opts.get_usize("block_size")?, opts.get_bool("double_quant")?))
    }

    /// Codes (`ceil(n/2)` bytes) + absmax (4 bytes a block), or with double quantization
    /// 1 byte a block + a 4-byte offset + 4 bytes per 256 blocks.
    pub fn packed_size(rows: u64, cols: u64, opts: &Options) -> Result<u64> {
        let (n, block, dq) = layout(rows, cols, opts)?;
        let nb = n_blocks(n, block);
        let scales = if dq { nb + 4 + 4 * n_blocks(nb, DOUBLE_QUANT_BLOCK) } else { 4 * nb };
        Ok((n.div_ceil(2) + scales) as u64)
    }

    pub fn quantize(fmt: Format, w: &Weights, opts: &Options) -> Result<Quantized> {
        let (_, block, dq) = layout(w.rows as u64, w.cols as u64, opts)?;
        let (codes, absmax) = quantize_4bit(w.data, block, fmt.code_of);
        let meta = serde_json::json!({"quant_type": fmt.quant_type, "block_size": block, "double_quant": dq});
        let q = Quantized::new(meta).with_buffer("codes", codes);
        Ok(if dq {
            let d = double_quantize(&absmax);
            q.with_buffer("absmax_codes", d.codes)
                .with_buffer("absmax_offset", d.offset.to_le_bytes().to_vec())
                .with_buffer("absmax2", f32_to_bytes(&d.absmax2))
        } else {
            q.with_buffer("absmax", f32_to_bytes(&absmax))
        })
    }

    /// The absmax values of a packed matrix (double-dequantized when needed).
    pub fn absmax_of(p: &PackedView) -> Result<Vec<f32>> {
        if p.meta_bool("double_quant")? {
            let offset = p.f32_buffer("absmax_offset")?;
            let [offset] = offset[..] else { bail!("absmax_offset must hold one f32") };
            let d = DoubleQuant { codes: p.buffer("absmax_codes")?.to_vec(), offset, absmax2: p.f32_buffer("absmax2")? };
            if d.absmax2.len() != n_blocks(d.codes.len(), DOUBLE_QUANT_BLOCK) {
                bail!("absmax2 has {} values for {} absmax codes", d.absmax2.len(), d.codes.len());
            }
            Ok(double_dequantize(&d))
        } else {
            p.f32_buffer("absmax")
        }
    }

    /// GPU kernels (convention v1) for a 4-bit format: the shared 4-bit decoder with this
    /// format's table; entry points `<quant_type>_dequantize` and `<quant_type>_matvec`.
    pub fn cuda_kernels(fmt: Format) -> crate::CudaKernels {
        use crate::cuda;
        let q = fmt.quant_type;
        let source = cuda::source(&[
            &cuda::f32_table("LLQ_CODE_BITS", &(fmt.table)()),
            &cuda::f32_table("LLQ_DYN_BITS", &dynamic_map()),
            cuda::FOUR_BIT_DECODER,
            &format!("LLQ_DEFINE_KERNELS(LlqFourBit, 4, {q})\n"),
        ]);
        crate::CudaKernels {
            source,
            dequantize: format!("{q}_dequantize"),
            matvec: Some(format!("{q}_matvec")),
            params: vec![crate::KernelParam::Key("block_size".into()), crate::KernelParam::Key("double_quant".into())],
            launch: serde_json::Value::Null,
        }
    }

    pub fn dequantize(fmt: Format, p: &PackedView, out: &mut [f32]) -> Result<()> {
        if p.meta_str("quant_type")? != fmt.quant_type {
            bail!("packed matrix is {}, not {}", p.meta_str("quant_type")?, fmt.quant_type);
        }
        let block = p.meta_u64("block_size")? as usize;
        if block < 2 || block % 2 != 0 {
            bail!("invalid block_size {block} in metadata");
        }
        let codes = p.buffer("codes")?;
        let absmax = absmax_of(p)?;
        let n = out.len();
        if codes.len() != n.div_ceil(2) || absmax.len() != n_blocks(n, block) {
            bail!(
                "packed buffers do not fit a {}×{} matrix: {} code bytes, {} absmax values",
                p.rows, p.cols, codes.len(), absmax.len()
            );
        }
        dequantize_4bit(codes, &absmax, block, &(fmt.table)(), out);
        Ok(())
    }
}

#[cfg(test)]
mod reference_tests {
    use super::*;
    use crate::testing::{bnb_reference, f32s};

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
