//! GPTQ's factorization on the GPU (the host's ABI 1.4 service `inverse_upper_cholesky`):
//! `U` with `h⁻¹ = Uᵀ U` for the damped Hessian, in f64 with cuBLAS. On the 16-core CPU of
//! the H100 machine the SDK's blocked loop runs at ~67 GF/s (5.5 s for one 8192-column
//! `down_proj` of Llama-3.2-1B in `gptq_time`); the H100's f64 rate is ~50 TF/s. The first
//! version of this route took 1.2–1.7 s for n = 8192 in a run (results/h100/calibrated/speed/
//! gpu-solve, gpu-lazy), nearly all of it the host's side: two reversals, a download into a
//! fresh vector and a copy out, ~4 fresh 512 MB host buffers a call. Now the reversals, the
//! identity and the zeros below the diagonal are kernels (`solve.cu`): `h` goes up from the
//! plugin's buffer and `U` comes down into the plugin's buffer, and nothing else crosses:
//! 0.10–0.12 s for n = 8192 on the H100 (upload + reverse 0.02 s;
//! results/h100/calibrated/speed/host-side).
//!
//! The route is the SDK's (`llq_sdk::quant::linalg::inverse_upper_cholesky_by`, tested there
//! against the row-major CPU code with a plain-loop column-major stand-in); this file supplies
//! its column-major steps on the device: the diagonal block copied out and back by `dgeam`
//! (the SDK factors it on the CPU, as MAGMA's hybrid `dpotrf` does), the panel by `dtrsm`, the
//! trailing matrix by `dsyrk`, and `V⁻¹` by one `dtrsm` against the identity.
//!
//! `$LLQ_SOLVE` picks what a calibrated run on the GPU installs ([`install`]): `gpu` (this;
//! the default since the H100 check of 2026-12-07, U within 6e-13 relative of the CPU's,
//! results/h100/calibrated/speed/gpu-solve), `cpu` (the plugins' own code), or `check` (this,
//! with each result compared to the SDK's CPU one, the largest difference logged).

use super::nvrtc::{entry, launch, ptx};
use super::staging::{copy_down, pinned_from_env, to_device, Staging};
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
use candle_core::cuda_backend::cudarc::driver::{CudaFunction, CudaStream};
use candle_core::{CudaDevice, DType, Device, Tensor};
use llq_sdk::quant::linalg::{inverse_upper_cholesky_by, PanelOps, SquareMatrix};
use std::sync::{Arc, Mutex};

/// Columns per panel: large enough for `dsyrk`/`dtrsm` to fill the GPU, small enough that the
/// CPU's unblocked step stays a few milliseconds (a 256 × 256 block is ~6 MFLOP).
pub const PANEL: usize = 256;

const SOURCE: &str = include_str!("solve.cu");
/// Threads a block of `solve.cu`'s kernels (one element a thread).
const THREADS: usize = 256;

/// The factorization on one CUDA device; one call at a time (plugins may call from several
/// threads; the device work is serialized here).
pub struct GpuSolver {
    dev: CudaDevice,
    k: SolveKernels,
    /// The pinned copies (`None`: pageable, `$LLQ_STAGING`), and the one-call-at-a-time lock.
    staging: Mutex<Option<Staging>>,
}

/// `solve.cu`'s entries.
struct SolveKernels {
    reverse: CudaFunction,
    eye: CudaFunction,
    reverse_upper: CudaFunction,
}

fn check(status: sys::cublasStatus_t, what: &str) -> Result<(), String> {
    if status == sys::cublasStatus_t::CUBLAS_STATUS_SUCCESS {
        Ok(())
    } else {
        Err(format!("cuBLAS {what} in the GPU factorization: {status:?}"))
    }
}

fn text(e: impl std::fmt::Display) -> String {
    format!("{e:#}")
}

/// The matrix on the device (column-major n × n, f64) and the steps on it.
struct DeviceMatrix<'k> {
    dev: Device,
    stream: Arc<CudaStream>,
    blas: Arc<candle_core::cuda_backend::cudarc::cublas::CudaBlas>,
    k: &'k SolveKernels,
    staging: Option<&'k mut Staging>,
    n: usize,
    /// The buffer `a` points into (kept alive), and a second n × n one: `h` as uploaded, then
    /// the identity `V⁻¹` is solved into.
    t: Tensor,
    scratch: Tensor,
    a: *mut f64,
}

impl<'k> DeviceMatrix<'k> {
    /// `h` (row-major) up from the caller's buffer, reversed on the device into `A`.
    fn load(
        cd: &CudaDevice,
        stream: Arc<CudaStream>,
        k: &'k SolveKernels,
        mut staging: Option<&'k mut Staging>,
        h: &[f64],
        n: usize,
    ) -> Result<Self, String> {
        let dev = Device::Cuda(cd.clone());
        let scratch = to_device(staging.as_deref_mut(), &stream, &dev, h, (n, n)).map_err(text)?;
        let t = Tensor::zeros((n, n), DType::F64, &dev).map_err(text)?;
        let a = tensor_ptr(&t).map_err(text)? as *mut f64;
        let m = DeviceMatrix { dev, stream, blas: cd.cublas_handle(), k, staging, n, t, scratch, a };
        m.run(&m.k.reverse, &m.scratch, &m.t, "reverse")?;
        Ok(m)
    }

    /// One of `solve.cu`'s kernels over n² elements, from `src` into `dst`.
    fn run(&self, f: &CudaFunction, src: &Tensor, dst: &Tensor, what: &str) -> Result<(), String> {
        let blocks = u32::try_from((self.n * self.n).div_ceil(THREADS)).map_err(text)?;
        let ptrs = [tensor_ptr(src).map_err(text)?, tensor_ptr(dst).map_err(text)?];
        // SAFETY: both are n × n f64 buffers on this stream; the kernels touch only indices < n².
        unsafe { launch(&self.stream, f, &ptrs, &[self.n as i32], (blocks, 1), THREADS, what) }.map_err(text)
    }

    /// `A[i, j]`'s address (column-major); a device address, only handed to cuBLAS.
    fn at(&self, i: usize, j: usize) -> *mut f64 {
        self.a.wrapping_add(i + j * self.n)
    }

    /// `dst (ld ld_dst) := src (ld ld_src)`, w × w, by `dgeam` (β = 0: `src` passed twice).
    fn copy(
        &self,
        w: usize,
        src: *const f64,
        ld_src: usize,
        dst: *mut f64,
        ld_dst: usize,
        what: &str,
    ) -> Result<(), String> {
        let (one, zero) = (1f64, 0f64);
        // SAFETY: both w × w views lie inside their buffers on candle's stream, which is
        // cuBLAS's; alpha and beta are host values (the default pointer mode).
        let s = unsafe {
            sys::cublasDgeam(
                *self.blas.handle(),
                CUBLAS_OP_N,
                CUBLAS_OP_N,
                w as i32,
                w as i32,
                &one,
                src,
                ld_src as i32,
                &zero,
                src,
                ld_src as i32,
                dst,
                ld_dst as i32,
            )
        };
        check(s, what)
    }
}

impl PanelOps for DeviceMatrix<'_> {
    fn block(&mut self, k0: usize, w: usize) -> Result<Vec<f64>, String> {
        let d = Tensor::zeros((w, w), DType::F64, &self.dev).map_err(text)?;
        self.copy(
            w,
            self.at(k0, k0),
            self.n,
            tensor_ptr(&d).map_err(text)? as *mut f64,
            w,
            "geam (block out)",
        )?;
        d.flatten_all().and_then(|d| d.to_vec1::<f64>()).map_err(text)
    }

    fn set_block(&mut self, k0: usize, w: usize, v: &[f64]) -> Result<(), String> {
        let d = Tensor::from_slice(v, (w, w), &self.dev).map_err(text)?;
        self.copy(
            w,
            tensor_ptr(&d).map_err(text)? as *const f64,
            w,
            self.at(k0, k0),
            self.n,
            "geam (block in)",
        )
    }

    fn solve_panel(&mut self, k0: usize, w: usize) -> Result<(), String> {
        let (n, m, one) = (self.n, self.n - k0 - w, 1f64);
        // SAFETY: V11 (w × w) and the panel (w × m) lie inside the matrix (ld n).
        let s = unsafe {
            sys::cublasDtrsm_v2(
                *self.blas.handle(),
                CUBLAS_SIDE_LEFT,
                CUBLAS_FILL_MODE_UPPER,
                CUBLAS_OP_T,
                CUBLAS_DIAG_NON_UNIT,
                w as i32,
                m as i32,
                &one,
                self.at(k0, k0),
                n as i32,
                self.at(k0, k0 + w),
                n as i32,
            )
        };
        check(s, "trsm (panel)")
    }

    fn update_trailing(&mut self, k0: usize, w: usize) -> Result<(), String> {
        let (n, m, k1) = (self.n, self.n - k0 - w, k0 + w);
        let (one, minus_one) = (1f64, -1f64);
        // SAFETY: the panel (w × m) and the trailing matrix (m × m) lie inside (ld n).
        let s = unsafe {
            sys::cublasDsyrk_v2(
                *self.blas.handle(),
                CUBLAS_FILL_MODE_UPPER,
                CUBLAS_OP_T,
                m as i32,
                w as i32,
                &minus_one,
                self.at(k0, k1),
                n as i32,
                &one,
                self.at(k1, k1),
                n as i32,
            )
        };
        check(s, "syrk (trailing update)")
    }

    fn reversed_upper_inverse(&mut self, u: &mut [f64]) -> Result<(), String> {
        let n = self.n;
        // `scratch` (h as uploaded, no longer needed) := I, then V⁻¹ solved into it.
        let blocks = u32::try_from((n * n).div_ceil(THREADS)).map_err(text)?;
        let y = tensor_ptr(&self.scratch).map_err(text)?;
        // SAFETY: an n × n f64 buffer on this stream; the kernel writes indices < n² only.
        unsafe { launch(&self.stream, &self.k.eye, &[y], &[n as i32], (blocks, 1), THREADS, "identity") }
            .map_err(text)?;
        let one = 1f64;
        // SAFETY: V and Y are n × n (ld n) on the stream.
        let s = unsafe {
            sys::cublasDtrsm_v2(
                *self.blas.handle(),
                CUBLAS_SIDE_LEFT,
                CUBLAS_FILL_MODE_UPPER,
                CUBLAS_OP_N,
                CUBLAS_DIAG_NON_UNIT,
                n as i32,
                n as i32,
                &one,
                self.a,
                n as i32,
                y as *mut f64,
                n as i32,
            )
        };
        check(s, "trsm (inverse)")?;
        // U := Y reversed, zeros below the diagonal, into A (V is no longer needed), then
        // straight into the caller's buffer (the copy synchronizes the stream).
        self.run(&self.k.reverse_upper, &self.scratch, &self.t, "reverse (upper)")?;
        // SAFETY: `t` holds n² values (= u.len()) on this stream's device.
        unsafe { copy_down(self.staging.as_deref_mut(), &self.stream, tensor_ptr(&self.t).map_err(text)?, u) }
            .map_err(text)
    }
}

impl GpuSolver {
    pub fn compile(dev: &CudaDevice) -> Result<Self> {
        let (ptx, _origin, module) = ptx("gptq-solve", "llq-host's GPTQ factorization", SOURCE, dev)?;
        let load = |name: &str| -> Result<CudaFunction> {
            entry(dev, &module, &ptx, name).with_context(|| format!("factorization kernel `{name}` missing"))
        };
        let k = SolveKernels {
            reverse: load("llq_solve_reverse")?,
            eye: load("llq_solve_eye")?,
            reverse_upper: load("llq_solve_reverse_upper")?,
        };
        let staging = if pinned_from_env()? { Some(Staging::new(&dev.cuda_stream())?) } else { None };
        Ok(GpuSolver { dev: dev.clone(), k, staging: Mutex::new(staging) })
    }

    /// `u` (row-major n × n) := the upper Cholesky factor of `h⁻¹`, `h` row-major symmetric
    /// positive definite (the triangle the CPU code reads is read here too). The error
    /// names the first pivot (in `h`'s numbering) that is not positive.
    pub fn inverse_upper_cholesky(&self, n: usize, h: &[f64], u: &mut [f64]) -> Result<()> {
        if h.len() != n * n || u.len() != n * n {
            bail!("GPU factorization: {} and {} values for n = {n}", h.len(), u.len());
        }
        if i32::try_from(n).is_err() {
            bail!("GPU factorization: n = {n} is too large");
        }
        let mut staging =
            self.staging.lock().map_err(|_| anyhow!("GPU factorization: a previous call panicked"))?;
        // Plugins call from their own threads: make the device's context current on this one.
        let stream = super::nvrtc::bind(&self.dev)?;
        // Host-clock marks for the speed study's split (debug log): the upload and reversal,
        // then the panel loop, the inverse and the download into `u`.
        let t = std::time::Instant::now();
        let loaded = std::cell::Cell::new(0f64);
        inverse_upper_cholesky_by(
            n,
            h,
            PANEL,
            |h| {
                let m = DeviceMatrix::load(&self.dev, stream, &self.k, staging.as_mut(), h, n);
                loaded.set(t.elapsed().as_secs_f64());
                m
            },
            u,
        )
        .map_err(|e| anyhow!(e))?;
        tracing::debug!(
            "GPU factorization n={n}: upload + reverse {:.3} s, panels + inverse + reverse + download {:.3} s",
            loaded.get(),
            t.elapsed().as_secs_f64() - loaded.get()
        );
        Ok(())
    }
}

/// Where one of GPTQ's steps runs in a calibrated quantization on the GPU: the factorization
/// (`$LLQ_SOLVE`) and the lazy updates (`$LLQ_LAZY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offload {
    /// The plugin's own CPU code.
    Cpu,
    /// The host's GPU (the default for both).
    Gpu,
    /// The GPU, compared with the CPU each call and logged.
    Check,
}

impl Offload {
    pub fn from_env(name: &str) -> Result<Self> {
        crate::util::env::choice(
            name,
            Offload::Gpu,
            &[("cpu", Offload::Cpu), ("gpu", Offload::Gpu), ("check", Offload::Check)],
        )
    }
}

/// The backend `$LLQ_SOLVE` and `$LLQ_LAZY` name for a run on `dev` (both `gpu` by default),
/// installed until the guard drops (`None` when both are `cpu`).
pub fn install(dev: &CudaDevice) -> Result<Option<Installed>> {
    let (solve, lazy) = (Offload::from_env("LLQ_SOLVE")?, Offload::from_env("LLQ_LAZY")?);
    if solve == Offload::Cpu && lazy == Offload::Cpu {
        return Ok(None);
    }
    tracing::info!("GPTQ on the GPU: factorizations LLQ_SOLVE={solve:?}, lazy updates LLQ_LAZY={lazy:?}");
    let solver = Checked {
        gpu: (solve != Offload::Cpu).then(|| GpuSolver::compile(dev)).transpose()?,
        check: solve == Offload::Check,
        lazy: match lazy {
            Offload::Cpu => None,
            m => Some(super::lazy::LazyKernels::compile(dev, m == Offload::Check)?),
        },
    };
    Ok(Some(crate::services::install(Arc::new(solver))?))
}

/// The GPU backends, the factorization optionally compared with the SDK's CPU one each call.
struct Checked {
    gpu: Option<GpuSolver>,
    check: bool,
    lazy: Option<Arc<super::lazy::LazyKernels>>,
}

impl Solver for Checked {
    fn inverse_upper_cholesky(&self, n: usize, h: &[f64], u: &mut [f64]) -> Result<bool> {
        let Some(gpu) = &self.gpu else { return Ok(false) };
        let t = std::time::Instant::now();
        gpu.inverse_upper_cholesky(n, h, u)?;
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
        Ok(true)
    }

    fn lazy_begin(
        &self,
        rows: usize,
        cols: usize,
        w: &[f64],
        u: &[f64],
    ) -> Result<Option<Box<dyn crate::services::LazyMatrix>>> {
        self.lazy.as_ref().map(|k| k.begin(rows, cols, w, u)).transpose()
    }
}
