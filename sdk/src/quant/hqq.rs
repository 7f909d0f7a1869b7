//! Half-Quadratic Quantization (Badri & Shaji 2023; mobiusml/hqq 0.2.8, `hqq/core/quantize.py`
//! `Quantizer.quantize` and `hqq/core/optimize.py` `optimize_weights_proximal_legacy`, the
//! default solver): no calibration data; each group's zero point is fitted to the weights by
//! a proximal solver of `‖W − dequant(quant(W))‖_p^p` with p < 1 (sparse, heavy-tailed errors).
//!
//! As in hqq with `axis=1`: groups are `group_size` consecutive values of a row (`W.reshape(-1,
//! group_size)`), the range starts at min/max (`scale = (2^bits − 1)/(max − min)`, 1 when
//! `max − min ≤ 1e-4`, at most 2·10⁴; `zero = −min·scale`, rounded for 4 bits as
//! `hqq_base_quant_config`'s `round_zero` does), then up to `iters` steps of
//!
//! ```text
//! W_q = clamp(round(W·scale + zero)); W_r = (W_q − zero)/scale
//! W_e = shrink_p(W − W_r, β)          (sign(x)·relu(|x| − |x|^(p−1)/β))
//! zero = mean_group(W_q − (W − W_e)·scale)
//! ```
//!
//! stopping as soon as the mean |W − W_r| over the whole matrix stops falling (the zero of
//! that last step is kept, as in hqq). hqq 0.2.8's legacy solver never multiplies β by κ
//! (κ is accepted and unused there); so here. Everything is f32, as hqq on a CPU tensor; the
//! stored scale is hqq's inverse scale and both are rounded to f16 once (hqq's default compute
//! dtype), with real-valued zero points (`intgroup`'s f16-zero variant).

use super::intgroup::{GroupParams, IntGroupMatrix, IntGroupSpec};

/// The solver's parameters (hqq's `opt_params` defaults).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Proximal {
    pub lp_norm: f32,
    pub beta: f32,
    pub iters: usize,
}

impl Default for Proximal {
    fn default() -> Self {
        Proximal { lp_norm: 0.7, beta: 10.0, iters: 20 }
    }
}

/// hqq's `shrink_lp_op`: `sign(x)·relu(|x| − |x|^(p−1)/β)`.
fn shrink(x: f32, beta: f32, lp_norm: f32) -> f32 {
    let a = x.abs();
    let v = if lp_norm == 1.0 { a - 1.0 / beta } else { a - (1.0 / beta) * a.powf(lp_norm - 1.0) };
    // relu, then the sign (torch.sign(0) = 0; 0·anything is 0 here too).
    if v > 0.0 {
        v.copysign(x)
    } else {
        0.0
    }
}

/// Quantize `rows × cols` values with HQQ: `spec.group_size` must divide `cols` (hqq's groups
/// would straddle rows otherwise). `optimize = false` is hqq's plain min/max rounding.
pub fn quantize(
    data: &[f32],
    rows: usize,
    cols: usize,
    spec: IntGroupSpec,
    round_zero: bool,
    optimize: Option<Proximal>,
) -> IntGroupMatrix {
    let gs = spec.group_size;
    let max_v = spec.maxq() as f32;
    let n_groups = rows * cols / gs;
    let (mut scale, mut zero) = (vec![0f32; n_groups], vec![0f32; n_groups]);
    for (g, w) in data.chunks_exact(gs).enumerate() {
        let (min, max) = w.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
        let denom = max - min;
        // `max_v / denom` with a Python number on the left is torch's `__rtruediv__`:
        // `reciprocal(denom) * max_v`, two roundings (so is the final `1.0 / scale`).
        let s = if denom.abs() <= 1e-4 { 1.0 } else { (1.0 / denom) * max_v };
        scale[g] = s.min(2e4);
        zero[g] = -min * scale[g];
        if round_zero {
            zero[g] = zero[g].round_ties_even();
        }
    }
    let q = |v: f32, s: f32, z: f32| (v * s + z).round_ties_even().clamp(0.0, max_v);
    if let Some(p) = optimize {
        let mut best = f64::INFINITY;
        for _ in 0..p.iters {
            let mut err = 0f64;
            for (g, w) in data.chunks_exact(gs).enumerate() {
                let (s, z) = (scale[g], zero[g]);
                let mut acc = 0f32;
                for &v in w {
                    let wq = q(v, s, z);
                    let wr = (wq - z) / s;
                    err += (v - wr).abs() as f64;
                    acc += wq - (v - shrink(v - wr, p.beta, p.lp_norm)) * s;
                }
                zero[g] = acc / gs as f32;
            }
            let current = err / data.len() as f64;
            if current < best {
                best = current;
            } else {
                break;
            }
        }
    }
    let mut m = IntGroupMatrix::new(rows, cols, spec);
    m.zero_f16 = true;
    for (g, w) in data.chunks_exact(gs).enumerate() {
        for (i, &v) in w.iter().enumerate() {
            m.codes[g * gs + i] = q(v, scale[g], zero[g]) as u8;
        }
        m.params.push(GroupParams { scale: (1.0 / scale[g]) as f64, zero: zero[g] as f64 });
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(bits: u32, gs: usize) -> IntGroupSpec {
        IntGroupSpec { bits, group_size: gs, sym: false, whole_row: false }
    }

    fn l07_error(data: &[f32], m: &IntGroupMatrix) -> f64 {
        let gs = m.spec.group_size;
        data.iter()
            .enumerate()
            .map(|(i, &v)| {
                let p = m.params[i / gs];
                let r = (m.codes[i] as f64 - p.zero) * p.scale;
                (v as f64 - r).abs().powf(0.7)
            })
            .sum()
    }

    #[test]
    fn the_solver_lowers_the_lp_error_at_low_bits() {
        // Heavy-tailed rows: mostly small values and a few outliers, where the zero matters.
        let mut next = crate::testing::uniform(3);
        let data: Vec<f32> = (0..8 * 256)
            .map(|i| {
                let u = next() as f32;
                if i % 61 == 0 {
                    8.0 * u
                } else {
                    u * u * u
                }
            })
            .collect();
        for bits in [2, 3, 4] {
            let plain = quantize(&data, 8, 256, spec(bits, 64), bits == 4, None);
            let hqq = quantize(&data, 8, 256, spec(bits, 64), bits == 4, Some(Proximal::default()));
            let (e0, e1) = (l07_error(&data, &plain), l07_error(&data, &hqq));
            // At 2 and 3 bits the solver more than halves the error; at 4 bits (rounded initial
            // zero) min/max rounding is already good and hqq's solver, which keeps the zero of
            // its last, worse step, ends 5% above it (the same codes as hqq: the plugin's test).
            let bound = if bits == 4 { 1.1 * e0 } else { 0.6 * e0 };
            assert!(e1 < bound, "{bits} bits: l0.7 error {e1} after the solver, {e0} before");
            assert!(hqq.codes.iter().all(|&c| (c as u32) <= spec(bits, 64).maxq()));
        }
    }

    #[test]
    fn shrink_is_hqqs_operator() {
        // |x| − |x|^(−0.3)/10 for |x| = 2: 2 − 0.0812… ; below the threshold: 0; sign kept.
        assert!((shrink(2.0, 10.0, 0.7) - (2.0 - 0.1 * 2f32.powf(-0.3))).abs() < 1e-6);
        assert!((shrink(-2.0, 10.0, 0.7) + (2.0 - 0.1 * 2f32.powf(-0.3))).abs() < 1e-6);
        assert_eq!(shrink(0.05, 10.0, 0.7), 0.0);
        assert_eq!(shrink(0.0, 10.0, 0.7), 0.0);
        assert_eq!(shrink(0.5, 10.0, 1.0), 0.4);
    }
}
