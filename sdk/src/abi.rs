//! The raw C ABI shared by the host and every plugin (version 1, minor revision 4).
//!
//! Everything here is `#[repr(C)]` and made of plain integers, floats and raw pointers, so a
//! plugin built by any rustc (or any C compiler) talks to any host. Rules of the contract:
//!
//! * A plugin exports one symbol, [`ENTRY_SYMBOL`] (`llq_plugin_entry`), an
//!   `extern "C" fn() -> *const LlqPluginV1`. The descriptor lives as long as the library.
//! * The first field of the descriptor is always `abi_version: u32`; a host reads it before
//!   anything else and refuses versions it does not speak. `struct_size` lets later minor
//!   revisions append fields without breaking v1 hosts.
//! * Memory is freed by the side that allocated it: buffers the host passes in stay the
//!   host's; results a plugin allocates (`LlqQuantized`) are handed back through
//!   `release_quantized`.
//! * Every function returns an [`LlqStatus`]; on failure the plugin writes a UTF-8 message
//!   into the host's error buffer (truncated to its capacity). Panics never unwind across the
//!   boundary: the SDK's thunks catch them and report [`LlqStatus::Panic`].
//! * Strings are UTF-8 `(ptr, len)` pairs unless documented as NUL-terminated.

use std::ffi::{c_char, c_void};

/// The ABI version this SDK speaks.
pub const ABI_VERSION: u32 = 1;

/// The minor revision: additions that leave every v1 layout and meaning as it was.
/// * 1.1: calibration kind [`CALIBRATION_HESSIAN`] and the field `LlqCalibration::hessian`
///   appended. A v1.0 host refuses a plugin that declares the new kind (unknown calibration
///   kind) and never passes calibration data, so a plugin reads `hessian` only from a host
///   that wrote it; a v1.0 plugin reading the prefix of a v1.1 `LlqCalibration` sees what it
///   always saw.
/// * 1.2: `LlqCalibration::abs_mean` appended (mean |x| per column, AWQ's activation
///   statistic), and the descriptor extension [`LlqPluginV1_2`] (layer groups and foldable
///   input scales, `search_scales`). A plugin's `struct_size` says which descriptor it
///   exports: a host reads the extension only when `struct_size` covers it, so v1.0/v1.1
///   plugins load as before; a v1.1 host reads only the [`LlqPluginV1`] prefix of a v1.2
///   plugin and never calls `search_scales`.
/// * 1.3: the descriptor extension [`LlqPluginV1_3`] (`calibration_for`: the calibration an
///   option set needs, e.g. llama.cpp types that use an importance matrix only when asked).
///   `LlqPluginV1::calibration` stays the most any option set needs, so a v1.2 host, which
///   reads only that field, calibrates every run of such a plugin and the plugin ignores data
///   it did not ask for; a v1.3 host calls `calibration_for` with the run's options.
/// * 1.4: the descriptor extension [`LlqPluginV1_4`] (`set_host_services`) and
///   [`LlqHostServices`]: linear algebra the host can do faster (GPTQ's factorization on the
///   GPU). A 1.4 host hands its services to a plugin whose `struct_size` covers the extension,
///   once, right after loading it; a plugin that was never given any (an older host) or whose
///   host answers "not done" computes the same thing itself, so every pairing works as before.
/// * 1.5: [`LlqHostServices`] appends GPTQ's lazy updates on a matrix the host keeps
///   (`lazy_begin`, `lazy_update`, `lazy_end`). A 1.4 plugin reads only the prefix it knows; a
///   1.5 plugin under a 1.4 host sees a `struct_size` that stops before them and updates its own
///   copy, as it does when a 1.5 host answers "not offered".
pub const ABI_MINOR: u32 = 5;

/// The exported symbol name (without NUL) that returns the plugin descriptor.
pub const ENTRY_SYMBOL: &str = "llq_plugin_entry";

/// Signature of the exported entry point.
pub type EntryFn = unsafe extern "C" fn() -> *const LlqPluginV1;

/// Return code of every plugin function.
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LlqStatus {
    Ok = 0,
    /// The method rejected its input (message in the error buffer).
    Error = 1,
    /// The plugin panicked; the panic was caught (message in the error buffer).
    Panic = 2,
}

/// What calibration data a method wants before quantizing (`LlqPluginV1::calibration`).
pub const CALIBRATION_NONE: u32 = 0;
/// Per-input-column statistics of the layer's activations (abs-max and mean square).
pub const CALIBRATION_STATS: u32 = 1;
/// The statistics plus raw activation rows (up to the host's sample budget).
pub const CALIBRATION_SAMPLES: u32 = 2;
/// The statistics plus the input Hessian `H = 2/n · Σ x xᵀ` over every calibration token, as
/// GPTQ defines it (`cols × cols`, f64). Since ABI 1.1.
pub const CALIBRATION_HESSIAN: u32 = 3;

/// A borrowed UTF-8 string.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct LlqStr {
    pub ptr: *const u8,
    pub len: usize,
}

/// A named byte buffer (borrowed for the duration of a call).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct LlqBuffer {
    pub name: LlqStr,
    pub data: *const u8,
    pub len: usize,
}

/// Where the plugin writes an error message. Host-owned.
#[repr(C)]
#[derive(Debug)]
pub struct LlqErrorBuf {
    pub ptr: *mut u8,
    pub cap: usize,
    /// Set by the side that writes (the plugin; the host in a service call) to the number of
    /// bytes written.
    pub len: usize,
}

impl LlqErrorBuf {
    /// Write `text` into the buffer `buf` points to (null: nothing), truncated to its capacity
    /// on a char boundary, and set `len`.
    ///
    /// # Safety
    /// `buf` is null or points to a buffer whose `ptr` (or null) holds `cap` writable bytes.
    pub unsafe fn write(buf: *mut LlqErrorBuf, text: &str) {
        // SAFETY: the caller's promise.
        let Some(e) = (unsafe { buf.as_mut() }) else { return };
        if e.ptr.is_null() {
            return;
        }
        let mut n = text.len().min(e.cap);
        while n > 0 && !text.is_char_boundary(n) {
            n -= 1;
        }
        // SAFETY: n ≤ cap bytes, as promised writable.
        unsafe { std::ptr::copy_nonoverlapping(text.as_ptr(), e.ptr, n) };
        e.len = n;
    }
}

/// One weight matrix to quantize: row-major f32, `rows` outputs × `cols` inputs
/// (the layout of a `torch.nn.Linear` weight).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct LlqWeights {
    pub layer: LlqStr,
    pub rows: u64,
    pub cols: u64,
    pub data: *const f32,
}

/// Calibration data for one layer (host-owned, optional). Pointers may be null when absent.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct LlqCalibration {
    /// Input features (= the weight's `cols`).
    pub cols: u64,
    /// Number of activation rows the statistics were computed over.
    pub n_tokens: u64,
    /// `cols` values: max |x| per input column.
    pub abs_max: *const f32,
    /// `cols` values: mean x² per input column.
    pub mean_sq: *const f32,
    /// `n_samples × cols` raw activation rows, or null.
    pub samples: *const f32,
    pub n_samples: u64,
    /// `cols × cols` input Hessian (row-major f64), or null. Since ABI 1.1 (see [`ABI_MINOR`]).
    pub hessian: *const f64,
    /// `cols` values: mean |x| per input column, or null. Since ABI 1.2.
    pub abs_mean: *const f32,
}

/// What produces a layer group's shared input, and so where the host folds an input scale.
/// The producer of q/k/v is `input_layernorm`, of gate/up `post_attention_layernorm` (the
/// RMSNorm weight is divided by the scale); of o it is v and of down it is up (the producing
/// linear's output rows are divided by the scale). Since ABI 1.2.
pub const PRODUCER_NORM: u32 = 1;
/// See [`PRODUCER_NORM`].
pub const PRODUCER_LINEAR: u32 = 2;

/// Linear layers that read one input (`search_scales`). Host-owned, valid for the call.
/// Since ABI 1.2.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct LlqLayerGroup {
    /// The producer's tensor name (e.g. `model.layers.3.input_layernorm.weight`).
    pub producer: LlqStr,
    /// [`PRODUCER_NORM`] or [`PRODUCER_LINEAR`].
    pub producer_kind: u32,
    /// The group's layers, all with `cols` = the input width, in model order.
    pub layers: *const LlqWeights,
    pub n_layers: usize,
    /// The calibration data of the shared input (what the plugin declared it needs).
    pub calibration: *const LlqCalibration,
}

/// A packed (quantized) matrix as the host holds it, passed back to the plugin.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct LlqPacked {
    pub rows: u64,
    pub cols: u64,
    pub buffers: *const LlqBuffer,
    pub n_buffers: usize,
    /// The JSON metadata the plugin produced at quantization time.
    pub metadata: LlqStr,
}

/// A quantization result, allocated by the plugin. The host copies what it needs and then
/// calls `release_quantized(handle)`.
#[repr(C)]
#[derive(Debug)]
pub struct LlqQuantized {
    pub buffers: *const LlqBuffer,
    pub n_buffers: usize,
    pub metadata: LlqStr,
    /// Opaque plugin-side owner of the memory above.
    pub handle: *mut c_void,
}

impl LlqQuantized {
    pub const fn empty() -> Self {
        LlqQuantized {
            buffers: std::ptr::null(),
            n_buffers: 0,
            metadata: LlqStr { ptr: std::ptr::null(), len: 0 },
            handle: std::ptr::null_mut(),
        }
    }
}

/// The plugin descriptor, version 1.
///
/// NUL-terminated static strings: `name`, `version`, `description`, `options_json` (a JSON
/// array of `{name, type, default, help}`), and the optional `cuda_source` /
/// `cuda_kernels_json` (null when the plugin ships no GPU kernels; see the SDK docs).
#[repr(C)]
pub struct LlqPluginV1 {
    pub abi_version: u32,
    pub struct_size: u32,
    pub name: *const c_char,
    pub version: *const c_char,
    pub description: *const c_char,
    pub options_json: *const c_char,
    /// One of `CALIBRATION_*`.
    pub calibration: u32,
    /// Non-zero when `matmul` is implemented (numerics that are not weight-only).
    pub has_matmul: u32,
    pub cuda_source: *const c_char,
    pub cuda_kernels_json: *const c_char,

    /// Bytes the packed form of a `rows × cols` matrix occupies (all buffers together).
    pub packed_size: unsafe extern "C" fn(
        rows: u64,
        cols: u64,
        options: LlqStr,
        out_bytes: *mut u64,
        err: *mut LlqErrorBuf,
    ) -> LlqStatus,

    /// Quantize one matrix. `calibration` may be null.
    pub quantize: unsafe extern "C" fn(
        weights: *const LlqWeights,
        options: LlqStr,
        calibration: *const LlqCalibration,
        out: *mut LlqQuantized,
        err: *mut LlqErrorBuf,
    ) -> LlqStatus,

    /// Free a result of `quantize` (never fails).
    pub release_quantized: unsafe extern "C" fn(handle: *mut c_void),

    /// Dequantize into the host's `out` (`out_len` f32s). `written` receives the count written.
    pub dequantize: unsafe extern "C" fn(
        packed: *const LlqPacked,
        out: *mut f32,
        out_len: usize,
        written: *mut usize,
        err: *mut LlqErrorBuf,
    ) -> LlqStatus,

    /// Reference `y = x · Wᵀ` for `m` rows of `x` (m × cols) into `out` (m × rows).
    /// Only called when `has_matmul != 0`.
    pub matmul: unsafe extern "C" fn(
        packed: *const LlqPacked,
        x: *const f32,
        m: u64,
        out: *mut f32,
        out_len: usize,
        err: *mut LlqErrorBuf,
    ) -> LlqStatus,
}

/// The descriptor of ABI 1.2: the v1 descriptor, then the fields 1.2 appended. A plugin
/// that exports it sets `base.struct_size = size_of::<LlqPluginV1_2>()`.
#[repr(C)]
pub struct LlqPluginV1_2 {
    pub base: LlqPluginV1,
    /// Non-zero when `search_scales` may return scales (the host then runs the search before
    /// quantizing each block's layers); zero: the host never calls it.
    pub group_scales: u32,
    /// Choose one positive scale per input column for a layer group, to be folded into the
    /// producer (its output divided by `s`) and into the group's layers (their input columns
    /// multiplied by `s`), so the unquantized model computes the same function. Writes
    /// `cols` values into `scales` and sets `*found = 1`, or sets `*found = 0` to leave the
    /// group as it is. `info` receives an optional UTF-8 JSON object describing the choice
    /// (e.g. AWQ's ratio and loss), recorded in the results; `info.len` = bytes written.
    pub search_scales: unsafe extern "C" fn(
        group: *const LlqLayerGroup,
        options: LlqStr,
        scales: *mut f32,
        cols: usize,
        found: *mut u32,
        info: *mut LlqErrorBuf,
        err: *mut LlqErrorBuf,
    ) -> LlqStatus,
}

/// The descriptor of ABI 1.3: the 1.2 descriptor, then the fields 1.3 appended. A plugin that
/// exports it sets `base.base.struct_size = size_of::<LlqPluginV1_3>()`.
#[repr(C)]
pub struct LlqPluginV1_3 {
    pub base: LlqPluginV1_2,
    /// The calibration (`CALIBRATION_*`) that `quantize` needs with these options, written to
    /// `*kind`: `CALIBRATION_NONE` or `LlqPluginV1::calibration` itself (the kind a host
    /// older than 1.3 gives every run).
    pub calibration_for:
        unsafe extern "C" fn(options: LlqStr, kind: *mut u32, err: *mut LlqErrorBuf) -> LlqStatus,
}

/// Services a 1.4 host offers its plugins (`set_host_services`). Host-owned, immutable, and
/// valid until the plugin's library is unloaded. `struct_size` says which fields are present:
/// later minor revisions append fields, and a plugin reads only those `struct_size` covers.
/// Since ABI 1.4.
#[repr(C)]
pub struct LlqHostServices {
    pub struct_size: u32,
    /// GPTQ's `Hinv`: the upper Cholesky factor `U` of `h⁻¹` (`h⁻¹ = Uᵀ U`) for a symmetric
    /// positive definite `n × n` matrix `h` (row-major f64), written to `u` (`n × n`,
    /// row-major, zeros below the diagonal). `*done = 1` when `u` was written; `*done = 0`
    /// when the host has no faster way at the moment (e.g. no GPU in this run), and the plugin
    /// computes it itself. An `Error` (with a message in `err`, e.g. "not positive definite"
    /// or a device failure) fails the plugin's call; it is not a reason to fall back. May be
    /// called from several threads at once.
    pub inverse_upper_cholesky: unsafe extern "C" fn(
        n: u64,
        h: *const f64,
        u: *mut f64,
        done: *mut u32,
        err: *mut LlqErrorBuf,
    ) -> LlqStatus,
    /// GPTQ's lazy updates of later columns (since 1.5) on a copy of the layer's working weights
    /// the host keeps (on the GPU): `w` (`rows × cols`, row-major f64) and `u` (`cols × cols`,
    /// row-major f64, the factor above) are copied, and `*handle` is set to a non-zero handle,
    /// or to 0 when the host does not offer it at the moment (the plugin updates its own copy).
    /// Errors fail the plugin's call, as above. May be called from several threads at once,
    /// each handle from one thread at a time.
    pub lazy_begin: unsafe extern "C" fn(
        rows: u64,
        cols: u64,
        w: *const f64,
        u: *const f64,
        handle: *mut u64,
        err: *mut LlqErrorBuf,
    ) -> LlqStatus,
    /// `W[:, i2..] -= E · U[i1..i2, i2..]` with `E` (`rows × (i2 − i1)`, row-major) at `e`,
    /// each element updated as the plain loop would — `v = v − e[r][t] · u[t][c]` for
    /// t = i1, …, i2 − 1 in order, every multiply and subtraction rounded (no fusion), the
    /// bits of `llq_sdk::quant::linalg::sub_products_in_order` — then `W[:, i2..c1]` written to
    /// `out` (`rows × (c1 − i2)`, row-major): the columns the plugin reads next.
    pub lazy_update: unsafe extern "C" fn(
        handle: u64,
        i1: u64,
        i2: u64,
        e: *const f64,
        c1: u64,
        out: *mut f64,
        err: *mut LlqErrorBuf,
    ) -> LlqStatus,
    /// Free what `lazy_begin` kept (a handle of 0 is ignored). Cannot fail.
    pub lazy_end: unsafe extern "C" fn(handle: u64),
}

/// The descriptor of ABI 1.4: the 1.3 descriptor, then the fields 1.4 appended. A plugin that
/// exports it sets `base.base.base.struct_size = size_of::<LlqPluginV1_4>()`.
#[repr(C)]
pub struct LlqPluginV1_4 {
    pub base: LlqPluginV1_3,
    /// Take the host's services (see [`LlqHostServices`]); null withdraws them. A 1.4 host
    /// calls it once after loading the library, before any other call but the entry point.
    pub set_host_services: unsafe extern "C" fn(services: *const LlqHostServices),
}
