//! LLM.int8 (bitsandbytes' `int8_vectorwise_quant`): row-wise absmax int8 with an outlier
//! threshold, and the constants its matmul rescales with.

/// Round to f16 precision and back (what `.half()` does to a value), round-to-nearest-even.
pub fn to_f16(x: f32) -> f32 {
    half::f16::from_f32(x).to_f32()
}

/// LLM.int8 row-wise quantization of one row (already in f16 precision): absmax over the
/// values with |x| < `threshold` (all values when `threshold` is 0), then
/// `q = round_half_even(x · (127 · (1/absmax)))`; values at or above the threshold become 0.
pub fn int8_quantize_row(row: &[f32], threshold: f32, out: &mut [i8]) -> f32 {
    let sparse = threshold > 0.0;
    let mut inliers = row.iter().filter(|v| !sparse || v.abs() < threshold).peekable();
    // A row whose every value is an outlier keeps the kernel's starting maximum: bitsandbytes
    // 0.50.2 reports −0.0 for it (measured, `quant::bnb_shapes`).
    let absmax =
        if inliers.peek().is_none() && sparse { -0.0 } else { inliers.fold(0f32, |m, v| m.max(v.abs())) };
    // bitsandbytes computes `__fdividef(127, absmax)`, i.e. 127 · (1/absmax) with the GPU's
    // approximate reciprocal: two roundings, the first not the correctly rounded one.
    let scale = 127.0f32 * super::rcp::rcp_approx(absmax);
    for (o, &v) in out.iter_mut().zip(row) {
        *o = if sparse && v.abs() >= threshold { 0 } else { (v * scale).round_ties_even() as i8 };
    }
    absmax
}

/// bitsandbytes' `MM_DEQUANT_CONST` (≈ 1 / 127²) used to rescale int32 products.
pub const INT8_MM_DEQUANT: f32 = 6.200012e-05;
/// bitsandbytes' dequantization factor for one int8 weight (≈ 1 / 127), as its source spells it.
#[allow(clippy::excessive_precision)]
pub const INT8_DEQUANT: f32 = 7.874_015_718_698_502e-3;

#[cfg(test)]
mod tests {
    use super::*;

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
