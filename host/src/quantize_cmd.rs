//! `llq-host quantize`: run a plugin over every 2-D tensor of a safetensors file and write the
//! packed buffers (plus metadata) or the dequantized f32 tensors, for inspection and
//! cross-checks against other implementations.

use crate::quant::{PackedMatrix, Plugin};
use crate::results::write_atomic;
use anyhow::{bail, Context, Result};
use safetensors::{Dtype, SafeTensors};
use std::collections::HashMap;
use std::path::Path;

/// Convert a safetensors tensor to f32, or say why not.
pub fn to_f32(name: &str, dtype: Dtype, data: &[u8]) -> Result<Vec<f32>> {
    Ok(match dtype {
        Dtype::F32 => data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        Dtype::F16 => data.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        Dtype::BF16 => data.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        other => bail!("tensor {name}: dtype {other:?} is not a float type llq can quantize (F32, F16, BF16)"),
    })
}

pub struct QuantizeArgs<'a> {
    pub plugin: &'a Plugin,
    pub opts_json: &'a str,
    pub options_canonical: String,
    pub input: &'a Path,
    pub output: &'a Path,
    pub dequantize: bool,
}

/// Returns (tensors quantized, tensors copied).
pub fn run(a: &QuantizeArgs) -> Result<(usize, usize)> {
    let bytes = std::fs::read(a.input).with_context(|| format!("cannot read {}", a.input.display()))?;
    let st = SafeTensors::deserialize(&bytes).with_context(|| format!("{} is not a valid safetensors file", a.input.display()))?;
    let mut names: Vec<String> = st.names().into_iter().map(|s| s.to_string()).collect();
    names.sort();
    let mut out: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    let mut meta: HashMap<String, String> = HashMap::new();
    let (mut quantized, mut copied) = (0, 0);
    for name in &names {
        let t = st.tensor(name)?;
        let shape = t.shape().to_vec();
        if shape.len() != 2 || !matches!(t.dtype(), Dtype::F32 | Dtype::F16 | Dtype::BF16) {
            out.push((name.clone(), t.dtype(), shape, t.data().to_vec()));
            copied += 1;
            continue;
        }
        let w = to_f32(name, t.dtype(), t.data())?;
        let (rows, cols) = (shape[0], shape[1]);
        let p: PackedMatrix = a.plugin.quantize(name, rows, cols, &w, a.opts_json, None)?;
        if a.dequantize {
            let d = a.plugin.dequantize(&p)?;
            out.push((name.clone(), Dtype::F32, shape, d.iter().flat_map(|v| v.to_le_bytes()).collect()));
        } else {
            for (b, data) in p.buffers {
                out.push((format!("{name}.{b}"), Dtype::U8, vec![data.len()], data));
            }
            meta.insert(name.clone(), serde_json::json!({"rows": rows, "cols": cols, "metadata": serde_json::from_str::<serde_json::Value>(&p.metadata)?}).to_string());
        }
        quantized += 1;
    }
    meta.insert(
        "__llq__".into(),
        serde_json::json!({
            "plugin": a.plugin.info.name, "plugin_version": a.plugin.info.version,
            "options": serde_json::from_str::<serde_json::Value>(&a.options_canonical)?,
            "content": if a.dequantize { "dequantized-f32" } else { "packed" },
        })
        .to_string(),
    );
    let views: Vec<(String, safetensors::tensor::TensorView)> = out
        .iter()
        .map(|(n, d, s, b)| Ok((n.clone(), safetensors::tensor::TensorView::new(*d, s.clone(), b)?)))
        .collect::<Result<_>>()?;
    let bytes = safetensors::serialize(views, Some(meta))?;
    write_atomic(a.output, &bytes)?;
    Ok((quantized, copied))
}
