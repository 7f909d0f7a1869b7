#!/usr/bin/env bash
# One device call for programmatic dependent launch in the captured decode step (issue #13):
# `llq-host bench` graph decode on synthetic Llama-3.2-1B for bf16, NF4 and RTN-4 g128 at
# batches 1, 4, 16 and 64 (context 128, 64 steps). Each graph row carries its own A/B
# (`programmatic_flipped`: the same steps with programmatic launches in the other state,
# 10+ interleaved rounds, paired difference with a bootstrap interval and the sign-flip p;
# tokens and logits after the same steps, expected identical) and the step profile (taken
# without programmatic launches). Then the whole bench once more with LLQ_PDL=off, a
# separate process, for the rows' own numbers the other way round.
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
A="--model synthetic:llama-3.2-1b --device cuda --prompt-lens 128 --batch-sizes ${BATCHES:-1,4,16,64} --context 128 --decode-steps 64 --repeats 5 --decode graph --no-checks"
for pdl in ${PDLS:-on off}; do
  for row in "nf4 nf4" "bf16 none" "rtn4 rtn bits=4 group_size=128"; do
    set -- $row; tag=$1 plugin=$2; shift 2
    q=""; [ "$plugin" = none ] || q="--quant plugins/$plugin.so"
    for o in "$@"; do q="$q --opt $o"; done
    date
    LLQ_PDL=$pdl "$BIN" bench $A $q --out "$OUT/bench-$tag-pdl-$pdl.json" > "$OUT/bench-$tag-pdl-$pdl.txt" 2> "$OUT/bench-$tag-pdl-$pdl.log"
    echo "bench $tag LLQ_PDL=$pdl: exit $?"; grep -A2 "decode batch" "$OUT/bench-$tag-pdl-$pdl.txt"
    tail -3 "$OUT/bench-$tag-pdl-$pdl.log"
  done
done
date
