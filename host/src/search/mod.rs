//! Per-layer bit allocation: how many bits each layer of a model needs under a size or KL
//! budget, for one method and a set of its settings (`llq-host search-bits`).
//!
//! - [`sensitivity`]: each layer's cost under each candidate setting, on calibration text;
//! - [`allocate`]: the Pareto curve of size against predicted KL and the allocation for a
//!   budget;
//! - here: the budgets, the option files (`--opt-layer-file`) and the curve as written.
//!
//! What comes out is a prediction (layer costs summed); `run --opt-layer-file` with the
//! ppl task and `--kl-baseline` on the evaluation books verifies it end to end (the search
//! study, `make study-bits`).

pub mod allocate;
pub mod sensitivity;

use allocate::{LayerCosts, Point};
use anyhow::{bail, Result};
use sensitivity::{Candidate, Sensitivity};
use serde::Serialize;
use std::collections::HashMap;

/// A budget an allocation must meet.
#[derive(Debug, Clone, PartialEq)]
pub enum Budget {
    /// At most this many bits per quantized weight.
    BitsPerWeight(f64),
    /// At most the size of every layer at this candidate (its label).
    SizeOf(String),
    /// A predicted KL of at most this many nats per token.
    MaxKl(f64),
    /// A predicted KL at most `eps` above every layer at this candidate.
    Within(String, f64),
}

impl Budget {
    /// The file stem of its option file.
    pub fn stem(&self) -> String {
        let clean = |s: &str| s.replace([',', '='], "-");
        match self {
            Budget::BitsPerWeight(b) => format!("bpw-{b}"),
            Budget::SizeOf(c) => format!("size-of-{}", clean(c)),
            Budget::MaxKl(k) => format!("kl-{k}"),
            Budget::Within(c, e) => format!("within-{e}-of-{}", clean(c)),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Budget::BitsPerWeight(b) => format!("≤ {b} bits/weight"),
            Budget::SizeOf(c) => format!("≤ the size of uniform {c}"),
            Budget::MaxKl(k) => format!("predicted KL ≤ {k}"),
            Budget::Within(c, e) => format!("predicted KL ≤ uniform {c}'s + {e}"),
        }
    }
}

/// One point of a curve or an allocation, as written.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub bytes: u64,
    pub bits_per_weight: f64,
    /// Summed layer costs: nats/token unless the measure is `proxy`.
    pub predicted: f64,
}

/// An allocation chosen for a budget.
#[derive(Debug, Clone, Serialize)]
pub struct Allocation {
    pub budget: String,
    #[serde(flatten)]
    pub at: Summary,
    /// Layers per candidate label.
    pub layers_per_candidate: Vec<(String, usize)>,
    /// The option file written for it.
    pub file: String,
    #[serde(skip)]
    pub pick: Vec<usize>,
}

/// What a search found.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// Every layer at one candidate: (label, summary).
    pub uniform: Vec<(String, Summary)>,
    pub curve: Vec<Summary>,
    pub allocations: Vec<Allocation>,
}

fn costs(s: &Sensitivity) -> Vec<LayerCosts> {
    (0..s.layers.len())
        .map(|l| LayerCosts {
            bytes: s.layers[l].bytes.clone(),
            cost: (0..s.candidates.len()).map(|c| s.predicted(l, c)).collect(),
        })
        .collect()
}

fn summary(s: &Sensitivity, p: &Point) -> Summary {
    let params: u64 = s.layers.iter().map(|l| l.params).sum();
    Summary {
        bytes: p.bytes,
        bits_per_weight: 8.0 * p.bytes as f64 / params.max(1) as f64,
        predicted: p.cost,
    }
}

fn candidate(s: &Sensitivity, label: &str) -> Result<usize> {
    s.candidates.iter().position(|c| c.label == label).ok_or_else(|| {
        let all: Vec<&str> = s.candidates.iter().map(|c| c.label.as_str()).collect();
        anyhow::anyhow!(
            "budget names candidate `{label}`, which is not one of the candidates ({})",
            all.join("; ")
        )
    })
}

/// The curve and one allocation per budget.
pub fn allocate(s: &Sensitivity, budgets: &[Budget]) -> Result<Outcome> {
    let layers = costs(s);
    let curve = allocate::curve(&layers);
    let uniform_point = |c: usize| allocate::Point {
        bytes: s.layers.iter().map(|l| l.bytes[c]).sum(),
        cost: (0..s.layers.len()).map(|l| s.predicted(l, c)).sum(),
        pick: vec![c; s.layers.len()],
    };
    let params: u64 = s.layers.iter().map(|l| l.params).sum();
    let mut allocations = vec![];
    for b in budgets {
        let p = match b {
            Budget::BitsPerWeight(bpw) => {
                let max = (bpw * params as f64 / 8.0).floor() as u64;
                allocate::within_bytes(&layers, &curve, max)
            }
            Budget::SizeOf(c) => {
                allocate::within_bytes(&layers, &curve, uniform_point(candidate(s, c)?).bytes)
            }
            Budget::MaxKl(k) | Budget::Within(_, k) if !s.in_nats() => {
                bail!("a KL budget needs a measure in nats (calibrated or exact), not proxy (asked: {k})")
            }
            Budget::MaxKl(k) => allocate::within_cost(&layers, &curve, *k),
            Budget::Within(c, eps) => {
                allocate::within_cost(&layers, &curve, uniform_point(candidate(s, c)?).cost + eps)
            }
        };
        let Some(p) = p else {
            bail!(
                "no allocation meets budget {} (the smallest is {:.3} bits/weight, predicted KL {:.4}; the largest {:.3}, {:.4})",
                b.describe(),
                summary(s, &curve[0]).bits_per_weight,
                curve[0].cost,
                summary(s, curve.last().unwrap_or(&curve[0])).bits_per_weight,
                curve.last().unwrap_or(&curve[0]).cost,
            );
        };
        let mut counts: Vec<(String, usize)> = s.candidates.iter().map(|c| (c.label.clone(), 0)).collect();
        for &c in &p.pick {
            counts[c].1 += 1;
        }
        allocations.push(Allocation {
            budget: b.describe(),
            at: summary(s, &p),
            layers_per_candidate: counts,
            file: format!("{}.opts", b.stem()),
            pick: p.pick,
        });
    }
    Ok(Outcome {
        uniform: (0..s.candidates.len())
            .map(|c| (s.candidates[c].label.clone(), summary(s, &uniform_point(c))))
            .collect(),
        curve: curve.iter().map(|p| summary(s, p)).collect(),
        allocations,
    })
}

/// An allocation as an option file: the most common candidate for every layer (`*`), then
/// each other layer's options by its name; `header` lines become comments.
pub fn option_file(s: &Sensitivity, pick: &[usize], header: &[String]) -> String {
    let mut count: HashMap<usize, usize> = HashMap::new();
    for &c in pick {
        *count.entry(c).or_default() += 1;
    }
    // Most common; ties to the first candidate.
    let base = (0..s.candidates.len())
        .max_by_key(|c| (count.get(c).copied().unwrap_or(0), usize::MAX - c))
        .unwrap_or(0);
    let mut out: String = header.iter().map(|h| format!("# {h}\n")).collect();
    out.push_str("# one --opt-layer per line (PATTERN:KEY=VALUE), the last match of a key winning\n");
    for (k, v) in &s.candidates[base].options {
        out.push_str(&format!("*:{k}={v}\n"));
    }
    for (row, &c) in s.layers.iter().zip(pick) {
        if c != base {
            for (k, v) in &s.candidates[c].options {
                out.push_str(&format!("{}:{k}={v}\n", crate::quant::layer_opt::short_name(&row.name)));
            }
        }
    }
    out
}

/// Parse a `--candidate` (`k=v[,k=v…]`).
pub fn parse_candidate(s: &str) -> Result<Candidate, String> {
    let mut options = vec![];
    for part in s.split(',') {
        let (k, v) = crate::util::kv::parse(part).map_err(|e| format!("{e} in candidate `{s}`"))?;
        if v.is_empty() {
            return Err(format!("`{part}` in candidate `{s}` has an empty value"));
        }
        options.push((k, v));
    }
    Ok(Candidate { label: s.trim().to_string(), options })
}

/// Candidates must set the same keys (an option file sets a layer's keys on top of the most
/// common candidate's, so a key only some candidates set would leak to other layers) and
/// differ from each other.
pub fn check_candidates(c: &[Candidate]) -> Result<()> {
    if c.len() < 2 {
        bail!("give at least two --candidate settings to choose between (got {})", c.len());
    }
    fn keys(x: &Candidate) -> Vec<&str> {
        let mut k: Vec<&str> = x.options.iter().map(|o| o.0.as_str()).collect();
        k.sort();
        k
    }
    for x in &c[1..] {
        if keys(x) != keys(&c[0]) {
            bail!("--candidate {} sets other options than --candidate {}: every candidate must set the same keys", x.label, c[0].label);
        }
    }
    for (i, x) in c.iter().enumerate() {
        if c[..i].iter().any(|y| y.options == x.options) {
            bail!("--candidate {} is given twice", x.label);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::sensitivity::{LayerRow, Measure};
    use super::*;

    fn sens() -> Sensitivity {
        let cands = ["bits=2", "bits=4", "bits=8"].map(|c| parse_candidate(c).unwrap()).to_vec();
        let row = |name: &str, kl: [f64; 3]| LayerRow {
            name: name.into(),
            params: 100,
            bytes: vec![25, 50, 100],
            proxy: kl.to_vec(),
            kl: kl.iter().map(|&k| Some(k)).collect(),
        };
        Sensitivity {
            measure: Measure::Exact,
            candidates: cands,
            reference: 0,
            tokens: 1,
            layers: vec![
                row("model.layers.0.mlp.down_proj.weight", [1.0, 0.1, 0.0]),
                row("model.layers.0.mlp.up_proj.weight", [0.01, 0.001, 0.0]),
                row("model.layers.1.mlp.up_proj.weight", [0.02, 0.002, 0.0]),
            ],
            seconds_baseline: 0.0,
            seconds_quantize: 0.0,
            seconds_exact: 0.0,
        }
    }

    #[test]
    fn budgets_and_option_files() {
        let s = sens();
        let o =
            allocate(&s, &[Budget::SizeOf("bits=4".into()), Budget::Within("bits=8".into(), 0.05)]).unwrap();
        // 150 bytes (4 bits): down_proj at 8 bits, the two up_proj at 2 — KL 0.03 against 0.103.
        assert_eq!(o.allocations[0].pick, vec![2, 0, 0]);
        assert!((o.allocations[0].at.predicted - 0.03).abs() < 1e-12);
        assert!((o.uniform[1].1.predicted - 0.103).abs() < 1e-12);
        assert_eq!(o.allocations[0].at.bits_per_weight, 4.0);
        // Within 0.05 of 8 bits: the same, the smallest that qualifies.
        assert_eq!(o.allocations[1].pick, vec![2, 0, 0]);
        let f = option_file(&s, &o.allocations[0].pick, &["test".into()]);
        assert_eq!(
            f.lines().filter(|l| !l.starts_with('#')).collect::<Vec<_>>(),
            ["*:bits=2", "layers.0.mlp.down_proj:bits=8"]
        );
        // What run reads back: the last match wins per layer.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.opts");
        std::fs::write(&p, &f).unwrap();
        let opts = crate::quant::layer_opt::read_file(&p).unwrap();
        let bits = |name: &str| opts.iter().rfind(|o| o.matches(name)).unwrap().value.clone();
        assert_eq!(bits("model.layers.0.mlp.down_proj.weight"), "8");
        assert_eq!(bits("model.layers.1.mlp.up_proj.weight"), "2");
        assert!(allocate(&s, &[Budget::BitsPerWeight(1.0)])
            .unwrap_err()
            .to_string()
            .contains("no allocation meets"));
        assert!(allocate(&s, &[Budget::SizeOf("bits=3".into())])
            .unwrap_err()
            .to_string()
            .contains("not one of the candidates"));
    }

    #[test]
    fn candidates_are_checked() {
        let c = |s: &str| parse_candidate(s).unwrap();
        assert!(check_candidates(&[c("bits=2")]).is_err());
        assert!(check_candidates(&[c("bits=2"), c("bits=4,group_size=64")])
            .unwrap_err()
            .to_string()
            .contains("same keys"));
        assert!(check_candidates(&[c("bits=2"), c("bits=2")]).unwrap_err().to_string().contains("twice"));
        assert!(parse_candidate("bits").is_err());
        assert!(parse_candidate("bits=").is_err());
        check_candidates(&[c("bits=2,group_size=128"), c("group_size=64,bits=4")]).unwrap();
    }
}
