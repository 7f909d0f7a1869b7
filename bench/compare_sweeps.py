#!/usr/bin/env python3
"""Compare two runs of one sweep spec cell for cell (issue 16: one GPU vs all GPUs of a host).

Usage: bench/compare_sweeps.py A B [--util-a U --util-b U] > comparison.md

- run cells (results.json + samples.jsonl): every aggregate metric and every sample's
  prediction, log-likelihood, per-token log-probs and KL must be identical (the same cells on
  the same kind of GPU, one process each: any difference is a finding, and is listed);
- bench cells (bench.json): prefill and decode medians of B relative to A, with each side's
  [min, max] over its repeats, so "within noise" can be read off: a ratio is within noise when
  the two sides' [min, max] ranges overlap;
- the wall time and cells per hour of each run (from `sweep-run-*.json` that
  bench/gpu_scaling.sh writes beside each sweep), the cell seconds summed, and each GPU's mean
  utilisation while the run lasted (nvidia-smi samples, --util-a/--util-b).
"""
import argparse
import csv
import json
import os
import sys


def load(path):
    with open(path) as f:
        return json.load(f)


def samples(cell):
    out = {}
    p = os.path.join(cell, "samples.jsonl")
    if not os.path.exists(p):
        return out
    with open(p) as f:
        for line in f:
            r = json.loads(line)
            r.pop("seconds", None)  # model time varies; everything else must not
            out[r["id"]] = r
    return out


def run_cells(root):
    return sorted(
        d for d in os.listdir(root)
        if os.path.isdir(os.path.join(root, d)) and not d.startswith(".") and d != "figures"
        and os.path.exists(os.path.join(root, d, "cell.json"))
    )


def util(path):
    """Mean utilisation and peak memory per GPU index from nvidia-smi csv samples."""
    if not path or not os.path.exists(path):
        return {}
    per = {}
    with open(path) as f:
        for row in csv.reader(f):
            if len(row) < 4:
                continue
            try:
                i, u, m = int(row[1]), float(row[2]), float(row[3])
            except ValueError:
                continue
            per.setdefault(i, []).append((u, m))
    return {i: (sum(u for u, _ in v) / len(v), max(m for _, m in v), len(v)) for i, v in per.items()}


def overlap(a, b):
    return a["min"] <= b["max"] and b["min"] <= a["max"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--util-a")
    ap.add_argument("--util-b")
    args = ap.parse_args()
    out = []
    cells_a, cells_b = run_cells(args.a), run_cells(args.b)
    if cells_a != cells_b:
        out.append(f"**Cell sets differ**: only in A {sorted(set(cells_a) - set(cells_b))}, only in B {sorted(set(cells_b) - set(cells_a))}\n")
    runs = []
    for name, root, u in (("A", args.a, args.util_a), ("B", args.b, args.util_b)):
        meta_p = os.path.join(root, "..", f"sweep-run-{os.path.basename(root.rstrip('/'))}.json")
        meta = load(meta_p) if os.path.exists(meta_p) else {}
        secs = sum(load(os.path.join(root, c, "cell.json"))["seconds"] for c in run_cells(root))
        gpus = {load(os.path.join(root, c, "cell.json")).get("cuda_visible_devices") for c in run_cells(root)}
        hosts = {(load(os.path.join(root, c, "cell.json")).get("provenance") or {}).get("hostname") for c in run_cells(root)}
        runs.append((name, root, meta, secs, gpus, hosts, util(u)))
    out.append("| run | GPUs | cells | wall s | cells/hour | cell seconds summed | host | mean GPU utilisation (peak MiB) |")
    out.append("|---|---|---|---|---|---|---|---|")
    for name, root, meta, secs, gpus, hosts, ut in runs:
        n = len(run_cells(root))
        wall = meta.get("wall_s")
        cph = f"{3600 * n / wall:.0f}" if wall else "?"
        us = ", ".join(f"GPU {i}: {m:.0f}% ({p:.0f})" for i, (m, p, _) in sorted(ut.items())) or "?"
        out.append(
            f"| {name} `{os.path.basename(root.rstrip('/'))}` | {','.join(sorted(g or '-' for g in gpus))} | {n} | "
            f"{wall:.0f} | {cph} | {secs:.0f} | {', '.join(sorted(h or '?' for h in hosts))} | {us} |"
            if wall else f"| {name} | {gpus} | {n} | ? | ? | {secs:.0f} | {hosts} | {us} |"
        )
    out.append("")
    identical, differ = 0, []
    speed = []
    for c in sorted(set(cells_a) & set(cells_b)):
        ca, cb = os.path.join(args.a, c), os.path.join(args.b, c)
        if os.path.exists(os.path.join(ca, "results.json")):
            ra, rb = load(os.path.join(ca, "results.json")), load(os.path.join(cb, "results.json"))
            ma = {m["name"]: (m["value"], m["stderr"], m["count"]) for m in ra["metrics"]}
            mb = {m["name"]: (m["value"], m["stderr"], m["count"]) for m in rb["metrics"]}
            sa, sb = samples(ca), samples(cb)
            bad = [k for k in ma if ma[k] != mb.get(k)] + [f"sample {k}" for k in sa if sa[k] != sb.get(k)]
            if len(sa) != len(sb):
                bad.append(f"{len(sa)} vs {len(sb)} samples")
            if ra["size"] != rb["size"]:
                bad.append("size")
            if bad:
                differ.append((c, bad[:5]))
            else:
                identical += 1
        elif os.path.exists(os.path.join(ca, "bench.json")):
            ba, bb = load(os.path.join(ca, "bench.json")), load(os.path.join(cb, "bench.json"))
            if ba["size"] != bb["size"]:
                differ.append((c, ["size"]))
            for pa, pb in zip(ba["prefill"], bb["prefill"]):
                speed.append((c, f"prefill {pa['prompt_tokens']}", pa["seconds"], pb["seconds"]))
            for da, db in zip(ba["decode"], bb["decode"]):
                speed.append((c, f"decode b{da['batch']}", da["step_seconds"], db["step_seconds"]))
    n_run = identical + len([d for d in differ if os.path.exists(os.path.join(args.a, d[0], "results.json"))])
    out.append(f"Accuracy cells: {identical} of {n_run} identical in every metric and every sample "
               "(predictions, log-likelihoods, per-token log-probs and KL).")
    for c, bad in differ:
        out.append(f"- **{c} differs**: {', '.join(bad)}")
    out.append("")
    if speed:
        within = sum(overlap(a, b) for _, _, a, b in speed)
        ratios = sorted(b["median"] / a["median"] for _, _, a, b in speed)
        out.append(f"Speed cells: {within} of {len(speed)} timings have overlapping [min, max] ranges; "
                   f"B/A time ratio median {ratios[len(ratios) // 2]:.3f}, range [{ratios[0]:.3f}, {ratios[-1]:.3f}].")
        out.append("")
        out.append("| cell | timing | A median ms [min, max] | B median ms [min, max] | B/A | ranges overlap |")
        out.append("|---|---|---|---|---|---|")
        for c, what, a, b in speed:
            f = lambda s: f"{1e3 * s['median']:.3f} [{1e3 * s['min']:.3f}, {1e3 * s['max']:.3f}]"
            out.append(f"| {c} | {what} | {f(a)} | {f(b)} | {b['median'] / a['median']:.3f} | {'yes' if overlap(a, b) else 'no'} |")
    print("\n".join(out))
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
