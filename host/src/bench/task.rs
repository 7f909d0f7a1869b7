//! `llq-host task-bench`: the cost of a generation task's host↔guest path (compile,
//! `requests`, one `score` crossing per sample, `aggregate`) on synthetic CoQA.

use crate::task::{score_all, Limits, Response, TaskRuntime};
use crate::util::synth::XorShift;
use anyhow::{bail, Result};
use serde::Serialize;
use std::path::Path;
use std::time::Instant;

/// A synthetic CoQA dev file in the official layout: `stories` stories of `turns` turns,
/// each turn with 4 reference answers drawn from a small vocabulary (so F1 has overlaps to
/// count), plus one prediction per turn. Deterministic for a given seed.
pub fn synthetic_coqa(stories: usize, turns: usize, seed: u64) -> (Vec<u8>, Vec<(String, String)>) {
    const WORDS: &[&str] = &[
        "the", "cat", "white", "barn", "farmer", "paint", "orange", "bucket", "water", "sisters", "mother",
        "a", "laughing", "face", "an", "happy", "old", "color", "lived", "with", "her", "tiger", "stripes",
        "no", "yes", "five", "big", "into", "dropped", "licked",
    ];
    let mut rng = XorShift::new(seed);
    let mut next = move |n: usize| (rng.next_u64() >> 33) as usize % n;
    let mut phrase =
        |len: usize| (0..1 + next(len)).map(|_| WORDS[next(WORDS.len())]).collect::<Vec<_>>().join(" ");
    let mut data = vec![];
    let mut preds = vec![];
    for st in 0..stories {
        let id = format!("syn{st:05}");
        let turn = |k: usize, text: String| serde_json::json!({"turn_id": k + 1, "input_text": text});
        let questions: Vec<_> = (0..turns).map(|k| turn(k, format!("{}?", phrase(8)))).collect();
        let answers: Vec<_> = (0..turns).map(|k| turn(k, phrase(5))).collect();
        let extra: serde_json::Map<String, serde_json::Value> = (0..3)
            .map(|a| {
                (a.to_string(), serde_json::Value::Array((0..turns).map(|k| turn(k, phrase(5))).collect()))
            })
            .collect();
        for k in 0..turns {
            preds.push((format!("{id}#{}", k + 1), phrase(6)));
        }
        let sources = ["mctest", "gutenberg", "race", "cnn", "wikipedia", "reddit", "science"];
        data.push(serde_json::json!({"id": id, "source": sources[st % sources.len()], "story": phrase(300),
            "questions": questions, "answers": answers, "additional_answers": extra}));
    }
    (serde_json::to_vec(&serde_json::json!({"version": "1.0", "data": data})).unwrap_or_default(), preds)
}

#[derive(Debug, Serialize)]
pub struct TaskBenchReport {
    pub task: String,
    pub samples: usize,
    pub data_bytes: usize,
    pub compile_s: f64,
    pub requests_s: f64,
    pub score_s: f64,
    pub score_us_per_sample: f64,
    pub aggregate_s: f64,
    pub f1: f64,
}

/// Time a generation task's host↔guest path on synthetic CoQA: compile, `requests`, one
/// `score` call per sample (each a full crossing with its own fuel/deadline reset), `aggregate`.
pub fn task_bench(task: &Path, stories: usize, turns: usize, limits: Limits) -> Result<TaskBenchReport> {
    let (data, preds) = synthetic_coqa(stories, turns, 7);
    let t = Instant::now();
    let mut rt = TaskRuntime::load(task, limits)?;
    let info = rt.describe()?;
    let compile_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let reqs = rt.requests(&data, &[])?;
    let requests_s = t.elapsed().as_secs_f64();
    let preds: std::collections::HashMap<String, String> = preds.into_iter().collect();
    let t = Instant::now();
    let out = score_all(&mut rt, &reqs, |r| preds.get(&r.id).map(|p| Response::Generated(p.clone())), &[]);
    let score_s = t.elapsed().as_secs_f64();
    if let Some((id, e)) = out.failed.first() {
        bail!("scoring failed on {id}: {e}");
    }
    let t = Instant::now();
    let report = rt.aggregate(&out.samples, &[])?;
    let aggregate_s = t.elapsed().as_secs_f64();
    let f1 = report.metrics.iter().find(|m| m.name == "f1").map_or(f64::NAN, |m| m.value);
    Ok(TaskBenchReport {
        task: format!("{} {}", info.name, info.version),
        samples: reqs.len(),
        data_bytes: data.len(),
        compile_s,
        requests_s,
        score_s,
        score_us_per_sample: score_s / reqs.len().max(1) as f64 * 1e6,
        aggregate_s,
        f1,
    })
}
