#!/usr/bin/env bash
# One device call for programmatic dependent launch and the v3 per-head attention in the
# captured decode step (issue #13): `llq-host bench` graph decode on synthetic Llama-3.2-1B
# for bf16, NF4 and RTN-4 g128 (context 128, 64 steps). Each graph row carries its A/Bs
# (`ab`: the same steps with programmatic launches flipped, and with the v2 attention kernel
# where the row took v3; 10+ interleaved rounds, paired difference with a bootstrap interval
# and the sign-flip p; tokens and logits after the same steps) and the step profile (taken
# without programmatic launches). PDLS="on off" runs every row under each `LLQ_PDL` setting;
# the first call (PDLS="on off", BATCHES=1,4,16,64, before the v3 attention and `auto`) is in
# results/h100/speed13/pdl/first. ROWS (lines of `TAG PLUGIN [K=V …]`) picks the rows. The
# rows run with RoPE folded into the attention and the argmax over 32 blocks a row
# (STEP_ROPE, ARGMAX_BLOCKS; both off by default in llq until measured), each A/B'd against
# the other setting.
#   bench/gpu_pdl.sh OUT
# Carry: dist/llq-host-cuda.xz dist/speed13-bundle.tar.xz
set -u
OUT="${1:?usage: bench/gpu_pdl.sh OUT}"
mkdir -p "$OUT"
source bench/gpu_lib.sh
[ -x "$BIN" ] || unpack_binary
tar xJf dist/speed13-bundle.tar.xz
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv > "$OUT/device.csv" 2>&1
cat "$OUT/device.csv"
A="--model synthetic:llama-3.2-1b --device cuda --prompt-lens 128 --batch-sizes ${BATCHES:-1,4,8,16} --context 128 --decode-steps 64 --repeats 5 --decode graph --no-checks"
for pdl in ${PDLS:-auto}; do
  while read -r row; do
    set -- $row; tag=$1 plugin=$2; shift 2
    q=""; [ "$plugin" = none ] || q="--quant plugins/$plugin.so"
    for o in "$@"; do q="$q --opt $o"; done
    date
    LLQ_STEP_ROPE=${STEP_ROPE:-folded} LLQ_ARGMAX_BLOCKS=${ARGMAX_BLOCKS:-32} LLQ_PDL=$pdl "$BIN" bench $A $q --out "$OUT/bench-$tag-pdl-$pdl.json" < /dev/null > "$OUT/bench-$tag-pdl-$pdl.txt" 2> "$OUT/bench-$tag-pdl-$pdl.log"
    echo "bench $tag LLQ_PDL=$pdl: exit $?"; grep -A2 "decode batch" "$OUT/bench-$tag-pdl-$pdl.txt"
    tail -3 "$OUT/bench-$tag-pdl-$pdl.log"
  done <<< "${ROWS:-$'nf4 nf4\nbf16 none\nrtn4 rtn bits=4 group_size=128'}"
done
date
