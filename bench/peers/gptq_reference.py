#!/usr/bin/env python3
"""Independent reference for llq's `rtn` and `gptq` plugins: the published algorithms in numpy.

GPTQ follows IST-DASLab/gptq (`gptq.py` `GPTQ.add_batch` / `fasterquant`, `quant.py`
`Quantizer.find_params` with perchannel=True, mse=False) line by line, in float64: Hessian
H = 2/n * sum x x^T, dead columns, static groups, act-order permutation, damping, Cholesky of
the inverse, blocks of `blocksize` with lazy batch updates, group parameters at each group
start read from W (not the block's working copy W1). RTN is the same quantizer without error
feedback. Rounding is numpy's round-half-to-even (torch.round).

Usage: gptq_reference.py OUT_DIR
Writes OUT_DIR/weights.safetensors (each case's W [rows, cols], f32), activations.safetensors
(its X [tokens, cols], f16) and reference.json (per case the options and the reference's codes,
f64 scales and zeros, g_idx, and ||(W - What) X^T||^2 with What as llq stores it: f16 scales).
tests/fixtures/gptq/ holds the output; host/tests/calibrated.rs compares llq-host quantize
--calibration against it.
"""
import json
import struct
import sys
from pathlib import Path

import numpy as np


def find_params(x, bits, sym):
    """Quantizer.find_params(x, weight=True), perchannel: one (scale, zero) per row of x."""
    maxq = 2 ** bits - 1
    xmin = np.minimum(x.min(axis=1), 0)
    xmax = np.maximum(x.max(axis=1), 0)
    if sym:
        xmax = np.maximum(np.abs(xmin), xmax)
        neg = xmin < 0
        xmin[neg] = -xmax[neg]
    both0 = (xmin == 0) & (xmax == 0)
    xmin[both0] = -1
    xmax[both0] = +1
    scale = (xmax - xmin) / maxq
    if sym:
        zero = np.full_like(scale, (maxq + 1) / 2)
    else:
        zero = np.round(-xmin / scale)
    return scale, zero


def quantize_codes(x, scale, zero, maxq):
    return np.clip(np.round(x / scale) + zero, 0, maxq)


def hessian(X):
    """add_batch over one batch of all tokens: H = 2/n * X^T X (float64)."""
    X = X.astype(np.float64)
    return 2.0 / X.shape[0] * (X.T @ X)


def gptq(W, H, bits, groupsize, sym, percdamp=0.01, actorder=False, static_groups=False, blocksize=128):
    W = W.astype(np.float64).copy()
    rows, cols = W.shape
    maxq = 2 ** bits - 1
    if groupsize == -1:
        # fasterquant: `if not self.quantizer.ready(): find_params(W)` before dead columns.
        scale_all, zero_all = find_params(W, bits, sym)
    H = H.copy()
    dead = np.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    groups = None
    if static_groups:
        groups = [find_params(W[:, i:i + groupsize], bits, sym) for i in range(0, cols, groupsize)]
    perm = np.arange(cols)
    if actorder:
        # torch.argsort(descending=True); stable, so ties keep column order as llq does.
        perm = np.argsort(-np.diag(H), kind="stable")
        W = W[:, perm]
        H = H[perm][:, perm]
    damp = percdamp * np.mean(np.diag(H))
    H[np.arange(cols), np.arange(cols)] += damp
    L = np.linalg.cholesky(H)
    Hi = np.linalg.inv(L).T @ np.linalg.inv(L)          # cholesky_inverse
    Hinv = np.linalg.cholesky(Hi).T                     # cholesky(upper=True)
    codes = np.zeros((rows, cols))
    scales = {}
    zeros = {}
    g_idx = np.zeros(cols, dtype=np.int64)
    scale, zero = (scale_all, zero_all) if groupsize == -1 else (None, None)
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        count = i2 - i1
        W1 = W[:, i1:i2].copy()
        Err1 = np.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        for i in range(count):
            w = W1[:, i]
            d = Hinv1[i, i]
            if groupsize != -1:
                if not static_groups:
                    if (i1 + i) % groupsize == 0:
                        scale, zero = find_params(W[:, (i1 + i):(i1 + i + groupsize)], bits, sym)
                    g = (i1 + i) // groupsize
                else:
                    idx = perm[i1 + i]
                    g = idx // groupsize
                    scale, zero = groups[g]
            else:
                g = 0
            g_idx[perm[i1 + i]] = g
            scales[g] = scale
            zeros[g] = zero
            q = quantize_codes(w, scale, zero, maxq)
            codes[:, i1 + i] = q
            qv = scale * (q - zero)
            err1 = (w - qv) / d
            W1[:, i:] -= np.outer(err1, Hinv1[i, i:])
            Err1[:, i] = err1
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
    inv = np.argsort(perm)
    codes = codes[:, inv]
    n_groups = 1 if groupsize == -1 else (cols + groupsize - 1) // groupsize
    S = np.stack([scales[g] for g in range(n_groups)], axis=1)
    Z = np.stack([zeros[g] for g in range(n_groups)], axis=1)
    return codes.astype(np.int64), S, Z, g_idx


def rtn(W, bits, groupsize, sym):
    W = W.astype(np.float64)
    rows, cols = W.shape
    gs = cols if groupsize == -1 else groupsize
    maxq = 2 ** bits - 1
    codes = np.zeros((rows, cols), dtype=np.int64)
    S, Z = [], []
    for g0 in range(0, cols, gs):
        s, z = find_params(W[:, g0:g0 + gs], bits, sym)
        codes[:, g0:g0 + gs] = quantize_codes(W[:, g0:g0 + gs], s[:, None], z[:, None], maxq)
        S.append(s)
        Z.append(z)
    return codes, np.stack(S, 1), np.stack(Z, 1), np.array([c // gs for c in range(cols)])


def dequant(codes, S, Z, g_idx):
    """What the packed form computes with: f16 scales, f32 arithmetic (as llq's dequantize)."""
    s16 = S.astype(np.float16).astype(np.float32)
    return s16[:, g_idx] * (codes.astype(np.float32) - Z.astype(np.float32)[:, g_idx])


def save_safetensors(path, tensors):
    """Minimal safetensors writer (F32 and F16 tensors), so the fixture needs nothing but numpy."""
    header, offset, blobs = {}, 0, []
    for name, arr in tensors.items():
        f16 = arr.dtype == np.float16
        b = np.ascontiguousarray(arr, dtype="<f2" if f16 else "<f4").tobytes()
        header[name] = {"dtype": "F16" if f16 else "F32", "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(b)]}
        offset += len(b)
        blobs.append(b)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def main():
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(20261123)
    cases = []
    # Shapes: Llama-like blocks, odd widths with partial groups, dead input columns,
    # activation outliers in a few channels (what act-order and AWQ exist for).
    shapes = [(64, 256, 256), (48, 384, 384), (32, 200, 256), (96, 128, 512)]
    configs = [
        dict(method="rtn", bits=4, group_size=128, sym=False),
        dict(method="rtn", bits=3, group_size=128, sym=False),
        dict(method="rtn", bits=4, group_size=-1, sym=True),
        dict(method="gptq", bits=4, group_size=128, sym=False),
        dict(method="gptq", bits=3, group_size=128, sym=False),
        dict(method="gptq", bits=4, group_size=32, sym=True),
        dict(method="gptq", bits=2, group_size=64, sym=False),
        dict(method="gptq", bits=8, group_size=-1, sym=False),
        dict(method="gptq", bits=4, group_size=128, sym=False, act_order=True),
        dict(method="gptq", bits=4, group_size=64, sym=False, act_order=True, static_groups=True),
        dict(method="gptq", bits=3, group_size=-1, sym=True, act_order=True),
    ]
    tensors, acts = {}, {}
    for k, cfg in enumerate(configs):
        rows, cols, tokens = shapes[k % len(shapes)]
        W = (rng.standard_normal((rows, cols)) * 0.02).astype(np.float32)
        col_scale = np.exp(rng.standard_normal(cols) * 0.5)
        col_scale[rng.choice(cols, 3, replace=False)] *= 20.0
        # Activations stored as f16 (exact in f32 on both sides) to keep the fixture small.
        X = (rng.standard_normal((tokens, cols)) * col_scale).astype(np.float16).astype(np.float32)
        if k % 3 == 2:
            X[:, rng.choice(cols, 2, replace=False)] = 0.0  # dead inputs
        name = f"case{k}.weight"
        H = hessian(X)
        if cfg["method"] == "rtn":
            codes, S, Z, g_idx = rtn(W, cfg["bits"], cfg["group_size"], cfg["sym"])
        else:
            codes, S, Z, g_idx = gptq(W, H, cfg["bits"], cfg["group_size"], cfg["sym"],
                                      actorder=cfg.get("act_order", False),
                                      static_groups=cfg.get("static_groups", False))
        Wq = dequant(codes, S, Z, g_idx).astype(np.float64)
        err = float(np.sum(((W.astype(np.float64) - Wq) @ X.astype(np.float64).T) ** 2))
        tensors[name] = W
        acts[name] = X.astype(np.float16)
        cases.append(dict(name=name, rows=rows, cols=cols, tokens=tokens, **cfg,
                          codes=codes.flatten().tolist(), scales=S.flatten().tolist(),
                          zeros=Z.flatten().tolist(), g_idx=g_idx.tolist(), output_error=err))
    save_safetensors(out / "weights.safetensors", tensors)
    save_safetensors(out / "activations.safetensors", acts)
    (out / "reference.json").write_text(json.dumps({
        "generator": "bench/peers/gptq_reference.py (numpy " + np.__version__ + ")",
        "cases": cases,
    }))
    print(f"{len(cases)} cases written to {out}")


if __name__ == "__main__":
    main()
