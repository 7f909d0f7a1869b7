//! Timing on the device: CUDA events around back-to-back launches, the device-to-device copy
//! bandwidth every roofline is measured against, free device memory, and the memory pool's
//! counters and release threshold.

use crate::util::stats::{spread, Spread};
use anyhow::Result;
use candle_core::cuda_backend::cudarc::driver::sys::CUevent_flags;
use candle_core::cuda_backend::cudarc::driver::{CudaSlice, CudaStream};
use candle_core::cuda_backend::CudaDevice;
use std::sync::Arc;

fn ev(stream: &CudaStream) -> Result<candle_core::cuda_backend::cudarc::driver::CudaEvent> {
    stream
        .record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
        .map_err(|e| anyhow::anyhow!("cuda event: {e:?}"))
}

/// Median seconds per call of `f` (called `iters` times between two events), over `repeats`.
pub fn time_launches(
    stream: &Arc<CudaStream>,
    repeats: usize,
    iters: usize,
    mut f: impl FnMut(usize) -> Result<()>,
) -> Result<Spread> {
    for i in 0..iters.min(16) {
        f(i)?; // warm-up
    }
    let mut times = vec![];
    for _ in 0..repeats {
        let a = ev(stream)?;
        for i in 0..iters {
            f(i)?;
        }
        let b = ev(stream)?;
        let ms = a.elapsed_ms(&b).map_err(|e| anyhow::anyhow!("cuda event timing: {e:?}"))?;
        times.push(ms as f64 * 1e-3 / iters as f64);
    }
    Ok(spread(times))
}

/// Device-to-device copy of 1 GiB in GB/s (bytes read + written).
pub fn copy_bandwidth(dev: &CudaDevice, repeats: usize) -> Result<f64> {
    let n = 512usize << 20;
    let src: CudaSlice<u8> = dev.alloc_zeros(n)?;
    let mut dst: CudaSlice<u8> = dev.alloc_zeros(n)?;
    let stream = dev.cuda_stream();
    let s = time_launches(&stream, repeats, 4, |_| Ok(dev.memcpy_dtod(&src, &mut dst)?))?;
    drop((src, dst));
    // A kept pool would hold the probe's 1 GiB for the next allocations, out of sight of
    // free-memory counts taken after this.
    trim_pool(dev);
    Ok(2.0 * n as f64 / s.median / 1e9)
}

/// Hand what the device's pool holds beyond its live allocations back to the driver (after
/// the queued work), so that free device memory counts live buffers only.
pub fn trim_pool(dev: &CudaDevice) {
    if let Some(pool) = mem_pool(dev) {
        if dev.cuda_stream().synchronize().is_ok() {
            // SAFETY: a pool of this device; trimming frees only unused reserved memory.
            let _ = unsafe { candle_core::cuda_backend::cudarc::driver::sys::cuMemPoolTrimTo(pool, 0) };
        }
    }
}

/// Free device memory in bytes, after the device's queued work has finished.
pub fn free_bytes(dev: &candle_core::Device) -> Option<u64> {
    if !dev.is_cuda() {
        return None;
    }
    dev.synchronize().ok()?;
    candle_core::cuda_backend::cudarc::driver::result::mem_get_info().ok().map(|(free, _)| free as u64)
}

/// Bytes of stream-ordered allocations (every candle/cudarc buffer: weights, activations,
/// caches, scratch) as the device's memory pool counts them: `(current, high-water mark)`.
/// The high-water mark is exact, not sampled (torch's `max_memory_allocated` counts the same
/// way for its allocator); cuBLAS workspaces and loaded modules are outside the pool.
pub fn pool_bytes(dev: &CudaDevice) -> Option<(u64, u64)> {
    use candle_core::cuda_backend::cudarc::driver::sys;
    let pool = mem_pool(dev)?;
    let read = |attr| {
        let mut v = 0u64;
        // SAFETY: both attributes are cuuint64_t values written into `v`.
        let r = unsafe { sys::cuMemPoolGetAttribute(pool, attr, &mut v as *mut u64 as *mut _) };
        (r == sys::CUresult::CUDA_SUCCESS).then_some(v)
    };
    dev.cuda_stream().synchronize().ok()?;
    Some((
        read(sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_CURRENT)?,
        read(sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH)?,
    ))
}

/// Restart the pool's high-water mark from what is allocated now.
pub fn reset_pool_peak(dev: &CudaDevice) {
    use candle_core::cuda_backend::cudarc::driver::sys;
    if let Some(pool) = mem_pool(dev) {
        let mut zero = 0u64;
        // SAFETY: the high-water mark may only be set to zero, from a cuuint64_t.
        let _ = unsafe {
            sys::cuMemPoolSetAttribute(
                pool,
                sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH,
                &mut zero as *mut u64 as *mut _,
            )
        };
    }
}

/// Whether the device's memory pool keeps what it has reserved across synchronizations
/// (`$LLQ_POOL=keep`, the default) or hands it back to the driver at each one (`release`: the
/// CUDA default, release threshold 0). With `release` every synchronization — the bench's
/// between two timed prefills, a generation's between steps — returns the pool's memory, and
/// the next forward maps it again, allocation by allocation. Keeping it is what torch's
/// caching allocator does and what the CUDA programming guide suggests for stream-ordered
/// allocation ("Physical page caching behavior": raise `cudaMemPoolAttrReleaseThreshold`).
/// The pool's `USED_MEM` counters, which the bench's peak reads, count allocations either way.
pub fn pool_keeps() -> Result<bool> {
    crate::util::env::choice("LLQ_POOL", true, &[("keep", true), ("release", false)])
}

/// Set the device pool's release threshold as [`pool_keeps`] said.
pub fn set_pool_release(dev: &CudaDevice, keep: bool) -> Result<()> {
    use candle_core::cuda_backend::cudarc::driver::sys;
    let Some(pool) = mem_pool(dev) else { return Ok(()) };
    let mut threshold: u64 = if keep { u64::MAX } else { 0 };
    // SAFETY: the release threshold is a cuuint64_t read from `threshold`.
    let r = unsafe {
        sys::cuMemPoolSetAttribute(
            pool,
            sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
            &mut threshold as *mut u64 as *mut _,
        )
    };
    if r != sys::CUresult::CUDA_SUCCESS {
        anyhow::bail!("setting the device memory pool's release threshold failed: {r:?}");
    }
    Ok(())
}

fn mem_pool(dev: &CudaDevice) -> Option<candle_core::cuda_backend::cudarc::driver::sys::CUmemoryPool> {
    use candle_core::cuda_backend::cudarc::driver::sys;
    let ctx = dev.cuda_stream().context().clone();
    ctx.bind_to_thread().ok()?;
    let mut pool: sys::CUmemoryPool = std::ptr::null_mut();
    // SAFETY: writes the device's current pool (the one cuMemAllocAsync draws from).
    let r = unsafe { sys::cuDeviceGetMemPool(&mut pool, ctx.cu_device()) };
    (r == sys::CUresult::CUDA_SUCCESS && !pool.is_null()).then_some(pool)
}
