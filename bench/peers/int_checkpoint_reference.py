#!/usr/bin/env python3
"""GPTQ and AWQ checkpoint layouts, packed and dequantized as the producing libraries do it.

An independent reference for llq's `checkpoint::hf_int` (host/tests/checkpoint.rs): seeded
integer codes, f16 scales and integer zero points are packed with

- AutoGPTQ's `QuantLinear.pack` loop (auto_gptq/nn_modules/qlinear/qlinear_cuda_old.py:
  codes transposed to [in, out], 32/bits codes a word for 2/4/8 bits, and for 3 bits the
  word-straddling scheme of 10 + 2/1 codes a word; zero points stored minus one and packed
  the same way along the output dimension), with `g_idx` = the group of each input column
  (act-order: the group of its position in the permuted order), and
- AutoAWQ's `WQLinear_GEMM.from_linear` (awq/modules/linear/gemm.py: eight output channels a
  word in the order 0 2 4 6 1 3 5 7, zero points without offset),

and dequantized from the codes (not from the packed words) in f16 as their torch
dequantizers compute it: `scales[g] * (q - z)` (AutoGPTQ: z = stored zero + 1) and
`(q - z) * scales` (AutoAWQ `dequantize_gemm`), each an f16 product of an f16 scale and a small
integer. numpy only. Writes tests/fixtures/checkpoints/int-checkpoint-reference.json.
"""
import json
import sys

import numpy as np


def autogptq_pack(intweight, bits):
    """AutoGPTQ's packing loop over the rows of `intweight` ([K, N] uint32) → [K·bits/32, N]."""
    k = intweight.shape[0]
    q = np.zeros((k // 32 * bits, intweight.shape[1]), dtype=np.uint32)
    i = row = 0
    while row < q.shape[0]:
        if bits in (2, 4, 8):
            for j in range(i, i + 32 // bits):
                q[row] |= intweight[j] << np.uint32(bits * (j - i))
            i += 32 // bits
            row += 1
        elif bits == 3:
            for j in range(i, i + 10):
                q[row] |= intweight[j] << np.uint32(3 * (j - i))
            i += 10
            q[row] |= intweight[i] << np.uint32(30)
            row += 1
            q[row] |= (intweight[i] >> np.uint32(2)) & np.uint32(1)
            i += 1
            for j in range(i, i + 10):
                q[row] |= intweight[j] << np.uint32(3 * (j - i) + 1)
            i += 10
            q[row] |= intweight[i] << np.uint32(31)
            row += 1
            q[row] |= (intweight[i] >> np.uint32(1)) & np.uint32(3)
            i += 1
            for j in range(i, i + 10):
                q[row] |= intweight[j] << np.uint32(3 * (j - i) + 2)
            i += 10
            row += 1
        else:
            raise ValueError(bits)
    return q


AWQ_ORDER = [0, 2, 4, 6, 1, 3, 5, 7]


def autoawq_pack(intweight):
    """AutoAWQ's GEMM packing of `intweight` ([K, N]) → [K, N/8]."""
    q = np.zeros((intweight.shape[0], intweight.shape[1] // 8), dtype=np.uint32)
    for col in range(intweight.shape[1] // 8):
        for i in range(8):
            q[:, col] |= intweight[:, col * 8 + AWQ_ORDER[i]] << np.uint32(i * 4)
    return q


def f16_bits(a):
    return a.astype(np.float16).view(np.uint16).astype(int).ravel().tolist()


def case(rng, layout, bits, rows, cols, group_size, act_order):
    maxq = (1 << bits) - 1
    gs = cols if group_size == -1 else group_size
    groups = -(-cols // gs)
    codes = rng.integers(0, maxq + 1, size=(rows, cols)).astype(np.uint32)
    # GPTQ v1 cannot store a zero point of 0 (it stores zero - 1).
    zeros = rng.integers(1 if layout == "gptq" else 0, maxq + 1, size=(rows, groups)).astype(np.uint32)
    scales = (rng.uniform(0.001, 0.05, size=(rows, groups))).astype(np.float16)
    if act_order:
        perm = rng.permutation(cols)
        g_idx = np.empty(cols, dtype=np.int64)
        g_idx[perm] = np.arange(cols) // gs
    else:
        g_idx = np.arange(cols) // gs
    # Dequantized in f16, from the codes: scale[g] * (q - z).
    s = scales[:, g_idx]  # [rows, cols] f16
    z = zeros[:, g_idx].astype(np.int64)
    diff = (codes.astype(np.int64) - z).astype(np.float16)
    deq = (s * diff).astype(np.float16)
    out = {
        "layout": layout,
        "bits": bits,
        "rows": rows,
        "cols": cols,
        "group_size": group_size,
        "codes": codes.ravel().tolist(),
        "zeros": zeros.ravel().astype(int).tolist(),
        "scales_f16": f16_bits(scales),
        "g_idx": g_idx.astype(int).tolist() if act_order else None,
        "dequantized_f16": f16_bits(deq),
    }
    if layout == "gptq":
        out["qweight"] = autogptq_pack(codes.T.copy(), bits).ravel().tolist()
        out["qzeros"] = autogptq_pack_rows((zeros - 1).T.copy(), bits).ravel().tolist()
        out["g_idx_tensor"] = g_idx.astype(int).tolist()
    else:
        out["qweight"] = autoawq_pack(codes.T.copy()).ravel().tolist()
        out["qzeros"] = autoawq_pack(zeros.T.copy()).ravel().tolist()
    return out


def autogptq_pack_rows(zeros, bits):
    """AutoGPTQ's qzeros packing: `zeros` [groups, N] packed along N → [groups, N·bits/32]
    (the same loop as the weights, over columns)."""
    return autogptq_pack(zeros.T.copy(), bits).T.copy()


def main(out_path):
    rng = np.random.default_rng(20261124)
    cases = []
    for bits in (2, 3, 4, 8):
        cases.append(case(rng, "gptq", bits, 32, 128, 32, False))
    cases.append(case(rng, "gptq", 4, 64, 128, -1, False))
    cases.append(case(rng, "gptq", 4, 32, 128, 32, True))
    cases.append(case(rng, "gptq", 3, 32, 96, 32, True))
    cases.append(case(rng, "awq", 4, 32, 128, 32, False))
    cases.append(case(rng, "awq", 4, 64, 256, 128, False))
    doc = {
        "source": "bench/peers/int_checkpoint_reference.py: AutoGPTQ QuantLinear.pack and AutoAWQ WQLinear_GEMM.from_linear "
        "packing loops and their f16 dequantization, re-implemented in numpy " + np.__version__,
        "cases": cases,
    }
    with open(out_path, "w") as f:
        json.dump(doc, f, separators=(",", ":"))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/checkpoints/int-checkpoint-reference.json")
