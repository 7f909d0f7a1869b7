//! `sweep report`: one Markdown report of a sweep's finished cells, per (model, task): each
//! method's size, time and metrics (± standard error, as the task computed them), then every
//! method against the model's unquantized baseline (the method without a plugin) as *paired*
//! estimates over the same samples: a bootstrap 95% interval for the mean difference of each
//! per-sample metric (McNemar's exact test too when the metric is 0/1, like EM), and for
//! running-text tasks the per-token log-probability difference and KL with a block bootstrap
//! (blocks of 256 tokens: neighbouring tokens are not independent). An interval that includes
//! zero is reported as "no detectable difference at n = …".

use super::exec::state;
use super::plan::Cell;
use super::spec::Spec;
use crate::results::paired::{bootstrap_mean, mcnemar_exact};
use crate::results::{read_samples, RunResults, SampleRecord};
use anyhow::Result;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

const RESAMPLES: usize = 2000;
const SEED: u64 = 20261124;
const TOKEN_BLOCK: usize = 256;

struct Done {
    results: RunResults,
    samples: BTreeMap<String, SampleRecord>,
}

fn load(out: &Path, cell: &Cell) -> Result<Done> {
    let dir = out.join(&cell.id);
    let results = RunResults::read(&dir.join("results.json"))?;
    let (records, _) = read_samples(&dir.join("samples.jsonl"))?;
    // The last record of an id wins (a resumed run may have retried a sample).
    let samples = records.into_iter().map(|r| (r.id.clone(), r)).collect();
    Ok(Done { results, samples })
}

/// The paired lines of `m` against `base`.
fn paired(base: &Done, m: &Done) -> Vec<String> {
    let mut lines = vec![];
    let common: Vec<(&SampleRecord, &SampleRecord)> = base
        .samples
        .iter()
        .filter_map(|(id, b)| m.samples.get(id).map(|s| (b, s)))
        .filter(|(b, s)| b.error.is_none() && s.error.is_none())
        .collect();
    let names: Vec<&String> = common.first().map(|(b, _)| b.metrics.keys().collect()).unwrap_or_default();
    for name in names {
        let pairs: Vec<(f64, f64)> =
            common.iter().filter_map(|(b, s)| Some((*b.metrics.get(name)?, *s.metrics.get(name)?))).collect();
        let diffs: Vec<f64> = pairs.iter().map(|(b, s)| s - b).collect();
        let Some(ci) = bootstrap_mean(&diffs, 1, RESAMPLES, SEED) else { continue };
        let mut line = format!("Δ{name} (per-sample values, as in samples.jsonl) {}", ci.describe(4));
        if pairs.iter().all(|(b, s)| (*b == 0.0 || *b == 1.0) && (*s == 0.0 || *s == 1.0)) {
            let only_base = pairs.iter().filter(|(b, s)| *b == 1.0 && *s == 0.0).count() as u64;
            let only_method = pairs.iter().filter(|(b, s)| *b == 0.0 && *s == 1.0).count() as u64;
            let p = mcnemar_exact(only_base, only_method);
            let _ = write!(line, "; McNemar {only_base} vs {only_method} discordant, p = {p:.3}");
        }
        lines.push(line);
    }
    // Running text: the same tokens in both runs.
    let mut dlp = vec![];
    let mut kl = vec![];
    for (b, s) in &common {
        if let (Some(x), Some(y)) = (&b.token_logprobs, &s.token_logprobs) {
            if x.len() == y.len() {
                dlp.extend(x.iter().zip(y).map(|(x, y)| y - x));
            }
        }
        if let Some(k) = &s.token_kl {
            kl.extend(k.iter().copied());
        }
    }
    if let Some(ci) = bootstrap_mean(&dlp, TOKEN_BLOCK, RESAMPLES, SEED) {
        lines.push(format!("Δ mean token log-prob {} (tokens; block bootstrap)", ci.describe(4)));
    }
    if let Some(ci) = bootstrap_mean(&kl, TOKEN_BLOCK, RESAMPLES, SEED) {
        lines.push(format!(
            "KL(unquantized ‖ method) per token {:.4} [{:.4}, {:.4}], n = {}",
            ci.mean, ci.lo, ci.hi, ci.n
        ));
    }
    lines
}

/// The report of the done cells of `cells` in `out`, as Markdown.
pub fn report(spec: &Spec, cells: &[Cell], out: &Path) -> Result<String> {
    // Nothing here depends on where the cells are or in which order they ran, so shards
    // merged into one folder report exactly what one run reports.
    let mut md = format!(
        "# Sweep `{}`\n\nEvery difference is paired over the same samples against the model's unquantized run.\n",
        spec.name
    );
    let baseline: Option<&str> = spec.methods.iter().find(|m| m.plugin.is_none()).map(|m| m.name.as_str());
    for model in &spec.models {
        for task in &spec.tasks {
            let _ = write!(md, "\n## {} × {}\n\n", model.name, task.name);
            let group: Vec<&Cell> =
                cells.iter().filter(|c| c.model == model.name && c.task == task.name).collect();
            let mut done: BTreeMap<&str, Done> = BTreeMap::new();
            for c in &group {
                let st = state(out, c);
                if st.is_done() {
                    done.insert(&c.method, load(out, c)?);
                } else {
                    let _ = writeln!(md, "- `{}`: {} (not in the tables)", c.id, st.label());
                }
            }
            md.push_str("\n| method | bits/weight | linear MB | quantize s | metrics (± s.e.) |\n| --- | ---: | ---: | ---: | --- |\n");
            for c in &group {
                let Some(d) = done.get(c.method.as_str()) else { continue };
                let r = &d.results;
                let metrics: Vec<String> = r
                    .metrics
                    .iter()
                    .map(|m| match m.stderr {
                        Some(se) => format!("{} {:.4} ± {:.4}", m.name, m.value, se),
                        None => format!("{} {:.4}", m.name, m.value),
                    })
                    .collect();
                let _ = writeln!(
                    md,
                    "| {} | {:.2} | {:.2} | {} | {} |",
                    c.method,
                    r.size.bits_per_weight,
                    r.size.quantized_bytes as f64 / 1e6,
                    r.timing.quantize_s.map_or("–".into(), |s| format!("{s:.1}")),
                    metrics.join(", ")
                );
            }
            match baseline.and_then(|b| done.get(b).map(|d| (b, d))) {
                Some((bname, base)) => {
                    let _ = writeln!(md, "\nAgainst `{bname}`:\n");
                    for c in &group {
                        if c.method == bname {
                            continue;
                        }
                        if let Some(d) = done.get(c.method.as_str()) {
                            for line in paired(base, d) {
                                let _ = writeln!(md, "- {}: {line}", c.method);
                            }
                        }
                    }
                }
                None => md.push_str(
                    "\nNo finished unquantized run (a method without a plugin): no paired differences.\n",
                ),
            }
        }
    }
    Ok(md)
}
