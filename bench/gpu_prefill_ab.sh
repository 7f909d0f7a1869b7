#!/usr/bin/env bash
# A/B of two llq-host builds on prefill, in one call, interleaved (base, new, base, new, …) so a
# drift of the machine lands on both: `llq-host bench` on the synthetic Llama-3.2-1B, batch 1,
# each run with its own checks (fused vs unfused logits and greedy tokens, the fused kernel vs
# f32 attention on five shapes with padding, logits vs the CPU f32 model).
#   bench/gpu_prefill_ab.sh OUT      (carry dist/llq-host-cuda.xz dist/prefill-ab/base.xz
#                                     dist/speed13-bundle.tar.xz)
# Environment: PROMPTS (default 512,2048), PAIRS (default 3).
set -u
FINAL="${1:?usage: bench/gpu_prefill_ab.sh OUT}"
OUT="$(mktemp -d)"; mkdir -p "$FINAL"
trap 'tar czf "$FINAL/gpu-prefill-ab.tgz" -C "$OUT" . ; rm -rf "$OUT"' EXIT
source bench/gpu_lib.sh
[ -x "$BIN" ] || unpack_binary
[ -f plugins/nf4.so ] || tar xJf dist/speed13-bundle.tar.xz
BASE=/tmp/ab-base/llq-host-cuda
mkdir -p /tmp/ab-base && python3 -c "import lzma,shutil; shutil.copyfileobj(lzma.open('dist/prefill-ab/base.xz'), open('$BASE','wb'))" && chmod +x "$BASE"
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv > "$OUT/device.csv" 2>&1
for i in $(seq ${PAIRS:-3}); do
  for side in base new; do
    b=$BIN; [ $side = base ] && b=$BASE
    "$b" bench --model synthetic:llama-3.2-1b --device cuda --prompt-lens ${PROMPTS:-512,2048} --batch-sizes 1 \
      --decode-steps 8 --repeats 5 --decode graph --out "$OUT/$side-$i.json" > "$OUT/$side-$i.txt" 2> "$OUT/$side-$i.log"
    echo "$side $i: exit $?"; grep -E "prefill +[0-9]+ tokens|fused|error" "$OUT/$side-$i.txt" | grep -v "^ *$" | cut -c1-150
  done
done
