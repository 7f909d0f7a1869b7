//! The checks of `plugins check`, each a function of a loaded plugin and its options. A check
//! fails on a broken promise of the SDK contract (`sdk/src/abi.rs`, `sdk/src/lib.rs`) and
//! reports what it measured either way. Refusing an input with an error is always allowed;
//! a panic the SDK caught counts as contained (it is reported, a validation error is
//! preferred); accepting garbage, crashing or hanging is not.

use super::inputs::{self, REQUIRED_SHAPE};
use super::report::{CheckResult, Status};
use crate::plugin::{CalibrationData, GroupLayer, LayerGroup, PackedMatrix, Plugin, QuantConfig};
use anyhow::{anyhow, Result};
use llq_sdk::{CalibrationNeed, OptionKind};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Every check, in the order they run, with what it checks.
pub const CHECKS: &[(&str, &str)] = &[
    ("load", "ABI version, descriptor fields, option declarations"),
    (
        "options",
        "unknown options and ill-typed values refused by the plugin itself; every declared choice accepted",
    ),
    ("packed-size", "quantize returns exactly the bytes packed_size declares, over several shapes"),
    (
        "round-trip",
        "quantize → dequantize: finite, error reported (relative RMS, max, SQNR), zero stays zero",
    ),
    ("determinism", "the same input gives the same bytes, whatever ran in between"),
    ("threads", "8 threads at once give what one thread gives"),
    ("hostile-inputs", "non-finite weights refused; truncated, missing or mis-shaped packed buffers refused"),
    (
        "calibration",
        "the declared calibration need suffices, and using it does not make the layer's output error worse",
    ),
    ("group-scales", "input scales for a layer group: finite, positive, deterministic, no worse than none"),
    ("matmul", "the plugin's own matmul agrees with x · dequantize(W)ᵀ"),
    ("kernels", "CUDA kernels agree with the CPU dequantize (needs a CUDA build and a GPU)"),
];

/// Shapes the size and round-trip checks try, as (rows, cols). A plugin may refuse any but
/// [`REQUIRED_SHAPE`] (e.g. columns not a multiple of its group size), with an error.
const SHAPES: &[(usize, usize)] =
    &[REQUIRED_SHAPE, (1, 256), (64, 64), (256, 128), (96, 384), (200, 320), (3, 4096)];

/// A plugin configured for the checks, with the calibration data it declared it needs.
struct Ctx<'p> {
    q: QuantConfig<'p>,
    need: CalibrationNeed,
    /// Calibration from the outlier-channel activations, per input width.
    calib: Mutex<HashMap<usize, Arc<CalibrationData>>>,
}

impl Ctx<'_> {
    fn plugin(&self) -> &Plugin {
        self.q.plugin
    }

    /// The calibration data a model run would give a layer of `cols` inputs (none when the
    /// plugin needs none).
    fn calibration(&self, cols: usize) -> Result<Option<Arc<CalibrationData>>> {
        if self.need == CalibrationNeed::None || cols == 0 {
            return Ok(None);
        }
        let mut cache = self.calib.lock().map_err(|_| anyhow!("calibration cache poisoned"))?;
        if let Some(c) = cache.get(&cols) {
            return Ok(Some(c.clone()));
        }
        let c = Arc::new(inputs::calibration(&inputs::activations(7, cols, true), cols, self.need)?);
        cache.insert(cols, c.clone());
        Ok(Some(c))
    }

    /// Quantize as the host would: with the declared calibration.
    fn quantize(&self, layer: &str, rows: usize, cols: usize, w: &[f32]) -> Result<PackedMatrix> {
        let c = self.calibration(cols)?;
        self.q.quantize(layer, rows, cols, w, c.as_deref())
    }
}

/// Run the check `name` on the plugin at `path` with `opts`, in this process. Never panics:
/// a panic in the check itself is its failure.
pub fn run(name: &str, path: &Path, opts: &[(String, String)]) -> CheckResult {
    let plugin = match Plugin::load(path) {
        Ok(p) => p,
        Err(e) => return CheckResult::new(name, Status::Fail, format!("does not load: {e:#}"), Value::Null),
    };
    let q = match plugin.configure(opts) {
        Ok(q) => q,
        Err(e) => {
            return CheckResult::new(name, Status::Fail, format!("options refused: {e:#}"), Value::Null)
        }
    };
    let ctx = Ctx { need: q.calibration(), q, calib: Mutex::default() };
    let f: fn(&Ctx) -> Result<CheckResult> = match name {
        "load" => load,
        "options" => options,
        "packed-size" => packed_size,
        "round-trip" => round_trip,
        "determinism" => determinism,
        "threads" => threads,
        "hostile-inputs" => hostile_inputs,
        "calibration" => calibration,
        "group-scales" => group_scales,
        "matmul" => matmul,
        "kernels" => kernels,
        _ => return CheckResult::new(name, Status::Fail, "no such check", Value::Null),
    };
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&ctx))) {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => CheckResult::new(name, Status::Fail, format!("{e:#}"), Value::Null),
        Err(_) => CheckResult::new(
            name,
            Status::Fail,
            "the check panicked (a bug in llq or the plugin)",
            Value::Null,
        ),
    }
}

/// A check's verdict from the problems it found.
fn verdict(name: &str, problems: &[String], ok: String, details: Value) -> CheckResult {
    if problems.is_empty() {
        return CheckResult::new(name, Status::Pass, ok, details);
    }
    // The first two in the summary; every one in the details.
    let mut summary = problems.iter().take(2).cloned().collect::<Vec<_>>().join("; ");
    if problems.len() > 2 {
        summary.push_str(&format!("; and {} more", problems.len() - 2));
    }
    let details = match details {
        Value::Object(mut m) => {
            m.insert("problems".into(), json!(problems));
            Value::Object(m)
        }
        other => json!({"problems": problems, "measured": other}),
    };
    CheckResult::new(name, Status::Fail, summary, details)
}

/// How a refusal came back: an error, or a panic the SDK caught.
fn refusal(e: &anyhow::Error) -> &'static str {
    if format!("{e:#}").contains("panicked in") {
        "contained panic"
    } else {
        "error"
    }
}

fn load(c: &Ctx) -> Result<CheckResult> {
    let i = &c.plugin().info;
    let mut problems = vec![];
    for (field, v) in [("name", &i.name), ("version", &i.version), ("description", &i.description)] {
        if v.trim().is_empty() {
            problems.push(format!("descriptor field `{field}` is empty"));
        }
    }
    let mut seen = std::collections::HashSet::new();
    for o in &i.options {
        if !seen.insert(&o.name) {
            problems.push(format!("option `{}` is declared twice", o.name));
        }
        if !o.choices.is_empty() && !o.choices.contains(&o.default) {
            problems.push(format!("option `{}`: default `{}` is not one of its choices", o.name, o.default));
        }
    }
    let ok = format!(
        "ABI v{}, {} {}, calibration {}, {} options",
        i.abi_version,
        i.name,
        i.version,
        i.calibration,
        i.options.len()
    );
    Ok(verdict("load", &problems, ok, serde_json::to_value(i)?))
}

fn options(c: &Ctx) -> Result<CheckResult> {
    let p = c.plugin();
    let (r, k) = REQUIRED_SHAPE;
    let probe = |json: Value| p.packed_size(r, k, &json.to_string());
    let mut problems = vec![];
    let mut cases = vec![];
    // The plugin's own parser, not the host's: other hosts call it too.
    match probe(json!({"llq_check_unknown": "1"})) {
        Ok(_) => problems.push("accepts an unknown option `llq_check_unknown`".to_string()),
        Err(e) if !format!("{e:#}").contains("llq_check_unknown") => {
            problems.push(format!("refuses an unknown option without naming it: {e:#}"))
        }
        Err(_) => {}
    }
    for o in &p.info.options {
        let bad = match (o.kind, o.choices.is_empty()) {
            (_, false) => "llq-not-a-choice",
            (OptionKind::Int, _) => "1.5x",
            (OptionKind::Float, _) => "abc",
            (OptionKind::Bool, _) => "maybe",
            (OptionKind::String, true) => "",
        };
        if !bad.is_empty() {
            match probe(json!({ &o.name: bad })) {
                Ok(_) => problems.push(format!("accepts `{}={bad}`", o.name)),
                Err(e) if !format!("{e:#}").contains(&o.name) => {
                    problems.push(format!("refuses `{}={bad}` without naming the option: {e:#}", o.name))
                }
                Err(_) => {}
            }
            cases.push(json!({"option": o.name, "value": bad, "expected": "refused"}));
        }
        for ch in &o.choices {
            if let Err(e) = probe(json!({ &o.name: ch })) {
                problems.push(format!("refuses its own declared choice `{}={ch}`: {e:#}", o.name));
            }
            cases.push(json!({"option": o.name, "value": ch, "expected": "accepted"}));
        }
    }
    let defaults: serde_json::Map<String, Value> =
        p.info.options.iter().map(|o| (o.name.clone(), Value::String(o.default.clone()))).collect();
    if let (Ok(a), Ok(b)) = (probe(json!({})), probe(Value::Object(defaults))) {
        if a != b {
            problems.push(format!("its defaults spelled out give {b} bytes, left out {a}"));
        }
    }
    let ok = format!("{} values probed, each refused or accepted as declared", cases.len() + 1);
    Ok(verdict("options", &problems, ok, json!({ "cases": cases })))
}

fn packed_size(c: &Ctx) -> Result<CheckResult> {
    let mut problems = vec![];
    let mut shapes = vec![];
    let mut accepted = 0;
    for &(r, k) in SHAPES {
        let declared = match c.q.packed_size(r, k) {
            Ok(n) => n,
            Err(e) => {
                if (r, k) == REQUIRED_SHAPE {
                    problems.push(format!("refuses the {r}×{k} matrix every method must take: {e:#}"));
                }
                shapes.push(json!({"shape": [r, k], "refused": format!("{e:#}")}));
                continue;
            }
        };
        let w = inputs::weights(r as u64 * 7919 + k as u64, r, k);
        match c.quantize("check.size", r, k, &w) {
            Ok(p) => {
                accepted += 1;
                let bits = p.bytes() as f64 * 8.0 / (r * k) as f64;
                let names: Vec<&str> = p.buffers.iter().map(|(n, _)| n.as_str()).collect();
                shapes.push(
                    json!({"shape": [r, k], "bytes": p.bytes(), "bits_per_weight": bits, "buffers": names}),
                );
            }
            Err(e) => {
                problems.push(format!("{r}×{k}: packed_size declares {declared} bytes but quantize: {e:#}"));
                shapes.push(json!({"shape": [r, k], "declared": declared, "error": format!("{e:#}")}));
            }
        }
    }
    let ok = format!("{accepted} of {} shapes quantized to exactly their declared size", SHAPES.len());
    Ok(verdict("packed-size", &problems, ok, json!({ "shapes": shapes })))
}

fn round_trip(c: &Ctx) -> Result<CheckResult> {
    let mut problems = vec![];
    let mut cases = vec![];
    let mut worst: Option<(f64, String)> = None;
    for &(r, k) in SHAPES {
        if c.q.packed_size(r, k).is_err() {
            continue;
        }
        let seed = r as u64 * 31 + k as u64;
        for (kind, w) in [
            ("gaussian", inputs::weights(seed, r, k)),
            ("outliers", inputs::weights_with_outliers(seed, r, k)),
        ] {
            let p = c.quantize("check.round_trip", r, k, &w)?;
            let d = c.q.dequantize(&p)?;
            if let Some(i) = d.iter().position(|v| !v.is_finite()) {
                problems.push(format!("{r}×{k} {kind}: dequantized value {i} is {}", d[i]));
                continue;
            }
            let (rel, max) = inputs::weight_error(&w, &d);
            if rel >= 1.0 {
                problems.push(format!("{r}×{k} {kind}: relative RMS error {rel:.3}, worse than all zeros"));
            }
            let label = format!("{r}×{k} {kind}");
            if worst.as_ref().is_none_or(|(x, _)| rel > *x) {
                worst = Some((rel, label.clone()));
            }
            cases.push(json!({
                "shape": [r, k], "weights": kind, "relative_rms_error": rel, "max_abs_error": max,
                "sqnr_db": -20.0 * rel.max(1e-300).log10(),
                "bits_per_weight": p.bytes() as f64 * 8.0 / (r * k) as f64,
            }));
        }
    }
    let (r, k) = REQUIRED_SHAPE;
    let zeros = vec![0f32; r * k];
    let d = c.q.dequantize(&c.quantize("check.zeros", r, k, &zeros)?)?;
    if let Some(v) = d.iter().find(|v| **v != 0.0) {
        problems.push(format!("a zero matrix comes back with the value {v}"));
    }
    let ok = match &worst {
        Some((rel, at)) => format!(
            "{} cases; worst relative RMS error {rel:.4} ({:.1} dB SQNR) on {at}; zeros stay zero",
            cases.len(),
            -20.0 * rel.max(1e-300).log10()
        ),
        None => "no shape accepted".into(),
    };
    Ok(verdict("round-trip", &problems, ok, json!({ "cases": cases })))
}

fn determinism(c: &Ctx) -> Result<CheckResult> {
    let (r, k) = REQUIRED_SHAPE;
    let (a, b) = (inputs::weights_with_outliers(11, r, k), inputs::weights(12, r, k));
    let first = c.quantize("check.det", r, k, &a)?;
    let other = c.quantize("check.det", r, k, &b)?;
    let again = c.quantize("check.det", r, k, &a)?;
    let mut problems = vec![];
    if first != again {
        problems.push("quantizing the same matrix twice gave different bytes or metadata".to_string());
    }
    let (d1, d2) = (c.q.dequantize(&first)?, c.q.dequantize(&first)?);
    let _ = c.q.dequantize(&other)?;
    if d1.iter().zip(&d2).any(|(x, y)| x.to_bits() != y.to_bits()) {
        problems.push("dequantizing the same packed matrix twice gave different values".to_string());
    }
    Ok(verdict("determinism", &problems, "same input, same bytes and values (A, B, A)".into(), Value::Null))
}

fn threads(c: &Ctx) -> Result<CheckResult> {
    const N: usize = 8;
    let (r, k) = REQUIRED_SHAPE;
    let ws: Vec<Vec<f32>> = (0..N).map(|i| inputs::weights_with_outliers(100 + i as u64, r, k)).collect();
    // Calibration made before the threads start, so they only call the plugin.
    c.calibration(k)?;
    let one = |w: &Vec<f32>| -> Result<(PackedMatrix, Vec<f32>)> {
        let p = c.quantize("check.threads", r, k, w)?;
        let d = c.q.dequantize(&p)?;
        Ok((p, d))
    };
    let serial: Vec<_> = ws.iter().map(one).collect::<Result<_>>()?;
    let mut problems = vec![];
    for round in 0..3 {
        let parallel: Vec<Result<(PackedMatrix, Vec<f32>)>> = std::thread::scope(|s| {
            let hs: Vec<_> = ws.iter().map(|w| s.spawn(move || one(w))).collect();
            hs.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(anyhow!("thread panicked")))).collect()
        });
        for (i, (p, s)) in parallel.into_iter().zip(&serial).enumerate() {
            let (p, d) = p?;
            if p != s.0 || d.iter().zip(&s.1).any(|(x, y)| x.to_bits() != y.to_bits()) {
                problems.push(format!("round {round}, matrix {i}: differs from the single-threaded result"));
            }
        }
    }
    problems.dedup();
    let ok = format!("{N} matrices quantized and dequantized on {N} threads at once, 3 rounds: identical");
    Ok(verdict("threads", &problems, ok, Value::Null))
}

fn hostile_inputs(c: &Ctx) -> Result<CheckResult> {
    let (r, k) = REQUIRED_SHAPE;
    let mut problems = vec![];
    let mut cases = vec![];
    let mut record = |case: String, must_refuse: bool, res: Result<()>| {
        let outcome = match &res {
            Ok(()) => "accepted",
            Err(e) => refusal(e),
        };
        if must_refuse && res.is_ok() {
            problems.push(format!("{case}: accepted"));
        }
        let message = res.err().map(|e| format!("{e:#}"));
        cases.push(json!({"case": case, "must_refuse": must_refuse, "outcome": outcome, "message": message}));
    };
    for (what, v) in [("NaN", f32::NAN), ("+inf", f32::INFINITY), ("-inf", f32::NEG_INFINITY)] {
        let mut w = inputs::weights(5, r, k);
        w[k + 5] = v;
        record(format!("a {what} weight"), true, c.quantize("check.hostile", r, k, &w).map(drop));
    }
    for (rr, kk) in [(0, k), (r, 0)] {
        // A zero-sized matrix may be refused or packed to its declared size (the host checks).
        let res = c.q.packed_size(rr, kk).and_then(|_| c.quantize("check.empty", rr, kk, &[]).map(drop));
        record(format!("a {rr}×{kk} matrix"), false, res);
    }
    let good = c.quantize("check.hostile", r, k, &inputs::weights(6, r, k))?;
    let deq = |p: PackedMatrix| c.q.dequantize(&p).map(drop);
    for (i, (name, b)) in good.buffers.iter().enumerate() {
        if !b.is_empty() {
            let mut p = good.clone();
            p.buffers[i].1.pop();
            record(format!("buffer `{name}` one byte short"), true, deq(p));
        }
        let mut p = good.clone();
        p.buffers.remove(i);
        record(format!("buffer `{name}` missing"), true, deq(p));
    }
    let mut p = good.clone();
    p.rows *= 2;
    record(format!("buffers of {r}×{k} presented as {}×{k}", 2 * r), true, deq(p));
    let mut p = good.clone();
    p.metadata = "not json {".into();
    record("metadata that is not JSON".into(), false, deq(p));
    let mut p = good.clone();
    p.buffers.push(("llq_check_extra".into(), vec![0; 16]));
    record("an extra buffer".into(), false, deq(p));
    let contained = cases.iter().filter(|c| c["outcome"] == "contained panic").count();
    let ok = format!(
        "{} hostile inputs, each refused or handled{}",
        cases.len(),
        if contained > 0 {
            format!(" ({contained} by a contained panic: validation errors are better)")
        } else {
            String::new()
        }
    );
    Ok(verdict("hostile-inputs", &problems, ok, json!({ "cases": cases })))
}

fn calibration(c: &Ctx) -> Result<CheckResult> {
    let (r, k) = REQUIRED_SHAPE;
    let w = inputs::weights_with_outliers(21, r, k);
    let x = inputs::activations(7, k, true);
    if c.need == CalibrationNeed::None {
        // The host sends none; whether the plugin would use some is only reported.
        let full = inputs::calibration(&x, k, CalibrationNeed::Hessian)?;
        let plain = c.q.quantize("check.calib", r, k, &w, None)?;
        let given = c.q.quantize("check.calib", r, k, &w, Some(&full))?;
        let uses = if plain == given { "ignores" } else { "would use" };
        return Ok(CheckResult::new(
            "calibration",
            Status::Pass,
            format!("declares no need (the host sends no calibration); {uses} calibration data if given"),
            Value::Null,
        ));
    }
    let mut problems = vec![];
    let without = match c.q.quantize("check.calib", r, k, &w, None) {
        Ok(_) => "quantizes without calibration data (a fallback)".to_string(),
        Err(e) => format!("refuses without calibration data ({})", refusal(&e)),
    };
    let declared = inputs::calibration(&x, k, c.need)?;
    let informed = c.q.dequantize(&c.q.quantize("check.calib", r, k, &w, Some(&declared))?)?;
    let flat = inputs::calibration(&inputs::activations(8, k, false), k, c.need)?;
    let blind = c.q.dequantize(&c.q.quantize("check.calib", r, k, &w, Some(&flat))?)?;
    let (e_informed, e_blind) =
        (inputs::output_error(&x, &w, &informed, r, k), inputs::output_error(&x, &w, &blind, r, k));
    // 2% slack: a method may trade a little output error for something else it optimizes.
    if e_informed > e_blind * 1.02 {
        problems.push(format!(
            "with calibration from the inputs, their output error is {e_informed:.4}; with uninformative calibration {e_blind:.4}"
        ));
    }
    let ok = format!(
        "`{:?}` suffices; output error on outlier-channel inputs {e_informed:.4} with their calibration vs {e_blind:.4} without it; {without}",
        c.need
    );
    let details = json!({"need": format!("{:?}", c.need), "output_error_calibrated": e_informed, "output_error_uninformative": e_blind, "without_calibration": without});
    Ok(verdict("calibration", &problems, ok, details))
}

fn group_scales(c: &Ctx) -> Result<CheckResult> {
    if !c.plugin().info.group_scales {
        return Ok(CheckResult::skip("group-scales", "the plugin searches no input scales"));
    }
    let k = REQUIRED_SHAPE.1;
    let x = inputs::activations(7, k, true);
    let calib = inputs::calibration(&x, k, c.need)?;
    let shapes = [("q_proj", 256), ("k_proj", 64), ("v_proj", 64)];
    let ws: Vec<Vec<f32>> =
        shapes.iter().enumerate().map(|(i, (_, r))| inputs::weights(40 + i as u64, *r, k)).collect();
    let group = || LayerGroup {
        producer: "model.layers.0.input_layernorm.weight",
        producer_kind: llq_sdk::Producer::Norm,
        layers: shapes
            .iter()
            .zip(&ws)
            .map(|((n, r), w)| GroupLayer { name: n, rows: *r, cols: k, data: w })
            .collect(),
        calibration: &calib,
    };
    let first = c.q.search_scales(&group())?;
    let again = c.q.search_scales(&group())?;
    let mut problems = vec![];
    if first != again {
        problems.push("two searches on the same group chose different scales".to_string());
    }
    let Some(s) = first else {
        return Ok(verdict("group-scales", &problems, "left the group unscaled".into(), Value::Null));
    };
    // The host folds s into the producer: the layers see x / s and hold W · diag(s).
    let xs: Vec<f32> = x.chunks(k).flat_map(|row| row.iter().zip(&s.scales).map(|(v, s)| v / s)).collect();
    let calib_s = inputs::calibration(&xs, k, c.need)?;
    let (mut plain, mut scaled) = (0f64, 0f64);
    for ((_, r), w) in shapes.iter().zip(&ws) {
        let d = c.q.dequantize(&c.q.quantize("check.group", *r, k, w, Some(&calib))?)?;
        plain += inputs::output_error(&x, w, &d, *r, k).powi(2);
        let wsc: Vec<f32> =
            w.chunks(k).flat_map(|row| row.iter().zip(&s.scales).map(|(v, s)| v * s)).collect();
        let d = c.q.dequantize(&c.q.quantize("check.group", *r, k, &wsc, Some(&calib_s))?)?;
        scaled += inputs::output_error(&xs, &wsc, &d, *r, k).powi(2);
    }
    let (plain, scaled) = (plain.sqrt(), scaled.sqrt());
    if scaled > plain * 1.02 {
        problems
            .push(format!("the chosen scales raise the group's output error from {plain:.4} to {scaled:.4}"));
    }
    let (lo, hi) = s.scales.iter().fold((f32::MAX, 0f32), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
    let ok =
        format!("scales in [{lo:.3}, {hi:.3}]; group output error {scaled:.4} scaled vs {plain:.4} unscaled");
    Ok(verdict(
        "group-scales",
        &problems,
        ok,
        json!({"info": s.info, "output_error_scaled": scaled, "output_error_unscaled": plain}),
    ))
}

fn matmul(c: &Ctx) -> Result<CheckResult> {
    if !c.plugin().info.has_matmul {
        return Ok(CheckResult::skip("matmul", "the plugin has no matmul of its own"));
    }
    let (r, k) = REQUIRED_SHAPE;
    let m = 4;
    let w = inputs::weights(31, r, k);
    let p = c.quantize("check.matmul", r, k, &w)?;
    let d = c.q.dequantize(&p)?;
    let x = inputs::activations(32, k, true)[..m * k].to_vec();
    let y = c.plugin().matmul(&p, &x, m)?;
    let (mut num, mut den) = (0f64, 0f64);
    for i in 0..m {
        for j in 0..r {
            let exact: f64 = (0..k).map(|t| x[i * k + t] as f64 * d[j * k + t] as f64).sum();
            num += (y[i * r + j] as f64 - exact).powi(2);
            den += exact * exact;
        }
    }
    let rel = (num / den.max(f64::MIN_POSITIVE)).sqrt();
    // Its matmul may compute in other precision (LLM.int8() quantizes activations too).
    let problems = if rel.is_finite() && rel <= 0.05 {
        vec![]
    } else {
        vec![format!("matmul differs from x · dequantize(W)ᵀ by {rel:.4} (relative)")]
    };
    Ok(verdict(
        "matmul",
        &problems,
        format!("relative difference {rel:.5} from x · dequantize(W)ᵀ"),
        json!({"relative_difference": rel}),
    ))
}

#[cfg(not(feature = "cuda"))]
fn kernels(c: &Ctx) -> Result<CheckResult> {
    Ok(CheckResult::skip(
        "kernels",
        if c.plugin().info.cuda_kernels.is_some() {
            "this llq-host is built without CUDA (make build-cuda)"
        } else {
            "the plugin ships no CUDA kernels"
        },
    ))
}

#[cfg(feature = "cuda")]
fn kernels(c: &Ctx) -> Result<CheckResult> {
    use crate::bench::kernel::{kernel_bench, KernelBenchSettings};
    if c.plugin().info.cuda_kernels.is_none() {
        return Ok(CheckResult::skip("kernels", "the plugin ships no CUDA kernels"));
    }
    if crate::device::open("cuda").is_err() {
        return Ok(CheckResult::skip("kernels", "no CUDA device"));
    }
    let settings = KernelBenchSettings {
        shapes: vec![(512, 2048)],
        batch_sizes: vec![1, 4],
        repeats: 2,
        device: "cuda".into(),
        seed: Some(20261124),
    };
    let r = kernel_bench(&c.q, &settings)?;
    let n = r.checks.len();
    let problems = if r.all_passed {
        vec![]
    } else {
        vec!["its CUDA kernels disagree with its CPU dequantize (details in the JSON report)".to_string()]
    };
    Ok(verdict(
        "kernels",
        &problems,
        format!("{n} kernel checks against the CPU dequantize"),
        serde_json::to_value(&r.checks)?,
    ))
}
