//! GPU execution of plugin kernels (feature `cuda`): NVRTC compilation with a PTX cache
//! ([`nvrtc`]), packed weights resident on the device and the quantized linear layer
//! ([`linear`]), the decode step's own kernels on raw pointers ([`step`]), the fused prefill
//! attention ([`prefill`]), the calibration Hessian's product ([`gram`]), GPTQ's factorization ([`solve`]), and event timing and copy bandwidth ([`timing`]). The shared drivers every
//! built-in method uses are in `sdk/src/cuda/llq_kernels.cuh`.

pub mod gram;
pub mod lazy;
pub mod linear;
pub mod nvrtc;
pub mod prefill;
pub mod solve;
pub mod step;
pub mod timing;

pub use linear::{MatvecTarget, PackedLinear, MATVEC_MAX_BATCH};
pub use nvrtc::{arch, compile, cuda_device, Kernels};
pub use prefill::FlashAttention;

/// Make `dev`'s context current on the calling thread and return its stream: the host's
/// services to plugins (`solve`, `lazy`) run on the plugins' own threads.
pub fn bind(
    dev: &candle_core::CudaDevice,
) -> anyhow::Result<std::sync::Arc<candle_core::cuda_backend::cudarc::driver::CudaStream>> {
    let stream = dev.cuda_stream();
    stream.context().bind_to_thread().map_err(|e| anyhow::anyhow!("binding the CUDA context: {e:?}"))?;
    Ok(stream)
}
