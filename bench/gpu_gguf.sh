#!/usr/bin/env bash
# Issue #15's gguf CUDA decoders on the GPU, in one call: `llq-host kernels` checks every type's
# dequantize and fused matvec against the plugin's CPU dequantization (mismatch counts), then
# decode and prefill of the synthetic Llama-3.2-1B (its exact shapes, random weights: speed and
# size only) for bf16, NF4 and gguf q4_0 / q4_k / q6_k / q8_0, now packed on the GPU.
#   bench/gpu_gguf.sh OUT [kernels|bench|all]      carry dist/llq-host-cuda.xz dist/gguf-bundle.tar.xz
# (dist/gguf-bundle.tar.xz: plugins/gguf.so plugins/nf4.so, `tar cJf`.)
set -u
FINAL="${1:?usage: bench/gpu_gguf.sh OUT [kernels|bench|all]}"; WHAT="${2:-all}"
OUT="$(mktemp -d)"; mkdir -p "$FINAL"
trap 'tar czf "$FINAL/gpu-gguf.tgz" -C "$OUT" . ; rm -rf "$OUT"' EXIT
source bench/gpu_lib.sh
[ -x "$BIN" ] || unpack_binary
tar xJf dist/gguf-bundle.tar.xz
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv > "$OUT/device.csv" 2>&1
[ "$WHAT" = bench ] || for t in q4_0 q4_1 q5_0 q5_1 q8_0 q2_k q3_k q4_k q5_k q6_k; do
  "$BIN" kernels --quant plugins/gguf.so --opt type=$t --repeats 10 --out "$OUT/kernels-$t.json" > "$OUT/kernels-$t.txt" 2> "$OUT/kernels-$t.log"
  echo "kernels $t: exit $?"; cat "$OUT/kernels-$t.txt"
done
[ "$WHAT" = kernels ] && exit 0
M=synthetic:llama-3.2-1b
B="--model $M --device cuda --prompt-lens 128,512 --batch-sizes 1,16 --decode-steps 32 --repeats 5"
bench_rows "$B" <<'LIST'
bf16 none
nf4 nf4
gguf-q4_0 gguf type=q4_0
gguf-q4_k gguf type=q4_k
gguf-q6_k gguf type=q6_k
gguf-q8_0 gguf type=q8_0
bf16-again none
LIST
