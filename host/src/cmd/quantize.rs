//! `llq-host quantize`: run a plugin over every 2-D tensor of a safetensors file and write
//! the packed buffers (plus metadata) or the dequantized f32 tensors, for inspection and
//! cross-checks against other implementations; or (`--model M --export FORMAT`) quantize a
//! whole model, calibrated where the plugin needs it, and write it as a checkpoint other
//! tools load (GGUF, transformers + bitsandbytes 4-bit, GPTQ, AWQ: [`crate::checkpoint`]).
//!
//! With a plugin that searches input scales (AWQ) and `--calibration`, the weights named like
//! one block's layers that read one input in the model (q/k/v, o, gate/up, down of
//! `model.layers.N`) form a group, as in a calibration run: their activations must be the
//! same, the plugin chooses a scale `s` for the group, and each layer is quantized as
//! `W · diag(s)` on inputs `X · diag(s)⁻¹`. A producer in the file is left as it is, so the
//! output stands on its own: `--dequantize` writes `Q(W · diag(s)) · diag(s)⁻¹`, what the model
//! computes with on the original input, and the packed output adds `<name>.input_scales`
//! (f32) by which a consumer divides the input. The metadata records every group's choice.

use super::args::{CalibArgs, PluginArgs};
use crate::calib::stats::from_rows;
use crate::checkpoint::ExportFormat;
use crate::loader::hf::tensor_to_f32;
use crate::model::Stage;
use crate::plugin::{CalibrationData, GroupLayer, LayerGroup, PackedMatrix, QuantConfig};
use crate::quant::fold::{stage_group, Group};
use crate::util::fs::write_atomic;
use anyhow::{bail, Context, Result};
use llq_sdk::CalibrationNeed;
use safetensors::{Dtype, SafeTensors};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Quantize every 2-D tensor of a safetensors file with a plugin.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub plugin: PluginArgs,
    /// A safetensors file whose 2-D tensors are quantized one by one.
    #[arg(long, required_unless_present = "model")]
    pub input: Option<PathBuf>,
    /// The safetensors file written (--input), or the checkpoint (--model: a GGUF file, or
    /// a directory for the HF formats).
    #[arg(long)]
    pub output: PathBuf,
    /// Write the dequantized f32 tensors instead of the packed buffers.
    #[arg(long)]
    pub dequantize: bool,
    /// A whole model (HF directory, GGUF file, llama2.c .bin, synthetic:<preset>) to
    /// quantize and write as a checkpoint with --export, instead of --input.
    #[arg(long, conflicts_with_all = ["input", "dequantize", "calibration"], requires = "export")]
    pub model: Option<String>,
    /// The checkpoint format of --model's export: gguf (needs a GGUF --model, whose metadata
    /// and tokenizer it keeps), hf-bnb, hf-gptq or hf-awq.
    #[arg(long, requires = "model")]
    pub export: Option<ExportFormat>,
    /// With --model: quantize lm_head too.
    #[arg(long, requires = "model")]
    pub quantize_lm_head: bool,
    #[command(flatten)]
    pub calib: CalibArgs,
    /// Calibration for plugins that need it: a safetensors file in which the tensor named
    /// like each weight of --input holds that layer's input activations [tokens, in_features].
    #[arg(long)]
    pub calibration: Option<PathBuf>,
}

pub fn main(a: Args) -> Result<()> {
    let plugin = a.plugin.load()?;
    let q = plugin.configure(&a.plugin.opts)?;
    if let (Some(model), Some(format)) = (&a.model, a.export) {
        return export_model(&q, model, format, &a);
    }
    if a.calib.given() {
        bail!(
            "--calib-* options calibrate a whole model (--model); a safetensors --input takes --calibration"
        );
    }
    let input = a.input.clone().context("--input or --model is required")?;
    let same = a.output == input
        || matches!((a.output.canonicalize(), input.canonicalize()), (Ok(o), Ok(i)) if o == i);
    if same {
        bail!("--output {} is --input: write the result elsewhere", a.output.display());
    }
    let a = Args { input: Some(input), ..a };
    let acts = match (&a.calibration, q.calibration()) {
        (Some(p), CalibrationNeed::None) => {
            bail!(
                "plugin {} takes no calibration data with these options; drop --calibration {}",
                plugin.name(),
                p.display()
            )
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
                    a.calibration
                        .as_ref()
                        .or(a.input.as_ref())
                        .map(|p| p.display().to_string())
                        .unwrap_or_default()
                )
            })
        })
        .transpose()?;
    let input = a.input.as_deref().context("--input")?;
    let (n, c) = quantize_file(&q, input, &a.output, a.dequantize, acts.as_ref())?;
    tracing::info!("{}: quantized {n} tensors, copied {c}, wrote {}", plugin.name(), a.output.display());
    Ok(())
}

/// `quantize --model M --export FORMAT`: the whole model quantized (on the CPU, calibrated
/// when the plugin needs it) and written as a checkpoint.
fn export_model(q: &QuantConfig, model: &str, format: ExportFormat, a: &Args) -> Result<()> {
    if format == ExportFormat::Gguf {
        if a.output.is_dir() {
            bail!("--output {} is a folder; --export gguf writes one file", a.output.display());
        }
    } else if let Ok(mut entries) = std::fs::read_dir(&a.output) {
        if entries.next().is_some() {
            bail!(
                "--output {} is not empty; an HF checkpoint is written into an empty or new folder",
                a.output.display()
            );
        }
    } else if a.output.exists() {
        bail!("--output {} exists and is not a folder; an HF checkpoint is a folder", a.output.display());
    }
    crate::checkpoint::check_export(format, q.name(), model)?;
    let calibration = a.calib.resolve(Some(q))?;
    let mut m = crate::loader::load(model)?;
    let o = crate::quant::QuantizeOptions {
        include_lm_head: a.quantize_lm_head,
        threads: crate::util::par::default_threads(None),
        calibration: calibration.as_ref(),
        layer_opts: &[],
    };
    let qm = crate::quant::quantize_model(q, &mut m, &o, &candle_core::Device::Cpu, true)
        .with_context(|| format!("quantizing {model} with plugin {}", q.plugin.info.path.display()))?;
    crate::checkpoint::export(format, &m, &qm, model, &a.output)
        .with_context(|| format!("writing {}", a.output.display()))?;
    tracing::info!(
        "{}: quantized {} layers in {:.1} s, wrote {} ({} bytes of packed layers)",
        q.name(),
        qm.layers,
        qm.seconds,
        a.output.display(),
        qm.quantized_bytes
    );
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
    // Every 2-D float tensor with its calibration data and, once a group's scale is chosen,
    // its input scale.
    let mut todo: HashMap<String, Layer> = HashMap::new();
    for name in &names {
        let t = st.tensor(name)?;
        let shape = t.shape().to_vec();
        if shape.len() != 2 || !matches!(t.dtype(), Dtype::F32 | Dtype::F16 | Dtype::BF16) {
            out.push((name.clone(), t.dtype(), shape, t.data().to_vec()));
            copied += 1;
            continue;
        }
        let w = tensor_to_f32(name, t.dtype(), t.data())?;
        let calib = match acts {
            Some(acts) => Some(layer_calibration(q, &activations(acts, name, shape[1])?, shape[1])?),
            None if q.calibration() != CalibrationNeed::None => bail!(
                "plugin {} needs calibration: pass --calibration with the input activations of {name}",
                q.name()
            ),
            None => None,
        };
        todo.insert(name.clone(), Layer { rows: shape[0], cols: shape[1], w, calib, scales: None });
    }
    let mut groups = vec![];
    if let (Some(acts), true) = (acts, q.plugin.info.group_scales) {
        for g in file_groups(&todo) {
            if let Some(info) = scale_group(q, acts, &g, &mut todo)? {
                groups.push(info);
            }
        }
    }
    for name in &names {
        let Some(l) = todo.remove(name) else { continue };
        let (rows, cols) = (l.rows, l.cols);
        let p: PackedMatrix = q.quantize(name, rows, cols, &l.w, l.calib.as_ref())?;
        if dequantize {
            let mut d = q.dequantize(&p)?;
            if let Some(s) = &l.scales {
                for row in d.chunks_mut(cols) {
                    row.iter_mut().zip(s).for_each(|(v, s)| *v /= s);
                }
            }
            out.push((
                name.clone(),
                Dtype::F32,
                vec![rows, cols],
                d.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ));
        } else {
            for (b, data) in p.buffers {
                out.push((format!("{name}.{b}"), Dtype::U8, vec![data.len()], data));
            }
            if let Some(s) = &l.scales {
                out.push((
                    format!("{name}.input_scales"),
                    Dtype::F32,
                    vec![cols],
                    s.iter().flat_map(|v| v.to_le_bytes()).collect(),
                ));
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
            "scale_groups": groups,
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

/// One weight to quantize.
struct Layer {
    rows: usize,
    cols: usize,
    /// The weights, times the group's input scale once one is chosen.
    w: Vec<f32>,
    calib: Option<CalibrationData>,
    scales: Option<Vec<f32>>,
}

/// The groups of `model.layers.N` layers present in the file, each with only the members
/// present (module docs). The o group is left out when v is present and its rows are not o's
/// columns (grouped-query attention).
fn file_groups(todo: &HashMap<String, Layer>) -> Vec<Group> {
    let mut blocks: Vec<usize> = todo
        .keys()
        .filter_map(|n| n.strip_prefix("model.layers.")?.split('.').next()?.parse().ok())
        .collect();
    blocks.sort();
    blocks.dedup();
    let gqa = |g: &Group| {
        g.stage == Stage::OProj
            && todo.get(&g.producer).is_some_and(|v| todo.get(&g.layers[0]).is_some_and(|o| o.cols != v.rows))
    };
    blocks
        .into_iter()
        .flat_map(|l| Stage::INPUTS.into_iter().filter_map(move |stage| stage_group(l, stage)))
        .filter(|g| !gqa(g))
        .map(|mut g| {
            g.layers.retain(|n| todo.contains_key(n));
            g
        })
        .filter(|g| !g.layers.is_empty())
        .collect()
}

/// Search `g`'s input scale and apply it to its members' weights and calibration.
fn scale_group(
    q: &QuantConfig,
    acts: &SafeTensors,
    g: &Group,
    todo: &mut HashMap<String, Layer>,
) -> Result<Option<serde_json::Value>> {
    let first = &g.layers[0];
    let x = activations(acts, first, todo[first].cols)?;
    for other in &g.layers[1..] {
        if activations(acts, other, todo[other].cols)? != x {
            bail!(
                "--calibration gives {first} and {other} different activations, but they read one input in the model"
            );
        }
    }
    let calib = todo[first].calib.clone().context("calibration data")?;
    let chosen = {
        let layers = g
            .layers
            .iter()
            .map(|n| {
                let l = &todo[n];
                GroupLayer { name: n, rows: l.rows, cols: l.cols, data: &l.w }
            })
            .collect();
        q.search_scales(&LayerGroup {
            producer: &g.producer,
            producer_kind: g.producer_kind,
            layers,
            calibration: &calib,
        })?
    };
    let Some(c) = chosen else { return Ok(None) };
    let cols = c.scales.len();
    let scaled_x: Vec<f32> =
        x.chunks(cols).flat_map(|r| r.iter().zip(&c.scales).map(|(v, s)| v / s)).collect();
    let scaled = layer_calibration(q, &scaled_x, cols)?;
    for n in &g.layers {
        let l = todo.get_mut(n).context("group member")?;
        for row in l.w.chunks_mut(cols) {
            row.iter_mut().zip(&c.scales).for_each(|(v, s)| *v *= s);
        }
        l.calib = Some(scaled.clone());
        l.scales = Some(c.scales.clone());
    }
    Ok(Some(serde_json::json!({"producer": g.producer, "layers": g.layers, "info": c.info})))
}

/// The activations `[tokens, cols]` of weight `name` in `acts`, checked.
fn activations(acts: &SafeTensors, name: &str, cols: usize) -> Result<Vec<f32>> {
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
    Ok(x)
}

/// The calibration data of activations `x` (`[tokens, cols]`), for this plugin's need.
fn layer_calibration(q: &QuantConfig, x: &[f32], cols: usize) -> Result<CalibrationData> {
    from_rows(x, cols, q.calibration())
}
