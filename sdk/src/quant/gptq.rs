//! GPTQ (Frantar et al., 2022) as its reference implementation computes it (IST-DASLab/gptq,
//! `gptq.py`, `GPTQ.fasterquant`), in f64, into the integer group format of [`super::intgroup`].
//!
//! Given the layer's Hessian `H = 2/n Σ x xᵀ` over the calibration inputs:
//! 1. dead inputs (`H[i,i] = 0`) get `H[i,i] = 1` and their weights are zeroed;
//! 2. with `static_groups`, every group's parameters come from the weights as given;
//! 3. with `act_order`, columns are visited by decreasing `H[i,i]`;
//! 4. `H += damp · mean(diag H) · I`, then `Hinv = chol(H⁻¹)ᵀ` (upper Cholesky factor of the
//!    inverse);
//! 5. columns are quantized one by one in blocks of `block_size`; a group's parameters are
//!    found when its first column is reached, from the weights as they stood at the start of
//!    the current block (the reference reads `W`, not the block's working copy `W1`), or for
//!    `group_size = -1` once from the weights as given; the error `(w − q) / Hinv[i,i]` is
//!    spread over the remaining columns of the block at once and over the later blocks
//!    lazily, one block at a time.

use super::intgroup::{code, find_params, GroupParams, IntGroupMatrix, IntGroupSpec};
use super::linalg::{first_non_finite, par_copy, par_each, SquareMatrix};
use crate::services::LazyUpdates;
use crate::{bail, Result};
use std::time::Instant;

/// GPTQ's knobs beside the format.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GptqOptions {
    /// Fraction of the mean Hessian diagonal added to the diagonal (`percdamp`, 0.01).
    pub damp: f64,
    /// Quantize columns by decreasing Hessian diagonal (`--act-order`).
    pub act_order: bool,
    /// Group parameters from the weights before any update (`--static-groups`).
    pub static_groups: bool,
    /// Columns per lazy-update block (128).
    pub block_size: usize,
}

impl GptqOptions {
    /// Refuse a damping that is not positive and empty blocks.
    fn check(&self) -> Result<()> {
        if !(self.damp > 0.0 && self.damp.is_finite()) || self.block_size == 0 {
            bail!("gptq: damp must be positive and block_size at least 1");
        }
        Ok(())
    }

    /// Whether the packed matrix carries `g_idx` (act-order with dynamic groups).
    pub fn has_g_idx(&self) -> bool {
        self.act_order && !self.static_groups
    }
}

impl Default for GptqOptions {
    fn default() -> Self {
        GptqOptions { damp: 0.01, act_order: false, static_groups: false, block_size: 128 }
    }
}

/// What GPTQ produced for one layer, with its own error estimate.
#[derive(Debug, Clone)]
pub struct GptqResult {
    pub matrix: IntGroupMatrix,
    /// `Σ (w − q)² / Hinv[i,i]² / 2` over all weights (the reference's printed `error`).
    pub loss: f64,
    /// Where the column loop's time went.
    pub timing: GptqTiming,
}

/// Host-clock seconds of one [`gptq_prepared`] call's column loop, for the speed study
/// (`sdk/examples/gptq_time.rs`, `$LLQ_GPTQ_TIMING` in the plugin).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct GptqTiming {
    /// The columns quantized block by block, each error spread over its own block.
    pub columns_s: f64,
    /// The lazy updates of later blocks (and handing the matrix to the host, when it took it).
    pub lazy_s: f64,
    /// Whether the host ran the lazy updates (ABI 1.5).
    pub lazy_on_host: bool,
}

/// One row's state while GPTQ runs: its codes (visiting order) and group parameters, the
/// parameters in force, its share of the loss, and the current block's working copy and errors.
struct RowWork {
    codes: Vec<u8>,
    params: Vec<GroupParams>,
    current: GroupParams,
    loss: f64,
    w1: Vec<f64>,
    err: Vec<f64>,
}

/// What GPTQ derives from a layer's Hessian alone (steps 1, 3 and 4 of the module docs): the
/// dead inputs, the visiting order and `Hinv`. Layers that read the same input (q/k/v, gate/up)
/// share one, so a plugin may keep it between their calls ([`gptq_prepared`]); the
/// factorization is most of GPTQ's time on wide layers (8192 columns: 5.5 of 7.2 s).
#[derive(Debug, Clone)]
pub struct GptqHessian {
    cols: usize,
    damp: f64,
    act_order: bool,
    /// Inputs no calibration row reached (`H[i,i] = 0`): their weights are zeroed.
    dead: Vec<bool>,
    /// Visiting order (column indices).
    perm: Vec<usize>,
    /// `Hinv`: the upper Cholesky factor of the damped, permuted `H⁻¹`.
    u: SquareMatrix,
}

impl GptqHessian {
    /// Check and factor `hessian` (cols × cols) for `opt`'s damping and order.
    pub fn new(hessian: &[f64], cols: usize, opt: &GptqOptions) -> Result<Self> {
        if hessian.len() != cols * cols {
            bail!("gptq: a Hessian of {} values for {cols} columns", hessian.len());
        }
        opt.check()?;
        // The scan and the copy on the pool: 512 MB each on 8192 columns.
        if let Some(i) = first_non_finite(hessian) {
            bail!("gptq: the Hessian has a non-finite value at ({}, {})", i / cols, i % cols);
        }
        let mut h = SquareMatrix { n: cols, a: par_copy(hessian) };
        let dead: Vec<bool> = (0..cols).map(|i| h.get(i, i) == 0.0).collect();
        for (i, _) in dead.iter().enumerate().filter(|(_, &d)| d) {
            h.set(i, i, 1.0);
        }
        // Visiting order: by decreasing diagonal (a stable sort: ties keep column order).
        let perm: Vec<usize> = if opt.act_order {
            let mut p: Vec<usize> = (0..cols).collect();
            p.sort_by(|&a, &b| h.get(b, b).total_cmp(&h.get(a, a)));
            p
        } else {
            (0..cols).collect()
        };
        // H in visiting order (as it is without act-order).
        let mut hp = if opt.act_order {
            let mut hp = SquareMatrix::zeros(cols);
            for (i, &pi) in perm.iter().enumerate() {
                let src = h.row(pi);
                for (dst, &pj) in hp.a[i * cols..(i + 1) * cols].iter_mut().zip(&perm) {
                    *dst = src[pj];
                }
            }
            hp
        } else {
            h
        };
        let mean_diag = (0..cols).map(|i| hp.get(i, i)).sum::<f64>() / cols as f64;
        for i in 0..cols {
            hp.a[i * cols + i] += opt.damp * mean_diag;
        }
        // The host's GPU does it when it offers to (ABI 1.4), this library's CPU code otherwise.
        let u = crate::services::inverse_upper_cholesky(&hp)
            .map_err(|e| format!("gptq: the damped Hessian is not positive definite ({e})"))?;
        Ok(GptqHessian { cols, damp: opt.damp, act_order: opt.act_order, dead, perm, u })
    }

    /// Whether this was made for `cols` columns under `opt`'s damping and order.
    pub fn fits(&self, cols: usize, opt: &GptqOptions) -> bool {
        self.cols == cols && self.damp == opt.damp && self.act_order == opt.act_order
    }
}

/// Quantize `data` (rows × cols, row-major) with GPTQ given `hessian` (cols × cols).
pub fn gptq(
    data: &[f32],
    rows: usize,
    cols: usize,
    hessian: &[f64],
    spec: IntGroupSpec,
    opt: GptqOptions,
) -> Result<GptqResult> {
    if data.len() != rows * cols {
        bail!("gptq: {} weights for {rows}×{cols}", data.len());
    }
    gptq_prepared(data, rows, cols, &GptqHessian::new(hessian, cols, &opt)?, spec, opt)
}

/// [`gptq`] with the Hessian already factored for these options.
pub fn gptq_prepared(
    data: &[f32],
    rows: usize,
    cols: usize,
    prep: &GptqHessian,
    spec: IntGroupSpec,
    opt: GptqOptions,
) -> Result<GptqResult> {
    if data.len() != rows * cols {
        bail!("gptq: {} weights for {rows}×{cols}", data.len());
    }
    opt.check()?;
    if !prep.fits(cols, &opt) {
        bail!("gptq: the factored Hessian was made for other columns or options");
    }
    let (gs, maxq) = (spec.group_size, spec.maxq());
    let groups = spec.groups(cols);
    // Working copy of W in f64, row-major; dead inputs zeroed. Rows on the pool: on
    // Llama-3.2-1B's 16M-weight layers one thread took ~0.1 s a layer here.
    let dead: Vec<usize> = (0..cols).filter(|&i| prep.dead[i]).collect();
    let mut w = vec![0f64; rows * cols];
    {
        let mut wrows: Vec<&mut [f64]> = w.chunks_mut(cols.max(1)).collect();
        par_each(&mut wrows, |r, row| {
            for (d, &v) in row.iter_mut().zip(&data[r * cols..(r + 1) * cols]) {
                *d = v as f64;
            }
            for &i in &dead {
                row[i] = 0.0;
            }
        });
    }
    // Static groups: parameters from the (dead-zeroed) weights in column order.
    let static_params: Option<Vec<GroupParams>> = opt.static_groups.then(|| {
        let mut p = Vec::with_capacity(rows * groups);
        for r in 0..rows {
            for g in 0..groups {
                let span = g * gs..((g + 1) * gs).min(cols);
                p.push(find_params(w[r * cols + span.start..r * cols + span.end].iter().copied(), &spec));
            }
        }
        p
    });
    let perm = &prep.perm;
    // W in visiting order (moved as it is without act-order).
    let mut wp = if opt.act_order {
        let mut wp = vec![0f64; rows * cols];
        let mut wrows: Vec<&mut [f64]> = wp.chunks_mut(cols.max(1)).collect();
        par_each(&mut wrows, |r, row| {
            for (d, &c) in row.iter_mut().zip(perm) {
                *d = w[r * cols + c];
            }
        });
        wp
    } else {
        w
    };
    // Hinv's rows are read along memory by the updates below.
    let u = &prep.u;
    let urow = |j: usize| &u.a[j * cols..(j + 1) * cols];

    // Each visited column's group: fixed by the options alone, so the packed size is known
    // before quantizing.
    let whole_row = spec.whole_row;
    let group: Vec<usize> = (0..cols)
        .map(|j| {
            if whole_row {
                0
            } else if opt.static_groups {
                perm[j] / gs
            } else {
                j / gs
            }
        })
        .collect();
    let mut g_idx = vec![0u32; cols];
    for (j, &g) in group.iter().enumerate() {
        g_idx[perm[j]] = g as u32;
    }
    // `group_size = -1`: one group per row, its parameters from the weights as given (the
    // reference finds them before zeroing dead columns).
    let row_params: Vec<GroupParams> = if whole_row {
        (0..rows)
            .map(|r| find_params(data[r * cols..(r + 1) * cols].iter().map(|&v| v as f64), &spec))
            .collect()
    } else {
        vec![]
    };
    let zero = GroupParams { scale: 0.0, zero: 0.0 };
    let mut work: Vec<RowWork> = (0..rows)
        .map(|_| RowWork {
            codes: vec![0; cols],
            params: vec![zero; groups],
            current: zero,
            loss: 0.0,
            w1: vec![],
            err: vec![],
        })
        .collect();
    let bs = opt.block_size;
    let mut err: Vec<f64> = vec![];
    // The columns a block reads from `wp`: its own, and where a dynamic group starts inside
    // it, the whole group (its parameters come from the weights at the block start).
    let dynamic = !whole_row && static_params.is_none();
    let reads_to = |i2: usize| {
        let i3 = (i2 + bs).min(cols);
        if !dynamic {
            return i3;
        }
        let last_start = (i3 - 1) / gs * gs;
        if last_start >= i2 {
            i3.max((last_start + gs).min(cols))
        } else {
            i3
        }
    };
    let mut timing = GptqTiming::default();
    let t = Instant::now();
    let mut lazy = if cols > bs { Some(LazyUpdates::begin(rows, cols, &wp, &u.a)?) } else { None };
    timing.lazy_s += t.elapsed().as_secs_f64();
    for i1 in (0..cols).step_by(bs) {
        let t = Instant::now();
        let i2 = (i1 + bs).min(cols);
        let count = i2 - i1;
        // Rows are independent inside a block: each quantizes its columns one by one, spreading
        // the error over the rest of the block in its working copy (W1). `wp` keeps the values at
        // the block start, which is what dynamic groups starting inside the block are measured on.
        let wp_ref = &wp;
        par_each(&mut work, |r, row| {
            let wrow = &wp_ref[r * cols..(r + 1) * cols];
            row.w1.clear();
            row.w1.extend_from_slice(&wrow[i1..i2]);
            row.err.clear();
            row.err.resize(count, 0.0);
            for i in 0..count {
                let j = i1 + i; // position in visiting order
                let g = group[j];
                if whole_row {
                    row.current = row_params[r];
                } else if let Some(sp) = &static_params {
                    row.current = sp[r * groups + g];
                } else if j % gs == 0 {
                    row.current = find_params(wrow[j..(j + gs).min(cols)].iter().copied(), &spec);
                }
                let p = row.current;
                row.params[g] = p;
                let d = urow(j)[j];
                let x = row.w1[i];
                let q = code(x, p, maxq);
                row.codes[j] = q;
                let qv = p.scale * (q as f64 - p.zero);
                row.loss += (x - qv) * (x - qv) / (d * d) / 2.0;
                let e = (x - qv) / d;
                row.err[i] = e;
                // W1[r, i:] -= e · Hinv[j, j:i2]
                for (v, h) in row.w1[i..].iter_mut().zip(&urow(j)[j..i2]) {
                    *v -= e * h;
                }
            }
        });
        timing.columns_s += t.elapsed().as_secs_f64();
        // Later blocks, lazily, as one product in the reference loop's order (see
        // `sub_products_in_order`): W[:, i2:] -= Err1 · Hinv[i1:i2, i2:].
        // (`lazy` is there whenever a later block is: `cols > bs`.)
        if let Some(lazy) = lazy.as_mut().filter(|_| i2 < cols) {
            let t = Instant::now();
            err.clear();
            err.extend(work.iter().flat_map(|row| row.err.iter().copied()));
            lazy.update(&mut wp, &u.a, i1, i2, &err, reads_to(i2))?;
            timing.lazy_s += t.elapsed().as_secs_f64();
        }
    }
    timing.lazy_on_host = lazy.as_ref().is_some_and(|l| l.on_host());
    drop(lazy);
    let loss = work.iter().map(|row| row.loss).sum();
    // Codes back in column order, rows on the pool.
    let mut codes = vec![0u8; rows * cols];
    let mut dst: Vec<(&mut [u8], &RowWork)> = codes.chunks_mut(cols.max(1)).zip(&work).collect();
    par_each(&mut dst, |_, (d, row)| {
        for (j, &c) in perm.iter().enumerate() {
            d[c] = row.codes[j];
        }
    });
    let params: Vec<GroupParams> = work.into_iter().flat_map(|row| row.params).collect();
    // Groups follow column order unless act-order visited them in another one (decided by
    // the options alone, so the packed size is known before quantizing).
    let matrix = IntGroupMatrix {
        rows,
        cols,
        spec,
        codes,
        params,
        g_idx: opt.has_g_idx().then_some(g_idx),
        zero_f16: false,
    };
    Ok(GptqResult { matrix, loss, timing })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::intgroup::rtn;

    /// A Hessian from `n` pseudo-random activation rows that are correlated across columns
    /// (rank 8 plus noise, uneven column scales), as real layer inputs are.
    fn hessian(cols: usize, n: usize) -> (Vec<f64>, Vec<f64>) {
        let mut next = crate::testing::uniform(0x1234_5678u64);
        let basis: Vec<f64> = (0..8 * cols).map(|_| next()).collect();
        let mut x = vec![0f64; n * cols];
        for t in 0..n {
            let z: Vec<f64> = (0..8).map(|_| next()).collect();
            for c in 0..cols {
                let v: f64 = (0..8).map(|k| z[k] * basis[k * cols + c]).sum();
                x[t * cols + c] = (v + 0.05 * next()) * (1.0 + (c % 7) as f64 / 2.0);
            }
        }
        let mut h = vec![0f64; cols * cols];
        for r in 0..n {
            for i in 0..cols {
                for j in 0..cols {
                    h[i * cols + j] += 2.0 / n as f64 * x[r * cols + i] * x[r * cols + j];
                }
            }
        }
        (h, x)
    }

    fn output_error(w: &[f32], q: &IntGroupMatrix, x: &[f64], n: usize) -> f64 {
        let (rows, cols) = (q.rows, q.cols);
        let mut e = 0.0;
        for r in 0..rows {
            for t in 0..n {
                let mut d = 0.0;
                for c in 0..cols {
                    let p = q.params[r * q.spec.groups(cols) + q.group_of(c)];
                    let wq = p.scale * (q.codes[r * cols + c] as f64 - p.zero);
                    d += (w[r * cols + c] as f64 - wq) * x[t * cols + c];
                }
                e += d * d;
            }
        }
        e
    }

    #[test]
    fn gptq_beats_round_to_nearest_on_the_layer_output() {
        let (rows, cols, n) = (16, 64, 256);
        let (h, x) = hessian(cols, n);
        let w: Vec<f32> =
            (0..rows * cols).map(|i| (((i * 7919) % 1000) as f32 / 1000.0 - 0.5) * 0.1).collect();
        for (bits, gs, act_order, static_groups) in
            [(4, 16, false, false), (3, 64, false, false), (4, 16, true, false), (4, 16, true, true)]
        {
            let spec = IntGroupSpec { bits, group_size: gs, sym: false, whole_row: false };
            let opt = GptqOptions { act_order, static_groups, block_size: 32, ..Default::default() };
            let g = gptq(&w, rows, cols, &h, spec, opt).unwrap();
            let r = rtn(&w, rows, cols, spec);
            let (eg, er) = (output_error(&w, &g.matrix, &x, n), output_error(&w, &r, &x, n));
            assert!(eg < 0.9 * er, "bits {bits} gs {gs} act_order {act_order}: gptq {eg} vs rtn {er}");
            assert_eq!(g.matrix.g_idx.is_some(), act_order && !static_groups);
        }
    }

    #[test]
    fn dead_columns_are_zeroed_and_bad_hessians_refused() {
        let (rows, cols) = (2, 4);
        let mut h = vec![0f64; 16];
        for i in 0..3 {
            h[i * 4 + i] = 1.0;
        }
        let w = [0.5f32, -0.25, 0.1, 9.0, 0.3, 0.2, -0.1, -9.0];
        let spec = IntGroupSpec { bits: 8, group_size: 4, sym: true, whole_row: false };
        let g = gptq(&w, rows, cols, &h, spec, GptqOptions::default()).unwrap();
        // Column 3 sees no input: its weights are zeroed, so they do not set the range.
        for r in 0..rows {
            let p = g.matrix.params[r];
            assert_eq!(p.scale * (g.matrix.codes[r * cols + 3] as f64 - p.zero), 0.0);
            assert!(p.scale < 0.01, "{p:?}");
        }
        h[0] = f64::NAN;
        assert!(gptq(&w, rows, cols, &h, spec, GptqOptions::default()).unwrap_err().0.contains("non-finite"));
    }
}
