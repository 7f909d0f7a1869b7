#!/usr/bin/env bash
# The element-wise prefill kernels (issue #13) against candle's ops, bit for bit: `bench` with
# checks times every prefill again with the kernels flipped (`pointwise_flipped`); its logits
# distance should be 0 now that RoPE rounds as candle's contracted kernel does. bf16 and NF4 on
# synthetic Llama-3.2-1B, NF4 on the synthetic SmolLM2-135M shapes (9 heads over 3).
#   bench/gpu_pointwise_verify.sh OUT     (carry dist/llq-host-cuda.xz dist/speed13-bundle.tar.xz)
set -u
OUT="${1:?usage: bench/gpu_pointwise_verify.sh OUT}"; mkdir -p "$OUT"
source bench/gpu_lib.sh
[ -x "$BIN" ] || unpack_binary
tar xJf dist/speed13-bundle.tar.xz
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv > "$OUT/device.csv" 2>&1
for spec in "llama-3.2-1b none" "llama-3.2-1b nf4" "smollm2-135m nf4"; do
  set -- $spec; q=""; [ "$2" = none ] || q="--quant plugins/$2.so"
  "$BIN" bench --model synthetic:$1 --device cuda $q --prompt-lens 128,2048 --batch-sizes 1 --decode-steps 16 \
    --repeats 5 --decode graph --out "$OUT/verify-$1-$2.json" > "$OUT/verify-$1-$2.txt" 2>&1
  echo "== $1 $2: exit $?"; grep -E "prefill|fused kernels|candle|element-wise|CPU f32|decode batch" "$OUT/verify-$1-$2.txt"
done
# With dist/gpu-bundle.tar.xz carried: GPTQ-1B calibration with the pool released, then kept
# (LLQ_POOL), the setup before block 0 included (a 7 s gap there in the call before).
if [ -f dist/gpu-bundle.tar.xz ]; then
  unpack_bundle
  head -c 20000 data/gutenberg/evaluation.txt > /tmp/eval-short.txt
  for pool in release keep; do
    LLQ_PREFILL_POINTWISE=unfused LLQ_POOL=$pool RUST_LOG=info,llq_host=debug /usr/bin/time -f "pool $pool: %e s wall" timeout 120 "$BIN" run \
      --model synthetic:llama-3.2-1b --quant plugins/gptq.so --opt bits=4 --opt group_size=128 \
      --task tasks/perplexity.wasm --data /tmp/eval-short.txt --task-opt split=none --device cuda \
      --out "$OUT/gptq1b-$pool" > "$OUT/gptq1b-$pool.txt" 2> "$OUT/gptq1b-$pool.log"
    echo "gptq1b pool $pool: exit $?"; grep -E "synthetic:llama|GPTQ on the GPU|calibration:|wall" "$OUT/gptq1b-$pool.log" | cut -c1-200; grep perplexity "$OUT/gptq1b-$pool.txt"
  done
fi
