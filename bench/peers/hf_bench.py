#!/usr/bin/env python3
"""The seeds' pipeline as a peer baseline: transformers (bf16, eager and SDPA attention) and
transformers + bitsandbytes (NF4, FP4, LLM.int8) on a synthetic Llama-3.2-1B (its exact
config, seeded random bf16 weights: speed does not depend on weight values), same shapes and
timing method as `llq-host bench`.

Run on the GPU machine (torch and transformers there; the bitsandbytes wheel travels in .whl/):
    python3 bench/peers/hf_bench.py OUT_DIR [--quick]
Measures, per method: model footprint on the device, peak device memory, prefill latency at
prompt lengths 128/512/2048 (batch 1; 128 is also the time to first token), decode ms/step
and tokens/s at batch 1/4/16/64 after a 128-token context; CUDA events, warm-up first,
median (and min/max) of repeats. Also the device's copy bandwidth (bytes read + written), and
for each decode case the bytes one step must read (weights incl. the tied lm_head + KV cache)
over that bandwidth: the roofline floor, and the fraction of it achieved.
Fairness (issue 13's review): prefills ask for the last position's logits only
(`logits_to_keep=1`), as llq computes; `stored_bytes` counts every byte a method keeps on the
device — parameters, buffers and bitsandbytes' quantization state outside them (4-bit absmax,
nested absmax, code and offset; LLM.int8's SCB row scales), which `get_memory_footprint()`
misses — and is what the roofline uses.
The stronger peer (`--compiled`, on by default; `--no-compiled` skips it): bf16 and NF4 through
`generate(cache_implementation="static")`, where transformers compiles the decode forward with
torch.compile ("reduce-overhead": CUDA graphs, the gpt-fast recipe) — ms/step from
(t(1 + STEPS new tokens) − t(1 new token)) / STEPS, paired per repeat, batch 1. Where
transformers declines to compile (it does for bitsandbytes models: 0 graphs), the row records
that as its error; `--force-compile-bnb` compiles `model.forward` itself and says so
(`forward_compiled_by_us`, `compile_mode`) — it crashed the process on the H100 (see
FORCE_COMPILE). `--compiled-only` runs just these rows.
`--prefill-only` runs the bf16 eager and SDPA prefill rows alone.
Writes OUT_DIR/hf_bench.json and prints a Markdown table last.
"""
import json
import os
import statistics
import sys
import tempfile
import time

import torch

QUICK = "--quick" in sys.argv
OUT = sys.argv[1] if len(sys.argv) > 1 and not sys.argv[1].startswith("--") else "."
PROMPTS = [128, 512] if QUICK else [128, 512, 2048]
# `--prefill-only`: the bf16 eager and SDPA prefill rows alone (the fused-attention A/B).
PREFILL_ONLY = "--prefill-only" in sys.argv
BATCHES = [] if PREFILL_ONLY else [1, 4] if QUICK else [1, 4, 16, 64]
CONTEXT = 128
STEPS = 16 if QUICK else 32
REPEATS = 3 if QUICK else 5
COMPILED = "--no-compiled" not in sys.argv and not PREFILL_ONLY
COMPILED_ONLY = "--compiled-only" in sys.argv  # only the static cache + torch.compile rows
# Compile a bitsandbytes model's forward ourselves where transformers declines. Opt-in: on
# the H100 (torch 2.11, bitsandbytes 0.50.2) it first failed inside generate() ("accessing
# tensor output of CUDAGraphs that has been overwritten"), and with a step mark and copied
# logits torch skipped CUDA graphs ("mutated inputs": the static cache's counters) and the
# process then died of a segmentation fault, taking the remaining rows with it
# (results/h100/speed13/mma/peers-min2).
FORCE_COMPILE = "--force-compile-bnb" in sys.argv
COMPILED_BATCHES = [1]

# meta-llama/Llama-3.2-1B config.json
CONFIG = dict(
    vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
    num_attention_heads=32, num_key_value_heads=8, head_dim=64, max_position_embeddings=131072,
    rms_norm_eps=1e-5, rope_theta=500000.0, tie_word_embeddings=True,
    rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                  "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
    bos_token_id=128000, eos_token_id=128001,
)


def events_ms(fn, warmup=2, repeats=REPEATS):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
    return times


def spread(ts):
    return {"median": statistics.median(ts), "min": min(ts), "max": max(ts)}


def copy_bandwidth():
    n = 1 << 30  # 1 GiB
    src = torch.randint(0, 255, (n,), dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    ts = events_ms(lambda: dst.copy_(src), warmup=3, repeats=10)
    return 2 * n / (statistics.median(ts) / 1e3)  # bytes read + written per second


def ids(b, n, seed):
    g = torch.Generator(device="cpu").manual_seed(seed)
    return torch.randint(0, CONFIG["vocab_size"], (b, n), generator=g).cuda()


def stored_bytes(model):
    """Every byte the model keeps on the device, each storage once: parameters and buffers,
    and the bitsandbytes quantization state that lives outside them."""
    seen, total = set(), 0

    def add(t):
        nonlocal total
        if isinstance(t, torch.Tensor) and t.device.type == "cuda" and t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()

    for t in list(model.parameters()) + list(model.buffers()):
        add(t)
        qs = getattr(t, "quant_state", None)  # bnb Params4bit
        while qs is not None:
            for k in ("absmax", "code", "offset"):
                add(getattr(qs, k, None))
            qs = getattr(qs, "state2", None)  # double quantization: the absmax's own state
        add(getattr(t, "SCB", None))  # bnb Int8Params: one f32 scale a row
    return total


@torch.inference_mode()
def bench_model(model, name, bw):
    cfg = model.config
    weight_bytes = stored_bytes(model)
    torch.cuda.reset_peak_memory_stats()
    rows = {"method": name, "footprint_bytes": model.get_memory_footprint(), "stored_bytes": weight_bytes,
            "prefill": [], "decode": []}
    for n in PROMPTS:
        x = ids(1, n, n)
        ts = events_ms(lambda: model(input_ids=x, use_cache=True, logits_to_keep=1))
        rows["prefill"].append({"prompt_tokens": n, "ms": spread(ts), "tokens_per_s": n / (statistics.median(ts) / 1e3)})
    kv_per_token = cfg.num_hidden_layers * 2 * cfg.num_key_value_heads * cfg.head_dim * 2  # bf16 K and V
    for b in BATCHES:
        per_step = []
        for r in range(REPEATS + 1):
            out = model(input_ids=ids(b, CONTEXT, 1000 + r), use_cache=True, logits_to_keep=1)
            pkv = out.past_key_values
            nxt = out.logits[:, -1:].argmax(-1)
            torch.cuda.synchronize()
            a, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            for _ in range(STEPS):
                out = model(input_ids=nxt, past_key_values=pkv, use_cache=True)
                pkv = out.past_key_values
                nxt = out.logits[:, -1:].argmax(-1)
            e.record()
            torch.cuda.synchronize()
            if r > 0:  # the first is warm-up
                per_step.append(a.elapsed_time(e) / STEPS)
            del out, pkv
        med = statistics.median(per_step)
        step_bytes = weight_bytes + b * (CONTEXT + STEPS // 2) * kv_per_token
        floor_ms = step_bytes / bw * 1e3
        rows["decode"].append({"batch": b, "ms_per_step": spread(per_step), "tokens_per_s": b / (med / 1e3),
                               "bytes_per_step": step_bytes, "roofline_ms": floor_ms, "roofline_fraction": floor_ms / med})
    rows["peak_memory_bytes"] = torch.cuda.max_memory_allocated()
    return rows


@torch.inference_mode()
def bench_compiled(model, name, bw):
    """Decode through generate() with a static cache, which transformers compiles (CUDA graphs)."""
    cfg = model.config
    kv_per_token = cfg.num_hidden_layers * 2 * cfg.num_key_value_heads * cfg.head_dim * 2
    weight_bytes = stored_bytes(model)
    rows = {"method": name, "stored_bytes": weight_bytes, "decode": [],
            "how": "generate(cache_implementation='static'), transformers' automatic torch.compile of the "
                   "decode step; ms/step = (t(1+STEPS tokens) - t(1 token)) / STEPS, paired per repeat"}
    from torch._dynamo.utils import counters
    forced = False
    for b in COMPILED_BATCHES:
        x = ids(b, CONTEXT, 7)
        mask = torch.ones_like(x)

        def gen(n):
            out = model.generate(input_ids=x, attention_mask=mask, max_new_tokens=n, min_new_tokens=n,
                                 do_sample=False, cache_implementation="static", pad_token_id=0)
            assert out.shape[1] == CONTEXT + n, out.shape
            return out

        graphs0 = counters["stats"]["unique_graphs"]
        t0 = time.time()
        for _ in range(2):  # compile and record the graphs of both lengths
            gen(1 + STEPS)
            gen(1)
        if counters["stats"]["unique_graphs"] == graphs0 and not FORCE_COMPILE:
            raise RuntimeError("transformers did not compile this model (0 dynamo graphs; it declines "
                               "bitsandbytes models); --force-compile-bnb compiles its forward anyway")
        if counters["stats"]["unique_graphs"] == graphs0 and not forced:
            # transformers' auto-compile declined (it skips bitsandbytes-quantized models):
            # compile the forward ourselves, as gpt-fast does, graph breaks allowed. Under CUDA
            # graphs ("reduce-overhead") a replay overwrites the previous step's outputs, which
            # generate() still reads (the first try failed with "accessing tensor output of
            # CUDAGraphs that has been overwritten"): each call marks a new step and hands out
            # a copy of the logits, as torch's docs advise. Should that fail too, the forward
            # is compiled without CUDA graphs ("default"), and the row says which mode ran.
            eager_forward = model.forward
            mode = "reduce-overhead"
            compiled = torch.compile(eager_forward, mode=mode, fullgraph=False)

            def forward(*a, **k):
                torch.compiler.cudagraph_mark_step_begin()
                out = compiled(*a, **k)
                out.logits = out.logits.clone()
                return out

            model.forward = forward
            forced = True
            try:
                for _ in range(2):
                    gen(1 + STEPS)
                    gen(1)
            except Exception as e:  # noqa: BLE001
                rows["reduce_overhead_error"] = repr(e)[:300]
                mode = "default"
                model.forward = torch.compile(eager_forward, mode=mode, fullgraph=False)
                for _ in range(2):
                    gen(1 + STEPS)
                    gen(1)
            rows["compile_mode"] = mode
        torch.cuda.synchronize()
        warm_s = time.time() - t0
        long, short = [], []
        for _ in range(REPEATS):
            long += events_ms(lambda: gen(1 + STEPS), warmup=0, repeats=1)
            short += events_ms(lambda: gen(1), warmup=0, repeats=1)
        per_step = [(l_ - s_) / STEPS for l_, s_ in zip(long, short)]
        med = statistics.median(per_step)
        step_bytes = weight_bytes + b * (CONTEXT + STEPS // 2) * kv_per_token
        floor_ms = step_bytes / bw * 1e3
        rows["decode"].append({"batch": b, "ms_per_step": spread(per_step), "tokens_per_s": b / (med / 1e3),
                               "bytes_per_step": step_bytes, "roofline_ms": floor_ms, "roofline_fraction": floor_ms / med,
                               "warmup_and_compile_s": warm_s, "forward_compiled_by_us": forced,
                               "dynamo_graphs_compiled": counters["stats"]["unique_graphs"] - graphs0})
    return rows


def main():
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig, LlamaConfig, LlamaForCausalLM
    import transformers
    os.makedirs(OUT, exist_ok=True)
    t0 = time.time()
    dev = torch.cuda.get_device_properties(0)
    bw = copy_bandwidth()
    meta = {"device": f"{dev.name}, {dev.multi_processor_count} SMs, {dev.total_memory / 2**30:.0f} GiB",
            "torch": torch.__version__, "transformers": transformers.__version__, "copy_bandwidth_Bps": bw,
            "context": CONTEXT, "decode_steps": STEPS, "repeats": REPEATS}
    try:
        import bitsandbytes
        meta["bitsandbytes"] = bitsandbytes.__version__
    except Exception as e:  # noqa: BLE001
        meta["bitsandbytes"] = f"unavailable: {e}"
    print(json.dumps(meta), flush=True)

    torch.manual_seed(0)
    config = LlamaConfig(**CONFIG)
    with torch.device("cuda"):
        base = LlamaForCausalLM(config).to(torch.bfloat16)
    tmp = tempfile.mkdtemp()
    base.save_pretrained(tmp)
    results = []
    for attn in [] if COMPILED_ONLY else ["eager", "sdpa"]:
        base.config._attn_implementation = attn
        base.model.config._attn_implementation = attn
        results.append(bench_model(base.eval(), f"transformers bf16 ({attn})", bw))
        print(json.dumps(results[-1]), flush=True)
    if COMPILED:
        try:
            results.append(bench_compiled(base.eval(), "transformers bf16 (static cache + torch.compile)", bw))
        except Exception as e:  # noqa: BLE001
            results.append({"method": "transformers bf16 (static cache + torch.compile)", "error": repr(e)})
        print(json.dumps(results[-1]), flush=True)
    del base
    torch.cuda.empty_cache()
    quants = {
        "bnb nf4": BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16),
        "bnb fp4": BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="fp4", bnb_4bit_compute_dtype=torch.bfloat16),
        "bnb int8": BitsAndBytesConfig(load_in_8bit=True, llm_int8_threshold=6.0),
    }
    for name, qc in quants.items():
        if PREFILL_ONLY or (COMPILED_ONLY and name != "bnb nf4"):
            continue
        try:
            m = AutoModelForCausalLM.from_pretrained(tmp, quantization_config=qc, dtype=torch.bfloat16, device_map="cuda", attn_implementation="sdpa")
            if not COMPILED_ONLY:
                results.append(bench_model(m.eval(), f"transformers+{name} (sdpa)", bw))
                print(json.dumps(results[-1]), flush=True)
            if COMPILED and name == "bnb nf4":
                try:
                    results.append(bench_compiled(m.eval(), f"transformers+{name} (static cache + torch.compile)", bw))
                except Exception as e:  # noqa: BLE001
                    results.append({"method": f"transformers+{name} (static cache + torch.compile)", "error": repr(e)})
                print(json.dumps(results[-1]), flush=True)
            del m
            torch.cuda.empty_cache()
        except Exception as e:  # noqa: BLE001
            print(f"{name} failed: {e!r}", flush=True)
            results.append({"method": name, "error": repr(e)})
    meta["wall_s"] = time.time() - t0
    with open(os.path.join(OUT, "hf_bench.json"), "w") as f:
        json.dump({"meta": meta, "results": results}, f, indent=1)
    print(f"\n{meta['device']}; copy bandwidth {bw / 1e12:.2f} TB/s; torch {meta['torch']}, transformers {meta['transformers']}, bitsandbytes {meta['bitsandbytes']}")
    hdr = ["method", "stored GB (HF footprint)", "peak GB"] + [f"prefill {n} ms" for n in PROMPTS] + [f"decode b={b} ms/step (tok/s, roofline %)" for b in BATCHES]
    print("| " + " | ".join(hdr) + " |\n|" + " --- |" * len(hdr))
    for r in results:
        if "error" in r:
            print(f"| {r['method']} | failed: {r['error'][:80]} |")
            continue
        foot = f" ({r['footprint_bytes'] / 1e9:.2f})" if "footprint_bytes" in r else ""
        cells = [r["method"], f"{r['stored_bytes'] / 1e9:.3f}{foot}",
                 f"{r['peak_memory_bytes'] / 1e9:.2f}" if "peak_memory_bytes" in r else "–"]
        cells += [f"{p['ms']['median']:.2f}" for p in r.get("prefill", [])] or ["–"] * len(PROMPTS)
        by_b = {d["batch"]: d for d in r["decode"]}
        cells += [f"{by_b[b]['ms_per_step']['median']:.2f} ({by_b[b]['tokens_per_s']:.0f}, {100 * by_b[b]['roofline_fraction']:.0f}%)"
                  if b in by_b else "–" for b in BATCHES]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
