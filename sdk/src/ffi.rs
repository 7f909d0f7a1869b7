//! The plugin side of the C ABI: thunks that turn [`QuantMethod`] calls into `extern "C"`
//! functions, catch panics, and own the memory they hand out. Used by [`export_plugin!`].

use crate::abi::*;
use crate::{
    Calibration, CalibrationNeed, LayerGroup, Options, PackedView, PluginError, Producer, QuantMethod,
    Weights,
};
use std::ffi::{c_char, c_void, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// The descriptor plus the strings it points to; lives in a `static` of the plugin.
pub struct Descriptor {
    desc: LlqPluginV1_4,
    _strings: Vec<CString>,
}

// SAFETY: the descriptor is immutable after construction and its pointers refer to the
// owned `CString`s (or static functions), which live as long as the descriptor.
unsafe impl Send for Descriptor {}
unsafe impl Sync for Descriptor {}

fn cstring(s: &str) -> CString {
    CString::new(s.replace('\0', " ")).expect("NUL bytes were replaced")
}

impl Descriptor {
    pub fn new<T: QuantMethod>() -> Descriptor {
        let m = T::default();
        let options = serde_json::to_string(&m.options()).unwrap_or_else(|_| "[]".into());
        let kernels = m.cuda_kernels();
        let mut strings =
            vec![cstring(T::NAME), cstring(T::VERSION), cstring(T::DESCRIPTION), cstring(&options)];
        let (src, kjson) = match &kernels {
            Some(k) => {
                strings.push(cstring(&k.source));
                strings.push(cstring(&serde_json::to_string(k).unwrap_or_default()));
                (strings[4].as_ptr(), strings[5].as_ptr())
            }
            None => (std::ptr::null::<c_char>(), std::ptr::null::<c_char>()),
        };
        let base = LlqPluginV1 {
            abi_version: ABI_VERSION,
            struct_size: std::mem::size_of::<LlqPluginV1_4>() as u32,
            name: strings[0].as_ptr(),
            version: strings[1].as_ptr(),
            description: strings[2].as_ptr(),
            options_json: strings[3].as_ptr(),
            calibration: calibration_kind(T::CALIBRATION),
            has_matmul: T::HAS_MATMUL as u32,
            cuda_source: src,
            cuda_kernels_json: kjson,
            packed_size: packed_size::<T>,
            quantize: quantize::<T>,
            release_quantized,
            dequantize: dequantize::<T>,
            matmul: matmul::<T>,
        };
        let v1_2 =
            LlqPluginV1_2 { base, group_scales: T::GROUP_SCALES as u32, search_scales: search_scales::<T> };
        let v1_3 = LlqPluginV1_3 { base: v1_2, calibration_for: calibration_for::<T> };
        let desc = LlqPluginV1_4 { base: v1_3, set_host_services };
        Descriptor { desc, _strings: strings }
    }

    /// The descriptor as the entry point returns it (its v1 prefix; `struct_size` tells a
    /// host that the 1.2, 1.3 and 1.4 fields follow).
    pub fn as_ptr(&self) -> *const LlqPluginV1 {
        &self.desc.base.base.base
    }
}

fn calibration_kind(need: CalibrationNeed) -> u32 {
    match need {
        CalibrationNeed::None => CALIBRATION_NONE,
        CalibrationNeed::Stats => CALIBRATION_STATS,
        CalibrationNeed::Samples => CALIBRATION_SAMPLES,
        CalibrationNeed::Hessian => CALIBRATION_HESSIAN,
    }
}

unsafe extern "C" fn calibration_for<T: QuantMethod>(
    options: LlqStr,
    kind: *mut u32,
    err: *mut LlqErrorBuf,
) -> LlqStatus {
    guard(err, || {
        let m = T::default();
        let o = options_of(&m, options)?;
        let need = m.calibration_for(&o);
        let widest = calibration_kind(T::CALIBRATION);
        let k = calibration_kind(need);
        // The contract: none, or the descriptor's own kind (what older hosts give every run).
        if k != CALIBRATION_NONE && k != widest {
            return Err(format!(
                "{}: calibration_for returned {need:?}; it may return only None or its CALIBRATION {:?}",
                T::NAME,
                T::CALIBRATION
            )
            .into());
        }
        // SAFETY: the host passes a valid out-pointer for the call.
        unsafe { kind.as_mut() }.map(|p| *p = k).ok_or("null kind")?;
        Ok(())
    })
}

/// ABI 1.4: keep the host's services for [`crate::services`]. Nothing here can panic.
unsafe extern "C" fn set_host_services(services: *const LlqHostServices) {
    crate::services::set(services);
}

/// Run `f`, catching panics, and write any error into `err`.
fn guard(err: *mut LlqErrorBuf, f: impl FnOnce() -> crate::Result<()>) -> LlqStatus {
    let (status, msg) = match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => return LlqStatus::Ok,
        Ok(Err(PluginError(m))) => (LlqStatus::Error, m),
        Err(payload) => {
            let m = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic payload".into());
            (LlqStatus::Panic, format!("plugin panicked: {m}"))
        }
    };
    // SAFETY: the host passes a valid, writable error buffer (or null).
    unsafe { LlqErrorBuf::write(err, &msg) };
    status
}

/// # Safety: `s` must describe valid UTF-8-or-not bytes for the call's duration.
unsafe fn str_of<'a>(s: LlqStr) -> crate::Result<&'a str> {
    if s.len == 0 {
        return Ok("");
    }
    if s.ptr.is_null() {
        return Err("null string pointer".into());
    }
    std::str::from_utf8(std::slice::from_raw_parts(s.ptr, s.len)).map_err(|_| "string is not UTF-8".into())
}

unsafe fn slice_of<'a, T>(p: *const T, n: usize, what: &str) -> crate::Result<&'a [T]> {
    if n == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(PluginError(format!("{what}: null pointer for {n} elements")));
    }
    Ok(std::slice::from_raw_parts(p, n))
}

fn options_of<T: QuantMethod>(m: &T, opts: LlqStr) -> crate::Result<Options> {
    // SAFETY: host-provided string, valid for the call.
    let json = unsafe { str_of(opts)? };
    Options::parse(T::NAME, &m.options(), json)
}

fn elements(rows: u64, cols: u64) -> crate::Result<usize> {
    rows.checked_mul(cols)
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| PluginError(format!("matrix {rows}×{cols} is too large")))
}

unsafe extern "C" fn packed_size<T: QuantMethod>(
    rows: u64,
    cols: u64,
    options: LlqStr,
    out_bytes: *mut u64,
    err: *mut LlqErrorBuf,
) -> LlqStatus {
    guard(err, || {
        let m = T::default();
        let o = options_of(&m, options)?;
        let n = m.packed_size(rows, cols, &o)?;
        // SAFETY: host-provided out pointer.
        unsafe { *out_bytes = n };
        Ok(())
    })
}

/// # Safety: `w` must describe valid weights for the call's duration.
unsafe fn weights_of<'a, T: QuantMethod>(w: &LlqWeights) -> crate::Result<Weights<'a>> {
    let layer = unsafe { str_of(w.layer)? };
    // An empty matrix has nothing to quantize, and group and block arithmetic divides by its
    // sizes: refused here once, for every method (`plugins check` probes it).
    if w.rows == 0 || w.cols == 0 {
        return Err(PluginError(format!(
            "{}: layer `{layer}` is an empty {}×{} matrix",
            T::NAME,
            w.rows,
            w.cols
        )));
    }
    let n = elements(w.rows, w.cols)?;
    let data = unsafe { slice_of(w.data, n, "weights")? };
    if let Some(i) = data.iter().position(|v| !v.is_finite()) {
        return Err(PluginError(format!(
            "{}: layer `{layer}` has a non-finite weight ({}) at row {}, column {}",
            T::NAME,
            data[i],
            i / w.cols as usize,
            i % w.cols as usize
        )));
    }
    Ok(Weights { layer, rows: w.rows as usize, cols: w.cols as usize, data })
}

/// # Safety: `c` must describe valid calibration data for the call's duration.
unsafe fn calibration_of<'a>(c: &LlqCalibration) -> crate::Result<Calibration<'a>> {
    let cols = c.cols as usize;
    let opt = |p: *const f32, what: &str| -> crate::Result<&'a [f32]> {
        if p.is_null() {
            Ok(&[])
        } else {
            unsafe { slice_of(p, cols, what) }
        }
    };
    Ok(Calibration {
        n_tokens: c.n_tokens,
        abs_max: unsafe { slice_of(c.abs_max, cols, "calibration abs_max")? },
        mean_sq: unsafe { slice_of(c.mean_sq, cols, "calibration mean_sq")? },
        samples: unsafe { slice_of(c.samples, c.n_samples as usize * cols, "calibration samples")? },
        n_samples: c.n_samples as usize,
        hessian: if c.hessian.is_null() {
            None
        } else {
            Some(unsafe { slice_of(c.hessian, cols * cols, "calibration hessian")? })
        },
        abs_mean: opt(c.abs_mean, "calibration abs_mean")?,
    })
}

unsafe extern "C" fn search_scales<T: QuantMethod>(
    group: *const LlqLayerGroup,
    options: LlqStr,
    scales: *mut f32,
    cols: usize,
    found: *mut u32,
    info: *mut LlqErrorBuf,
    err: *mut LlqErrorBuf,
) -> LlqStatus {
    guard(err, || {
        let m = T::default();
        let o = options_of(&m, options)?;
        // SAFETY: the host passes a valid group for the call.
        let g = unsafe { group.as_ref() }.ok_or("null layer group")?;
        let c = unsafe { g.calibration.as_ref() }.ok_or("layer group without calibration data")?;
        let calibration = unsafe { calibration_of(c)? };
        let descs = unsafe { slice_of(g.layers, g.n_layers, "group layers")? };
        let layers =
            descs.iter().map(|w| unsafe { weights_of::<T>(w) }).collect::<crate::Result<Vec<_>>>()?;
        if layers.is_empty() || layers.iter().any(|w| w.cols != cols) || c.cols as usize != cols {
            return Err(PluginError(format!(
                "layer group: every layer and the calibration must be {cols} wide"
            )));
        }
        let producer_kind = match g.producer_kind {
            PRODUCER_NORM => Producer::Norm,
            PRODUCER_LINEAR => Producer::Linear,
            k => return Err(PluginError(format!("layer group: unknown producer kind {k}"))),
        };
        let group =
            LayerGroup { producer: unsafe { str_of(g.producer)? }, producer_kind, layers, calibration };
        let chosen = m.search_scales(&group, &o)?;
        unsafe { *found = chosen.is_some() as u32 };
        if let Some(s) = chosen {
            if s.scales.len() != cols {
                return Err(PluginError(format!(
                    "{}: {} scales for {cols} input columns",
                    T::NAME,
                    s.scales.len()
                )));
            }
            // SAFETY: the host's `scales` holds `cols` f32s.
            unsafe { std::slice::from_raw_parts_mut(scales, cols) }.copy_from_slice(&s.scales);
            unsafe { LlqErrorBuf::write(info, &s.info.to_string()) };
        }
        Ok(())
    })
}

/// Memory behind an `LlqQuantized` result.
struct Owned {
    names: Vec<String>,
    bufs: Vec<Vec<u8>>,
    descs: Vec<LlqBuffer>,
    metadata: String,
}

unsafe extern "C" fn quantize<T: QuantMethod>(
    weights: *const LlqWeights,
    options: LlqStr,
    calibration: *const LlqCalibration,
    out: *mut LlqQuantized,
    err: *mut LlqErrorBuf,
) -> LlqStatus {
    guard(err, || {
        let m = T::default();
        let o = options_of(&m, options)?;
        // SAFETY: the host passes valid weights and (optionally) calibration for the call.
        let w = unsafe { weights.as_ref() }.ok_or("null weights")?;
        let weights = unsafe { weights_of::<T>(w)? };
        let calib = match unsafe { calibration.as_ref() } {
            None => None,
            Some(c) => Some(unsafe { calibration_of(c)? }),
        };
        let q = m.quantize(&weights, &o, calib.as_ref())?;
        let mut owned = Box::new(Owned {
            names: q.buffers.iter().map(|(n, _)| n.clone()).collect(),
            bufs: q.buffers.into_iter().map(|(_, b)| b).collect(),
            descs: vec![],
            metadata: q.metadata.to_string(),
        });
        let descs: Vec<LlqBuffer> = owned
            .names
            .iter()
            .zip(&owned.bufs)
            .map(|(n, b)| LlqBuffer {
                name: LlqStr { ptr: n.as_ptr(), len: n.len() },
                data: b.as_ptr(),
                len: b.len(),
            })
            .collect();
        owned.descs = descs;
        let result = LlqQuantized {
            buffers: owned.descs.as_ptr(),
            n_buffers: owned.descs.len(),
            metadata: LlqStr { ptr: owned.metadata.as_ptr(), len: owned.metadata.len() },
            handle: Box::into_raw(owned) as *mut c_void,
        };
        // SAFETY: host-provided out pointer.
        unsafe { out.write(result) };
        Ok(())
    })
}

unsafe extern "C" fn release_quantized(handle: *mut c_void) {
    if !handle.is_null() {
        // SAFETY: `handle` came from `Box::into_raw` in `quantize` and is released once.
        let _ = catch_unwind(|| drop(unsafe { Box::from_raw(handle as *mut Owned) }));
    }
}

/// # Safety: `p` must point to a valid `LlqPacked` for the call's duration.
unsafe fn packed_view<'a>(p: *const LlqPacked) -> crate::Result<PackedView<'a>> {
    let p = unsafe { p.as_ref() }.ok_or("null packed matrix")?;
    let descs = unsafe { slice_of(p.buffers, p.n_buffers, "packed buffers")? };
    let mut buffers = Vec::with_capacity(descs.len());
    for d in descs {
        buffers.push((unsafe { str_of(d.name)? }, unsafe { slice_of(d.data, d.len, "packed buffer")? }));
    }
    let meta = unsafe { str_of(p.metadata)? };
    let metadata = if meta.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_str(meta).map_err(|e| PluginError(format!("packed metadata is not JSON: {e}")))?
    };
    Ok(PackedView { rows: p.rows as usize, cols: p.cols as usize, buffers, metadata })
}

unsafe extern "C" fn dequantize<T: QuantMethod>(
    packed: *const LlqPacked,
    out: *mut f32,
    out_len: usize,
    written: *mut usize,
    err: *mut LlqErrorBuf,
) -> LlqStatus {
    guard(err, || {
        let view = unsafe { packed_view(packed)? };
        let n = elements(view.rows as u64, view.cols as u64)?;
        if out_len != n {
            return Err(PluginError(format!(
                "output has {out_len} slots for a {}×{} matrix",
                view.rows, view.cols
            )));
        }
        if out.is_null() && n > 0 {
            return Err("null output buffer".into());
        }
        // SAFETY: the host's output buffer holds `out_len` f32s.
        let out = unsafe { std::slice::from_raw_parts_mut(out, n) };
        T::default().dequantize(&view, out)?;
        unsafe { *written = n };
        Ok(())
    })
}

unsafe extern "C" fn matmul<T: QuantMethod>(
    packed: *const LlqPacked,
    x: *const f32,
    m: u64,
    out: *mut f32,
    out_len: usize,
    err: *mut LlqErrorBuf,
) -> LlqStatus {
    guard(err, || {
        if !T::HAS_MATMUL {
            return Err(PluginError(format!("{} has no matmul", T::NAME)));
        }
        let view = unsafe { packed_view(packed)? };
        let m = m as usize;
        let x = unsafe { slice_of(x, m * view.cols, "matmul input")? };
        if out_len != m * view.rows || (out.is_null() && out_len > 0) {
            return Err(PluginError(format!(
                "matmul output has {out_len} slots, expected {}",
                m * view.rows
            )));
        }
        let out = unsafe { std::slice::from_raw_parts_mut(out, out_len) };
        T::default().matmul(&view, x, m, out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{OptionKind, OptionSpec, Options, PackedView, Quantized, Result, Weights};

    /// Declares Stats; answers per option `need`: none, stats, or (breaking the contract) hessian.
    #[derive(Default)]
    struct PerOption;
    impl QuantMethod for PerOption {
        const NAME: &'static str = "per-option";
        const VERSION: &'static str = "0";
        const DESCRIPTION: &'static str = "test";
        const CALIBRATION: CalibrationNeed = CalibrationNeed::Stats;
        fn options(&self) -> Vec<OptionSpec> {
            vec![OptionSpec::new("need", OptionKind::String, "none", "")
                .choices(&["none", "stats", "hessian"])]
        }
        fn calibration_for(&self, o: &Options) -> CalibrationNeed {
            match o.get_str("need") {
                Ok("stats") => CalibrationNeed::Stats,
                Ok("hessian") => CalibrationNeed::Hessian,
                _ => CalibrationNeed::None,
            }
        }
        fn packed_size(&self, _r: u64, _c: u64, _o: &Options) -> Result<u64> {
            Ok(0)
        }
        fn quantize(&self, _w: &Weights, _o: &Options, _c: Option<&crate::Calibration>) -> Result<Quantized> {
            Ok(Quantized::default())
        }
        fn dequantize(&self, _p: &PackedView, _out: &mut [f32]) -> Result<()> {
            Ok(())
        }
    }

    fn ask(json: &str) -> std::result::Result<u32, String> {
        let d = Descriptor::new::<PerOption>();
        assert_eq!(d.desc.base.base.base.struct_size as usize, std::mem::size_of::<LlqPluginV1_4>());
        let mut buf = vec![0u8; 512];
        let mut err = LlqErrorBuf { ptr: buf.as_mut_ptr(), cap: buf.len(), len: 0 };
        let mut kind = u32::MAX;
        let opts = LlqStr { ptr: json.as_ptr(), len: json.len() };
        // SAFETY: valid pointers for the call.
        match unsafe { (d.desc.base.calibration_for)(opts, &mut kind, &mut err) } {
            LlqStatus::Ok => Ok(kind),
            _ => Err(String::from_utf8_lossy(&buf[..err.len]).into_owned()),
        }
    }

    #[test]
    fn calibration_for_answers_none_or_the_declared_kind_and_nothing_else() {
        assert_eq!(ask("{}"), Ok(CALIBRATION_NONE));
        assert_eq!(ask(r#"{"need": "stats"}"#), Ok(CALIBRATION_STATS));
        let e = ask(r#"{"need": "hessian"}"#).unwrap_err();
        assert!(e.contains("may return only None or its CALIBRATION Stats"), "{e}");
        assert!(ask(r#"{"need": "lots"}"#).unwrap_err().contains("need"));
    }
}
