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
source bench/gpu_lib.sh
S=dist/gpu-study
collect_parts
[ "$WHAT" = parts ] && exit 0
if [ "$WHAT" = unpack ]; then
  unpack_binary && unpack_bundle
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
  unpack_binary
  "$BIN" plugins check plugins/gptq.so --opt bits=4 --only kernels --json /tmp/check-9-gptq.json
  (cd /tmp && tar czf "$FINAL/checks.tgz" check-*.json)
fi
join_model
timeout "${BUDGET:-500}" "$BIN" sweep run studies/gpu.toml --out "$S" | tail -40
"$BIN" sweep status studies/gpu.toml --out "$S" | tail -1
"$BIN" sweep report studies/gpu.toml --out "$S" > /dev/null
(cd "$S" && find . -maxdepth 2 -not -path './.*' \( -name results.json -o -name bench.json -o -name cell.json \
  -o -name '*.failed.json' -o -name 'report.*' \) | tar czf "$FINAL/study.tgz" -T - figures)
ls -la "$FINAL"
