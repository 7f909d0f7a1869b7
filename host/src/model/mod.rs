//! The Llama architecture in the Hugging Face layout (rotate-half RoPE, grouped-query
//! attention, SwiGLU MLP, RMSNorm) on candle tensors.
//!
//! - [`config`]: hyper-parameters, published presets, and the one place tensor names are built;
//! - [`weights`]: host-side f32 tensors by HF name, as every loader produces them;
//! - [`linear`]: a linear layer, dense or packed (a plugin's kernels on a GPU);
//! - [`mask`]: which keys each query of a forward may see;
//! - [`llama`]: attention, MLP and decoder block structs (each with `load` and `forward`),
//!   the model and its KV cache;
//! - [`graph`] (CUDA): the decode step on a static KV cache with llq's own kernels, captured
//!   once as a CUDA graph and replayed.

pub mod config;
#[cfg(feature = "cuda")]
pub mod graph;
pub mod linear;
pub mod llama;
pub mod mask;
pub mod weights;

pub use config::{Config, LayerTensor, RopeScaling};
pub use linear::{Linear, PackedLayers};
pub use llama::{
    Block, Cache, Llama, PrefillFusion, SequenceContext, Stage, StageState, WeightSource, MAX_POSITIONS,
};
pub use mask::Mask;
pub use weights::{check_weights, HostTensor, Weights};
