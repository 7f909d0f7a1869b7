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
# rows run with RoPE folded into the attention, the argmax over 32 blocks a row, and at batch
# 1 the norms and residual adds folded into the matvecs with gate, up and SwiGLU in one launch
# (STEP_ROPE, ARGMAX_BLOCKS, STEP_NORM, STEP_GLU; off by default in llq until measured), each
# A/B'd against the other setting. A row that fails with the folded norms runs again without.
# A row may name an older plugin build beside the current one, e.g. `rtn4prev rtn-prev bits=4
# group_size=128` with plugins/rtn-prev.so built at a822396 (before the int-group register
# changes of 2026-12-08, bench/NOTES.md) and packed into the bundle: the two rows then compare
# in one call.
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
    f="$OUT/bench-$tag-pdl-$pdl"
    LLQ_STEP_NORM=${STEP_NORM:-fused} LLQ_STEP_GLU=${STEP_GLU:-fused} LLQ_STEP_ROPE=${STEP_ROPE:-folded} LLQ_ARGMAX_BLOCKS=${ARGMAX_BLOCKS:-32} LLQ_PDL=$pdl "$BIN" bench $A $q --out "$f.json" < /dev/null > "$f.txt" 2> "$f.log"
    rc=$?; echo "bench $tag LLQ_PDL=$pdl: exit $rc"; grep -A2 "decode batch" "$f.txt"
    tail -3 "$f.log"
    if [ $rc -ne 0 ] && [ "${STEP_NORM:-fused}" = fused ]; then
      # The folded norms are new: without them, so the call still measures the rest.
      f="$f-norm-separate"
      LLQ_STEP_NORM=separate LLQ_STEP_ROPE=${STEP_ROPE:-folded} LLQ_ARGMAX_BLOCKS=${ARGMAX_BLOCKS:-32} LLQ_PDL=$pdl "$BIN" bench $A $q --out "$f.json" < /dev/null > "$f.txt" 2> "$f.log"
      echo "bench $tag LLQ_PDL=$pdl LLQ_STEP_NORM=separate: exit $?"; grep -A2 "decode batch" "$f.txt"; tail -3 "$f.log"
    fi
  done <<< "${ROWS:-$'nf4 nf4\nbf16 none\nrtn4 rtn bits=4 group_size=128'}"
done
date
