#!/usr/bin/env bash
# One device call for the method families of issue #15 on the GPU: the hqq plugin's kernels
# (the int-group kernels reading f16 zero points) checked against its CPU dequantize, then
# decode and prefill of the synthetic Llama-3.2-1B (its exact shapes; weights random, so speed
# and size only) for bf16, NF4, RTN-4 g128, HQQ 4/3-bit g64 and llama.cpp's q4_0/q4_k/q6_k —
# the gguf plugin ships no CUDA decoders yet, so its layers run dequantized to bf16 (dense):
# its rows show what that costs, not what llama.cpp's kernels would do. All in one call, so
# the ratios come from one host. Builds nothing: dist/llq-host-cuda.xz (make build-cuda, then
# xz) and the plugins from `make gpu-bundle`, both carried.
#   bench/gpu_families.sh OUTDIR
set -u
FINAL="${1:?usage: bench/gpu_families.sh OUTDIR}"
OUT="$(mktemp -d)"; mkdir -p "$FINAL"
trap 'tar czf "$FINAL/gpu-families.tgz" -C "$OUT" . ; rm -rf "$OUT"' EXIT
RUST_LOG=${RUST_LOG:-info}
source bench/gpu_lib.sh
[ -x "$BIN" ] || unpack_binary
[ -f plugins/hqq.so ] || unpack_bundle
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv > "$OUT/device.csv" 2>&1
for q in "hqq" "hqq --opt bits=3" "hqq --opt bits=2" "rtn"; do
  set -- $q; p=$1; shift; tag="$p$(echo "$*" | tr -d ' =-')"
  "$BIN" kernels --quant plugins/$p.so "$@" --out "$OUT/kernels-$tag.json" > "$OUT/kernels-$tag.txt" 2> "$OUT/kernels-$tag.log"
  echo "kernels $tag: exit $?"; cat "$OUT/kernels-$tag.txt"
done
M=synthetic:llama-3.2-1b
B="--model $M --device cuda --prompt-lens 128,512 --batch-sizes 1,16 --decode-steps 32 --repeats 5"
bench_rows "$B" <<'EOF'
bf16 none
nf4 nf4
rtn4-g128 rtn bits=4 group_size=128
hqq4-g64 hqq bits=4
hqq3-g64 hqq bits=3
gguf-q4_0 gguf type=q4_0
gguf-q4_k gguf type=q4_k
gguf-q6_k gguf type=q6_k
EOF
