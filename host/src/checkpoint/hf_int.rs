//! Hugging Face GPTQ and AWQ checkpoints ↔ the int-group format (`llq_sdk::quant::intgroup`:
//! per-row bit streams of codes, f16 scales and u8 zero points per (row, group), `g_idx` for
//! act-order).
//!
//! - GPTQ (AutoGPTQ's `QuantLinear.pack`, the layout transformers/optimum and GPTQModel load
//!   as `checkpoint_format: "gptq"`): `qweight` int32 `[in·bits/32, out]`, each output
//!   column a little-endian bit stream of its codes along the input (so for 3 bits a code may
//!   straddle two words); `qzeros` int32 `[groups, out·bits/32]`, each group a bit stream of
//!   the zero points *minus one* along the output (AutoGPTQ's v1 offset, which GPTQModel's
//!   `gptq_v2` drops); `scales` f16 `[groups, out]`; `g_idx` int32 `[in]`, the group of each
//!   input column. Dequantization: `scales[g_idx[c], j] · (q[c, j] − (z[g_idx[c], j] + 1))`.
//!   A zero point of 0 has no v1 form (AutoGPTQ's packer wraps it to −1 and corrupts its
//!   neighbours), so such layers are refused on export; `sym=true` never makes one.
//! - AWQ (AutoAWQ's `WQLinear_GEMM`, `version: "gemm"`): 4 bits only; `qweight` int32
//!   `[in, out/8]` and `qzeros` int32 `[in/group, out/8]` hold eight output channels a word,
//!   channel `8j + AWQ_ORDER[k]` in bits `4k..4k+4` (AWQ_ORDER = 0 2 4 6 1 3 5 7); `scales`
//!   f16 `[in/group, out]`; no zero-point offset. Dequantization: `(q − z) · s`.
//!
//! Codes, scales and zero points move one to one (nothing is rounded again), so what the
//! producing library dequantizes in f16 is llq's f32 dequantization rounded to f16 (a f16
//! scale times an integer below 2¹¹ is exact in f32).

use super::stored::{buffer, metadata, packed_layers, Stored, StoredLayer};
use crate::loader::hf::{float_tensor, write_hf_dir, HfParts, RawTensor, TensorBytes};
use crate::loader::LoadedModel;
use crate::model::config::LM_HEAD;
use crate::plugin::PackedMatrix;
use crate::quant::ModelQuantization;
use anyhow::{anyhow, bail, Context, Result};
use llq_sdk::quant::intgroup::{GroupParams, IntGroupMatrix, IntGroupSpec};
use safetensors::Dtype;
use std::path::Path;

/// Plugins storing the int-group format with integer zero points.
pub const METHODS: &[&str] = &["gptq", "rtn", "awq"];

/// AutoAWQ's packing order: nibble `k` of a word holds channel `AWQ_ORDER[k]` of its eight.
const AWQ_ORDER: [usize; 8] = [0, 2, 4, 6, 1, 3, 5, 7];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Gptq,
    Awq,
}

/// One layer in the int-group format's terms, unpacked.
struct Unpacked {
    rows: usize,
    cols: usize,
    bits: u32,
    group_size: usize,
    /// Codes, row-major `rows × cols`.
    codes: Vec<u32>,
    /// f16 bits and zero points, `rows × groups`.
    scales: Vec<u16>,
    zeros: Vec<u32>,
    g_idx: Option<Vec<u32>>,
}

impl Unpacked {
    fn groups(&self) -> usize {
        self.cols.div_ceil(self.group_size)
    }

    fn from_packed(p: &PackedMatrix) -> Result<Self> {
        let meta = metadata(p)?;
        if meta["format"] != "int-group" {
            bail!("packed matrix is not in the int-group format");
        }
        if meta.get("zero").is_some_and(|z| z == "f16") {
            bail!("its zero points are real numbers (f16; HQQ), which GPTQ and AWQ checkpoints store as integers");
        }
        let bits = meta["bits"].as_u64().context("metadata bits")? as u32;
        let group_size = meta["group_size"].as_u64().context("metadata group_size")? as usize;
        let (rows, cols) = (p.rows, p.cols);
        let groups = cols.div_ceil(group_size);
        let words = (cols * bits as usize).div_ceil(32);
        let cw = buffer(p, "codes")?;
        if cw.len() != rows * words * 4 {
            bail!("codes buffer of {} bytes for {rows}×{cols} at {bits} bits", cw.len());
        }
        let all: Vec<u32> =
            cw.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        let mut codes = vec![0u32; rows * cols];
        for (r, row) in all.chunks_exact(words).enumerate() {
            for c in 0..cols {
                codes[r * cols + c] = stream_value(row, c, bits as usize);
            }
        }
        let s = buffer(p, "scales")?;
        let z = buffer(p, "zeros")?;
        if s.len() != rows * groups * 2 || z.len() != rows * groups {
            bail!("scales/zeros buffers do not fit {rows} rows × {groups} groups");
        }
        let g_idx = if meta["g_idx"].as_bool().unwrap_or(false) {
            Some(
                buffer(p, "g_idx")?
                    .chunks_exact(4)
                    .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            )
        } else {
            None
        };
        Ok(Unpacked {
            rows,
            cols,
            bits,
            group_size,
            codes,
            scales: s.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect(),
            zeros: z.iter().map(|&v| v as u32).collect(),
            g_idx,
        })
    }

    /// The int-group packed form (the byte layout of `IntGroupMatrix::pack`).
    fn to_packed(&self, sym: bool) -> Result<PackedMatrix> {
        if let Some(z) = self.zeros.iter().find(|&&z| z > 255) {
            bail!("zero point {z} does not fit the int-group format's u8");
        }
        if let Some(q) = self.codes.iter().find(|&&q| q >> self.bits != 0) {
            bail!("code {q} does not fit {} bits", self.bits);
        }
        // The SDK's packer: the same bytes the rtn/gptq/awq plugins store (f16 scales go
        // through f64 and back unchanged).
        let m = IntGroupMatrix {
            rows: self.rows,
            cols: self.cols,
            spec: IntGroupSpec {
                bits: self.bits,
                group_size: self.group_size,
                sym,
                whole_row: self.group_size >= self.cols,
            },
            codes: self.codes.iter().map(|&q| q as u8).collect(),
            params: self
                .scales
                .iter()
                .zip(&self.zeros)
                .map(|(&s, &z)| GroupParams { scale: half::f16::from_bits(s).to_f64(), zero: z as f64 })
                .collect(),
            g_idx: self.g_idx.clone(),
            zero_f16: false,
        };
        let q = m.pack();
        Ok(PackedMatrix {
            rows: self.rows,
            cols: self.cols,
            buffers: q.buffers,
            metadata: q.metadata.to_string(),
        })
    }
}

/// Values of `bits` bits at consecutive positions of a little-endian bit stream of u32 words.
fn pack_stream(values: impl Iterator<Item = u32>, bits: usize, words: usize) -> Vec<u32> {
    let mut out = vec![0u32; words];
    for (i, v) in values.enumerate() {
        let bit = i * bits;
        let spread = (v as u64) << (bit % 32);
        out[bit / 32] |= spread as u32;
        if bit % 32 + bits > 32 {
            out[bit / 32 + 1] |= (spread >> 32) as u32;
        }
    }
    out
}

/// Value `i` of `bits` bits from a little-endian bit stream of u32 words.
fn stream_value(words: &[u32], i: usize, bits: usize) -> u32 {
    let bit = i * bits;
    let lo = words[bit / 32] as u64;
    let hi = words.get(bit / 32 + 1).copied().unwrap_or(0) as u64;
    (((lo | (hi << 32)) >> (bit % 32)) & ((1u64 << bits) - 1)) as u32
}

/// The quantization options every layer of an export shares (HF configs are global).
struct Global {
    bits: u32,
    group_size: i64,
    sym: bool,
    act_order: bool,
}

/// Write `m` quantized by an int-group plugin as a GPTQ or AWQ checkpoint directory.
pub fn export(m: &LoadedModel, q: &ModelQuantization, out: &Path, layout: Layout) -> Result<()> {
    let opts: serde_json::Value = serde_json::from_str(&q.options).context("the plugin's options")?;
    let sym = opts.get("sym").and_then(|v| v.as_str()).is_some_and(|s| s == "true");
    let mut global: Option<Global> = None;
    let mut tensors: Vec<TensorBytes> = vec![];
    let mut quantized = std::collections::BTreeSet::new();
    for (name, p) in packed_layers(q)? {
        let u = Unpacked::from_packed(p).with_context(|| format!("layer {name}"))?;
        let g = Global {
            bits: u.bits,
            group_size: if u.group_size >= u.cols { -1 } else { u.group_size as i64 },
            sym,
            act_order: u.g_idx.is_some(),
        };
        match &global {
            None => global = Some(g),
            Some(x) if (x.bits, x.group_size, x.act_order) != (g.bits, g.group_size, g.act_order) => bail!(
                "layer {name} has {} bits, group size {} (act-order {}) but the others {} bits, group size {} (act-order {}): an HF checkpoint's quantization_config holds one setting",
                g.bits, g.group_size, g.act_order, x.bits, x.group_size, x.act_order
            ),
            Some(_) => {}
        }
        let prefix = name.strip_suffix(".weight").unwrap_or(name);
        let parts = unpacked_tensors(&u, layout).with_context(|| {
            format!("--export {}: layer {name}", if layout == Layout::Gptq { "hf-gptq" } else { "hf-awq" })
        })?;
        for (suffix, dtype, shape, bytes) in parts {
            tensors.push((format!("{prefix}.{suffix}"), dtype, shape, bytes));
        }
        quantized.insert(name.to_string());
    }
    let g = global.ok_or_else(|| anyhow!("no quantized layers to export"))?;
    for (n, t) in &m.weights {
        if !quantized.contains(n) {
            tensors.push(float_tensor(n, t, false));
        }
    }
    let qc = match layout {
        Layout::Gptq => serde_json::json!({
            "quant_method": "gptq",
            "bits": g.bits,
            "group_size": g.group_size,
            "desc_act": g.act_order,
            "sym": g.sym,
            "static_groups": false,
            "true_sequential": true,
            "checkpoint_format": "gptq",
            "lm_head": quantized.contains(LM_HEAD),
            "llq": {"method": q.method, "options": opts},
        }),
        Layout::Awq => serde_json::json!({
            "quant_method": "awq",
            "bits": g.bits,
            "group_size": g.group_size,
            "zero_point": true,
            "version": "gemm",
            "modules_to_not_convert": if quantized.contains(LM_HEAD) { serde_json::Value::Null } else { serde_json::json!(["lm_head"]) },
            "llq": {"method": q.method, "options": opts},
        }),
    };
    write_hf_dir(m, out, "float32", Some(qc), tensors)
}

/// One int-group packed layer as a checkpoint's tensors (named by suffix: `qweight`,
/// `qzeros`, `scales`, and `g_idx` for GPTQ).
pub fn layer_tensors(p: &PackedMatrix, layout: Layout) -> Result<Vec<TensorBytes>> {
    unpacked_tensors(&Unpacked::from_packed(p)?, layout)
}

fn unpacked_tensors(u: &Unpacked, layout: Layout) -> Result<Vec<TensorBytes>> {
    match layout {
        Layout::Gptq => gptq_tensors(u),
        Layout::Awq => awq_tensors(u),
    }
}

fn i32_tensor(suffix: &str, shape: Vec<usize>, words: &[u32]) -> TensorBytes {
    (suffix.into(), Dtype::I32, shape, words.iter().flat_map(|w| w.to_le_bytes()).collect())
}

/// `[groups, out]` f16 scales from `rows × groups`.
fn scales_tensor(u: &Unpacked) -> TensorBytes {
    let groups = u.groups();
    let bytes = (0..groups)
        .flat_map(|g| (0..u.rows).map(move |r| (r, g)))
        .flat_map(|(r, g)| u.scales[r * groups + g].to_le_bytes())
        .collect();
    ("scales".into(), Dtype::F16, vec![groups, u.rows], bytes)
}

fn gptq_tensors(u: &Unpacked) -> Result<Vec<TensorBytes>> {
    let (bits, rows, cols, groups) = (u.bits as usize, u.rows, u.cols, u.groups());
    if !(cols * bits).is_multiple_of(32) || !(rows * bits).is_multiple_of(32) {
        bail!("{rows}×{cols} at {bits} bits is not whole 32-bit words along both dimensions, as GPTQ's packing needs");
    }
    let (kw, zw) = (cols * bits / 32, rows * bits / 32);
    let mut qweight = vec![0u32; kw * rows];
    for r in 0..rows {
        let col = pack_stream((0..cols).map(|c| u.codes[r * cols + c]), bits, kw);
        for (w, v) in col.into_iter().enumerate() {
            qweight[w * rows + r] = v;
        }
    }
    if let Some(i) = u.zeros.iter().position(|&z| z == 0) {
        bail!(
            "row {} group {} has zero point 0, which GPTQ's v1 checkpoint format (zero − 1) cannot store; quantize with sym=true, or export hf-awq",
            i / groups,
            i % groups
        );
    }
    let mut qzeros = vec![];
    for g in 0..groups {
        qzeros.extend(pack_stream((0..rows).map(|r| u.zeros[r * groups + g] - 1), bits, zw));
    }
    let g_idx: Vec<u32> = match &u.g_idx {
        Some(g) => g.clone(),
        None => (0..cols).map(|c| (c / u.group_size) as u32).collect(),
    };
    Ok(vec![
        i32_tensor("qweight", vec![kw, rows], &qweight),
        i32_tensor("qzeros", vec![groups, zw], &qzeros),
        scales_tensor(u),
        i32_tensor("g_idx", vec![cols], &g_idx),
    ])
}

fn awq_tensors(u: &Unpacked) -> Result<Vec<TensorBytes>> {
    let (rows, cols, groups) = (u.rows, u.cols, u.groups());
    if u.bits != 4 {
        bail!("AutoAWQ's GEMM checkpoints hold 4-bit codes, not {}", u.bits);
    }
    if u.g_idx.is_some() {
        bail!("act-order (g_idx) has no place in an AWQ checkpoint");
    }
    if !rows.is_multiple_of(8) || !cols.is_multiple_of(u.group_size) {
        bail!(
            "AWQ packs 8 output channels a word and whole groups: {rows}×{cols} in groups of {}",
            u.group_size
        );
    }
    let words = rows / 8;
    let pack = |value: &dyn Fn(usize) -> u32| -> Vec<u32> {
        (0..words)
            .map(|j| (0..8).fold(0u32, |acc, k| acc | (value(8 * j + AWQ_ORDER[k]) << (4 * k))))
            .collect()
    };
    let mut qweight = Vec::with_capacity(cols * words);
    for c in 0..cols {
        qweight.extend(pack(&|r| u.codes[r * cols + c]));
    }
    let mut qzeros = Vec::with_capacity(groups * words);
    for g in 0..groups {
        qzeros.extend(pack(&|r| u.zeros[r * groups + g]));
    }
    Ok(vec![
        i32_tensor("qweight", vec![cols, words], &qweight),
        i32_tensor("qzeros", vec![groups, words], &qzeros),
        scales_tensor(u),
    ])
}

/// What a checkpoint's quantization_config says of every layer.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    pub layout: Layout,
    pub bits: usize,
    /// As the config gives it (-1: one group per row).
    pub group_size: i64,
    pub sym: bool,
    /// GPTQ's v1 checkpoints store zero − 1.
    pub v1: bool,
}

/// One `rows × cols` layer of a GPTQ or AWQ checkpoint, its tensors given by suffix
/// (`qweight`, `qzeros`, `scales`, `g_idx`), as an int-group packed matrix.
pub fn layer_from_tensors(
    name: &str,
    rows: usize,
    cols: usize,
    st: &Setting,
    take: &mut dyn FnMut(&str) -> Result<RawTensor>,
) -> Result<PackedMatrix> {
    let Setting { layout, bits, group_size: gs_opt, sym, v1 } = *st;
    let prefix = name.strip_suffix(".weight").unwrap_or(name).to_string();
    let gs = if gs_opt == -1 {
        cols
    } else if gs_opt > 0 {
        gs_opt as usize
    } else {
        bail!("quantization_config.group_size is {gs_opt}")
    };
    let groups = cols.div_ceil(gs);
    let (qweight, qzeros, scales) = (take("qweight")?, take("qzeros")?, take("scales")?);
    let g_idx_t = if layout == Layout::Gptq { Some(take("g_idx")?) } else { None };
    if scales.dtype != Dtype::F16 || scales.shape != [groups, rows] {
        bail!(
            "layer {name}: scales are {:?} {:?}; expected F16 [{groups}, {rows}]",
            scales.dtype,
            scales.shape
        );
    }
    let sc: Vec<u16> = scales.data.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
    let mut u = Unpacked {
        rows,
        cols,
        bits: bits as u32,
        group_size: gs,
        codes: vec![0; rows * cols],
        scales: vec![0; rows * groups],
        zeros: vec![0; rows * groups],
        g_idx: None,
    };
    for g in 0..groups {
        for r in 0..rows {
            u.scales[r * groups + g] = sc[g * rows + r];
        }
    }
    match layout {
        Layout::Gptq => {
            if !(cols * bits).is_multiple_of(32) || !(rows * bits).is_multiple_of(32) {
                bail!("layer {name}: {rows}×{cols} at {bits} bits is not whole words");
            }
            let (kw, zw) = (cols * bits / 32, rows * bits / 32);
            let qw = words(&format!("{prefix}.qweight"), &qweight, &[kw, rows])?;
            let qz = words(&format!("{prefix}.qzeros"), &qzeros, &[groups, zw])?;
            let mut col = vec![0u32; kw];
            for r in 0..rows {
                for (w, v) in col.iter_mut().enumerate() {
                    *v = qw[w * rows + r];
                }
                for c in 0..cols {
                    u.codes[r * cols + c] = stream_value(&col, c, bits);
                }
            }
            for g in 0..groups {
                let row = &qz[g * zw..(g + 1) * zw];
                for r in 0..rows {
                    u.zeros[r * groups + g] = stream_value(row, r, bits) + u32::from(v1);
                }
            }
            let gi = words(&format!("{prefix}.g_idx"), g_idx_t.as_ref().context("g_idx")?, &[cols])?;
            if let Some(bad) = gi.iter().find(|&&g| g as usize >= groups) {
                bail!("layer {name}: g_idx names group {bad} of {groups}");
            }
            let ordered = gi.iter().enumerate().all(|(c, &g)| g as usize == c / gs);
            u.g_idx = (!ordered).then_some(gi);
        }
        Layout::Awq => {
            if !rows.is_multiple_of(8) || !cols.is_multiple_of(gs) {
                bail!("layer {name}: {rows}×{cols} is not 8-channel words and whole groups of {gs}");
            }
            let w8 = rows / 8;
            let qw = words(&format!("{prefix}.qweight"), &qweight, &[cols, w8])?;
            let qz = words(&format!("{prefix}.qzeros"), &qzeros, &[groups, w8])?;
            for j in 0..w8 {
                for (k, &ch) in AWQ_ORDER.iter().enumerate() {
                    let r = 8 * j + ch;
                    for c in 0..cols {
                        u.codes[r * cols + c] = (qw[c * w8 + j] >> (4 * k)) & 15;
                    }
                    for g in 0..groups {
                        u.zeros[r * groups + g] = (qz[g * w8 + j] >> (4 * k)) & 15;
                    }
                }
            }
        }
    }
    u.to_packed(sym).with_context(|| format!("layer {name}"))
}

/// An i32 tensor of `shape` as u32 words.
fn words(name: &str, t: &RawTensor, shape: &[usize]) -> Result<Vec<u32>> {
    if t.dtype != Dtype::I32 || t.shape != shape {
        bail!("{name} is {:?} {:?}; expected I32 {shape:?}", t.dtype, t.shape);
    }
    Ok(t.data.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}

/// Read a GPTQ or AWQ checkpoint's linear layers as int-group matrices.
pub fn read(mut parts: HfParts, qc: &serde_json::Value, layout: Layout) -> Result<Stored> {
    let int = |k: &str| -> Result<i64> {
        qc.get(k)
            .and_then(|v| v.as_i64())
            .ok_or_else(|| anyhow!("quantization_config.{k} is missing or not an integer"))
    };
    let flag = |k: &str, d: bool| -> Result<bool> {
        match qc.get(k) {
            None | Some(serde_json::Value::Null) => Ok(d),
            Some(v) => v.as_bool().ok_or_else(|| anyhow!("quantization_config.{k} is {v}, not a boolean")),
        }
    };
    let bits = int("bits")?;
    if !(2..=8).contains(&bits) {
        bail!("quantization_config.bits is {bits}; llq's int-group format holds 2 to 8 bits");
    }
    let bits = bits as usize;
    let gs_opt = int("group_size")?;
    let (sym, v1) = match layout {
        Layout::Gptq => {
            let fmt = qc.get("checkpoint_format").and_then(|v| v.as_str()).unwrap_or("gptq");
            let v1 = match fmt {
                "gptq" => true,
                "gptq_v2" => false,
                other => bail!("quantization_config.checkpoint_format `{other}` is not gptq or gptq_v2"),
            };
            (flag("sym", true)?, v1)
        }
        Layout::Awq => {
            let version = qc.get("version").and_then(|v| v.as_str()).unwrap_or("gemm").to_lowercase();
            if version != "gemm" {
                bail!("quantization_config.version `{version}`: llq reads AutoAWQ's gemm layout");
            }
            if !flag("zero_point", true)? {
                bail!("quantization_config.zero_point is false: llq reads AWQ checkpoints with zero points");
            }
            if bits != 4 {
                bail!("quantization_config.bits is {bits}; AutoAWQ's GEMM layout holds 4 bits");
            }
            (false, false)
        }
    };
    let mut layers_to_read = parts.model.config.linear_layers();
    if parts.raw.contains_key("lm_head.qweight") {
        layers_to_read.push((LM_HEAD.into(), parts.model.config.vocab_size, parts.model.config.hidden_size));
    }
    let mut layers = vec![];
    for (name, rows, cols) in layers_to_read {
        let prefix = name.strip_suffix(".weight").unwrap_or(&name).to_string();
        let mut take = |s: &str| {
            parts
                .raw
                .remove(&format!("{prefix}.{s}"))
                .ok_or_else(|| anyhow!("layer {name}: {prefix}.{s} is missing"))
        };
        let st = Setting { layout, bits, group_size: gs_opt, sym, v1 };
        let packed = layer_from_tensors(&name, rows, cols, &st, &mut take)?;
        let has_g_idx = serde_json::from_str::<serde_json::Value>(&packed.metadata)?["g_idx"] == true;
        let mut options = vec![
            ("bits".to_string(), bits.to_string()),
            ("group_size".to_string(), gs_opt.to_string()),
            ("sym".to_string(), sym.to_string()),
        ];
        if has_g_idx {
            options.push(("act_order".into(), "true".into()));
        }
        layers.push(StoredLayer { name, packed, options });
    }
    if let Some(extra) = parts.raw.keys().next() {
        bail!("tensor {extra} is neither a float weight nor part of a quantized layer llq knows");
    }
    let format = match layout {
        Layout::Gptq => {
            format!("GPTQ {bits}-bit safetensors (group {gs_opt}, {})", if v1 { "gptq" } else { "gptq_v2" })
        }
        Layout::Awq => format!("AWQ {bits}-bit GEMM safetensors (group {gs_opt})"),
    };
    Ok(Stored { model: parts.model, layers, format, methods: METHODS })
}
