#!/usr/bin/env python3
"""The issue-13 study table from one `bench/gpu_speed_13.sh OUT peers` call: llq's rows
(bench-<row>.json, the captured decode step) beside hf_bench.py's peers (peers/hf_bench.json),
and the ratios the issue asks for, all from that one call.
Usage: bench/speed13_table.py results/h100/speed13/mma/study"""
import json
import os
import sys

R = sys.argv[1] if len(sys.argv) > 1 else "results/h100/speed13/mma/study"
BATCHES = [1, 4, 16, 64]
LLQ = [("bf16", "llq bf16 (no plugin)"), ("nf4", "llq NF4"), ("rtn4", "llq RTN-4 g128 (the GPTQ/AWQ format)")]


def load(name):
    with open(os.path.join(R, name)) as f:
        return json.load(f)


rows = []  # (label, GB stored/resident, prefill {n: ms}, decode {b: (ms, tok/s)})
for key, label in LLQ:
    path = os.path.join(R, f"bench-{key}.json")
    if not os.path.exists(path):
        continue
    d = load(f"bench-{key}.json")
    pre = {r["prompt_tokens"]: r["seconds"]["median"] * 1e3 for r in d["prefill"]}
    dec = {r["batch"]: (r["step_seconds"]["median"] * 1e3, r["tokens_per_s"]) for r in d["decode"] if r.get("path") == "cuda-graph"}
    rows.append((label + " graph", f"{d['device_memory_bytes'] / 1e9:.2f}", pre, dec))
for r in load("peers/hf_bench.json")["results"]:
    if "error" in r:
        rows.append((r["method"], "failed: " + r["error"][:90], {}, {}))
        continue
    pre = {x["prompt_tokens"]: x["ms"]["median"] for x in r.get("prefill", [])}
    dec = {x["batch"]: (x["ms_per_step"]["median"], x["tokens_per_s"]) for x in r["decode"]}
    rows.append((r["method"], f"{r['stored_bytes'] / 1e9:.2f}", pre, dec))

print("| method | stored/resident GB | prefill 128 ms | prefill 2048 ms | " + " | ".join(f"decode b={b} ms (tok/s)" for b in BATCHES) + " |")
print("| --- | --- | ---: | ---: |" + " ---: |" * len(BATCHES))
for label, gb, pre, dec in rows:
    cell = lambda b: f"{dec[b][0]:.2f} ({dec[b][1]:.0f})" if b in dec else "–"
    p = lambda n: f"{pre[n]:.1f}" if n in pre else "–"
    print(f"| {label} | {gb} | {p(128)} | {p(2048)} | " + " | ".join(cell(b) for b in BATCHES) + " |")

by = {label: dec for label, _, _, dec in rows}
nf4, bf16 = by.get("llq NF4 graph", {}), by.get("llq bf16 (no plugin) graph", {})
bnb = by.get("transformers+bnb nf4 (sdpa)", {})
comp = by.get("transformers bf16 (static cache + torch.compile)", {})
print()
for b in BATCHES:
    if b in nf4 and b in bnb:
        print(f"- b={b}: llq NF4 / transformers+bnb NF4 throughput {nf4[b][1] / bnb[b][1]:.1f}x; "
              f"llq NF4 vs llq bf16 {nf4[b][0]:.2f} vs {bf16.get(b, (float('nan'),))[0]:.2f} ms")
if 1 in nf4 and 1 in comp:
    print(f"- b=1: llq NF4 vs transformers bf16 static cache + torch.compile: {comp[1][0] / nf4[1][0]:.2f}x faster")
