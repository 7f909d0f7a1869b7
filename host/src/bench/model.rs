//! `llq-host bench`: prefill and decode speed of a model, optionally quantized, on the CPU
//! or a GPU (with the plugin's kernels), against the copy-bandwidth roofline.

use super::attention::AttentionCheck;
use crate::device::{allocated_bytes, copy_bandwidth, free_bytes, reset_peak, trim_pool};
use crate::generate::DecodePath;
use crate::model::{Llama, PrefillFusion};
use crate::plugin::QuantConfig;
use crate::quant::{model_size, prepare, CalibSettings, GpuPath, QuantizeOptions};
use crate::results::schema::{Build, Size};
use crate::util::par::par_map;
use crate::util::stats::{spread, Spread};
use anyhow::Result;
use candle_core::Device;
use serde::Serialize;
use std::time::Instant;

/// What `model_bench` measures.
pub struct ModelBenchSettings {
    /// Prompt lengths for prefill.
    pub prompt_lens: Vec<usize>,
    /// Batch sizes for decode.
    pub batch_sizes: Vec<usize>,
    /// Decode steps timed per repeat.
    pub decode_steps: usize,
    /// Prompt tokens before the timed decode steps.
    pub context: usize,
    /// Timed repeats after one warm-up.
    pub repeats: usize,
    /// Threads for quantization.
    pub threads: usize,
    /// `cpu`, `cuda[:N]` or `auto`.
    pub device: String,
    /// Calibration for plugins that need it.
    pub calibration: Option<CalibSettings>,
    /// Per-layer options (`--opt-layer`).
    pub layer_opts: Vec<crate::quant::LayerOpt>,
    /// Run the model file's own quantization with the plugin (`--native`).
    pub native: bool,
    /// Decode step paths to time, each batch size through each (`--decode`; on the CPU only
    /// eager runs).
    pub decode_paths: Vec<DecodePath>,
    /// Run the accuracy checks beside the timings (`--no-checks` turns them off for profilers):
    /// GPU logits vs the CPU model, the prefill kernel vs f32 attention, the unfused prefill A/B.
    pub checks: bool,
}

#[derive(Debug, Serialize)]
pub struct PrefillRow {
    pub prompt_tokens: usize,
    pub seconds: Spread,
    pub tokens_per_s: f64,
    /// The fused GPU kernels this row's prefills took (GPU, sm_80+; `$LLQ_PREFILL_ATTENTION`,
    /// `$LLQ_PREFILL_POINTWISE`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fusion: Option<PrefillFusion>,
    /// The same prefills through candle's ops alone (no fused kernel), in the same process
    /// right after.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unfused: Option<PrefillAb>,
    /// The same prefills with the element-wise kernels (q/k/v split with RoPE, SwiGLU) in the
    /// other state, the attention as in the row: written to agree bit for bit, so
    /// `logits_rel_err` is expected to be 0.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pointwise_flipped: Option<PrefillAb>,
}

/// The A/B of one prefill length against another choice of kernels.
#[derive(Debug, Serialize)]
pub struct PrefillAb {
    pub fusion: PrefillFusion,
    pub seconds: Spread,
    /// max |Δ| / max |other| of the last position's logits (same prompt), and whether the
    /// greedy token agreed.
    pub logits_rel_err: f64,
    pub greedy_agrees: bool,
}

#[derive(Debug, Serialize)]
pub struct DecodeRow {
    pub batch: usize,
    pub context: usize,
    /// What ran the steps: `eager` (candle, one launch per op, logits to the host), or
    /// `cuda-graph` (the captured step on a static cache, greedy token on the device: what
    /// `run --decode graph` generates with), or `static cache, direct launches (why)`.
    pub path: String,
    /// Graph rows: max |Δ| / max |eager| of one step's logits from the same prefill and
    /// token, and whether every row's greedy token agreed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logits_rel_err_vs_eager: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub greedy_agrees_with_eager: Option<bool>,
    /// Graph rows: whether the step's own greedy tokens (the device argmax) are the host's
    /// argmax of the same step's logits, every row.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_argmax_agrees: Option<bool>,
    /// Graph rows: the step's device time by kind of work (seconds per step, CUDA events
    /// between launches issued one by one, largest first).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub step_profile: Vec<ProfileEntry>,
    /// Graph rows: whether the step's launches were programmatic dependents of the kernel
    /// before (`$LLQ_PDL`, sm_90; `gpu::launch`), and which attention kernel (RoPE folded in or
    /// not) and how many argmax blocks a row it took.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub programmatic: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step_kernels: Option<String>,
    /// Graph rows: the same steps with one setting changed, interleaved with the row's own
    /// (paired comparisons): programmatic launches flipped where the device has them, and
    /// the previous attention kernel where the row took v3.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ab: Vec<DecodeAb>,
    /// Seconds per decode step (one token for each of `batch` rows).
    pub step_seconds: Spread,
    pub tokens_per_s: f64,
    /// Bytes one step must read (every weight matrix once, lm_head included, plus the KV
    /// cache) and that over the measured copy bandwidth: the step's floor (GPU only).
    pub bytes_per_step: u64,
    pub roofline_s: Option<f64>,
    pub roofline_fraction: Option<f64>,
}

/// An interleaved A/B of the captured step against another launch setting: `pairs` rounds,
/// each one timed run of `steps` steps per setting from the same prefill (the order alternating
/// between rounds).
#[derive(Debug, Serialize)]
pub struct DecodeAb {
    /// What the other side changed (`programmatic launches off`, `attention per-head-v2`, …).
    pub other: String,
    pub pairs: usize,
    /// Seconds per step of the row's own setting and of this one, over the same rounds.
    pub row_step_seconds: Spread,
    pub step_seconds: Spread,
    /// Mean per-round difference (this setting − the row's), seconds per step, with a 95%
    /// percentile-bootstrap interval, and the exact sign-flip test's two-sided p.
    pub paired_diff_s: f64,
    pub paired_diff_lo_s: f64,
    pub paired_diff_hi_s: f64,
    pub sign_flip_p: f64,
    /// From the same prefill and token: max |Δ| / max |row's| of the first step's logits.
    /// Then after `steps` steps: max |Δ| of the last logits and whether every step's greedy
    /// tokens agreed. A launch setting changes no arithmetic, so anything but 0, 0 and true
    /// is a race; another kernel may differ by its order of f32 sums, and once one greedy
    /// token differs (random weights give nearly flat logits) the later steps differ.
    pub first_step_logits_rel_err: f64,
    pub logits_max_abs_diff: f64,
    pub tokens_agree: bool,
}

#[derive(Debug, Serialize)]
pub struct ProfileEntry {
    pub what: String,
    pub seconds: f64,
}

#[derive(Debug, Serialize)]
pub struct ModelBenchReport {
    /// The llq build that measured (version, git revision).
    pub llq: Build,
    /// Whether the accuracy checks ran (`--no-checks` turns them off).
    pub checks: bool,
    pub model: String,
    pub precision: String,
    pub method: String,
    pub options: String,
    /// `weight-only: …` for a plugin with its own matmul (`quant::WEIGHT_ONLY`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub numerics: Option<String>,
    pub device: String,
    pub repeats: usize,
    pub quantize_s: Option<f64>,
    /// Every byte the model's weights take as stored (as in `run`'s results.json).
    pub size: Size,
    /// Peak resident memory of the process (bytes; Linux), loading and quantizing included.
    pub peak_rss_bytes: Option<u64>,
    /// On a GPU: max |Δ| / max |ref| of last-position logits against the CPU f32 model (a
    /// 32-token prompt), and the same for a batch of it and a 20-token prompt left-padded
    /// to 32 (the padding mask of batched prefills).
    pub logits_rel_err_vs_cpu: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub padded_logits_rel_err_vs_cpu: Option<f64>,
    /// Device memory in use after loading the model (bytes), where the device reports it.
    pub device_memory_bytes: Option<u64>,
    /// Most device memory in use during the benchmark as sampled after every case (bytes
    /// over the free memory before the model was loaded). The device pool keeps what it
    /// reserved (`$LLQ_POOL=keep`, the default), so this is its reservation's high-water mark,
    /// temporaries within a case included; with `release` they are not seen. The allocator's
    /// own count is `peak_allocated_bytes`.
    pub peak_device_memory_bytes: Option<u64>,
    /// Bytes allocated through the device's memory pool after loading (weights and every
    /// resident tensor) and their exact high-water mark over loading and all cases (the
    /// allocator's own count, like torch's `max_memory_allocated`).
    pub allocated_after_load_bytes: Option<u64>,
    pub peak_allocated_bytes: Option<u64>,
    /// Why a requested decode path has no row for a batch size.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub decode_notes: Vec<String>,
    /// Device-to-device copy bandwidth measured before the run (bytes read + written per s).
    pub copy_bytes_per_s: Option<f64>,
    /// Time to dequantize every quantized layer once: what dequantizing per call would add
    /// to every forward pass (llq dequantizes once, at load).
    pub dequantize_all_s: Option<f64>,
    pub prefill: Vec<PrefillRow>,
    /// Where the fused prefill attention is on: its check alone against f32 attention on
    /// shapes the model does not reach (`bench::attention`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub prefill_attention_check: Vec<AttentionCheck>,
    pub decode: Vec<DecodeRow>,
}

/// max |got − reference| / max |reference|: the distance every logits check here reports.
fn max_rel_err(got: &[f32], reference: &[f32]) -> f64 {
    let scale = reference.iter().fold(0f32, |m, v| m.max(v.abs())) as f64;
    got.iter().zip(reference).fold(0f64, |m, (x, y)| m.max((x - y).abs() as f64)) / scale
}

/// Prefill and decode speed of a model (optionally quantized) on the CPU: synthetic token
/// ids, one warm-up, then `repeats` timed runs per case; median and spread.
pub fn model_bench(
    model: &str,
    quant: Option<&QuantConfig>,
    settings: &ModelBenchSettings,
) -> Result<ModelBenchReport> {
    let (threads, repeats, decode_steps) = (settings.threads, settings.repeats, settings.decode_steps);
    let dev = crate::device::open(&settings.device)?;
    let (mut quantize_s, mut dequantize_all_s) = (None, None);
    let mut packed = None;
    let mut quantization = None;
    let mut gpu_path = GpuPath::Dense;
    let imported = match quant {
        Some(q) if settings.native => Some(crate::checkpoint::import(model, q.plugin, &dev)?),
        _ => None,
    };
    let (mut m, imported) = match imported {
        Some((m, p)) => (m, Some(p)),
        None => (crate::loader::load(model)?, None),
    };
    let (method, options) = match (quant, imported) {
        (Some(q), Some(p)) => {
            quantize_s = Some(p.quantization.seconds);
            (packed, gpu_path) = (p.packed, p.path);
            let options = p.quantization.options.clone();
            quantization = Some(p.quantization);
            (q.name().to_string(), options)
        }
        (Some(q), None) => {
            let o = QuantizeOptions {
                include_lm_head: false,
                threads,
                calibration: settings.calibration.as_ref(),
                layer_opts: &settings.layer_opts,
            };
            let p = prepare(q, &mut m, &dev, &o)?;
            quantize_s = Some(p.quantization.seconds);
            (packed, gpu_path) = (p.packed, p.path);
            quantization = Some(p.quantization);
            // Re-quantize the layers to time one full dequantize pass (outside the forward);
            // a calibrated method cannot quantize without its calibration data, so it is
            // not timed (the report's field stays null).
            if q.calibration() == llq_sdk::CalibrationNeed::None {
                let layers = m.config.linear_layers();
                let packed = par_map(threads, &layers, |_, (n, r, c)| {
                    q.quantize(n, *r, *c, &m.weights[n].data, None)
                })?;
                let t = Instant::now();
                par_map(threads, &packed, |_, p| q.dequantize(p).map(|_| ()))?;
                dequantize_all_s = Some(t.elapsed().as_secs_f64());
            }
            (q.name().to_string(), q.canonical())
        }
        (None, _) => ("none".to_string(), "{}".to_string()),
    };
    let vocab = m.config.vocab_size as u64;
    let ids = |n: usize, salt: u64| -> Vec<u32> {
        (0..n as u64).map(|i| ((i * 7919 + 13 + salt * 104_729) % vocab) as u32).collect()
    };
    // The copy-bandwidth probe allocates 1 GiB: measured before the model is built, so the
    // allocation high-water mark below covers the model and the cases only.
    let copy_bytes_per_s = copy_bandwidth(&dev)?;
    let free_before = free_bytes(&dev);
    reset_peak(&dev);
    let llama = Llama::with_packed(&m.config, &m.weights, &dev, packed.as_ref())?;
    drop(packed);
    // Loading's temporaries out of the pool first: this counts what stays resident.
    trim_pool(&dev);
    let device_memory_bytes = free_before.zip(free_bytes(&dev)).map(|(a, b)| a.saturating_sub(b));
    let allocated_after_load_bytes = allocated_bytes(&dev).map(|(now, _)| now);
    let (logits_rel_err_vs_cpu, padded_logits_rel_err_vs_cpu) = if dev.is_cuda() && settings.checks {
        let cpu = Llama::new(&m.config, &m.weights, &Device::Cpu)?;
        let rel = |rows: &[Vec<u32>], pad: &[usize]| -> Result<f64> {
            let a: Vec<f32> =
                llama.step(rows, pad, &mut llama.new_cache(), true)?.flatten_all()?.to_vec1()?;
            let b: Vec<f32> = cpu.step(rows, pad, &mut cpu.new_cache(), true)?.flatten_all()?.to_vec1()?;
            Ok(max_rel_err(&a, &b))
        };
        // A second row of 20 tokens left-padded to 32 (its first 12 positions are padding).
        let short: Vec<u32> = std::iter::repeat_n(0, 12).chain(ids(20, 7)).collect();
        (Some(rel(&[ids(32, 99)], &[0])?), Some(rel(&[ids(32, 99), short], &[0, 12])?))
    } else {
        (None, None)
    };
    let size = model_size(&m, quantization.as_ref(), llama.dtype.size_in_bytes() as u64);
    m.weights.clear();
    let mut peak = device_memory_bytes;
    let mut track = || {
        if let (Some(b), Some(f)) = (free_before, free_bytes(&dev)) {
            peak = Some(peak.unwrap_or(0).max(b.saturating_sub(f)));
        }
    };
    let sync = || dev.synchronize();
    // One warm-up (whose last-position logits are kept for the A/B check), then `repeats`
    // timed prefills of `len` tokens.
    let time_prefill = |len: usize| -> Result<(Spread, Vec<f32>)> {
        let mut times = vec![];
        let mut logits = vec![];
        for r in 0..=repeats {
            let toks = ids(len, r as u64);
            sync()?;
            let t = Instant::now();
            let out = llama.step(&[toks], &[0], &mut llama.new_cache(), true)?;
            sync()?;
            if r > 0 {
                times.push(t.elapsed().as_secs_f64());
            } else {
                logits = out.flatten_all()?.to_vec1()?;
            }
        }
        Ok((spread(times), logits))
    };
    let fusion = llama.prefill_fusion();
    #[cfg(feature = "cuda")]
    let prefill_attention_check = match &dev {
        Device::Cuda(d) if fusion.is_some() && settings.checks => {
            match crate::gpu::PrefillKernels::compile(d)? {
                Some(f) => {
                    f.set_enabled(true, false);
                    super::attention::check(&f, &dev)?
                }
                None => vec![],
            }
        }
        _ => vec![],
    };
    #[cfg(not(feature = "cuda"))]
    let prefill_attention_check = vec![];
    // The same prefills with other kernels, compared with the row's (`logits`).
    let ab = |len: usize, with: PrefillFusion, logits: &[f32]| -> Result<PrefillAb> {
        let row = llama.prefill_fusion();
        llama.set_prefill_fusion(with);
        let u = time_prefill(len);
        if let Some(f) = row {
            llama.set_prefill_fusion(f);
        }
        let (seconds, reference) = u?;
        Ok(PrefillAb {
            fusion: with,
            seconds,
            logits_rel_err: max_rel_err(logits, &reference),
            greedy_agrees: crate::generate::argmax(logits) == crate::generate::argmax(&reference),
        })
    };
    let mut prefill = vec![];
    for &len in &settings.prompt_lens {
        let (s, logits) = time_prefill(len)?;
        track();
        let (mut unfused, mut pointwise_flipped) = (None, None);
        if let (Some(f), true) = (fusion, settings.checks) {
            unfused = Some(ab(len, PrefillFusion { attention: false, pointwise: false }, &logits)?);
            track();
            pointwise_flipped = Some(ab(len, PrefillFusion { pointwise: !f.pointwise, ..f }, &logits)?);
            track();
        }
        prefill.push(PrefillRow {
            prompt_tokens: len,
            tokens_per_s: len as f64 / s.median,
            seconds: s,
            fusion,
            unfused,
            pointwise_flipped,
        });
    }
    let context = settings.context;
    let mut decode = vec![];
    let mut decode_notes = vec![];
    let row = |b: usize, path: String, s: Spread| {
        // The KV cache grows from `context` to `context + decode_steps`: count its mean.
        let bytes_per_step = llama.step_bytes(b, context + decode_steps / 2);
        let roofline_s = copy_bytes_per_s.map(|bw| bytes_per_step as f64 / bw);
        DecodeRow {
            batch: b,
            context,
            path,
            logits_rel_err_vs_eager: None,
            greedy_agrees_with_eager: None,
            device_argmax_agrees: None,
            step_profile: vec![],
            programmatic: None,
            step_kernels: None,
            ab: vec![],
            tokens_per_s: b as f64 / s.median,
            roofline_fraction: roofline_s.map(|r| r / s.median),
            step_seconds: s,
            bytes_per_step,
            roofline_s,
        }
    };
    for &b in &settings.batch_sizes {
        let prompts =
            |r: usize| -> Vec<Vec<u32>> { (0..b).map(|i| ids(context, (r * 31 + i) as u64)).collect() };
        let feed = |s: usize| -> Vec<u32> { (0..b).map(|i| ((s * 17 + i) as u64 % vocab) as u32).collect() };
        for path in &settings.decode_paths {
            match path {
                DecodePath::Eager => {
                    let mut times = vec![];
                    for r in 0..=repeats {
                        let mut cache = llama.new_cache();
                        llama.step(&prompts(r), &vec![0; b], &mut cache, true)?;
                        sync()?;
                        let t = Instant::now();
                        for s in 0..decode_steps {
                            let next: Vec<Vec<u32>> = feed(s).into_iter().map(|t| vec![t]).collect();
                            llama.step(&next, &vec![0; b], &mut cache, true)?;
                        }
                        sync()?;
                        if r > 0 {
                            times.push(t.elapsed().as_secs_f64() / decode_steps as f64);
                        }
                    }
                    decode.push(row(b, "eager".into(), spread(times)));
                }
                DecodePath::Graph => {
                    match graph_decode(&llama, b, context, decode_steps, repeats, &prompts, &feed)? {
                        Ok(g) => {
                            let mut r = row(b, g.path, g.step_seconds);
                            (r.logits_rel_err_vs_eager, r.greedy_agrees_with_eager) =
                                (Some(g.logits_rel_err), Some(g.greedy_agrees));
                            r.step_profile = g.profile;
                            r.device_argmax_agrees = Some(g.device_argmax_agrees);
                            (r.programmatic, r.step_kernels, r.ab) = (g.programmatic, g.step_kernels, g.ab);
                            decode.push(r);
                        }
                        Err(why) => decode_notes.push(format!("batch {b}, graph: {why}")),
                    }
                }
            }
            track();
        }
    }
    let peak_allocated_bytes = allocated_bytes(&dev).map(|(_, peak)| peak);
    Ok(ModelBenchReport {
        llq: Build::this(),
        model: m.id.clone(),
        precision: m.precision_note.clone(),
        method,
        numerics: quant.and_then(|q| crate::quant::numerics(q.plugin)),
        options,
        device: if dev.is_cuda() {
            format!("{} (bf16; {})", settings.device, gpu_path.describe())
        } else {
            format!("cpu ({threads} threads for quantization; candle's own for matmuls)")
        },
        checks: settings.checks,
        logits_rel_err_vs_cpu,
        padded_logits_rel_err_vs_cpu,
        device_memory_bytes,
        peak_device_memory_bytes: peak,
        allocated_after_load_bytes,
        peak_allocated_bytes,
        decode_notes,
        copy_bytes_per_s,
        repeats,
        quantize_s,
        size,
        peak_rss_bytes: crate::util::mem::peak_rss_bytes(),
        dequantize_all_s,
        prefill,
        prefill_attention_check,
        decode,
    })
}

/// Decode through the captured step (`model::graph`): per repeat an eager prefill of
/// `prompts(r)`, then `steps` graph replays fed by the step's own greedy tokens, timed like
/// the eager rows (host clock, synchronized at both ends). Before timing, one step from the
/// same prefill and token is compared with the eager step. `Err(why)` (inner) when the
/// graph cannot run this batch here.
/// What [`graph_decode`] measured for one batch size.
struct GraphRow {
    path: String,
    step_seconds: Spread,
    logits_rel_err: f64,
    greedy_agrees: bool,
    device_argmax_agrees: bool,
    profile: Vec<ProfileEntry>,
    programmatic: Option<bool>,
    step_kernels: Option<String>,
    ab: Vec<DecodeAb>,
}

fn graph_decode(
    llama: &Llama,
    b: usize,
    context: usize,
    steps: usize,
    repeats: usize,
    prompts: &dyn Fn(usize) -> Vec<Vec<u32>>,
    feed: &dyn Fn(usize) -> Vec<u32>,
) -> Result<std::result::Result<GraphRow, String>> {
    if llama.device.is_cpu() {
        return Ok(Err("not on a GPU".into()));
    }
    #[cfg(feature = "cuda")]
    {
        use crate::gpu::step::{Attention, AttentionKernel};
        use crate::model::graph::{GraphDecoder, Launch};
        let cap = context + steps + 1;
        if let Some(why) = GraphDecoder::supports(llama, b, cap) {
            return Ok(Err(why));
        }
        let mut g = GraphDecoder::new(llama, b, cap)?;
        let pad = vec![0; b];
        // The check: the same prefill and first token through both steps.
        let mut cache = llama.new_cache();
        llama.step(&prompts(0), &pad, &mut cache, true)?;
        g.start(&cache, &pad, &feed(0))?;
        let first: Vec<Vec<u32>> = feed(0).into_iter().map(|t| vec![t]).collect();
        let eager: Vec<Vec<f32>> = llama.step(&first, &pad, &mut cache, true)?.flatten_to(1)?.to_vec2()?;
        g.step()?;
        let graph: Vec<Vec<f32>> = g.logits()?.to_vec2()?;
        let err = max_rel_err(&graph.concat(), &eager.concat());
        let agree =
            eager.iter().zip(&graph).all(|(e, q)| crate::generate::argmax(e) == crate::generate::argmax(q));
        let device_argmax_agrees =
            g.tokens()?.iter().zip(&graph).all(|(&t, q)| crate::generate::argmax(q) == t);
        let mut times = vec![];
        for r in 0..=repeats {
            let s = timed_graph_steps(llama, &mut g, r, steps, prompts, feed)?;
            if r > 0 {
                times.push(s);
            }
        }
        let path = match g.launch_mode() {
            Launch::Graph => "cuda-graph".to_string(),
            Launch::Direct(why) => format!("static cache, direct launches ({why})"),
        };
        let mut ab = vec![];
        let (pdl, attention) = (g.programmatic(), g.attention_kernel());
        let flip = |h: &mut GraphDecoder<'_>| {
            h.set_programmatic(!pdl);
            (h.programmatic() != pdl)
                .then(|| format!("programmatic launches {}", if pdl { "off" } else { "on" }))
        };
        ab.extend(decode_ab(llama, &mut g, cap, steps, repeats, prompts, feed, &flip)?);
        let folded = g.folds_rope();
        // v2 never folds RoPE in: this side has both changes.
        let v2 = |h: &mut GraphDecoder<'_>| {
            h.set_attention(Attention::PerHeadV2);
            let rope = if folded { " (RoPE as its own launch)" } else { "" };
            (attention == AttentionKernel::PerHeadV3).then(|| format!("attention per-head-v2{rope}"))
        };
        ab.extend(decode_ab(llama, &mut g, cap, steps, repeats, prompts, feed, &v2)?);
        let rope = |h: &mut GraphDecoder<'_>| {
            h.set_fold_rope(!folded);
            let what = if folded { "RoPE as its own launch" } else { "RoPE folded into the attention" };
            (h.folds_rope() != folded).then(|| what.to_string())
        };
        ab.extend(decode_ab(llama, &mut g, cap, steps, repeats, prompts, feed, &rope)?);
        // The norms and residual adds folded into the 1-row matvecs against their own launches
        // (only where the step can fold them: batch 1, header v1.6 entries everywhere).
        let norm = g.folds_norm();
        let fold_norm = |h: &mut GraphDecoder<'_>| {
            h.set_fold_norm(!norm);
            let what = if norm { "norms as their own launches" } else { "norms folded into the matvecs" };
            (h.folds_norm() != norm).then(|| what.to_string())
        };
        ab.extend(decode_ab(llama, &mut g, cap, steps, repeats, prompts, feed, &fold_norm)?);
        // A dense lm_head on the 1-row entries at UNROLL 1 against UNROLL 4.
        let u1 = g.lm_head_u1();
        let lm_head = |h: &mut GraphDecoder<'_>| {
            h.set_lm_head_u1(!u1).ok()?;
            let what = format!("lm_head on the UNROLL-{} entries", if u1 { 4 } else { 1 });
            (h.lm_head_u1() != u1).then_some(what)
        };
        ab.extend(decode_ab(llama, &mut g, cap, steps, repeats, prompts, feed, &lm_head)?);
        // Gate, up and SwiGLU in one launch against three (where the norms are folded).
        let glu = g.folds_glu();
        let fold_glu = |h: &mut GraphDecoder<'_>| {
            h.set_fold_glu(!glu);
            let what = if glu {
                "gate, up and SwiGLU as three launches"
            } else {
                "gate, up and SwiGLU in one launch"
            };
            (h.folds_glu() != glu).then(|| what.to_string())
        };
        ab.extend(decode_ab(llama, &mut g, cap, steps, repeats, prompts, feed, &fold_glu)?);
        // The argmax split over 32 blocks a row against one block (whichever the row is not).
        let blocks = g.argmax_blocks();
        let argmax = |h: &mut GraphDecoder<'_>| {
            let other = if blocks == 1 { 32 } else { 1 };
            h.set_argmax_blocks(other);
            Some(format!("argmax over {other} block{} a row", if other == 1 { "" } else { "s" }))
        };
        ab.extend(decode_ab(llama, &mut g, cap, steps, repeats, prompts, feed, &argmax)?);
        start_graph(llama, &mut g, prompts(0), feed)?;
        // The profile explains the row; its failure must not lose the row's timings.
        let profile = g.profile(steps).unwrap_or_else(|e| {
            tracing::warn!("batch {b}: profiling the captured step failed: {e:#}");
            vec![]
        });
        Ok(Ok(GraphRow {
            path,
            step_seconds: spread(times),
            logits_rel_err: err,
            greedy_agrees: agree,
            device_argmax_agrees,
            profile: profile.into_iter().map(|(what, seconds)| ProfileEntry { what, seconds }).collect(),
            programmatic: Some(pdl),
            step_kernels: Some(format!(
                "{}{}{}{}{}, argmax over {blocks} block(s) a row",
                attention.describe(),
                if folded { ", RoPE folded in" } else { "" },
                if norm { ", norms and residual adds folded into the matvecs" } else { "" },
                if glu { ", gate, up and SwiGLU in one launch" } else { "" },
                if u1 { ", lm_head at UNROLL 1" } else { "" }
            )),
            ab,
        }))
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = (llama, b, context, steps, repeats, prompts, feed);
        Ok(Err("the graph step needs a CUDA build and device".into()))
    }
}

/// The captured step `d` continued from an eager prefill of `prompt` (no padding), `feed(0)`
/// its first input.
#[cfg(feature = "cuda")]
fn start_graph(
    llama: &Llama,
    d: &mut crate::model::graph::GraphDecoder<'_>,
    prompt: Vec<Vec<u32>>,
    feed: &dyn Fn(usize) -> Vec<u32>,
) -> Result<()> {
    let pad = vec![0; d.batch()];
    let mut cache = llama.new_cache();
    llama.step(&prompt, &pad, &mut cache, true)?;
    d.start(&cache, &pad, &feed(0))
}

/// Seconds per step of `steps` replays of `d` after a prefill of `prompts(r)`, timed like the
/// eager rows (host clock, synchronized at both ends; the prefill outside).
#[cfg(feature = "cuda")]
fn timed_graph_steps(
    llama: &Llama,
    d: &mut crate::model::graph::GraphDecoder<'_>,
    r: usize,
    steps: usize,
    prompts: &dyn Fn(usize) -> Vec<Vec<u32>>,
    feed: &dyn Fn(usize) -> Vec<u32>,
) -> Result<f64> {
    start_graph(llama, d, prompts(r), feed)?;
    llama.device.synchronize()?;
    let t = Instant::now();
    for _ in 0..steps {
        d.step()?;
    }
    llama.device.synchronize()?;
    Ok(t.elapsed().as_secs_f64() / steps as f64)
}

/// Rounds of a decode A/B: at least 10, so the exact sign-flip test can reach
/// p < 0.05 (its smallest p with n pairs is 2/2ⁿ).
#[cfg(feature = "cuda")]
const AB_MIN_PAIRS: usize = 10;

/// The captured step `g` against a second one that `other` sets up (it names the change, or
/// gives `None` where it does not apply here): first the check — both run `steps` steps from
/// the same prefill, every step's tokens and the last logits compared —, then interleaved
/// timed rounds as in [`graph_decode`], a paired difference per round.
#[cfg(feature = "cuda")]
#[allow(clippy::too_many_arguments)]
fn decode_ab(
    llama: &Llama,
    g: &mut crate::model::graph::GraphDecoder<'_>,
    cap: usize,
    steps: usize,
    repeats: usize,
    prompts: &dyn Fn(usize) -> Vec<Vec<u32>>,
    feed: &dyn Fn(usize) -> Vec<u32>,
    other: &dyn Fn(&mut crate::model::graph::GraphDecoder<'_>) -> Option<String>,
) -> Result<Option<DecodeAb>> {
    use crate::model::graph::GraphDecoder;
    use crate::results::paired::{bootstrap_mean, sign_flip_p};
    let b = g.batch();
    let mut h = GraphDecoder::new(llama, b, cap)?;
    let Some(what) = other(&mut h) else { return Ok(None) };
    // The check (this also captures both graphs before any timing).
    /// Every step's tokens, the first step's logits, the last step's.
    type Trace = (Vec<Vec<u32>>, Vec<f32>, Vec<f32>);
    let run = |d: &mut GraphDecoder<'_>| -> Result<Trace> {
        start_graph(llama, d, prompts(0), feed)?;
        let mut toks = vec![];
        let mut first = vec![];
        for s in 0..steps {
            d.step()?;
            toks.push(d.tokens()?);
            if s == 0 {
                first = d.logits()?.flatten_all()?.to_vec1()?;
            }
        }
        Ok((toks, first, d.logits()?.flatten_all()?.to_vec1()?))
    };
    let (tg, fg, lg) = run(g)?;
    let (th, fh, lh) = run(&mut h)?;
    let logits_max_abs_diff = lg.iter().zip(&lh).fold(0f64, |m, (a, b)| m.max((a - b).abs() as f64));
    let pairs = repeats.max(AB_MIN_PAIRS);
    let time = |d: &mut GraphDecoder<'_>, r: usize| timed_graph_steps(llama, d, r, steps, prompts, feed);
    let (mut tr, mut tf) = (vec![], vec![]);
    for r in 0..pairs {
        if r % 2 == 0 {
            tr.push(time(g, r)?);
            tf.push(time(&mut h, r)?);
        } else {
            tf.push(time(&mut h, r)?);
            tr.push(time(g, r)?);
        }
    }
    let diffs: Vec<f64> = tf.iter().zip(&tr).map(|(f, r)| f - r).collect();
    let ci = bootstrap_mean(&diffs, 1, 10_000, 13).expect("at least one pair");
    Ok(Some(DecodeAb {
        other: what,
        pairs,
        row_step_seconds: spread(tr),
        step_seconds: spread(tf),
        paired_diff_s: ci.mean,
        paired_diff_lo_s: ci.lo,
        paired_diff_hi_s: ci.hi,
        sign_flip_p: sign_flip_p(&diffs, 10_000, 13),
        first_step_logits_rel_err: max_rel_err(&fh, &fg),
        logits_max_abs_diff,
        tokens_agree: tg == th,
    }))
}
