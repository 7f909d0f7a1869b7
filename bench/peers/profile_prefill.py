"""Where transformers' SDPA prefill of 2048 tokens spends its GPU time, kernel by kernel
(torch.profiler, CUPTI), on the synthetic Llama-3.2-1B of hf_bench.py, batch 1, one position's
logits kept (`logits_to_keep=1`, as llq). The counterpart of `ncu` over `llq-host bench` in
bench/gpu_profile_prefill.sh: the same model shapes, the same prompt length.
  python3 bench/peers/profile_prefill.py OUT_DIR [TOKENS]
Writes OUT_DIR/sdpa-kernels.txt (a table by kernel, CUDA time summed over REPEATS prefills)."""
import os
import sys

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, os.path.dirname(__file__))
from hf_bench import CONFIG  # noqa: E402

OUT = sys.argv[1]
T = int(sys.argv[2]) if len(sys.argv) > 2 else 2048
REPEATS = 5


def main():
    from transformers import LlamaConfig, LlamaForCausalLM
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)
    with torch.device("cuda"):
        m = LlamaForCausalLM(LlamaConfig(**CONFIG)).to(torch.bfloat16).eval()
    m.config._attn_implementation = "sdpa"
    m.model.config._attn_implementation = "sdpa"
    x = torch.randint(0, CONFIG["vocab_size"], (1, T), device="cuda")
    with torch.no_grad():
        for _ in range(3):
            m(input_ids=x, use_cache=True, logits_to_keep=1)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(REPEATS):
                m(input_ids=x, use_cache=True, logits_to_keep=1)
            torch.cuda.synchronize()
    table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=40, max_name_column_width=90)
    with open(os.path.join(OUT, "sdpa-kernels.txt"), "w") as f:
        f.write(f"transformers SDPA prefill, {T} tokens, batch 1, {REPEATS} prefills profiled\n{table}\n")
    print(table)


if __name__ == "__main__":
    main()
