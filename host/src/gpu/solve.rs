//! GPTQ's factorization on the GPU (the host's ABI 1.4 service `inverse_upper_cholesky`):
//! `U` with `h⁻¹ = Uᵀ U` for the damped Hessian, in f64 with cuBLAS. On the 16-core CPU of
//! the H100 machine the SDK's blocked loop runs at ~67 GF/s, 5.5 s for one 8192-column
//! `down_proj` of Llama-3.2-1B, 88 of calibration's 146 s; the H100's f64 rate is ~50 TF/s.
//!
//! The same route as the SDK's CPU code (`llq_sdk::quant::linalg::inverse_upper_cholesky`),
//! so the two differ only in rounding: with `J` the reversal, `J h J = L Lᵀ`, and `U = J L⁻¹ J`.
//! cuBLAS is column-major, so the row-major buffers are read transposed: the column-major
//! view of the (symmetric) `R = J h J` is `R`; its upper Cholesky factor `V` (`R = Vᵀ V`) has
//! the row-major view `Vᵀ = L`; and the column-major `V⁻¹` (from `V · Y = I`, one `trsm`) has
//! the row-major view `V⁻ᵀ = L⁻¹`, whose reversed buffer is `U`.
//!
//! The Cholesky is right-looking in panels of [`PANEL`]: each diagonal block is copied out and
//! factored on the CPU by the SDK (a 256 × 256 block is ~6 MFLOP), the panel's row block solved
//! by `trsm`, and the trailing matrix updated by `syrk` (LAPACK's `dpotrf` shape, with the
//! unblocked step on the host as in MAGMA's hybrid `dpotrf`).
//!
//! `$LLQ_SOLVE` picks what a calibrated run on the GPU installs ([`install`]): `gpu` (this),
//! `cpu` (the plugins' own code; the default until a GPU call has checked this one), or
//! `check` (this, with each result compared to the SDK's CPU one, the largest difference
//! logged).

use super::step::tensor_ptr;
use crate::services::{Installed, Solver};
use anyhow::{anyhow, bail, Context, Result};
use candle_core::cuda_backend::cudarc::cublas::sys::{
    self,
    cublasDiagType_t::CUBLAS_DIAG_NON_UNIT,
    cublasFillMode_t::CUBLAS_FILL_MODE_UPPER,
    cublasOperation_t::{CUBLAS_OP_N, CUBLAS_OP_T},
    cublasSideMode_t::CUBLAS_SIDE_LEFT,
};
use candle_core::{CudaDevice, DType, Device, Tensor};
use llq_sdk::quant::linalg::{cholesky_lower, SquareMatrix};
use rayon::prelude::*;
use std::sync::{Arc, Mutex};

/// Columns per panel: large enough for `syrk`/`trsm` to fill the GPU, small enough that the
/// CPU's unblocked step stays a few milliseconds.
pub const PANEL: usize = 256;

/// The factorization on one CUDA device; one call at a time (plugins may call from several
/// threads; the device work is serialized here).
pub struct GpuSolver {
    dev: CudaDevice,
    lock: Mutex<()>,
}

fn check(status: sys::cublasStatus_t, what: &str) -> Result<()> {
    if status == sys::cublasStatus_t::CUBLAS_STATUS_SUCCESS {
        Ok(())
    } else {
        bail!("cuBLAS {what} in the GPU factorization: {status:?}")
    }
}

/// `buf` reversed into a new vector, on all cores (an 8192² f64 matrix is 512 MB).
fn reversed(buf: &[f64]) -> Vec<f64> {
    let mut out = vec![0f64; buf.len()];
    const CHUNK: usize = 1 << 16;
    out.par_chunks_mut(CHUNK).enumerate().for_each(|(c, dst)| {
        let (end, len) = (buf.len() - c * CHUNK, dst.len());
        for (d, s) in dst.iter_mut().zip(buf[end - len..end].iter().rev()) {
            *d = *s;
        }
    });
    out
}

impl GpuSolver {
    pub fn new(dev: CudaDevice) -> Self {
        GpuSolver { dev, lock: Mutex::new(()) }
    }

    /// `u` (row-major n × n) := the upper Cholesky factor of `h⁻¹`, `h` row-major symmetric
    /// positive definite (the triangle the CPU code reads is read here too). The error
    /// names the first pivot (in `h`'s numbering) that is not positive.
    pub fn inverse_upper_cholesky(&self, n: usize, h: &[f64], u: &mut [f64]) -> Result<()> {
        if h.len() != n * n || u.len() != n * n {
            bail!("GPU factorization: {} and {} values for n = {n}", h.len(), u.len());
        }
        let _one = self.lock.lock().map_err(|_| anyhow!("GPU factorization: a previous call panicked"))?;
        let stream = self.dev.cuda_stream();
        stream.context().bind_to_thread().map_err(|e| anyhow!("binding the CUDA context: {e:?}"))?;
        let dev = Device::Cuda(self.dev.clone());
        // cuBLAS's upper triangle of the column-major view is the row-major lower triangle of
        // R, which is what the CPU code reads too.
        let r = reversed(h);
        let b = Tensor::from_vec(r, (n, n), &dev)?;
        let bp = tensor_ptr(&b)? as *mut f64;
        let blas = self.dev.cublas_handle();
        let hd = *blas.handle();
        let (one, minus_one, zero) = (1f64, -1f64, 0f64);
        let at = |i: usize, j: usize| -> *mut f64 { bp.wrapping_add(i + j * n) };
        for k0 in (0..n).step_by(PANEL) {
            let w = PANEL.min(n - k0);
            let m = n - k0 - w;
            // The diagonal block, packed (ld w) and brought to the host.
            let d = Tensor::zeros((w, w), DType::F64, &dev)?;
            let dp = tensor_ptr(&d)? as *mut f64;
            // SAFETY: both views lie inside their buffers (B: n × n, D: w × w), on candle's
            // stream, which is cuBLAS's; alpha/beta are host values.
            check(
                unsafe {
                    sys::cublasDgeam(
                        hd,
                        CUBLAS_OP_N,
                        CUBLAS_OP_N,
                        w as i32,
                        w as i32,
                        &one,
                        at(k0, k0),
                        n as i32,
                        &zero,
                        at(k0, k0),
                        n as i32,
                        dp,
                        w as i32,
                    )
                },
                "geam (copy out)",
            )?;
            let block = d.flatten_all()?.to_vec1::<f64>()?;
            // Column-major upper of the block is its row-major lower: the SDK's L (row-major)
            // read column-major is the upper factor V11 of this block.
            let l = cholesky_lower(&SquareMatrix { n: w, a: block }).map_err(|e| {
                let pivot =
                    e.trim_start_matches("pivot ").split(' ').next().and_then(|p| p.parse::<usize>().ok());
                match pivot {
                    Some(p) => anyhow!("pivot {} is not positive ({e})", n - 1 - (k0 + p)),
                    None => anyhow!("{e}"),
                }
            })?;
            let v11 = Tensor::from_vec(l.a, (w, w), &dev)?;
            let vp = tensor_ptr(&v11)? as *const f64;
            check(
                unsafe {
                    sys::cublasDgeam(
                        hd,
                        CUBLAS_OP_N,
                        CUBLAS_OP_N,
                        w as i32,
                        w as i32,
                        &one,
                        vp,
                        w as i32,
                        &zero,
                        vp,
                        w as i32,
                        at(k0, k0),
                        n as i32,
                    )
                },
                "geam (copy in)",
            )?;
            if m == 0 {
                break;
            }
            // V12 = V11⁻ᵀ A12, then A22 −= V12ᵀ V12 (upper triangle).
            check(
                unsafe {
                    sys::cublasDtrsm_v2(
                        hd,
                        CUBLAS_SIDE_LEFT,
                        CUBLAS_FILL_MODE_UPPER,
                        CUBLAS_OP_T,
                        CUBLAS_DIAG_NON_UNIT,
                        w as i32,
                        m as i32,
                        &one,
                        at(k0, k0),
                        n as i32,
                        at(k0, k0 + w),
                        n as i32,
                    )
                },
                "trsm (panel)",
            )?;
            check(
                unsafe {
                    sys::cublasDsyrk_v2(
                        hd,
                        CUBLAS_FILL_MODE_UPPER,
                        CUBLAS_OP_T,
                        m as i32,
                        w as i32,
                        &minus_one,
                        at(k0, k0 + w),
                        n as i32,
                        &one,
                        at(k0 + w, k0 + w),
                        n as i32,
                    )
                },
                "syrk (trailing update)",
            )?;
        }
        // V · Y = I: Y = V⁻¹ (upper, column-major); its row-major view is L⁻¹.
        let y = Tensor::eye(n, DType::F64, &dev)?.contiguous()?;
        let yp = tensor_ptr(&y)? as *mut f64;
        check(
            unsafe {
                sys::cublasDtrsm_v2(
                    hd,
                    CUBLAS_SIDE_LEFT,
                    CUBLAS_FILL_MODE_UPPER,
                    CUBLAS_OP_N,
                    CUBLAS_DIAG_NON_UNIT,
                    n as i32,
                    n as i32,
                    &one,
                    bp,
                    n as i32,
                    yp,
                    n as i32,
                )
            },
            "trsm (inverse)",
        )?;
        let linv = y.flatten_all()?.to_vec1::<f64>().context("bringing the GPU factor back")?;
        drop(b);
        // U = J L⁻¹ J, upper: the strict lower triangle is exactly zero by construction
        // (identity columns solved against an upper factor); set it so whatever cuBLAS did.
        u.copy_from_slice(&reversed(&linv));
        u.par_chunks_mut(n).enumerate().for_each(|(i, row)| row[..i].fill(0.0));
        Ok(())
    }
}

/// How GPTQ's factorization runs in a calibrated quantization on the GPU (`$LLQ_SOLVE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SolveMode {
    Cpu,
    Gpu,
    Check,
}

impl SolveMode {
    pub fn from_env() -> Result<Self> {
        super::nvrtc::env_choice(
            "LLQ_SOLVE",
            SolveMode::Cpu,
            &[("cpu", SolveMode::Cpu), ("gpu", SolveMode::Gpu), ("check", SolveMode::Check)],
        )
    }
}

/// The backend `$LLQ_SOLVE` names for a run on `dev`, installed until the guard drops
/// (`None` for `cpu`).
pub fn install(dev: &CudaDevice) -> Result<Option<Installed>> {
    let mode = SolveMode::from_env()?;
    if mode == SolveMode::Cpu {
        return Ok(None);
    }
    tracing::info!("GPTQ factorizations on the GPU (LLQ_SOLVE={mode:?})");
    let solver = Checked { gpu: GpuSolver::new(dev.clone()), check: mode == SolveMode::Check };
    Ok(Some(crate::services::install(Arc::new(solver))?))
}

/// The GPU backend, optionally compared with the SDK's CPU factorization each call.
struct Checked {
    gpu: GpuSolver,
    check: bool,
}

impl Solver for Checked {
    fn inverse_upper_cholesky(&self, n: usize, h: &[f64], u: &mut [f64]) -> Result<()> {
        let t = std::time::Instant::now();
        self.gpu.inverse_upper_cholesky(n, h, u)?;
        let gpu_s = t.elapsed().as_secs_f64();
        tracing::debug!("GPU factorization n={n}: {gpu_s:.3} s");
        if self.check {
            let t = std::time::Instant::now();
            let cpu = llq_sdk::quant::linalg::inverse_upper_cholesky(&SquareMatrix { n, a: h.to_vec() })
                .map_err(|e| anyhow!("LLQ_SOLVE=check: the CPU factorization: {e}"))?;
            let top = cpu.a.iter().fold(0f64, |m, v| m.max(v.abs()));
            let diff = cpu.a.iter().zip(u.iter()).fold(0f64, |m, (a, b)| m.max((a - b).abs()));
            tracing::info!(
                "LLQ_SOLVE=check n={n}: largest |U_gpu − U_cpu| {diff:.3e}, relative to max |U| {:.3e}; gpu {gpu_s:.3} s, cpu {:.3} s",
                diff / top.max(f64::MIN_POSITIVE),
                t.elapsed().as_secs_f64()
            );
        }
        Ok(())
    }
}
