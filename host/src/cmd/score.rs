//! `llq-host score`: score predictions made elsewhere (or by an earlier run) with a task,
//! without a model. For CoQA in official mode the task's native report is the official
//! script's JSON, printed to stdout so the two can be diffed.

use super::args::{parse_opt, TaskLimitArgs};
use crate::task::{score_all, RequestKind, Response, TaskRuntime};
use crate::util::fs::write_json;
use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::path::PathBuf;

/// Predictions in llq's own per-sample JSONL (`{"id": ..., "prediction": ...}` per line), or
/// `None` when the file is not in that layout. Lines of samples that failed in their run (an
/// `"error"` and no prediction) are counted, not read: those requests have no prediction.
fn llq_jsonl(bytes: &[u8]) -> Option<(Vec<(String, String)>, usize)> {
    let text = std::str::from_utf8(bytes).ok()?;
    let (mut out, mut failed) = (vec![], 0);
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        let id = v.get("id")?.as_str()?.to_string();
        match (v.get("prediction").and_then(|p| p.as_str()), v.get("error")) {
            (Some(p), _) => out.push((id, p.to_string())),
            (None, Some(e)) if e.is_string() => failed += 1,
            _ => return None,
        }
    }
    (!out.is_empty() || failed > 0).then_some((out, failed))
}

/// Two predictions for one id would leave which one is scored to chance: refused, naming them.
fn refuse_duplicates(preds: &[(String, String)], file: &std::path::Path) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    let dups: std::collections::BTreeSet<&str> =
        preds.iter().map(|(id, _)| id.as_str()).filter(|id| !seen.insert(*id)).collect();
    if !dups.is_empty() {
        let shown: Vec<&str> = dups.iter().take(5).copied().collect();
        bail!(
            "predictions {}: {} ids appear more than once ({}{}); keep one prediction per id",
            file.display(),
            dups.len(),
            shown.join(", "),
            if dups.len() > 5 { ", …" } else { "" }
        );
    }
    Ok(())
}

/// Score existing predictions with a task, without a model. Prints the task's native
/// report (for CoQA official mode: the official script's JSON) to stdout.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Task component (e.g. tasks/coqa.wasm).
    #[arg(long)]
    pub task: PathBuf,
    /// Dataset passed to the task (e.g. coqa-dev-v1.0.json).
    #[arg(long)]
    pub data: PathBuf,
    /// Predictions: the task's external layout (CoQA: [{"id","turn_id","answer"}]) or
    /// llq's per-sample JSONL.
    #[arg(long)]
    pub predictions: PathBuf,
    /// Task option, repeatable (e.g. --task-opt mode=lm-eval).
    #[arg(long = "task-opt", value_parser = parse_opt)]
    pub task_opts: Vec<(String, String)>,
    /// Also write a JSON report (metrics with standard errors, failures) here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub limits: TaskLimitArgs,
}

pub fn main(a: Args) -> Result<()> {
    let native = score(&a)?;
    println!("{native}");
    Ok(())
}

/// Returns the report's native JSON; errors after scoring still leave `out` written.
fn score(a: &Args) -> Result<String> {
    let options = &a.task_opts;
    let mut rt = TaskRuntime::load(&a.task, a.limits.limits()?)?;
    let info = rt.describe()?;
    rt.check_options(options)?;
    let data = std::fs::read(&a.data).with_context(|| format!("cannot read data {}", a.data.display()))?;
    let pred_bytes = std::fs::read(&a.predictions)
        .with_context(|| format!("cannot read predictions {}", a.predictions.display()))?;
    let requests = rt.requests(&data, options).with_context(|| format!("data {}", a.data.display()))?;
    let preds = match llq_jsonl(&pred_bytes) {
        Some((p, failed)) => {
            if failed > 0 {
                tracing::warn!(
                    "{}: {failed} samples failed in their run and have no prediction",
                    a.predictions.display()
                );
            }
            p
        }
        None => rt
            .parse_predictions(&pred_bytes)
            .with_context(|| format!("predictions {}", a.predictions.display()))?,
    };
    refuse_duplicates(&preds, &a.predictions)?;
    let preds: HashMap<String, String> = preds.into_iter().collect();
    if let Some(r) = requests.iter().find(|r| !matches!(r.kind, RequestKind::Generate(_))) {
        bail!("task `{}` request {:?} asks for log-likelihoods: it needs a model (llq-host run), not a predictions file", info.name, r.id);
    }
    let known: std::collections::HashSet<&str> = requests.iter().map(|r| r.id.as_str()).collect();
    let unknown = preds.keys().filter(|k| !known.contains(k.as_str())).count();
    if unknown > 0 {
        tracing::warn!("{unknown} predictions match no request of the data and are ignored");
    }
    let outcome =
        score_all(&mut rt, &requests, |r| preds.get(&r.id).map(|p| Response::Generated(p.clone())), options);
    if outcome.missing > 0 {
        tracing::warn!(
            "{} of {} requests have no prediction; they count as 0 (as in the official CoQA script)",
            outcome.missing,
            requests.len()
        );
    }
    let report = rt.aggregate(&outcome.samples, options)?;
    for m in &report.metrics {
        let se = m.stderr.map(|s| format!(" ± {s:.4}")).unwrap_or_default();
        tracing::info!("{} {}: {:.4}{se} (n = {})", info.name, m.name, m.value, m.count);
    }
    if let Some(out) = &a.out {
        let j = serde_json::json!({
            "task": {"name": info.name, "version": info.version, "path": a.task.display().to_string(), "options": options},
            "data": a.data.display().to_string(),
            "predictions": a.predictions.display().to_string(),
            "requests": requests.len(), "missing": outcome.missing, "unknown_predictions": unknown,
            "failed": outcome.failed.iter().map(|(id, e)| serde_json::json!({"id": id, "error": e})).collect::<Vec<_>>(),
            "metrics": report.metrics.iter().map(|m| serde_json::json!({"name": m.name, "value": m.value, "stderr": m.stderr, "count": m.count})).collect::<Vec<_>>(),
            "native": serde_json::from_str::<serde_json::Value>(&report.native_json).unwrap_or(serde_json::Value::String(report.native_json.clone())),
        });
        write_json(out, &j)?;
    }
    if !outcome.failed.is_empty() {
        println!("{}", report.native_json);
        bail!(
            "{} of {} samples could not be scored (first: {}: {}); the report above covers the others",
            outcome.failed.len(),
            requests.len(),
            outcome.failed[0].0,
            outcome.failed[0].1
        );
    }
    Ok(report.native_json)
}
