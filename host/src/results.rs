//! Writing results: every file llq produces is written atomically, so an interrupted run
//! never leaves a half-written file behind.

use anyhow::{Context, Result};
use std::path::Path;

/// Write `bytes` to `path` atomically (temporary file in the same folder, then rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".{}.tmp-{}", path.file_name().and_then(|n| n.to_str()).unwrap_or("out"), std::process::id()));
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot move {} to {}", tmp.display(), path.display()))?;
    Ok(())
}

/// One row of `llq-host compare`: the figures a reader wants side by side.
fn compare_row(path: &Path, v: &serde_json::Value) -> Vec<String> {
    let metric = |n: &str| {
        v["metrics"].as_array().and_then(|ms| ms.iter().find(|m| m["name"] == n)).map_or("–".to_string(), |m| {
            let se = m["stderr"].as_f64().map(|s| format!(" ± {s:.1}")).unwrap_or_default();
            format!("{:.1}{se}", m["value"].as_f64().unwrap_or(f64::NAN))
        })
    };
    let q = &v["quantization"];
    let method = if q.is_null() { "none (f32)".to_string() } else { format!("{} {}", q["method"].as_str().unwrap_or("?"), q["options"]) };
    let mb = |k: &str| format!("{:.1}", v["size"][k].as_f64().unwrap_or(0.0) / 1e6);
    let t = &v["timing"];
    let tok_s = t["new_tokens"].as_f64().unwrap_or(0.0) / t["generate_s"].as_f64().unwrap_or(f64::NAN);
    vec![
        path.parent().and_then(|p| p.file_name()).map(|s| s.to_string_lossy().into_owned()).unwrap_or_default(),
        method,
        metric("f1"),
        metric("em"),
        mb("quantized_bytes"),
        mb("total_bytes"),
        format!("{:.2}", v["size"]["bits_per_weight"].as_f64().unwrap_or(f64::NAN)),
        t["quantize_s"].as_f64().map_or("–".into(), |s| format!("{s:.2}")),
        format!("{:.1}", t["generate_s"].as_f64().unwrap_or(f64::NAN)),
        format!("{tok_s:.1}"),
    ]
}

/// `llq-host compare`: a Markdown table of several runs' results.json, then each run's
/// prediction for the request `sample` (read from the samples.jsonl beside it).
pub fn compare(paths: &[std::path::PathBuf], sample: Option<&str>) -> Result<String> {
    let header = ["run", "method", "F1", "EM", "linear MB", "total MB", "bits/weight", "quantize s", "generate s", "new tok/s"];
    let mut out = format!("| {} |\n|{}\n", header.join(" | "), " --- |".repeat(header.len()));
    for p in paths {
        let text = std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?;
        let v: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("{} is not a results file", p.display()))?;
        if v["schema"] != "llq-results/1" {
            anyhow::bail!("{} is not an llq results file (schema {})", p.display(), v["schema"]);
        }
        out.push_str(&format!("| {} |\n", compare_row(p, &v).join(" | ")));
    }
    if let Some(id) = sample {
        out.push_str(&format!("\nrequest {id}:\n"));
        for p in paths {
            let jsonl = p.with_file_name("samples.jsonl");
            let text = std::fs::read_to_string(&jsonl).with_context(|| format!("cannot read {}", jsonl.display()))?;
            let rec = text.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()).filter(|r| r["id"] == id).last();
            let run = p.parent().and_then(|d| d.file_name()).map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            let shown = match rec {
                Some(r) => {
                    // What the task scores: the first line of the stripped generation.
                    let first: String = r["prediction"].as_str().unwrap_or("").trim().lines().next().unwrap_or("").chars().take(80).collect();
                    format!("{first:?} {}", r["metrics"])
                }
                None => "(no such sample)".into(),
            };
            out.push_str(&format!("  {run:>8}: {shown}\n"));
        }
    }
    Ok(out)
}
