#!/usr/bin/env python3
"""Reference blocks for llq's `gguf` plugin from llama.cpp's own C quantizers (ggml-quants.c),
called through `ggml_quantize_chunk`, the function `llama-quantize` calls for each tensor.

gguf-py (gguf_reference.py) encodes only the legacy types; this covers every offered type,
the K types included, with and without an importance matrix. The C sources come from the
llama.cpp copy vendored in the PyPI sdist of llama-cpp-python (the HF hub and GitHub are not
reachable here; PyPI is):

    curl -sSLO https://files.pythonhosted.org/packages/ec/e9/e7de2b0463ea3ffbf0ede6cb21b58c1258a8f6521aae45ca773a59fe7cf3/llama_cpp_python-0.3.36.tar.gz
    echo "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e  llama_cpp_python-0.3.36.tar.gz" | sha256sum -c
    tar xzf llama_cpp_python-0.3.36.tar.gz llama_cpp_python-0.3.36/vendor/llama.cpp/ggml
    python3 bench/peers/ggml_quants_reference.py llama_cpp_python-0.3.36/vendor/llama.cpp/ggml \
        tests/fixtures/gguf/ggml-quants-llama-cpp-python-0.3.36.json

The script compiles ggml.c + ggml-quants.c with the system C compiler (-O2, no fast math,
no -march: the reference scalar paths) into a temporary shared library; five ggml-backend
symbols that ggml.c references but quantization never calls are stubbed. Inputs are the
shared hash values (hashvals.py), regenerated bit for bit by the Rust test; the importance
matrices are stored in the fixture as f32 bits.
"""
import ctypes
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

from hashvals import tensor, values

SDIST = "llama_cpp_python-0.3.36.tar.gz"
SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"

# ggml.h's enum ggml_type values.
TYPES = {"q4_0": 2, "q4_1": 3, "q5_0": 6, "q5_1": 7, "q8_0": 8,
         "q2_k": 10, "q3_k": 11, "q4_k": 12, "q5_k": 13, "q6_k": 14}
# Bytes per block and values per block (ggml-common.h).
SIZES = {"q4_0": (18, 32), "q4_1": (20, 32), "q5_0": (22, 32), "q5_1": (24, 32), "q8_0": (34, 32),
         "q2_k": (84, 256), "q3_k": (110, 256), "q4_k": (144, 256), "q5_k": (176, 256), "q6_k": (210, 256)}

STUBS = r"""
#include <stdlib.h>
void ggml_backend_buffer_get_usage(void) { abort(); }
void ggml_backend_tensor_memset(void) { abort(); }
void ggml_backend_tensor_set(void) { abort(); }
void ggml_critical_section_start(void) {}
void ggml_critical_section_end(void) {}
"""


def build(ggml_dir, work):
    with open(os.path.join(work, "ggml-version.h"), "w") as f:
        f.write('#pragma once\n#define GGML_VERSION "vendored"\n#define GGML_COMMIT "vendored"\n')
    with open(os.path.join(work, "stubs.c"), "w") as f:
        f.write(STUBS)
    lib = os.path.join(work, "libggmlq.so")
    cc = os.environ.get("CC", "cc")
    subprocess.check_call([cc, "-O2", "-std=gnu11", "-D_GNU_SOURCE", "-fPIC", "-shared", "-fno-fast-math",
                           "-I", os.path.join(ggml_dir, "include"), "-I", os.path.join(ggml_dir, "src"),
                           "-I", work, os.path.join(ggml_dir, "src", "ggml.c"),
                           os.path.join(ggml_dir, "src", "ggml-quants.c"), os.path.join(work, "stubs.c"),
                           "-lm", "-lpthread", "-o", lib])
    so = ctypes.CDLL(lib)
    so.ggml_quantize_chunk.restype = ctypes.c_size_t
    so.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                       ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    return so


def quantize(so, name, x, imatrix):
    rows, cols = x.shape
    type_size, block = SIZES[name]
    out = np.zeros(rows * cols // block * type_size, dtype=np.uint8)
    x = np.ascontiguousarray(x, dtype=np.float32)
    im = None if imatrix is None else np.ascontiguousarray(imatrix, dtype=np.float32)
    n = so.ggml_quantize_chunk(TYPES[name], x.ctypes.data, out.ctypes.data, 0, rows, cols,
                               None if im is None else im.ctypes.data)
    assert n == out.size, (name, n, out.size)
    return out


def importance(seed, cols):
    """An importance matrix like llama.cpp's (per-column mean of x², positive, uneven)."""
    v = values(seed, cols)
    return (v * v * np.float32(4.0) + np.float32(0.01)).astype(np.float32)


def main(ggml_dir, out):
    with tempfile.TemporaryDirectory() as work:
        so = build(ggml_dir, work)
        cases = []
        seed = 1000
        for name in TYPES:
            block = SIZES[name][1]
            shapes = ((1, 256), (3, 512), (4, 768)) if block == 256 else ((1, 64), (3, 96), (4, 576))
            for family in ("uniform", "scaled_rows", "zeros_and_repeats"):
                for rows, cols in shapes:
                    seed += 1
                    x = tensor(family, seed, rows, cols)
                    # candle ports the importance-weighted quantizers of the K types only
                    for with_imatrix in ((False, True) if block == 256 else (False,)):
                        im = importance(seed + 50000, cols) if with_imatrix else None
                        q = quantize(so, name, x, im)
                        case = {"type": name, "family": family, "seed": seed, "rows": rows, "cols": cols,
                                "blocks_hex": q.tobytes().hex()}
                        if im is not None:
                            case["imatrix_f32"] = [int(v) for v in im.view(np.uint32)]
                        cases.append(case)
    doc = {"generator": "bench/peers/ggml_quants_reference.py", "source": SDIST,
           "source_sha256": SHA256, "numpy": np.__version__,
           "entry": "ggml_quantize_chunk", "cases": cases}
    with open(out, "w") as f:
        json.dump(doc, f)
    print("wrote", out, len(cases), "cases")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
