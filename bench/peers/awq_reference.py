#!/usr/bin/env python3
"""Independent reference for llq's `awq` plugin: mit-han-lab/llm-awq's search in numpy (float64).

Follows `awq/quantize/auto_scale.py` (`auto_scale_block`, `_search_module_scale`),
`auto_clip.py` (`auto_clip_layer`) and `quantizer.py` (`pseudo_quantize_tensor`) on raw
activation rows, not on a Hessian (llq computes both losses from H = 2/n X^T X; this file
computes them the way llm-awq does, from the rows):

* per group of layers reading one input X (q/k/v, o, gate/up, down of one block):
  x_max = mean |X| per column; for ratio = i / n_grid: s = clamp(x_max**ratio, 1e-4),
  s /= sqrt(max(s) * min(s)); loss = mean over tokens and outputs of
  (X W^T - X (Q(W diag s) diag(s)^-1)^T)^2 over the group's concatenated outputs (llq's
  objective: llm-awq measures the enclosing module's output, the attention for q/k/v and
  the MLP for gate/up; for o and down the two are the same); first smallest loss wins;
* apply_scale: W <- W diag(s), X <- X diag(s)^-1 (the producer is not part of the fixture:
  llq-host quantize leaves it as it is);
* auto_clip on every layer but q/k: per (row, group) the max |w| shrunk by i/n_grid,
  i < max_shrink * n_grid, on every step-th token (step = max(1, n // 512), AutoAWQ's rule),
  keeping the strictly smaller mean squared partial-output error; then clamp;
* pseudo_quantize_tensor with a zero point ([min, max], scale clamp 1e-5) or symmetric.

The error reported per layer is ||X W^T - X What^T||^2 with What = Q(clip(W s)) s^-1 as llq
stores it (f16 scales), on the original X.

Usage: awq_reference.py OUT_DIR
Writes OUT_DIR/weights.safetensors (one MHA block, f16), activations.safetensors (each
layer's input X [512, cols], f16; q/k/v share one X, gate/up another) and reference.json
(per option set: each group's ratio and losses, each layer's output error).
tests/fixtures/awq/ holds the output; host/tests/calibrated.rs compares against it.
"""
import json
import sys
from pathlib import Path

import numpy as np

from gptq_reference import save_safetensors


def pseudo_quantize(w, n_bit, zero_point, group_size, f16_scales=False):
    rows, cols = w.shape
    w = w.reshape(-1, group_size)
    if zero_point:
        max_val, min_val = w.max(axis=1, keepdims=True), w.min(axis=1, keepdims=True)
        max_int, min_int = 2 ** n_bit - 1, 0
        scales = np.maximum(max_val - min_val, 1e-5) / max_int
        zeros = np.clip(-np.round(min_val / scales), min_int, max_int)
    else:
        max_val = np.maximum(np.abs(w).max(axis=1, keepdims=True), 1e-5)
        max_int, min_int = 2 ** (n_bit - 1) - 1, -(2 ** (n_bit - 1))
        scales = max_val / max_int
        zeros = 0
    codes = np.clip(np.round(w / scales) + zeros, min_int, max_int)
    if f16_scales:  # what the packed form computes with
        scales = scales.astype(np.float16).astype(np.float64)
    return ((codes - zeros) * scales).reshape(rows, cols)


def search_scale(Ws, X, n_bit, zp, gs, n_grid=20):
    W = np.concatenate(Ws, axis=0)
    x_max = np.abs(X).mean(axis=0)
    org_out = X @ W.T
    best, best_ratio, best_s, losses = np.inf, -1, None, []
    for r in range(n_grid):
        ratio = r / n_grid
        s = np.maximum(x_max ** ratio, 1e-4)
        s = s / np.sqrt(s.max() * s.min())
        Wq = pseudo_quantize(W * s, n_bit, zp, gs) / s
        loss = float(((org_out - X @ Wq.T) ** 2).mean())
        losses.append(loss)
        if loss < best:
            best, best_ratio, best_s = loss, ratio, s
    assert best_ratio != -1
    return best_ratio, best_s, losses


def auto_clip(W, X, n_bit, zp, gs, n_grid=20, max_shrink=0.5, n_sample_token=512):
    rows, cols = W.shape
    Xs = X[0::max(1, X.shape[0] // n_sample_token)]
    Xg = Xs.reshape(1, Xs.shape[0], -1, gs)
    best_all = []
    for r0 in range(0, rows, 64):
        w = W[r0:r0 + 64].reshape(-1, 1, cols // gs, gs)
        org_max = np.abs(w).max(axis=-1, keepdims=True)
        best = org_max.copy()
        min_errs = np.ones_like(org_max) * 1e9
        org_out = (Xg * w).sum(axis=-1)
        for i_s in range(int(max_shrink * n_grid)):
            max_val = org_max * (1 - i_s / n_grid)
            cur = np.clip(w, -max_val, max_val)
            q = pseudo_quantize(cur.reshape(-1, cols), n_bit, zp, gs).reshape(w.shape)
            err = ((Xg * q).sum(axis=-1) - org_out) ** 2
            err = err.mean(axis=1).reshape(min_errs.shape)
            better = err < min_errs
            min_errs[better] = err[better]
            best[better] = max_val[better]
        best_all.append(best)
    best = np.concatenate(best_all, axis=0)
    w = W.reshape(rows, 1, cols // gs, gs)
    return np.clip(w, -best, best).reshape(rows, cols)


def main():
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(20261124)
    hidden, inter, tokens = 128, 384, 512
    p = "model.layers.0."
    shapes = {
        "self_attn.q_proj": (hidden, hidden), "self_attn.k_proj": (hidden, hidden),
        "self_attn.v_proj": (hidden, hidden), "self_attn.o_proj": (hidden, hidden),
        "mlp.gate_proj": (inter, hidden), "mlp.up_proj": (inter, hidden), "mlp.down_proj": (hidden, inter),
    }
    groups = [  # (producer, members) in llm-awq's order
        ("input_layernorm", ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"]),
        ("self_attn.v_proj", ["self_attn.o_proj"]),
        ("post_attention_layernorm", ["mlp.gate_proj", "mlp.up_proj"]),
        ("mlp.up_proj", ["mlp.down_proj"]),
    ]
    # f16 weights and activations: exact in f32 on both sides, half the fixture size.
    W = {m: (rng.standard_normal(s) * 0.05).astype(np.float16).astype(np.float64) for m, s in shapes.items()}
    X = {}
    for _, members in groups:
        cols = shapes[members[0]][1]
        col_scale = np.exp(rng.standard_normal(cols) * 0.6)
        col_scale[rng.choice(cols, 3, replace=False)] *= 15.0  # salient channels
        x = (rng.standard_normal((tokens, cols)) * col_scale).astype(np.float16).astype(np.float64)
        for m in members:
            X[m] = x
    configs = [dict(bits=4, group_size=64, sym=False), dict(bits=3, group_size=128, sym=False),
               dict(bits=4, group_size=64, sym=True)]
    results = []
    for cfg in configs:
        n_bit, gs, zp = cfg["bits"], cfg["group_size"], not cfg["sym"]
        grp, layers = [], {}
        for producer, members in groups:
            x = X[members[0]]
            ratio, s, losses = search_scale([W[m] for m in members], x, n_bit, zp, gs)
            grp.append(dict(producer=p + producer + ".weight", layers=[p + m + ".weight" for m in members],
                            ratio=ratio, losses=losses))
            for m in members:
                ws, xs = W[m] * s, x / s
                if not any(k in m for k in ["q_", "k_"]):
                    ws = auto_clip(ws, xs, n_bit, zp, gs)
                what = pseudo_quantize(ws, n_bit, zp, gs, f16_scales=True) / s
                layers[p + m + ".weight"] = float(np.sum((x @ W[m].T - x @ what.T) ** 2))
        results.append(dict(options=cfg, groups=grp, output_error=layers))
    save_safetensors(out / "weights.safetensors", {p + m + ".weight": W[m].astype(np.float16) for m in shapes})
    save_safetensors(out / "activations.safetensors", {p + m + ".weight": X[m].astype(np.float16) for m in shapes})
    (out / "reference.json").write_text(json.dumps({
        "generator": "bench/peers/awq_reference.py (numpy " + np.__version__ + ")",
        "tokens": tokens, "configs": results,
    }, indent=1))
    for r in results:
        print(r["options"], [g["ratio"] for g in r["groups"]])


if __name__ == "__main__":
    main()
