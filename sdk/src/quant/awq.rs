//! AWQ (Lin et al., 2023) as mit-han-lab/llm-awq computes it (`awq/quantize/auto_scale.py`,
//! `auto_clip.py`, `quantizer.py`), in f64, into the integer group format of [`super::intgroup`].
//!
//! * Quantizer (`pseudo_quantize_tensor`): with a zero point, a group's range is its own
//!   `[min, max]` (0 need not be inside, unlike GPTQ's), `scale = max(max − min, 1e-5) / maxq`,
//!   `zero = clamp(round(−min / scale), 0, maxq)`; symmetric: `scale = max(max|w|, 1e-5) /
//!   (2^(b−1) − 1)` and codes in `[−2^(b−1), 2^(b−1) − 1]`, stored offset by `2^(b−1)`.
//! * Scale search (`auto_scale_block` / `_search_module_scale`) for layers sharing an input x:
//!   for `ratio = i / n_grid`, `i = 0..n_grid`, `s = clamp(mean|x|^ratio, 1e-4)` normalised by
//!   `sqrt(max s · min s)`; the loss is the mean squared output error of the layers quantized as
//!   `Q(W·diag(s))·diag(s)⁻¹`, and the first ratio with the smallest loss wins. llm-awq
//!   measures the error at the output of the enclosing module (the attention for q/k/v, the MLP
//!   for gate/up); here it is the concatenated outputs of the group's linear layers, which the
//!   calibration's Hessian gives exactly: `mean_t,r (d_r·x_t)² = Σ_r d_r H d_rᵀ / (2·rows)` with
//!   `d_r = w_r − ŵ_r` and `H = 2/n Σ x xᵀ`, so no activation rows need to be kept.
//! * Clipping search (`auto_clip_layer`): per (row, group), the range `max|w|·(1 − i/n_grid)`,
//!   `i = 0..max_shrink·n_grid`, whose clamped-and-quantized weights give the smallest mean
//!   squared error of that group's partial output `Σ_c x_c w_c` (against the unclipped
//!   weights); again exactly from the group's diagonal block of `H`. llm-awq evaluates it on
//!   512 of the calibration tokens, this on all of them.

use super::intgroup::{code, GroupParams, IntGroupMatrix, IntGroupSpec};
use super::linalg::matmul;
use crate::{bail, Result};

/// AWQ's quantizer parameters for one group (module docs).
pub fn awq_params(values: impl Iterator<Item = f64>, spec: &IntGroupSpec) -> GroupParams {
    let (mut lo, mut hi, mut amax) = (f64::INFINITY, f64::NEG_INFINITY, 0f64);
    for v in values {
        lo = lo.min(v);
        hi = hi.max(v);
        amax = amax.max(v.abs());
    }
    if spec.sym {
        let half = (1u32 << (spec.bits - 1)) as f64;
        GroupParams { scale: amax.max(1e-5) / (half - 1.0), zero: half }
    } else {
        let maxq = spec.maxq() as f64;
        let scale = (hi - lo).max(1e-5) / maxq;
        GroupParams { scale, zero: (-lo / scale).round_ties_even().clamp(0.0, maxq) }
    }
}

fn fake(x: f64, p: GroupParams, maxq: u32) -> f64 {
    p.scale * (code(x, p, maxq) as f64 - p.zero)
}

/// `Q(row)` group by group with AWQ's quantizer, in place.
fn fake_quantize_row(row: &mut [f64], spec: &IntGroupSpec) {
    for g in row.chunks_mut(spec.group_size) {
        let p = awq_params(g.iter().copied(), spec);
        for v in g.iter_mut() {
            *v = fake(*v, p, spec.maxq());
        }
    }
}

/// What the scale search chose for one group of layers.
#[derive(Debug, Clone, PartialEq)]
pub struct ScaleSearch {
    /// The winning `ratio` (α).
    pub ratio: f64,
    /// `cols` scales.
    pub scales: Vec<f64>,
    /// The loss at each ratio tried, in order; `losses[0]` is plain round-to-nearest.
    pub losses: Vec<f64>,
}

impl ScaleSearch {
    pub fn best_loss(&self) -> f64 {
        self.losses.iter().copied().fold(f64::INFINITY, f64::min)
    }
}

/// `Σ_r d_r H d_rᵀ` over the rows of `d` (rows × n).
fn quadratic_form_rows(d: &[f64], n: usize, h: &[f64]) -> f64 {
    let e = matmul(d, d.len() / n.max(1), n, h, n);
    d.iter().zip(&e).map(|(a, b)| a * b).sum()
}

/// AWQ's scale search for `layers` (each `rows × cols`, row-major) that read one input with
/// per-column mean |x| `abs_mean` and Hessian `h` (module docs).
pub fn search_scale(
    layers: &[(&[f32], usize)],
    cols: usize,
    abs_mean: &[f32],
    h: &[f64],
    spec: &IntGroupSpec,
    n_grid: usize,
) -> Result<ScaleSearch> {
    if abs_mean.len() != cols || h.len() != cols * cols {
        bail!(
            "awq: {} column statistics and a Hessian of {} values for {cols} columns",
            abs_mean.len(),
            h.len()
        );
    }
    if layers.iter().any(|(w, rows)| w.len() != rows * cols) || n_grid == 0 {
        bail!("awq: layer shapes do not match {cols} columns, or n_grid is 0");
    }
    let total_rows: usize = layers.iter().map(|(_, r)| r).sum();
    let w: Vec<f64> = layers.iter().flat_map(|(w, _)| w.iter().map(|&v| v as f64)).collect();
    let x_max: Vec<f64> = abs_mean.iter().map(|&v| v as f64).collect();
    let mut best: Option<(f64, Vec<f64>)> = None;
    let mut best_loss = f64::INFINITY;
    let mut losses = Vec::with_capacity(n_grid);
    let mut d = vec![0f64; w.len()];
    for i in 0..n_grid {
        let ratio = i as f64 / n_grid as f64;
        let mut s: Vec<f64> = x_max.iter().map(|&x| x.powf(ratio).max(1e-4)).collect();
        let (lo, hi) = s.iter().fold((f64::INFINITY, 0f64), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        let norm = (hi * lo).sqrt();
        s.iter_mut().for_each(|v| *v /= norm);
        for (wr, dr) in w.chunks(cols).zip(d.chunks_mut(cols)) {
            for ((dv, &wv), &sv) in dr.iter_mut().zip(wr).zip(&s) {
                *dv = wv * sv;
            }
            fake_quantize_row(dr, spec);
            for ((dv, &wv), &sv) in dr.iter_mut().zip(wr).zip(&s) {
                *dv = wv - *dv / sv;
            }
        }
        let loss = quadratic_form_rows(&d, cols, h) / (2.0 * total_rows as f64);
        if !loss.is_finite() {
            bail!("awq: the loss at ratio {ratio} is {loss}");
        }
        losses.push(loss);
        // Strictly smaller: the first of equal losses wins, as in llm-awq.
        if loss < best_loss {
            best_loss = loss;
            best = Some((ratio, s));
        }
    }
    let (ratio, scales) = best.expect("n_grid > 0 and every loss is finite");
    Ok(ScaleSearch { ratio, scales, losses })
}

/// AWQ's clipping search: the clipped weights (rows × cols), each (row, group) clamped to the
/// range that minimises its partial output error under `h` (module docs). For each group and
/// each shrink step the errors of all rows come from one product `D · H_g`.
pub fn auto_clip(
    data: &[f32],
    rows: usize,
    cols: usize,
    h: &[f64],
    spec: &IntGroupSpec,
    n_grid: usize,
    max_shrink: f64,
) -> Vec<f64> {
    let gs = spec.group_size;
    let steps = (max_shrink * n_grid as f64) as usize;
    let mut out: Vec<f64> = data.iter().map(|&v| v as f64).collect();
    for g0 in (0..cols).step_by(gs) {
        let n = gs.min(cols - g0);
        // The group's diagonal block of H, and its weights, rows × n.
        let hg: Vec<f64> =
            (0..n).flat_map(|a| h[(g0 + a) * cols + g0..(g0 + a) * cols + g0 + n].iter().copied()).collect();
        let w: Vec<f64> =
            (0..rows).flat_map(|r| out[r * cols + g0..r * cols + g0 + n].iter().copied()).collect();
        let org_max: Vec<f64> = w.chunks(n).map(|row| row.iter().fold(0f64, |m, v| m.max(v.abs()))).collect();
        let mut best = org_max.clone();
        let mut min_err = vec![1e9; rows];
        let mut d = vec![0f64; rows * n];
        for i in 0..steps {
            let shrink = 1.0 - i as f64 / n_grid as f64;
            for ((drow, wrow), &m) in d.chunks_mut(n).zip(w.chunks(n)).zip(&org_max) {
                let max_val = m * shrink;
                for (dv, &wv) in drow.iter_mut().zip(wrow) {
                    *dv = wv.clamp(-max_val, max_val);
                }
                let p = awq_params(drow.iter().copied(), spec);
                for (dv, &wv) in drow.iter_mut().zip(wrow) {
                    *dv = fake(*dv, p, spec.maxq()) - wv;
                }
            }
            // d H_g dᵀ / 2 per row: the mean over tokens of the squared partial-output error.
            let e = matmul(&d, rows, n, &hg, n);
            for (r, (drow, erow)) in d.chunks(n).zip(e.chunks(n)).enumerate() {
                let err = drow.iter().zip(erow).map(|(a, b)| a * b).sum::<f64>() / 2.0;
                if err < min_err[r] {
                    min_err[r] = err;
                    best[r] = org_max[r] * shrink;
                }
            }
        }
        for (r, &b) in best.iter().enumerate() {
            out[r * cols + g0..r * cols + g0 + n].iter_mut().for_each(|v| *v = v.clamp(-b, b));
        }
    }
    out
}

/// Quantize `w` (rows × cols, f64) with AWQ's quantizer into the stored format.
pub fn quantize(w: &[f64], rows: usize, cols: usize, spec: IntGroupSpec) -> IntGroupMatrix {
    let (gs, maxq) = (spec.group_size, spec.maxq());
    let mut m = IntGroupMatrix::new(rows, cols, spec);
    for (r, row) in w.chunks(cols).enumerate() {
        for (g, vals) in row.chunks(gs).enumerate() {
            let p = awq_params(vals.iter().copied(), &spec);
            for (i, &v) in vals.iter().enumerate() {
                m.codes[r * cols + g * gs + i] = code(v, p, maxq);
            }
            m.params.push(p);
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(bits: u32, gs: usize, sym: bool) -> IntGroupSpec {
        IntGroupSpec { bits, group_size: gs, sym, whole_row: false }
    }

    #[test]
    fn params_by_hand() {
        // Zero point over [0.5, 2]: 0 is not pulled into the range (GPTQ's would be [0, 2]).
        let p = awq_params([0.5, 2.0, 1.0].into_iter(), &spec(4, 3, false));
        assert!((p.scale - 0.1).abs() < 1e-15 && p.zero == 0.0, "{p:?}");
        // [-1, 2]: scale 0.2, zero round(5) = 5.
        let p = awq_params([-1.0, 2.0].into_iter(), &spec(4, 2, false));
        assert!((p.scale - 0.2).abs() < 1e-15 && p.zero == 5.0, "{p:?}");
        // Symmetric 4-bit: absmax 2 over 7 levels, codes offset by 8.
        let p = awq_params([-1.0, 2.0].into_iter(), &spec(4, 2, true));
        assert!((p.scale - 2.0 / 7.0).abs() < 1e-15 && p.zero == 8.0, "{p:?}");
        assert_eq!(code(-2.0, p, 15), 1);
        // A constant group: the range is clamped to 1e-5.
        let p = awq_params([3.0, 3.0].into_iter(), &spec(4, 2, false));
        assert!((p.scale - 1e-5 / 15.0).abs() < 1e-20 && p.zero == 0.0, "{p:?}");
    }

    #[test]
    fn hessian_loss_is_the_mean_squared_output_error() {
        // x rows and one 2×3 layer: the search's loss at ratio 0 equals the direct mean over
        // tokens and outputs of ((W − Q(W)) x)².
        let xs = [[1.0, -2.0, 0.5], [0.3, 1.0, -1.5], [2.0, 0.1, 0.2], [-0.7, 0.4, 1.1]];
        let w = [0.9f32, -0.3, 0.05, -1.2, 0.7, 0.33];
        let n = xs.len() as f64;
        let mut h = vec![0f64; 9];
        for x in &xs {
            for i in 0..3 {
                for j in 0..3 {
                    h[i * 3 + j] += 2.0 / n * x[i] * x[j];
                }
            }
        }
        let sp = spec(2, 3, false);
        let r = search_scale(&[(&w, 2)], 3, &[1.0, 1.0, 1.0], &h, &sp, 1).unwrap();
        let q = quantize(&w.iter().map(|&v| v as f64).collect::<Vec<_>>(), 2, 3, sp);
        let mut direct = 0.0;
        for x in &xs {
            for row in 0..2 {
                let p = q.params[row];
                let e: f64 = (0..3)
                    .map(|c| {
                        (w[row * 3 + c] as f64 - p.scale * (q.codes[row * 3 + c] as f64 - p.zero)) * x[c]
                    })
                    .sum();
                direct += e * e;
            }
        }
        direct /= n * 2.0;
        assert!((r.losses[0] - direct).abs() < 1e-12 * direct.max(1.0), "{} vs {direct}", r.losses[0]);
        assert_eq!((r.ratio, r.scales.clone()), (0.0, vec![1.0; 3]));
    }

    #[test]
    fn scaling_helps_a_salient_channel() {
        // One input column 30× larger than the rest: a ratio above 0 protects its weights.
        let cols = 64;
        let mut h = vec![0f64; cols * cols];
        let am: Vec<f32> = (0..cols).map(|c| if c == 5 { 30.0 } else { 1.0 }).collect();
        for c in 0..cols {
            h[c * cols + c] = 2.0 * (am[c] as f64).powi(2);
        }
        let w: Vec<f32> = (0..4 * cols).map(|i| (((i * 29) % 23) as f32 - 11.0) / 7.0).collect();
        let r = search_scale(&[(&w, 4)], cols, &am, &h, &spec(3, 64, false), 20).unwrap();
        assert!(r.ratio > 0.0 && r.best_loss() < r.losses[0], "{r:?}");
        assert!(r.scales[5] > r.scales[0]);
    }

    #[test]
    fn clipping_never_raises_the_error_and_keeps_ranges() {
        let (rows, cols) = (3, 32);
        let w: Vec<f32> = (0..rows * cols)
            .map(|i| (((i * 37) % 41) as f32 - 20.0) / 9.0 + if i % 17 == 0 { 6.0 } else { 0.0 })
            .collect();
        let h: Vec<f64> = (0..cols * cols).map(|i| if i / cols == i % cols { 2.0 } else { 0.0 }).collect();
        let sp = spec(3, 16, false);
        let clipped = auto_clip(&w, rows, cols, &h, &sp, 20, 0.5);
        let err = |m: &[f64]| -> f64 {
            let q = quantize(m, rows, cols, sp);
            (0..rows * cols)
                .map(|i| {
                    let p = q.params[i / 16];
                    (w[i] as f64 - p.scale * (q.codes[i] as f64 - p.zero)).powi(2)
                })
                .sum()
        };
        let plain: Vec<f64> = w.iter().map(|&v| v as f64).collect();
        assert!(err(&clipped) <= err(&plain) + 1e-12, "{} > {}", err(&clipped), err(&plain));
        assert!(clipped.iter().zip(&plain).all(|(c, p)| c.abs() <= p.abs()));
        assert!(clipped != plain, "an outlier of 6 in a group should be clipped");
    }
}
