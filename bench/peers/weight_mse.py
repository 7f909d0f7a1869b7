#!/usr/bin/env python3
"""Relative weight MSE per layer (bench/hqq3_probe.sh).

    weight_mse.py export MODEL.gguf OUT.safetensors   every 2-D blk.* tensor, decoded by gguf-py
    weight_mse.py compare ORIG A B [C]                per layer ‖W−Ŵ‖²/‖W‖² of A and B (and C)

`compare` prints how many layers B beats A in, the median ratio B/A, and with C the ratio C/A
over the three layers blk.3.ffn_down, blk.3.attn_q and blk.10.ffn_up.
"""
import json
import struct
import sys

import numpy as np


def save(path, tensors):
    hdr, off, blobs = {}, 0, []
    for k, w in tensors.items():
        b = np.ascontiguousarray(w, dtype=np.float32).tobytes()
        hdr[k] = {"dtype": "F32", "shape": list(w.shape), "data_offsets": [off, off + len(b)]}
        off += len(b)
        blobs.append(b)
    h = json.dumps(hdr).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def load(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    return {k: np.frombuffer(b[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]], dtype=np.float32)
            .reshape(v["shape"]) for k, v in h.items() if k != "__metadata__"}


def export(model, out):
    from gguf import GGUFReader, quants
    r = GGUFReader(model)
    t = {}
    for x in r.tensors:
        if x.name.startswith("blk.") and len(x.shape) == 2:
            w = quants.dequantize(x.data, x.tensor_type).astype(np.float32)
            t[x.name] = w.reshape([int(v) for v in reversed(x.shape)])
    save(out, t)


def rel(a, b):
    return float(np.mean((a.astype(np.float64) - b) ** 2) / np.mean(a.astype(np.float64) ** 2))


def compare(orig, a, b, c=None):
    w, qa, qb = load(orig), load(a), load(b)
    ratios = {k: rel(w[k], qb[k]) / rel(w[k], qa[k]) for k in w}
    better = sum(r < 1 for r in ratios.values())
    print(f"B below A in {better} of {len(ratios)} layers; median B/A {np.median(list(ratios.values())):.3f}")
    if c:
        qc = load(c)
        three = ["blk.3.ffn_down.weight", "blk.3.attn_q.weight", "blk.10.ffn_up.weight"]
        print("C/A on three layers:", " ".join(f"{k}: {rel(w[k], qc[k]) / rel(w[k], qa[k]):.3f}" for k in three))


if __name__ == "__main__":
    {"export": export, "compare": compare}[sys.argv[1]](*sys.argv[2:])
