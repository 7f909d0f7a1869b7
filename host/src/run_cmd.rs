//! `llq-host run`: the main job. Load a model, quantize its linear layers with a plugin,
//! ask a WASM task for requests, run the model on them, score each sample as it completes
//! (appending it to `samples.jsonl`, so an interrupted run loses nothing and `--resume`
//! continues it), aggregate, and write `results.json` (schema: `results/README.md`).

use crate::generate::{generate, loglikelihood, rolling};
use crate::loader::{load, LoadedModel};
use crate::model::Llama;
use crate::quant::{quantize_model, ModelQuantization, Plugin};
use crate::task::{Limits, LoglikelihoodResult, Request, RequestKind, Response, RollingResult, Scored, TaskRuntime};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

pub struct RunArgs {
    pub model: String,
    pub quant: Option<PathBuf>,
    pub opts: Vec<(String, String)>,
    pub task: PathBuf,
    pub task_opts: Vec<(String, String)>,
    pub data: PathBuf,
    pub limit: Option<usize>,
    pub out: PathBuf,
    pub batch_size: usize,
    pub resume: bool,
    pub quantize_lm_head: bool,
    pub limits: Limits,
    pub threads: usize,
    /// Tokens per window for rolling log-likelihood.
    pub window: usize,
    /// Wrap generation prompts in the model's chat template.
    pub chat_template: bool,
    /// Also run the unquantized model on rolling requests: per-token KL and top-1 agreement.
    pub kl_baseline: bool,
    /// `cpu`, `cuda[:N]` or `auto`.
    pub device: String,
    pub command_line: Vec<String>,
}

/// One line of `samples.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SampleRecord {
    pub id: String,
    pub prompt_sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prediction: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loglikelihood: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_logprobs: Option<Vec<f64>>,
    #[serde(default)]
    pub metrics: std::collections::BTreeMap<String, f64>,
    #[serde(default)]
    pub prompt_tokens: usize,
    #[serde(default)]
    pub new_tokens: usize,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub truncated_tokens: usize,
    #[serde(default)]
    pub seconds: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("{:x}", sha2::Sha256::digest(bytes))
}

/// What the request asks the model, as hashed into `prompt_sha256`.
fn request_text(r: &Request) -> String {
    match &r.kind {
        RequestKind::Generate(g) => format!("generate\0{}\0{}\0{}", g.prompt, g.stop.join("\0"), g.max_new_tokens),
        RequestKind::Loglikelihood(l) => format!("loglikelihood\0{}\0{}", l.context, l.continuation),
        RequestKind::LoglikelihoodRolling(t) => format!("rolling\0{t}"),
    }
}

/// Refuse an output directory we cannot write, before any work.
fn prepare_out(dir: &Path, resume: bool) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create output directory {}", dir.display()))?;
    let probe = dir.join(".llq-write-test");
    std::fs::write(&probe, b"").with_context(|| format!("output directory {} is not writable", dir.display()))?;
    let _ = std::fs::remove_file(probe);
    if !resume && dir.join("samples.jsonl").exists() {
        bail!("{} already holds a run (samples.jsonl); pass --resume to continue it or choose another --out", dir.display());
    }
    Ok(())
}

fn read_samples(path: &Path) -> Result<HashMap<String, SampleRecord>> {
    let mut out = HashMap::new();
    let Ok(text) = std::fs::read_to_string(path) else { return Ok(out) };
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<SampleRecord>(line) {
            Ok(r) => {
                out.insert(r.id.clone(), r);
            }
            // A line cut short by an interruption: that sample runs again.
            Err(e) => tracing::warn!("{}: line {} is not a sample record ({e}); it will be redone", path.display(), i + 1),
        }
    }
    Ok(out)
}

#[derive(Debug, Serialize)]
pub struct ModelSize {
    pub params: u64,
    pub quantized_params: u64,
    /// Bytes of the quantized (packed) linear layers; for runs without a plugin, those layers
    /// at 4 bytes (f32, as computed).
    pub quantized_bytes: u64,
    /// Everything else (embeddings, norms, unquantized lm_head) at 2 bytes per parameter: fp16
    /// storage, as transformers + bitsandbytes keep them.
    pub other_bytes: u64,
    pub total_bytes: u64,
    /// 8 · quantized_bytes / quantized_params.
    pub bits_per_weight: f64,
    /// 8 · total_bytes / params.
    pub bits_per_param_overall: f64,
}

pub struct RunSummary {
    pub results_path: PathBuf,
    pub results: serde_json::Value,
    pub failed: usize,
}

fn model_size(m: &LoadedModel, q: Option<&ModelQuantization>) -> ModelSize {
    let params: u64 = m.weights.values().map(|t| t.data.len() as u64).sum();
    let (qp, qb) = match q {
        Some(q) => (q.quantized_params, q.quantized_bytes),
        None => {
            let p: u64 = m.config.linear_layers().iter().map(|(_, r, c)| (*r * *c) as u64).sum();
            (p, p * 4)
        }
    };
    let other = (params - qp) * 2;
    ModelSize {
        params,
        quantized_params: qp,
        quantized_bytes: qb,
        other_bytes: other,
        total_bytes: qb + other,
        bits_per_weight: 8.0 * qb as f64 / qp.max(1) as f64,
        bits_per_param_overall: 8.0 * (qb + other) as f64 / params.max(1) as f64,
    }
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

pub fn run(a: &RunArgs) -> Result<RunSummary> {
    let wall = Instant::now();
    // Everything that can be checked cheaply is checked before the model loads.
    let mut task = TaskRuntime::load(&a.task, a.limits)?;
    let info = task.describe()?;
    task.check_options(&a.task_opts)?;
    let data = std::fs::read(&a.data).with_context(|| format!("cannot read data {}", a.data.display()))?;
    let mut requests = task.requests(&data, &a.task_opts).with_context(|| format!("data {}", a.data.display()))?;
    if let Some(n) = a.limit {
        if n == 0 || n > requests.len() {
            bail!("--limit {n} is out of range: {} holds {} requests for task `{}`", a.data.display(), requests.len(), info.name);
        }
        requests.truncate(n);
    }
    if a.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let plugin = a.quant.as_deref().map(Plugin::load).transpose()?;
    let (opts_json, opts_canonical) = match &plugin {
        Some(p) => {
            let (j, o) = p.options(&a.opts)?;
            (j, o.to_json())
        }
        None if !a.opts.is_empty() => bail!("--opt needs --quant"),
        None => (String::new(), "{}".into()),
    };
    prepare_out(&a.out, a.resume)?;
    let device = crate::model::device(&a.device)?;
    if a.chat_template && !requests.iter().any(|r| matches!(r.kind, RequestKind::Generate(_))) {
        bail!("--chat-template applies to generation requests; task `{}` has none", info.name);
    }

    tracing::info!("loading model {}", a.model);
    let t = Instant::now();
    let mut m = load(&a.model)?;
    let load_s = t.elapsed().as_secs_f64();
    tracing::info!("{} ({}, {} layers, hidden {}); {}", m.id, m.format, m.config.num_hidden_layers, m.config.hidden_size, m.precision_note);
    // The unquantized model, for KL divergence against it (before the plugin touches weights).
    let baseline = if a.kl_baseline {
        if plugin.is_none() {
            bail!("--kl-baseline compares a quantized model with the unquantized one: it needs --quant");
        }
        Some(Llama::new(&m.config, &m.weights, &device)?)
    } else {
        None
    };
    let mut quant = match &plugin {
        Some(p) => {
            let keep = device.is_cuda() && p.info.cuda_kernels.is_some();
            let q = quantize_model(p, &opts_json, opts_canonical.clone(), &mut m.config, &mut m.weights, a.quantize_lm_head, a.threads, keep)
                .with_context(|| format!("quantizing with plugin {}", p.info.path.display()))?;
            tracing::info!("{} quantized {} layers in {:.2} s", q.method, q.layers, q.seconds);
            Some(q)
        }
        None => None,
    };
    if a.chat_template {
        m.chat_prompt("")?;
    }
    let size = model_size(&m, quant.as_ref());
    let packed = match (&plugin, quant.as_mut()) {
        (Some(p), Some(q)) => q.packed_layers(p, &device),
        _ => None,
    };
    let model = Llama::with_packed(&m.config, &m.weights, &device, packed.as_ref())?;
    drop(packed);
    m.weights.clear();

    let samples_path = a.out.join("samples.jsonl");
    let mut done = if a.resume { read_samples(&samples_path)? } else { HashMap::new() };
    let hashes: HashMap<&str, String> = requests.iter().map(|r| (r.id.as_str(), sha256_hex(request_text(r).as_bytes()))).collect();
    // A resumed sample only counts if it was the same request and it succeeded.
    done.retain(|id, r| hashes.get(id.as_str()) == Some(&r.prompt_sha256) && r.error.is_none());
    let pending: Vec<&Request> = requests.iter().filter(|r| !done.contains_key(&r.id)).collect();
    if a.resume {
        tracing::info!("resuming: {} of {} samples already done", requests.len() - pending.len(), requests.len());
        // Keep only the complete, successful records (drops a line cut short by a kill).
        let mut kept = String::new();
        for r in requests.iter().filter_map(|r| done.get(&r.id)) {
            kept.push_str(&serde_json::to_string(r)?);
            kept.push('\n');
        }
        crate::results::write_atomic(&samples_path, kept.as_bytes()).with_context(|| format!("cannot rewrite {}", samples_path.display()))?;
    }
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&samples_path).with_context(|| format!("cannot open {}", samples_path.display()))?;

    let bar = indicatif::ProgressBar::new(pending.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} samples, {per_sec}, ETA {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let gen_t = Instant::now();
    let mut new_tokens_total = 0usize;
    let mut failed = 0usize;
    let mut truncated = 0usize;
    let mut i = 0;
    while i < pending.len() {
        // Batch consecutive generation requests; others go one at a time.
        let mut batch = vec![pending[i]];
        if matches!(pending[i].kind, RequestKind::Generate(_)) {
            while batch.len() < a.batch_size && i + batch.len() < pending.len() && matches!(pending[i + batch.len()].kind, RequestKind::Generate(_)) {
                batch.push(pending[i + batch.len()]);
            }
        }
        i += batch.len();
        let t = Instant::now();
        let outcomes = run_batch(&model, baseline.as_ref(), &m, &batch, a.window, a.chat_template);
        let secs = t.elapsed().as_secs_f64() / batch.len() as f64;
        for (req, outcome) in batch.iter().zip(outcomes) {
            let mut rec = SampleRecord {
                id: req.id.clone(),
                prompt_sha256: hashes[req.id.as_str()].clone(),
                prediction: None,
                loglikelihood: None,
                token_logprobs: None,
                metrics: Default::default(),
                prompt_tokens: 0,
                new_tokens: 0,
                truncated_tokens: 0,
                seconds: secs,
                error: None,
            };
            match outcome {
                Ok((resp, pt, nt, tr)) => {
                    rec.truncated_tokens = tr;
                    truncated += (tr > 0) as usize;
                    rec.prompt_tokens = pt;
                    rec.new_tokens = nt;
                    new_tokens_total += nt;
                    match &resp {
                        Response::Generated(s) => rec.prediction = Some(s.clone()),
                        Response::Loglikelihood(l) => rec.loglikelihood = Some(serde_json::json!({"logprob": l.logprob, "is_greedy": l.is_greedy, "tokens": l.tokens})),
                        Response::Rolling(r) => rec.token_logprobs = Some(r.token_logprobs.clone()),
                    }
                    match task.score(req, &resp, &a.task_opts) {
                        Ok(ms) => rec.metrics = ms.into_iter().map(|m| (m.name, m.value)).collect(),
                        Err(e) => rec.error = Some(format!("{e:#}")),
                    }
                }
                Err(e) => rec.error = Some(format!("model: {e:#}")),
            }
            if let Some(e) = &rec.error {
                failed += 1;
                bar.suspend(|| tracing::warn!("sample {}: {e}", rec.id));
            }
            let line = serde_json::to_string(&rec)?;
            writeln!(file, "{line}").and_then(|_| file.flush()).with_context(|| format!("cannot append to {}", samples_path.display()))?;
            done.insert(rec.id.clone(), rec);
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    let gen_s = gen_t.elapsed().as_secs_f64();
    if truncated > 0 {
        tracing::warn!("{truncated} prompts were longer than the model's positions allow and lost tokens on the left (as lm-eval truncates)");
    }

    let scored: Vec<Scored> = requests
        .iter()
        .map(|r| Scored {
            request: r.clone(),
            metrics: done.get(&r.id).map(|s| s.metrics.iter().map(|(k, v)| crate::task::Metric { name: k.clone(), value: *v }).collect()).unwrap_or_default(),
        })
        .collect();
    let report = task.aggregate(&scored, &a.task_opts)?;
    let results = serde_json::json!({
        "schema": "llq-results/1",
        "llq": {"version": env!("CARGO_PKG_VERSION"), "git_revision": env!("LLQ_GIT_REV")},
        "date": now_rfc3339(),
        "command_line": a.command_line,
        "device": {"kind": if device.is_cuda() { "cuda" } else { "cpu" }, "spec": a.device, "threads": a.threads, "dtype": format!("{:?}", model.dtype).to_lowercase()},
        "model": {"id": m.id, "format": m.format, "sha256": m.content_hash, "precision": m.precision_note,
                  "config": m.config, "file_bytes": m.file_bytes},
        "quantization": match &quant {
            Some(q) => serde_json::json!({"method": q.method, "version": q.method_version, "options": serde_json::from_str::<serde_json::Value>(&q.options).unwrap_or_default(),
                                           "plugin": a.quant.as_ref().map(|p| p.display().to_string()), "layers": q.layers, "seconds": q.seconds,
                                           "lm_head": a.quantize_lm_head}),
            None => serde_json::Value::Null,
        },
        "size": size,
        "task": {"name": info.name, "version": info.version, "path": a.task.display().to_string(), "options": a.task_opts,
                 "data": a.data.display().to_string(), "data_sha256": sha256_hex(&data), "limit": a.limit,
                 "chat_template": a.chat_template, "batch_size": a.batch_size, "kl_baseline": a.kl_baseline},
        "metrics": report.metrics.iter().map(|m| serde_json::json!({"name": m.name, "value": m.value, "stderr": m.stderr, "count": m.count})).collect::<Vec<_>>(),
        "native": serde_json::from_str::<serde_json::Value>(&report.native_json).unwrap_or(serde_json::Value::String(report.native_json.clone())),
        "samples": {"total": requests.len(), "failed": failed, "truncated_prompts_this_session": truncated, "file": "samples.jsonl"},
        "timing": {"load_s": load_s, "quantize_s": quant.as_ref().map(|q| q.seconds), "generate_s": gen_s,
                   "new_tokens": new_tokens_total, "wall_s": wall.elapsed().as_secs_f64()},
    });
    let path = a.out.join("results.json");
    crate::results::write_atomic(&path, serde_json::to_string_pretty(&results)?.as_bytes()).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(RunSummary { results_path: path, results, failed })
}

/// (response, prompt tokens, new tokens, prompt tokens truncated)
type Outcome = Result<(Response, usize, usize, usize)>;

fn run_batch(model: &Llama, baseline: Option<&Llama>, m: &LoadedModel, batch: &[&Request], window: usize, chat: bool) -> Vec<Outcome> {
    match &batch[0].kind {
        RequestKind::Generate(_) => {
            let mut prompts = vec![];
            let mut stops = vec![];
            let mut max_new = vec![];
            for r in batch {
                let RequestKind::Generate(g) = &r.kind else { unreachable!("batches hold one kind") };
                let text = if chat { m.chat_prompt(&g.prompt) } else { Ok(g.prompt.clone()) };
                match text.and_then(|t| m.tokenizer.encode(&t)) {
                    Ok(p) => prompts.push(p),
                    Err(e) => return batch.iter().map(|_| Err(anyhow::anyhow!("{e:#}"))).collect(),
                }
                stops.push(g.stop.clone());
                max_new.push(g.max_new_tokens as usize);
            }
            match generate(model, &m.tokenizer, &prompts, &stops, &max_new, &m.eos) {
                Ok(gs) => gs.into_iter().map(|g| Ok((Response::Generated(g.text), g.prompt_tokens, g.new_tokens, g.truncated))).collect(),
                // A batch failure is retried row by row so one bad prompt costs one sample.
                Err(_) if batch.len() > 1 => batch.iter().flat_map(|r| run_batch(model, baseline, m, &[*r], window, chat)).collect(),
                Err(e) => vec![Err(e)],
            }
        }
        RequestKind::Loglikelihood(l) => vec![loglikelihood(model, &m.tokenizer, &l.context, &l.continuation)
            .map(|(lp, g, n)| (Response::Loglikelihood(LoglikelihoodResult { logprob: lp, is_greedy: g, tokens: n as u32 }), n, 0, 0))],
        RequestKind::LoglikelihoodRolling(text) => vec![rolling(model, baseline, &m.tokenizer, text, window).map(|r| {
            let n = r.logprobs.len();
            let resp = RollingResult { logprob: r.logprobs.iter().sum(), token_logprobs: r.logprobs, tokens: n as u32, bytes: text.len() as u32, kl: r.kl, top1_agree: r.top1_agree };
            (Response::Rolling(resp), n, 0, 0)
        })],
    }
}
