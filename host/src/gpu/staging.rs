//! Large host↔device copies of f64 arrays for the host's services to plugins (GPTQ's
//! factorization and lazy updates move 2–512 MB per call from and into the plugins' own,
//! pageable, buffers). A pageable copy goes through the driver's own staging one piece at a
//! time on one thread; here two pinned halves of [`CHUNK`] values alternate, so the copy of one
//! half into or out of pinned memory (on the pool, all cores) overlaps the DMA of the other.
//!
//! `$LLQ_STAGING` picks the path: `pinned` (this, the default) or `pageable` (cudarc's plain
//! copies from and into the caller's buffer), the A/B the speed study runs in one call. On the
//! H100 machine torch measured pageable copies at 10–15 GiB/s and pinned ones at 46–51 GiB/s
//! (results/h100/calibrated/speed/host-side/copy-rates.txt).

use super::step::tensor_ptr;
use anyhow::{anyhow, Result};
use candle_core::cuda_backend::cudarc::driver::{result, CudaEvent, CudaStream, PinnedHostSlice};
use candle_core::{DType, Device, Tensor};
use rayon::prelude::*;

/// Values a half holds (8 MB): large enough for the DMA to run at full rate, small enough
/// that the first and last halves, which do not overlap, stay short.
const CHUNK: usize = 1 << 20;
/// Values a pool task copies.
const PIECE: usize = 1 << 16;

fn err(what: &str) -> impl Fn(candle_core::cuda_backend::cudarc::driver::DriverError) -> anyhow::Error + '_ {
    move |e| anyhow!("{what}: {e:?}")
}

/// `$LLQ_STAGING`: whether copies go through pinned halves (the default) or straight from
/// and into the caller's pageable buffer.
pub fn pinned_from_env() -> Result<bool> {
    crate::util::env::choice("LLQ_STAGING", true, &[("pinned", true), ("pageable", false)])
}

/// Two pinned halves and the events that say when their last copies finished.
pub struct Staging {
    halves: [PinnedHostSlice<f64>; 2],
    done: [CudaEvent; 2],
    /// Whether each event has been recorded since it was made.
    pending: [bool; 2],
}

// SAFETY: the halves are plain host memory and the events driver handles; a `Staging` is only
// used under its owner's lock, from one thread at a time.
unsafe impl Send for Staging {}

impl Staging {
    pub fn new(stream: &CudaStream) -> Result<Self> {
        let ctx = stream.context();
        // Plain page-locked memory (flags 0): cudarc's `alloc_pinned` asks for write-combined
        // memory, which the CPU reads slowly, and downloads are read here.
        let half =
            || unsafe { ctx.alloc_pinned_with_flags::<f64>(CHUNK, 0) }.map_err(err("pinned staging buffer"));
        let event = || ctx.new_event(None).map_err(err("staging event"));
        Ok(Staging { halves: [half()?, half()?], done: [event()?, event()?], pending: [false; 2] })
    }

    /// Wait for half `h`'s last copy and hand it out.
    fn half(&mut self, h: usize) -> Result<&mut [f64]> {
        if std::mem::take(&mut self.pending[h]) {
            self.done[h].synchronize().map_err(err("waiting for a staging copy"))?;
        }
        self.halves[h].as_mut_slice().map_err(err("staging buffer"))
    }

    fn record(&mut self, h: usize, stream: &CudaStream) -> Result<()> {
        self.done[h].record(stream).map_err(err("recording a staging copy"))?;
        self.pending[h] = true;
        Ok(())
    }

    /// `dst` (a device buffer of at least `src.len()` f64 on `stream`) := `src`. Returns once
    /// `src` has been read; the last DMA may still run (later work on `stream` follows it).
    ///
    /// # Safety
    /// `dst` must address `src.len()` values on `stream`'s device, alive until the copy runs.
    pub unsafe fn upload(&mut self, stream: &CudaStream, src: &[f64], dst: u64) -> Result<()> {
        for (i, chunk) in src.chunks(CHUNK).enumerate() {
            let h = i % 2;
            let buf = &mut self.half(h)?[..chunk.len()];
            par_copy(buf, chunk);
            let at = dst + (i * CHUNK * 8) as u64;
            // SAFETY: `buf` is pinned and not touched again until `done[h]` passes; `at` lies
            // inside the caller's buffer.
            unsafe { result::memcpy_htod_async(at, buf, stream.cu_stream()) }
                .map_err(err("staged upload"))?;
            self.record(h, stream)?;
        }
        Ok(())
    }

    /// `dst` := `dst.len()` f64 at `src` on `stream`'s device, after the work queued on it.
    ///
    /// # Safety
    /// `src` must address `dst.len()` values on `stream`'s device.
    pub unsafe fn download(&mut self, stream: &CudaStream, src: u64, dst: &mut [f64]) -> Result<()> {
        let total = dst.len();
        let n = total.div_ceil(CHUNK);
        let issue = |s: &mut Self, i: usize| -> Result<()> {
            let len = CHUNK.min(total - i * CHUNK);
            let h = i % 2;
            let buf = &mut s.half(h)?[..len];
            let at = src + (i * CHUNK * 8) as u64;
            // SAFETY: as in `upload`; the half is read only after `done[h]` passes.
            unsafe { result::memcpy_dtoh_async(buf, at, stream.cu_stream()) }
                .map_err(err("staged download"))?;
            s.record(h, stream)
        };
        if n > 0 {
            issue(self, 0)?;
        }
        for i in 0..n {
            if i + 1 < n {
                issue(self, i + 1)?;
            }
            let len = CHUNK.min(total - i * CHUNK);
            let buf = &self.half(i % 2)?[..len];
            par_copy(&mut dst[i * CHUNK..i * CHUNK + len], buf);
        }
        Ok(())
    }
}

/// `v` on the device as a `shape` tensor: through `staging`'s pinned halves when given,
/// else candle's own (pageable) upload.
pub fn to_device(
    staging: Option<&mut Staging>,
    stream: &CudaStream,
    dev: &Device,
    v: &[f64],
    shape: (usize, usize),
) -> Result<Tensor> {
    let Some(st) = staging else { return Ok(Tensor::from_slice(v, shape, dev)?) };
    let t = Tensor::zeros(shape, DType::F64, dev)?;
    // SAFETY: `t` holds v.len() values on this stream's device; later work on the stream
    // follows the copy.
    unsafe { st.upload(stream, v, tensor_ptr(&t)?) }?;
    Ok(t)
}

/// `dst` (device) := `src`, pinned when `staging` is given, else pageable.
///
/// # Safety
/// `dst` must address `src.len()` values on `stream`'s device.
pub unsafe fn copy_up(
    staging: Option<&mut Staging>,
    stream: &CudaStream,
    src: &[f64],
    dst: u64,
) -> Result<()> {
    match staging {
        Some(st) => unsafe { st.upload(stream, src, dst) },
        None => unsafe { result::memcpy_htod_async(dst, src, stream.cu_stream()) }
            .map_err(err("copy to the device")),
    }
}

/// `dst` := `dst.len()` values at `src` (device), after the work queued on `stream`, pinned
/// when `staging` is given, else pageable; returns when they are there.
///
/// # Safety
/// `src` must address `dst.len()` values on `stream`'s device.
pub unsafe fn copy_down(
    staging: Option<&mut Staging>,
    stream: &CudaStream,
    src: u64,
    dst: &mut [f64],
) -> Result<()> {
    match staging {
        Some(st) => unsafe { st.download(stream, src, dst) },
        None => unsafe { result::memcpy_dtoh_async(dst, src, stream.cu_stream()) }
            .and_then(|_| stream.synchronize())
            .map_err(err("copy to the host")),
    }
}

fn par_copy(dst: &mut [f64], src: &[f64]) {
    dst.par_chunks_mut(PIECE).zip(src.par_chunks(PIECE)).for_each(|(d, s)| d.copy_from_slice(s));
}
