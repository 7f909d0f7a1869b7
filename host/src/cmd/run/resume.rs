//! `run --resume`: which samples of an earlier session count, without losing any. The
//! earlier records are re-scored by the current task (its metrics, not the stored ones, go
//! into the aggregate); a sample is redone only when it failed, its request changed, or its
//! record cannot be scored. Nothing is deleted: lines that are not records (a line torn by a
//! kill, bytes that are not UTF-8) move to `samples.jsonl.rejected` before the file is
//! rewritten (temporary file and rename) without them; records outside the current
//! `--limit`, and failed ones that a retry supersedes, stay in `samples.jsonl` (readers take
//! the last record of an id).

use crate::results::schema::EarlierSessions;
use crate::results::{SampleFile, SampleRecord};
use crate::task::{LoglikelihoodResult, Request, RequestKind, Response, RollingResult, TaskRuntime};
use crate::util::fs::write_atomic;
use anyhow::{Context, Result};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Where the lines of `samples` that are not records are kept.
pub fn rejected_path(samples: &Path) -> PathBuf {
    let mut p = samples.as_os_str().to_owned();
    p.push(".rejected");
    PathBuf::from(p)
}

/// The earlier sessions' samples that count for `requests`, re-scored, by id.
pub struct Resumed {
    pub done: HashMap<String, SampleRecord>,
    pub earlier: EarlierSessions,
}

/// Read `samples` (a run's `samples.jsonl`), set its bad lines aside, and keep the records
/// that answer one of `requests` as it is now (`hashes`: request id → prompt sha256).
pub fn resume(
    samples: &Path,
    requests: &[Request],
    hashes: &HashMap<&str, String>,
    task: &mut TaskRuntime,
    task_opts: &[(String, String)],
) -> Result<Resumed> {
    let file = SampleFile::read(samples)?;
    if !file.rejected.is_empty() || !file.ends_cleanly {
        set_aside(samples, &file)?;
    }
    let mut latest: HashMap<String, SampleRecord> = HashMap::new();
    for r in file.records {
        latest.insert(r.id.clone(), r);
    }
    let (mut done, mut changed, mut rescored_differently, mut unscorable) = (HashMap::new(), 0, 0, 0);
    for req in requests {
        let Some(mut rec) = latest.remove(&req.id) else { continue };
        if rec.error.is_some() {
            continue;
        }
        if hashes.get(req.id.as_str()) != Some(&rec.prompt_sha256) {
            changed += 1;
            continue;
        }
        let Some(resp) = response(req, &rec) else {
            unscorable += 1;
            continue;
        };
        match task.score(req, &resp, task_opts) {
            Ok(ms) => {
                let now: std::collections::BTreeMap<String, f64> =
                    ms.into_iter().map(|m| (m.name, m.value)).collect();
                if now != rec.metrics {
                    rescored_differently += 1;
                }
                rec.metrics = now;
                done.insert(req.id.clone(), rec);
            }
            Err(e) => {
                tracing::warn!("resume: sample {} is redone: {e:#}", req.id);
                unscorable += 1;
            }
        }
    }
    if changed > 0 {
        tracing::warn!("resume: {changed} stored samples were for a different request text; they are redone");
    }
    if unscorable > 0 {
        tracing::warn!("resume: {unscorable} stored samples could not be re-scored; they are redone");
    }
    if rescored_differently > 0 {
        tracing::warn!(
            "resume: {rescored_differently} stored samples score differently under the current task; \
             results.json uses the new scores (samples.jsonl keeps the stored ones)"
        );
    }
    let earlier = EarlierSessions {
        samples: done.len(),
        sample_seconds: done.values().map(|r| r.seconds).sum(),
        new_tokens: done.values().map(|r| r.new_tokens).sum(),
        rescored_differently,
    };
    Ok(Resumed { done, earlier })
}

/// Append the lines that are not records to the `.rejected` file, then rewrite `samples`
/// with the records' lines only (temporary file and rename).
fn set_aside(samples: &Path, file: &SampleFile) -> Result<()> {
    let rej = rejected_path(samples);
    if !file.rejected.is_empty() {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&rej)
            .with_context(|| format!("cannot open {}", rej.display()))?;
        for (_, line) in &file.rejected {
            f.write_all(line)
                .and_then(|_| f.write_all(b"\n"))
                .with_context(|| format!("cannot append to {}", rej.display()))?;
        }
        f.sync_all().with_context(|| format!("cannot write {}", rej.display()))?;
        let lines: Vec<String> = file.rejected.iter().map(|(n, _)| n.to_string()).collect();
        tracing::warn!(
            "{}: line(s) {} are not sample records (cut short by an interruption, or not UTF-8); \
             they are kept in {} and those samples run again",
            samples.display(),
            lines.join(", "),
            rej.display()
        );
    }
    let mut kept = Vec::new();
    for l in &file.record_lines {
        kept.extend_from_slice(l);
        kept.push(b'\n');
    }
    write_atomic(samples, &kept).with_context(|| format!("cannot rewrite {}", samples.display()))
}

/// The response a stored record holds for `req`, if it holds one of the right kind.
fn response(req: &Request, rec: &SampleRecord) -> Option<Response> {
    Some(match &req.kind {
        RequestKind::Generate(_) => Response::Generated(rec.prediction.clone()?),
        RequestKind::Loglikelihood(_) => {
            let l = rec.loglikelihood.as_ref()?;
            Response::Loglikelihood(LoglikelihoodResult {
                logprob: l.logprob,
                is_greedy: l.is_greedy,
                tokens: l.tokens,
            })
        }
        RequestKind::LoglikelihoodRolling(text) => Response::Rolling(RollingResult::from_tokens(
            text,
            rec.token_logprobs.clone()?,
            rec.token_kl.clone().unwrap_or_default(),
            rec.token_top1_agree.clone().unwrap_or_default(),
        )),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn record(id: &str, pred: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "id": id, "prompt_sha256": "00", "prediction": pred, "metrics": {"f1": 0.5}, "seconds": 0.1
        }))
        .unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(128),
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        /// Whatever a killed run or a disk left in samples.jsonl (records, torn lines, bytes
        /// that are not UTF-8, a last line without its newline), setting the bad lines aside
        /// keeps every record, in order, byte for byte; moves every other non-blank line to
        /// .rejected, in order; and leaves a file that reads back clean.
        #[test]
        fn setting_bad_lines_aside_loses_nothing(
            lines in proptest::collection::vec(
                prop_oneof![
                    ("[a-z#0-9]{1,8}", ".{0,20}").prop_map(|(i, p)| (true, record(&i, &p))),
                    proptest::collection::vec(any::<u8>().prop_filter("no newline", |b| *b != b'\n'), 1..40)
                        .prop_map(|b| (false, b)),
                ],
                0..20,
            ),
            torn in any::<bool>(),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("samples.jsonl");
            let mut bytes = vec![];
            for (_, l) in &lines {
                bytes.extend_from_slice(l);
                bytes.push(b'\n');
            }
            if torn && !bytes.is_empty() {
                bytes.pop();
            }
            std::fs::write(&path, &bytes).unwrap();
            let before = SampleFile::read(&path).unwrap();
            set_aside(&path, &before).unwrap();
            let after = SampleFile::read(&path).unwrap();
            prop_assert!(after.rejected.is_empty() && after.ends_cleanly);
            prop_assert_eq!(&after.record_lines, &before.record_lines);
            prop_assert_eq!(after.records.len(), before.records.len());
            // Every record we wrote is there (a garbage line could parse as a record only by
            // chance, and then it is kept too).
            let written: Vec<&Vec<u8>> = lines.iter().filter(|(r, _)| *r).map(|(_, l)| l).collect();
            for w in &written {
                prop_assert!(after.record_lines.contains(w));
            }
            let rejected = std::fs::read(rejected_path(&path)).unwrap_or_default();
            let want: Vec<u8> = before.rejected.iter().flat_map(|(_, l)| l.iter().copied().chain([b'\n'])).collect();
            prop_assert_eq!(rejected, want);
            // Every input line is a record, a rejected line, or blank.
            let blank = lines.iter().filter(|(_, l)| l.iter().all(u8::is_ascii_whitespace)).count();
            prop_assert_eq!(before.records.len() + before.rejected.len() + blank, lines.len());
        }
    }
}
