#!/usr/bin/env python3
"""Generate bit-exact reference vectors from real bitsandbytes (CUDA kernels) for llq's tests.

Run on the GPU machine (torch there; the bitsandbytes wheel travels in .whl/):
    python3 bench/peers/bnb_reference.py OUT.json
The JSON is committed as tests/fixtures/bnb/bnb-0.50.2-reference.json and the plugins' tests
compare their packed bytes, absmax values and dequantized outputs against it bit for bit.
Floats are stored as IEEE-754 bit patterns (u32 for f32, u16 for f16) so nothing is lost.
"""
import json
import struct
import sys

import torch
import bitsandbytes as bnb
import bitsandbytes.functional as F


def f32_bits(t):
    t = t.detach().float().contiguous().cpu().view(torch.int32)
    return [int(v) & 0xFFFFFFFF for v in t.flatten().tolist()]


def f16_bits(t):
    t = t.detach().half().contiguous().cpu().view(torch.int16)
    return [int(v) & 0xFFFF for v in t.flatten().tolist()]


def hexbytes(t):
    return bytes(t.detach().contiguous().cpu().view(torch.uint8).flatten().tolist()).hex()


def crafted_inputs():
    """Small hand-made cases: ties on NF4/FP4 midpoints, zeros, equal blocks, partial blocks."""
    nf4_mid = [0.03979014977812767, 0.3893125355243683, 0.6427869200706482, 0.8614784181118011,
               0.5016634166240692, 0.2035212516784668, 0.2920137718319893, 0.1202552504837513,
               -0.33967943489551544, -0.13791173323988914, -0.045525018125772476,
               -0.23460740596055984, -0.6106329262256622, -0.4599952697753906, -0.8480964004993439]
    fp4_mid = [0.29166667, 0.583333, 0.8333333, 0.4166667, 0.0859375, 0.20833333, 0.00260417]
    ties = [1.0] + nf4_mid + [-v for v in fp4_mid] + fp4_mid + [0.0] * (64 - 1 - len(nf4_mid) - 2 * len(fp4_mid))
    cases = {
        "ties": ties,
        "zeros": [0.0] * 64,
        "all_equal": [0.75] * 64,
        "pm_absmax": [3.5, -3.5] * 32,
        "partial_odd": [((i * 37) % 23 - 11) / 7.0 for i in range(64 + 37)],
    }
    return {k: torch.tensor(v, dtype=torch.float32) for k, v in cases.items()}


def four_bit(name, x, quant_type, blocksize, nested):
    xc = x.cuda()
    packed, st = F.quantize_4bit(xc, blocksize=blocksize, compress_statistics=nested, quant_type=quant_type)
    deq = F.dequantize_4bit(packed, st)
    rec = {
        "name": name, "quant_type": quant_type, "blocksize": blocksize, "double_quant": nested,
        "input_f32": f32_bits(x), "packed_hex": hexbytes(packed), "dequant_f32": f32_bits(deq),
    }
    if nested:
        rec["qabsmax_hex"] = hexbytes(st.absmax)
        rec["offset_f32"] = f32_bits(st.offset.reshape(1))[0]
        rec["state2_absmax_f32"] = f32_bits(st.state2.absmax)
        rec["state2_blocksize"] = st.state2.blocksize
    else:
        rec["absmax_f32"] = f32_bits(st.absmax)
    return rec


def main(out_path):
    torch.manual_seed(1234)
    recs = []
    for name, x in crafted_inputs().items():
        for qt in ("nf4", "fp4"):
            recs.append(four_bit(name, x, qt, 64, False))
    g = torch.randn(8, 512) * 0.02
    g[3, 17] = 0.9  # an outlier inside one block
    for qt in ("nf4", "fp4"):
        for bs in (64, 128):
            recs.append(four_bit("randn_8x512", g.flatten(), qt, bs, False))
        recs.append(four_bit("randn_8x512", g.flatten(), qt, 64, True))
    big = torch.randn(300 * 64) * 0.05  # 300 absmax values -> two 256-blocks for double quant
    for qt in ("nf4", "fp4"):
        recs.append(four_bit("randn_19200", big, qt, 64, True))

    dyn = F.create_dynamic_map(signed=True)

    # LLM.int8: weight quantization and the mixed-precision matmul, as transformers uses it.
    w = torch.randn(48, 64) * 0.05
    w[5, 9] = 0.8
    x = torch.randn(6, 64)
    x[:, 7] *= 12.0  # an outlier column (|x| >= 6 in some rows)
    x[2, 40] = -7.5  # a lone outlier
    int8 = {"w_f32": f32_bits(w), "x_f32": f32_bits(x), "rows": 48, "cols": 64, "m": 6, "cases": []}
    CB, SCB, _ = F.int8_vectorwise_quant(w.half().cuda())
    int8["CB_hex"] = hexbytes(CB)
    int8["SCB_f32"] = f32_bits(SCB)
    for thr in (0.0, 6.0):
        lin = bnb.nn.Linear8bitLt(64, 48, bias=False, has_fp16_weights=False, threshold=thr)
        lin.weight = bnb.nn.Int8Params(w.clone(), requires_grad=False, has_fp16_weights=False)
        lin = lin.cuda()
        with torch.no_grad():
            y = lin(x.half().cuda())
        int8["cases"].append({"threshold": thr, "y_f16": f16_bits(y)})

    out = {
        "generator": "bench/peers/bnb_reference.py",
        "bitsandbytes": bnb.__version__, "torch": torch.__version__,
        "device": torch.cuda.get_device_name(0),
        "dynamic_map_f32": f32_bits(dyn),
        "four_bit": recs, "int8": int8,
    }
    with open(out_path, "w") as f:
        json.dump(out, f)
    print("wrote", out_path, len(recs), "4-bit records")


if __name__ == "__main__":
    main(sys.argv[1])
