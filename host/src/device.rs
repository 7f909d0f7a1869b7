//! Choosing the device (`--device cpu|cuda[:N]|auto`) and what it can report about itself
//! (free memory, copy bandwidth), with the same answers on a build without CUDA.

use anyhow::{bail, Context, Result};
use candle_core::Device;

/// `cpu`, `cuda`, `cuda:N`, or `auto` (the first GPU when built with the `cuda` feature and
/// one is present, else the CPU; said in the log).
pub fn open(spec: &str) -> Result<Device> {
    // Read before any device opens, so that a malformed value is an error under `auto` too.
    #[cfg(feature = "cuda")]
    let keep_pool = crate::gpu::timing::pool_keeps()?;
    let cuda = |n: usize| -> Result<Device> {
        let d = Device::new_cuda(n).with_context(|| {
            format!(
                "cannot open CUDA device {n} (is llq-host built with --features cuda, and is there a GPU?)"
            )
        })?;
        #[cfg(feature = "cuda")]
        if let Device::Cuda(c) = &d {
            // SAFETY: llq uses the one stream candle created, so the per-buffer events that
            // order work across streams are not needed; they cost driver calls on every launch.
            unsafe { c.disable_event_tracking() };
            crate::gpu::timing::set_pool_release(c, keep_pool)?;
        }
        Ok(d)
    };
    match spec {
        "cpu" => Ok(Device::Cpu),
        "cuda" => cuda(0),
        "auto" => {
            let d = if cfg!(feature = "cuda") && candle_core::utils::cuda_is_available() {
                cuda(0).unwrap_or(Device::Cpu)
            } else {
                Device::Cpu
            };
            tracing::info!("device: {}", if d.is_cuda() { "cuda:0" } else { "cpu" });
            Ok(d)
        }
        s => match s.strip_prefix("cuda:").and_then(|n| n.parse().ok()) {
            Some(n) => cuda(n),
            None => bail!("unknown device `{s}` (cpu, cuda, cuda:N or auto)"),
        },
    }
}

/// Free device memory in bytes (CUDA only).
pub fn free_bytes(dev: &Device) -> Option<u64> {
    #[cfg(feature = "cuda")]
    return crate::gpu::timing::free_bytes(dev);
    #[cfg(not(feature = "cuda"))]
    {
        let _ = dev;
        None
    }
}

/// Device-to-device copy bandwidth in bytes read + written per second (CUDA only).
pub fn copy_bandwidth(dev: &Device) -> Result<Option<f64>> {
    match dev {
        #[cfg(feature = "cuda")]
        Device::Cuda(d) => Ok(Some(crate::gpu::timing::copy_bandwidth(d, 5)? * 1e9)),
        _ => Ok(None),
    }
}

/// Bytes allocated through the device's memory pool now and at most since the last
/// [`reset_peak`] (CUDA only; exact, not sampled).
pub fn allocated_bytes(dev: &Device) -> Option<(u64, u64)> {
    match dev {
        #[cfg(feature = "cuda")]
        Device::Cuda(d) => crate::gpu::timing::pool_bytes(d),
        _ => None,
    }
}

/// Return the device pool's unused reservation to the driver (CUDA only): before a free-memory
/// count that should see live buffers only (the pool otherwise keeps what it had, see
/// `$LLQ_POOL`).
pub fn trim_pool(dev: &Device) {
    #[cfg(feature = "cuda")]
    if let Device::Cuda(d) = dev {
        crate::gpu::timing::trim_pool(d);
    }
    #[cfg(not(feature = "cuda"))]
    let _ = dev;
}

/// Start a new high-water mark for [`allocated_bytes`].
pub fn reset_peak(dev: &Device) {
    #[cfg(feature = "cuda")]
    if let Device::Cuda(d) = dev {
        crate::gpu::timing::reset_pool_peak(d);
    }
    #[cfg(not(feature = "cuda"))]
    let _ = dev;
}
