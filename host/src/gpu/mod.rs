//! GPU execution of plugin kernels (feature `cuda`): NVRTC compilation with a PTX cache
//! ([`nvrtc`]), packed weights resident on the device and the quantized linear layer
//! ([`linear`]), the decode step's own kernels on raw pointers ([`step`]), the eager prefill's
//! fused attention and element-wise kernels ([`prefill`], [`pointwise`]), the calibration Hessian's product ([`gram`]), GPTQ's factorization ([`solve`]) and lazy updates ([`lazy`]) with their
//! pinned copies ([`staging`]), and event timing and copy bandwidth ([`timing`]). The shared drivers every
//! built-in method uses are in `sdk/src/cuda/llq_kernels.cuh`.

pub mod gram;
pub mod launch;
pub mod lazy;
pub mod linear;
pub mod nvrtc;
pub mod pointwise;
pub mod prefill;
pub mod solve;
pub mod staging;
pub mod step;
pub mod timing;

pub use linear::{MatvecTarget, PackedLinear, MATVEC_MAX_BATCH};
pub use nvrtc::{arch, compile, cuda_device, Kernels};
pub use prefill::PrefillKernels;
