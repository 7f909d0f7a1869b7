//! A sweep's folder and running its cells. Layout under the output folder:
//! - `<cell>/`: a finished cell — the run's `results.json` and `samples.jsonl` (a bench
//!   cell's `bench.json`), its log
//!   (`run.log`), and `cell.json` (address, inputs, command, seconds, provenance: host binary
//!   hash and build, machine, GPUs and driver). It appears at once,
//!   by renaming the folder the run wrote (`.<cell>.tmp-<pid>`), so a killed sweep leaves
//!   no half cell: only a temporary folder, which the next run of that cell replaces;
//! - `<cell>.failed.json`: the last failure of a cell (address, exit status, end of its log);
//!   a failed cell does not stop the others and is tried again by the next `run`.
//!
//! A cell is done when `<cell>/cell.json` holds its current address; a folder with another
//! address is stale (an input changed) and is replaced when the cell runs again.

use super::plan::{Cell, Kind};
use crate::util::fs::write_json;
use anyhow::{bail, Context, Result};
use serde_json::json;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Condvar, Mutex};
use std::time::Instant;

#[derive(Debug, Clone, PartialEq)]
pub enum State {
    Done,
    /// Done for other inputs.
    Stale,
    /// The last attempt failed (its message).
    Failed(String),
    Pending,
}

impl State {
    pub fn label(&self) -> &'static str {
        match self {
            State::Done => "done",
            State::Stale => "stale",
            State::Failed(_) => "failed",
            State::Pending => "pending",
        }
    }
    pub fn is_done(&self) -> bool {
        *self == State::Done
    }
}

fn read_json(p: &Path) -> Option<serde_json::Value> {
    serde_json::from_slice(&std::fs::read(p).ok()?).ok()
}

fn failed_path(out: &Path, cell: &Cell) -> PathBuf {
    out.join(format!("{}.failed.json", cell.id))
}

/// Where `cell` stands in `out`.
pub fn state(out: &Path, cell: &Cell) -> State {
    let ours = |v: &serde_json::Value| v["address"] == cell.address.as_str();
    let dir = out.join(&cell.id);
    let failed = read_json(&failed_path(out, cell))
        .filter(|f| ours(f))
        .map(|f| State::Failed(f["error"].as_str().unwrap_or("").to_string()));
    match read_json(&dir.join("cell.json")) {
        Some(c) if ours(&c) && dir.join(cell.kind.output()).is_file() => State::Done,
        _ if failed.is_some() => failed.unwrap_or(State::Pending),
        Some(_) => State::Stale,
        None => State::Pending,
    }
}

/// Done, and (for a baseline cell) with the distributions its dependents read: a committed
/// sweep keeps results but not the stored log-probs (hundreds of MB), so a pending KL cell
/// makes its baseline run again.
pub fn ready(out: &Path, cell: &Cell) -> bool {
    state(out, cell).is_done()
        && (!cell.saves_logprobs || crate::results::logprobs::stored_in(&out.join(&cell.id)))
}

/// `todo` plus the baseline cells its KL cells need that are not [`ready`] (a shard computes
/// the baselines its cells need even when they belong to another shard: shards stay
/// independent; whichever finishes first is kept), baselines first.
pub fn with_needs<'a>(out: &Path, all: &'a [Cell], todo: &[&'a Cell]) -> Vec<&'a Cell> {
    let mut v: Vec<&Cell> = todo.to_vec();
    for c in todo {
        if let Some(b) = all.iter().find(|b| Some(&b.id) == c.needs.as_ref()) {
            if !ready(out, b) && !v.iter().any(|x| x.id == b.id) {
                v.push(b);
            }
        }
    }
    v.sort_by_key(|c| c.needs.is_some());
    v
}

/// Where and with what a sweep's cells run, recorded in every `cell.json`: the host binary's
/// SHA-256 and build, the machine, and the GPUs with their driver when `nvidia-smi` answers.
pub fn provenance(exe: &Path) -> serde_json::Value {
    let gpus = Command::new("nvidia-smi")
        .args(["--query-gpu=index,name,driver_version,memory.total", "--format=csv,noheader"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().map(str::to_string).collect::<Vec<_>>());
    json!({
        "host_sha256": crate::util::digest::sha256_file(exe).ok(),
        "llq": crate::results::schema::Build::this(),
        "hostname": std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|h| h.trim().to_string()),
        "cpus": std::thread::available_parallelism().map(|n| n.get()).ok(),
        "gpus": gpus,
    })
}

/// Run one cell with the `llq-host` at `exe`, seeing only GPU `gpu` when given
/// (`CUDA_VISIBLE_DEVICES`); its files appear in `out/<id>/` only if it succeeds. Returns the
/// seconds it took.
fn run_cell(exe: &Path, out: &Path, cell: &Cell, gpu: Option<&str>, prov: &serde_json::Value) -> Result<f64> {
    if ready(out, cell) {
        // Another shard finished it meanwhile.
        return Ok(0.0);
    }
    let tmp = out.join(format!(".{}.tmp-{}", cell.id, std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).with_context(|| format!("cannot clear {}", tmp.display()))?;
    }
    std::fs::create_dir_all(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let log = tmp.join("run.log");
    let t0 = Instant::now();
    let mut cmd = Command::new(exe);
    if let Some(g) = gpu {
        cmd.env("CUDA_VISIBLE_DEVICES", g);
    }
    let out_arg = match cell.kind {
        Kind::Run => tmp.clone(),
        Kind::Bench => tmp.join(cell.kind.output()),
    };
    cmd.args(&cell.args);
    if let Some(b) = &cell.needs {
        cmd.arg("--kl-baseline-from").arg(out.join(b));
    }
    let status = cmd
        .arg("--out")
        .arg(&out_arg)
        .stdout(std::fs::File::create(tmp.join("stdout.txt"))?)
        .stderr(std::fs::File::create(&log)?)
        .status()
        .with_context(|| format!("cannot start {}", exe.display()))?;
    let seconds = t0.elapsed().as_secs_f64();
    if !status.success() {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(8).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        let _ = std::fs::remove_dir_all(&tmp);
        bail!("{status}: {}", tail.join("\n"));
    }
    write_json(
        &tmp.join("cell.json"),
        &json!({
            "id": cell.id,
            "address": cell.address,
            "inputs": cell.inputs,
            "args": cell.args,
            "cuda_visible_devices": gpu,
            "provenance": prov,
            "seconds": seconds,
        }),
    )?;
    let dir = out.join(&cell.id);
    if ready(out, cell) {
        // Another shard finished the same cell first: its folder stays (a dependent may be
        // reading it), ours goes.
        let _ = std::fs::remove_dir_all(&tmp);
        return Ok(seconds);
    }
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("cannot replace stale {}", dir.display()))?;
    }
    std::fs::rename(&tmp, &dir)
        .with_context(|| format!("cannot move {} to {}", tmp.display(), dir.display()))?;
    Ok(seconds)
}

/// A KL cell can run once its baseline's distributions are there (its baseline, when among
/// this run's cells, has finished before it is taken).
fn baseline_stored(out: &Path, cell: &Cell) -> Result<()> {
    let Some(b) = &cell.needs else { return Ok(()) };
    let base = out.join(b);
    if !crate::results::logprobs::stored_in(&base) {
        bail!(
            "its baseline cell {b} is not done (see {}.failed.json): KL has nothing to compare with",
            base.display()
        );
    }
    Ok(())
}

/// The cells not yet taken, and those of this run that finished (id → succeeded).
struct Queue<'a> {
    left: Vec<&'a Cell>,
    finished: HashMap<String, bool>,
}

impl<'a> Queue<'a> {
    /// The first cell that can start now: one whose baseline is not among this run's cells or
    /// has finished. Workers never wait while such a cell is left.
    fn take(&mut self, ours: &[&Cell]) -> Option<&'a Cell> {
        let k = self.left.iter().position(|c| match &c.needs {
            Some(b) => self.finished.contains_key(b) || !ours.iter().any(|o| &o.id == b),
            None => true,
        })?;
        Some(self.left.remove(k))
    }
}

/// What happened to each cell `run` was given.
pub struct Outcome<'a> {
    pub cell: &'a Cell,
    pub result: Result<f64>,
}

/// How many cells run at once, and on which GPUs.
pub enum Workers {
    /// This many processes at once (CPU cells, or one GPU shared).
    Processes(usize),
    /// One worker per listed GPU, each cell's process seeing only that GPU.
    Gpus(Vec<String>),
}

/// Run `cells` (those not done) on `workers`; every outcome is recorded (`<cell>.failed.json`
/// for failures, removed on success) and reported through `progress`.
pub fn run<'a>(
    exe: &Path,
    out: &Path,
    cells: &[&'a Cell],
    workers: &Workers,
    progress: &(dyn Fn(&Outcome) + Sync),
) -> Result<Vec<Outcome<'a>>> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create sweep folder {}", out.display()))?;
    let prov = provenance(exe);
    let prov = &prov;
    let queue = (Mutex::new(Queue { left: cells.to_vec(), finished: HashMap::new() }), Condvar::new());
    let outcomes = Mutex::new(vec![]);
    std::thread::scope(|s| {
        let gpus: Vec<Option<&str>> = match workers {
            Workers::Processes(n) => vec![None; (*n).clamp(1, cells.len().max(1))],
            Workers::Gpus(g) => g.iter().map(|g| Some(g.as_str())).collect(),
        };
        for gpu in gpus {
            let (queue, outcomes) = (&queue, &outcomes);
            s.spawn(move || loop {
                let (lock, cv) = queue;
                let cell = {
                    let mut q = lock.lock().unwrap_or_else(|p| p.into_inner());
                    loop {
                        if q.left.is_empty() {
                            break None;
                        }
                        if let Some(c) = q.take(cells) {
                            break Some(c);
                        }
                        // Only cells waiting for a baseline that is running: wait for it.
                        q = cv.wait(q).unwrap_or_else(|p| p.into_inner());
                    }
                };
                let Some(cell) = cell else { break };
                let result = baseline_stored(out, cell).and_then(|_| run_cell(exe, out, cell, gpu, prov));
                let record = match &result {
                    Ok(_) => std::fs::remove_file(failed_path(out, cell)).or_else(|e| {
                        if e.kind() == std::io::ErrorKind::NotFound {
                            Ok(())
                        } else {
                            Err(e.into())
                        }
                    }),
                    Err(e) => write_json(
                        &failed_path(out, cell),
                        &json!({"id": cell.id, "address": cell.address, "args": cell.args, "error": format!("{e:#}")}),
                    ),
                };
                let result = match (result, record) {
                    (Ok(_), Err(e)) => Err(e.context(format!("cell {} ran but its record could not be updated", cell.id))),
                    (r, _) => r,
                };
                lock.lock().unwrap_or_else(|p| p.into_inner()).finished.insert(cell.id.clone(), result.is_ok());
                cv.notify_all();
                let o = Outcome { cell, result };
                progress(&o);
                outcomes.lock().unwrap_or_else(|p| p.into_inner()).push(o);
            });
        }
    });
    let mut v = outcomes.into_inner().unwrap_or_else(|p| p.into_inner());
    v.sort_by(|a, b| a.cell.id.cmp(&b.cell.id));
    Ok(v)
}
