//! Quantization plugins: loading a method's `.so` through the C ABI of `llq-sdk`, checking
//! everything it hands back, and exposing a safe API to the rest of the host. A plugin and
//! the options the user resolved for it travel together as a [`QuantConfig`].
//!
//! A plugin is trusted native code (it runs in our process); what we can and do guard
//! against is a wrong ABI version, a library that is not a plugin, panics (the SDK turns them
//! into errors), results whose sizes disagree with the plugin's own declaration, and
//! malformed metadata. Every error names the plugin file.

use anyhow::{anyhow, bail, Context, Result};
use llq_sdk::abi::*;
use llq_sdk::{CalibrationNeed, CudaKernels, OptionSpec, Options};
use serde::Serialize;
use std::ffi::{c_char, CStr};
use std::path::{Path, PathBuf};

/// What a plugin says about itself (`llq-host plugins inspect`).
#[derive(Debug, Clone, Serialize)]
pub struct PluginInfo {
    pub path: PathBuf,
    pub abi_version: u32,
    pub name: String,
    pub version: String,
    pub description: String,
    pub options: Vec<OptionSpec>,
    pub calibration: &'static str,
    pub has_matmul: bool,
    /// The plugin searches input scales for layer groups (ABI 1.2 `search_scales`).
    pub group_scales: bool,
    pub cuda_kernels: Option<CudaKernels>,
}

/// A loaded plugin. The library stays loaded as long as this value lives.
pub struct Plugin {
    desc: *const LlqPluginV1,
    /// The ABI 1.2 descriptor, when the plugin's `struct_size` covers it.
    ext: Option<*const LlqPluginV1_2>,
    /// The ABI 1.3 descriptor, when the plugin's `struct_size` covers it.
    ext3: Option<*const LlqPluginV1_3>,
    pub info: PluginInfo,
    // Keep last: dropped after everything that points into it.
    _lib: libloading::Library,
}

// SAFETY: the descriptor is immutable and the SDK's functions are stateless and thread-safe
// by contract (documented in llq-sdk); the library handle is Send + Sync.
unsafe impl Send for Plugin {}
unsafe impl Sync for Plugin {}

/// Named byte buffers of a packed matrix, in the plugin's order.
pub type Buffers = Vec<(String, Vec<u8>)>;

/// A packed matrix as produced by a plugin, owned by the host.
#[derive(Debug, Clone, PartialEq)]
pub struct PackedMatrix {
    pub rows: usize,
    pub cols: usize,
    pub buffers: Buffers,
    pub metadata: String,
}

impl PackedMatrix {
    pub fn bytes(&self) -> u64 {
        self.buffers.iter().map(|(_, b)| b.len() as u64).sum()
    }
}

/// What calibration gave one layer, from the host's calibration run: statistics of its input
/// activations, and raw rows or the input Hessian when the plugin asked for them.
#[derive(Debug, Clone, Default)]
pub struct CalibrationData {
    pub n_tokens: u64,
    pub abs_max: Vec<f32>,
    pub mean_sq: Vec<f32>,
    /// `n_samples × cols` raw input rows (empty unless asked for).
    pub samples: Vec<f32>,
    pub n_samples: usize,
    /// `cols × cols` input Hessian `2/n · Σ x xᵀ` (empty unless asked for).
    pub hessian: Vec<f64>,
    /// Mean |x| per input column.
    pub abs_mean: Vec<f32>,
}

impl CalibrationData {
    /// The ABI view of this data (borrowing it).
    fn abi(&self) -> LlqCalibration {
        let opt = |v: &[f32]| if v.is_empty() { std::ptr::null() } else { v.as_ptr() };
        LlqCalibration {
            cols: self.abs_max.len() as u64,
            n_tokens: self.n_tokens,
            abs_max: self.abs_max.as_ptr(),
            mean_sq: self.mean_sq.as_ptr(),
            samples: opt(&self.samples),
            n_samples: self.n_samples as u64,
            hessian: if self.hessian.is_empty() { std::ptr::null() } else { self.hessian.as_ptr() },
            abs_mean: opt(&self.abs_mean),
        }
    }

    /// Whether every field fits `cols` input columns (the plugin reads lengths from `cols`:
    /// a mismatch would be read out of bounds).
    fn fits(&self, cols: usize) -> bool {
        self.abs_max.len() == cols
            && self.mean_sq.len() == cols
            && self.samples.len() == self.n_samples * cols
            && (self.hessian.is_empty() || self.hessian.len() == cols * cols)
            && (self.abs_mean.is_empty() || self.abs_mean.len() == cols)
    }
}

/// One linear layer of a [`LayerGroup`]: its name, shape and f32 weights.
pub struct GroupLayer<'a> {
    pub name: &'a str,
    pub rows: usize,
    pub cols: usize,
    pub data: &'a [f32],
}

/// Linear layers that read one input, and where that input comes from (ABI 1.2).
pub struct LayerGroup<'a> {
    /// The producer's tensor name.
    pub producer: &'a str,
    pub producer_kind: llq_sdk::Producer,
    pub layers: Vec<GroupLayer<'a>>,
    pub calibration: &'a CalibrationData,
}

/// Input scales a plugin chose for a layer group, and its description of the choice.
#[derive(Debug, Clone, PartialEq)]
pub struct ChosenScales {
    pub scales: Vec<f32>,
    pub info: serde_json::Value,
}

const ERR_CAP: usize = 16 * 1024;

unsafe fn cstr(p: *const c_char, what: &str) -> Result<String> {
    if p.is_null() {
        bail!("descriptor field `{what}` is null");
    }
    Ok(CStr::from_ptr(p)
        .to_str()
        .with_context(|| format!("descriptor field `{what}` is not UTF-8"))?
        .to_string())
}

fn llq_str(s: &str) -> LlqStr {
    LlqStr { ptr: s.as_ptr(), len: s.len() }
}

/// A truncated or damaged shared object can kill the process inside dlopen (SIGBUS when a
/// mapped segment lies past the end of the file), where no error can be returned: so an ELF
/// file's loadable segments are checked to lie inside it first. Other files are left to
/// dlopen, which refuses them with an error.
fn check_elf(path: &Path) -> Result<()> {
    use object::read::elf::ElfFile64;
    use object::{Endianness, Object, ObjectSegment};
    let data = std::fs::read(path).context("cannot read the file")?;
    if !data.starts_with(b"\x7fELF") {
        return Ok(());
    }
    let elf = ElfFile64::<Endianness>::parse(&*data)
        .map_err(|e| anyhow!("not a valid 64-bit ELF shared library ({e}); truncated or damaged?"))?;
    for seg in elf.segments() {
        let (offset, size) = seg.file_range();
        if offset.checked_add(size).is_none_or(|end| end > data.len() as u64) {
            bail!(
                "truncated or damaged: a loadable segment spans bytes {offset}..{} but the file has {} bytes",
                offset.saturating_add(size),
                data.len()
            );
        }
    }
    Ok(())
}

impl Plugin {
    /// Load and validate the plugin at `path`.
    pub fn load(path: &Path) -> Result<Plugin> {
        let shown = path.display();
        if !path.exists() {
            bail!("plugin {shown}: file not found (build the built-in plugins with `make build`)");
        }
        // An absolute path, so dlopen never searches the library path for a bare file name.
        let abs =
            std::fs::canonicalize(path).with_context(|| format!("plugin {shown}: cannot resolve path"))?;
        check_elf(&abs).map_err(|e| anyhow!("plugin {shown}: {e}"))?;
        // SAFETY: loading a library runs its initializers; plugins are trusted native code.
        let lib = unsafe { libloading::Library::new(&abs) }
            .map_err(|e| anyhow!("plugin {shown}: not a loadable shared library: {e}"))?;
        // SAFETY: the symbol's type is fixed by the ABI.
        let entry: EntryFn = unsafe {
            *lib.get::<EntryFn>(ENTRY_SYMBOL.as_bytes()).map_err(|_| {
                anyhow!("plugin {shown}: no `{ENTRY_SYMBOL}` symbol; is it an llq quantization plugin built with llq-sdk?")
            })?
        };
        // SAFETY: calling the ABI entry point.
        let desc = unsafe { entry() };
        if desc.is_null() {
            bail!("plugin {shown}: `{ENTRY_SYMBOL}` returned null");
        }
        // Read the version before anything else: later versions may have another layout.
        // SAFETY: every ABI version starts with `abi_version: u32, struct_size: u32`.
        let (abi_version, struct_size) = unsafe { (*(desc as *const u32), *(desc as *const u32).add(1)) };
        if abi_version != ABI_VERSION {
            bail!(
                "plugin {shown}: speaks llq plugin ABI v{abi_version}, this host speaks v{ABI_VERSION}; rebuild the plugin against a matching llq-sdk"
            );
        }
        // A v1.0/1.1 descriptor is exactly `LlqPluginV1`; 1.2 appended fields (`LlqPluginV1_2`).
        if (struct_size as usize) < std::mem::size_of::<LlqPluginV1>() {
            bail!(
                "plugin {shown}: descriptor is {struct_size} bytes, ABI v1 needs {}",
                std::mem::size_of::<LlqPluginV1>()
            );
        }
        // SAFETY: the version check passed, so the descriptor has the v1 layout; the 1.2
        // extension is read only when the plugin says its descriptor is that large.
        let d = unsafe { &*desc };
        let ext = ((struct_size as usize) >= std::mem::size_of::<LlqPluginV1_2>())
            .then_some(desc as *const LlqPluginV1_2);
        let ext3 = ((struct_size as usize) >= std::mem::size_of::<LlqPluginV1_3>())
            .then_some(desc as *const LlqPluginV1_3);
        // ABI 1.4: the host's services, given once, before any other call.
        if (struct_size as usize) >= std::mem::size_of::<LlqPluginV1_4>() {
            // SAFETY: the descriptor is that large; the services are a `static`.
            unsafe { ((*(desc as *const LlqPluginV1_4)).set_host_services)(&crate::services::HOST_SERVICES) };
        }
        let group_scales = ext.is_some_and(|e| unsafe { (*e).group_scales != 0 });
        let info = (|| -> Result<PluginInfo> {
            Ok(unsafe {
                let options_json = cstr(d.options_json, "options_json")?;
                let options: Vec<OptionSpec> = serde_json::from_str(&options_json)
                    .with_context(|| format!("plugin {shown}: options_json is not a valid option list"))?;
                let cuda_kernels = if d.cuda_kernels_json.is_null() {
                    None
                } else {
                    let j = cstr(d.cuda_kernels_json, "cuda_kernels_json")?;
                    Some(
                        serde_json::from_str(&j)
                            .with_context(|| format!("plugin {shown}: cuda_kernels_json is malformed"))?,
                    )
                };
                PluginInfo {
                    path: path.to_path_buf(),
                    abi_version,
                    name: cstr(d.name, "name")?,
                    version: cstr(d.version, "version")?,
                    description: cstr(d.description, "description")?,
                    options,
                    calibration: match d.calibration {
                        CALIBRATION_NONE => "none",
                        CALIBRATION_STATS => "stats",
                        CALIBRATION_SAMPLES => "samples",
                        CALIBRATION_HESSIAN => "hessian",
                        other => bail!("plugin {shown}: unknown calibration kind {other}"),
                    },
                    has_matmul: d.has_matmul != 0,
                    group_scales,
                    cuda_kernels,
                }
            })
        })()
        .with_context(|| format!("plugin {shown}: malformed descriptor"))?;
        Ok(Plugin { desc, ext, ext3, info, _lib: lib })
    }

    fn d(&self) -> &LlqPluginV1 {
        // SAFETY: validated in `load`; lives as long as `_lib`.
        unsafe { &*self.desc }
    }

    pub fn name(&self) -> &str {
        &self.info.name
    }

    /// The calibration the plugin declares: what some option sets (ABI 1.3) or all of them
    /// need. What one run needs is [`QuantConfig::calibration`].
    pub fn calibration(&self) -> CalibrationNeed {
        match self.info.calibration {
            "stats" => CalibrationNeed::Stats,
            "samples" => CalibrationNeed::Samples,
            "hessian" => CalibrationNeed::Hessian,
            _ => CalibrationNeed::None,
        }
    }

    /// The calibration `quantize` needs with these options: the plugin's answer (ABI 1.3),
    /// or its declared kind for older plugins. Only none or the declared kind are accepted.
    fn calibration_for(&self, opts_json: &str) -> Result<CalibrationNeed> {
        let Some(ext) = self.ext3 else { return Ok(self.calibration()) };
        let mut kind = u32::MAX;
        // SAFETY: the 1.3 extension was validated by its size in `load`; pointers are valid.
        self.call("calibration_for", |err| unsafe {
            ((*ext).calibration_for)(llq_str(opts_json), &mut kind, err)
        })?;
        match kind {
            CALIBRATION_NONE => Ok(CalibrationNeed::None),
            k if k == self.d().calibration => Ok(self.calibration()),
            k => bail!(
                "plugin {} ({}): calibration_for returned kind {k}, neither none nor its declared {}",
                self.info.name,
                self.info.path.display(),
                self.info.calibration
            ),
        }
    }

    /// Validate `--opt k=v` pairs against the plugin's declared options (unknown names and
    /// ill-typed values are errors naming the plugin file).
    pub fn configure(&self, pairs: &[(String, String)]) -> Result<QuantConfig<'_>> {
        let map: serde_json::Map<String, serde_json::Value> =
            pairs.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone()))).collect();
        let json = serde_json::Value::Object(map).to_string();
        let options = Options::parse(&self.info.name, &self.info.options, &json)
            .map_err(|e| anyhow!("plugin {}: {e}", self.info.path.display()))?;
        let need = self.calibration_for(&json)?;
        Ok(QuantConfig { plugin: self, json, options, need })
    }

    fn call(&self, what: &str, f: impl FnOnce(*mut LlqErrorBuf) -> LlqStatus) -> Result<()> {
        let mut buf = vec![0u8; ERR_CAP];
        let mut err = LlqErrorBuf { ptr: buf.as_mut_ptr(), cap: buf.len(), len: 0 };
        let status = f(&mut err);
        if status == LlqStatus::Ok {
            return Ok(());
        }
        let msg = String::from_utf8_lossy(&buf[..err.len.min(ERR_CAP)]).into_owned();
        let kind = match status {
            LlqStatus::Panic => "panicked in",
            _ => "failed in",
        };
        bail!("plugin {} ({}) {kind} {what}: {msg}", self.info.name, self.info.path.display())
    }

    /// Bytes the plugin declares for a packed `rows × cols` matrix.
    pub fn packed_size(&self, rows: usize, cols: usize, opts_json: &str) -> Result<u64> {
        let mut n = 0u64;
        // SAFETY: all pointers are valid for the call.
        self.call("packed_size", |err| unsafe {
            (self.d().packed_size)(rows as u64, cols as u64, llq_str(opts_json), &mut n, err)
        })?;
        Ok(n)
    }

    /// Quantize one matrix (row-major f32, `rows` outputs × `cols` inputs).
    pub fn quantize(
        &self,
        layer: &str,
        rows: usize,
        cols: usize,
        data: &[f32],
        opts_json: &str,
        calib: Option<&CalibrationData>,
    ) -> Result<PackedMatrix> {
        if data.len() != rows * cols {
            bail!("layer {layer}: {} values for a {rows}×{cols} matrix", data.len());
        }
        if calib.is_some_and(|c| !c.fits(cols)) {
            bail!("layer {layer}: calibration data does not fit its {cols} input columns");
        }
        let expected = self.packed_size(rows, cols, opts_json)?;
        let w =
            LlqWeights { layer: llq_str(layer), rows: rows as u64, cols: cols as u64, data: data.as_ptr() };
        let c = calib.map(CalibrationData::abi);
        let cptr = c.as_ref().map_or(std::ptr::null(), |c| c as *const LlqCalibration);
        let mut out = LlqQuantized::empty();
        // SAFETY: all pointers are valid for the call; `out` is written by the plugin.
        self.call(&format!("quantize (layer {layer})"), |err| unsafe {
            (self.d().quantize)(&w, llq_str(opts_json), cptr, &mut out, err)
        })?;
        // Copy out, then release on the plugin's side whatever happens.
        let copied = unsafe { self.copy_quantized(&out) };
        // SAFETY: the handle came from this plugin's quantize and is released once.
        unsafe { (self.d().release_quantized)(out.handle) };
        let (buffers, metadata) = copied.with_context(|| {
            format!("plugin {}: layer {layer}: malformed quantize result", self.info.name)
        })?;
        let packed = PackedMatrix { rows, cols, buffers, metadata };
        if packed.bytes() != expected {
            bail!(
                "plugin {} returned {} bytes for layer {layer} ({rows}×{cols}) but declared packed_size {expected}",
                self.info.name,
                packed.bytes()
            );
        }
        Ok(packed)
    }

    /// Ask the plugin for input scales for `g` (ABI 1.2); `None` when it leaves the group as
    /// it is or does not search scales. The scales are checked: one per input column, each
    /// finite and positive.
    pub fn search_scales(&self, g: &LayerGroup, opts_json: &str) -> Result<Option<ChosenScales>> {
        let Some(ext) = self.ext.filter(|_| self.info.group_scales) else { return Ok(None) };
        let cols = g.calibration.abs_max.len();
        if g.layers.is_empty() || g.layers.iter().any(|l| l.cols != cols || l.data.len() != l.rows * l.cols) {
            bail!("layer group after {}: every layer must have {cols} input columns", g.producer);
        }
        if !g.calibration.fits(cols) {
            bail!("layer group after {}: calibration data does not fit {cols} input columns", g.producer);
        }
        let layers: Vec<LlqWeights> = g
            .layers
            .iter()
            .map(|l| LlqWeights {
                layer: llq_str(l.name),
                rows: l.rows as u64,
                cols: l.cols as u64,
                data: l.data.as_ptr(),
            })
            .collect();
        let calib = g.calibration.abi();
        let group = LlqLayerGroup {
            producer: llq_str(g.producer),
            producer_kind: match g.producer_kind {
                llq_sdk::Producer::Norm => PRODUCER_NORM,
                llq_sdk::Producer::Linear => PRODUCER_LINEAR,
            },
            layers: layers.as_ptr(),
            n_layers: layers.len(),
            calibration: &calib,
        };
        let mut scales = vec![0f32; cols];
        let mut found = 0u32;
        let mut info = vec![0u8; ERR_CAP];
        let mut info_buf = LlqErrorBuf { ptr: info.as_mut_ptr(), cap: info.len(), len: 0 };
        // SAFETY: every pointer is valid for the call; `scales` holds `cols` f32s; the 1.2
        // descriptor was checked in `load`.
        self.call(&format!("search_scales (group after {})", g.producer), |err| unsafe {
            ((*ext).search_scales)(
                &group,
                llq_str(opts_json),
                scales.as_mut_ptr(),
                cols,
                &mut found,
                &mut info_buf,
                err,
            )
        })?;
        if found == 0 {
            return Ok(None);
        }
        if let Some((i, v)) = scales.iter().enumerate().find(|(_, v)| !(v.is_finite() && **v > 0.0)) {
            bail!(
                "plugin {}: search_scales gave input column {i} of the group after {} the scale {v}; scales must be finite and positive",
                self.info.name,
                g.producer
            );
        }
        let text = String::from_utf8_lossy(&info[..info_buf.len.min(ERR_CAP)]).into_owned();
        let info = if text.trim().is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&text).with_context(|| {
                format!("plugin {}: search_scales info is not JSON: {text:.80}", self.info.name)
            })?
        };
        Ok(Some(ChosenScales { scales, info }))
    }

    /// # Safety: `out` must be a result just produced by this plugin's `quantize`.
    unsafe fn copy_quantized(&self, out: &LlqQuantized) -> Result<(Buffers, String)> {
        if out.n_buffers > 0 && out.buffers.is_null() {
            bail!("{} buffers behind a null pointer", out.n_buffers);
        }
        let descs =
            if out.n_buffers == 0 { &[][..] } else { std::slice::from_raw_parts(out.buffers, out.n_buffers) };
        let mut buffers: Buffers = Vec::with_capacity(descs.len());
        for b in descs {
            let name = raw_str(b.name).context("buffer name")?;
            if name.is_empty() || buffers.iter().any(|(n, _)| n == &name) {
                bail!("buffer name `{name}` is empty or repeated");
            }
            if b.len > 0 && b.data.is_null() {
                bail!("buffer `{name}` has {} bytes behind a null pointer", b.len);
            }
            let data = if b.len == 0 { vec![] } else { std::slice::from_raw_parts(b.data, b.len).to_vec() };
            buffers.push((name, data));
        }
        let metadata = raw_str(out.metadata).context("metadata")?;
        serde_json::from_str::<serde_json::Value>(&metadata)
            .with_context(|| format!("metadata is not JSON: {metadata:.80}"))?;
        Ok((buffers, metadata))
    }

    fn with_packed<T>(&self, p: &PackedMatrix, f: impl FnOnce(&LlqPacked) -> Result<T>) -> Result<T> {
        let descs: Vec<LlqBuffer> = p
            .buffers
            .iter()
            .map(|(n, b)| LlqBuffer { name: llq_str(n), data: b.as_ptr(), len: b.len() })
            .collect();
        let packed = LlqPacked {
            rows: p.rows as u64,
            cols: p.cols as u64,
            buffers: descs.as_ptr(),
            n_buffers: descs.len(),
            metadata: llq_str(&p.metadata),
        };
        f(&packed)
    }

    /// Dequantize to row-major f32.
    pub fn dequantize(&self, p: &PackedMatrix) -> Result<Vec<f32>> {
        let n = p.rows * p.cols;
        let mut out = vec![0f32; n];
        let mut written = 0usize;
        self.with_packed(p, |packed| {
            // SAFETY: pointers valid for the call; `out` holds `n` f32s.
            self.call("dequantize", |err| unsafe {
                (self.d().dequantize)(packed, out.as_mut_ptr(), n, &mut written, err)
            })
        })?;
        if written != n {
            bail!(
                "plugin {} dequantize wrote {written} values for a {}×{} matrix",
                self.info.name,
                p.rows,
                p.cols
            );
        }
        Ok(out)
    }

    /// Reference `x · Wᵀ` for `m` rows of `x`, when the plugin has its own matmul semantics.
    pub fn matmul(&self, p: &PackedMatrix, x: &[f32], m: usize) -> Result<Vec<f32>> {
        if !self.info.has_matmul {
            bail!("plugin {} has no matmul", self.info.name);
        }
        if x.len() != m * p.cols {
            bail!("matmul input has {} values, expected {m}×{}", x.len(), p.cols);
        }
        let mut out = vec![0f32; m * p.rows];
        self.with_packed(p, |packed| {
            // SAFETY: pointers valid for the call.
            self.call("matmul", |err| unsafe {
                (self.d().matmul)(packed, x.as_ptr(), m as u64, out.as_mut_ptr(), out.len(), err)
            })
        })?;
        Ok(out)
    }
}

unsafe fn raw_str(s: LlqStr) -> Result<String> {
    if s.len == 0 {
        return Ok(String::new());
    }
    if s.ptr.is_null() {
        bail!("null string");
    }
    Ok(std::str::from_utf8(std::slice::from_raw_parts(s.ptr, s.len)).context("not UTF-8")?.to_string())
}

/// A plugin with the options resolved for one run: what every quantizing command passes
/// around instead of a plugin, its option JSON and its canonical options separately.
pub struct QuantConfig<'p> {
    pub plugin: &'p Plugin,
    /// The options as given, the JSON object passed across the ABI.
    json: String,
    /// Every option with defaults filled in (what results record).
    options: Options,
    /// The calibration these options need.
    need: CalibrationNeed,
}

impl<'p> QuantConfig<'p> {
    pub fn name(&self) -> &str {
        self.plugin.name()
    }

    /// These options with `overrides` set on top (later pairs win), checked by the plugin's
    /// option specs like `--opt`.
    pub fn with_overrides(&self, overrides: &[(String, String)]) -> Result<QuantConfig<'p>> {
        let mut map: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&self.json).context("the options given")?;
        for (k, v) in overrides {
            map.insert(k.clone(), serde_json::Value::String(v.clone()));
        }
        let pairs: Vec<(String, String)> =
            map.into_iter().map(|(k, v)| (k, v.as_str().unwrap_or_default().to_string())).collect();
        self.plugin.configure(&pairs)
    }

    /// The calibration `quantize` needs with these options (ABI 1.3 `calibration_for`; the
    /// plugin's declared kind for older plugins).
    pub fn calibration(&self) -> CalibrationNeed {
        self.need
    }

    /// The full option set as a canonical JSON object (defaults filled in).
    pub fn canonical(&self) -> String {
        self.options.to_json()
    }

    pub fn packed_size(&self, rows: usize, cols: usize) -> Result<u64> {
        self.plugin.packed_size(rows, cols, &self.json)
    }

    /// Quantize one matrix with these options.
    pub fn quantize(
        &self,
        layer: &str,
        rows: usize,
        cols: usize,
        data: &[f32],
        calib: Option<&CalibrationData>,
    ) -> Result<PackedMatrix> {
        self.plugin.quantize(layer, rows, cols, data, &self.json, calib)
    }

    pub fn dequantize(&self, p: &PackedMatrix) -> Result<Vec<f32>> {
        self.plugin.dequantize(p)
    }

    /// Input scales for a layer group with these options (see [`Plugin::search_scales`]).
    pub fn search_scales(&self, g: &LayerGroup) -> Result<Option<ChosenScales>> {
        self.plugin.search_scales(g, &self.json)
    }
}
