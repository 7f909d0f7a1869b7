//! `llq-host compare`: a Markdown table of several runs' `results.json`, then each run's
//! prediction for one request (read from the `samples.jsonl` beside it).

use super::schema::{read_samples, RunResults};
use anyhow::Result;
use std::path::{Path, PathBuf};

/// The run's folder name, which is what `--out` named.
fn run_name(path: &Path) -> String {
    path.parent().and_then(|p| p.file_name()).map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
}

/// One row: the figures a reader wants side by side.
fn row(path: &Path, r: &RunResults) -> Vec<String> {
    let metric = |n: &str| {
        r.metric(n).map_or("–".to_string(), |m| {
            let se = m.stderr.map(|s| format!(" ± {s:.1}")).unwrap_or_default();
            format!("{:.1}{se}", m.value)
        })
    };
    let method = match &r.quantization {
        None => "none (f32)".to_string(),
        Some(q) => format!("{} {}", q.method, serde_json::to_string(&q.options).unwrap_or_default()),
    };
    let mb = |b: u64| format!("{:.1}", b as f64 / 1e6);
    let t = &r.timing;
    vec![
        run_name(path),
        method,
        metric("f1"),
        metric("em"),
        mb(r.size.quantized_bytes),
        mb(r.size.total_bytes),
        format!("{:.2}", r.size.bits_per_weight),
        t.quantize_s.map_or("–".into(), |s| format!("{s:.2}")),
        format!("{:.1}", t.generate_s),
        format!("{:.1}", t.new_tokens as f64 / t.generate_s),
    ]
}

pub fn compare(paths: &[PathBuf], sample: Option<&str>) -> Result<String> {
    let header = [
        "run",
        "method",
        "F1",
        "EM",
        "linear MB",
        "total MB",
        "bits/weight",
        "quantize s",
        "generate s",
        "new tok/s",
    ];
    let mut out = format!("| {} |\n|{}\n", header.join(" | "), " --- |".repeat(header.len()));
    for p in paths {
        out.push_str(&format!("| {} |\n", row(p, &RunResults::read(p)?).join(" | ")));
    }
    if let Some(id) = sample {
        out.push_str(&format!("\nrequest {id}:\n"));
        for p in paths {
            let (records, _) = read_samples(&p.with_file_name("samples.jsonl"))?;
            let shown = match records.iter().rfind(|r| r.id == id) {
                Some(r) => {
                    // What the task scores: the first line of the stripped generation.
                    let pred = r.prediction.as_deref().unwrap_or("").trim();
                    let first: String = pred.lines().next().unwrap_or("").chars().take(80).collect();
                    format!("{first:?} {}", serde_json::to_string(&r.metrics).unwrap_or_default())
                }
                None => "(no such sample)".into(),
            };
            out.push_str(&format!("  {:>8}: {shown}\n", run_name(p)));
        }
    }
    Ok(out)
}
