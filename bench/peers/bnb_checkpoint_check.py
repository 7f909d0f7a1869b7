#!/usr/bin/env python3
"""llq's bitsandbytes-4bit export against transformers + bitsandbytes (GPU machine).

    bnb_checkpoint_check.py F32_DIR LLQ_EXPORT TEXT LLQ_RUN OUT

- F32_DIR: the model as an HF f32 directory (`llq-host convert`), the same weights llq
  quantized; LLQ_EXPORT: `llq-host quantize --quant plugins/nf4.so --opt double_quant=true
  --export hf-bnb`; TEXT: the text llq scored; LLQ_RUN: `llq-host run --native` on LLQ_EXPORT
  with `--save-logprobs` (llama.cpp-style u16 rows, host/src/results/logprobs.rs).

1. transformers quantizes F32_DIR with BitsAndBytesConfig(nf4, double quant, uint8 storage)
   and `save_pretrained`s it: a real bitsandbytes checkpoint (OUT/realbnb). Every tensor is
   compared with llq's export byte for byte (the quant-state JSON parsed).
2. transformers loads LLQ_EXPORT (bitsandbytes Linear4bit layers) and computes next-token
   log-probabilities on TEXT (f32 compute, and bf16); they are compared with llq's rows.
Writes OUT/bnb_checkpoint_check.json and prints a summary.
"""
import json
import os
import struct
import sys

import numpy as np
import torch


def read_logprobs(run_dir):
    d = os.path.join(run_dir, "logprobs")
    files = [f for f in os.listdir(d) if f != "manifest.json"]
    assert len(files) == 1, files
    b = open(os.path.join(d, files[0]), "rb").read()
    assert b[:8] == b"LLQLPB01", b[:8]
    vocab, _window = struct.unpack_from("<II", b, 8)
    at, targets, rows = 16, [], []
    rec = 12 + 2 * vocab
    while at < len(b):
        t, scale, lo = struct.unpack_from("<Iff", b, at)
        q = np.frombuffer(b, dtype="<u2", count=vocab, offset=at + 12).astype(np.float64)
        targets.append(t)
        rows.append(lo + scale * q)
        at += rec
    return np.array(targets), np.stack(rows)


def compare_tensors(a_path, b_path):
    from safetensors.numpy import load_file

    a, b = load_file(a_path), load_file(b_path)
    out = {"only_in_real": sorted(set(a) - set(b)), "only_in_llq": sorted(set(b) - set(a)), "tensors": 0,
           "identical": 0, "differing": []}
    for k in sorted(set(a) & set(b)):
        out["tensors"] += 1
        x, y = a[k], b[k]
        if ".quant_state." in k:
            jx, jy = json.loads(bytes(x.tolist())), json.loads(bytes(y.tolist()))
            same = jx == jy
            if not same:
                out["differing"].append({"tensor": k, "real": jx, "llq": jy})
            out["identical"] += same
            continue
        same = x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes()
        if same:
            out["identical"] += 1
        else:
            diff = None
            if x.shape == y.shape:
                diff = float(np.mean(x.view(np.uint8) != y.view(np.uint8)))
            out["differing"].append({"tensor": k, "real": [str(x.dtype), list(x.shape)],
                                     "llq": [str(y.dtype), list(y.shape)], "byte_fraction_differing": diff})
    return out


def main(f32_dir, llq_export, text_path, llq_run, out):
    import bitsandbytes as bnb
    import transformers
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig, PreTrainedTokenizerFast

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    os.makedirs(out, exist_ok=True)
    report = {"torch": torch.__version__, "transformers": transformers.__version__, "bitsandbytes": bnb.__version__,
              "device": torch.cuda.get_device_name(0)}

    # 1. A real bitsandbytes checkpoint of the same weights, compared tensor by tensor.
    cfg = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                             bnb_4bit_compute_dtype=torch.float32, bnb_4bit_quant_storage=torch.uint8)
    real = AutoModelForCausalLM.from_pretrained(f32_dir, quantization_config=cfg, dtype=torch.float32,
                                                device_map="cuda")
    real_dir = os.path.join(out, "realbnb")
    real.save_pretrained(real_dir)
    report["real_vs_llq_export"] = compare_tensors(os.path.join(real_dir, "model.safetensors"),
                                                   os.path.join(llq_export, "model.safetensors"))
    with open(os.path.join(out, "bnb_checkpoint_check.json"), "w") as f:
        json.dump(report, f, indent=1)
    del real
    torch.cuda.empty_cache()

    # 2. llq's export loaded by transformers + bitsandbytes, against llq's own log-probs.
    tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(llq_export, "tokenizer.json"))
    ids = tok(open(text_path, encoding="utf-8").read().strip(), add_special_tokens=False)["input_ids"]
    targets, llq_lp = read_logprobs(llq_run)
    report["tokens"] = len(ids)
    report["targets_match_tokenizer"] = bool(len(targets) == len(ids) - 1 and np.array_equal(targets, ids[1:]))
    assert report["targets_match_tokenizer"], (targets[:10], ids[:10])
    inputs = torch.tensor([ids[:-1]], device="cuda")
    for name, dtype in (("f32", torch.float32), ("bf16", torch.bfloat16)):
        m = AutoModelForCausalLM.from_pretrained(llq_export, dtype=dtype, device_map="cuda")
        n4 = sum(isinstance(x, bnb.nn.Linear4bit) for x in m.modules())
        with torch.no_grad():
            lp = torch.log_softmax(m(inputs).logits[0].float(), dim=-1).double().cpu().numpy()
        # llq's rows keep the top 16 nats of each row (to 1.2e-4 nats); entries further down sit
        # at the row's floor. Compare above the floor; KL(P_hf ‖ P_llq) over those entries (the
        # rest carry < e^-16 of probability each).
        top = llq_lp > llq_lp.min(axis=1, keepdims=True) + 1e-3
        d = np.abs(lp - llq_lp)[top]
        p_hf = np.exp(lp)
        kl = np.sum(np.where(top, p_hf * (lp - llq_lp), 0.0), axis=1)
        report[f"transformers_{name}"] = {
            "linear4bit_layers": int(n4),
            "max_abs_logprob_diff_top16": float(d.max()),
            "mean_abs_logprob_diff_top16": float(d.mean()),
            "mean_kl_hf_vs_llq": float(kl.mean()),
            "max_kl_hf_vs_llq": float(kl.max()),
            "top1_agreement": float(np.mean(lp.argmax(1) == llq_lp.argmax(1))),
            "target_logprob_max_abs_diff": float(np.abs(lp[np.arange(len(targets)), targets]
                                                        - llq_lp[np.arange(len(targets)), targets]).max()),
        }
        del m
        torch.cuda.empty_cache()
    with open(os.path.join(out, "bnb_checkpoint_check.json"), "w") as f:
        json.dump(report, f, indent=1)
    print(json.dumps(report, indent=1)[:6000])


def compare_runs(a, b):
    """Two llq runs' stored log-probs: max |Δ| and whether the rows are identical."""
    ta, la = read_logprobs(a)
    tb, lb = read_logprobs(b)
    same_t = bool(np.array_equal(ta, tb))
    print(json.dumps({"targets_identical": same_t, "rows_identical": bool(same_t and np.array_equal(la, lb)),
                      "max_abs_diff": float(np.abs(la - lb).max()) if same_t else None}))


if __name__ == "__main__":
    if sys.argv[1] == "runs":
        compare_runs(sys.argv[2], sys.argv[3])
    else:
        main(*sys.argv[1:6])
