//! The CoQA task for llq (contract: `tasks/wit/task.wit`), built to `tasks/coqa.wasm`.
//!
//! Two modes (`--task-opt mode=...`):
//! - `official` (default): every turn of every story, golds = the answer plus every
//!   additional answer, scored as the official `evaluate-v1.0.py` does (leave-one-out
//!   average, no de-duplication), reported per source domain on a 0–100 scale; the native
//!   report is the official script's JSON, key for key.
//! - `lm-eval`: only the last turn of each story, golds de-duplicated case-insensitively,
//!   0–1 scale: lm-eval's `coqa` task, the one the seeds' numbers come from.
//!
//! The prompt is lm-eval's in both modes (story, earlier turns with gold answers, "Q: …\n\nA:").
pub mod data;
pub mod metrics;
pub mod report;

use llq_task_sdk::{
    metric, AggregateMetric, GenerateUntil, Metric, MetricSpec, OptionSpec, Options, Report, Request,
    RequestKind, Response, Scored, Task, TaskInfo,
};
use serde::{Deserialize, Serialize};

/// What a request carries back to `score` and `aggregate`.
#[derive(Serialize, Deserialize)]
struct Doc {
    source: String,
    golds: Vec<String>,
}

pub struct CoQA;

fn opt(name: &str, kind: &str, default: &str, help: &str) -> OptionSpec {
    OptionSpec { name: name.into(), kind: kind.into(), default: default.into(), help: help.into() }
}
fn spec(name: &str, help: &str) -> MetricSpec {
    MetricSpec { name: name.into(), higher_is_better: true, help: help.into() }
}

/// Request id of a turn, as the official predictions file keys it: (story id, turn_id).
pub fn request_id(story: &str, turn_id: u64) -> String {
    format!("{story}#{turn_id}")
}

fn official(options: &Options) -> bool {
    options.get("mode") == "official"
}

impl Task for CoQA {
    fn describe() -> TaskInfo {
        TaskInfo {
            name: "coqa".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "CoQA conversational QA: official evaluate-v1.0.py scoring (every turn, 0-100, per domain) or lm-eval's (last turn, 0-1)".into(),
            metrics: vec![spec("f1", "token F1 (official: leave-one-out average over golds)"), spec("em", "exact match after normalization")],
            options: vec![
                opt("mode", "string:official|lm-eval", "official", "official: every turn, evaluate-v1.0.py; lm-eval: last turn of each story"),
                opt("max_new_tokens", "int", "256", "generation limit per answer (lm-eval uses 256)"),
            ],
        }
    }

    fn requests(data: Vec<u8>, options: &Options) -> Result<Vec<Request>, String> {
        let stories = data::parse(&data)?;
        let max_new_tokens = u32::try_from(options.int("max_new_tokens"))
            .ok()
            .filter(|&n| n > 0)
            .ok_or("option `max_new_tokens` must be between 1 and 2^32-1")?;
        let official = official(options);
        let mut out = Vec::new();
        for s in &stories {
            let turns =
                if official { 0..s.questions.len() } else { s.questions.len() - 1..s.questions.len() };
            for t in turns {
                let extra: Vec<String> = s.additional.iter().map(|a| a[t].clone()).collect();
                let golds = if official {
                    std::iter::once(s.answers[t].clone()).chain(extra).collect()
                } else {
                    metrics::lm_eval_golds(&s.answers[t], &extra)
                };
                let doc = serde_json::to_string(&Doc { source: s.source.clone(), golds })
                    .map_err(|e| e.to_string())?;
                out.push(Request {
                    id: request_id(&s.id, s.turn_ids[t]),
                    kind: RequestKind::Generate(GenerateUntil {
                        prompt: data::prompt(s, t),
                        stop: vec!["\nQ:".into()],
                        max_new_tokens,
                    }),
                    doc,
                });
            }
        }
        Ok(out)
    }

    fn score(request: Request, response: Response, _options: &Options) -> Result<Vec<Metric>, String> {
        let Response::Generated(text) = response else {
            return Err(format!(
                "request {}: CoQA needs generated text, got a log-likelihood result",
                request.id
            ));
        };
        let doc: Doc = serde_json::from_str(&request.doc)
            .map_err(|e| format!("request {}: doc is not CoQA's: {e}", request.id))?;
        let (em, f1) = metrics::turn_score(&doc.golds, &data::prediction(&text));
        Ok(vec![Metric { name: "em".into(), value: em }, Metric { name: "f1".into(), value: f1 }])
    }

    fn aggregate(samples: Vec<Scored>, options: &Options) -> Result<Report, String> {
        let mut turns = Vec::with_capacity(samples.len());
        for s in &samples {
            let doc: Doc = serde_json::from_str(&s.request.doc)
                .map_err(|e| format!("request {}: doc is not CoQA's: {e}", s.request.id))?;
            // A sample without metrics had no prediction: it counts as 0, like the official script.
            turns.push(report::Turn {
                source: doc.source,
                em: metric(s, "em").unwrap_or(0.0),
                f1: metric(s, "f1").unwrap_or(0.0),
            });
        }
        let scale = if official(options) { 100.0 } else { 1.0 };
        let scaled = |name: &str, v: Vec<f64>| {
            let m = llq_task_sdk::mean_metric(name, &v);
            AggregateMetric { value: m.value * scale, stderr: m.stderr.map(|e| e * scale), ..m }
        };
        let mut metrics = vec![
            scaled("f1", turns.iter().map(|t| t.f1).collect()),
            scaled("em", turns.iter().map(|t| t.em).collect()),
        ];
        let native = if official(options) {
            for (source, domain) in report::DOMAINS {
                let mine: Vec<&report::Turn> = turns.iter().filter(|t| t.source == *source).collect();
                if !mine.is_empty() {
                    metrics.push(scaled(&format!("f1_{domain}"), mine.iter().map(|t| t.f1).collect()));
                    metrics.push(scaled(&format!("em_{domain}"), mine.iter().map(|t| t.em).collect()));
                }
            }
            report::official_json(&turns)
        } else {
            let mut o = serde_json::Map::new();
            for m in &metrics {
                o.insert(m.name.clone(), serde_json::json!(m.value));
                o.insert(format!("{},none_stderr", m.name), serde_json::json!(m.stderr));
            }
            serde_json::to_string_pretty(&serde_json::json!({ "coqa": o })).map_err(|e| e.to_string())?
        };
        Ok(Report { metrics, native_json: native })
    }

    /// The official predictions layout: `[{"id": story, "turn_id": n, "answer": text}]`.
    fn parse_predictions(data: Vec<u8>) -> Result<Vec<(String, String)>, String> {
        #[derive(Deserialize)]
        struct Pred {
            id: String,
            turn_id: u64,
            answer: String,
        }
        let preds: Vec<Pred> = serde_json::from_slice(&data).map_err(|e| {
            format!("predictions are not the official CoQA layout [{{\"id\", \"turn_id\", \"answer\"}}]: {e}")
        })?;
        // Later entries win, as in the official script's dict. Newlines become spaces: the
        // official normalization splits on whitespace anyway, and `score` keeps the first line.
        Ok(preds
            .into_iter()
            .map(|p| (request_id(&p.id, p.turn_id), p.answer.replace(['\n', '\r'], " ")))
            .collect())
    }
}

llq_task_sdk::export_task!(CoQA);
