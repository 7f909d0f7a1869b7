#!/usr/bin/env python3
"""The calibrated-methods quality table: perplexity, KL(unquantized || method) and top-1
agreement per method on the held-out evaluation books, and each method's per-token KL
difference to RTN at the same bits with a paired 95% confidence interval.

Usage: kl_table.py RUNS_DIR OUT_DIR        (RUNS_DIR/<method>/{results.json,samples.jsonl})
       kl_table.py --npz OUT_DIR/kl_tokens.npz OUT_DIR   (re-analyse saved per-token values)

Pairing: every method scored the same tokens (same text, tokenizer, windows), so the
difference is taken token by token. Tokens within a window are correlated, so the interval
is a block bootstrap over the 2048-token windows (2000 resamples of whole windows, percentile
interval), not an i.i.d. one. "No detectable difference" is printed when it contains 0.
"""
import json
import sys
from pathlib import Path

import numpy as np

BLOCK = 2048
RESAMPLES = 2000


def load_runs(runs):
    out = {}
    for d in sorted(Path(runs).iterdir()):
        if not (d / "results.json").exists():
            continue
        r = json.loads((d / "results.json").read_text())
        kl, agree, lp = [], [], []
        for line in (d / "samples.jsonl").read_text().splitlines():
            s = json.loads(line)
            lp += s["token_logprobs"]
            kl += s.get("token_kl", [])
            agree += s.get("token_top1_agree", [])
        q = r["quantization"] or {}
        out[d.name] = dict(
            results=r,
            logprobs=np.array(lp, dtype=np.float64),
            kl=np.array(kl, dtype=np.float64) if kl else None,
            agree=np.array(agree, dtype=np.float64) if agree else None,
            method=q.get("method", "none"),
            options=q.get("options", {}),
            bits_per_weight=r["size"]["bits_per_weight"],
            calib_s=((q.get("calibration") or {}).get("seconds")),
            quantize_s=q.get("seconds"),
        )
    return out


def block_means(x):
    n = len(x) // BLOCK * BLOCK
    head = x[:n].reshape(-1, BLOCK).mean(axis=1)
    return np.append(head, x[n:].mean()) if n < len(x) else head, np.append(
        np.full(n // BLOCK, BLOCK), len(x) - n) if n < len(x) else np.full(n // BLOCK, BLOCK)


def paired_ci(a, b, rng):
    """Mean of a - b with a block-bootstrap 95% interval (weights = tokens per block)."""
    d = a - b
    means, w = block_means(d)
    idx = rng.integers(0, len(means), size=(RESAMPLES, len(means)))
    boot = (means[idx] * w[idx]).sum(axis=1) / w[idx].sum(axis=1)
    return d.mean(), np.percentile(boot, 2.5), np.percentile(boot, 97.5)


def table(runs, out):
    rng = np.random.default_rng(0)
    base = runs.get("none")
    rows = []
    for name, r in runs.items():
        lp = r["logprobs"]
        nll = -lp.mean()
        se = lp.std(ddof=1) / np.sqrt(len(lp))
        row = dict(run=name, method=r["method"], options=r["options"], bits_per_weight=r["bits_per_weight"],
                   tokens=len(lp), perplexity=float(np.exp(nll)), perplexity_se=float(np.exp(nll) * se),
                   calibration_s=r["calib_s"], quantize_s=r["quantize_s"])
        if r["kl"] is not None:
            row["kl_mean"] = float(r["kl"].mean())
            m, _ = block_means(r["kl"])
            row["kl_mean_se_blocks"] = float(m.std(ddof=1) / np.sqrt(len(m)))
            row["top1_agree"] = float(r["agree"].mean())
            bits = r["options"].get("bits", "4")
            ref = f"rtn{bits}" if f"rtn{bits}" in runs else "rtn4"
            if ref in runs and ref != name and runs[ref]["kl"] is not None:
                assert len(runs[ref]["kl"]) == len(r["kl"]), "runs scored different tokens"
                d, lo, hi = paired_ci(r["kl"], runs[ref]["kl"], rng)
                row["vs"] = ref
                row["kl_diff"] = float(d)
                row["kl_diff_ci95"] = [float(lo), float(hi)]
                row["finding"] = ("no detectable difference" if lo <= 0 <= hi
                                  else ("lower KL than " + ref if hi < 0 else "higher KL than " + ref))
        rows.append(row)
    order = ["none", "int8", "nf4", "fp4", "rtn4", "gptq4", "awq4", "rtn3", "gptq3", "awq3"]
    rows.sort(key=lambda r: order.index(r["run"]) if r["run"] in order else 99)
    md = ["| run | method | bits/weight | perplexity | KL mean | top-1 agree | ΔKL vs RTN (paired 95% CI) | calib + quantize s |",
          "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        kl = f"{r['kl_mean']:.4f} ± {r['kl_mean_se_blocks']:.4f}" if "kl_mean" in r else "–"
        top1 = f"{100 * r['top1_agree']:.2f}%" if "top1_agree" in r else "–"
        diff = (f"{r['kl_diff']:+.4f} [{r['kl_diff_ci95'][0]:+.4f}, {r['kl_diff_ci95'][1]:+.4f}] vs {r['vs']}: {r['finding']}"
                if "kl_diff" in r else "–")
        t = r["calibration_s"] if r["calibration_s"] is not None else r["quantize_s"]
        md.append(f"| {r['run']} | {r['method']} {json.dumps(r['options']) if r['options'] else ''} | "
                  f"{r['bits_per_weight']:.3f} | {r['perplexity']:.3f} ± {r['perplexity_se']:.3f} | {kl} | {top1} | "
                  f"{diff} | {'–' if t is None else f'{t:.1f}'} |")
    md.append("")
    md.append(f"{rows[0]['tokens']} held-out tokens per run; KL ± is the block standard error "
              f"(blocks of {BLOCK} tokens); paired intervals: block bootstrap, {RESAMPLES} resamples.")
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / "table.md").write_text("\n".join(md) + "\n")
    (Path(out) / "table.json").write_text(json.dumps(rows, indent=1))
    print("\n".join(md))


def main():
    if sys.argv[1] == "--npz":
        z = np.load(sys.argv[2], allow_pickle=True)
        runs = json.loads(str(z["meta"]))
        for name in runs:
            runs[name]["logprobs"] = z[f"{name}.logprobs"].astype(np.float64)
            runs[name]["kl"] = z[f"{name}.kl"].astype(np.float64) if f"{name}.kl" in z else None
            runs[name]["agree"] = z[f"{name}.agree"].astype(np.float64) if f"{name}.agree" in z else None
        table(runs, sys.argv[3])
        return
    runs = load_runs(sys.argv[1])
    out = Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    arrays = {}
    meta = {}
    for name, r in runs.items():
        arrays[f"{name}.logprobs"] = r["logprobs"].astype(np.float32)
        if r["kl"] is not None:
            arrays[f"{name}.kl"] = r["kl"].astype(np.float32)
            arrays[f"{name}.agree"] = r["agree"].astype(np.uint8)
        meta[name] = {k: r[k] for k in ("method", "options", "bits_per_weight", "calib_s", "quantize_s")}
    np.savez_compressed(out / "kl_tokens.npz", meta=json.dumps(meta), **arrays)
    table(runs, out)


if __name__ == "__main__":
    main()
