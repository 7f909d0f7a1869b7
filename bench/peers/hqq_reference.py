#!/usr/bin/env python3
"""Reference vectors for llq's `hqq` plugin from the real hqq package (mobiusml/hqq 0.2.8.post1,
PyPI sdist, pure Python on torch): `Quantizer.quantize` on CPU f32 tensors, axis=1, the
settings of `hqq_base_quant_config` (optimize=True, round_zero for 4 bits), bitpack off so the
codes come back one per weight.

    python3 -m pip download hqq==0.2.8.post1 --no-deps --no-binary=:all: -d dist
    tar xzf dist/hqq-0.2.8.post1.tar.gz -C /tmp
    PYTHONPATH=/tmp/hqq-0.2.8.post1 python3 bench/peers/hqq_reference.py tests/fixtures/hqq/hqq-0.2.8.json

Needs torch (run on the GPU machine, which has it; everything here runs on its CPU). hqq imports
`termcolor` for warnings only; a stand-in is installed when it is missing. Inputs are the shared
hash values (hashvals.py), regenerated bit for bit by the Rust test; the fixture holds hqq's
codes (hex, one byte each), its inverse scales and zero points (f32 bits), and the number of
solver steps is not observable, so the test compares outcomes.
"""
import json
import sys
import types

import numpy as np

try:
    import termcolor  # noqa: F401
except ImportError:
    sys.modules["termcolor"] = types.SimpleNamespace(colored=lambda s, *a, **k: s)

import torch
from hqq.core.quantize import Quantizer
import hqq

from hashvals import tensor, values


def heavy(seed, rows, cols):
    """Mostly small values and a few large ones per row (what the lp solver is for)."""
    v = values(seed, rows * cols).reshape(rows, cols)
    x = (v * v * v).astype(np.float32)
    x[:, ::61] = (np.float32(8.0) * v[:, ::61]).astype(np.float32)
    return x


def main(out):
    cases = []
    seed = 3000
    for bits, gs, family, (rows, cols) in [
        (4, 64, "uniform", (4, 256)), (4, 64, "scaled_rows", (16, 576)), (4, 64, "heavy", (8, 512)),
        (4, 128, "heavy", (4, 1024)), (4, 32, "zeros_and_repeats", (3, 192)),
        (3, 64, "uniform", (4, 256)), (3, 64, "heavy", (8, 512)), (3, 64, "scaled_rows", (16, 576)),
        (2, 64, "heavy", (8, 512)), (2, 32, "scaled_rows", (6, 256)),
        (8, 64, "heavy", (4, 256)), (1, 64, "heavy", (4, 256)),
    ]:
        seed += 1
        x = heavy(seed, rows, cols) if family == "heavy" else tensor(family, seed, rows, cols)
        for optimize in (True, False):
            W_q, meta = Quantizer.quantize(torch.from_numpy(x.copy()), nbits=bits, channel_wise=True, group_size=gs,
                                           optimize=optimize, round_zero=(bits == 4), axis=1, bitpack=False,
                                           device="cpu")
            codes = W_q.reshape(-1).to(torch.uint8).numpy()
            scale = meta["scale"].reshape(-1).to(torch.float32).numpy()
            zero = meta["zero"].reshape(-1).to(torch.float32).numpy()
            cases.append({"bits": bits, "group_size": gs, "family": family, "seed": seed, "rows": rows, "cols": cols,
                          "optimize": optimize, "codes_hex": codes.tobytes().hex(),
                          "scale_f32": [int(v) for v in scale.view(np.uint32)],
                          "zero_f32": [int(v) for v in zero.view(np.uint32)]})
    doc = {"generator": "bench/peers/hqq_reference.py", "hqq": hqq.__version__, "torch": torch.__version__,
           "numpy": np.__version__, "device": "cpu", "cases": cases}
    with open(out, "w") as f:
        json.dump(doc, f)
    print("wrote", out, len(cases), "cases")


if __name__ == "__main__":
    main(sys.argv[1])
