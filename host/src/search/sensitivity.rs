//! How much each layer's quantization costs, per candidate setting: the measurements the
//! allocation is made from, on calibration text (never the evaluation books).
//!
//! Three measures, from cheap to exact ([`Measure`]):
//! - `proxy`: the layer's Hessian-weighted weight error, `mean over tokens ‖(W − Ŵ) x‖²` =
//!   `½ tr(ΔW H ΔWᵀ)` with GPTQ's `H = 2/n Σ x xᵀ` from the unquantized model's inputs —
//!   what GPTQ minimises per layer (Frantar et al. 2022), and HAWQ-style searches rank layers
//!   by. It needs one forward pass, but its units are output error, not KL, and a unit of
//!   error in `down_proj` of the last block is not worth one in `k_proj` of the first;
//! - `calibrated` (default): the proxy, scaled per layer by one exact measurement at the
//!   reference candidate: `KL_l(s) ≈ KL_l(ref) · proxy_l(s) / proxy_l(ref)`. Both KL and the
//!   proxy are second order in the layer's output error for small errors, so the ratio is
//!   constant across settings of one method to first approximation; the ratio carries the
//!   layer's position and role. One forward per layer;
//! - `exact`: the KL of quantizing that layer alone, measured for every candidate (one forward
//!   per layer and candidate — the reference the other two are checked against).
//!
//! A layer's exact KL is KL(unquantized ‖ model with only that layer quantized), mean per
//! token over the calibration windows. It is measured from the cached input of the layer's
//! block (blocks before it are unchanged), so a layer costs the blocks from its own on.

use crate::loader::LoadedModel;
use crate::model::config::{layer_tensor, LayerTensor};
use crate::model::{HostTensor, Llama, SequenceContext, Stage, StageState, WeightSource, Weights};
use crate::plugin::QuantConfig;
use crate::quant::layers::quantize_one;
use crate::util::par::par_map;
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor, D};
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// How a layer's cost is measured (module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Measure {
    Proxy,
    Calibrated,
    Exact,
}

impl Measure {
    pub fn name(self) -> &'static str {
        match self {
            Measure::Proxy => "proxy",
            Measure::Calibrated => "calibrated",
            Measure::Exact => "exact",
        }
    }
}

impl std::str::FromStr for Measure {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "proxy" => Ok(Measure::Proxy),
            "calibrated" => Ok(Measure::Calibrated),
            "exact" => Ok(Measure::Exact),
            _ => Err(format!("`{s}` is not a sensitivity measure (proxy, calibrated or exact)")),
        }
    }
}

/// One candidate setting: the plugin options it sets on top of `--opt`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    /// As given (`bits=3,group_size=128`).
    pub label: String,
    pub options: Vec<(String, String)>,
}

/// One layer's measurements, per candidate (in the order the candidates were given).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LayerRow {
    pub name: String,
    pub params: u64,
    pub bytes: Vec<u64>,
    /// Mean per token of ‖(W − Ŵ) x‖² on the calibration text.
    pub proxy: Vec<f64>,
    /// KL (nats/token) of this layer alone quantized, where measured.
    pub kl: Vec<Option<f64>>,
}

/// Every layer's measurements.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sensitivity {
    pub measure: Measure,
    pub candidates: Vec<Candidate>,
    /// The candidate the `calibrated` measure measures exactly (index into `candidates`).
    pub reference: usize,
    pub tokens: u64,
    pub layers: Vec<LayerRow>,
    /// Seconds: the unquantized pass with the Hessians, quantizing and the proxies, the
    /// exact measurements.
    pub seconds_baseline: f64,
    pub seconds_quantize: f64,
    pub seconds_exact: f64,
}

impl Sensitivity {
    /// The predicted KL of layer `l` at candidate `c` under this measure (negative
    /// measurements, f32 round-off around zero, count as zero).
    pub fn predicted(&self, l: usize, c: usize) -> f64 {
        let row = &self.layers[l];
        match self.measure {
            Measure::Proxy => row.proxy[c],
            Measure::Exact => row.kl[c].unwrap_or(f64::NAN).max(0.0),
            Measure::Calibrated => {
                let (kr, pr) =
                    (row.kl[self.reference].unwrap_or(f64::NAN).max(0.0), row.proxy[self.reference]);
                if pr > 0.0 {
                    kr * row.proxy[c] / pr
                } else {
                    0.0
                }
            }
        }
    }

    /// Whether costs are in nats per token (all but `proxy`).
    pub fn in_nats(&self) -> bool {
        self.measure != Measure::Proxy
    }

    /// With exact measurements, how well the calibrated proxy (scaled at the reference)
    /// predicts each other candidate's per-layer KL; empty for the other measures.
    pub fn calibrated_check(&self) -> Vec<ProxyCheck> {
        if self.measure != Measure::Exact {
            return vec![];
        }
        let cal = Sensitivity { measure: Measure::Calibrated, ..self.clone() };
        (0..self.candidates.len())
            .filter(|&c| c != self.reference)
            .map(|c| {
                let exact: Vec<f64> = (0..self.layers.len()).map(|l| self.predicted(l, c)).collect();
                let pred: Vec<f64> = (0..self.layers.len()).map(|l| cal.predicted(l, c)).collect();
                let mut ratios: Vec<f64> =
                    exact.iter().zip(&pred).filter(|(e, _)| **e > 0.0).map(|(e, p)| p / e).collect();
                ratios.sort_by(f64::total_cmp);
                ProxyCheck {
                    candidate: self.candidates[c].label.clone(),
                    median_ratio: ratios.get(ratios.len() / 2).copied(),
                    spearman: spearman(&pred, &exact),
                    sum_exact: exact.iter().sum(),
                    sum_predicted: pred.iter().sum(),
                }
            })
            .collect()
    }
}

/// How the calibrated proxy predicted one candidate's exact per-layer KL: Spearman's rank
/// correlation over layers, the median ratio predicted/exact, and the two sums.
#[derive(Debug, Clone, Serialize)]
pub struct ProxyCheck {
    pub candidate: String,
    pub median_ratio: Option<f64>,
    pub spearman: f64,
    pub sum_exact: f64,
    pub sum_predicted: f64,
}

/// Ranks of `v` from 0, ties at their mean rank.
fn ranks(v: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    let mut r = vec![0.0; v.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && v[idx[j + 1]] == v[idx[i]] {
            j += 1;
        }
        for k in i..=j {
            r[idx[k]] = (i + j) as f64 / 2.0;
        }
        i = j + 1;
    }
    r
}

/// Spearman's rank correlation (Pearson's over ranks, ties at their mean rank).
fn spearman(a: &[f64], b: &[f64]) -> f64 {
    let (ra, rb) = (ranks(a), ranks(b));
    let n = ra.len() as f64;
    let (ma, mb) = (ra.iter().sum::<f64>() / n, rb.iter().sum::<f64>() / n);
    let cov: f64 = ra.iter().zip(&rb).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = ra.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = rb.iter().map(|y| (y - mb).powi(2)).sum();
    cov / (va * vb).sqrt()
}

/// A linear layer of the model: block, tensor, name, rows, cols.
struct Layer {
    block: usize,
    tensor: LayerTensor,
    name: String,
    rows: usize,
    cols: usize,
}

/// The unquantized model's pass over the windows: each block's input per window, each
/// stage's input Hessian, and per window the next-token probabilities with Σ p log p.
struct Baseline {
    inputs: Vec<Vec<Tensor>>,
    /// By block, by stage in [`Stage::INPUTS`] order: (cols, cols) f32.
    hessians: Vec<Vec<Tensor>>,
    probs: Vec<Tensor>,
    neg_entropy: Vec<Tensor>,
    tokens: u64,
}

fn baseline(llama: &Llama, windows: &[Vec<u32>], ctx: &SequenceContext) -> Result<Baseline> {
    let n = llama.blocks().len();
    let mut inputs: Vec<Vec<Tensor>> = vec![vec![]; n];
    let mut xtx: Vec<Vec<Option<Tensor>>> = vec![vec![None; Stage::INPUTS.len()]; n];
    let (mut probs, mut neg_entropy) = (vec![], vec![]);
    let mut tokens = 0u64;
    for w in windows {
        let mut x = llama.embed(w)?;
        for (b, block) in llama.blocks().iter().enumerate() {
            inputs[b].push(x.clone());
            let mut st = StageState::new(x);
            for (s, stage) in Stage::INPUTS.into_iter().enumerate() {
                let inp = block.advance(&mut st, stage, ctx.rope(), &ctx.mask)?;
                let inp = inp.squeeze(0)?.to_dtype(DType::F32)?;
                let h = inp.t()?.matmul(&inp)?;
                xtx[b][s] = Some(match xtx[b][s].take() {
                    Some(a) => (a + h)?,
                    None => h,
                });
            }
            x = block.advance(&mut st, Stage::Output, ctx.rope(), &ctx.mask)?;
        }
        let lp = candle_nn::ops::log_softmax(&llama.forward_from(n, &x, ctx)?.squeeze(0)?, D::Minus1)?;
        let p = lp.exp()?;
        neg_entropy.push((&p * &lp)?.sum(D::Minus1)?);
        probs.push(p);
        tokens += w.len() as u64;
    }
    // GPTQ's scaling, 2/n Σ x xᵀ (calib::stats).
    let scale = 2.0 / tokens as f64;
    let hessians = xtx
        .into_iter()
        .map(|b| b.into_iter().map(|h| Ok((h.context("no calibration windows")? * scale)?)).collect())
        .collect::<Result<_>>()?;
    Ok(Baseline { inputs, hessians, probs, neg_entropy, tokens })
}

/// Mean KL(baseline ‖ model) per token over the windows, the model run from block `from`.
fn kl_from(llama: &Llama, from: usize, b: &Baseline, ctx: &SequenceContext) -> Result<f64> {
    let mut sum = 0.0;
    for (w, x) in b.inputs[from].iter().enumerate() {
        let lq = candle_nn::ops::log_softmax(&llama.forward_from(from, x, ctx)?.squeeze(0)?, D::Minus1)?;
        let cross = (&b.probs[w] * lq)?.sum(D::Minus1)?;
        sum += (&b.neg_entropy[w] - cross)?.to_dtype(DType::F64)?.sum_all()?.to_scalar::<f64>()?;
    }
    Ok(sum / b.tokens as f64)
}

/// Put `data` in as layer `l` of the built model (one linear of one block re-uploaded).
fn swap(llama: &mut Llama, l: &Layer, data: Vec<f32>, device: &Device) -> Result<()> {
    let dtype = llama.dtype;
    let w: Weights = [(l.name.clone(), HostTensor { shape: vec![l.rows, l.cols], data })].into();
    let block = llama.block_mut(l.block).context("no such block")?;
    block.reload(&WeightSource::new(&w, device, dtype, None)?, l.block, &[l.tensor])
}

/// Measure every linear layer of `m` under each candidate, `configs[c]` being the plugin
/// configured with `candidates[c]` (module docs). `windows` are the calibration windows, all
/// of one length.
#[allow(clippy::too_many_arguments)]
pub fn measure(
    m: &LoadedModel,
    configs: &[QuantConfig],
    candidates: &[Candidate],
    windows: &[Vec<u32>],
    measure: Measure,
    reference: usize,
    threads: usize,
    device: &Device,
) -> Result<Sensitivity> {
    if candidates.is_empty() || configs.len() != candidates.len() {
        bail!("{} candidates with {} configurations", candidates.len(), configs.len());
    }
    if reference >= candidates.len() {
        bail!("--reference {} is not one of the {} candidates", reference + 1, candidates.len());
    }
    let cfg = &m.config;
    let layers: Vec<Layer> = (0..cfg.num_hidden_layers)
        .flat_map(|block| {
            LayerTensor::LINEAR.map(|tensor| {
                let (rows, cols) = cfg.linear_shape(tensor);
                Layer { block, tensor, name: layer_tensor(block, tensor), rows, cols }
            })
        })
        .collect();
    let t = Instant::now();
    let mut llama = Llama::new(cfg, &m.weights, device)?;
    let seq = windows.first().map_or(0, Vec::len);
    if windows.iter().any(|w| w.len() != seq) {
        bail!("calibration windows differ in length");
    }
    let ctx = SequenceContext::new(cfg, seq, device, llama.dtype)?;
    let base = baseline(&llama, windows, &ctx)?;
    let seconds_baseline = t.elapsed().as_secs_f64();
    tracing::info!("unquantized pass with the Hessians over {} tokens: {seconds_baseline:.1} s", base.tokens);
    let mut rows: Vec<LayerRow> = layers
        .iter()
        .map(|l| LayerRow {
            name: l.name.clone(),
            params: (l.rows * l.cols) as u64,
            bytes: vec![],
            proxy: vec![],
            kl: vec![],
        })
        .collect();
    let (mut seconds_quantize, mut seconds_exact) = (0.0, 0.0);
    let exact_for =
        |c: usize| measure == Measure::Exact || (measure == Measure::Calibrated && c == reference);
    let bar = indicatif::ProgressBar::new(
        (0..candidates.len()).map(|c| if exact_for(c) { layers.len() as u64 } else { 1 }).sum(),
    );
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] sensitivity {wide_bar} {pos}/{len} {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    for (c, qc) in configs.iter().enumerate() {
        bar.set_message(candidates[c].label.clone());
        let t = Instant::now();
        let deq = par_map(threads, &layers, |_, l| {
            let w = &m.weights.get(&l.name).with_context(|| format!("layer {} is missing", l.name))?.data;
            let (p, d) = quantize_one(qc, &l.name, l.rows, l.cols, w, None)?;
            Ok((p.bytes(), d))
        })
        .with_context(|| format!("--candidate {}", candidates[c].label))?;
        for ((l, row), (bytes, d)) in layers.iter().zip(rows.iter_mut()).zip(&deq) {
            let w = &m.weights[&l.name].data;
            let diff: Vec<f32> = w.iter().zip(d).map(|(a, b)| a - b).collect();
            let dw = Tensor::from_vec(diff, (l.rows, l.cols), device)?;
            let h = &base.hessians[l.block][stage_of(l.tensor)];
            let e = (dw.matmul(h)? * &dw)?.to_dtype(DType::F64)?.sum_all()?.to_scalar::<f64>()? / 2.0;
            row.bytes.push(*bytes);
            row.proxy.push(e);
        }
        seconds_quantize += t.elapsed().as_secs_f64();
        tracing::info!(
            "{}: every layer quantized, proxies in {:.1} s",
            candidates[c].label,
            t.elapsed().as_secs_f64()
        );
        if !exact_for(c) {
            for row in rows.iter_mut() {
                row.kl.push(None);
            }
            bar.inc(1);
            continue;
        }
        let t = Instant::now();
        for ((l, row), (_, d)) in layers.iter().zip(rows.iter_mut()).zip(deq) {
            swap(&mut llama, l, d, device)?;
            row.kl.push(Some(kl_from(&llama, l.block, &base, &ctx)?));
            swap(&mut llama, l, m.weights[&l.name].data.clone(), device)?;
            bar.inc(1);
        }
        seconds_exact += t.elapsed().as_secs_f64();
        tracing::info!(
            "{}: KL of each layer alone in {:.1} s",
            candidates[c].label,
            t.elapsed().as_secs_f64()
        );
    }
    bar.finish_and_clear();
    Ok(Sensitivity {
        measure,
        candidates: candidates.to_vec(),
        reference,
        tokens: base.tokens,
        layers: rows,
        seconds_baseline,
        seconds_quantize,
        seconds_exact,
    })
}

/// Index in [`Stage::INPUTS`] of the stage whose output `t` reads.
fn stage_of(t: LayerTensor) -> usize {
    Stage::INPUTS.iter().position(|s| s.layers().contains(&t)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn spearman_is_pearson_over_ranks_with_ties_at_their_mean() {
        assert_eq!(super::ranks(&[3.0, 1.0, 3.0, 2.0]), vec![2.5, 0.0, 2.5, 1.0]);
        assert!((super::spearman(&[1.0, 2.0, 3.0], &[10.0, 20.0, 300.0]) - 1.0).abs() < 1e-12);
        assert!((super::spearman(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]) + 1.0).abs() < 1e-12);
        // Ranks (0, 1, 2) and (0.5, 0.5, 2): Pearson's r = 0.866….
        assert!((super::spearman(&[1.0, 2.0, 3.0], &[5.0, 5.0, 9.0]) - 0.75f64.sqrt()).abs() < 1e-12);
    }
}
