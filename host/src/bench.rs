//! Benchmarks that are not tests: `llq-host quant-bench` (quantize + dequantize throughput of a
//! plugin over the exact linear-layer shapes of a model preset).

use crate::quant::Plugin;
use anyhow::{bail, Result};
use serde::Serialize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// Shapes (name, rows, cols) of every weight matrix of Llama-3.2-1B that bitsandbytes would
/// touch, plus the tied embedding/lm_head: 1,235,746,816 weights in all.
pub fn llama_3_2_1b_matrices() -> Vec<(String, usize, usize)> {
    let (hidden, inter, kv, layers, vocab) = (2048, 8192, 512, 16, 128256);
    let mut v = vec![("model.embed_tokens.weight".to_string(), vocab, hidden)];
    for l in 0..layers {
        for (n, r, c) in [
            ("self_attn.q_proj", hidden, hidden),
            ("self_attn.k_proj", kv, hidden),
            ("self_attn.v_proj", kv, hidden),
            ("self_attn.o_proj", hidden, hidden),
            ("mlp.gate_proj", inter, hidden),
            ("mlp.up_proj", inter, hidden),
            ("mlp.down_proj", hidden, inter),
        ] {
            v.push((format!("model.layers.{l}.{n}.weight"), r, c));
        }
    }
    v
}

/// Seeded pseudo-normal weights (sum of two uniforms, σ ≈ 0.02): realistic enough for
/// branchy code paths, fast to make.
pub fn synthetic_weights(seed: u64, n: usize, sigma: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
    };
    let k = sigma * 6f32.sqrt();
    (0..n).map(|_| (next() + next() - 1.0) * k).collect()
}

#[derive(Debug, Serialize)]
pub struct QuantBenchReport {
    pub plugin: String,
    pub options: String,
    pub preset: String,
    pub matrices: usize,
    pub weights: u64,
    pub packed_bytes: u64,
    pub bits_per_weight: f64,
    pub threads: usize,
    pub quantize_s: f64,
    pub dequantize_s: f64,
    pub total_s: f64,
    pub weights_per_s: f64,
    pub max_abs_error: f32,
}

/// Quantize then dequantize every matrix, `threads` matrices at a time (largest first).
/// Weights are generated before the clock starts; quantize and dequantize are timed as two
/// separate phases over all matrices.
pub fn quant_bench(plugin: &Plugin, opts_json: &str, options: String, threads: usize) -> Result<QuantBenchReport> {
    let mut mats = llama_3_2_1b_matrices();
    mats.sort_by_key(|(_, r, c)| std::cmp::Reverse(r * c));
    let threads = threads.max(1);
    tracing::info!("generating {} synthetic matrices", mats.len());
    let weights: Vec<Vec<f32>> = par_map(threads, &mats, |i, (_, r, c)| Ok(synthetic_weights(i as u64 + 1, r * c, 0.02)))?;
    let t0 = Instant::now();
    let packed = par_map(threads, &mats, |i, (n, r, c)| plugin.quantize(n, *r, *c, &weights[i], opts_json, None))?;
    let tq = t0.elapsed().as_secs_f64();
    // Dequantize is timed per call (busy time summed over threads, divided by the thread
    // count); the error check after each call stays outside the clock.
    let busy_ns = std::sync::atomic::AtomicU64::new(0);
    let errs = par_map(threads, &mats, |i, _| {
        let t = Instant::now();
        let d = plugin.dequantize(&packed[i])?;
        busy_ns.fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
        Ok(d.iter().zip(&weights[i]).fold(0f32, |m, (a, b)| m.max((a - b).abs())))
    })?;
    let td = busy_ns.into_inner() as f64 / 1e9 / threads as f64;
    let n: u64 = mats.iter().map(|(_, r, c)| (r * c) as u64).sum();
    let bytes: u64 = packed.iter().map(|p| p.bytes()).sum();
    Ok(QuantBenchReport {
        plugin: plugin.info.name.clone(),
        options,
        preset: "llama-3.2-1b".into(),
        matrices: mats.len(),
        weights: n,
        packed_bytes: bytes,
        bits_per_weight: bytes as f64 * 8.0 / n as f64,
        threads,
        quantize_s: tq,
        dequantize_s: td,
        total_s: tq + td,
        weights_per_s: n as f64 / (tq + td),
        max_abs_error: errs.into_iter().fold(0f32, f32::max),
    })
}

/// Map `f` over `items` on `threads` scoped threads (work-stealing by index), keeping order.
pub(crate) fn par_map<T: Sync, R: Send>(threads: usize, items: &[T], f: impl Fn(usize, &T) -> Result<R> + Sync) -> Result<Vec<R>> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<R>>> = Mutex::new((0..items.len()).map(|_| None).collect());
    let first_err: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= items.len() || first_err.lock().map(|e| e.is_some()).unwrap_or(true) {
                    break;
                }
                match f(i, &items[i]) {
                    Ok(r) => results.lock().expect("lock")[i] = Some(r),
                    Err(e) => {
                        first_err.lock().expect("lock").get_or_insert(e);
                    }
                }
            });
        }
    });
    if let Some(e) = first_err.into_inner().expect("lock") {
        return Err(e);
    }
    let r = results.into_inner().expect("lock");
    if r.iter().any(|x| x.is_none()) {
        bail!("internal error: a worker did not finish");
    }
    Ok(r.into_iter().map(|x| x.expect("checked")).collect())
}

/// A synthetic CoQA dev file in the official layout: `stories` stories of `turns` turns,
/// each turn with 4 reference answers drawn from a small vocabulary (so F1 has overlaps to
/// count), plus one prediction per turn. Deterministic for a given seed.
pub fn synthetic_coqa(stories: usize, turns: usize, seed: u64) -> (Vec<u8>, Vec<(String, String)>) {
    const WORDS: &[&str] = &[
        "the", "cat", "white", "barn", "farmer", "paint", "orange", "bucket", "water", "sisters", "mother", "a", "laughing", "face", "an",
        "happy", "old", "color", "lived", "with", "her", "tiger", "stripes", "no", "yes", "five", "big", "into", "dropped", "licked",
    ];
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move |n: usize| {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 33) as usize % n
    };
    let mut phrase = |len: usize| (0..1 + next(len)).map(|_| WORDS[next(WORDS.len())]).collect::<Vec<_>>().join(" ");
    let mut data = vec![];
    let mut preds = vec![];
    for st in 0..stories {
        let id = format!("syn{st:05}");
        let turn = |k: usize, text: String| serde_json::json!({"turn_id": k + 1, "input_text": text});
        let questions: Vec<_> = (0..turns).map(|k| turn(k, format!("{}?", phrase(8)))).collect();
        let answers: Vec<_> = (0..turns).map(|k| turn(k, phrase(5))).collect();
        let extra: serde_json::Map<String, serde_json::Value> =
            (0..3).map(|a| (a.to_string(), serde_json::Value::Array((0..turns).map(|k| turn(k, phrase(5))).collect()))).collect();
        for k in 0..turns {
            preds.push((format!("{id}#{}", k + 1), phrase(6)));
        }
        let sources = ["mctest", "gutenberg", "race", "cnn", "wikipedia", "reddit", "science"];
        data.push(serde_json::json!({"id": id, "source": sources[st % sources.len()], "story": phrase(300),
            "questions": questions, "answers": answers, "additional_answers": extra}));
    }
    (serde_json::to_vec(&serde_json::json!({"version": "1.0", "data": data})).unwrap_or_default(), preds)
}

#[derive(Debug, Serialize)]
pub struct TaskBenchReport {
    pub task: String,
    pub samples: usize,
    pub data_bytes: usize,
    pub compile_s: f64,
    pub requests_s: f64,
    pub score_s: f64,
    pub score_us_per_sample: f64,
    pub aggregate_s: f64,
    pub f1: f64,
}

/// Time a generation task's host↔guest path on synthetic CoQA: compile, `requests`, one
/// `score` call per sample (each a full crossing with its own fuel/deadline reset), `aggregate`.
pub fn task_bench(task: &std::path::Path, stories: usize, turns: usize, limits: crate::task::Limits) -> Result<TaskBenchReport> {
    use crate::task::{score_all, Response, TaskRuntime};
    let (data, preds) = synthetic_coqa(stories, turns, 7);
    let t = Instant::now();
    let mut rt = TaskRuntime::load(task, limits)?;
    let info = rt.describe()?;
    let compile_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let reqs = rt.requests(&data, &[])?;
    let requests_s = t.elapsed().as_secs_f64();
    let preds: std::collections::HashMap<String, String> = preds.into_iter().collect();
    let t = Instant::now();
    let out = score_all(&mut rt, &reqs, |r| preds.get(&r.id).map(|p| Response::Generated(p.clone())), &[]);
    let score_s = t.elapsed().as_secs_f64();
    if let Some((id, e)) = out.failed.first() {
        bail!("scoring failed on {id}: {e}");
    }
    let t = Instant::now();
    let report = rt.aggregate(&out.samples, &[])?;
    let aggregate_s = t.elapsed().as_secs_f64();
    let f1 = report.metrics.iter().find(|m| m.name == "f1").map_or(f64::NAN, |m| m.value);
    Ok(TaskBenchReport {
        task: format!("{} {}", info.name, info.version),
        samples: reqs.len(),
        data_bytes: data.len(),
        compile_s,
        requests_s,
        score_s,
        score_us_per_sample: score_s / reqs.len().max(1) as f64 * 1e6,
        aggregate_s,
        f1,
    })
}

/// Median, min and max of some timings (seconds).
#[derive(Debug, Serialize)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

pub fn spread(mut v: Vec<f64>) -> Spread {
    v.sort_by(|a, b| a.total_cmp(b));
    Spread { median: v[v.len() / 2], min: v[0], max: v[v.len() - 1] }
}

#[derive(Debug, Serialize)]
pub struct PrefillRow {
    pub prompt_tokens: usize,
    pub seconds: Spread,
    pub tokens_per_s: f64,
}

#[derive(Debug, Serialize)]
pub struct DecodeRow {
    pub batch: usize,
    pub context: usize,
    /// Seconds per decode step (one token for each of `batch` rows).
    pub step_seconds: Spread,
    pub tokens_per_s: f64,
    /// Bytes one step must read (every weight matrix once, lm_head included, plus the KV
    /// cache) and that over the measured copy bandwidth: the step's floor (GPU only).
    pub bytes_per_step: u64,
    pub roofline_s: Option<f64>,
    pub roofline_fraction: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct ModelBenchReport {
    pub model: String,
    pub precision: String,
    pub method: String,
    pub options: String,
    pub device: String,
    pub repeats: usize,
    pub quantize_s: Option<f64>,
    /// On a GPU: max |Δ| / max |ref| of last-position logits against the CPU f32 model.
    pub logits_rel_err_vs_cpu: Option<f64>,
    /// Device memory in use after loading the model (bytes), where the device reports it.
    pub device_memory_bytes: Option<u64>,
    /// Most device memory in use during the benchmark (bytes over the free memory before the
    /// model was loaded; sampled after every case).
    pub peak_device_memory_bytes: Option<u64>,
    /// Device-to-device copy bandwidth measured before the run (bytes read + written per s).
    pub copy_bytes_per_s: Option<f64>,
    /// Time to dequantize every quantized layer once: what dequantizing per call would add
    /// to every forward pass (llq dequantizes once, at load).
    pub dequantize_all_s: Option<f64>,
    pub prefill: Vec<PrefillRow>,
    pub decode: Vec<DecodeRow>,
}

/// Prefill and decode speed of a model (optionally quantized) on the CPU: synthetic token
/// ids, one warm-up, then `repeats` timed runs per case; median and spread.
pub fn model_bench(
    model: &str,
    plugin: Option<(&Plugin, &str, String)>,
    prompt_lens: &[usize],
    batches: &[usize],
    decode_steps: usize,
    repeats: usize,
    threads: usize,
    device: &str,
) -> Result<ModelBenchReport> {
    use crate::model::Llama;
    let dev = crate::model::device(device)?;
    let mut m = crate::loader::load(model)?;
    let (mut quantize_s, mut dequantize_all_s) = (None, None);
    let mut packed = None;
    let mut gpu_path = "bf16";
    let (method, options) = match &plugin {
        Some((p, json, canon)) => {
            let keep = dev.is_cuda() && p.info.cuda_kernels.is_some();
            let mut q = crate::quant::quantize_model(p, json, canon.clone(), &mut m.config, &mut m.weights, false, threads, keep)?;
            quantize_s = Some(q.seconds);
            packed = q.packed_layers(p, &dev);
            gpu_path = if packed.is_some() { "plugin CUDA kernels: fused matvec for ≤ 8 rows, dequantize + cuBLAS above" } else { "layers dequantized on the host (plugin has no kernels)" };
            // Re-quantize the layers to time one full dequantize pass (outside the forward).
            let layers = m.config.linear_layers();
            let packed = par_map(threads, &layers, |_, (n, r, c)| p.quantize(n, *r, *c, &m.weights[n].data, json, None))?;
            let t = Instant::now();
            par_map(threads, &packed, |_, q| p.dequantize(q).map(|_| ()))?;
            dequantize_all_s = Some(t.elapsed().as_secs_f64());
            (p.info.name.clone(), canon.clone())
        }
        None => ("none".to_string(), "{}".to_string()),
    };
    let vocab = m.config.vocab_size as u64;
    let ids = |n: usize, salt: u64| -> Vec<u32> { (0..n as u64).map(|i| ((i * 7919 + 13 + salt * 104_729) % vocab) as u32).collect() };
    let free_before = gpu_free_bytes(&dev);
    let llama = Llama::with_packed(&m.config, &m.weights, &dev, packed.as_ref())?;
    drop(packed);
    let device_memory_bytes = free_before.zip(gpu_free_bytes(&dev)).map(|(a, b)| a.saturating_sub(b));
    let logits_rel_err_vs_cpu = if dev.is_cuda() {
        let cpu = Llama::new(&m.config, &m.weights, &candle_core::Device::Cpu)?;
        let p = ids(32, 99);
        let a: Vec<f32> = llama.step(&[p.clone()], &[0], &mut llama.new_cache(), true)?.flatten_all()?.to_vec1()?;
        let b: Vec<f32> = cpu.step(&[p], &[0], &mut cpu.new_cache(), true)?.flatten_all()?.to_vec1()?;
        let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())) as f64;
        Some(a.iter().zip(&b).fold(0f64, |m, (x, y)| m.max((x - y).abs() as f64)) / scale)
    } else {
        None
    };
    m.weights.clear();
    let copy_bytes_per_s = copy_bandwidth(&dev)?;
    let mut peak = device_memory_bytes;
    let mut track = || {
        if let (Some(b), Some(f)) = (free_before, gpu_free_bytes(&dev)) {
            peak = Some(peak.unwrap_or(0).max(b.saturating_sub(f)));
        }
    };
    let sync = || dev.synchronize();
    let mut prefill = vec![];
    for &len in prompt_lens {
        let mut times = vec![];
        for r in 0..=repeats {
            let toks = ids(len, r as u64);
            sync()?;
            let t = Instant::now();
            llama.step(&[toks], &[0], &mut llama.new_cache(), true)?;
            sync()?;
            if r > 0 {
                times.push(t.elapsed().as_secs_f64());
            }
        }
        track();
        let s = spread(times);
        prefill.push(PrefillRow { prompt_tokens: len, tokens_per_s: len as f64 / s.median, seconds: s });
    }
    let context = 128;
    let mut decode = vec![];
    for &b in batches {
        let mut times = vec![];
        for r in 0..=repeats {
            let rows: Vec<Vec<u32>> = (0..b).map(|i| ids(context, (r * 31 + i) as u64)).collect();
            let mut cache = llama.new_cache();
            llama.step(&rows, &vec![0; b], &mut cache, true)?;
            sync()?;
            let t = Instant::now();
            for s in 0..decode_steps {
                let next: Vec<Vec<u32>> = (0..b).map(|i| vec![((s * 17 + i) as u64 % vocab) as u32]).collect();
                llama.step(&next, &vec![0; b], &mut cache, true)?;
            }
            sync()?;
            if r > 0 {
                times.push(t.elapsed().as_secs_f64() / decode_steps as f64);
            }
        }
        track();
        let s = spread(times);
        // The KV cache grows from `context` to `context + decode_steps`: count its mean.
        let bytes_per_step = llama.step_bytes(b, context + decode_steps / 2);
        let roofline_s = copy_bytes_per_s.map(|bw| bytes_per_step as f64 / bw);
        let roofline_fraction = roofline_s.map(|r| r / s.median);
        decode.push(DecodeRow { batch: b, context, tokens_per_s: b as f64 / s.median, step_seconds: s, bytes_per_step, roofline_s, roofline_fraction });
    }
    Ok(ModelBenchReport {
        model: m.id.clone(),
        precision: m.precision_note.clone(),
        method,
        options,
        device: if dev.is_cuda() { format!("{device} (bf16; {gpu_path})") } else { format!("cpu ({threads} threads for quantization; candle's own for matmuls)") },
        logits_rel_err_vs_cpu,
        device_memory_bytes,
        peak_device_memory_bytes: peak,
        copy_bytes_per_s,
        repeats,
        quantize_s,
        dequantize_all_s,
        prefill,
        decode,
    })
}

/// Device-to-device copy bandwidth (CUDA only).
#[cfg(feature = "cuda")]
fn copy_bandwidth(dev: &candle_core::Device) -> Result<Option<f64>> {
    match dev {
        candle_core::Device::Cuda(d) => Ok(Some(crate::kernel_bench::copy_bandwidth(d, 5)? * 1e9)),
        _ => Ok(None),
    }
}

#[cfg(not(feature = "cuda"))]
fn copy_bandwidth(_dev: &candle_core::Device) -> Result<Option<f64>> {
    Ok(None)
}

/// Free device memory in bytes (CUDA only).
#[cfg(feature = "cuda")]
fn gpu_free_bytes(dev: &candle_core::Device) -> Option<u64> {
    if !dev.is_cuda() {
        return None;
    }
    dev.synchronize().ok()?;
    candle_core::cuda_backend::cudarc::driver::result::mem_get_info().ok().map(|(free, _)| free as u64)
}

#[cfg(not(feature = "cuda"))]
fn gpu_free_bytes(_dev: &candle_core::Device) -> Option<u64> {
    None
}
