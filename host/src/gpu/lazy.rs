//! GPTQ's lazy updates on the GPU (the host's ABI 1.5 services `lazy_begin`/`lazy_update`):
//! each layer's working weights and factor stay on the device for the whole column loop, and
//! a block's update `W[:, i2..] -= E · U[i1..i2, i2..]` is one kernel (`lazy.cu`) in the SDK's
//! order and rounding, so the codes are the CPU's bit for bit. On the H100 machine's 16 cores
//! the in-order product runs at 56–93 GF/s (results/h100/calibrated/speed/final/gptq_time.txt),
//! ~3.6 TFLOP over Llama-3.2-1B; each block sends only its errors (rows × 128) and takes back
//! the columns the plugin reads next, through device buffers kept from block to block and the
//! pinned halves of [`super::staging`] (straight from and into the plugin's buffers).
//!
//! `$LLQ_LAZY` picks what a calibrated run on the GPU installs (see `gpu::solve::install`):
//! `gpu` (this, the default: on the H100, 2026-12-07, `check` found 0 differing values over
//! SmolLM2's 240 layers, and GPTQ-1B's `quantize` took 96.8 s against 154.1 s with the plugin's
//! loop in the same call; results/h100/calibrated/speed/gpu-lazy), `cpu` (the plugin's own
//! loop), or `check` (this, with the SDK's CPU product run on a host copy beside it and every
//! returned value compared bit for bit; the count logged per layer).

use super::nvrtc::{entry, launch, ptx};
use super::staging::{copy_down, copy_up, pinned_from_env, to_device, Staging};
use super::step::tensor_ptr;
use crate::services::LazyMatrix;
use anyhow::{anyhow, bail, Context, Result};
use candle_core::cuda_backend::cudarc::driver::CudaFunction;
use candle_core::{CudaDevice, DType, Device, Tensor};
use std::sync::{Arc, Mutex};

const SOURCE: &str = include_str!("lazy.cu");
/// Rows a thread updates (`LLQ_LAZY_ROWS` in lazy.cu) and threads a block.
const ROWS: usize = 8;
const THREADS: usize = 128;

/// The compiled kernels for one device; device work is serialized (plugins call from
/// several threads, and a call's copies back synchronize candle's one stream).
pub struct LazyKernels {
    dev: CudaDevice,
    update: CudaFunction,
    gather: CudaFunction,
    /// The pinned copies (`None`: pageable, `$LLQ_STAGING`), and the device-work lock.
    staging: Mutex<Option<Staging>>,
    check: bool,
}

impl LazyKernels {
    pub fn compile(dev: &CudaDevice, check: bool) -> Result<Arc<Self>> {
        let (ptx, _origin, module) = ptx("gptq-lazy", "llq-host's GPTQ lazy updates", SOURCE, dev)?;
        let load = |name: &str| -> Result<CudaFunction> {
            entry(dev, &module, &ptx, name).with_context(|| format!("lazy-update kernel `{name}` missing"))
        };
        Ok(Arc::new(LazyKernels {
            dev: dev.clone(),
            update: load("llq_gptq_lazy_update")?,
            gather: load("llq_gptq_lazy_gather")?,
            staging: Mutex::new(if pinned_from_env()? {
                Some(Staging::new(&dev.cuda_stream())?)
            } else {
                None
            }),
            check,
        }))
    }

    /// `w` and `u` copied to the device (and, under `check`, kept on the host too).
    pub fn begin(
        self: &Arc<Self>,
        rows: usize,
        cols: usize,
        w: &[f64],
        u: &[f64],
    ) -> Result<Box<dyn LazyMatrix>> {
        if w.len() != rows * cols || u.len() != cols * cols || rows == 0 || cols == 0 {
            bail!("GPU lazy updates: {} and {} values for {rows} × {cols}", w.len(), u.len());
        }
        if i32::try_from(rows).is_err() || i32::try_from(cols).is_err() {
            bail!("GPU lazy updates: {rows} × {cols} is too large");
        }
        let mut staging = self.lock()?;
        let stream = super::nvrtc::bind(&self.dev)?;
        let dev = Device::Cuda(self.dev.clone());
        let host = self.check.then(|| (w.to_vec(), u.to_vec()));
        Ok(Box::new(DeviceLazy {
            k: self.clone(),
            rows,
            cols,
            w: to_device(staging.as_mut(), &stream, &dev, w, (rows, cols))?,
            u: to_device(staging.as_mut(), &stream, &dev, u, (cols, cols))?,
            e: None,
            o: None,
            host,
            updates: 0,
            differ: 0,
        }))
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Option<Staging>>> {
        self.staging.lock().map_err(|_| anyhow!("GPU lazy updates: a previous call panicked"))
    }
}

/// One layer's matrices on the device.
struct DeviceLazy {
    k: Arc<LazyKernels>,
    rows: usize,
    cols: usize,
    w: Tensor,
    u: Tensor,
    /// The errors' and the returned columns' device buffers, kept from block to block (grown
    /// when a block needs more).
    e: Option<Tensor>,
    o: Option<Tensor>,
    /// Under `check`: the CPU's copy of W and U, updated by the SDK's own product.
    host: Option<(Vec<f64>, Vec<f64>)>,
    updates: usize,
    differ: usize,
}

impl LazyMatrix for DeviceLazy {
    fn rows(&self) -> usize {
        self.rows
    }

    fn update(&mut self, i1: usize, i2: usize, e: &[f64], c1: usize, out: &mut [f64]) -> Result<()> {
        let (rows, cols) = (self.rows, self.cols);
        if !(i1 < i2 && i2 <= c1 && c1 <= cols)
            || e.len() != rows * (i2 - i1)
            || out.len() != rows * (c1 - i2)
        {
            bail!(
                "GPU lazy update: block {i1}..{i2}, columns ..{c1}, {} errors, {} out for {rows} × {cols}",
                e.len(),
                out.len()
            );
        }
        let k = self.k.clone();
        let mut staging = k.lock()?;
        let stream = super::nvrtc::bind(&k.dev)?;
        let dev = Device::Cuda(k.dev.clone());
        let et = buffer(&mut self.e, e.len(), &dev)?;
        // SAFETY: `et` holds at least e.len() values on this stream's device.
        unsafe { copy_up(staging.as_mut(), &stream, e, tensor_ptr(et)?) }?;
        if i2 < cols {
            let grid = ((cols - i2).div_ceil(THREADS) as u32, rows.div_ceil(ROWS) as u32);
            // SAFETY: W (rows × cols), E (rows × (i2 − i1)) and U (cols × cols) are live device
            // buffers of those sizes; the kernel reads and writes only inside them.
            unsafe {
                launch(
                    &stream,
                    &k.update,
                    &[tensor_ptr(&self.w)?, tensor_ptr(et)?, tensor_ptr(&self.u)?],
                    &[rows as i32, cols as i32, i1 as i32, i2 as i32],
                    grid,
                    THREADS,
                    "lazy-update",
                )?
            };
        }
        let width = c1 - i2;
        if width > 0 {
            let o = buffer(&mut self.o, out.len(), &dev)?;
            let grid = ((rows * width).div_ceil(THREADS) as u32, 1);
            // SAFETY: reads W's columns i2..c1, writes `o`'s first rows × width values.
            unsafe {
                launch(
                    &stream,
                    &k.gather,
                    &[tensor_ptr(&self.w)?, tensor_ptr(o)?],
                    &[rows as i32, cols as i32, i2 as i32, width as i32],
                    grid,
                    THREADS,
                    "lazy-gather",
                )?
            };
            // SAFETY: `o` holds at least out.len() values on this stream's device.
            unsafe { copy_down(staging.as_mut(), &stream, tensor_ptr(o)?, out) }?;
        }
        self.updates += 1;
        if let Some((w, u)) = self.host.as_mut() {
            if i2 < cols {
                let d = llq_sdk::quant::linalg::Strided::rows(i2, rows, cols - i2, cols);
                llq_sdk::quant::linalg::sub_products_in_order(w, d, e, u, i1 * cols + i2, cols);
            }
            let cpu = w.chunks(cols).flat_map(|r| r[i2..c1].iter());
            self.differ += cpu.zip(out.iter()).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
        }
        Ok(())
    }
}

/// A device buffer of at least `len` f64 in `slot`, made (or grown) on first need.
fn buffer<'a>(slot: &'a mut Option<Tensor>, len: usize, dev: &Device) -> Result<&'a Tensor> {
    if slot.as_ref().is_none_or(|t| t.elem_count() < len) {
        *slot = Some(Tensor::zeros(len.max(1), DType::F64, dev)?);
    }
    slot.as_ref().ok_or_else(|| anyhow!("GPU lazy updates: no buffer"))
}

impl Drop for DeviceLazy {
    fn drop(&mut self) {
        if self.host.is_some() {
            tracing::info!(
                "LLQ_LAZY=check {}x{}: {} updates on the GPU, {} returned values differ from the CPU's in-order product",
                self.rows,
                self.cols,
                self.updates,
                self.differ
            );
        }
    }
}
