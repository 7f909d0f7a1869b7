//! `gguf`: llama.cpp's quant types (the weights-only part of `llama-quantize`) as one method,
//! `--opt type=q4_0|q4_1|q5_0|q5_1|q8_0|q2_k|q3_k|q4_k|q5_k|q6_k`. The block formats, the
//! decoders and most quantizers are candle-core's port of ggml-quants.c
//! (`quantized::k_quants`); where that port is older than llama.cpp (q2_K, q4_K, q5_K, q6_K
//! without an importance matrix, q3_K and q6_K with one) `llama_quants.rs` follows current
//! llama.cpp. `tests.rs` checks every type, with and without an importance matrix, byte for
//! byte against llama.cpp's C quantizers and gguf-py, and against the SmolLM2 GGUF as shipped.
//!
//! As in llama.cpp, blocks run along each row (32 values, 256 for the K types) and a row must
//! hold whole blocks. `llama-quantize` falls back to a legacy type for rows that do not
//! (`llama_tensor_get_type`: q2_k/q3_k → q4_0, q4_k → q5_0, q5_k → q5_1, q6_k → q8_0); so does
//! this plugin with `fallback=true` (the default), recording the type each layer got.
//!
//! `imatrix=true` quantizes with llama.cpp's importance matrix: the per-input-column mean of
//! x² over calibration text (what `llama-imatrix` collects and `llama-quantize --imatrix`
//! passes to `quantize_q*_K` as `quant_weights`), here the host's calibration statistics
//! (`Calibration::mean_sq`). Only the K types use it: candle ports the importance-weighted
//! quantizers (`quantize_row_q*_K_impl`) for them and not for the legacy types, so a layer
//! that falls back to a legacy type is quantized without it and its metadata says
//! `"imatrix": false` (llama.cpp would weight the fallback q4_0/q5_0/q5_1 too; q8_0 ignores
//! the matrix there as well). The host calibrates only runs with `imatrix=true` (ABI 1.3).
//!
//! On a GPU every type runs packed: `ggml.cu` decodes the blocks as candle's CPU `to_float`
//! does, so the kernels' weights are this plugin's dequantization bit for bit
//! (`llq-host kernels --quant plugins/gguf.so --opt type=…` checks it).

use candle_core::quantized::{GgmlDType, QStorage, QTensor};
use candle_core::{Device, Tensor};
use llq_sdk::{
    bail, export_plugin, Calibration, CalibrationNeed, CudaKernels, KernelParam, OptionKind, OptionSpec,
    Options, PackedView, QuantMethod, Quantized, Result, Weights,
};
use std::borrow::Cow;

mod llama_quants;

/// The offered types: option value, candle's type, llama.cpp's fallback for rows that are
/// not whole blocks.
const TYPES: [(&str, GgmlDType, Option<&str>); 10] = [
    ("q4_0", GgmlDType::Q4_0, None),
    ("q4_1", GgmlDType::Q4_1, None),
    ("q5_0", GgmlDType::Q5_0, None),
    ("q5_1", GgmlDType::Q5_1, None),
    ("q8_0", GgmlDType::Q8_0, None),
    ("q2_k", GgmlDType::Q2K, Some("q4_0")),
    ("q3_k", GgmlDType::Q3K, Some("q4_0")),
    ("q4_k", GgmlDType::Q4K, Some("q5_0")),
    ("q5_k", GgmlDType::Q5K, Some("q5_1")),
    ("q6_k", GgmlDType::Q6K, Some("q8_0")),
];

fn dtype(name: &str) -> Result<GgmlDType> {
    TYPES
        .iter()
        .find(|t| t.0 == name)
        .map(|t| t.1)
        .ok_or_else(|| format!("unknown gguf type `{name}`").into())
}

/// The type a `cols`-wide row gets: `name`, or its fallback when the row is not whole blocks.
fn type_for(name: &str, cols: usize, fallback: bool) -> Result<&'static str> {
    let (n, d, fb) =
        TYPES.iter().find(|t| t.0 == name).ok_or_else(|| format!("unknown gguf type `{name}`"))?;
    if cols.is_multiple_of(d.block_size()) {
        return Ok(n);
    }
    match fb {
        Some(f) if fallback && cols.is_multiple_of(dtype(f)?.block_size()) => Ok(f),
        _ => bail!(
            "gguf {name}: rows of {cols} values are not whole blocks of {}{}",
            d.block_size(),
            if fb.is_some() && !fallback { " (fallback=true uses llama.cpp's fallback type)" } else { "" }
        ),
    }
}

fn err(e: candle_core::Error) -> llq_sdk::PluginError {
    // candle appends a backtrace when RUST_BACKTRACE is set; the first line is the message.
    e.to_string().lines().next().unwrap_or_default().to_string().into()
}

#[derive(Default)]
pub struct Gguf;

impl QuantMethod for Gguf {
    const NAME: &'static str = "gguf";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str =
        "llama.cpp's GGUF quant types (q4_0 … q8_0, q2_k … q6_k), candle-core's port of ggml-quants.c";
    /// Only with `imatrix=true` (see `calibration_for`).
    const CALIBRATION: CalibrationNeed = CalibrationNeed::Stats;
    fn calibration_for(&self, opts: &Options) -> CalibrationNeed {
        match opts.get_bool("imatrix") {
            Ok(true) => CalibrationNeed::Stats,
            _ => CalibrationNeed::None,
        }
    }
    fn options(&self) -> Vec<OptionSpec> {
        let names: Vec<&str> = TYPES.iter().map(|t| t.0).collect();
        vec![
            OptionSpec::new("type", OptionKind::String, "q4_0", "llama.cpp quant type").choices(&names),
            OptionSpec::new(
                "fallback",
                OptionKind::Bool,
                "true",
                "rows that are not whole K-blocks (256) use llama-quantize's fallback type",
            ),
            OptionSpec::new(
                "imatrix",
                OptionKind::Bool,
                "false",
                "weight K-type blocks by llama.cpp's importance matrix (calibration mean x² per input column)",
            ),
        ]
    }
    fn packed_size(&self, rows: u64, cols: u64, opts: &Options) -> Result<u64> {
        let t = dtype(type_for(opts.get_str("type")?, cols as usize, opts.get_bool("fallback")?)?)?;
        let blocks = rows * cols / t.block_size() as u64;
        Ok(blocks * t.type_size() as u64)
    }
    fn quantize(&self, w: &Weights, opts: &Options, c: Option<&Calibration>) -> Result<Quantized> {
        let name = type_for(opts.get_str("type")?, w.cols, opts.get_bool("fallback")?)?;
        let imatrix = match (opts.get_bool("imatrix")?, c) {
            (false, _) => None,
            (true, None) => bail!(
                "gguf imatrix=true on layer {}: no calibration data (the importance matrix is the calibration text's mean x² per input column)",
                w.layer
            ),
            (true, Some(c)) if c.mean_sq.len() != w.cols => {
                bail!("gguf imatrix: {} importance values for {} input columns", c.mean_sq.len(), w.cols)
            }
            // Legacy fallback types: candle has no importance-weighted quantizer for them.
            (true, Some(c)) => name.ends_with("_k").then_some(c.mean_sq),
        };
        // Current llama.cpp where candle's port is older (llama_quants.rs), candle elsewhere.
        let blocks = match llama_quants::quantize(name, w.data, w.cols, imatrix) {
            Some(b) => b,
            None => {
                let t = Tensor::from_slice(w.data, (w.rows, w.cols), &Device::Cpu).map_err(err)?;
                match imatrix {
                    Some(im) => QTensor::quantize_imatrix(&t, im, dtype(name)?),
                    None => QTensor::quantize(&t, dtype(name)?),
                }
                .and_then(|q| Ok(q.data()?.into_owned()))
                .map_err(err)?
            }
        };
        let meta = serde_json::json!({ "type": name, "imatrix": imatrix.is_some() });
        Ok(Quantized::new(meta).with_buffer("blocks", blocks))
    }
    fn dequantize(&self, p: &PackedView, out: &mut [f32]) -> Result<()> {
        let t = dtype(p.meta_str("type")?)?;
        let blocks = p.buffer("blocks")?;
        let n = p.rows * p.cols;
        if !n.is_multiple_of(t.block_size()) || blocks.len() != n / t.block_size() * t.type_size() {
            bail!("gguf: {} bytes of {:?} blocks do not fit a {}×{} matrix", blocks.len(), t, p.rows, p.cols);
        }
        let storage = QStorage::from_data(Cow::Borrowed(blocks), &Device::Cpu, t).map_err(err)?;
        let q = QTensor::new(storage, (p.rows, p.cols)).map_err(err)?;
        let v: Vec<f32> = q.dequantize(&Device::Cpu).and_then(|d| d.flatten_all()?.to_vec1()).map_err(err)?;
        out.copy_from_slice(&v);
        Ok(())
    }
    /// Every type decoded on the GPU (`ggml.cu`: candle's `to_float` operation for operation),
    /// so a quantized model runs packed, with the kernel convention's fused matvec.
    fn cuda_kernels(&self) -> Option<CudaKernels> {
        Some(CudaKernels {
            source: llq_sdk::cuda::source(&[
                include_str!("ggml.cu"),
                "LLQ_DEFINE_KERNELS(LlqGgml, 4, gguf)\n",
            ]),
            dequantize: "gguf_dequantize".into(),
            matvec: Some("gguf_matvec".into()),
            params: vec![KernelParam::Choice {
                key: "type".into(),
                values: TYPES.iter().map(|t| t.0.to_string()).collect(),
            }],
        })
    }
}

export_plugin!(Gguf);

#[cfg(test)]
mod tests;
