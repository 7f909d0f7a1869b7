//! The calibration run: calibration windows go through the model block by block, each
//! linear layer's input is recorded (what its plugin asked for: statistics, raw rows or the
//! Hessian), and the layers are quantized with it.
//!
//! Order, as the references run it ([`CalibMode`]):
//! - `sequential` (default; GPTQ's `--true-sequential`, AWQ's layer loop): block `i` sees the
//!   outputs of blocks `0..i` already quantized, and inside a block q/k/v are quantized first,
//!   then `o` sees the quantized attention, then gate/up, then `down` sees the quantized MLP
//!   input;
//! - `block`: as above, but all seven layers of a block from one pass over the unquantized
//!   block (GPTQ without `--true-sequential`);
//! - `parallel`: every layer from the unquantized model's activations.
//!
//! A plugin that searches input scales (ABI 1.2, AWQ) first sees each block unquantized, as
//! llm-awq's `run_awq` does: one pass of the block's input through the block records every
//! group's input, the plugin chooses a scale per group (q/k/v, o, gate/up, down, in that
//! order), the host folds it ([`super::fold`]), and then the block's layers are calibrated and
//! quantized in the chosen order on the folded weights.
//!
//! The windows' hidden states stay on the device the model runs on; sums are accumulated
//! there ([`crate::calib::stats`]).

use super::fold::{block_groups, fold};
use super::layers::{quantize_configured, LayerConfigs, LayerResult};
use crate::calib::stats::Accumulator;
use crate::calib::text::{windows, CalibText};
use crate::loader::LoadedModel;
use crate::model::config::{layer_tensor, EMBED, LM_HEAD, NORM};
use crate::model::llama::rms_norm;
use crate::model::{Block, SequenceContext, Stage, StageState, WeightSource, MAX_POSITIONS};
use crate::plugin::{CalibrationData, GroupLayer, LayerGroup, QuantConfig};
use crate::results::schema::{CalibrationInfo, ScaleGroup};
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::time::Instant;

/// In which order layers see calibration activations (module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CalibMode {
    Sequential,
    Block,
    Parallel,
}

impl CalibMode {
    pub fn name(self) -> &'static str {
        match self {
            CalibMode::Sequential => "sequential",
            CalibMode::Block => "block",
            CalibMode::Parallel => "parallel",
        }
    }
}

impl std::str::FromStr for CalibMode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "sequential" => Ok(CalibMode::Sequential),
            "block" => Ok(CalibMode::Block),
            "parallel" => Ok(CalibMode::Parallel),
            _ => Err(format!("`{s}` is not a calibration mode (sequential, block or parallel)")),
        }
    }
}

/// Everything a calibration run needs, resolved from the command line (the text is cut
/// into windows once the model's tokenizer is known).
pub struct CalibSettings {
    pub text: CalibText,
    /// Windows of text.
    pub samples: usize,
    /// Tokens per window; `None`: 2048, or the model's positions if fewer.
    pub seq_len: Option<usize>,
    /// Seed of the window offsets.
    pub seed: u64,
    pub mode: CalibMode,
    /// Raw input rows kept per layer when a plugin asks for samples (spread over the windows).
    pub max_sample_rows: usize,
}

impl CalibSettings {
    /// The windows for model `m`: `seq_len` checked against its positions.
    pub fn windows(&self, m: &LoadedModel) -> Result<Vec<Vec<u32>>> {
        let positions = m.config.max_position_embeddings.min(MAX_POSITIONS);
        let seq_len = match self.seq_len {
            Some(l) if l == 0 || l > positions => {
                bail!("--calib-seq-len {l} is out of range: model {} has {positions} positions", m.id)
            }
            Some(l) => l,
            None => 2048.min(positions),
        };
        windows(&m.tokenizer, &self.text, self.samples, seq_len, self.seed)
    }
}

/// Where a calibration run's time goes, by phase ([`Phases::NAMES`]). Laps are host clock
/// readings; with `RUST_LOG=llq_host=debug` the device is synchronized at each lap so the GPU's
/// work lands in the phase that queued it (a plain run keeps its asynchrony, and its device work
/// shows up in whichever phase waits for it), and each block's split is logged.
struct Phases {
    device: Device,
    sync: bool,
    t: Instant,
    sums: [f64; 6],
}

impl Phases {
    const NAMES: [&'static str; 6] = ["forward", "statistics", "transfer", "quantize", "reload", "search"];
    const FORWARD: usize = 0;
    const STATS: usize = 1;
    const TRANSFER: usize = 2;
    const QUANTIZE: usize = 3;
    const RELOAD: usize = 4;
    const SEARCH: usize = 5;

    fn new(device: &Device) -> Self {
        let sync = tracing::enabled!(tracing::Level::DEBUG) && !device.is_cpu();
        Phases { device: device.clone(), sync, t: Instant::now(), sums: [0.0; 6] }
    }
    /// Charge the time since the last lap to phase `i`.
    fn lap(&mut self, i: usize) {
        if self.sync {
            let _ = self.device.synchronize();
        }
        self.sums[i] += self.t.elapsed().as_secs_f64();
        self.t = Instant::now();
    }
    fn summary(&self) -> String {
        let parts: Vec<String> =
            Self::NAMES.iter().zip(self.sums).map(|(n, s)| format!("{n} {s:.1} s")).collect();
        parts.join(", ")
    }
}

/// Quantize the layers of `layers` that have calibration data in `pending` (and take them out).
fn quantize_pending(
    lc: &LayerConfigs,
    weights: &mut crate::model::Weights,
    layers: &[(String, usize, usize)],
    pending: &mut HashMap<String, CalibrationData>,
    threads: usize,
    keep_packed: bool,
) -> Result<Vec<LayerResult>> {
    let todo: Vec<(String, usize, usize)> =
        layers.iter().filter(|(n, _, _)| pending.contains_key(n)).cloned().collect();
    let r = quantize_configured(lc, weights, &todo, pending, threads, keep_packed)?;
    pending.clear();
    Ok(r)
}

/// Search and fold the input scales of block `l` (module docs): one pass of the block's
/// inputs `xs` through the unquantized block (built by `load`), then one `search_scales` per
/// group that holds a layer of `shape`.
fn fold_block_scales(
    q: &QuantConfig,
    m: &mut LoadedModel,
    l: usize,
    xs: &[Tensor],
    ctx: &SequenceContext,
    load: &dyn Fn(&crate::model::Weights) -> Result<Block>,
    shape: &HashMap<&str, (usize, usize)>,
) -> Result<Vec<ScaleGroup>> {
    // Groups with at least one layer being quantized (the fold still covers all readers).
    let groups: Vec<_> = block_groups(&m.config, l)
        .into_iter()
        .filter(|g| g.layers.iter().any(|n| shape.contains_key(n.as_str())))
        .collect();
    if groups.is_empty() {
        return Ok(vec![]);
    }
    let block = load(&m.weights)?;
    let width = |g: &super::fold::Group| m.weights.get(&g.layers[0]).map_or(0, |w| w.shape[1]);
    let mut accs: Vec<Accumulator> =
        groups.iter().map(|g| Accumulator::new(width(g), q.calibration(), 0)).collect();
    for x in xs {
        let mut st = StageState::new(x.clone());
        for stage in Stage::INPUTS {
            let input = block.advance(&mut st, stage, ctx.rope(), &ctx.mask)?;
            if let Some(i) = groups.iter().position(|g| g.stage == stage) {
                accs[i].add(&input)?;
            }
        }
    }
    drop(block);
    let mut chosen = vec![];
    for (g, acc) in groups.iter().zip(accs) {
        let data = acc.finish().with_context(|| format!("calibrating the group after {}", g.producer))?;
        let scales = {
            let layers = g
                .layers
                .iter()
                .map(|n| {
                    let w = m.weights.get(n).with_context(|| format!("layer {n} is missing"))?;
                    Ok(GroupLayer { name: n, rows: w.shape[0], cols: w.shape[1], data: &w.data })
                })
                .collect::<Result<Vec<_>>>()?;
            let group = LayerGroup {
                producer: &g.producer,
                producer_kind: g.producer_kind,
                layers,
                calibration: &data,
            };
            q.search_scales(&group)?
        };
        if let Some(c) = scales {
            fold(&mut m.weights, g, &c.scales)?;
            let (min, max) = c.scales.iter().fold((f32::INFINITY, 0f32), |(a, b), &v| (a.min(v), b.max(v)));
            chosen.push(ScaleGroup {
                producer: g.producer.clone(),
                layers: g.layers.clone(),
                min,
                max,
                info: c.info,
            });
        }
    }
    Ok(chosen)
}

/// Quantize `layers` of `m`, each with its configuration in `lc` (the model's options search
/// and fold input scales), calibrating on `s` through the model on `device`.
pub fn quantize_calibrated(
    lc: &LayerConfigs,
    m: &mut LoadedModel,
    layers: &[(String, usize, usize)],
    s: &CalibSettings,
    device: &Device,
    threads: usize,
    keep_packed: bool,
) -> Result<(Vec<LayerResult>, CalibrationInfo)> {
    let t0 = Instant::now();
    let q = lc.base();
    let need = lc.calibration();
    let cfg = m.config.clone();
    let windows = s.windows(m)?;
    let seq_len = windows[0].len();
    let dtype = if device.is_cpu() { DType::F32 } else { DType::BF16 };
    let ctx = SequenceContext::new(&cfg, seq_len, device, dtype)?;
    let embed = WeightSource::new(&m.weights, device, dtype, None)?.tensor(EMBED)?;
    let mut xs: Vec<Tensor> = windows
        .iter()
        .map(|w| Ok(embed.index_select(&Tensor::new(w.as_slice(), device)?, 0)?.unsqueeze(0)?))
        .collect::<Result<_>>()?;
    drop(embed);
    let shape: HashMap<&str, (usize, usize)> =
        layers.iter().map(|(n, r, c)| (n.as_str(), (*r, *c))).collect();
    let rows_per_window = s.max_sample_rows.div_ceil(windows.len());
    let n_blocks = cfg.num_hidden_layers;
    let bar = indicatif::ProgressBar::new(n_blocks as u64 + shape.contains_key(LM_HEAD) as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] calibrating {wide_bar} layer {pos}/{len}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut results = Vec::with_capacity(layers.len());
    let mut scale_groups = vec![];
    let mut ph = Phases::new(device);
    // Plugins' factorizations (GPTQ) on the GPU while this runs, when `$LLQ_SOLVE` asks.
    #[cfg(feature = "cuda")]
    let _solver = match device {
        Device::Cuda(d) => crate::gpu::solve::install(d)?,
        _ => None,
    };
    for l in 0..n_blocks {
        let load =
            |w: &crate::model::Weights| Block::load(&WeightSource::new(w, device, dtype, None)?, &cfg, l);
        ph.lap(Phases::FORWARD);
        if q.plugin.info.group_scales {
            scale_groups.extend(fold_block_scales(q, m, l, &xs, &ctx, &load, &shape)?);
            ph.lap(Phases::SEARCH);
        }
        let mut states: Vec<StageState> = xs.drain(..).map(StageState::new).collect();
        // Reloaded only where quantized layers must take effect (after each stage in
        // `sequential`, after the block in `block`); `parallel` keeps it unquantized throughout.
        let mut block = load(&m.weights)?;
        ph.lap(Phases::RELOAD);
        let mut pending: HashMap<String, CalibrationData> = HashMap::new();
        for stage in Stage::INPUTS {
            let mut names: Vec<String> = stage
                .layers()
                .iter()
                .map(|&t| layer_tensor(l, t))
                .filter(|n| shape.contains_key(n.as_str()))
                .collect();
            let mut acc = names.first().map(|n| Accumulator::new(shape[n.as_str()].1, need, rows_per_window));
            for st in states.iter_mut() {
                let input = block.advance(st, stage, ctx.rope(), &ctx.mask)?;
                ph.lap(Phases::FORWARD);
                if let Some(acc) = acc.as_mut() {
                    acc.add(&input)?;
                    ph.lap(Phases::STATS);
                }
            }
            if let Some(acc) = acc {
                let data = acc.finish().with_context(|| format!("calibrating {}", names[0]))?;
                // One copy per layer after the first: down_proj's Hessian alone is 512 MB (f64,
                // 8192²) on Llama-3.2-1B, and only one layer reads it.
                if let Some(last) = names.pop() {
                    pending.extend(names.into_iter().map(|n| (n, data.clone())));
                    pending.insert(last, data);
                }
                ph.lap(Phases::TRANSFER);
            }
            // `sequential`: quantize this stage's layers now, so the next stages see them.
            if s.mode == CalibMode::Sequential && !pending.is_empty() {
                results.extend(quantize_pending(
                    lc,
                    &mut m.weights,
                    layers,
                    &mut pending,
                    threads,
                    keep_packed,
                )?);
                ph.lap(Phases::QUANTIZE);
                // Only this stage's layers changed.
                block.reload(&WeightSource::new(&m.weights, device, dtype, None)?, l, stage.layers())?;
                ph.lap(Phases::RELOAD);
            }
        }
        results.extend(quantize_pending(lc, &mut m.weights, layers, &mut pending, threads, keep_packed)?);
        ph.lap(Phases::QUANTIZE);
        if s.mode == CalibMode::Block {
            // The block's output through its quantized layers: recompute from its input.
            block = load(&m.weights)?;
            for st in states.iter_mut() {
                *st = StageState::new(st.x.clone());
                for stage in Stage::INPUTS {
                    block.advance(st, stage, ctx.rope(), &ctx.mask)?;
                }
            }
        }
        xs = states
            .iter_mut()
            .map(|st| block.advance(st, Stage::Output, ctx.rope(), &ctx.mask))
            .collect::<Result<_>>()?;
        ph.lap(Phases::FORWARD);
        tracing::debug!("after block {l}: {}", ph.summary());
        bar.inc(1);
    }
    if let Some(&(rows, cols)) = shape.get(LM_HEAD) {
        let norm = WeightSource::new(&m.weights, device, dtype, None)?.tensor(NORM)?;
        let mut acc = Accumulator::new(cols, need, rows_per_window);
        for x in &xs {
            acc.add(&rms_norm(x, &norm, cfg.rms_norm_eps)?)?;
        }
        let calib = HashMap::from([(LM_HEAD.to_string(), acc.finish()?)]);
        ph.lap(Phases::TRANSFER);
        results.extend(quantize_configured(
            lc,
            &mut m.weights,
            &[(LM_HEAD.into(), rows, cols)],
            &calib,
            threads,
            keep_packed,
        )?);
        ph.lap(Phases::QUANTIZE);
        bar.inc(1);
    }
    bar.finish_and_clear();
    let seconds = t0.elapsed().as_secs_f64();
    tracing::info!("calibration: {seconds:.1} s ({})", ph.summary());
    // The caller's order, whatever order the groups ran in.
    let order: HashMap<&str, usize> =
        layers.iter().enumerate().map(|(i, (n, _, _))| (n.as_str(), i)).collect();
    results.sort_by_key(|r| order.get(r.name.as_str()).copied().unwrap_or(usize::MAX));
    if results.len() != layers.len() {
        bail!("calibration quantized {} of {} layers", results.len(), layers.len());
    }
    let info = CalibrationInfo {
        source: s.text.source.clone(),
        sha256: s.text.sha256.clone(),
        samples: windows.len(),
        seq_len,
        seed: s.seed,
        mode: s.mode.name().into(),
        tokens: (windows.len() * seq_len) as u64,
        seconds,
        quantize_seconds: Some(ph.sums[Phases::QUANTIZE]),
        search_seconds: q.plugin.info.group_scales.then_some(ph.sums[Phases::SEARCH]),
        peak_rss_bytes: crate::util::mem::peak_rss_bytes(),
        scale_groups,
    };
    Ok((results, info))
}
