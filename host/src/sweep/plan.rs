//! Cells: one per (model, method, task), each with the `llq-host run` arguments that compute
//! it, plus one `llq-host bench` cell per (model, method) when the spec has a `[bench]`
//! section; each with a content address — the SHA-256 of everything that decides its results: llq's
//! version, the model's content, the plugin file and its options, the task file, its options
//! and data, the limit and the device. A cell whose address is unchanged is not run again;
//! change any input and it is pending again.

use super::spec::{Spec, BENCH};
use crate::util::digest::{sha256_file, sha256_hex};
use anyhow::{Context, Result};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::Path;

/// What a cell runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `llq-host run`: a task's samples and metrics (`results.json`, `samples.jsonl`).
    Run,
    /// `llq-host bench`: prefill and decode speed, memory (`bench.json`).
    Bench,
}

impl Kind {
    /// The file whose presence (with the cell's record) makes the cell done.
    pub fn output(self) -> &'static str {
        match self {
            Kind::Run => "results.json",
            Kind::Bench => "bench.json",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Cell {
    /// `<model>.<method>.<task>` (`<model>.<method>.bench`): the cell's folder name.
    pub id: String,
    pub kind: Kind,
    pub model: String,
    pub method: String,
    pub task: String,
    /// Arguments of `llq-host` (from the subcommand), without `--out`.
    pub args: Vec<String>,
    /// What the address is the hash of.
    pub inputs: Value,
    pub address: String,
    /// The cell whose stored distributions this cell's KL reads (`--kl-baseline-from`, added
    /// when the cell runs: the folder depends on where the sweep is): its model's baseline
    /// cell for the same task. Its address is part of this cell's.
    pub needs: Option<String>,
    /// This cell stores its distributions for others' KL (`--save-logprobs`).
    pub saves_logprobs: bool,
}

/// Content hashes of files, each read once per plan.
#[derive(Default)]
struct Hashes(HashMap<String, String>);

impl Hashes {
    fn of(&mut self, what: &str, path: &str) -> Result<String> {
        if let Some(h) = self.0.get(path) {
            return Ok(h.clone());
        }
        let p = Path::new(path);
        let h = if path.starts_with("synthetic:") {
            path.to_string()
        } else if p.is_dir() {
            // An HF directory: the hash of its files' names and hashes, in name order.
            let mut entries: Vec<_> = std::fs::read_dir(p)
                .with_context(|| format!("{what} {path}"))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|e| e.is_file())
                .collect();
            entries.sort();
            let mut all = String::new();
            for e in entries {
                all.push_str(&format!(
                    "{} {}\n",
                    e.file_name().unwrap_or_default().to_string_lossy(),
                    sha256_file(&e)?
                ));
            }
            sha256_hex(all.as_bytes())
        } else {
            sha256_file(p).with_context(|| format!("{what} {path} cannot be read"))?
        };
        self.0.insert(path.to_string(), h.clone());
        Ok(h)
    }
}

/// The content address of a cell's inputs.
fn address(inputs: &Value) -> Result<String> {
    Ok(sha256_hex(serde_json::to_string(inputs)?.as_bytes()))
}

/// A cell running `llq-host ARGS` (plus the spec's device), addressed by the hash of `inputs`.
fn cell(
    spec: &Spec,
    kind: Kind,
    model: &str,
    method: &str,
    task: &str,
    mut args: Vec<String>,
    inputs: Value,
) -> Result<Cell> {
    if let Some(d) = &spec.device {
        args.extend(["--device".into(), d.clone()]);
    }
    let address = address(&inputs)?;
    Ok(Cell {
        id: format!("{model}.{method}.{task}"),
        kind,
        model: model.into(),
        method: method.into(),
        task: task.into(),
        args,
        inputs,
        address,
        needs: None,
        saves_logprobs: false,
    })
}

/// Every cell of `spec`, sorted by id (the order shards are taken from).
pub fn plan(spec: &Spec) -> Result<Vec<Cell>> {
    let mut hashes = Hashes::default();
    // The unquantized baseline: computed once per model and task, its distributions reused by
    // every KL cell. Without one in the spec, KL cells run the unquantized model themselves.
    let baseline = spec.methods.iter().find(|q| q.plugin.is_none()).map(|q| q.name.as_str());
    let mut cells = vec![];
    for m in &spec.models {
        let model_path = spec.resolve(&m.path);
        let model_hash = hashes.of(&format!("model `{}`:", m.name), &model_path)?;
        for q in &spec.methods {
            let plugin = q.plugin.as_ref().map(|p| spec.resolve(p));
            let plugin_hash =
                plugin.as_ref().map(|p| hashes.of(&format!("method `{}`: plugin", q.name), p)).transpose()?;
            let mut method_args: Vec<String> = vec![];
            if let Some(p) = &plugin {
                method_args.extend(["--quant".into(), p.clone()]);
                for o in &q.opts {
                    method_args.extend(["--opt".into(), o.clone()]);
                }
                if let Some(f) = &q.layer_opts_file {
                    method_args.extend(["--opt-layer-file".into(), spec.resolve(f)]);
                }
                for o in &q.layer_opts {
                    method_args.extend(["--opt-layer".into(), o.clone()]);
                }
                if let Some(n) = q.calib_samples {
                    method_args.extend(["--calib-samples".into(), n.to_string()]);
                }
                if let Some(n) = q.calib_seq_len {
                    method_args.extend(["--calib-seq-len".into(), n.to_string()]);
                }
                if let Some(m) = &q.calib_mode {
                    method_args.extend(["--calib-mode".into(), m.clone()]);
                }
            }
            let mut method_inputs = json!({
                "plugin_sha256": plugin_hash,
                "opts": q.opts,
                "calib_samples": q.calib_samples,
                "calib_seq_len": q.calib_seq_len,
            });
            // Only when given: the addresses of cells without per-layer options stay as they were.
            if !q.layer_opts.is_empty() {
                method_inputs["layer_opts"] = json!(q.layer_opts);
            }
            if let Some(m) = &q.calib_mode {
                method_inputs["calib_mode"] = json!(m);
            }
            if let Some(f) = &q.layer_opts_file {
                let h = hashes.of(&format!("method `{}`: layer_opts_file", q.name), &spec.resolve(f))?;
                method_inputs["layer_opts_file_sha256"] = json!(h);
            }
            if let Some(b) = spec.bench.as_ref().filter(|_| q.bench && m.bench) {
                let list = |v: &[usize]| v.iter().map(usize::to_string).collect::<Vec<_>>().join(",");
                let mut args: Vec<String> = vec!["bench".into(), "--model".into(), model_path.clone()];
                args.extend(method_args.iter().cloned());
                args.extend([
                    "--prompt-lens".into(),
                    list(&b.prompt_lens),
                    "--batch-sizes".into(),
                    list(&b.batch_sizes),
                ]);
                if let Some(n) = b.decode_steps {
                    args.extend(["--decode-steps".into(), n.to_string()]);
                }
                if let Some(n) = b.repeats {
                    args.extend(["--repeats".into(), n.to_string()]);
                }
                let inputs = json!({
                    "llq_version": env!("CARGO_PKG_VERSION"),
                    "kind": "bench",
                    "model": {"sha256": model_hash},
                    "method": method_inputs,
                    "bench": {
                        "prompt_lens": b.prompt_lens,
                        "batch_sizes": b.batch_sizes,
                        "decode_steps": b.decode_steps,
                        "repeats": b.repeats,
                    },
                    "device": spec.device,
                });
                cells.push(cell(spec, Kind::Bench, &m.name, &q.name, BENCH, args, inputs)?);
            }
            for t in spec.tasks.iter().filter(|t| m.runs(&t.name)) {
                let (wasm, data) = (spec.resolve(&t.wasm), spec.resolve(&t.data));
                let wasm_hash = hashes.of(&format!("task `{}`: component", t.name), &wasm)?;
                let data_hash = hashes.of(&format!("task `{}`: data", t.name), &data)?;
                let mut args: Vec<String> = vec!["run".into(), "--model".into(), model_path.clone()];
                args.extend(method_args.iter().cloned());
                args.extend(["--task".into(), wasm.clone(), "--data".into(), data.clone()]);
                for o in &t.opts {
                    args.extend(["--task-opt".into(), o.clone()]);
                }
                if let Some(l) = t.limit {
                    args.extend(["--limit".into(), l.to_string()]);
                }
                // KL compares a quantized model with the unquantized one: not for the baseline,
                // which stores its distributions for the others when the spec has one.
                let kl = t.kl_baseline && plugin.is_some();
                let needs = (kl && baseline.is_some())
                    .then(|| format!("{}.{}.{}", m.name, baseline.unwrap_or_default(), t.name));
                let saves = t.kl_baseline && Some(q.name.as_str()) == baseline;
                if kl && needs.is_none() {
                    args.push("--kl-baseline".into());
                }
                if saves {
                    args.push("--save-logprobs".into());
                }
                let mut inputs = json!({
                    "llq_version": env!("CARGO_PKG_VERSION"),
                    "model": {"sha256": model_hash},
                    "method": method_inputs,
                    "task": {
                        "wasm_sha256": wasm_hash,
                        "data_sha256": data_hash,
                        "opts": t.opts,
                        "limit": t.limit,
                        "kl_baseline": kl,
                    },
                    "device": spec.device,
                });
                if saves {
                    // Only where true: other cells' addresses stay as they were.
                    inputs["task"]["saves_logprobs"] = json!(true);
                }
                let mut c = cell(spec, Kind::Run, &m.name, &q.name, &t.name, args, inputs)?;
                c.needs = needs;
                c.saves_logprobs = saves;
                cells.push(c);
            }
        }
    }
    // A dependent cell's address covers its baseline's (a changed baseline makes its KL stale).
    let addresses: HashMap<String, String> =
        cells.iter().map(|c| (c.id.clone(), c.address.clone())).collect();
    for c in cells.iter_mut() {
        if let Some(b) = &c.needs {
            let base = addresses
                .get(b)
                .with_context(|| format!("cell {}: its baseline {b} is not planned", c.id))?;
            c.inputs["task"]["kl_baseline"] = json!({"from": b, "address": base});
            c.address = address(&c.inputs)?;
        }
    }
    cells.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(cells)
}

/// A shard, `i/n` as the user wrote it (0-based).
#[derive(Debug, Clone, Copy)]
pub struct Shard {
    pub i: usize,
    pub n: usize,
}

impl std::str::FromStr for Shard {
    type Err = String;
    fn from_str(spec: &str) -> std::result::Result<Self, String> {
        let bad = || format!("--shard {spec} is not `i/n` with 0 ≤ i < n");
        let (i, n) = spec.split_once('/').ok_or_else(bad)?;
        let (i, n): (usize, usize) =
            (i.trim().parse().map_err(|_| bad())?, n.trim().parse().map_err(|_| bad())?);
        if n == 0 || i >= n {
            return Err(bad());
        }
        Ok(Shard { i, n })
    }
}

/// The cells of `shard`: every n-th cell of the full plan from the i-th, so shards never
/// overlap whatever is already done.
pub fn shard(cells: &[Cell], s: Shard) -> Vec<&Cell> {
    cells.iter().enumerate().filter(|(k, _)| k % s.n == s.i).map(|(_, c)| c).collect()
}
