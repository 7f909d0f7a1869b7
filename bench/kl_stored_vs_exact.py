#!/usr/bin/env python3
"""Per-method KL from a stored baseline (`--kl-baseline-from`) against the exact in-process KL
(`--kl-baseline`) for the same quantized models: two folders of sweep cells, EXACT and STORED.

Usage: bench/kl_stored_vs_exact.py EXACT STORED   (docs/benchmarks.md, "The baseline computed once")
e.g. EXACT = the ppl cells of results/sweeps/default at 11dad03, STORED = the same cells now.
"""
import glob
import json
import os
import sys


def rows(cell):
    with open(os.path.join(cell, "samples.jsonl")) as f:
        return [json.loads(line) for line in f]


exact_dir, stored_dir = sys.argv[1], sys.argv[2]
print("| method | exact KL/token | stored-baseline KL | mean Δ | max per-token |Δ| | top-1 agreement | log-probs |")
print("| --- | ---: | ---: | ---: | ---: | --- | --- |")
for cell in sorted(glob.glob(os.path.join(exact_dir, "*.ppl"))):
    name = os.path.basename(cell)
    a, b = rows(cell), rows(os.path.join(stored_dir, name))
    if not a[0].get("token_kl"):
        continue
    ka = [x for s in a for x in s["token_kl"]]
    kb = [x for s in b for x in s["token_kl"]]
    d = [y - x for x, y in zip(ka, kb)]
    top = all(s["token_top1_agree"] == t["token_top1_agree"] for s, t in zip(a, b))
    lp = all(s["token_logprobs"] == t["token_logprobs"] for s, t in zip(a, b))
    print(f"| {name.split('.')[1]} | {sum(ka) / len(ka):.5f} | {sum(kb) / len(kb):.5f} | {sum(d) / len(d):+.1e} | "
          f"{max(abs(x) for x in d):.1e} | {'identical' if top else 'differs'} | {'identical' if lp else 'differ'} |")
