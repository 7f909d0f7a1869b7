//! What calibration records about one linear layer's input while the text runs through the
//! model: per-column abs-max, mean |x| and mean square, the input Hessian `2/n · Σ x xᵀ` (GPTQ's
//! `add_batch`), and a bounded set of raw rows. Sums stay on the model's device (the Hessian
//! as an f32 matrix product per window, like GPTQ's `inp.matmul(inp.t())`) and come to the
//! host once, in [`Accumulator::finish`].

use crate::plugin::CalibrationData;
use anyhow::{bail, Result};
use candle_core::{DType, Tensor};
use llq_sdk::CalibrationNeed;

/// Running sums over the rows of one layer input.
pub struct Accumulator {
    cols: usize,
    need: CalibrationNeed,
    n_tokens: u64,
    abs_max: Option<Tensor>,
    sum_sq: Option<Tensor>,
    sum_abs: Option<Tensor>,
    xtx: Option<Tensor>,
    /// With `$LLQ_HESSIAN=check` on the GPU: the f32 product's sum beside `xtx`.
    xtx_check: Option<Tensor>,
    /// Raw rows kept so far, and how many to keep from each window.
    samples: Vec<f32>,
    rows_per_window: usize,
}

impl Accumulator {
    /// Keep up to `rows_per_window` raw rows of each window when samples were asked for.
    pub fn new(cols: usize, need: CalibrationNeed, rows_per_window: usize) -> Self {
        Accumulator {
            cols,
            need,
            n_tokens: 0,
            abs_max: None,
            sum_sq: None,
            sum_abs: None,
            xtx: None,
            xtx_check: None,
            samples: vec![],
            rows_per_window,
        }
    }

    /// Add the rows of `x` (…, cols), any dtype, on any device.
    pub fn add(&mut self, x: &Tensor) -> Result<()> {
        let n = x.elem_count() / self.cols.max(1);
        if n * self.cols != x.elem_count() || *x.dims().last().unwrap_or(&0) != self.cols {
            bail!("calibration input of shape {:?} does not have {} columns", x.dims(), self.cols);
        }
        let raw = x.reshape((n, self.cols))?;
        let x = raw.to_dtype(DType::F32)?;
        let add = |acc: &mut Option<Tensor>, t: Tensor| -> Result<()> {
            *acc = Some(match acc.take() {
                Some(a) => (a + t)?,
                None => t,
            });
            Ok(())
        };
        let abs = x.abs()?;
        add(&mut self.sum_abs, abs.sum(0)?)?;
        let amax = abs.max(0)?;
        self.abs_max = Some(match self.abs_max.take() {
            Some(a) => a.maximum(&amax)?,
            None => amax,
        });
        add(&mut self.sum_sq, x.sqr()?.sum(0)?)?;
        if self.need == CalibrationNeed::Hessian && !self.add_gram_gpu(&raw, &x)? {
            add(&mut self.xtx, x.t()?.matmul(&x)?)?;
        }
        if self.need == CalibrationNeed::Samples && self.rows_per_window > 0 {
            // Evenly spaced rows of this window.
            let step = n.div_ceil(self.rows_per_window).max(1);
            let idx: Vec<u32> = (0..n).step_by(step).map(|i| i as u32).collect();
            let n = idx.len();
            let idx = Tensor::from_vec(idx, n, x.device())?;
            self.samples.extend(x.index_select(&idx, 0)?.flatten_all()?.to_vec1::<f32>()?);
        }
        self.n_tokens += n as u64;
        Ok(())
    }

    /// `Σ xᵀx` of bf16 rows on the GPU by tensor cores into an f32 sum (`gpu::gram`); false
    /// where that does not apply (CPU, f32 rows, `$LLQ_HESSIAN=f32`, the default until the GPU
    /// check) and the f32 product runs. `x` is `raw` in f32 (the check's product reads it).
    #[cfg(feature = "cuda")]
    fn add_gram_gpu(&mut self, raw: &Tensor, x: &Tensor) -> Result<bool> {
        use crate::gpu::gram::{add_gram_bf16, GramMode};
        let mode = GramMode::from_env()?;
        if raw.dtype() != DType::BF16 || !raw.device().is_cuda() || mode == GramMode::F32 {
            return Ok(false);
        }
        if self.xtx.is_none() {
            self.xtx = Some(Tensor::zeros((self.cols, self.cols), DType::F32, raw.device())?);
        }
        if let Some(acc) = &self.xtx {
            add_gram_bf16(raw, acc)?;
        }
        if mode == GramMode::Check {
            let p = x.t()?.matmul(x)?;
            self.xtx_check = Some(match self.xtx_check.take() {
                Some(a) => (a + p)?,
                None => p,
            });
        }
        Ok(true)
    }

    #[cfg(not(feature = "cuda"))]
    fn add_gram_gpu(&mut self, _raw: &Tensor, _x: &Tensor) -> Result<bool> {
        Ok(false)
    }

    /// The layer's calibration data; the Hessian as GPTQ scales it, `2/n · Σ x xᵀ`.
    pub fn finish(self) -> Result<CalibrationData> {
        if self.n_tokens == 0 {
            bail!("no calibration tokens reached this layer");
        }
        let n = self.n_tokens as f64;
        if let (Some(a), Some(b)) = (&self.xtx, &self.xtx_check) {
            let diff = (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
            let top = b.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
            tracing::info!(
                "LLQ_HESSIAN=check: {} columns, {} rows: bf16 GemmEx vs f32 product, largest difference {:.2e} of the largest entry {top:.3e}",
                self.cols,
                self.n_tokens,
                diff / top.max(f32::MIN_POSITIVE)
            );
        }
        let vec = |t: Option<Tensor>| -> Result<Vec<f32>> {
            Ok(t.map(|t| t.flatten_all().and_then(|t| t.to_vec1::<f32>())).transpose()?.unwrap_or_default())
        };
        let abs_max = vec(self.abs_max)?;
        let mean_sq = vec(self.sum_sq)?.into_iter().map(|s| (s as f64 / n) as f32).collect();
        let abs_mean = vec(self.sum_abs)?.into_iter().map(|s| (s as f64 / n) as f32).collect();
        // 8192² values on Llama-3.2-1B's down_proj: widened on all cores (with one thread this
        // and the fresh pages it writes were the suspects for the 0.9 s a block of `transfer`),
        // or on the GPU where the sum is (`gpu::gram::scaled_to_host`, the same bits).
        let widen = |v: Vec<f32>| -> Vec<f64> {
            use rayon::prelude::*;
            v.into_par_iter().with_min_len(1 << 16).map(|v| 2.0 * v as f64 / n).collect()
        };
        let hessian = match self.xtx {
            #[cfg(feature = "cuda")]
            Some(t) if t.device().is_cuda() => {
                let h = crate::gpu::gram::scaled_to_host(&t, n)?;
                if self.xtx_check.is_some() {
                    let cpu = widen(vec(Some(t))?);
                    let differ = cpu.iter().zip(&h).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
                    tracing::info!(
                        "LLQ_HESSIAN=check: {} columns: {differ} values of 2/n·Σxᵀx scaled on the GPU differ from the CPU's",
                        self.cols
                    );
                }
                h
            }
            t => widen(vec(t)?),
        };
        let n_samples = self.samples.len() / self.cols.max(1);
        Ok(CalibrationData {
            n_tokens: self.n_tokens,
            abs_max,
            mean_sq,
            samples: self.samples,
            n_samples,
            hessian,
            abs_mean,
        })
    }
}

/// The calibration data of the rows of `x` (`[tokens, cols]`, all kept as samples when `need`
/// asks for samples), through the same accumulator as a calibration run: for activations
/// given in a file (`quantize --calibration`) or made up (checks of plugins and kernels).
pub fn from_rows(x: &[f32], cols: usize, need: CalibrationNeed) -> Result<CalibrationData> {
    let n = x.len() / cols.max(1);
    let mut acc = Accumulator::new(cols, need, n);
    acc.add(&Tensor::from_slice(x, (n, cols), &candle_core::Device::Cpu)?)?;
    acc.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn sums_by_hand() {
        // Two windows: rows [1, -2], [3, 0] and [0, 4].
        let mut a = Accumulator::new(2, CalibrationNeed::Hessian, 0);
        a.add(&Tensor::from_vec(vec![1f32, -2.0, 3.0, 0.0], (1, 2, 2), &Device::Cpu).unwrap()).unwrap();
        a.add(&Tensor::from_vec(vec![0f32, 4.0], (1, 2), &Device::Cpu).unwrap()).unwrap();
        let c = a.finish().unwrap();
        assert_eq!(c.n_tokens, 3);
        assert_eq!(c.abs_max, vec![3.0, 4.0]);
        assert_eq!(c.mean_sq, vec![10.0 / 3.0, 20.0 / 3.0]);
        assert_eq!(c.abs_mean, vec![4.0 / 3.0, 2.0]);
        // Σ x xᵀ = [[10, -2], [-2, 20]]; × 2/3.
        let want = [20.0 / 3.0, -4.0 / 3.0, -4.0 / 3.0, 40.0 / 3.0];
        for (g, w) in c.hessian.iter().zip(want) {
            assert!((g - w).abs() < 1e-12, "{:?}", c.hessian);
        }
        assert!(c.samples.is_empty());
        let e = Accumulator::new(3, CalibrationNeed::Stats, 0)
            .add(&Tensor::zeros((2, 2), DType::F32, &Device::Cpu).unwrap())
            .unwrap_err();
        assert!(e.to_string().contains("does not have 3 columns"));
    }

    #[test]
    fn samples_are_evenly_spaced_rows() {
        let mut a = Accumulator::new(1, CalibrationNeed::Samples, 2);
        a.add(&Tensor::from_vec((0..6).map(|v| v as f32).collect::<Vec<_>>(), (6, 1), &Device::Cpu).unwrap())
            .unwrap();
        let c = a.finish().unwrap();
        assert_eq!((c.samples, c.n_samples, c.hessian.len()), (vec![0.0, 3.0], 2, 0));
    }
}
