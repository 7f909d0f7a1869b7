//! `llq-host quantize`: run a plugin over every 2-D tensor of a safetensors file and write
//! the packed buffers (plus metadata) or the dequantized f32 tensors, for inspection and
//! cross-checks against other implementations.

use super::args::PluginArgs;
use crate::calib::stats::Accumulator;
use crate::loader::hf::tensor_to_f32;
use crate::plugin::{CalibrationData, PackedMatrix, QuantConfig};
use crate::util::fs::write_atomic;
use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use llq_sdk::CalibrationNeed;
use safetensors::{Dtype, SafeTensors};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Quantize every 2-D tensor of a safetensors file with a plugin.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub plugin: PluginArgs,
    #[arg(long)]
    pub input: PathBuf,
    #[arg(long)]
    pub output: PathBuf,
    /// Write the dequantized f32 tensors instead of the packed buffers.
    #[arg(long)]
    pub dequantize: bool,
    /// Calibration for plugins that need it: a safetensors file in which the tensor named
    /// like each weight of --input holds that layer's input activations [tokens, in_features].
    #[arg(long)]
    pub calibration: Option<PathBuf>,
}

pub fn main(a: Args) -> Result<()> {
    let plugin = a.plugin.load()?;
    let q = plugin.configure(&a.plugin.opts)?;
    if a.output == a.input {
        bail!("--output {} is --input: write the result elsewhere", a.output.display());
    }
    let acts = match (&a.calibration, plugin.calibration()) {
        (Some(p), CalibrationNeed::None) => {
            bail!("plugin {} takes no calibration data; drop --calibration {}", plugin.name(), p.display())
        }
        (Some(p), _) => {
            Some(std::fs::read(p).with_context(|| format!("cannot read --calibration {}", p.display()))?)
        }
        (None, _) => None,
    };
    let acts = acts
        .as_deref()
        .map(|b| {
            SafeTensors::deserialize(b).with_context(|| {
                format!(
                    "--calibration {} is not a valid safetensors file",
                    a.calibration.as_ref().unwrap_or(&a.input).display()
                )
            })
        })
        .transpose()?;
    let (n, c) = quantize_file(&q, &a.input, &a.output, a.dequantize, acts.as_ref())?;
    tracing::info!("{}: quantized {n} tensors, copied {c}, wrote {}", plugin.name(), a.output.display());
    Ok(())
}

/// Returns (tensors quantized, tensors copied).
pub fn quantize_file(
    q: &QuantConfig,
    input: &Path,
    output: &Path,
    dequantize: bool,
    acts: Option<&SafeTensors>,
) -> Result<(usize, usize)> {
    let bytes = std::fs::read(input).with_context(|| format!("cannot read {}", input.display()))?;
    let st = SafeTensors::deserialize(&bytes)
        .with_context(|| format!("{} is not a valid safetensors file", input.display()))?;
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
        let w = tensor_to_f32(name, t.dtype(), t.data())?;
        let (rows, cols) = (shape[0], shape[1]);
        let calib = match acts {
            Some(acts) => Some(layer_calibration(q, acts, name, cols)?),
            None if q.plugin.calibration() != CalibrationNeed::None => bail!(
                "plugin {} needs calibration: pass --calibration with the input activations of {name}",
                q.name()
            ),
            None => None,
        };
        let p: PackedMatrix = q.quantize(name, rows, cols, &w, calib.as_ref())?;
        if dequantize {
            let d = q.dequantize(&p)?;
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
            "plugin": q.plugin.info.name, "plugin_version": q.plugin.info.version,
            "options": serde_json::from_str::<serde_json::Value>(&q.canonical())?,
            "content": if dequantize { "dequantized-f32" } else { "packed" },
        })
        .to_string(),
    );
    let views: Vec<(String, safetensors::tensor::TensorView)> = out
        .iter()
        .map(|(n, d, s, b)| Ok((n.clone(), safetensors::tensor::TensorView::new(*d, s.clone(), b)?)))
        .collect::<Result<_>>()?;
    let bytes = safetensors::serialize(views, Some(meta))?;
    write_atomic(output, &bytes)?;
    Ok((quantized, copied))
}

/// The calibration data of weight `name` from its activations `[tokens, cols]` in `acts`,
/// through the same accumulator as a calibration run.
fn layer_calibration(
    q: &QuantConfig,
    acts: &SafeTensors,
    name: &str,
    cols: usize,
) -> Result<CalibrationData> {
    let t = acts
        .tensor(name)
        .map_err(|_| anyhow::anyhow!("--calibration has no activations for weight {name}"))?;
    let shape = t.shape().to_vec();
    if shape.len() != 2 || shape[1] != cols || shape[0] == 0 {
        bail!("--calibration tensor {name} has shape {shape:?}; the weight needs [tokens, {cols}]");
    }
    let x = tensor_to_f32(name, t.dtype(), t.data())?;
    if let Some(i) = x.iter().position(|v| !v.is_finite()) {
        bail!("--calibration tensor {name} has a non-finite value at row {}, column {}", i / cols, i % cols);
    }
    let mut acc = Accumulator::new(cols, q.plugin.calibration(), shape[0]);
    acc.add(&Tensor::from_vec(x, (shape[0], cols), &Device::Cpu)?)?;
    acc.finish()
}
