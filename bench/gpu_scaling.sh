#!/usr/bin/env bash
# Issue 16: the GPU study spec (studies/gpu-scaling.toml: studies/gpu.toml with smaller
# calibration, evaluation text and bench grid so both runs fit one device session) run by
# `sweep run --gpus` on one GPU and then on every GPU of the host, on one warm machine (the
# cells record its hostname), then compared cell for cell (bench/compare_sweeps.py).
# Builds nothing: dist/llq-host-cuda.xz (source scripts/cuda-build-env.sh && make build-cuda;
# xz) and the CPU-built plugins and tasks from the bundle (make gpu-bundle). Stages, each one
# device call on the same machine (the GGUF travels in parts: tracked files + carry ≤ 64 MiB):
#   bench/gpu_scaling.sh OUT unpack  carry dist/llq-host-cuda.xz dist/gpu-bundle.tar.xz models/smollm2.part-aa
#   bench/gpu_scaling.sh OUT parts   carry models/smollm2.part-ab models/smollm2.part-ac
#   bench/gpu_scaling.sh OUT one     carry models/smollm2.part-ad models/llama-3.2/tokenizer.json
#   bench/gpu_scaling.sh OUT all     (no carry): all GPUs, then the comparison and OUT/scaling.tgz
#   (a stage that outlasts BUDGET seconds stops there; run it again: the sweep resumes)
#   bench/gpu_scaling.sh OUT noise   the one-GPU speed cells again alone on GPU 0 (run-to-run noise)
# Committed as results/h200x2/scaling/ (the tgz files unpacked; samples.jsonl packed into
# samples.tar.xz: unpack it there to re-run bench/compare_sweeps.py scaling-1 scaling-2).
# Each sweep's wall time is measured around `sweep run` (dist/sweep-run-<dir>.json) and every
# GPU sampled once a second by nvidia-smi meanwhile (dist/util-<dir>.csv).
set -u
FINAL="${1:?usage: bench/gpu_scaling.sh OUT unpack|parts|one|all}"
WHAT="${2:?stage}"
mkdir -p "$FINAL"
source bench/gpu_lib.sh
SPEC=studies/gpu-scaling.toml
collect_parts
[ "$WHAT" = parts ] && exit 0
if [ "$WHAT" = unpack ]; then
  unpack_binary && unpack_bundle
  nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv | tee "$FINAL/device.csv"
  "$BIN" sweep plan "$SPEC" --out dist/scaling-1 | tail -1
  exit 0
fi
join_model
# A sweep that outlasts one call (${BUDGET:-540} s) resumes in the next; each call's segment
# adds its wall time to dist/sweep-run-<dir>.json and its samples to dist/util-<dir>.csv.
sweep() { # $1 = folder, $2 = GPU list
  local dir=dist/$1
  nvidia-smi --query-gpu=timestamp,index,utilization.gpu,memory.used --format=csv,noheader,nounits -l 1 >> dist/util-$1.csv &
  local smi=$!
  local t0; t0=$(date +%s.%N)
  timeout "${BUDGET:-540}" "$BIN" sweep run "$SPEC" --out "$dir" --gpus "$2" > dist/log-$1.txt 2>&1
  local rc=$?
  local t1; t1=$(date +%s.%N)
  kill $smi
  tail -12 dist/log-$1.txt
  python3 - <<PY
import json, os
p = 'dist/sweep-run-$1.json'
m = json.load(open(p)) if os.path.exists(p) else {'gpus': '$2', 'wall_s': 0.0, 'segments': []}
m['segments'].append({'wall_s': $t1 - $t0, 'exit': $rc})
m['wall_s'] = sum(s['wall_s'] for s in m['segments'])
json.dump(m, open(p, 'w'))
print(m)
PY
  "$BIN" sweep status "$SPEC" --out "$dir" | tail -1
}
if [ "$WHAT" = one ]; then
  sweep scaling-1 0
  exit 0
fi
if [ "$WHAT" = noise ]; then
  # Run-to-run noise: the one-GPU sweep's speed cells again, alone on GPU 0, same arguments.
  mkdir -p dist/rerun-1
  for c in dist/scaling-1/*.bench; do
    id=$(basename "$c"); mkdir -p "dist/rerun-1/$id"; cp "$c/cell.json" "dist/rerun-1/$id/"
    mapfile -t A < <(python3 -c "import json; print('\n'.join(json.load(open('$c/cell.json'))['args']))")
    CUDA_VISIBLE_DEVICES=0 timeout 100 "$BIN" "${A[@]}" --out "dist/rerun-1/$id/bench.json" > /dev/null 2>&1
    echo "$id $?"
  done
  python3 bench/compare_sweeps.py dist/scaling-1 dist/rerun-1 | tee "$FINAL/noise.md"
  (cd dist && tar czf "$FINAL/rerun.tgz" rerun-1)
  exit 0
fi
ALL=$(nvidia-smi --query-gpu=index --format=csv,noheader | paste -sd, -)
N=$(echo "$ALL" | tr , '\n' | wc -l)
[ "$WHAT" = all ] && sweep scaling-$N "$ALL"
# WHAT=all or compare: reports, the comparison and the files.
"$BIN" sweep report "$SPEC" --out dist/scaling-1 > /dev/null
"$BIN" sweep report "$SPEC" --out dist/scaling-$N > /dev/null
python3 bench/compare_sweeps.py dist/scaling-1 dist/scaling-$N --util-a dist/util-scaling-1.csv \
  --util-b dist/util-scaling-$N.csv | tee "$FINAL/comparison.md"
(cd dist && find scaling-1 scaling-$N -maxdepth 2 -not -path '*/.*' \( -name results.json -o -name bench.json \
  -o -name cell.json -o -name samples.jsonl -o -name '*.failed.json' -o -name 'report.*' \) \
  | tar czf "$FINAL/scaling.tgz" -T - scaling-1/figures scaling-$N/figures util-scaling-*.csv sweep-run-*.json)
ls -la "$FINAL"
