//! Job-array scripts that run a sweep as shards on an existing cluster engine: one shard per
//! array task, `llq-host sweep run SPEC --out OUT --shard $INDEX/N`, all writing into one shared
//! folder (cells are renamed into place atomically, shards never overlap), then `sweep report`
//! anywhere merges them. Ray has no job arrays and no Rust API: its launcher is a small Python
//! script with one Ray task per shard (`num_gpus=1` with `--gpu`, so Ray sets
//! `CUDA_VISIBLE_DEVICES`), each running the same command.

use std::path::Path;

/// What a script runs.
pub struct Job<'a> {
    pub name: &'a str,
    /// The `llq-host` to run (absolute).
    pub exe: &'a Path,
    pub spec: &'a Path,
    pub out: &'a Path,
    pub shards: usize,
    /// One GPU per shard.
    pub gpu: bool,
    /// Container image (Kubernetes).
    pub image: &'a str,
}

fn abs(p: &Path) -> String {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()).display().to_string()
}

/// Single quotes for a POSIX shell.
fn sh(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn command(j: &Job, index: &str) -> String {
    format!(
        "{} sweep run {} --out {} --shard {index}/{}",
        sh(&abs(j.exe)),
        sh(&abs(j.spec)),
        sh(&abs(j.out)),
        j.shards
    )
}

/// An `sbatch --array` script; `SLURM_ARRAY_TASK_ID` is the shard. Logs go to the submission
/// folder (Slurm opens them before the script can create anything).
pub fn slurm(j: &Job) -> String {
    let gres = if j.gpu { "#SBATCH --gres=gpu:1\n" } else { "" };
    format!(
        "#!/bin/bash\n# llq sweep `{name}` as {n} shards: sbatch this file; then `llq-host sweep report`.\n#SBATCH --job-name=llq-{name}\n#SBATCH --array=0-{last}\n{gres}#SBATCH --output=slurm-llq-{name}-%A_%a.log\nset -eu\nmkdir -p {out}\nexec {cmd}\n",
        name = j.name,
        n = j.shards,
        last = j.shards - 1,
        out = sh(&abs(j.out)),
        cmd = command(j, "${SLURM_ARRAY_TASK_ID}"),
    )
}

/// A Kubernetes Indexed Job; `JOB_COMPLETION_INDEX` is the shard. The spec, its files and the
/// output folder must be at the same paths inside the image or on mounted volumes.
pub fn k8s(j: &Job) -> String {
    let limits = if j.gpu {
        "\n          resources:\n            limits:\n              nvidia.com/gpu: 1"
    } else {
        ""
    };
    let cmd = command(j, "$JOB_COMPLETION_INDEX").replace('"', "\\\"");
    format!(
        "# llq sweep `{name}` as {n} shards: kubectl apply -f this file; then `llq-host sweep report`.\napiVersion: batch/v1\nkind: Job\nmetadata:\n  name: llq-{name}\nspec:\n  completions: {n}\n  parallelism: {n}\n  completionMode: Indexed\n  backoffLimit: 0\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n        - name: llq\n          image: {image}\n          command: [\"sh\", \"-c\", \"{cmd}\"]{limits}\n",
        name = j.name.to_lowercase().replace(['_', '.'], "-"),
        n = j.shards,
        image = j.image,
    )
}

/// Python string literal (JSON's escaping is valid Python for these strings).
fn py(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// A Ray launcher: `python3 this.py` starts a local cluster, `python3 this.py --address auto`
/// (or `ray job submit -- python3 this.py --address auto`) uses a running one. One task per
/// shard; the script exits non-zero when a shard failed, after all of them ran.
pub fn ray(j: &Job) -> String {
    format!(
        r#"#!/usr/bin/env python3
# llq sweep `{name}` as {n} shards on Ray: one task per shard, each running
#   llq-host sweep run SPEC --out OUT --shard i/{n}
# Then `llq-host sweep report`. The spec, its files and OUT must be on every node at these paths.
import argparse, subprocess, sys

import ray

LLQ = {exe}
SPEC = {spec}
OUT = {out}
SHARDS = {n}
GPUS_PER_SHARD = {gpus}


@ray.remote(num_cpus=1, num_gpus=GPUS_PER_SHARD)
def shard(i):
    cmd = [LLQ, "sweep", "run", SPEC, "--out", OUT, "--shard", f"{{i}}/{{SHARDS}}"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    return i, r.returncode, (r.stdout + r.stderr)[-4000:]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--address", help="a running cluster (e.g. auto); default: start a local one")
    ap.add_argument("--num-cpus", type=int, help="CPUs of the local cluster")
    a = ap.parse_args()
    if a.address:
        ray.init(address=a.address)
    else:
        ray.init(num_cpus=a.num_cpus, include_dashboard=False)
    failed = 0
    for i, code, log in ray.get([shard.remote(i) for i in range(SHARDS)]):
        print(f"== shard {{i}}/{{SHARDS}}: exit {{code}}")
        print(log)
        failed += code != 0
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
"#,
        name = j.name,
        n = j.shards,
        exe = py(&abs(j.exe)),
        spec = py(&abs(j.spec)),
        out = py(&abs(j.out)),
        gpus = if j.gpu { 1 } else { 0 },
    )
}
