//! `llq-host search-bits`: per-layer settings of one method under size or KL budgets —
//! each layer's sensitivity on calibration text (cached in `--out`), the Pareto curve of
//! size against predicted KL, and an option file per budget for `run --opt-layer-file`.

use super::args::PluginArgs;
use crate::calib::text;
use crate::plugin::QuantConfig;
use crate::quant::{CalibMode, CalibSettings};
use crate::search::sensitivity::{self, Candidate, Measure, Sensitivity};
use crate::search::{check_candidates, option_file, parse_candidate, Budget, Outcome};
use crate::util::digest::{sha256_file, sha256_hex};
use crate::util::fs::{write_atomic, write_json};
use crate::util::par::default_threads;
use anyhow::{bail, Context, Result};
use llq_sdk::CalibrationNeed;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;

/// Choose per-layer settings of a method under size or KL budgets.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// HF directory, .gguf file, llama2.c .bin, or synthetic:<preset>.
    #[arg(long)]
    pub model: String,
    #[command(flatten)]
    pub plugin: PluginArgs,
    /// A setting layers may get, `KEY=VALUE[,KEY=VALUE…]` on top of --opt, repeatable (at
    /// least two; every candidate sets the same keys), e.g. --candidate bits=3,group_size=128.
    #[arg(long = "candidate", value_parser = parse_candidate, required = true)]
    pub candidates: Vec<Candidate>,
    /// A size budget in bits per quantized weight, repeatable.
    #[arg(long = "budget-bpw")]
    pub budget_bpw: Vec<f64>,
    /// A size budget: the size of every layer at this candidate (as given to --candidate),
    /// repeatable — the allocation to compare with that uniform setting at equal size.
    #[arg(long = "budget-of", value_name = "CANDIDATE")]
    pub budget_of: Vec<String>,
    /// A KL budget: the smallest allocation with predicted KL at most this many nats/token.
    #[arg(long = "max-kl")]
    pub max_kl: Vec<f64>,
    /// A KL budget relative to a uniform setting, `CANDIDATE:EPS`: the smallest allocation
    /// whose predicted KL is at most EPS above every layer at CANDIDATE (e.g. 8-bit).
    #[arg(long = "within", value_name = "CANDIDATE:EPS")]
    pub within: Vec<String>,
    /// How a layer's cost is measured: proxy (Hessian-weighted error), calibrated (the proxy
    /// scaled by one exact KL per layer) or exact (KL per layer and candidate).
    #[arg(long, default_value = "calibrated")]
    pub measure: Measure,
    /// The candidate `calibrated` measures exactly [default: the smallest].
    #[arg(long)]
    pub reference: Option<String>,
    /// Calibration text: plain UTF-8 or JSONL with `text` [default: the Gutenberg
    /// calibration books of `make data`].
    #[arg(long)]
    pub calib_data: Option<PathBuf>,
    /// Windows of calibration text.
    #[arg(long, default_value_t = 4)]
    pub calib_samples: usize,
    /// Tokens per window (4 × 256 tokens keep the calibrated measure of SmolLM2-135M near
    /// 7 minutes on 2 cores: one forward per layer).
    #[arg(long, default_value_t = 256)]
    pub calib_seq_len: usize,
    #[arg(long, default_value_t = 0)]
    pub calib_seed: u64,
    /// Output folder: sensitivity.json (reused by a later search with the same inputs),
    /// search.json, curve.svg and one option file per budget.
    #[arg(long)]
    pub out: PathBuf,
    /// Measure again even when --out holds a sensitivity.json for the same inputs.
    #[arg(long)]
    pub fresh: bool,
    /// Threads for quantization (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// cpu, cuda, cuda:N, or auto.
    #[arg(long, default_value = "auto")]
    pub device: String,
}

/// What the measurements depend on: a cached sensitivity.json is reused only when equal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Key {
    llq_version: String,
    model_sha256: String,
    plugin_sha256: String,
    options: serde_json::Value,
    candidates: Vec<Candidate>,
    measure: Measure,
    reference: String,
    calibration_sha256: String,
    windows_sha256: String,
    device: String,
}

#[derive(Serialize, Deserialize)]
struct Cached {
    key: Key,
    sensitivity: Sensitivity,
}

impl Args {
    fn budgets(&self) -> Result<Vec<Budget>> {
        let mut out = vec![];
        for &b in &self.budget_bpw {
            if !(b > 0.0 && b.is_finite()) {
                bail!("--budget-bpw {b} must be a positive number");
            }
            out.push(Budget::BitsPerWeight(b));
        }
        out.extend(self.budget_of.iter().map(|c| Budget::SizeOf(c.clone())));
        for &k in &self.max_kl {
            if !(k >= 0.0 && k.is_finite()) {
                bail!("--max-kl {k} must be a non-negative number");
            }
            out.push(Budget::MaxKl(k));
        }
        for w in &self.within {
            let (c, e) =
                w.rsplit_once(':').with_context(|| format!("--within `{w}` is not CANDIDATE:EPS"))?;
            let e: f64 = e.parse().with_context(|| format!("--within `{w}`: `{e}` is not a number"))?;
            if !(e >= 0.0 && e.is_finite()) {
                bail!("--within `{w}`: EPS must be a non-negative number");
            }
            out.push(Budget::Within(c.to_string(), e));
        }
        if out.is_empty() {
            bail!("give a budget: --budget-bpw, --budget-of, --max-kl or --within");
        }
        Ok(out)
    }
}

pub fn main(a: Args) -> Result<()> {
    let wall = Instant::now();
    check_candidates(&a.candidates)?;
    let budgets = a.budgets()?;
    if a.calib_samples == 0 || a.calib_seq_len < 2 {
        bail!("--calib-samples must be at least 1 and --calib-seq-len at least 2");
    }
    let plugin = a.plugin.load()?;
    let q = plugin.configure(&a.plugin.opts)?;
    // Every candidate's options checked now, before the model loads.
    let configs = a
        .candidates
        .iter()
        .map(|c| q.with_overrides(&c.options).with_context(|| format!("--candidate {}", c.label)))
        .collect::<Result<Vec<_>>>()?;
    if let Some(c) = std::iter::once(&q).chain(&configs).find(|c| c.calibration() != CalibrationNeed::None) {
        bail!(
            "plugin {} calibrates with options {} ({:?}): search-bits takes methods without calibration (rtn, gguf without imatrix, nf4, …) — per-layer options of calibrated plugins are not supported yet",
            plugin.info.path.display(),
            c.canonical(),
            c.calibration()
        );
    }
    // Every layer sees the unquantized model's activations: the `parallel` calibration order.
    let calib = CalibSettings {
        text: match &a.calib_data {
            Some(p) => text::from_file(p)?,
            None => text::default_text()?,
        },
        samples: a.calib_samples,
        seq_len: Some(a.calib_seq_len),
        seed: a.calib_seed,
        mode: CalibMode::Parallel,
        max_sample_rows: 0,
    };
    std::fs::create_dir_all(&a.out).with_context(|| format!("cannot create --out {}", a.out.display()))?;
    let device = crate::device::open(&a.device)?;
    let m = crate::loader::load(&a.model)?;
    let windows = calib.windows(&m)?;
    // The default reference: the smallest candidate over the whole model.
    let size = |qc: &QuantConfig| -> Result<u64> {
        m.config.linear_layers().iter().map(|(_, r, k)| qc.packed_size(*r, *k)).sum()
    };
    let reference = match &a.reference {
        Some(r) => a
            .candidates
            .iter()
            .position(|c| &c.label == r)
            .with_context(|| format!("--reference {r} is not one of the --candidate settings"))?,
        None => {
            let sizes = configs.iter().map(size).collect::<Result<Vec<_>>>()?;
            (0..sizes.len()).min_by_key(|&i| sizes[i]).unwrap_or(0)
        }
    };
    let token_bytes: Vec<u8> = windows.iter().flatten().flat_map(|t| t.to_le_bytes()).collect();
    let key = Key {
        llq_version: env!("CARGO_PKG_VERSION").into(),
        model_sha256: m.content_hash.clone(),
        plugin_sha256: sha256_file(&a.plugin.quant)?,
        options: serde_json::from_str(&q.canonical()).context("the plugin's canonical options")?,
        candidates: a.candidates.clone(),
        measure: a.measure,
        reference: a.candidates[reference].label.clone(),
        calibration_sha256: calib.text.sha256.clone(),
        windows_sha256: sha256_hex(&token_bytes),
        device: if device.is_cuda() { "cuda" } else { "cpu" }.into(),
    };
    let cache = a.out.join("sensitivity.json");
    let cached: Option<Cached> = if a.fresh || !cache.exists() {
        None
    } else {
        match std::fs::read(&cache)
            .map_err(anyhow::Error::from)
            .and_then(|b| crate::util::json::parse::<Cached>(b, &cache))
        {
            Ok(c) if c.key == key => Some(c),
            Ok(_) => {
                tracing::info!("{} is for other inputs: measuring again", cache.display());
                None
            }
            Err(e) => {
                tracing::warn!("{} is not a sensitivity file ({e:#}): measuring again", cache.display());
                None
            }
        }
    };
    let reused = cached.is_some();
    let s = match cached {
        Some(c) => c.sensitivity,
        None => {
            let s = sensitivity::measure(
                &m,
                &configs,
                &a.candidates,
                &windows,
                a.measure,
                reference,
                default_threads(a.threads),
                &device,
            )?;
            write_json(&cache, &Cached { key: key.clone(), sensitivity: s.clone() })?;
            s
        }
    };
    let outcome = crate::search::allocate(&s, &budgets)?;
    for al in &outcome.allocations {
        let header = vec![
            format!(
                "llq-host search-bits, model {} ({}), plugin {}",
                m.id,
                &m.content_hash[..12.min(m.content_hash.len())],
                a.plugin.quant.display()
            ),
            format!(
                "budget {}: {:.4} bits/weight, predicted KL {:.5} ({} measure)",
                al.budget,
                al.at.bits_per_weight,
                al.at.predicted,
                a.measure.name()
            ),
            format!("base options: {}", q.canonical()),
        ];
        write_atomic(&a.out.join(&al.file), option_file(&s, &al.pick, &header).as_bytes())?;
    }
    let svg = figure(&s, &outcome)?;
    write_atomic(&a.out.join("curve.svg"), svg.as_bytes())?;
    let seconds = wall.elapsed().as_secs_f64();
    write_json(
        &a.out.join("search.json"),
        &json!({
            "schema": "llq-search/1",
            "command_line": std::env::args().collect::<Vec<_>>(),
            "key": key,
            "sensitivity_reused": reused,
            "seconds": {
                "total": seconds,
                "baseline_and_hessians": s.seconds_baseline,
                "quantize_and_proxy": s.seconds_quantize,
                "exact": s.seconds_exact,
            },
            "tokens": s.tokens,
            "units": if s.in_nats() { "nats/token" } else { "proxy (mean squared output error)" },
            "proxy_check": s.calibrated_check(),
            "outcome": outcome,
        }),
    )?;
    print(&s, &outcome, reused, seconds, &a);
    Ok(())
}

/// The predicted curve, the uniform settings and the chosen allocations.
fn figure(s: &Sensitivity, o: &Outcome) -> Result<String> {
    use crate::sweep::figures::Point;
    let unit = if s.in_nats() { "predicted KL (nats/token)" } else { "proxy error" };
    let curve: Vec<(f64, f64)> = o.curve.iter().map(|p| (p.bits_per_weight, p.predicted)).collect();
    let mut points: Vec<Point> = o
        .uniform
        .iter()
        .map(|(l, p)| Point {
            label: format!("uniform {l}"),
            x: p.bits_per_weight,
            y: p.predicted,
            lo: p.predicted,
            hi: p.predicted,
        })
        .collect();
    points.extend(o.allocations.iter().map(|al| Point {
        label: format!("searched ({})", al.budget),
        x: al.at.bits_per_weight,
        y: al.at.predicted,
        lo: al.at.predicted,
        hi: al.at.predicted,
    }));
    crate::sweep::figures::curve_with_points(
        "Per-layer allocation: predicted size vs KL",
        "bits per quantized weight",
        unit,
        &curve,
        &points,
    )
}

fn print(s: &Sensitivity, o: &Outcome, reused: bool, seconds: f64, a: &Args) {
    let unit = if s.in_nats() { "KL nats/token" } else { "proxy" };
    println!(
        "search-bits: {} layers × {} candidates, {} measure on {} calibration tokens{} in {:.1} s",
        s.layers.len(),
        s.candidates.len(),
        s.measure.name(),
        s.tokens,
        if reused { " (sensitivity reused from sensitivity.json)" } else { "" },
        seconds
    );
    println!("\n| setting | bits/weight | predicted {unit} |\n|---|---:|---:|");
    for (l, p) in &o.uniform {
        println!("| uniform {l} | {:.4} | {:.5} |", p.bits_per_weight, p.predicted);
    }
    for al in &o.allocations {
        println!("| searched, {} | {:.4} | {:.5} |", al.budget, al.at.bits_per_weight, al.at.predicted);
    }
    println!("\nPareto curve ({} points; every 1/10 shown):", o.curve.len());
    let step = (o.curve.len() / 10).max(1);
    for p in o.curve.iter().step_by(step) {
        println!("  {:.4} bits/weight → {:.5}", p.bits_per_weight, p.predicted);
    }
    for al in &o.allocations {
        let mix: Vec<String> =
            al.layers_per_candidate.iter().filter(|c| c.1 > 0).map(|(l, n)| format!("{n} × {l}")).collect();
        println!("\n{}: {} → {}", al.budget, mix.join(", "), a.out.join(&al.file).display());
    }
}
