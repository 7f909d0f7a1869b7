//! `llq-host run`: the main job. Load a model, quantize its linear layers with a plugin, ask
//! a WASM task for requests, run the model on them, score each sample as it completes
//! (appending it to `samples.jsonl`, so an interrupted run loses nothing and `--resume`
//! continues it), aggregate, and write `results.json` (schema: `results::schema`).

mod resume;

use super::args::{parse_opt, CalibArgs, DecodeArg, MaybePluginArgs, TaskLimitArgs};
use crate::generate::{
    generate_with, loglikelihood, rolling, Baseline, GenerationTime, Rolling, StepPool, StepsRan,
};
use crate::loader::{load, LoadedModel};
use crate::model::Llama;
use crate::quant::{model_size, prepare, QuantizeOptions};
use crate::results::logprobs;
use crate::results::manifest::{RunManifest, MANIFEST_SCHEMA};
use crate::results::schema::{
    Build, DeviceInfo, GenerationTiming, LayerInfo, LoglikelihoodRecord, Metric, ModelInfo, QuantizationInfo,
    RunResults, SampleCounts, SampleRecord, TaskRun, Timing, SCHEMA,
};
use crate::task::{LoglikelihoodResult, Request, RequestKind, Response, RollingResult, Scored, TaskRuntime};
use crate::util::digest::{sha256_file, sha256_hex};
use crate::util::fs::write_json;
use crate::util::par::default_threads;
use anyhow::{bail, Context, Result};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The main job: a model, quantized by a plugin, answering a task's requests; writes
/// results.json and samples.jsonl to --out.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// HF directory, .gguf file, llama2.c .bin, or synthetic:<preset>.
    #[arg(long)]
    pub model: String,
    #[command(flatten)]
    pub plugin: MaybePluginArgs,
    /// Also quantize lm_head (transformers + bitsandbytes leave it unquantized).
    #[arg(long)]
    pub quantize_lm_head: bool,
    /// Task component (e.g. tasks/coqa.wasm).
    #[arg(long)]
    pub task: PathBuf,
    /// Task option, repeatable (e.g. --task-opt mode=lm-eval).
    #[arg(long = "task-opt", value_parser = parse_opt)]
    pub task_opts: Vec<(String, String)>,
    /// Dataset passed to the task.
    #[arg(long)]
    pub data: PathBuf,
    /// Only the first N requests.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Output directory (default: results/runs/<model>-<method>-<task>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue a run in --out: samples already in its samples.jsonl are kept (re-scored by
    /// the task); refused when the run's run.json names another model, plugin, task, data or
    /// setting.
    #[arg(long)]
    pub resume: bool,
    /// Generation requests per batch (left-padded).
    #[arg(long, default_value_t = 1)]
    pub batch_size: usize,
    /// Threads for quantization (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Tokens per window for rolling log-likelihood.
    #[arg(long, default_value_t = 2048)]
    pub window: usize,
    /// Wrap each generation prompt in the model's chat template as one user turn
    /// (lm-eval's --apply_chat_template); for instruct models.
    #[arg(long)]
    pub chat_template: bool,
    /// For rolling log-likelihood tasks (perplexity): also run the unquantized model and
    /// report per-token KL divergence and top-1 agreement against it (llama.cpp's KLD).
    #[arg(long, conflicts_with = "kl_baseline_from")]
    pub kl_baseline: bool,
    /// KL divergence against the distributions a finished unquantized run stored with
    /// --save-logprobs (its --out folder), instead of running the unquantized model here.
    #[arg(long, value_name = "RUN")]
    pub kl_baseline_from: Option<PathBuf>,
    /// Store this model's next-token distribution at every token scored by rolling
    /// log-likelihood requests (in --out/logprobs/, about 2 bytes × vocabulary per token), for
    /// later runs' --kl-baseline-from.
    #[arg(long)]
    pub save_logprobs: bool,
    /// cpu, cuda, cuda:N, or auto (a GPU when built with --features cuda and present).
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// How generation's decode steps run on a GPU: `graph` (a static KV cache, the step
    /// captured once as a CUDA graph, greedy tokens chosen on the device; batches of up to
    /// 8 rows) or `eager` (one launch per op, logits to the host every token). Prefill is
    /// eager either way; the CPU always runs eager. results.json says what ran.
    #[arg(long, value_enum, default_value = "graph")]
    pub decode: DecodeArg,
    #[command(flatten)]
    pub calib: CalibArgs,
    #[command(flatten)]
    pub limits: TaskLimitArgs,
}

impl Args {
    /// `--out`, or results/runs/<model>-<method>-<task>.
    fn out_dir(&self) -> PathBuf {
        if let Some(o) = &self.out {
            return o.clone();
        }
        let stem = |p: &Path| p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let m = self.model.trim_end_matches('/').rsplit('/').next().unwrap_or("model").replace(':', "-");
        let q = self.plugin.quant.as_deref().map(stem).unwrap_or_else(|| "none".into());
        PathBuf::from("results/runs").join(format!("{m}-{q}-{}", stem(&self.task)))
    }
}

/// Run, print the metrics and where the results are; failed samples make the exit non-zero
/// after everything else was written.
pub fn main(a: Args) -> Result<()> {
    let s = execute(&a)?;
    for m in &s.results.metrics {
        let se = m.stderr.map(|v| format!(" ± {v:.4}")).unwrap_or_default();
        println!("{}: {:.4}{se}", m.name, m.value);
    }
    println!("results: {}", s.results_path.display());
    if s.results.samples.failed > 0 {
        bail!(
            "{} samples failed (see samples.jsonl); the results cover the others",
            s.results.samples.failed
        );
    }
    Ok(())
}

pub struct RunSummary {
    pub results_path: PathBuf,
    pub results: RunResults,
}

/// What the request asks the model, as hashed into `prompt_sha256`.
fn request_text(r: &Request) -> String {
    match &r.kind {
        RequestKind::Generate(g) => {
            format!("generate\0{}\0{}\0{}", g.prompt, g.stop.join("\0"), g.max_new_tokens)
        }
        RequestKind::Loglikelihood(l) => format!("loglikelihood\0{}\0{}", l.context, l.continuation),
        RequestKind::LoglikelihoodRolling(t) => format!("rolling\0{t}"),
    }
}

/// Refuse an output directory we cannot write, before any work.
fn prepare_out(dir: &Path, resume: bool) -> Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create output directory {}", dir.display()))?;
    let probe = dir.join(".llq-write-test");
    std::fs::write(&probe, b"")
        .with_context(|| format!("output directory {} is not writable", dir.display()))?;
    let _ = std::fs::remove_file(probe);
    if !resume && dir.join("samples.jsonl").exists() {
        bail!(
            "{} already holds a run (samples.jsonl); pass --resume to continue it or choose another --out",
            dir.display()
        );
    }
    Ok(())
}

/// An exclusive lock on `<dir>/.llq.lock`, released when the returned file is dropped (or the
/// process dies): two runs appending to one samples.jsonl would interleave their records.
fn lock_out(dir: &Path) -> Result<std::fs::File> {
    let p = dir.join(".llq.lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&p)
        .with_context(|| format!("cannot create {}", p.display()))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => bail!(
            "{} is in use by another llq run (it holds {}); wait for it or choose another --out",
            dir.display(),
            p.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("cannot lock {}", p.display()))
        }
    }
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

pub fn execute(a: &Args) -> Result<RunSummary> {
    let wall = Instant::now();
    let out = a.out_dir();
    let threads = default_threads(a.threads);
    let limits = a.limits.limits()?;
    // Everything that can be checked cheaply is checked before the model loads.
    let mut task = TaskRuntime::load(&a.task, limits)?;
    let info = task.describe()?;
    task.check_options(&a.task_opts)?;
    let data = std::fs::read(&a.data).with_context(|| format!("cannot read data {}", a.data.display()))?;
    let mut requests =
        task.requests(&data, &a.task_opts).with_context(|| format!("data {}", a.data.display()))?;
    if let Some(n) = a.limit {
        if n == 0 || n > requests.len() {
            bail!(
                "--limit {n} is out of range: {} holds {} requests for task `{}`",
                a.data.display(),
                requests.len(),
                info.name
            );
        }
        requests.truncate(n);
    }
    if a.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    if a.window < 2 {
        bail!(
            "--window {} is too small: a window holds at least one context token and one scored token",
            a.window
        );
    }
    let plugin = a.plugin.load()?;
    let quant_cfg = a.plugin.configure(plugin.as_ref())?;
    let calibration = if a.plugin.native {
        if a.calib.given() {
            bail!("--native runs the file's quantization as stored: drop the --calib-* options");
        }
        None
    } else {
        a.calib.resolve(quant_cfg.as_ref())?
    };
    if a.plugin.native && a.kl_baseline {
        bail!("--kl-baseline runs the unquantized model, which a quantized checkpoint (--native) does not hold: use --kl-baseline-from a run of the unquantized model");
    }
    if a.plugin.native && a.quantize_lm_head {
        bail!("--quantize-lm-head: with --native the file says whether lm_head is quantized");
    }
    let layer_opts = a.plugin.all_layer_opts()?;
    prepare_out(&out, a.resume)?;
    // Held until the run ends: a second run or resume on the same folder stops here.
    let _lock = lock_out(&out)?;
    let device = crate::device::open(&a.device)?;
    let stored_baseline = a.kl_baseline_from.as_deref().map(stored_baseline).transpose()?;
    let mut manifest = RunManifest {
        schema: MANIFEST_SCHEMA.into(),
        llq_version: env!("CARGO_PKG_VERSION").into(),
        llq_revision: env!("LLQ_GIT_REV").into(),
        model_sha256: String::new(),
        device_kind: if device.is_cuda() { "cuda" } else { "cpu" }.into(),
        eos_token_ids: vec![],
        plugin_sha256: a.plugin.quant.as_deref().map(sha256_file).transpose()?,
        plugin_options: quant_cfg
            .as_ref()
            .map(|q| serde_json::from_str(&q.canonical()).context("the plugin's canonical options"))
            .transpose()?,
        quantize_lm_head: a.quantize_lm_head,
        plugin_layer_options: layer_opts.iter().map(|l| l.spec()).collect(),
        calibration: calibration.as_ref().map(|c| {
            [
                ("text_sha256", c.text.sha256.clone()),
                ("samples", c.samples.to_string()),
                ("seq_len", c.seq_len.map_or("default".into(), |l| l.to_string())),
                ("seed", c.seed.to_string()),
                ("mode", c.mode.name().into()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect()
        }),
        task_sha256: sha256_file(&a.task)?,
        task_options: a.task_opts.iter().cloned().collect(),
        data_sha256: sha256_hex(&data),
        chat_template: a.chat_template,
        window: a.window,
        kl_baseline: match (&stored_baseline, a.kl_baseline) {
            (Some((_, m)), _) => format!("stored {}", m.model_sha256),
            (None, true) => "in-process".into(),
            (None, false) => "none".into(),
        },
        save_logprobs: a.save_logprobs,
    };
    let samples_path = out.join("samples.jsonl");
    let stored_manifest = if a.resume { RunManifest::read(&out)? } else { None };
    match &stored_manifest {
        Some(s) => manifest.check_resume(s, &out, false)?,
        None if a.resume && samples_path.exists() => bail!(
            "--resume: {} has no {} (it was made by an llq older than this one), so nothing shows \
             it is the same run; start it again in another --out",
            out.display(),
            crate::results::manifest::MANIFEST_FILE
        ),
        None => {}
    }
    if a.chat_template && !requests.iter().any(|r| matches!(r.kind, RequestKind::Generate(_))) {
        bail!("--chat-template applies to generation requests; task `{}` has none", info.name);
    }
    let rolling_task = requests.iter().any(|r| matches!(r.kind, RequestKind::LoglikelihoodRolling(_)));
    for (flag, given) in [
        ("--kl-baseline", a.kl_baseline),
        ("--kl-baseline-from", a.kl_baseline_from.is_some()),
        ("--save-logprobs", a.save_logprobs),
    ] {
        if given && !rolling_task {
            bail!(
                "{flag} applies to rolling log-likelihood requests (perplexity); task `{}` has none",
                info.name
            );
        }
    }

    tracing::info!("loading model {}", a.model);
    let t = Instant::now();
    let (mut m, imported) = match (&quant_cfg, a.plugin.native) {
        (Some(q), true) => {
            let (m, p) = crate::checkpoint::import(&a.model, q.plugin, &device)?;
            (m, Some(p))
        }
        _ => (load(&a.model)?, None),
    };
    let load_s = t.elapsed().as_secs_f64();
    if let Some(p) = &imported {
        manifest.plugin_options =
            Some(serde_json::from_str(&p.quantization.options).context("the imported options")?);
    }
    manifest.model_sha256 = m.content_hash.clone();
    manifest.eos_token_ids = m.eos.clone();
    if let Some(s) = &stored_manifest {
        manifest.check_resume(s, &out, true)?;
    }
    manifest.write(&out)?;
    tracing::info!(
        "{} ({}, {} layers, hidden {}); {}",
        m.id,
        m.format,
        m.config.num_hidden_layers,
        m.config.hidden_size,
        m.precision_note
    );
    // The unquantized model, for KL divergence against it (before the plugin touches weights).
    let baseline = if a.kl_baseline {
        if quant_cfg.is_none() {
            bail!("--kl-baseline compares a quantized model with the unquantized one: it needs --quant");
        }
        Some(Llama::new(&m.config, &m.weights, &device)?)
    } else {
        None
    };
    let (quant, packed) = match (&quant_cfg, imported) {
        (_, Some(p)) => {
            tracing::info!(
                "{}: {} layers as stored ({})",
                p.quantization.method,
                p.quantization.layers,
                p.quantization.imported.as_deref().unwrap_or_default()
            );
            (Some(p.quantization), p.packed)
        }
        (Some(q), None) => {
            let o = QuantizeOptions {
                include_lm_head: a.quantize_lm_head,
                threads,
                calibration: calibration.as_ref(),
                layer_opts: &layer_opts,
            };
            let p = prepare(q, &mut m, &device, &o)?;
            tracing::info!(
                "{} quantized {} layers in {:.2} s",
                p.quantization.method,
                p.quantization.layers,
                p.quantization.seconds
            );
            (Some(p.quantization), p.packed)
        }
        (None, None) => (None, None),
    };
    if a.chat_template {
        m.chat_prompt("")?;
    }
    let model = Llama::with_packed(&m.config, &m.weights, &device, packed.as_ref())?;
    // Captured decode steps, kept from one generation batch to the next.
    let mut steps = StepPool::default();
    if device.is_cuda() {
        // First use on a GPU (candle's kernel loads, cuBLAS setup, our compiles and a graph
        // capture) is paid here and reported as timing.first_use, not inside a sample's time.
        let t = Instant::now();
        generate_with(&model, &m.tokenizer, &[vec![1, 1]], &[vec![]], &[2], &[], a.decode.path(), &mut steps)
            .context("warming up the GPU path")?;
        let s = t.elapsed().as_secs_f64();
        crate::util::first_use::record(|c| c.warmup_s += s);
    }
    let size = model_size(&m, quant.as_ref(), model.dtype.size_in_bytes() as u64);
    drop(packed);
    m.weights.clear();
    let window = crate::generate::rolling_window(&m.config, a.window);
    let this_model = logprobs::Manifest::new(&m.content_hash, m.config.vocab_size, window);
    if let Some((dir, stored)) = &stored_baseline {
        if let Some(d) = stored.mismatch(&this_model) {
            bail!("--kl-baseline-from {}: its log-probs were stored for {d}", dir.display());
        }
    }
    if a.save_logprobs {
        this_model.write(&out)?;
    }
    let kl = KlSetup {
        model: baseline.as_ref(),
        stored: stored_baseline.as_ref().map(|(d, m)| (d.as_path(), m)),
        save: a.save_logprobs.then_some((out.as_path(), &this_model)),
    };

    let hashes: HashMap<&str, String> =
        requests.iter().map(|r| (r.id.as_str(), sha256_hex(request_text(r).as_bytes()))).collect();
    let (mut done, earlier) = if a.resume {
        let r = resume::resume(&samples_path, &requests, &hashes, &mut task, &a.task_opts)?;
        tracing::info!("resuming: {} of {} samples already done", r.done.len(), requests.len());
        (r.done, Some(r.earlier))
    } else {
        (HashMap::new(), None)
    };
    let pending: Vec<&Request> = requests.iter().filter(|r| !done.contains_key(&r.id)).collect();
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&samples_path)
        .with_context(|| format!("cannot open {}", samples_path.display()))?;

    let bar = indicatif::ProgressBar::new(pending.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} samples, {per_sec}, ETA {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let gen_t = Instant::now();
    let mut decode_log = DecodeLog::default();
    let mut new_tokens_total = 0usize;
    let mut failed = 0usize;
    let mut truncated = 0usize;
    let mut i = 0;
    while i < pending.len() {
        // Batch consecutive generation requests; others go one at a time.
        let mut batch = vec![pending[i]];
        if matches!(pending[i].kind, RequestKind::Generate(_)) {
            while batch.len() < a.batch_size
                && i + batch.len() < pending.len()
                && matches!(pending[i + batch.len()].kind, RequestKind::Generate(_))
            {
                batch.push(pending[i + batch.len()]);
            }
        }
        i += batch.len();
        let t = Instant::now();
        let outcomes = run_batch(&model, &kl, &m, &batch, &hashes, a, &mut decode_log, &mut steps);
        let secs = t.elapsed().as_secs_f64() / batch.len() as f64;
        for (req, outcome) in batch.iter().zip(outcomes) {
            let mut rec = SampleRecord {
                id: req.id.clone(),
                prompt_sha256: hashes[req.id.as_str()].clone(),
                prediction: None,
                loglikelihood: None,
                token_logprobs: None,
                token_kl: None,
                token_top1_agree: None,
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
                        Response::Loglikelihood(l) => {
                            rec.loglikelihood = Some(LoglikelihoodRecord {
                                logprob: l.logprob,
                                is_greedy: l.is_greedy,
                                tokens: l.tokens,
                            })
                        }
                        Response::Rolling(r) => {
                            rec.token_logprobs = Some(r.token_logprobs.clone());
                            if !r.kl.is_empty() {
                                rec.token_kl = Some(r.kl.clone());
                                rec.token_top1_agree = Some(r.top1_agree.clone());
                            }
                        }
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
            writeln!(file, "{line}")
                .and_then(|_| file.flush())
                .with_context(|| format!("cannot append to {}", samples_path.display()))?;
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
            metrics: done
                .get(&r.id)
                .map(|s| {
                    s.metrics
                        .iter()
                        .map(|(k, v)| crate::task::Metric { name: k.clone(), value: *v })
                        .collect()
                })
                .unwrap_or_default(),
        })
        .collect();
    if steps.built > 0 {
        tracing::info!(
            "captured decode steps: {} built, {} reused across batches",
            steps.built,
            steps.reused
        );
    }
    let report = task.aggregate(&scored, &a.task_opts)?;
    let results = RunResults {
        schema: SCHEMA.into(),
        llq: Build::this(),
        date: now_rfc3339(),
        command_line: std::env::args().collect(),
        device: DeviceInfo {
            kind: if device.is_cuda() { "cuda" } else { "cpu" }.into(),
            spec: a.device.clone(),
            threads,
            dtype: format!("{:?}", model.dtype).to_lowercase(),
            decode: decode_log.ran.iter().map(|(k, n)| format!("{k}: {n} batches")).collect(),
        },
        model: ModelInfo {
            id: m.id.clone(),
            format: m.format.clone(),
            sha256: m.content_hash.clone(),
            precision: m.precision_note.clone(),
            config: m.config.clone(),
            file_bytes: m.file_bytes,
        },
        quantization: match (&quant, &a.plugin.quant) {
            (Some(q), Some(path)) => Some(QuantizationInfo {
                method: q.method.clone(),
                version: q.method_version.clone(),
                options: serde_json::from_str(&q.options).context("the plugin's canonical options")?,
                plugin: path.display().to_string(),
                layers: q.layers,
                seconds: q.seconds,
                lm_head: a.quantize_lm_head
                    || q.per_layer.iter().any(|l| l.name == crate::model::config::LM_HEAD),
                calibration: q.calibration.clone(),
                imported: q.imported.clone(),
                numerics: quant_cfg.as_ref().and_then(|c| crate::quant::numerics(c.plugin)),
                layer_options: q.layer_options.clone(),
                layers_detail: q
                    .per_layer
                    .iter()
                    .map(|l| {
                        Ok(LayerInfo {
                            name: l.name.clone(),
                            params: l.params,
                            bytes: l.bytes,
                            bits_per_weight: 8.0 * l.bytes as f64 / l.params.max(1) as f64,
                            options: l
                                .options
                                .as_deref()
                                .map(serde_json::from_str)
                                .transpose()
                                .context("a layer's canonical options")?,
                            packed: Some(
                                serde_json::from_str(&l.metadata).context("a layer's packed metadata")?,
                            ),
                        })
                    })
                    .collect::<Result<_>>()?,
            }),
            _ => None,
        },
        size,
        task: TaskRun {
            name: info.name.clone(),
            version: info.version.clone(),
            path: a.task.display().to_string(),
            options: a.task_opts.iter().cloned().collect(),
            data: a.data.display().to_string(),
            data_sha256: sha256_hex(&data),
            limit: a.limit,
            chat_template: a.chat_template,
            batch_size: a.batch_size,
            kl_baseline: a.kl_baseline || a.kl_baseline_from.is_some(),
            kl_baseline_from: a.kl_baseline_from.as_ref().map(|p| p.display().to_string()),
            saved_logprobs: a.save_logprobs,
        },
        metrics: report
            .metrics
            .iter()
            .map(|m| Metric { name: m.name.clone(), value: m.value, stderr: m.stderr, count: m.count })
            .collect(),
        native: serde_json::from_str(&report.native_json)
            .unwrap_or(serde_json::Value::String(report.native_json.clone())),
        samples: SampleCounts {
            total: requests.len(),
            failed,
            truncated_prompts_this_session: truncated,
            file: "samples.jsonl".into(),
        },
        timing: Timing {
            load_s,
            quantize_s: quant.as_ref().map(|q| q.seconds),
            generate_s: gen_s,
            new_tokens: new_tokens_total,
            wall_s: wall.elapsed().as_secs_f64(),
            earlier_sessions: earlier,
            first_use: device.is_cuda().then(crate::util::first_use::snapshot),
            generation: decode_log.timing(),
        },
    };
    let path = out.join("results.json");
    write_json(&path, &results)?;
    Ok(RunSummary { results_path: path, results })
}

/// (response, prompt tokens, new tokens, prompt tokens truncated)
type Outcome = Result<(Response, usize, usize, usize)>;

/// A finished run's stored log-probs (`--kl-baseline-from`): its folder and manifest. It must
/// have finished (results.json) and been unquantized: KL is against the unquantized model.
fn stored_baseline(dir: &Path) -> Result<(PathBuf, logprobs::Manifest)> {
    let flag = format!("--kl-baseline-from {}", dir.display());
    let results = dir.join("results.json");
    let text = std::fs::read(&results)
        .with_context(|| format!("{flag}: {} is missing: that run has not finished", results.display()))?;
    let r: RunResults = serde_json::from_slice(&text)
        .with_context(|| format!("{flag}: {} is not an llq results file", results.display()))?;
    if let Some(q) = &r.quantization {
        bail!("{flag}: that run was quantized ({}); KL is measured against an unquantized run", q.method);
    }
    let m = logprobs::Manifest::read(dir).with_context(|| flag.clone())?;
    Ok((dir.to_path_buf(), m))
}

/// What rolling requests compare against and store.
struct KlSetup<'a> {
    /// The unquantized model, run here (`--kl-baseline`).
    model: Option<&'a Llama>,
    /// A baseline run's stored distributions (`--kl-baseline-from`).
    stored: Option<(&'a Path, &'a logprobs::Manifest)>,
    /// Where to store this model's distributions (`--save-logprobs`).
    save: Option<(&'a Path, &'a logprobs::Manifest)>,
}

/// One rolling request, with its baseline and its stored rows as `kl` says.
fn rolling_request(
    model: &Llama,
    kl: &KlSetup,
    m: &LoadedModel,
    text: &str,
    sha: &str,
    window: usize,
) -> Result<Rolling> {
    let baseline = match (kl.model, kl.stored) {
        (Some(b), _) => Baseline::Model(b),
        (None, Some((dir, man))) => Baseline::Stored(logprobs::Reader::open(dir, sha, man)?),
        (None, None) => Baseline::None,
    };
    let mut save = kl.save.map(|(dir, man)| logprobs::Writer::create(dir, sha, man)).transpose()?;
    let r = rolling(model, baseline, &m.tokenizer, text, window, save.as_mut())?;
    if let Some(w) = save {
        w.finish()?;
    }
    Ok(r)
}

/// One line for what ran a batch's decode steps.
fn describe_steps(s: &StepsRan) -> String {
    match s {
        StepsRan::Graph => "cuda-graph".into(),
        StepsRan::Direct(why) => format!("static cache, direct launches ({why})"),
        StepsRan::Eager(why) if why.is_empty() => "eager".into(),
        StepsRan::Eager(why) => format!("eager ({why})"),
    }
}

/// What ran each generation batch's decode steps, counted (results.json `device.decode`),
/// and where the batches' time went by batch size (`timing.generation`).
#[derive(Default)]
struct DecodeLog {
    ran: BTreeMap<String, usize>,
    time: BTreeMap<usize, (usize, GenerationTime)>,
}

impl DecodeLog {
    fn timing(&self) -> Vec<GenerationTiming> {
        self.time
            .iter()
            .map(|(&batch, &(batches, t))| {
                let per_step = |x: f64| (t.decode_steps > 0).then(|| x / t.decode_steps as f64);
                GenerationTiming {
                    batch,
                    batches,
                    prefill_s: t.prefill_s,
                    decode_s: t.decode_s,
                    decode_steps: t.decode_steps,
                    ms_per_step: per_step(t.decode_s * 1e3),
                    mean_context: per_step(t.context_sum as f64),
                }
            })
            .collect()
    }
}

#[allow(clippy::too_many_arguments)]
fn run_batch<'m>(
    model: &'m Llama,
    kl: &KlSetup,
    m: &LoadedModel,
    batch: &[&Request],
    hashes: &HashMap<&str, String>,
    a: &Args,
    log: &mut DecodeLog,
    steps: &mut StepPool<'m>,
) -> Vec<Outcome> {
    let (window, chat) = (a.window, a.chat_template);
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
            match generate_with(
                model,
                &m.tokenizer,
                &prompts,
                &stops,
                &max_new,
                &m.eos,
                a.decode.path(),
                steps,
            ) {
                Ok((gs, how, time)) => {
                    *log.ran.entry(describe_steps(&how)).or_default() += 1;
                    let (batches, sum) = log.time.entry(prompts.len()).or_default();
                    *batches += 1;
                    sum.add(&time);
                    gs.into_iter()
                        .map(|g| {
                            Ok((Response::Generated(g.text), g.prompt_tokens, g.new_tokens, g.truncated))
                        })
                        .collect()
                }
                // A batch failure is retried row by row so one bad prompt costs one sample.
                Err(_) if batch.len() > 1 => {
                    batch.iter().flat_map(|r| run_batch(model, kl, m, &[*r], hashes, a, log, steps)).collect()
                }
                Err(e) => vec![Err(e)],
            }
        }
        RequestKind::Loglikelihood(l) => {
            vec![loglikelihood(model, &m.tokenizer, &l.context, &l.continuation).map(|(lp, g, n)| {
                (
                    Response::Loglikelihood(LoglikelihoodResult {
                        logprob: lp,
                        is_greedy: g,
                        tokens: n as u32,
                    }),
                    n,
                    0,
                    0,
                )
            })]
        }
        RequestKind::LoglikelihoodRolling(text) => {
            vec![rolling_request(model, kl, m, text, &hashes[batch[0].id.as_str()], window).map(|r| {
                let n = r.logprobs.len();
                (Response::Rolling(RollingResult::from_tokens(text, r.logprobs, r.kl, r.top1_agree)), n, 0, 0)
            })]
        }
    }
}
