#!/usr/bin/env bash
# Device calls for the calibrated-methods quality table (issue 11): SmolLM2-135M on the
# held-out Gutenberg evaluation books, perplexity and exact per-token KL(unquantized ||
# method) with top-1 agreement, for rtn/gptq at 4 and 3 bits (group 128) beside
# nf4/fp4/int8, then bench/kl_table.py (paired block-bootstrap CIs vs RTN).
# Builds nothing: it runs dist/llq-host-cuda (source scripts/cuda-build-env.sh && make
# build-cuda, carried as dist/llq-host-cuda.xz) and the CPU-built plugins and tasks, carried
# with the texts as one bundle (make gpu-bundle). The GGUF travels in two parts (the carry
# limit is 64 MiB), so the stages are separate calls to a machine kept warm between them
# (parts of 25 MB: `split -n 4 -d`... see docs/benchmarks.md for the calls of each table):
#   bench/gpu_calibrated.sh OUT stage1   (carry dist/llq-host-cuda.xz models/smollm2.part-aa)
#   bench/gpu_calibrated.sh OUT fast     (carry models/smollm2.part-ab, -ac, dist/gpu-bundle.tar.xz):
#                                         baseline, rtn 4/3, nf4, fp4, int8
#   bench/gpu_calibrated.sh OUT gptq     (same machine): gptq 4/3 with GPTQ's default
#                                         calibration (128 × 2048 tokens), then the table
#   bench/gpu_calibrated.sh OUT awq      (same machine, the bundle carried): int-group and NF4
#                                         kernels and decode, rtn 4/3 again (pairs on this
#                                         machine, and a repeat of the earlier call's)
#   bench/gpu_calibrated.sh OUT awq2     (same machine): awq 4/3 with AWQ's default
#                                         calibration (128 × 512 tokens), then the table
# The device tool returns at most 8 files of $OUT: give OUT=/tmp/fin and copy
# /tmp/fin/calibrated.tgz to $OUT at the end of the command (a tgz of everything, by `pack`).
set -u
FINAL="${1:?usage: bench/gpu_calibrated.sh OUT stage1|fast|gptq|awq|awq2}"
WHAT="${2:?stage}"
mkdir -p "$FINAL"
source scripts/cuda-device-env.sh
export LLQ_CACHE_DIR=/tmp/llq-cache RUST_LOG=${RUST_LOG:-info}
BIN=dist/llq-host-cuda
G=models/smollm2-135m-instruct.gguf
RUNS=/tmp/llq-calibrated/runs
if [ "$WHAT" = stage1 ]; then
  python3 -c "import lzma,shutil; shutil.copyfileobj(lzma.open('$BIN.xz'), open('$BIN','wb'))" && chmod +x "$BIN"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$FINAL/device.csv"
  "$BIN" --version; ls -la models/
  exit 0
fi
if [ ! -f "$G" ]; then
  cat models/smollm2.part-* > "$G"
  tar xJf dist/gpu-bundle.tar.xz
  xz -d -f data/gutenberg/calibration.txt.xz
fi
sha256sum "$G" | tee "$FINAL/model.sha256"
mkdir -p "$RUNS"
EVAL="--task tasks/perplexity.wasm --data data/gutenberg/evaluation.txt --task-opt split=none --device cuda"
run() { # name, args...
  local name=$1; shift
  rm -rf "$RUNS/$name"
  /usr/bin/time -f "$name: %e s wall, %M KB peak RSS" "$BIN" run --model "$G" "$@" $EVAL --out "$RUNS/$name" \
    > "$FINAL/$name.txt" 2> "$FINAL/$name.log"
  echo "$name: exit $?"; tail -1 "$FINAL/$name.log"; grep -E "perplexity:|kl_mean|top1" "$FINAL/$name.txt"
}
# The int-group kernels (rtn, gptq, awq share them) checked against the CPU dequantize and timed
# beside NF4's on Llama-3.2-1B shapes, then decode speed on the synthetic Llama-3.2-1B.
kernels_and_decode() {
  local spec name p q
  for spec in "rtn4 rtn --opt bits=4" "rtn3 rtn --opt bits=3" "nf4 nf4"; do
    set -- $spec; name=$1; p=$2; shift 2
    "$BIN" kernels --quant plugins/$p.so "$@" --shapes 2048x8192,8192x2048,2048x2048 --batch-sizes 1,8 --repeats 10 \
      --out "$FINAL/kernels-$name.json" > "$FINAL/kernels-$name.txt" 2>&1
    echo "kernels $name: exit $?"; grep -E "^  (matvec|dequantize|cublas|check)" "$FINAL/kernels-$name.txt"
  done
  local B="--model synthetic:llama-3.2-1b --device cuda --prompt-lens 128 --batch-sizes 1,8 --decode-steps 32 --repeats 5"
  for spec in "bf16" "rtn4 rtn --opt bits=4" "nf4 nf4"; do
    set -- $spec; name=$1; q=""; [ $# -gt 1 ] && q="--quant plugins/$2.so" && shift 2 || shift 1
    "$BIN" bench $B $q "$@" --out "$FINAL/bench-$name.json" > "$FINAL/bench-$name.txt" 2> "$FINAL/bench-$name.log"
    echo "bench $name: exit $?"; grep -E "decode|prefill" "$FINAL/bench-$name.txt"
  done
}
if [ "$WHAT" = fast ]; then
  kernels_and_decode
  run none
  for b in 4 3; do run rtn$b --quant plugins/rtn.so --opt bits=$b --opt group_size=128 --kl-baseline; done
  for p in nf4 fp4 int8; do run $p --quant plugins/$p.so --kl-baseline; done
fi
# Everything goes into one archive after each step (the device tool returns 8 files), so a
# run cut short still returns what it finished.
pack() {
  mkdir -p "$FINAL/all/runs"
  for d in "$RUNS"/*; do cp "$d/results.json" "$FINAL/all/runs/$(basename "$d")-results.json"; done
  cp "$FINAL"/*.txt "$FINAL"/*.log "$FINAL"/*.json "$FINAL/all/" 2>/dev/null
  (cd "$FINAL" && tar czf calibrated.tgz all)
}
if [ "$WHAT" = awq ]; then
  rm -rf "$RUNS"; mkdir -p "$RUNS"
  kernels_and_decode
  pack
  for b in 4 3; do run rtn$b --quant plugins/rtn.so --opt bits=$b --opt group_size=128 --kl-baseline; done
  pack
fi
if [ "$WHAT" = awq2 ]; then  # the second call of `awq` (a call runs at most 10 minutes)
  for b in 4 3; do
    run awq$b --quant plugins/awq.so --opt bits=$b --opt group_size=128 --calib-samples 128 --calib-seq-len 512 --kl-baseline
    python3 bench/kl_table.py "$RUNS" "$FINAL/all/table" > /dev/null
    pack
  done
  cat "$FINAL/all/table/table.md"
fi
if [ "$WHAT" = gptq ]; then
  for spec in "rtn4 rtn --opt bits=4" "nf4 nf4"; do
    set -- $spec; name=$1; p=$2; shift 2
    "$BIN" kernels --quant plugins/$p.so "$@" --shapes 2048x8192,8192x2048,2048x2048 --batch-sizes 1,8 --repeats 10 \
      --out "$FINAL/kernels-$name.json" > "$FINAL/kernels-$name.txt" 2>&1
    grep -E "^  (matvec|dequantize|cublas)" "$FINAL/kernels-$name.txt"
  done
  for b in 4 3; do
    run gptq$b --quant plugins/gptq.so --opt bits=$b --opt group_size=128 --kl-baseline
    python3 bench/kl_table.py "$RUNS" "$FINAL/all/table" > /dev/null
    pack
  done
  cat "$FINAL/all/table/table.md"
fi
