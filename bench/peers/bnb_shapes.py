#!/usr/bin/env python3
"""Real bitsandbytes on many shapes, for llq's parity tests (issue 14), and the GPU's
approximate reciprocal as a table.

Run on the GPU machine (torch there; the bitsandbytes wheel travels in .whl/):
    python3 bench/peers/bnb_shapes.py OUT_DIR
Writes OUT_DIR/bnb-0.50.2-shapes.safetensors (+ .json: the cases) and OUT_DIR/rcp-*.i8.xz.

Inputs are not stored: both sides generate them from (seed, index) with the integer hash in
`values()` (sdk/src/testing.rs `hash_values` is the same function), exact in f32, then scale
rows and convert to f16/bf16 with round-to-nearest-even on both sides.

bitsandbytes is built with --use_fast_math, so `1.0f / absmax` in kQuantizeBlockwise and
`__fdividef(127, absmax)` in the int8 kernel do not round correctly. Which PTX instruction
each becomes is for the parity test to find out: this script records, for every f32
mantissa in [1, 2), how far each candidate instruction lands from the correctly rounded
reciprocal (in ulp, int8), for rcp.approx.ftz.f32, div.approx.ftz.f32 and div.full.ftz.f32.
"""
import ctypes
import json
import lzma
import os
import sys

import torch
import bitsandbytes as bnb
import bitsandbytes.functional as F
from safetensors.torch import save_file

MASK = 0xFFFFFFFF


def values(seed, n):
    """n f32 values k/2^23 in [-1, 1) from a 32-bit integer hash of (seed, index)."""
    i = torch.arange(n, dtype=torch.int64)
    h = (i * 2654435761 + seed * 97531 + 12345) & MASK
    for _ in range(2):
        h = h ^ (h >> 16)
        h = (h * 0x45D9F3B) & MASK
    h = h ^ (h >> 16)
    return ((h >> 8) - (1 << 23)).to(torch.float32) / float(1 << 23)


def row_scales(rows):
    """Rows of very different scale: 2^(r mod 9 - 4) · (1 + (r mod 5)/4), exact in f32."""
    r = torch.arange(rows, dtype=torch.int64)
    return torch.pow(2.0, (r % 9 - 4).to(torch.float32)) * (1.0 + (r % 5).to(torch.float32) / 4.0)


def tensor(family, seed, rows, cols, dtype):
    x = values(seed, rows * cols).reshape(rows, cols)
    if family == "scaled_rows":
        x = x * row_scales(rows)[:, None]
    elif family == "ties":
        # Every block of 64: element 0 is its absmax A (a non-power-of-two mantissa), the
        # rest are NF4 midpoints and FP4 pivots times A, rounded to f32: x/A lands on a
        # decision boundary up to the rounding of the reciprocal.
        mids = torch.tensor([-0.8480964004993439, -0.6106329262256622, -0.4599952697753906,
                             -0.33967943489551544, -0.23460740596055984, -0.13791173323988914,
                             -0.045525018125772476, 0.03979014977812767, 0.1202552504837513,
                             0.2035212516784668, 0.2920137718319893, 0.3893125355243683,
                             0.5016634166240692, 0.6427869200706482, 0.8614784181118011,
                             0.00260417, 0.0859375, 0.20833333, 0.29166667, 0.4166667, 0.583333,
                             0.8333333], dtype=torch.float32)
        flat = x.flatten()
        n = flat.numel()
        a = (values(seed + 1, (n + 63) // 64).abs() + 0.5) * 3.0  # absmax per block, in [1.5, 4.5)
        for b in range(0, n, 64):
            blk = min(64, n - b)
            A = a[b // 64]
            k = torch.arange(blk, dtype=torch.int64)
            v = mids[(k + b // 64) % len(mids)] * A
            sign = torch.where((k % 3) == 0, -1.0, 1.0)
            v = v * sign
            v[0] = A
            flat[b:b + blk] = v
        x = flat.reshape(rows, cols)
    return x.to(dtype)


DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}


def four_bit_cases():
    """(family, seed, rows, cols, dtype, quant_type, blocksize, nested)."""
    out = []
    seed = 100
    # Double quantization: the offset is a CUDA mean whose order depends on the length, so
    # many block counts (1 to > 5,000 blocks, around powers of two).
    counts = [1, 2, 3, 5, 8, 13, 31, 32, 33, 63, 64, 65, 127, 128, 129, 255, 256, 257, 511, 512, 513,
              1000, 1023, 1024, 1025, 2047, 2048, 2049, 4095, 4096, 4097, 5000, 5003, 8192]
    for qt in ("nf4", "fp4"):
        for nb in counts:
            for dt in ("f32", "f16", "bf16") if nb in (1, 257, 5003) else ("f32",):
                seed += 1
                cols = 64 * 3 + 5 if nb > 3 else 64 * nb  # blocks straddle rows
                rows = (nb * 64 + cols - 1) // cols
                out.append(("scaled_rows", seed, rows, cols, dt, qt, 64, True))
    # Without double quantization: every block size, odd shapes, ties, every dtype.
    for qt in ("nf4", "fp4"):
        for bs in (64, 128, 256, 512, 1024, 2048, 4096):
            for rows, cols in ((1, 1), (1, 63), (3, 7), (5, 1000), (17, 129), (16, 4096)):
                for fam in ("uniform", "scaled_rows"):
                    seed += 1
                    dt = ("f32", "f16", "bf16")[seed % 3]
                    out.append((fam, seed, rows, cols, dt, qt, bs, False))
            seed += 1
            out.append(("scaled_rows", seed, 33, 1000, "f32", qt, bs, True))
        for dt in ("f32", "f16", "bf16"):
            for rows, cols in ((1, 64), (7, 192), (64, 640)):
                seed += 1
                out.append(("ties", seed, rows, cols, dt, qt, 64, False))
    return out


def int8_cases():
    """(family, seed, rows, cols, threshold)."""
    out = []
    seed = 5000
    for rows, cols in ((1, 1), (1, 7), (3, 64), (17, 129), (64, 4096), (300, 257), (1024, 96)):
        for fam in ("uniform", "scaled_rows", "halves"):
            for thr in (0.0, 6.0):
                seed += 1
                out.append((fam, seed, rows, cols, thr))
    return out


def int8_input(fam, seed, rows, cols):
    if fam == "halves":
        # Rows whose absmax a is 100 + r (not a power of two) and whose values are
        # (k + 0.5)·a/127 in f16: x·127/a lands on .5 up to the reciprocal's rounding.
        a = 100.0 + torch.arange(rows, dtype=torch.float32)
        k = (torch.arange(rows * cols, dtype=torch.int64).reshape(rows, cols) * 7 + seed) % 127
        x = ((k.to(torch.float32) + 0.5) * a[:, None] / 127.0).half()
        x[:, 0] = a.half()
        return x
    x = values(seed, rows * cols).reshape(rows, cols) * 4.0
    if fam == "scaled_rows":
        x = x * row_scales(rows)[:, None]
    x[:, cols // 2] *= 3.0  # an outlier column above 6 in most rows
    return x.half()


PTX = r"""
.version 7.0
.target sm_80
.address_size 64
.visible .entry k_OP(.param .u64 pin, .param .u64 pout, .param .u32 n) {
  .reg .pred p; .reg .b32 r<6>; .reg .b64 rd<8>; .reg .f32 f<4>;
  ld.param.u64 rd1, [pin]; ld.param.u64 rd2, [pout]; ld.param.u32 r1, [n];
  mov.u32 r2, %ctaid.x; mov.u32 r3, %ntid.x; mov.u32 r4, %tid.x;
  mad.lo.s32 r5, r2, r3, r4;
  setp.ge.u32 p, r5, r1;
  @p bra DONE;
  cvta.to.global.u64 rd3, rd1; cvta.to.global.u64 rd4, rd2;
  mul.wide.u32 rd5, r5, 4;
  add.s64 rd6, rd3, rd5; add.s64 rd7, rd4, rd5;
  ld.global.f32 f1, [rd6];
  mov.f32 f3, 0f3F800000;
  BODY
  st.global.f32 [rd7], f2;
DONE:
  ret;
}
"""
OPS = {
    "rcp_approx_ftz": "rcp.approx.ftz.f32 f2, f1;",
    "div_approx_ftz": "div.approx.ftz.f32 f2, f3, f1;",
    "div_full_ftz": "div.full.ftz.f32 f2, f3, f1;",
}


def reciprocal_tables(out_dir):
    """ulp distance from the correctly rounded 1/x of each candidate instruction, for every
    x = 1.m (m = 0 … 2^23-1), as int8 in mantissa order, xz-compressed."""
    torch.cuda.init()
    torch.zeros(1, device="cuda")
    cu = ctypes.CDLL("libcuda.so.1")
    n = 1 << 23
    x = (torch.arange(n, dtype=torch.int64) | 0x3F800000).to(torch.int32).view(torch.float32).cuda()
    rn = (1.0 / x).view(torch.int32).to(torch.int64)  # torch's CUDA division is IEEE
    assert torch.equal(rn.cpu(), (1.0 / x.cpu()).view(torch.int32).to(torch.int64)), "CPU and GPU 1/x differ"
    summary = {}
    for name, body in OPS.items():
        src = PTX.replace("OP", name).replace("BODY", body).encode() + b"\0"
        mod, fn = ctypes.c_void_p(), ctypes.c_void_p()
        assert cu.cuModuleLoadData(ctypes.byref(mod), src) == 0, name
        assert cu.cuModuleGetFunction(ctypes.byref(fn), mod, ("k_" + name).encode()) == 0, name
        out = torch.empty_like(x)
        a, b, c = ctypes.c_uint64(x.data_ptr()), ctypes.c_uint64(out.data_ptr()), ctypes.c_uint32(n)
        args = (ctypes.c_void_p * 3)(*[ctypes.cast(ctypes.byref(v), ctypes.c_void_p) for v in (a, b, c)])
        assert cu.cuLaunchKernel(fn, n // 256, 1, 1, 256, 1, 1, 0, None, args, None) == 0, name
        torch.cuda.synchronize()
        d = out.view(torch.int32).to(torch.int64) - rn
        hist = {int(k): int(v) for k, v in zip(*torch.unique(d, return_counts=True))}
        # The same instruction in other binades: is the result the [1, 2) one scaled?
        xs = (x[::97] * 2.0 ** 37, x[::89] * 2.0 ** -41)
        scaled_ok = []
        for xx, s in zip(xs, (2.0 ** -37, 2.0 ** 41)):
            o2 = torch.empty_like(xx)
            a2, b2, c2 = ctypes.c_uint64(xx.data_ptr()), ctypes.c_uint64(o2.data_ptr()), ctypes.c_uint32(xx.numel())
            args2 = (ctypes.c_void_p * 3)(*[ctypes.cast(ctypes.byref(v), ctypes.c_void_p) for v in (a2, b2, c2)])
            assert cu.cuLaunchKernel(fn, (xx.numel() + 255) // 256, 1, 1, 256, 1, 1, 0, None, args2, None) == 0
            torch.cuda.synchronize()
            base = out[::97] if s < 1 else out[::89]
            scaled_ok.append(bool(torch.equal(o2, base * s)))
        summary[name] = {"ulp_histogram": hist, "binade_invariant": scaled_ok}
        assert d.abs().max() < 128
        with lzma.open(os.path.join(out_dir, f"rcp-{name}.i8.xz"), "wb", preset=9) as f:
            f.write(d.to(torch.int8).cpu().numpy().tobytes())
    return summary


def main(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    meta = {"bitsandbytes": bnb.__version__, "torch": torch.__version__,
            "device": torch.cuda.get_device_name(0), "generator": "bench/peers/bnb_shapes.py",
            "four_bit": [], "int8": []}
    tensors = {}
    for i, (fam, seed, rows, cols, dt, qt, bs, nested) in enumerate(four_bit_cases()):
        x = tensor(fam, seed, rows, cols, DTYPES[dt])
        key = f"q{i:04d}"
        try:
            packed, st = F.quantize_4bit(x.cuda(), blocksize=bs, compress_statistics=nested, quant_type=qt)
        except Exception as e:  # a block size this build does not offer
            meta["four_bit"].append({"key": key, "error": str(e)[:200]})
            continue
        tensors[key + ".packed"] = packed.flatten().cpu().contiguous()
        if nested:
            tensors[key + ".qabsmax"] = st.absmax.flatten().cpu().contiguous()
            tensors[key + ".offset"] = st.offset.reshape(1).float().cpu().contiguous()
            tensors[key + ".absmax2"] = st.state2.absmax.flatten().float().cpu().contiguous()
        else:
            tensors[key + ".absmax"] = st.absmax.flatten().float().cpu().contiguous()
        meta["four_bit"].append({"key": key, "family": fam, "seed": seed, "rows": rows, "cols": cols,
                                 "dtype": dt, "quant_type": qt, "blocksize": bs, "double_quant": nested})
    for i, (fam, seed, rows, cols, thr) in enumerate(int8_cases()):
        x = int8_input(fam, seed, rows, cols)
        key = f"i{i:04d}"
        CB, SCB, cols_idx = F.int8_vectorwise_quant(x.cuda(), threshold=thr)
        tensors[key + ".x"] = x.contiguous()  # f16: the inputs travel, they are small
        tensors[key + ".CB"] = CB.cpu().contiguous()
        tensors[key + ".SCB"] = SCB.float().cpu().contiguous()
        meta["int8"].append({"key": key, "family": fam, "seed": seed, "rows": rows, "cols": cols,
                             "threshold": thr,
                             "outlier_cols": [] if cols_idx is None else cols_idx.cpu().tolist()})
    meta["reciprocal"] = reciprocal_tables(out_dir)
    save_file(tensors, os.path.join(out_dir, "bnb-0.50.2-shapes.safetensors"))
    with open(os.path.join(out_dir, "bnb-0.50.2-shapes.json"), "w") as f:
        json.dump(meta, f, indent=1)
    print(json.dumps(meta["reciprocal"]))
    print(len(meta["four_bit"]), "4-bit cases,", len(meta["int8"]), "int8 cases")


if __name__ == "__main__":
    main(sys.argv[1])
