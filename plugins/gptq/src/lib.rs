//! `gptq`: GPTQ (Frantar et al., 2022) as IST-DASLab/gptq's `fasterquant` computes it
//! (llq_sdk::quant::gptq), from the input Hessian the host accumulates over calibration text,
//! into the integer group format `rtn` shares (llq_sdk::quant::intgroup).
use llq_sdk::quant::gptq::{gptq_prepared, GptqHessian, GptqOptions};
use llq_sdk::quant::intgroup::{self, IntGroupSpec};
use llq_sdk::quant::linalg::par_copy_into;
use llq_sdk::{
    bail, export_plugin, Calibration, CalibrationNeed, CudaKernels, OptionKind, OptionSpec, Options,
    PackedView, QuantMethod, Quantized, Result, Weights,
};
use std::sync::{Arc, Mutex};

/// The last Hessian factored and what came of it. Layers that read one input (q/k/v after
/// `input_layernorm`, gate/up after `post_attention_layernorm`) get the same Hessian, and the
/// host quantizes them together, on several threads: the first takes the lock and factors,
/// the others wait and reuse it (two of three factorizations of each block's q/k/v skipped).
/// A process-wide static because the SDK makes a fresh `Gptq` for every call.
static LAST: Mutex<Option<(Vec<f64>, Arc<GptqHessian>)>> = Mutex::new(None);

/// Buffers of earlier [`LAST`] entries, reused for the next copy: Llama-3.2-1B's `down_proj`
/// Hessian is 512 MB, and a fresh one a block is ~0.2 s of page faults on one thread. At most
/// [`SPARES`] are kept (one per Hessian size a model's blocks cycle through is enough).
static SPARE: Mutex<Vec<Vec<f64>>> = Mutex::new(Vec::new());
const SPARES: usize = 2;

/// A copy of `h` in a spare buffer (the smallest that holds it) or a new one.
fn keep_copy(h: &[f64]) -> Vec<f64> {
    let mut spare = SPARE.lock().unwrap_or_else(|e| e.into_inner());
    let best =
        (0..spare.len()).filter(|&i| spare[i].capacity() >= h.len()).min_by_key(|&i| spare[i].capacity());
    let mut buf = best.map(|i| spare.swap_remove(i)).unwrap_or_default();
    drop(spare);
    par_copy_into(&mut buf, h);
    buf
}

/// Keep `buf` for [`keep_copy`], dropping the smallest spare beyond [`SPARES`].
fn give_back(buf: Vec<f64>) {
    let mut spare = SPARE.lock().unwrap_or_else(|e| e.into_inner());
    spare.push(buf);
    if spare.len() > SPARES {
        let i = (0..spare.len()).min_by_key(|&i| spare[i].capacity()).unwrap_or(0);
        spare.swap_remove(i);
    }
}

/// `hessian` factored for `opt`, from [`LAST`] when it holds the same values bit for bit.
fn factored(hessian: &[f64], cols: usize, opt: &GptqOptions) -> Result<Arc<GptqHessian>> {
    // A panic elsewhere while holding the lock leaves nothing half-written: the entry is
    // replaced whole, so a poisoned lock is still usable.
    let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((h, f)) = last.as_ref() {
        let same = h.len() == hessian.len() && h.iter().zip(hessian).all(|(a, b)| a.to_bits() == b.to_bits());
        if same && f.fits(cols, opt) {
            return Ok(f.clone());
        }
    }
    // Drop the old factor first (on 8192 columns it holds 512 MB); its copy of the Hessian
    // becomes a spare buffer.
    if let Some((h, _)) = last.take() {
        give_back(h);
    }
    let t = std::time::Instant::now();
    let f = Arc::new(GptqHessian::new(hessian, cols, opt)?);
    if std::env::var_os("LLQ_GPTQ_TIMING").is_some() {
        eprintln!("gptq factorization n={cols}: {:.3} s", t.elapsed().as_secs_f64());
    }
    *last = Some((keep_copy(hessian), f.clone()));
    Ok(f)
}

#[derive(Default)]
pub struct Gptq;

fn gptq_options(o: &Options) -> Result<GptqOptions> {
    let block_size = o.get_usize("block_size")?;
    if block_size == 0 {
        bail!("block_size must be at least 1");
    }
    let damp = o.get_f64("damp")?;
    if !(damp > 0.0 && damp < 1.0) {
        bail!("damp must be in (0, 1), got {damp}");
    }
    Ok(GptqOptions {
        damp,
        act_order: o.get_bool("act_order")?,
        static_groups: o.get_bool("static_groups")?,
        block_size,
    })
}

impl QuantMethod for Gptq {
    const NAME: &'static str = "gptq";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str =
        "GPTQ: integer group quantization with Hessian-based error feedback (needs calibration)";
    const CALIBRATION: CalibrationNeed = CalibrationNeed::Hessian;
    fn options(&self) -> Vec<OptionSpec> {
        let mut o = intgroup::options("4", "false");
        o.extend([
            OptionSpec::new("damp", OptionKind::Float, "0.01", "dampening: fraction of the mean Hessian diagonal (percdamp)"),
            OptionSpec::new("act_order", OptionKind::Bool, "false", "quantize columns by decreasing Hessian diagonal (desc_act)"),
            OptionSpec::new(
                "static_groups",
                OptionKind::Bool,
                "false",
                "group parameters from the weights before any update (with act_order: groups stay in column order)",
            ),
            OptionSpec::new("block_size", OptionKind::Int, "128", "columns per lazy batch update"),
        ]);
        o
    }
    fn packed_size(&self, rows: u64, cols: u64, opts: &Options) -> Result<u64> {
        let spec = IntGroupSpec::from_options(opts, cols as usize)?;
        Ok(intgroup::packed_size(rows, cols, &spec, gptq_options(opts)?.has_g_idx()))
    }
    fn quantize(&self, w: &Weights, opts: &Options, c: Option<&Calibration>) -> Result<Quantized> {
        let spec = IntGroupSpec::from_options(opts, w.cols)?;
        let Some(h) = c.and_then(|c| c.hessian) else {
            bail!("gptq: layer `{}` needs its input Hessian (calibration data from the host)", w.layer)
        };
        let opt = gptq_options(opts)?;
        let f = factored(h, w.cols, &opt)?;
        let r = gptq_prepared(w.data, w.rows, w.cols, &f, spec, opt)?;
        // The speed study's split of a run (bench/gpu_speed_11.sh); plugins have no logger.
        if std::env::var_os("LLQ_GPTQ_TIMING").is_some() {
            let t = r.timing;
            eprintln!(
                "gptq {} {}x{}: columns {:.3} s, lazy updates {:.3} s ({})",
                w.layer,
                w.rows,
                w.cols,
                t.columns_s,
                t.lazy_s,
                if t.lazy_on_host { "host" } else { "plugin" }
            );
        }
        Ok(r.matrix.pack())
    }
    fn dequantize(&self, p: &PackedView, out: &mut [f32]) -> Result<()> {
        intgroup::dequantize(p, out)
    }
    fn cuda_kernels(&self) -> Option<CudaKernels> {
        Some(intgroup::cuda_kernels("gptq"))
    }
}

export_plugin!(Gptq);

#[cfg(test)]
mod tests {
    use super::*;
    use llq_sdk::quant::gptq::gptq;

    fn hessian(cols: usize, seed: f64) -> Vec<f64> {
        // A diagonally dominant symmetric matrix with one dead input.
        let mut h: Vec<f64> = (0..cols * cols)
            .map(|k| {
                let (i, j) = (k / cols, k % cols);
                if i == j {
                    cols as f64 + seed
                } else {
                    ((i * j) as f64 * seed).sin() * 0.5
                }
            })
            .collect();
        for k in 0..cols {
            h[3 * cols + k] = 0.0;
            h[k * cols + 3] = 0.0;
        }
        h
    }

    #[test]
    fn a_reused_factorization_gives_what_a_fresh_one_gives() {
        let (rows, cols) = (8, 64);
        let spec = IntGroupSpec { bits: 3, group_size: 16, sym: false, whole_row: false };
        let w: Vec<f32> = (0..rows * cols).map(|i| ((i * 37 % 101) as f32 / 101.0 - 0.5) * 0.2).collect();
        let w2: Vec<f32> = w.iter().map(|v| -v * 1.5).collect();
        for opt in [GptqOptions::default(), GptqOptions { act_order: true, ..Default::default() }] {
            let (h1, h2) = (hessian(cols, 1.0), hessian(cols, 2.0));
            let a = factored(&h1, cols, &opt).unwrap();
            // Same Hessian: the same factorization, shared.
            assert!(Arc::ptr_eq(&a, &factored(&h1.clone(), cols, &opt).unwrap()));
            // Other values, or other options: factored again.
            assert!(!Arc::ptr_eq(&a, &factored(&h2, cols, &opt).unwrap()));
            let damp = GptqOptions { damp: 0.1, ..opt };
            let b = factored(&h2, cols, &damp).unwrap();
            assert!(b.fits(cols, &damp) && !b.fits(cols, &opt));
            for (x, h) in [(&w, &h1), (&w2, &h1), (&w2, &h2)] {
                let fresh = gptq(x, rows, cols, h, spec, opt).unwrap().matrix;
                let f = factored(h, cols, &opt).unwrap();
                let reused = gptq_prepared(x, rows, cols, &f, spec, opt).unwrap().matrix;
                assert_eq!((&reused.codes, &reused.params), (&fresh.codes, &fresh.params));
            }
            assert!(gptq_prepared(&w, rows, cols, &b, spec, opt).is_err());
        }
    }

    #[test]
    fn spare_buffers_hold_exactly_the_new_copy() {
        give_back(vec![7.0; 100]);
        let h: Vec<f64> = (0..40).map(|i| i as f64 * 0.5).collect();
        let c = keep_copy(&h);
        assert_eq!(c, h);
        give_back(c);
        assert_eq!(keep_copy(&h[..10]), &h[..10]);
        assert!(SPARE.lock().unwrap().len() <= SPARES);
    }
}
