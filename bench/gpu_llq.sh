#!/usr/bin/env bash
# One device call for llq's GPU path (issue #5). Builds nothing: it runs the binary made here
# with `source scripts/cuda-build-env.sh && make build-cuda` (carried xz-compressed as
# dist/llq-host-cuda.xz) and the plugins from `make build`.
#   bench/gpu_llq.sh OUTDIR [kernels|models|peers|smollm2|study|all]
# kernels: each plugin's CUDA kernels checked against its CPU dequantize and timed;
# models:  llq-host bench on synthetic Llama-3.2-1B, bf16 and every plugin (same shapes as
#          bench/peers/hf_bench.py);
# peers:   bench/peers/hf_bench.py (transformers bf16 eager/SDPA, + bitsandbytes NF4/FP4/INT8
#          from the wheel carried in .whl/) on the same model and shapes;
# study:   kernels + models + peers, the H100 table of docs/benchmarks.md in one call;
# smollm2: GPU-vs-CPU logits of SmolLM2 for every plugin, and an NF4 CoQA run on the GPU
#          (needs models/smollm2-135m-instruct.gguf, or its split parts smollm2.part-*).
set -u
FINAL="${1:?usage: bench/gpu_llq.sh OUTDIR [kernels|models|peers|smollm2|study|all]}"
WHAT="${2:-all}"
# Everything is written to a work folder and packed into one archive at the end (the
# device tool brings back a limited number of files); stdout is the summary.
OUT="$(mktemp -d)"; mkdir -p "$FINAL"
trap 'tar czf "$FINAL/gpu-$WHAT.tgz" -C "$OUT" . ; rm -rf "$OUT"' EXIT
source scripts/cuda-device-env.sh
BIN=dist/llq-host-cuda
if [ ! -x "$BIN" ]; then
  python3 -c "import lzma,shutil,sys; shutil.copyfileobj(lzma.open('$BIN.xz'), open('$BIN','wb'))" && chmod +x "$BIN"
fi
export LLQ_CACHE_DIR="${LLQ_CACHE_DIR:-/tmp/llq-cache}" RUST_LOG="${RUST_LOG:-info}"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv > "$OUT/device.csv" 2>&1
PLUGINS="nf4 fp4 int8 fp16"
M=synthetic:llama-3.2-1b
want() { for w in "$@"; do [ "$WHAT" = "$w" ] && return 0; done; return 1; }
if want kernels study all; then
  for p in $PLUGINS; do
    "$BIN" kernels --quant plugins/$p.so --out "$OUT/kernels-$p.json" > "$OUT/kernels-$p.txt" 2> "$OUT/kernels-$p.log"
    echo "kernels $p: exit $?"; cat "$OUT/kernels-$p.txt"
  done
fi
if want models study all; then
  B="--model $M --device cuda --prompt-lens 128,512,2048 --batch-sizes 1,4,16,64 --decode-steps 32 --repeats 5"
  "$BIN" bench $B --out "$OUT/llq-bf16.json" > "$OUT/bench-bf16.txt" 2> "$OUT/bench-bf16.log"; echo "bench bf16: exit $?"; cat "$OUT/bench-bf16.txt"
  for p in $PLUGINS; do
    "$BIN" bench $B --quant plugins/$p.so --out "$OUT/llq-$p.json" > "$OUT/bench-$p.txt" 2> "$OUT/bench-$p.log"
    echo "bench $p: exit $?"; cat "$OUT/bench-$p.txt"
  done
fi
if want peers study all; then
  python3 -m pip install -q --no-deps --target /tmp/llq-bnb .whl/bitsandbytes-*.whl > "$OUT/pip.log" 2>&1
  PYTHONPATH="/tmp/llq-bnb${PYTHONPATH:+:$PYTHONPATH}" python3 bench/peers/hf_bench.py "$OUT/peers" > "$OUT/peers.txt" 2> "$OUT/peers.log"
  echo "peers: exit $?"; tail -12 "$OUT/peers.txt"
fi
if want smollm2 all; then
  G=models/smollm2-135m-instruct.gguf
  [ -f "$G" ] || cat models/smollm2.part-* > "$G"
  for p in none $PLUGINS; do
    q=""; [ "$p" = none ] || q="--quant plugins/$p.so"
    "$BIN" bench --model "$G" $q --device cuda --prompt-lens 128 --batch-sizes 1,8 --decode-steps 16 --repeats 3 \
      --out "$OUT/smollm2-$p.json" > "$OUT/smollm2-$p.txt" 2> "$OUT/smollm2-$p.log"
    echo "smollm2 $p: exit $?"; head -3 "$OUT/smollm2-$p.txt"
  done
  "$BIN" run --model "$G" --quant plugins/nf4.so --task tasks/coqa.wasm --data tests/fixtures/coqa/coqa-dev-sample.json \
    --device cuda --batch-size 4 --out "$OUT/run-nf4-cuda" > "$OUT/run-nf4.txt" 2> "$OUT/run-nf4.log"
  echo "run nf4 on cuda: exit $?"; cat "$OUT/run-nf4.txt"
fi
