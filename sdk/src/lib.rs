//! # llq-sdk: the plugin contract for llq quantization methods
//!
//! A quantization method is a `cdylib` that the llq host loads at run time
//! (`llq-host run --quant plugins/nf4.so`). This crate is everything a method author needs:
//!
//! * [`QuantMethod`]: the safe trait you implement (options, packed size, quantize,
//!   dequantize, and optionally a reference `matmul`, calibration and CUDA kernels);
//! * [`export_plugin!`]: one macro that exports the C-ABI entry point for your type. You never
//!   write `unsafe` or `extern "C"` yourself;
//! * [`abi`]: the raw, versioned C ABI (`#[repr(C)]`, no Rust std types cross it), which is
//!   what makes a plugin built with any rustc load into any host of the same ABI version;
//! * [`options`]: the one option format of plugins and tasks (declaration, spelling, parser,
//!   error messages);
//! * [`quant`]: shared quantization math (bitsandbytes' NF4/FP4 tables and decision trees,
//!   blockwise absmax, nibble packing, the dynamic 8-bit map, double quantization, LLM.int8
//!   row quantization), so built-in and third-party methods do not copy each other.
//!
//! ```ignore
//! use llq_sdk::{export_plugin, OptionSpec, Options, PackedView, QuantMethod, Quantized, Weights, Calibration, Result};
//!
//! #[derive(Default)]
//! struct Sign;
//! impl QuantMethod for Sign {
//!     const NAME: &'static str = "sign";
//!     const VERSION: &'static str = "0.1.0";
//!     const DESCRIPTION: &'static str = "1-bit sign quantization with a per-row scale";
//!     fn packed_size(&self, rows: u64, cols: u64, _o: &Options) -> Result<u64> { Ok(rows * cols.div_ceil(8) + 4 * rows) }
//!     fn quantize(&self, w: &Weights, _o: &Options, _c: Option<&Calibration>) -> Result<Quantized> { todo!() }
//!     fn dequantize(&self, p: &PackedView, out: &mut [f32]) -> Result<()> { todo!() }
//! }
//! export_plugin!(Sign);
//! ```
//!
//! ## Calibration (for GPTQ / AWQ / SmoothQuant-style methods)
//! Set [`QuantMethod::CALIBRATION`] to [`CalibrationNeed::Stats`], [`CalibrationNeed::Samples`]
//! or [`CalibrationNeed::Hessian`]. The host then runs calibration text through the model,
//! records each linear layer's input activations, and passes a [`Calibration`] (per input
//! column abs-max and mean square, plus raw rows when samples were asked for, plus the input
//! Hessian when it was) to `quantize` for that layer.
//!
//! ## Layer groups and input scales (AWQ, SmoothQuant)
//! Set [`QuantMethod::GROUP_SCALES`] and implement [`QuantMethod::search_scales`]. For each
//! group of layers that read one input (q/k/v, o, gate/up, down), the host passes the
//! unquantized layers and the input's calibration data; a returned scale `s` is folded into
//! the producer (divided) and the layers' input columns (multiplied), which leaves the
//! unquantized model's function unchanged, and the layers are then quantized as usual.
//!
//! ## Host services (ABI 1.4, 1.5)
//! A 1.4 host hands every plugin a table of services when it loads it ([`services`]); a
//! method calls them through this crate (today [`services::inverse_upper_cholesky`], GPTQ's
//! `Hinv`, and [`services::LazyUpdates`], GPTQ's lazy updates on a copy the host keeps; both
//! on the host's GPU in a calibrated GPU run) and gets the crate's own CPU result whenever
//! the host has no faster way or is older. Nothing to export: [`export_plugin!`] does it.
//!
//! ## GPU kernels
//! Return [`CudaKernels`] from [`QuantMethod::cuda_kernels`]: CUDA C source and the names of
//! its `extern "C" __global__` entry points. The host compiles the source with NVRTC on first
//! use (cached by source hash and GPU arch) and launches the entries on its stream with the
//! argument conventions documented on [`CudaKernels`]. Methods without kernels still run on
//! the GPU through their CPU `dequantize` (slow path, the host warns once).

pub mod abi;
pub mod cuda;
#[doc(hidden)]
pub mod ffi;
pub mod options;
pub mod quant;
pub mod services;
#[cfg(any(test, feature = "testing"))]
#[doc(hidden)]
pub mod testing;

pub use options::{OptionKind, OptionSpec, Options};

use serde::{Deserialize, Serialize};
use std::fmt;

/// An error a method returns to the host; the message is shown to the user as is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginError(pub String);

impl fmt::Display for PluginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for PluginError {}
impl From<String> for PluginError {
    fn from(s: String) -> Self {
        PluginError(s)
    }
}
impl From<&str> for PluginError {
    fn from(s: &str) -> Self {
        PluginError(s.to_string())
    }
}

pub type Result<T> = std::result::Result<T, PluginError>;

/// Return early with a [`PluginError`] built like `format!`.
#[macro_export]
macro_rules! bail {
    ($($arg:tt)*) => { return Err($crate::PluginError(format!($($arg)*))) };
}

/// A weight matrix to quantize: `rows` outputs × `cols` inputs, row-major, all values finite
/// (the SDK checks before calling the method).
#[derive(Debug, Clone, Copy)]
pub struct Weights<'a> {
    pub layer: &'a str,
    pub rows: usize,
    pub cols: usize,
    pub data: &'a [f32],
}

/// Per-layer calibration data from the host (see the crate docs).
#[derive(Debug, Clone, Copy)]
pub struct Calibration<'a> {
    pub n_tokens: u64,
    /// Max |x| per input column.
    pub abs_max: &'a [f32],
    /// Mean x² per input column.
    pub mean_sq: &'a [f32],
    /// `n_samples × cols` raw activation rows (empty unless samples were asked for).
    pub samples: &'a [f32],
    pub n_samples: usize,
    /// The `cols × cols` input Hessian `2/n · Σ x xᵀ` (when the Hessian was asked for).
    pub hessian: Option<&'a [f64]>,
    /// Mean |x| per input column (empty from a host older than ABI 1.2).
    pub abs_mean: &'a [f32],
}

/// Where a layer group's input comes from (see [`abi::PRODUCER_NORM`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Producer {
    /// An RMSNorm: the host divides its weight by the scale.
    Norm,
    /// A linear layer: the host divides its output rows by the scale.
    Linear,
}

/// Linear layers that share one input, as the host hands them to
/// [`QuantMethod::search_scales`] (unquantized, with any earlier folds applied).
#[derive(Debug, Clone)]
pub struct LayerGroup<'a> {
    /// The producer's tensor name.
    pub producer: &'a str,
    pub producer_kind: Producer,
    /// The layers, all `cols` wide, in model order.
    pub layers: Vec<Weights<'a>>,
    /// Calibration data of the shared input.
    pub calibration: Calibration<'a>,
}

impl LayerGroup<'_> {
    /// The input width.
    pub fn cols(&self) -> usize {
        self.calibration.abs_max.len()
    }
}

/// A per-input-column scale chosen for a layer group, with a JSON description of the choice
/// that the host records.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupScales {
    pub scales: Vec<f32>,
    pub info: serde_json::Value,
}

/// What calibration data a method needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CalibrationNeed {
    None,
    Stats,
    Samples,
    /// The statistics and the input Hessian (GPTQ). Needs a host of ABI 1.1 or later.
    Hessian,
}

/// A packed matrix: named buffers plus JSON metadata (everything needed to dequantize it
/// must be in here; options are not passed to `dequantize`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Quantized {
    pub buffers: Vec<(String, Vec<u8>)>,
    pub metadata: serde_json::Value,
}

impl Quantized {
    pub fn new(metadata: serde_json::Value) -> Self {
        Quantized { buffers: vec![], metadata }
    }
    pub fn with_buffer(mut self, name: &str, data: Vec<u8>) -> Self {
        self.buffers.push((name.to_string(), data));
        self
    }
    pub fn total_bytes(&self) -> u64 {
        self.buffers.iter().map(|(_, b)| b.len() as u64).sum()
    }
}

/// The host's view of a packed matrix, handed back to `dequantize` / `matmul`.
#[derive(Debug, Clone)]
pub struct PackedView<'a> {
    pub rows: usize,
    pub cols: usize,
    pub buffers: Vec<(&'a str, &'a [u8])>,
    pub metadata: serde_json::Value,
}

impl<'a> PackedView<'a> {
    /// The buffer called `name`, or a clear error.
    pub fn buffer(&self, name: &str) -> Result<&'a [u8]> {
        self.buffers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, b)| *b)
            .ok_or_else(|| PluginError(format!("packed matrix has no buffer `{name}`")))
    }
    /// A buffer reinterpreted as little-endian f32 values.
    pub fn f32_buffer(&self, name: &str) -> Result<Vec<f32>> {
        let b = self.buffer(name)?;
        if b.len() % 4 != 0 {
            bail!("buffer `{name}` has {} bytes, not a whole number of f32", b.len());
        }
        Ok(b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
    }
    pub fn meta_u64(&self, key: &str) -> Result<u64> {
        self.metadata
            .get(key)
            .and_then(|v| v.as_u64())
            .ok_or_else(|| PluginError(format!("metadata has no integer `{key}`")))
    }
    pub fn meta_bool(&self, key: &str) -> Result<bool> {
        self.metadata
            .get(key)
            .and_then(|v| v.as_bool())
            .ok_or_else(|| PluginError(format!("metadata has no boolean `{key}`")))
    }
    pub fn meta_str(&self, key: &str) -> Result<&str> {
        self.metadata
            .get(key)
            .and_then(|v| v.as_str())
            .ok_or_else(|| PluginError(format!("metadata has no string `{key}`")))
    }
}

/// Little-endian bytes of f32 values (the layout of every f32 buffer in llq).
pub fn f32_to_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// CUDA kernels a method ships for the host to compile with NVRTC (kernel convention v1).
///
/// Signatures (all pointers are device pointers; `b0..b3` are the method's `quantize` buffers
/// in the order it listed them, null when it has fewer; `p0..p3` are the metadata values
/// named by [`CudaKernels::params`], 0 when unused; `llq_bf16` is `unsigned short`):
/// * `dequantize(b0, b1, b2, b3, long long rows, long long cols, long long p0..p3,
///   llq_bf16* out)`: writes all `rows × cols` weights, row-major. Launched with 256
///   threads a block, each block owning 8192 consecutive weights:
///   `grid = ceil(rows·cols / 8192)`.
/// * `matvec(b0..b3, rows, cols, p0..p3, const llq_bf16* x, llq_bf16* y, int batch)`:
///   `y[b, r] = Σ_c x[b, c] · W[r, c]` for `batch` ≤ 8 rows of `x` (`x` is batch × cols,
///   `y` batch × rows, 16-byte aligned). Launched with 256 threads a block, each block
///   owning 4 output rows: `grid = ceil(rows / 4)`. Entries named `<matvec>_b1` and `<matvec>_b4`
///   with the same signature, if present, are used for batch 1 and 2–4 (the header defines them).
/// * `<matvec>_mma` and `<matvec>_mma16` (kernel header v1.3, optional, used on sm_80 and
///   later for matrices whose `cols` is a multiple of 32): the same signature and function for
///   `batch` ≤ 64 (`_mma`) or ≤ 16 (`_mma16`), on tensor cores; 256 threads a block, each
///   block owning 16 output rows: `grid = ceil(rows / 16)`. The host sends batches 2–64 to
///   them (`$LLQ_MMA_MIN_BATCH` moves the boundary); without them batches above 8 are
///   dequantized into a scratch matrix and multiplied by cuBLAS.
/// * `<matvec>_b1_x3`, `<matvec>_mma16_x3`, `<matvec>_mma_x3` (header v1.4, optional): up to
///   three matrices that read the same `x` in one launch — for each of three slots `b0..b3,
///   rows, cols, p0..p3, llq_bf16* y, unsigned blocks`, then `x, int batch`; the grid is the
///   sum of the slots' `blocks` (each what its own `_b1` / `_mma16` / `_mma` launch would
///   have had; an unused slot has 0). The captured decode step uses them for q, k, v and for
///   gate, up when all the matrices of a group share one method's kernels.
/// * `<matvec>_pdl` (header v1.5, optional): an empty kernel, never launched. Its presence
///   promises that every entry of the module calls `griddepcontrol.wait` (the header's
///   `llq_grid_enter`) before it reads `x` or writes anything, so the host may launch them as
///   programmatic dependents of the kernel before (sm_90; the captured decode step at small
///   batches). Modules without it are launched as before.
/// * `<matvec>_b1_norm`, `<matvec>_b1_x3_norm`, `<matvec>_b1_res`, `<matvec>_b1_glu_norm`
///   (header v1.6, optional, all four or none; one row of `x`): the decode step's edges folded
///   in. `_b1_norm` and `_b1_x3_norm` take `x` before its RMSNorm and two more arguments
///   (`const llq_bf16* norm, float eps`), normalize it per block into `cols · 2` bytes of
///   dynamic shared memory with exactly the host norm kernel's arithmetic (the header's
///   `llq_rmsnorm_row`), then multiply; `_b1_res` stores `y = bf16(y + bf16(W·x))` (the
///   residual stream); `_b1_glu_norm` takes the gate matrix's arguments, then the up matrix's
///   (same shape and parameters), then `x, y, batch, norm, eps`, and writes
///   `bf16(silu(bf16(gate·n))·bf16(up·n))` over `ceil(rows / 2)` blocks. The host uses them at
///   batch 1 only where every matrix of the step has them.
///
/// [`cuda::HEADER`] implements both for any packed format from a small decoder
/// (`LLQ_DEFINE_KERNELS`); a method may also write them by hand. The kernels must compute
/// the same function as the method's CPU `dequantize`: the host checks them against it
/// (`llq-host kernels`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CudaKernels {
    pub source: String,
    /// Entry point of the dequantize-to-bf16 kernel.
    pub dequantize: String,
    /// Entry point of the fused dequantize-matvec kernel, if any.
    pub matvec: Option<String>,
    /// Metadata values passed as `p0..p3` (at most 4).
    #[serde(default)]
    pub params: Vec<KernelParam>,
}

#[cfg(test)]
mod kernel_tests {
    #[test]
    fn kernels_described_by_an_older_sdk_still_read() {
        // SDK 0.1 plugins also sent a free-form `launch` field (always null); the host ignores it.
        let k: super::CudaKernels = serde_json::from_str(
            r#"{"source":"s","dequantize":"d","matvec":null,"params":["block_size"],"launch":null}"#,
        )
        .unwrap();
        assert_eq!((k.dequantize.as_str(), k.params.len()), ("d", 1));
    }
}

/// A metadata value a kernel receives as a `long long`: an integer or boolean key, or a
/// string key mapped to its index in `values`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum KernelParam {
    Key(String),
    Choice { key: String, values: Vec<String> },
}

impl KernelParam {
    /// The value of this parameter in a packed matrix's metadata.
    pub fn resolve(&self, metadata: &serde_json::Value) -> Result<i64> {
        let key = match self {
            KernelParam::Key(k) | KernelParam::Choice { key: k, .. } => k,
        };
        let v = metadata
            .get(key)
            .ok_or_else(|| PluginError(format!("kernel parameter `{key}` is not in the metadata")))?;
        match (self, v) {
            (KernelParam::Key(_), serde_json::Value::Bool(b)) => Ok(*b as i64),
            (KernelParam::Key(_), v) => v
                .as_i64()
                .ok_or_else(|| PluginError(format!("kernel parameter `{key}` = {v} is not an integer"))),
            (KernelParam::Choice { values, .. }, v) => {
                let s = v.as_str().unwrap_or_default();
                values.iter().position(|x| x == s).map(|i| i as i64).ok_or_else(|| {
                    PluginError(format!("kernel parameter `{key}` = {v} is not one of {values:?}"))
                })
            }
        }
    }
}

/// The trait a quantization method implements. Every function must be deterministic.
pub trait QuantMethod: Default + 'static {
    const NAME: &'static str;
    const VERSION: &'static str;
    const DESCRIPTION: &'static str;
    /// What calibration data `quantize` wants: with every option set, or — when
    /// [`QuantMethod::calibration_for`] says so — with some of them (ABI 1.3). A host older
    /// than 1.3 calibrates every run of the plugin with this kind.
    const CALIBRATION: CalibrationNeed = CalibrationNeed::None;
    /// Whether [`QuantMethod::matmul`] is implemented.
    const HAS_MATMUL: bool = false;

    fn options(&self) -> Vec<OptionSpec> {
        vec![]
    }
    /// The calibration `quantize` needs with these options (ABI 1.3): [`CalibrationNeed::None`]
    /// or [`QuantMethod::CALIBRATION`]. A method whose options turn calibration on and off
    /// (llama.cpp's importance matrix) overrides it; the host then calibrates only the runs
    /// that need it.
    fn calibration_for(&self, _opts: &Options) -> CalibrationNeed {
        Self::CALIBRATION
    }
    /// Total bytes of all buffers for a `rows × cols` matrix (the host checks results against it).
    fn packed_size(&self, rows: u64, cols: u64, opts: &Options) -> Result<u64>;
    fn quantize(&self, w: &Weights, opts: &Options, calib: Option<&Calibration>) -> Result<Quantized>;
    /// Write all `rows × cols` values into `out`.
    fn dequantize(&self, p: &PackedView, out: &mut [f32]) -> Result<()>;
    /// Reference `out[m × rows] = x[m × cols] · Wᵀ` for methods whose numerics are not
    /// weight-only (e.g. LLM.int8 quantizes activations too).
    fn matmul(&self, _p: &PackedView, _x: &[f32], _m: usize, _out: &mut [f32]) -> Result<()> {
        bail!("{} has no matmul", Self::NAME)
    }
    fn cuda_kernels(&self) -> Option<CudaKernels> {
        None
    }
    /// Whether [`QuantMethod::search_scales`] is implemented (ABI 1.2).
    const GROUP_SCALES: bool = false;
    /// One positive scale per input column for `group`, folded by the host into the producer
    /// and the layers before they are quantized (AWQ, SmoothQuant), or `None` to leave the
    /// group as it is. Called once per group with the layers still unquantized; the host
    /// then quantizes each layer with `quantize`, on inputs that already carry the fold.
    fn search_scales(&self, _g: &LayerGroup, _opts: &Options) -> Result<Option<GroupScales>> {
        Ok(None)
    }
}

/// Export `$t: QuantMethod` as an llq plugin (defines the `llq_plugin_entry` symbol).
#[macro_export]
macro_rules! export_plugin {
    ($t:ty) => {
        #[no_mangle]
        pub extern "C" fn llq_plugin_entry() -> *const $crate::abi::LlqPluginV1 {
            static DESC: ::std::sync::OnceLock<$crate::ffi::Descriptor> = ::std::sync::OnceLock::new();
            DESC.get_or_init($crate::ffi::Descriptor::new::<$t>).as_ptr()
        }
    };
}
