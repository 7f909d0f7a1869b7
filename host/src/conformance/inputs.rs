//! The inputs the checks feed a plugin: seeded weight matrices shaped like a transformer's
//! (Gaussian, with and without a few large outliers as LLM weights have them), and layer input
//! activations whose channels differ in scale the way LLM activations do (a few channels
//! ~20× the rest, the case AWQ and LLM.int8() are built for), turned into calibration data
//! by the same accumulator a model run uses.

use crate::calib::stats::from_rows;
use crate::plugin::CalibrationData;
use crate::util::synth::synthetic_weights;
use anyhow::Result;
use llq_sdk::CalibrationNeed;

/// The matrix every method must quantize (rows × cols): columns a multiple of every group and
/// block size a method is likely to use, rows of a 128-row tile.
pub const REQUIRED_SHAPE: (usize, usize) = (128, 256);

/// Standard deviation of the weights: that of a 2048-wide projection at initialization.
pub const SIGMA: f32 = 0.02;
/// Tokens of calibration activations.
pub const TOKENS: usize = 512;

/// `rows × cols` Gaussian weights from `seed`.
pub fn weights(seed: u64, rows: usize, cols: usize) -> Vec<f32> {
    synthetic_weights(seed, rows * cols, SIGMA)
}

/// As [`weights`], with one weight in 500 multiplied by 20.
pub fn weights_with_outliers(seed: u64, rows: usize, cols: usize) -> Vec<f32> {
    let mut w = weights(seed, rows, cols);
    for v in w.iter_mut().step_by(499) {
        *v *= 20.0;
    }
    w
}

/// `TOKENS × cols` activations; with `outliers`, every 37th channel is 20× larger.
pub fn activations(seed: u64, cols: usize, outliers: bool) -> Vec<f32> {
    let mut x = synthetic_weights(seed, TOKENS * cols, 1.0);
    if outliers {
        for row in x.chunks_mut(cols) {
            row.iter_mut().step_by(37).for_each(|v| *v *= 20.0);
        }
    }
    x
}

/// What a model run would give a layer whose inputs are `x` (`TOKENS × cols`), for `need`.
pub fn calibration(x: &[f32], cols: usize, need: CalibrationNeed) -> Result<CalibrationData> {
    from_rows(x, cols, need)
}

/// `‖X (W − Ŵ)ᵀ‖ / ‖X Wᵀ‖`: the error a layer's output sees on inputs `x` (the quantity GPTQ
/// and AWQ minimize).
pub fn output_error(x: &[f32], w: &[f32], wq: &[f32], rows: usize, cols: usize) -> f64 {
    let (mut num, mut den) = (0f64, 0f64);
    for xr in x.chunks(cols) {
        for r in 0..rows {
            let (wr, qr) = (&w[r * cols..(r + 1) * cols], &wq[r * cols..(r + 1) * cols]);
            let (mut y, mut e) = (0f64, 0f64);
            for c in 0..cols {
                y += xr[c] as f64 * wr[c] as f64;
                e += xr[c] as f64 * (wr[c] - qr[c]) as f64;
            }
            num += e * e;
            den += y * y;
        }
    }
    (num / den.max(f64::MIN_POSITIVE)).sqrt()
}

/// Relative RMS error `‖W − Ŵ‖ / ‖W‖` and the largest absolute error.
pub fn weight_error(w: &[f32], wq: &[f32]) -> (f64, f64) {
    let (mut num, mut den, mut max) = (0f64, 0f64, 0f64);
    for (a, b) in w.iter().zip(wq) {
        let d = (*a - *b) as f64;
        num += d * d;
        den += (*a as f64) * (*a as f64);
        max = max.max(d.abs());
    }
    ((num / den.max(f64::MIN_POSITIVE)).sqrt(), max)
}
