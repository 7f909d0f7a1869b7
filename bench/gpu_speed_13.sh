#!/usr/bin/env bash
# Issue #13 (GPU speed II) on the GPU machine, in one call: llq-host bench on the synthetic
# Llama-3.2-1B (its exact shapes, random weights: speed and memory only) with both decode
# paths — eager (candle, a launch per op) and graph (the captured step on a static cache,
# model/graph.rs) — for bf16 and each plugin; then `run` generation on CoQA through both
# paths (same predictions expected) and its timing beside bench's.
#   bench/gpu_speed_13.sh OUT [bench|run|kernels|all|smol|peers]
# smol: graph vs eager on the real SmolLM2-135M (GGUF Q4_1; its "full precision" is Q4_1
# dequantized): CoQA predictions through `run` and `bench`'s logits/greedy comparison. The
# model travels as models/smollm2.part-0..4, one a call on one warm machine (kept in
# /tmp/parts); the call that brings the last part runs the check.
# Carry: dist/llq-host-cuda.xz dist/speed13-bundle.tar.xz (plugins/{nf4,fp4,int8,fp16,rtn}.so,
# tasks/coqa.wasm, models/llama-3.2/tokenizer*.json, dist/kvar/*.so: the A/B variants; `tar cJf`).
# Environment: BATCHES, DECODE, ROWS (bench, peers), KPLUGINS, KBATCHES (kernels), RUN_BATCHES,
# RUN_DECODES (run), PEERS_ARGS (hf_bench.py's flags, e.g. --compiled-only) narrow a call.
set -u
FINAL="${1:?usage: bench/gpu_speed_13.sh OUT [bench|run|kernels|all|smol|peers]}"; WHAT="${2:-all}"
OUT="$(mktemp -d)"; mkdir -p "$FINAL"
trap 'tar czf "$FINAL/gpu-speed13-$WHAT.tgz" -C "$OUT" . ; rm -rf "$OUT"' EXIT
source bench/gpu_lib.sh
export RUST_LOG=info
# The binary and bundle of an earlier call on the same warm machine (smol mode: the GGUF
# parts each need a call of their own, the binary does not fit beside one).
if [ -f dist/llq-host-cuda.xz ]; then
  [ -x "$BIN" ] || unpack_binary
  tar xJf dist/speed13-bundle.tar.xz
  mkdir -p /tmp/keep && cp "$BIN" /tmp/keep/ && tar xJf dist/speed13-bundle.tar.xz -C /tmp/keep
else
  BIN=/tmp/keep/llq-host-cuda; (cd /tmp/keep && tar cf - plugins tasks models) | tar xf -
fi
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv > "$OUT/device.csv" 2>&1
want() { for w in "$@"; do [ "$WHAT" = "$w" ] && return 0; done; return 1; }
# How many of two runs' predictions (samples.jsonl, by id) are identical.
same_predictions() {
  python3 - "$1/samples.jsonl" "$2/samples.jsonl" <<'PY'
import json, sys
a = [json.loads(l) for l in open(sys.argv[1])]; b = [json.loads(l) for l in open(sys.argv[2])]
pa = {r["id"]: r.get("prediction") for r in a}; pb = {r["id"]: r.get("prediction") for r in b}
same = sum(pa[k] == pb.get(k) for k in pa)
print(f"  predictions graph vs eager: {same}/{len(pa)} identical")
PY
}
M=synthetic:llama-3.2-1b
if want kernels all; then
  # dist/kvar/*-u4.so: the same plugins built before the 8-row entry's unroll changed (A/B).
  for p in ${KPLUGINS:-nf4 dist/kvar/nf4-u4 fp16 dist/kvar/fp16-u4 rtn dist/kvar/rtn-u4}; do
    case $p in */*) so=$p.so; p=${p##*/};; *) so=plugins/$p.so;; esac
    "$BIN" kernels --quant $so --shapes 2048x8192,8192x2048 --batch-sizes ${KBATCHES:-1,8} --repeats 10 \
      --out "$OUT/kernels-$p.json" > "$OUT/kernels-$p.txt" 2> "$OUT/kernels-$p.log"
    echo "kernels $p: exit $?"; cat "$OUT/kernels-$p.txt"
  done
fi
if want bench all; then
  B="--model $M --device cuda --prompt-lens 128 --batch-sizes ${BATCHES:-1,4,8,16} --decode-steps 64 --repeats 5 --decode ${DECODE:-eager,graph}"
  printf '%s\n' "${ROWS:-bf16 none
nf4 nf4
rtn4 rtn bits=4
int8 int8
fp16 fp16}" | bench_rows "$B"
fi
if want run all; then
  D="--model $M --task tasks/coqa.wasm --data tests/fixtures/coqa/coqa-dev-sample.json --device cuda"
  for p in none nf4; do
    q=""; [ "$p" = none ] || q="--quant plugins/$p.so"
    for b in ${RUN_BATCHES:-1 8}; do
      for d in ${RUN_DECODES:-graph eager}; do
        "$BIN" run $D $q --batch-size $b --decode $d --out "$OUT/run-$p-b$b-$d" > "$OUT/run-$p-b$b-$d.txt" 2> "$OUT/run-$p-b$b-$d.log"
        echo "run $p b$b $d: exit $? $(python3 -c "import json;r=json.load(open('$OUT/run-$p-b$b-$d/results.json'));t=r['timing'] if 'timing' in r else {};print(r['device'].get('decode'), {k:v for k,v in t.items() if k in ('generate_s','new_tokens','load_s','quantize_s','first_use','generation')})" 2>&1)"
      done
      [ -d "$OUT/run-$p-b$b-eager" ] && same_predictions "$OUT/run-$p-b$b-graph" "$OUT/run-$p-b$b-eager"
      # bench at the batch and mean context the graph run's full batches decoded at (64 steps
      # centred on it), so run's ms/step and bench's compare directly.
      ctx=$(python3 -c "import json;g=[x for x in json.load(open('$OUT/run-$p-b$b-graph/results.json'))['timing']['generation'] if x['batch']==$b][0];print(max(1,round(g['mean_context']-32)))" 2>/dev/null)
      if [ -n "$ctx" ]; then
        "$BIN" bench --model $M --device cuda $q --prompt-lens 128 --batch-sizes $b --context $ctx --decode-steps 64 \
          --repeats 5 --decode graph --out "$OUT/runbench-$p-b$b.json" > "$OUT/runbench-$p-b$b.txt" 2> "$OUT/runbench-$p-b$b.log"
        echo "bench $p b$b at run's context $ctx: exit $?"; grep "decode batch" "$OUT/runbench-$p-b$b.txt"
      fi
    done
  done
fi
if want peers; then
  # llq and the transformers peers (eager/SDPA, bitsandbytes, static cache + torch.compile)
  # on the same synthetic model in one call. Carry dist/bnb-0.50.2-cuda130.tar.xz too.
  mkdir -p /tmp/llq-bnb && tar xJf dist/bnb-0.50.2-cuda130.tar.xz -C /tmp/llq-bnb
  B="--model $M --device cuda --prompt-lens 128,2048 --batch-sizes ${BATCHES:-1,16} --decode-steps 32 --repeats 5 --decode eager,graph"
  printf '%s\n' "${ROWS:-bf16 none
nf4 nf4}" | bench_rows "$B"
  PYTHONPATH="/tmp/llq-bnb${PYTHONPATH:+:$PYTHONPATH}" python3 bench/peers/hf_bench.py "$OUT/peers" ${PEERS_ARGS:-} > "$OUT/peers.txt" 2> "$OUT/peers.log"
  echo "peers: exit $?"; tail -12 "$OUT/peers.txt"; grep -i "error\|failed" "$OUT/peers.log" | tail -5
fi
if want smol; then
  mkdir -p /tmp/parts
  for f in models/smollm2.part-?; do [ -f "$f" ] && cp -n "$f" /tmp/parts/; done
  echo "parts here: $(ls /tmp/parts | tr '\n' ' ')"
  [ "$(ls /tmp/parts | wc -l)" -ge 5 ] || exit 0
  [ -f "$G" ] || cat /tmp/parts/smollm2.part-? > "$G"
  echo "model sha256: $(sha256sum "$G" | cut -c1-64)"
  D="--model $G --task tasks/coqa.wasm --data tests/fixtures/coqa/coqa-dev-sample.json --device cuda"
  for p in none nf4; do
    q=""; [ "$p" = none ] || q="--quant plugins/$p.so"
    for b in 1 8; do
      for d in graph eager; do
        "$BIN" run $D $q --batch-size $b --decode $d --out "$OUT/smol-$p-b$b-$d" > "$OUT/smol-$p-b$b-$d.txt" 2> "$OUT/smol-$p-b$b-$d.log"
        echo "smol run $p b$b $d: exit $? $(python3 -c "import json;r=json.load(open('$OUT/smol-$p-b$b-$d/results.json'));print(r['device'].get('decode'), r.get('metrics', r.get('scores', '')))" 2>&1 | cut -c1-300)"
      done
      same_predictions "$OUT/smol-$p-b$b-graph" "$OUT/smol-$p-b$b-eager"
    done
    "$BIN" bench --model $G --device cuda $q --prompt-lens 128 --batch-sizes 1,8 --decode-steps 64 --repeats 3 \
      --decode eager,graph --out "$OUT/smol-bench-$p.json" > "$OUT/smol-bench-$p.txt" 2> "$OUT/smol-bench-$p.log"
    echo "smol bench $p: exit $?"; cat "$OUT/smol-bench-$p.txt"
  done
fi
