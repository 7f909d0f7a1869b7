//! `llq-host plugins check`: a conformance suite for quantization plugins, for their authors
//! and for CI. It checks the promises of the plugin contract (sdk/src/abi.rs) that the host
//! relies on — sizes as declared, option validation, determinism, thread safety, hostile
//! inputs refused, calibration needs honoured, kernels matching dequantize — and reports what
//! it measured (quantization error per shape) beside the verdict.
//!
//! Each check runs in its own `llq-host` process by default, so a plugin that crashes or hangs
//! fails that check (with its signal or the timeout) and the others still run and report.

pub mod checks;
pub mod inputs;
pub mod report;

use anyhow::{bail, Context, Result};
use report::{CheckResult, Report, Status};
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How the checks run.
pub enum Isolation<'a> {
    /// In this process (a crash ends the whole check).
    InProcess,
    /// Each check in a child `exe plugins check … --in-process`, killed after `timeout`.
    Processes { exe: &'a Path, timeout: Duration },
}

/// The check names in `only` (all when empty), validated.
pub fn select(only: &[String]) -> Result<Vec<&'static str>> {
    let all: Vec<&'static str> = checks::CHECKS.iter().map(|(n, _)| *n).collect();
    if let Some(bad) = only.iter().find(|o| !all.contains(&o.as_str())) {
        bail!("--only: no check named `{bad}` (checks: {})", all.join(", "));
    }
    Ok(all.into_iter().filter(|n| only.is_empty() || only.iter().any(|o| o == n)).collect())
}

/// Check the plugin at `path` with `opts`.
pub fn check(path: &Path, opts: &[(String, String)], names: &[&str], how: &Isolation) -> Result<Report> {
    let plugin_sha256 = crate::util::digest::sha256_file(path)
        .with_context(|| format!("plugin {}: cannot be read", path.display()))?;
    let mut results: Vec<CheckResult> = vec![];
    for name in names {
        // Nothing else means anything when the plugin does not load with these options.
        if results.first().is_some_and(|r| r.check == "load" && r.status == Status::Fail) {
            results.push(CheckResult::skip(name, "the plugin does not load with these options"));
            continue;
        }
        results.push(match how {
            Isolation::InProcess => checks::run(name, path, opts),
            Isolation::Processes { exe, timeout } => in_child(exe, name, path, opts, *timeout),
        });
    }
    Ok(Report {
        format: report::FORMAT.into(),
        llq_version: env!("CARGO_PKG_VERSION").into(),
        plugin: path.display().to_string(),
        plugin_sha256,
        options: opts.to_vec(),
        isolated: matches!(how, Isolation::Processes { .. }),
        passed: results.iter().all(|r| r.status != Status::Fail),
        checks: results,
    })
}

/// Run one check in a child process; its death or a timeout is that check's failure.
fn in_child(
    exe: &Path,
    name: &str,
    path: &Path,
    opts: &[(String, String)],
    timeout: Duration,
) -> CheckResult {
    let fail = |why: String| CheckResult::new(name, Status::Fail, why, serde_json::Value::Null);
    let mut cmd = Command::new(exe);
    cmd.args(["plugins", "check"]).arg(path).args(["--only", name, "--in-process", "--json", "-"]);
    for (k, v) in opts {
        cmd.arg("--opt").arg(format!("{k}={v}"));
    }
    let mut child = match cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn() {
        Ok(c) => c,
        Err(e) => return fail(format!("cannot start {}: {e}", exe.display())),
    };
    // Drain both pipes while waiting, so a chatty check cannot block on a full pipe.
    fn drain<R: Read + Send + 'static>(p: Option<R>) -> std::thread::JoinHandle<String> {
        std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut p) = p {
                let _ = p.read_to_string(&mut s);
            }
            s
        })
    }
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    let t0 = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Ok(s),
            Ok(None) if t0.elapsed() > timeout => {
                let _ = child.kill();
                let _ = child.wait();
                break Err(format!("did not finish in {} s (killed)", timeout.as_secs()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => break Err(format!("cannot wait for the check process: {e}")),
        }
    };
    let (stdout, stderr) = (out.join().unwrap_or_default(), err.join().unwrap_or_default());
    let status = match status {
        Ok(s) => s,
        Err(why) => return fail(why),
    };
    let parsed = serde_json::from_str::<Report>(&stdout).ok().and_then(|r| r.checks.into_iter().next());
    match parsed {
        Some(r) => r,
        None => {
            let tail: Vec<&str> = stderr.lines().rev().take(6).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            fail(format!(
                "the check process died ({status}){}{}",
                if tail.is_empty() { "" } else { ": " },
                tail.join(" | ")
            ))
        }
    }
}
