#!/usr/bin/env bash
# The GPU variant of `make study`: studies/gpu.toml on the H100 machine (SmolLM2-135M for
# accuracy, the synthetic Llama-3.2-1B for speed and memory). Builds nothing: it runs
# dist/llq-host-cuda (source scripts/cuda-build-env.sh && make build-cuda; xz) and the CPU-built
# plugins and tasks from the bundle (make gpu-bundle). The sweep is resumable, so it spans
# device calls on one warm machine (the GGUF travels in parts: tracked files + carry ≤ 64 MiB):
#   bench/gpu_study.sh OUT unpack  carry dist/llq-host-cuda.xz dist/gpu-bundle.tar.xz
#                                  models/smollm2.part-aa; checks every plugin's kernels
#   bench/gpu_study.sh OUT parts   carry models/smollm2.part-ab models/smollm2.part-ac
#   bench/gpu_study.sh OUT run     carry models/smollm2.part-ad models/llama-3.2/tokenizer.json
#                                  (and dist/llq-host-cuda.xz when rebuilt since `unpack`);
#                                  runs cells for up to ${BUDGET:-500} s, then writes the report
#   bench/gpu_study.sh OUT run     again (no carry) until the status line says all done
# Cells live in dist/gpu-study (ignored by git, so kept between calls); OUT/study.tgz holds the
# report, figures and every cell's results.json / bench.json / cell.json (not samples.jsonl);
# committed as results/h100/sweep-gpu/ (tar xzf study.tgz there, with checks.tgz and device.csv).
set -u
FINAL="${1:?usage: bench/gpu_study.sh OUT unpack|parts|run}"
WHAT="${2:?stage}"
mkdir -p "$FINAL"
source scripts/cuda-device-env.sh
export LLQ_CACHE_DIR=/tmp/llq-cache RUST_LOG=${RUST_LOG:-warn}
BIN=dist/llq-host-cuda
G=models/smollm2-135m-instruct.gguf
S=dist/gpu-study
# Each call brings some parts of the model; they wait in /tmp/parts.
mkdir -p /tmp/parts && for f in models/smollm2.part-a?; do [ -f "$f" ] && cp -n "$f" /tmp/parts/; done
ls /tmp/parts
[ "$WHAT" = parts ] && exit 0
if [ "$WHAT" = unpack ]; then
  python3 -c "import lzma,shutil; shutil.copyfileobj(lzma.open('$BIN.xz'), open('$BIN','wb'))" && chmod +x "$BIN"
  tar xJf dist/gpu-bundle.tar.xz && xz -d -f data/gutenberg/calibration.txt.xz
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$FINAL/device.csv"
  # The conformance suite's kernel check (CUDA kernels vs the CPU dequantize) per plugin.
  i=0
  for c in fp16 int8 nf4 "nf4 double_quant=true" fp4 "rtn bits=4" "rtn bits=3" "gptq bits=4"; do
    set -- $c; p=$1; shift; o=""; for kv in "$@"; do o="$o --opt $kv"; done; i=$((i+1))
    echo "== $c"; "$BIN" plugins check plugins/$p.so $o --only kernels --json "/tmp/check-$i-$p.json"
  done
  (cd /tmp && tar czf "$FINAL/checks.tgz" check-*.json)
  exit 0
fi
# A newer binary carried in this call replaces the unpacked one.
if [ dist/llq-host-cuda.xz -nt "$BIN" ]; then
  python3 -c "import lzma,shutil; shutil.copyfileobj(lzma.open('$BIN.xz'), open('$BIN','wb'))" && chmod +x "$BIN"
  "$BIN" plugins check plugins/gptq.so --opt bits=4 --only kernels --json /tmp/check-9-gptq.json
  (cd /tmp && tar czf "$FINAL/checks.tgz" check-*.json)
fi
if [ ! -f "$G" ]; then
  cat /tmp/parts/smollm2.part-a? > "$G"
fi
echo "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70 (wheel); model sha256: $(sha256sum "$G" | cut -c1-64)"
timeout "${BUDGET:-500}" "$BIN" sweep run studies/gpu.toml --out "$S" | tail -40
"$BIN" sweep status studies/gpu.toml --out "$S" | tail -1
"$BIN" sweep report studies/gpu.toml --out "$S" > /dev/null
(cd "$S" && find . -maxdepth 2 -not -path './.*' \( -name results.json -o -name bench.json -o -name cell.json \
  -o -name '*.failed.json' -o -name 'report.*' \) | tar czf "$FINAL/study.tgz" -T - figures)
ls -la "$FINAL"
