#!/usr/bin/env bash
# Fused prefill attention (issue #13) on the GPU machine, in one call: llq-host bench's prefill
# rows on the synthetic Llama-3.2-1B (exact shapes, random weights) with the fused kernel and,
# in the same process, candle's unfused attention (each row's `unfused`: time, logits distance,
# greedy agreement), logits against the CPU f32 model (one prompt, and a left-padded batch),
# the synthetic SmolLM2-135M shapes (9 heads over 3 kv heads) the same way, then transformers'
# eager and SDPA prefill on the same model (bench/peers/hf_bench.py --prefill-only).
#   bench/gpu_prefill.sh OUT
# Carry: dist/llq-host-cuda.xz dist/speed13-bundle.tar.xz (see bench/gpu_speed_13.sh).
# Environment: ROWS (as gpu_speed_13.sh), PROMPTS (default 128,512,2048), BATCHES (decode, default 1).
set -u
FINAL="${1:?usage: bench/gpu_prefill.sh OUT}"
OUT="$(mktemp -d)"; mkdir -p "$FINAL"
trap 'tar czf "$FINAL/gpu-prefill.tgz" -C "$OUT" . ; rm -rf "$OUT"' EXIT
source bench/gpu_lib.sh
export RUST_LOG=info
# The fused kernel is the default (host/src/gpu/prefill.rs); set anyway, so that binaries
# from before that change measure the same thing.
export LLQ_PREFILL_ATTENTION=flash
[ -x "$BIN" ] || unpack_binary
tar xJf dist/speed13-bundle.tar.xz
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv > "$OUT/device.csv" 2>&1
B="--model synthetic:llama-3.2-1b --device cuda --prompt-lens ${PROMPTS:-128,512,2048} --batch-sizes ${BATCHES:-1} --decode-steps 32 --repeats 5 --decode graph"
printf '%s\n' "${ROWS:-bf16 none
nf4 nf4}" | bench_rows "$B"
python3 bench/peers/hf_bench.py "$OUT/peers" --prefill-only > "$OUT/peers.txt" 2> "$OUT/peers.log"
echo "peers: exit $?"; tail -4 "$OUT/peers.txt"; grep -i "error\|failed" "$OUT/peers.log" | tail -5
"$BIN" bench --model synthetic:smollm2-135m --device cuda --quant plugins/nf4.so --prompt-lens 128,2048 --batch-sizes 1 \
  --decode-steps 32 --repeats 3 --decode graph --out "$OUT/bench-smol-nf4.json" > "$OUT/bench-smol-nf4.txt" 2> "$OUT/bench-smol-nf4.log"
echo "bench smol-nf4: exit $?"; cat "$OUT/bench-smol-nf4.txt"
