#!/usr/bin/env bash
# One device call for the fused element-wise prefill kernels and the kept memory pool
# (issue #13) and the GPTQ plugin's prologue on the pool (issue #11), in priority order:
# 1. bench/gpu_prefill.sh with LLQ_PREFILL_POINTWISE=fused: bf16 and NF4 prefill 128/512/2048
#    on synthetic Llama-3.2-1B, each prefill again with candle's ops alone (`unfused`) and with
#    the element-wise kernels off (`pointwise_flipped`: time and logits distance, expected 0),
#    transformers eager/SDPA on the same model, SmolLM2 shapes;
# 2. the memory pool A/B: `bench --no-checks` prefill 128/2048 and graph decode, LLQ_POOL=release
#    then keep, then release and keep again (interleaved, same process kind);
# 3. GPTQ-1B calibration with the new prologue (bench/gpu_speed_11.sh, pinned staging);
# 4. the prefill profile (ncu over llq with the fused kernels, torch.profiler over SDPA).
#   bench/gpu_prefill_pointwise.sh OUT
# Carry: dist/llq-host-cuda.xz dist/gpu-bundle.tar.xz dist/speed13-bundle.tar.xz
set -u
FINAL="${1:?usage: bench/gpu_prefill_pointwise.sh OUT}"
mkdir -p "$FINAL"
source bench/gpu_lib.sh
[ -x "$BIN" ] || unpack_binary
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv > "$FINAL/device.csv" 2>&1
date
LLQ_PREFILL_POINTWISE=fused bash bench/gpu_prefill.sh "$FINAL/prefill" 2>&1 | grep -v "^  fused prefill attention vs f32" | tail -60
date
P="--model synthetic:llama-3.2-1b --device cuda --prompt-lens 128,2048 --batch-sizes 1 --decode-steps 32 --repeats 7 --decode graph --no-checks"
for pool in release keep release keep; do
  LLQ_PREFILL_POINTWISE=fused LLQ_POOL=$pool "$BIN" bench $P > "$FINAL/pool-$pool.txt" 2>&1
  echo "pool $pool: exit $?"; grep -E "prefill|step|memory" "$FINAL/pool-$pool.txt" | head -8
done
date
SKIP_KERNELS=1 RUN_LIMIT=150 VARIANTS="gpu:gpu:pinned" bash bench/gpu_speed_11.sh "$FINAL/s11" 2>&1 | tail -14
date
LLQ_PREFILL_POINTWISE=fused bash bench/gpu_profile_prefill.sh "$FINAL/prof" 2>&1 | tail -60
date
