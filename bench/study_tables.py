#!/usr/bin/env python3
"""Print the Markdown tables of docs/benchmarks.md ("llq on the H100") from one
`bench/gpu_llq.sh OUT study` call's JSON files.  Usage: bench/study_tables.py results/h100/study"""
import json
import os
import sys

R = sys.argv[1] if len(sys.argv) > 1 else "results/h100/study"


def load(name):
    with open(os.path.join(R, name)) as f:
        return json.load(f)


print("| method | device GB (peak) | prefill 128 ms | prefill 512 | prefill 2048 | decode b=1 ms (tok/s, % of roofline) | b=4 | b=16 | b=64 | logits vs CPU |")
print("| --- | --- | ---: | ---: | ---: | --- | --- | --- | --- | ---: |")
for p, label in [("bf16", "llq bf16 (no plugin)"), ("fp16", "llq fp16 plugin"), ("int8", "llq int8 plugin (weight-only on GPU)"),
                 ("nf4", "llq NF4"), ("fp4", "llq FP4")]:
    d = load(f"llq-{p}.json")
    pre = {r["prompt_tokens"]: r["seconds"]["median"] * 1e3 for r in d["prefill"]}
    dec = {r["batch"]: r for r in d["decode"]}
    cell = lambda b: f"{dec[b]['step_seconds']['median'] * 1e3:.2f} ({100 * dec[b]['roofline_fraction']:.0f}%)"
    one = dec[1]
    mem = f"{d['device_memory_bytes'] / 1e9:.2f} ({d['peak_device_memory_bytes'] / 1e9:.2f})"
    print(f"| {label} | {mem} | {pre[128]:.1f} | {pre[512]:.1f} | {pre[2048]:.1f} | {one['step_seconds']['median'] * 1e3:.2f} "
          f"({one['tokens_per_s']:.0f}, {100 * one['roofline_fraction']:.0f}%) | {cell(4)} | {cell(16)} | {cell(64)} | {d['logits_rel_err_vs_cpu']:.1e} |")
for r in load("peers-hf-bench.json")["results"]:
    pre = {x["prompt_tokens"]: x["ms"]["median"] for x in r["prefill"]}
    dec = {x["batch"]: x for x in r["decode"]}
    cell = lambda b: f"{dec[b]['ms_per_step']['median']:.2f} ({100 * dec[b]['roofline_fraction']:.0f}%)"
    one = dec[1]
    print(f"| {r['method']} | {r['footprint_bytes'] / 1e9:.2f} ({r['peak_memory_bytes'] / 1e9:.2f}) | {pre[128]:.1f} | {pre[512]:.1f} | {pre[2048]:.1f} | "
          f"{one['ms_per_step']['median']:.2f} ({one['tokens_per_s']:.0f}, {100 * one['roofline_fraction']:.0f}%) | {cell(4)} | {cell(16)} | {cell(64)} | |")
print()
print("| plugin | shape | matvec b=1 µs | b=4 | b=8 | dequantize | cuBLAS bf16 b=1 |")
print("| --- | --- | --- | --- | --- | --- | --- |")
for p in ["nf4", "fp4", "int8", "fp16"]:
    d = load(f"kernels-{p}.json")
    o = {(t["kernel"], t["rows"], t["cols"], t["batch"]): t for t in d["timings"]}
    for r, c in [(2048, 8192), (8192, 2048)]:
        f = lambda k, b: f"{o[(k, r, c, b)]['seconds']['median'] * 1e6:.1f} ({100 * o[(k, r, c, b)]['fraction_of_copy_bw']:.0f}%)"
        print(f"| {p} | {r}×{c} | {f('matvec', 1)} | {f('matvec', 4)} | {f('matvec', 8)} | {f('dequantize', 0)} | {f('cublas-bf16', 1)} |")
print()
print(f"copy bandwidth (kernels-nf4): {load('kernels-nf4.json')['copy_gb_per_s']:.0f} GB/s; all checks passed: "
      f"{all(load(f'kernels-{p}.json')['all_passed'] for p in ['nf4', 'fp4', 'int8', 'fp16'])}")
