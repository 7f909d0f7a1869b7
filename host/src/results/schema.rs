//! The results schema, `llq-results/2`: every file `llq-host run` writes, as types. Writing
//! (`run`), reading back (`--resume`, `compare`, `score`) and the documentation
//! (`results/README.md`, generated from these doc comments by [`markdown`] and checked
//! against them by a test) all go through this module. To add a field, add it here with a
//! doc comment, fill it in `cmd::run`, and regenerate the README (`make results-doc`).

use crate::model::Config;
use crate::util::first_use::FirstUse;
use anyhow::{bail, Context, Result};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// The value of `schema` in every results file this host writes.
pub const SCHEMA: &str = "llq-results/2";

/// `results.json`: one run of a model, optionally quantized, on a task.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunResults {
    /// `"llq-results/2"`.
    pub schema: String,
    /// The host that made the file.
    pub llq: Build,
    /// RFC 3339, UTC, when the run finished.
    pub date: String,
    /// argv of the run.
    pub command_line: Vec<String>,
    /// Where the model ran.
    pub device: DeviceInfo,
    /// The model as loaded, before quantization.
    pub model: ModelInfo,
    /// Null without `--quant`.
    pub quantization: Option<QuantizationInfo>,
    /// What the weights take, counted as stored.
    pub size: Size,
    /// The task, its options and data.
    pub task: TaskRun,
    /// The task's aggregate metrics.
    pub metrics: Vec<Metric>,
    /// The task's own report (CoQA official mode: the official script's JSON).
    pub native: serde_json::Value,
    /// Sample counts of this session.
    pub samples: SampleCounts,
    /// Seconds spent, this session.
    pub timing: Timing,
}

/// The host that made the file.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Build {
    /// Host version.
    pub version: String,
    /// The git revision the host was built from (`-dirty` if the tree had changes).
    pub git_revision: String,
}

impl Build {
    pub fn this() -> Self {
        Build { version: env!("CARGO_PKG_VERSION").into(), git_revision: env!("LLQ_GIT_REV").into() }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceInfo {
    /// `cpu` or `cuda`.
    pub kind: String,
    /// What `--device` said (`auto`, `cpu`, `cuda:N`).
    pub spec: String,
    /// Quantization threads.
    pub threads: usize,
    /// The dtype the model computes in (`f32` on the CPU, `bf16` on a GPU).
    pub dtype: String,
    /// What ran generation's decode steps, with how many batches each: `cuda-graph` (the
    /// captured step on a static cache, `--decode graph`), `static cache, direct launches
    /// (why)`, or `eager` (with why, when the graph was asked for). Empty without generation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub decode: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelInfo {
    /// What `--model` named.
    pub id: String,
    /// `hf`, `gguf`, `llama2c` or `synthetic`.
    pub format: String,
    /// SHA-256 of the weight file (HF: of the shards' hashes in order).
    pub sha256: String,
    /// What the "unquantized" weights really are, e.g. `GGUF F32/Q4_1/Q8_0 dequantized to f32
    /// (not the original bf16 weights)`.
    pub precision: String,
    /// The model's config.json fields.
    pub config: Config,
    /// Bytes of the weights as stored.
    pub file_bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QuantizationInfo {
    /// The plugin's name.
    pub method: String,
    /// The plugin's version.
    pub version: String,
    /// Every plugin option, defaults filled in.
    pub options: BTreeMap<String, String>,
    /// The plugin file.
    pub plugin: String,
    /// Layers quantized.
    pub layers: usize,
    /// Seconds to quantize.
    pub seconds: f64,
    /// Whether lm_head was quantized too (`--quantize-lm-head`).
    pub lm_head: bool,
    /// The calibration run, null for methods that need none.
    pub calibration: Option<CalibrationInfo>,
    /// Present when the layers ran as a quantized checkpoint stores them (`run --native`):
    /// the file and its format; nothing was quantized, `seconds` is the time to read and
    /// dequantize them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imported: Option<String>,
    /// Present when the numerics that ran are not the whole method: `weight-only: …` for a
    /// plugin with its own matmul (LLM.int8's int8 activations and fp16 outliers), which llq
    /// runs from its dequantized weights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numerics: Option<String>,
    /// The `--opt-layer` arguments as given (`PATTERN:KEY=VALUE`, the last match winning).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layer_options: Vec<String>,
    /// Every quantized layer, in model order: its size and, where `--opt-layer` changed them,
    /// its full options.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers_detail: Vec<LayerInfo>,
}

/// One quantized layer as stored.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LayerInfo {
    /// The weight's name.
    pub name: String,
    /// Its parameters.
    pub params: u64,
    /// Its packed bytes.
    pub bytes: u64,
    /// 8 · bytes / params.
    pub bits_per_weight: f64,
    /// Every option, defaults filled in, when `--opt-layer` changed the model's options here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<BTreeMap<String, String>>,
    /// What the plugin recorded for this layer when it packed it (its metadata: e.g. gguf's
    /// type after llama.cpp's fallback and whether the importance matrix was used).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packed: Option<serde_json::Value>,
}

/// A calibration run: the text, how it was cut and run, and what it cost.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CalibrationInfo {
    /// Where the text came from (a file, or the Gutenberg calibration books).
    pub source: String,
    /// SHA-256 of the text as read.
    pub sha256: String,
    /// Windows of text.
    pub samples: usize,
    /// Tokens per window.
    pub seq_len: usize,
    /// Seed of the window offsets.
    pub seed: u64,
    /// `sequential`, `block` or `parallel` (which activations each layer saw).
    pub mode: String,
    /// Calibration tokens in all.
    pub tokens: u64,
    /// Seconds for the calibration run, the quantization of every layer included.
    pub seconds: f64,
    /// Of `seconds`, those spent in the plugin's quantize calls (GPTQ's solve, on the CPU); the
    /// rest is forward passes, statistics, transfers and the scale search.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantize_seconds: Option<f64>,
    /// Of `seconds`, those spent searching and folding input scales (the unquantized block
    /// pass included); absent for methods that search none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search_seconds: Option<f64>,
    /// Peak resident memory of the process after calibration (Linux VmHWM), bytes.
    pub peak_rss_bytes: Option<u64>,
    /// Input scales the plugin chose and the host folded (ABI 1.2 layer groups; AWQ), in
    /// model order; empty for methods that search none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scale_groups: Vec<ScaleGroup>,
}

/// One layer group's folded input scale.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScaleGroup {
    /// The tensor the inverse scale went into (an RMSNorm weight, or v/up for o/down).
    pub producer: String,
    /// The layers whose input columns were multiplied by the scale.
    pub layers: Vec<String>,
    /// Smallest scale.
    pub min: f32,
    /// Largest scale.
    pub max: f32,
    /// The plugin's description of its choice (AWQ: `ratio`, `loss`, `loss_ratio0`).
    pub info: serde_json::Value,
}

/// What the weights take, counted as stored.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Size {
    /// All parameters.
    pub params: u64,
    /// Parameters of the linear layers (q/k/v/o/gate/up/down, and lm_head with
    /// `--quantize-lm-head`).
    pub quantized_params: u64,
    /// Bytes of those layers packed (without a plugin: at 4 bytes, f32 as computed).
    pub quantized_bytes: u64,
    /// Everything else at 2 bytes per parameter (fp16 storage, as transformers +
    /// bitsandbytes keep it).
    pub other_bytes: u64,
    /// quantized_bytes + other_bytes.
    pub total_bytes: u64,
    /// 8 · quantized_bytes / quantized_params (NF4 block 64 = 4.5: 4 bits + an f32 absmax
    /// per 64).
    pub bits_per_weight: f64,
    /// 8 · total_bytes / params.
    pub bits_per_param_overall: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskRun {
    /// The task's name.
    pub name: String,
    /// The task's version.
    pub version: String,
    /// The task component.
    pub path: String,
    /// `--task-opt` values as given (the task fills in its defaults).
    pub options: BTreeMap<String, String>,
    /// The dataset file.
    pub data: String,
    /// SHA-256 of the dataset file.
    pub data_sha256: String,
    /// `--limit`, if given.
    pub limit: Option<usize>,
    /// Whether prompts were wrapped in the model's chat template.
    pub chat_template: bool,
    /// Generation requests per batch.
    pub batch_size: usize,
    /// Whether KL divergence against the unquantized model was computed.
    pub kl_baseline: bool,
    /// The unquantized run whose stored distributions KL was measured against
    /// (`--kl-baseline-from`; u16-encoded, within 1.2e-4 nats per log-prob); absent when the
    /// unquantized model ran in-process (`--kl-baseline`, exact).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kl_baseline_from: Option<String>,
    /// Whether this run stored its distributions at every scored token (`--save-logprobs`,
    /// in `logprobs/`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub saved_logprobs: bool,
}

/// One aggregate metric.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Metric {
    /// The metric's name (as the task declares it).
    pub name: String,
    /// Its value over the samples.
    pub value: f64,
    /// Standard error of the mean, null where undefined.
    pub stderr: Option<f64>,
    /// Samples aggregated.
    pub count: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SampleCounts {
    /// Requests in the run.
    pub total: usize,
    /// Samples that failed this session.
    pub failed: usize,
    /// Prompts truncated on the left this session.
    pub truncated_prompts_this_session: usize,
    /// The per-sample file beside results.json.
    pub file: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Timing {
    /// Seconds to load the model.
    pub load_s: f64,
    /// Seconds to quantize, null without a plugin.
    pub quantize_s: Option<f64>,
    /// Model time for all samples of this session, prefill included.
    pub generate_s: f64,
    /// Tokens generated this session.
    pub new_tokens: usize,
    /// Wall time of the command.
    pub wall_s: f64,
    /// What earlier sessions of a resumed run contributed (`--resume`); absent for a run in
    /// one session. Their load, quantize and wall times are not known (an interrupted session
    /// writes no results.json): only the model time of their samples.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub earlier_sessions: Option<EarlierSessions>,
    /// One-time GPU preparation this session paid (NVRTC compiles or PTX-cache hits, PTX
    /// loads, decode-graph captures, and the warm-up generation before the first sample):
    /// compiles, loads and captures fall inside `load_s`/`quantize_s`/`generate_s` or the
    /// warm-up, and are reported apart here; the warm-up itself is only in `wall_s`, never in
    /// `generate_s`. Absent on the CPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_use: Option<FirstUse>,
    /// This session's generation batches by batch size: prefill time apart from the decode
    /// loop's, whose ms per step at its mean context is what compares with `llq-host bench
    /// --context` at the same batch. Absent when nothing was generated.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub generation: Vec<GenerationTiming>,
}

/// The generation batches of one batch size (a batch's size is its number of prompts).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GenerationTiming {
    /// Prompts in each of these batches.
    pub batch: usize,
    /// Generation batches of this size.
    pub batches: usize,
    /// Seconds in their prefills (to the first greedy tokens on the host).
    pub prefill_s: f64,
    /// Seconds in their decode loops (each step's tokens back on the host, stop checks
    /// between steps included).
    pub decode_s: f64,
    /// Decode steps run, each one token for every row of the batch.
    pub decode_steps: usize,
    /// decode_s over decode_steps, in milliseconds; null without steps.
    pub ms_per_step: Option<f64>,
    /// Mean positions in the cache when a step ran; null without steps.
    pub mean_context: Option<f64>,
}

/// The samples a resumed run took from its earlier sessions.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EarlierSessions {
    /// Samples taken from samples.jsonl as done (re-scored, not re-run).
    pub samples: usize,
    /// Their model time, summed from their records; `generate_s` + this is the model time
    /// of all the run's samples.
    pub sample_seconds: f64,
    /// Tokens they generated.
    pub new_tokens: usize,
    /// How many of them the current task scored differently from their stored metrics.
    pub rescored_differently: usize,
}

/// One line of `samples.jsonl`, written as soon as the sample is scored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SampleRecord {
    /// The task's request id (CoQA: `<story id>#<turn id>`).
    pub id: String,
    /// SHA-256 of the request as the model saw it (kind, prompt/context, stop sequences,
    /// token limit).
    pub prompt_sha256: String,
    /// Generated text, untrimmed (generation requests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prediction: Option<String>,
    /// Log-likelihood requests' result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loglikelihood: Option<LoglikelihoodRecord>,
    /// Per-token log-probabilities (rolling requests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_logprobs: Option<Vec<f64>>,
    /// Per-token KL(unquantized ‖ quantized) (rolling requests with `--kl-baseline`), the
    /// same tokens as `token_logprobs`: what paired comparisons of methods resample.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_kl: Option<Vec<f64>>,
    /// Per-token 1/0: the quantized model's top token is the unquantized model's (with
    /// `--kl-baseline`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_top1_agree: Option<Vec<u8>>,
    /// The task's per-sample metrics (empty when the sample failed).
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
    /// Prompt tokens after truncation.
    #[serde(default)]
    pub prompt_tokens: usize,
    /// Generated tokens.
    #[serde(default)]
    pub new_tokens: usize,
    /// Prompt tokens dropped on the left to fit the model (lm-eval's rule), if any.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub truncated_tokens: usize,
    /// Model time for the sample (a batch's time split evenly).
    #[serde(default)]
    pub seconds: f64,
    /// Why the sample failed (model or task), if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The result of a log-likelihood request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LoglikelihoodRecord {
    /// Sum of the continuation's token log-probabilities.
    pub logprob: f64,
    /// Whether greedy decoding would have produced the continuation.
    pub is_greedy: bool,
    /// Continuation tokens.
    pub tokens: u32,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl RunResults {
    /// Read a results file, refusing anything that is not this schema version.
    pub fn read(path: &Path) -> Result<RunResults> {
        let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let v: serde_json::Value = crate::util::json::parse(&bytes, path)?;
        if v["schema"] != SCHEMA {
            bail!("{} is not an {SCHEMA} results file (schema {})", path.display(), v["schema"]);
        }
        serde_json::from_value(v).with_context(|| format!("{} does not follow {SCHEMA}", path.display()))
    }

    pub fn metric(&self, name: &str) -> Option<&Metric> {
        self.metrics.iter().find(|m| m.name == name)
    }
}

/// A `samples.jsonl` as read back: its records, and the lines that are not records.
#[derive(Debug, Default)]
pub struct SampleFile {
    /// The records, in file order (a retried sample appears more than once; the last wins).
    pub records: Vec<SampleRecord>,
    /// The raw bytes of each record's line, in the same order.
    pub record_lines: Vec<Vec<u8>>,
    /// 1-based numbers and raw bytes of lines that are not records: a line cut short by a
    /// kill, or bytes that are not UTF-8.
    pub rejected: Vec<(usize, Vec<u8>)>,
    /// Whether the file ends with a newline (or is empty): appending to one that does not
    /// would glue the next record onto its last line.
    pub ends_cleanly: bool,
}

impl SampleFile {
    /// Read `path` line by line as bytes: one bad line (torn, not UTF-8) rejects that line,
    /// never the file. A missing file has no records.
    pub fn read(path: &Path) -> Result<SampleFile> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(SampleFile { ends_cleanly: true, ..Default::default() })
            }
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let mut f =
            SampleFile { ends_cleanly: bytes.is_empty() || bytes.ends_with(b"\n"), ..Default::default() };
        for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match std::str::from_utf8(line).ok().and_then(|l| serde_json::from_str::<SampleRecord>(l).ok()) {
                Some(r) => {
                    f.records.push(r);
                    f.record_lines.push(line.to_vec());
                }
                None => f.rejected.push((i + 1, line.to_vec())),
            }
        }
        Ok(f)
    }
}

/// The records of a `samples.jsonl`, in file order, with the 1-based numbers of lines that
/// are not records (a line cut short by an interruption). A missing file has no records.
pub fn read_samples(path: &Path) -> Result<(Vec<SampleRecord>, Vec<usize>)> {
    let f = SampleFile::read(path)?;
    Ok((f.records, f.rejected.into_iter().map(|(n, _)| n).collect()))
}

// ---- the documentation, generated from the types ------------------------------------------

/// Markdown tables of both files (`results/README.md` holds them between markers).
pub fn markdown() -> String {
    let mut out = format!("### `results.json` (schema `{SCHEMA}`)\n\n");
    out.push_str(&table(&schemars::schema_for!(RunResults).to_value()));
    out.push_str("\n### `samples.jsonl`\n\nOne JSON object per line, in completion order:\n\n");
    out.push_str(&table(&schemars::schema_for!(SampleRecord).to_value()));
    out
}

/// Objects documented field by field; anything else (e.g. `model.config`) is one row.
fn table(root: &serde_json::Value) -> String {
    let mut rows = vec![];
    walk(root, root, "", &mut rows);
    let mut out = String::from("| key | type | meaning |\n| --- | --- | --- |\n");
    for (k, t, d) in rows {
        out.push_str(&format!("| `{k}` | {t} | {} |\n", d.replace('\n', " ")));
    }
    out
}

/// Follow a `$ref` into `$defs`.
fn resolve<'a>(root: &'a serde_json::Value, s: &'a serde_json::Value) -> &'a serde_json::Value {
    match s.get("$ref").and_then(|r| r.as_str()).and_then(|r| r.strip_prefix("#/$defs/")) {
        Some(name) => &root["$defs"][name],
        None => s,
    }
}

/// (the schema without its null alternative, whether null is allowed)
fn non_null<'a>(root: &'a serde_json::Value, s: &'a serde_json::Value) -> (&'a serde_json::Value, bool) {
    if let Some(alts) = s.get("anyOf").and_then(|a| a.as_array()) {
        let rest: Vec<&serde_json::Value> = alts.iter().filter(|a| a["type"] != "null").collect();
        if rest.len() == 1 && rest.len() < alts.len() {
            return (resolve(root, rest[0]), true);
        }
    }
    (resolve(root, s), false)
}

fn type_name(root: &serde_json::Value, s: &serde_json::Value) -> String {
    let (s, nullable) = non_null(root, s);
    let base = match &s["type"] {
        serde_json::Value::String(t) => match t.as_str() {
            "array" => format!("[{}]", type_name(root, &s["items"])),
            "object" if s.get("properties").is_none() => "map".into(),
            "integer" => "int".into(),
            "number" => "float".into(),
            "boolean" => "bool".into(),
            t => t.into(),
        },
        serde_json::Value::Array(ts) => {
            let ts: Vec<&str> = ts.iter().filter_map(|t| t.as_str()).filter(|t| *t != "null").collect();
            let nullable = ts.len() < s["type"].as_array().map_or(0, |a| a.len());
            let t = match ts.as_slice() {
                ["integer"] => "int",
                ["number"] => "float",
                ["string"] => "string",
                ["boolean"] => "bool",
                ["array"] => return format!("[{}] or null", type_name(root, &s["items"])),
                _ => "any",
            };
            return if nullable { format!("{t} or null") } else { t.into() };
        }
        _ => "any".into(),
    };
    if nullable {
        format!("{base} or null")
    } else {
        base
    }
}

fn walk(
    root: &serde_json::Value,
    s: &serde_json::Value,
    prefix: &str,
    rows: &mut Vec<(String, String, String)>,
) {
    let s = resolve(root, s);
    let Some(props) = s.get("properties").and_then(|p| p.as_object()) else { return };
    for (name, p) in props {
        let key = if prefix.is_empty() { name.clone() } else { format!("{prefix}.{name}") };
        let (inner, nullable) = non_null(root, p);
        let doc =
            p.get("description").or_else(|| inner.get("description")).and_then(|d| d.as_str()).unwrap_or("");
        // Nested llq objects are documented field by field; foreign ones (the model config)
        // and maps are one row.
        let expand = inner.get("properties").is_some() && name != "config";
        if expand {
            if !doc.is_empty() || nullable {
                let t = if nullable { "object or null" } else { "object" };
                rows.push((key.clone(), t.into(), doc.into()));
            }
            walk(root, inner, &key, rows);
        } else {
            rows.push((key.clone(), type_name(root, p), doc.into()));
            // A list of llq objects: each item's fields as `key[].field`.
            let item = inner.get("items").map(|i| resolve(root, i));
            if let Some(item) = item.filter(|i| i.get("properties").is_some()) {
                walk(root, item, &format!("{key}[]"), rows);
            }
        }
    }
}
