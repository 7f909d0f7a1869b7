//! `sweep report`: the finished cells as `report.md` and a self-contained `report.html` (CSS
//! and SVG figures inline), per (model, task): each method's size, time and metrics (± standard
//! error, as the task computed them), then every method against the model's unquantized
//! baseline (the method without a plugin) as *paired* estimates over the same samples: a
//! bootstrap 95% interval for the mean difference of each per-sample metric with the exact
//! paired sign-flip test beside it (McNemar's exact test too when the metric is 0/1, like EM), and for running-text tasks the per-token
//! log-probability difference and KL with a block bootstrap (blocks of 256 tokens: neighbouring
//! tokens are not independent). An interval that includes zero is reported as "no detectable
//! difference at n = …". Bench cells add speed and memory per method.
//!
//! Figures: the task's first metric vs bits/weight with the Pareto front, KL vs bits/weight,
//! decode tokens/s vs batch, prefill latency vs prompt length, memory and quantization time per
//! method. The findings section is generated from the paired statistics only: a per-sample
//! difference is stated when its interval excludes zero and the sign-flip test gives p < 0.05.

use super::exec::state;
use super::figures::{self, Point};
use super::plan::{Cell, Kind};
use super::spec::Spec;
use crate::results::paired::{bootstrap_mean, mcnemar_exact, sign_flip_p, PairedCi};
use crate::results::{read_samples, RunResults, SampleRecord};
use crate::task::{Limits, TaskRuntime};
use anyhow::{Context, Result};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

const RESAMPLES: usize = 2000;
const SEED: u64 = 20261124;
const TOKEN_BLOCK: usize = 256;

/// What `sweep report` writes: the two documents and the figures (file name, SVG).
pub struct Written {
    pub md: String,
    pub html: String,
    pub figures: Vec<(String, String)>,
}

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

/// One paired per-sample metric difference against the baseline.
struct PairedMetric {
    name: String,
    ci: PairedCi,
    /// The sign-flip test's p-value for the same differences.
    p: f64,
    /// Discordant pairs (only the baseline right, only the method right) and McNemar's p.
    mcnemar: Option<(u64, u64, f64)>,
}

/// Everything paired of one method against the baseline.
#[derive(Default)]
struct Paired {
    metrics: Vec<PairedMetric>,
    /// Δ mean token log-prob (running text).
    logprob: Option<PairedCi>,
}

/// `declared`: the task's metric names; per-sample metrics outside it (running-text tasks
/// keep sums and counts per document to aggregate from) are not compared.
fn paired(base: &Done, m: &Done, declared: &[(String, bool)]) -> Paired {
    let mut out = Paired::default();
    let common: Vec<(&SampleRecord, &SampleRecord)> = base
        .samples
        .iter()
        .filter_map(|(id, b)| m.samples.get(id).map(|s| (b, s)))
        .filter(|(b, s)| b.error.is_none() && s.error.is_none())
        .collect();
    // Only metrics both runs report (KL and the like exist only against a baseline).
    let aggregate = |d: &Done, n: &str| d.results.metrics.iter().find(|m| m.name == n).map(|m| m.value);
    let names: Vec<&String> = common
        .first()
        .map(|(b, _)| {
            b.metrics
                .keys()
                .filter(|k| declared.is_empty() || declared.iter().any(|(d, _)| d == *k))
                .filter(|k| aggregate(base, k).is_some() && aggregate(m, k).is_some())
                .collect()
        })
        .unwrap_or_default();
    for name in names {
        let pairs: Vec<(f64, f64)> =
            common.iter().filter_map(|(b, s)| Some((*b.metrics.get(name)?, *s.metrics.get(name)?))).collect();
        // Tasks may aggregate in other units than they score samples (CoQA: F1 per turn in
        // [0, 1], reported ×100 as the official script does): differences are stated in the
        // aggregate's units, found from the baseline's own numbers.
        let per_sample_mean = pairs.iter().map(|p| p.0).sum::<f64>() / pairs.len().max(1) as f64;
        let scale = match aggregate(base, name) {
            Some(a) if (a - 100.0 * per_sample_mean).abs() < (a - per_sample_mean).abs() => 100.0,
            _ => 1.0,
        };
        let pairs: Vec<(f64, f64)> = pairs.iter().map(|(b, s)| (b * scale, s * scale)).collect();
        let diffs: Vec<f64> = pairs.iter().map(|(b, s)| s - b).collect();
        let Some(ci) = bootstrap_mean(&diffs, 1, RESAMPLES, SEED) else { continue };
        let binary = pairs.iter().all(|(b, s)| (*b == 0.0 || *b == scale) && (*s == 0.0 || *s == scale));
        let mcnemar = binary.then(|| {
            let only_base = pairs.iter().filter(|(b, s)| *b > 0.0 && *s == 0.0).count() as u64;
            let only_method = pairs.iter().filter(|(b, s)| *b == 0.0 && *s > 0.0).count() as u64;
            (only_base, only_method, mcnemar_exact(only_base, only_method))
        });
        let p = sign_flip_p(&diffs, RESAMPLES * 10, SEED);
        out.metrics.push(PairedMetric { name: name.clone(), ci, p, mcnemar });
    }
    // Running text: the same tokens in both runs.
    let mut dlp = vec![];
    for (b, s) in &common {
        if let (Some(x), Some(y)) = (&b.token_logprobs, &s.token_logprobs) {
            if x.len() == y.len() {
                dlp.extend(x.iter().zip(y).map(|(x, y)| y - x));
            }
        }
    }
    out.logprob = bootstrap_mean(&dlp, TOKEN_BLOCK, RESAMPLES, SEED);
    out
}

/// Per-token KL of a method's run against the unquantized model (`--kl-baseline`), with its
/// block-bootstrap interval.
fn kl(d: &Done) -> Option<PairedCi> {
    let kl: Vec<f64> = d
        .samples
        .values()
        .filter(|s| s.error.is_none())
        .filter_map(|s| s.token_kl.as_ref())
        .flatten()
        .copied()
        .collect();
    bootstrap_mean(&kl, TOKEN_BLOCK, RESAMPLES, SEED)
}

/// The task's metrics in its own order with their direction (`describe()`); empty when the
/// component cannot be read (the report then draws no front).
fn task_metrics(wasm: &str) -> Vec<(String, bool)> {
    TaskRuntime::load(Path::new(wasm), Limits::default())
        .and_then(|mut t| t.describe())
        .map(|i| i.metrics.into_iter().map(|m| (m.name, m.higher_is_better)).collect())
        .unwrap_or_default()
}

/// A finished bench cell's `bench.json`.
fn bench_json(out: &Path, cell: &Cell) -> Result<Value> {
    let p = out.join(&cell.id).join("bench.json");
    serde_json::from_slice(&std::fs::read(&p).with_context(|| format!("cannot read {}", p.display()))?)
        .with_context(|| format!("{} is not JSON", p.display()))
}

fn f(v: &Value) -> Option<f64> {
    v.as_f64()
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A document built once and rendered twice: Markdown and HTML.
#[derive(Default)]
struct Doc {
    md: String,
    html: String,
    figures: Vec<(String, String)>,
}

impl Doc {
    fn heading(&mut self, level: usize, text: &str) {
        let _ = write!(self.md, "\n{} {text}\n\n", "#".repeat(level));
        let _ = writeln!(self.html, "<h{level}>{}</h{level}>", inline_html(text));
    }
    fn para(&mut self, text: &str) {
        let _ = write!(self.md, "{text}\n\n");
        let _ = writeln!(self.html, "<p>{}</p>", inline_html(text));
    }
    fn list(&mut self, items: &[String]) {
        if items.is_empty() {
            return;
        }
        self.html.push_str("<ul>\n");
        for i in items {
            let _ = writeln!(self.md, "- {i}");
            let _ = writeln!(self.html, "<li>{}</li>", inline_html(i));
        }
        self.md.push('\n');
        self.html.push_str("</ul>\n");
    }
    fn table(&mut self, header: &[&str], align_right: &[bool], rows: &[Vec<String>]) {
        let _ = writeln!(self.md, "| {} |", header.join(" | "));
        let seps: Vec<&str> = align_right.iter().map(|r| if *r { "---:" } else { "---" }).collect();
        let _ = writeln!(self.md, "| {} |", seps.join(" | "));
        self.html.push_str("<table><thead><tr>");
        for h in header {
            let _ = write!(self.html, "<th>{}</th>", inline_html(h));
        }
        self.html.push_str("</tr></thead><tbody>\n");
        for r in rows {
            let _ = writeln!(self.md, "| {} |", r.join(" | "));
            self.html.push_str("<tr>");
            for (c, right) in r.iter().zip(align_right) {
                let _ = write!(
                    self.html,
                    "<td{}>{}</td>",
                    if *right { " class=\"r\"" } else { "" },
                    inline_html(c)
                );
            }
            self.html.push_str("</tr>\n");
        }
        self.md.push('\n');
        self.html.push_str("</tbody></table>\n");
    }
    fn figure(&mut self, file: &str, caption: &str, svg: Result<String>) {
        match svg {
            Ok(svg) => {
                let _ = write!(self.md, "![{caption}](figures/{file})\n\n");
                let _ = writeln!(
                    self.html,
                    "<figure>{svg}<figcaption>{}</figcaption></figure>",
                    inline_html(caption)
                );
                self.figures.push((file.to_string(), svg));
            }
            Err(e) => self.para(&format!("(figure `{file}` could not be drawn: {e:#})")),
        }
    }
}

/// Markdown's inline code (`x`) as HTML, the rest escaped.
fn inline_html(s: &str) -> String {
    let mut out = String::new();
    for (i, part) in s.split('`').enumerate() {
        if i % 2 == 1 {
            let _ = write!(out, "<code>{}</code>", html_escape(part));
        } else {
            out.push_str(&html_escape(part));
        }
    }
    out
}

const CSS: &str = "body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#222}\
table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;padding:3px 8px}td.r{text-align:right;font-variant-numeric:tabular-nums}\
th{background:#f3f3f3}code{background:#f3f3f3;padding:0 3px}figure{margin:1em 0}figcaption{color:#555;font-size:90%}svg{max-width:100%;height:auto}";

/// The report of the done cells of `cells` in `out`.
pub fn report(spec: &Spec, cells: &[Cell], out: &Path) -> Result<Written> {
    // Nothing here depends on where the cells are or in which order they ran, so shards
    // merged into one folder report exactly what one run reports.
    let mut doc = Doc::default();
    doc.heading(1, &format!("Sweep `{}`", spec.name));
    doc.para("Every difference is paired over the same samples against the model's unquantized run; intervals are 95%.");
    let baseline: Option<&str> = spec.methods.iter().find(|m| m.plugin.is_none()).map(|m| m.name.as_str());
    // Methods measured weight-only: a plugin with its own matmul (`quant::WEIGHT_ONLY`), from
    // its declaration, so cells written before results carried the label are labelled too.
    let weight_only_methods: BTreeSet<&str> = spec
        .methods
        .iter()
        .filter(|m| {
            m.plugin
                .as_ref()
                .and_then(|p| crate::plugin::Plugin::load(Path::new(&spec.resolve(p))).ok())
                .is_some_and(|pl| pl.info.has_matmul)
        })
        .map(|m| m.name.as_str())
        .collect();
    let weight_only = |method: &str, d: &Done| {
        weight_only_methods.contains(method)
            || d.results.quantization.as_ref().is_some_and(|q| q.numerics.is_some())
    };
    let mut findings: Vec<String> = vec![];
    let mut env = Env::default();
    // Each task's metrics, read from its component once (compiling it is the costly part).
    let declared_by_task: BTreeMap<&str, Vec<(String, bool)>> =
        spec.tasks.iter().map(|t| (t.name.as_str(), task_metrics(&spec.resolve(&t.wasm)))).collect();
    for model in &spec.models {
        // Seconds each method took to quantize the model (calibration included), from the
        // first finished cell of that method.
        let mut qtimes: Vec<(String, f64)> = vec![];
        for task in spec.tasks.iter().filter(|t| model.runs(&t.name)) {
            doc.heading(2, &format!("{} × {}", model.name, task.name));
            let group: Vec<&Cell> = cells
                .iter()
                .filter(|c| c.kind == Kind::Run && c.model == model.name && c.task == task.name)
                .collect();
            let mut done: BTreeMap<&str, Done> = BTreeMap::new();
            let mut missing = vec![];
            for c in &group {
                let st = state(out, c);
                if st.is_done() {
                    done.insert(&c.method, load(out, c)?);
                } else {
                    missing.push(format!("`{}`: {} (not in the tables)", c.id, st.label()));
                }
            }
            doc.list(&missing);
            for (m, d) in &done {
                if !qtimes.iter().any(|(q, _)| q == m) {
                    qtimes.push((m.to_string(), d.results.timing.quantize_s.unwrap_or(0.0)));
                }
                env.builds.insert(format!("llq {} ({})", d.results.llq.version, d.results.llq.git_revision));
                let dv = &d.results.device;
                env.devices
                    .insert(format!("{} `{}`, {} threads, {}", dv.kind, dv.spec, dv.threads, dv.dtype));
                env.precisions.insert(d.results.model.precision.clone());
            }
            let rows: Vec<Vec<String>> = group
                .iter()
                .filter_map(|c| done.get(c.method.as_str()).map(|d| (c, d)))
                .map(|(c, d)| {
                    let r = &d.results;
                    let metrics: Vec<String> = r
                        .metrics
                        .iter()
                        .map(|m| match m.stderr {
                            Some(se) => format!("{} {:.4} ± {:.4}", m.name, m.value, se),
                            None => format!("{} {:.4}", m.name, m.value),
                        })
                        .collect();
                    vec![
                        if weight_only(&c.method, d) {
                            format!("{} (weight-only)", c.method)
                        } else {
                            c.method.clone()
                        },
                        format!("{:.2}", r.size.bits_per_weight),
                        format!("{:.2}", r.size.quantized_bytes as f64 / 1e6),
                        r.timing.quantize_s.map_or("–".into(), |s| format!("{s:.1}")),
                        metrics.join(", "),
                    ]
                })
                .collect();
            doc.table(
                &["method", "bits/weight", "linear MB", "quantize s", "metrics (± s.e.)"],
                &[false, true, true, true, false],
                &rows,
            );
            let labels: Vec<String> = done
                .iter()
                .filter(|(m, d)| weight_only(m, d))
                .map(|(m, _)| format!("`{m}` is measured {}.", crate::quant::WEIGHT_ONLY))
                .collect();
            if !labels.is_empty() {
                doc.para(&labels.join(" "));
            }
            // The task's first metric, its direction, and each method's estimate.
            let declared = &declared_by_task[task.name.as_str()];
            let primary = declared.first().cloned();
            let kls: BTreeMap<&str, PairedCi> = done.iter().filter_map(|(m, d)| Some((*m, kl(d)?))).collect();
            if let Some((pname, higher)) = &primary {
                let points: Vec<Point> = group
                    .iter()
                    .filter_map(|c| {
                        let d = done.get(c.method.as_str())?;
                        let m = d.results.metrics.iter().find(|m| &m.name == pname)?;
                        let half = m.stderr.map_or(0.0, |se| 1.96 * se);
                        Some(Point {
                            label: c.method.clone(),
                            x: d.results.size.bits_per_weight,
                            y: m.value,
                            lo: m.value - half,
                            hi: m.value + half,
                        })
                    })
                    .collect();
                if !points.is_empty() {
                    let front: Vec<String> = figures::pareto(&points, *higher)
                        .iter()
                        .map(|&i| format!("`{}`", points[i].label))
                        .collect();
                    let title = format!("{} × {}: {pname} vs bits/weight", model.name, task.name);
                    let svg = figures::scatter(&title, "bits per quantized weight", pname, &points, *higher);
                    doc.figure(
                        &format!("{}.{}.accuracy.svg", model.name, task.name),
                        &format!("{title} (bars: ±1.96 s.e. of each run; line: Pareto front of the point estimates)"),
                        svg,
                    );
                    findings.push(format!(
                        "{} × {}: on point estimates, the front of bits/weight vs {pname} ({}) is {}.",
                        model.name,
                        task.name,
                        if *higher { "higher is better" } else { "lower is better" },
                        front.join(" → ")
                    ));
                }
            }
            if !kls.is_empty() {
                let points: Vec<Point> = group
                    .iter()
                    .filter_map(|c| {
                        let d = done.get(c.method.as_str())?;
                        let k = kls.get(c.method.as_str())?;
                        Some(Point {
                            label: c.method.clone(),
                            x: d.results.size.bits_per_weight,
                            y: k.mean,
                            lo: k.lo,
                            hi: k.hi,
                        })
                    })
                    .collect();
                let title = format!("{} × {}: KL vs bits/weight", model.name, task.name);
                let svg = figures::scatter(
                    &title,
                    "bits per quantized weight",
                    "KL(unquantized ‖ method) per token",
                    &points,
                    false,
                );
                doc.figure(
                    &format!("{}.{}.kl.svg", model.name, task.name),
                    &format!("{title} (bars: 95% block-bootstrap intervals over tokens)"),
                    svg,
                );
                for search in &spec.searches {
                    search_figure(
                        &mut doc,
                        spec,
                        search,
                        &format!("{}.{}", model.name, task.name),
                        &done,
                        &kls,
                    );
                }
            }
            match baseline.and_then(|b| done.get(b).map(|d| (b, d))) {
                Some((bname, base)) => {
                    doc.para(&format!("Against `{bname}`:"));
                    let mut lines = vec![];
                    for c in &group {
                        if c.method == bname {
                            continue;
                        }
                        let Some(d) = done.get(c.method.as_str()) else { continue };
                        let p = paired(base, d, declared);
                        for m in &p.metrics {
                            let mut line = format!(
                                "{}: Δ{} (paired over samples, in the table's units) {}",
                                c.method,
                                m.name,
                                m.ci.describe(4)
                            );
                            let _ = write!(line, "; sign-flip p = {:.3}", m.p);
                            if m.ci.detectable() && m.p >= 0.05 {
                                line.push_str(" (not confirmed: no detectable difference stated)");
                            }
                            if let Some((b, s, pv)) = m.mcnemar {
                                let _ = write!(line, "; McNemar {b} vs {s} discordant, p = {pv:.3}");
                            }
                            lines.push(line);
                        }
                        if let Some(ci) = p.logprob {
                            lines.push(format!(
                                "{}: Δ mean token log-prob {} (tokens; block bootstrap)",
                                c.method,
                                ci.describe(4)
                            ));
                        }
                        if let Some(ci) = kls.get(c.method.as_str()) {
                            let against = match done.get(c.method.as_str()).map(|d| &d.results.task.kl_baseline_from) {
                                Some(Some(_)) => "the baseline cell's stored distributions, each log-prob within 1.2e-4 nats",
                                _ => "the unquantized model run in the same process, exact",
                            };
                            lines.push(format!(
                                "{}: KL(unquantized ‖ method) per token {:.4} [{:.4}, {:.4}], n = {} (against {against})",
                                c.method, ci.mean, ci.lo, ci.hi, ci.n
                            ));
                        }
                        findings.extend(finding(
                            &model.name,
                            &task.name,
                            bname,
                            &c.method,
                            &p,
                            primary.as_ref(),
                        ));
                    }
                    doc.list(&lines);
                }
                None => doc
                    .para("No finished unquantized run (a method without a plugin): no paired differences."),
            }
            let lines = against_others(spec, &model.name, &task.name, &done, declared, &mut findings);
            if !lines.is_empty() {
                doc.para("Paired against another method (`compare_with`), over the same samples and tokens:");
                doc.list(&lines);
            }
        }
        bench_section(&mut doc, spec, cells, out, &model.name, &mut findings, &mut env)?;
        if qtimes.iter().any(|(_, t)| *t > 0.0) {
            qtimes.sort_by(|a, b| a.0.cmp(&b.0));
            let names: Vec<String> = qtimes.iter().map(|(m, _)| m.clone()).collect();
            let title = format!("{}: quantization time", model.name);
            doc.heading(2, &title);
            doc.figure(
                &format!("{}.quantize-time.svg", model.name),
                &format!("{title} (calibration included; one process each, on the task cells' device)"),
                figures::bars(
                    &title,
                    "seconds",
                    &names,
                    &[("quantize".into(), qtimes.iter().map(|q| q.1).collect())],
                ),
            );
        }
    }
    doc.heading(2, "Findings");
    doc.para("Generated from the paired intervals above: a difference is stated only where its 95% interval excludes zero.");
    doc.list(&findings);
    doc.heading(2, "Environment");
    let Env { builds, devices, bench_devices, precisions } = env;
    let mut lines: Vec<String> = vec![];
    if builds.len() > 1 {
        lines.push(format!(
            "**Warning: the cells come from {} different llq builds** (listed below): compare with care.",
            builds.len()
        ));
    }
    for (set, what) in [(&devices, "task"), (&bench_devices, "bench")] {
        if set.len() > 1 {
            lines.push(format!(
                "**Warning: the {what} cells ran on {} different device settings** (listed below).",
                set.len()
            ));
        }
    }
    lines.extend(builds.into_iter().map(|b| format!("build: {b}")));
    lines.extend(devices.into_iter().map(|d| format!("device (tasks): {d}")));
    lines.extend(bench_devices.into_iter().map(|d| format!("device (bench): {d}")));
    lines.extend(precisions.into_iter().map(|p| format!("model precision: {p}")));
    lines.push("each cell's command line, inputs and content address: `<cell>/cell.json`".into());
    doc.list(&lines);
    let html = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Sweep {}</title><style>{CSS}</style></head><body>\n{}</body></html>\n",
        html_escape(&spec.name),
        doc.html
    );
    Ok(Written { md: doc.md, html, figures: doc.figures })
}

/// The statement the paired intervals support for `method` on the task's first metric (or,
/// for running text without per-sample metrics, the token log-probability).
fn finding(
    model: &str,
    task: &str,
    base: &str,
    method: &str,
    p: &Paired,
    primary: Option<&(String, bool)>,
) -> Option<String> {
    // Per-sample metrics: the bootstrap interval and the exact sign-flip test must agree; per
    // token, the block bootstrap over thousands of tokens stands alone.
    let (name, ci, higher, pv) = match primary
        .and_then(|(n, h)| p.metrics.iter().find(|m| &m.name == n).map(|m| (n, m.ci, *h, Some(m.p))))
    {
        Some((n, ci, h, pv)) => (n.clone(), ci, h, pv),
        None => ("mean token log-prob".to_string(), p.logprob?, true, None),
    };
    let at = format!("{model} × {task}");
    let p_note = pv.map_or(String::new(), |p| format!(", sign-flip p = {p:.3}"));
    Some(if ci.detectable() && pv.is_none_or(|p| p < 0.05) {
        let better = (ci.mean > 0.0) == higher;
        format!(
            "{at}: `{method}` is {} than `{base}` on {name}: Δ = {:+.4} [{:+.4}, {:+.4}], n = {}{p_note}.",
            if better { "better" } else { "worse" },
            ci.mean,
            ci.lo,
            ci.hi,
            ci.n
        )
    } else {
        format!(
            "{at}: no detectable difference between `{method}` and `{base}` on {name} at n = {} (Δ = {:+.4} [{:+.4}, {:+.4}]{p_note}).",
            ci.n, ci.mean, ci.lo, ci.hi
        )
    })
}

/// Per-token KL of `m` minus `other`'s, over the tokens both scored (same samples, same
/// lengths).
fn kl_diffs(other: &Done, m: &Done) -> Vec<f64> {
    let mut out = vec![];
    for (id, s) in &m.samples {
        let Some(o) = other.samples.get(id) else { continue };
        if let (Some(a), Some(b), None, None) = (&s.token_kl, &o.token_kl, &s.error, &o.error) {
            if a.len() == b.len() {
                out.extend(a.iter().zip(b).map(|(a, b)| a - b));
            }
        }
    }
    out
}

/// The lines for methods with `compare_with`: Δ size, Δ KL per token (block bootstrap, and a
/// sign-flip test over the blocks' means — tokens within a block are not independent) and
/// the task's paired metrics; a finding where an interval excludes zero.
fn against_others(
    spec: &Spec,
    model: &str,
    task: &str,
    done: &BTreeMap<&str, Done>,
    declared: &[(String, bool)],
    findings: &mut Vec<String>,
) -> Vec<String> {
    let mut lines = vec![];
    for q in &spec.methods {
        let Some(other) = q.compare_with.as_deref() else { continue };
        let (Some(d), Some(o)) = (done.get(q.name.as_str()), done.get(other)) else { continue };
        let dbits = d.results.size.bits_per_weight - o.results.size.bits_per_weight;
        let mut line = format!(
            "`{}` vs `{other}`: bits/weight {:.4} vs {:.4} (Δ {dbits:+.4})",
            q.name, d.results.size.bits_per_weight, o.results.size.bits_per_weight
        );
        let diffs = kl_diffs(o, d);
        if let Some(ci) = bootstrap_mean(&diffs, TOKEN_BLOCK, RESAMPLES, SEED) {
            let blocks: Vec<f64> =
                diffs.chunks(TOKEN_BLOCK).map(|c| c.iter().sum::<f64>() / c.len() as f64).collect();
            let p = sign_flip_p(&blocks, RESAMPLES * 10, SEED);
            let rel = ci.mean / kl(o).map_or(f64::NAN, |k| k.mean);
            let _ = write!(
                line,
                "; Δ KL per token {} ({:+.1}% of `{other}`'s; {TOKEN_BLOCK}-token block bootstrap), sign-flip p = {p:.4} over {} blocks",
                ci.describe(5),
                100.0 * rel,
                blocks.len()
            );
            let at = format!("{model} × {task}");
            findings.push(if ci.detectable() && p < 0.05 {
                format!(
                    "{at}: `{}` has {} KL than `{other}` at {:+.3} bits/weight: Δ = {:+.5} [{:+.5}, {:+.5}] nats/token ({:+.1}%), n = {} tokens.",
                    q.name,
                    if ci.mean < 0.0 { "lower" } else { "higher" },
                    dbits,
                    ci.mean,
                    ci.lo,
                    ci.hi,
                    100.0 * rel,
                    ci.n
                )
            } else {
                format!(
                    "{at}: no detectable KL difference between `{}` and `{other}` (Δ = {:+.5} [{:+.5}, {:+.5}], p = {p:.3}).",
                    q.name, ci.mean, ci.lo, ci.hi
                )
            });
        }
        let p = paired(o, d, declared);
        for m in &p.metrics {
            let _ = write!(line, "; Δ{} {} (sign-flip p = {:.3})", m.name, m.ci.describe(4), m.p);
        }
        lines.push(line);
    }
    lines
}

/// A search's predicted curve (`search.json`) with the measured KL of the methods it names.
fn search_figure(
    doc: &mut Doc,
    spec: &Spec,
    search: &super::spec::SearchSpec,
    stem: &str,
    done: &BTreeMap<&str, Done>,
    kls: &BTreeMap<&str, PairedCi>,
) {
    let path = spec.resolve(&search.file);
    let curve = std::fs::read(&path)
        .with_context(|| format!("search `{}`: cannot read {path}", search.name))
        .and_then(|b| serde_json::from_slice::<Value>(&b).with_context(|| format!("{path} is not JSON")))
        .and_then(|v| {
            v["outcome"]["curve"]
                .as_array()
                .with_context(|| format!("{path} has no outcome.curve"))?
                .iter()
                .map(|p| {
                    Ok((
                        f(&p["bits_per_weight"]).context("bits_per_weight")?,
                        f(&p["predicted"]).context("predicted")?,
                    ))
                })
                .collect::<Result<Vec<(f64, f64)>>>()
        });
    let points: Vec<Point> = search
        .methods
        .iter()
        .filter_map(|m| {
            let (d, k) = (done.get(m.as_str())?, kls.get(m.as_str())?);
            Some(Point { label: m.clone(), x: d.results.size.bits_per_weight, y: k.mean, lo: k.lo, hi: k.hi })
        })
        .collect();
    let title = format!("{stem}: search `{}`, predicted curve and measured KL", search.name);
    let svg = curve.and_then(|c| {
        figures::curve_with_points(&title, "bits per quantized weight", "KL per token (nats)", &c, &points)
    });
    doc.figure(
        &format!("{stem}.search-{}.svg", search.name),
        &format!("{title} (line: the search's prediction on calibration text, layer costs summed; points: measured on this task, 95% block-bootstrap bars)"),
        svg,
    );
}

/// What the environment section lists: every distinct build, device setting and model
/// precision among the finished cells (more than one build or device is warned about).
#[derive(Default)]
struct Env {
    builds: BTreeSet<String>,
    devices: BTreeSet<String>,
    bench_devices: BTreeSet<String>,
    precisions: BTreeSet<String>,
}

/// Speed and memory of `model`'s finished bench cells: tables and figures.
fn bench_section(
    doc: &mut Doc,
    spec: &Spec,
    cells: &[Cell],
    out: &Path,
    model: &str,
    findings: &mut Vec<String>,
    env: &mut Env,
) -> Result<()> {
    let group: Vec<&Cell> = cells.iter().filter(|c| c.kind == Kind::Bench && c.model == model).collect();
    if group.is_empty() {
        return Ok(());
    }
    doc.heading(2, &format!("{model}: speed and memory"));
    let mut done: Vec<(&str, Value)> = vec![];
    let mut missing = vec![];
    for c in &group {
        let st = state(out, c);
        if st.is_done() {
            done.push((&c.method, bench_json(out, c)?));
        } else {
            missing.push(format!("`{}`: {} (not in the tables)", c.id, st.label()));
        }
    }
    doc.list(&missing);
    if done.is_empty() {
        return Ok(());
    }
    for (_, b) in &done {
        if let Some(d) = b["device"].as_str() {
            env.bench_devices.insert(d.to_string());
        }
        if let (Some(v), Some(g)) = (b["llq"]["version"].as_str(), b["llq"]["git_revision"].as_str()) {
            env.builds.insert(format!("llq {v} ({g})"));
        }
    }
    let mb = |v: &Value| f(v).map_or("–".to_string(), |b| format!("{:.1}", b / 1e6));
    let rows: Vec<Vec<String>> = done
        .iter()
        .map(|(m, b)| {
            let decode: Vec<String> = b["decode"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| format!("b{} {:.1}", r["batch"], f(&r["tokens_per_s"]).unwrap_or(f64::NAN)))
                .collect();
            let prefill: Vec<String> = b["prefill"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| {
                    format!(
                        "{} tok {:.3}",
                        r["prompt_tokens"],
                        f(&r["seconds"]["median"]).unwrap_or(f64::NAN)
                    )
                })
                .collect();
            let peak = if b["peak_device_memory_bytes"].is_null() {
                &b["peak_rss_bytes"]
            } else {
                &b["peak_device_memory_bytes"]
            };
            vec![
                m.to_string(),
                f(&b["size"]["bits_per_weight"]).map_or("–".into(), |v| format!("{v:.2}")),
                mb(&b["size"]["total_bytes"]),
                mb(peak),
                f(&b["quantize_s"]).map_or("–".into(), |s| format!("{s:.1}")),
                decode.join(", "),
                prefill.join(", "),
            ]
        })
        .collect();
    doc.table(
        &[
            "method",
            "bits/weight",
            "weights MB",
            "peak MB",
            "quantize s",
            "decode tokens/s by batch",
            "prefill s by prompt",
        ],
        &[false, true, true, true, true, false, false],
        &rows,
    );
    let repeats = done.first().and_then(|(_, b)| b["repeats"].as_u64()).unwrap_or(0);
    doc.para(&format!(
        "Medians of {repeats} timed repeats after a warm-up (spreads in each cell's bench.json). Weights: every stored byte (packed layers, other tensors at 2 bytes); peak: the device's memory in use on a GPU, the process's peak resident memory on a CPU."
    ));
    let series = |key: &str, x: &str, y: &dyn Fn(&Value) -> Option<f64>| -> Vec<(String, Vec<(f64, f64)>)> {
        done.iter()
            .map(|(m, b)| {
                let pts = b[key]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|r| Some((f(&r[x])?, y(r)?)))
                    .collect();
                (m.to_string(), pts)
            })
            .collect()
    };
    let decode = series("decode", "batch", &|r| f(&r["tokens_per_s"]));
    let title = format!("{model}: decode throughput");
    doc.figure(
        &format!("{model}.decode.svg"),
        &title,
        figures::lines(&title, "batch size", "tokens/s", &decode, true),
    );
    let prefill = series("prefill", "prompt_tokens", &|r| f(&r["seconds"]["median"]));
    let title = format!("{model}: prefill latency");
    doc.figure(
        &format!("{model}.prefill.svg"),
        &title,
        figures::lines(&title, "prompt tokens", "seconds", &prefill, true),
    );
    let names: Vec<String> = done.iter().map(|(m, _)| m.to_string()).collect();
    let col = |g: &dyn Fn(&Value) -> Option<f64>| -> Vec<f64> {
        done.iter().map(|(_, b)| g(b).unwrap_or(f64::NAN)).collect()
    };
    let weights = col(&|b| f(&b["size"]["total_bytes"]).map(|v| v / 1e6));
    let peak = col(&|b| f(&b["peak_device_memory_bytes"]).or(f(&b["peak_rss_bytes"])).map(|v| v / 1e6));
    let title = format!("{model}: memory");
    doc.figure(
        &format!("{model}.memory.svg"),
        &title,
        figures::bars(&title, "MB", &names, &[("weights as stored".into(), weights), ("peak".into(), peak)]),
    );
    // Which is fastest at each batch is a measurement, stated with its spread, not a test.
    if let Some(b) = spec.bench.as_ref().and_then(|b| b.batch_sizes.first()) {
        let at: Vec<(&str, f64)> = done
            .iter()
            .filter_map(|(m, v)| {
                v["decode"]
                    .as_array()?
                    .iter()
                    .find(|r| r["batch"].as_u64() == Some(*b as u64))
                    .and_then(|r| Some((*m, f(&r["tokens_per_s"])?)))
            })
            .collect();
        if let (Some(hi), Some(lo)) =
            (at.iter().max_by(|a, b| a.1.total_cmp(&b.1)), at.iter().min_by(|a, b| a.1.total_cmp(&b.1)))
        {
            findings.push(format!(
                "{model}: decode at batch {b} ranges from `{}` {:.1} to `{}` {:.1} tokens/s (medians of {repeats} repeats on one machine; see bench.json for spreads).",
                lo.0, lo.1, hi.0, hi.1
            ));
        }
    }
    Ok(())
}
