//! A linear layer `y = x · Wᵀ`, dense or packed by a quantization plugin.

use crate::plugin::PackedMatrix;
use anyhow::Result;
use candle_core::Tensor;
use std::collections::HashMap;

/// A dense matrix held as its transpose (in, out) (a view is fine: the tied lm_head is the
/// embedding's transpose without a copy), or, on a GPU, a method's packed matrix run by its
/// own kernels.
pub enum Linear {
    Dense(Tensor),
    #[cfg(feature = "cuda")]
    Packed(crate::gpu::PackedLinear),
}

impl Linear {
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Linear::Dense(w) => Ok(x.broadcast_matmul(w)?),
            #[cfg(feature = "cuda")]
            Linear::Packed(p) => p.forward(x),
        }
    }

    /// Bytes of the weights on the device.
    pub fn bytes(&self) -> u64 {
        match self {
            Linear::Dense(w) => (w.elem_count() * w.dtype().size_in_bytes()) as u64,
            #[cfg(feature = "cuda")]
            Linear::Packed(p) => p.bytes(),
        }
    }
}

/// Linear layers kept packed by the quantization plugin (HF weight name → packed matrix),
/// with the plugin's CUDA kernels: on a GPU these run without being dequantized at load.
pub struct PackedLayers {
    pub method: String,
    pub kernels: llq_sdk::CudaKernels,
    pub layers: HashMap<String, PackedMatrix>,
}
