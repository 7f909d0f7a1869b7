#!/usr/bin/env bash
# One device call for issue 11's two speed targets (results: docs/benchmarks.md):
# 1. the GPTQ solve alone (sdk/examples/gptq_time, CPU, all cores) on Llama-3.2-1B's shapes;
# 2. int-group kernel variants (plugins built locally into dist/kvar/, one per header/unroll
#    variant, see bench/NOTES.md) timed beside NF4 in this same call;
# 3. calibration + GPTQ of the synthetic Llama-3.2-1B with the per-phase split
#    (RUST_LOG=llq_host=debug synchronizes the device at each phase boundary).
# 4. with dist/ftime carried, the Cholesky/inverse timings of two SDK builds; always, the
#    bf16 Hessian product checked against the f32 one (LLQ_HESSIAN=check) and the GPU
#    factorization against the CPU one (LLQ_SOLVE=check) on SmolLM2 shapes.
#    Making dist/ftime (here, before the call): the recursive one is linalg.rs on the branch
#      git show recursive-factorization:sdk/src/quant/linalg.rs > sdk/src/quant/linalg.rs
#      cargo build --release -p llq-sdk --features gemm,testing --example factor_time --example gptq_time
#      (copy target/release/examples/{factor,gptq}_time to dist/ftime/*_rec), git checkout
#      sdk/src/quant/linalg.rs, build again into dist/ftime/*_old; tar cJf dist/ftime.tar.xz dist/ftime
#      and `tar xJf dist/ftime.tar.xz` on the device (the tracked tree leaves ~22 MiB to carry).
# 5. GPTQ-1B per VARIANTS (`solve:lazy[:staging]`, default "gpu:gpu gpu:cpu": the factorization
#    and the lazy updates on the host's GPU, then the lazy updates in the plugin; staging
#    `pinned` (default) or `pageable`, $LLQ_STAGING), stopping after the first success unless
#    BOTH=1 (the A/B in one call); LLQ_LAZY=check runs in the step-4 check.
# Carry: dist/llq-host-cuda.xz dist/gpu-bundle.tar.xz [dist/gptq_time] [dist/kvar] [dist/ftime]
#        models/llama-3.2/tokenizer.json. Everything lands in $1/speed.tgz.
set -u
FINAL="${1:?usage: bench/gpu_speed_11.sh OUT}"
W=/tmp/speed; mkdir -p "$W" "$FINAL"
source scripts/cuda-device-env.sh
export LLQ_CACHE_DIR=/tmp/llq-cache
BIN=dist/llq-host-cuda
[ -x "$BIN" ] || { python3 -c "import lzma,shutil; shutil.copyfileobj(lzma.open('$BIN.xz'), open('$BIN','wb'))" && chmod +x "$BIN"; }
[ -f data/gutenberg/calibration.txt ] || { tar xJf dist/gpu-bundle.tar.xz && xz -d -f data/gutenberg/calibration.txt.xz; }
pack() { (cd "$W" && tar czf "$FINAL/speed.tgz" .); }
lscpu | grep -E "Model name|^CPU\(s\)|Flags" | cut -c1-400 > "$W/cpu.txt"
# 0. Host↔device copy rates on this machine (torch, CUDA events around each copy): pageable and
#    pinned, 8 MB and 512 MB, each way; what the host's services (gpu/staging.rs) choose between.
python3 - > "$W/copy-rates.txt" 2>&1 <<'PY'
import torch
ev = lambda: torch.cuda.Event(enable_timing=True)
for mb in (8, 512):
    n = mb * 2**20 // 8
    d = torch.empty(n, dtype=torch.float64, device="cuda")
    for pinned in (False, True):
        h = torch.ones(n, dtype=torch.float64).pin_memory() if pinned else torch.ones(n, dtype=torch.float64)
        for name, f in (("h2d", lambda: d.copy_(h, non_blocking=pinned)), ("d2h", lambda: h.copy_(d, non_blocking=pinned))):
            f(); torch.cuda.synchronize(); best = 1e9
            for _ in range(5):
                a, b = ev(), ev(); a.record(); f(); b.record(); torch.cuda.synchronize(); best = min(best, a.elapsed_time(b))
            print(f"{mb:4d} MB {'pinned  ' if pinned else 'pageable'} {name}: {best:8.3f} ms, {mb / 1024 / (best / 1e3):6.1f} GiB/s (best of 5)")
PY
cat "$W/copy-rates.txt"
# (1. is skipped when dist/gptq_time was not carried.)
if [ -x dist/gptq_time ]; then
  for s in "2048 8192" "8192 2048" "2048 2048"; do dist/gptq_time $s 2>&1 | tr '\n' ' ' | tee -a "$W/gptq_time.txt"; echo | tee -a "$W/gptq_time.txt"; done
fi
# The factorizations alone, two builds of the SDK side by side (dist/ftime/*_old: the
# right-looking blocked loop; *_rec: the recursive one of the branch recursive-factorization),
# when carried.
if [ -d dist/ftime ]; then
  for v in old rec main; do [ -x dist/ftime/factor_time_$v ] || continue
    for n in 8192 2048; do dist/ftime/factor_time_$v $n; done
    dist/ftime/gptq_time_$v 2048 8192
  done 2>&1 | tee "$W/factor_time.txt"
fi
# The bf16 GemmEx Hessian against the f32 product (LLQ_HESSIAN=check logs each layer group's
# largest difference), on the synthetic SmolLM2-135M shapes: quick, every group checked.
head -c 20000 data/gutenberg/evaluation.txt > /tmp/eval-short.txt
LLQ_GPTQ_TIMING=1 LLQ_HESSIAN=check LLQ_SOLVE=check LLQ_LAZY=check RUST_LOG=info "$BIN" run --model synthetic:smollm2-135m --quant plugins/gptq.so --opt bits=4 \
  --calib-samples 16 --task tasks/perplexity.wasm --data /tmp/eval-short.txt --task-opt split=none --device cuda \
  --out "$W/hcheck" > "$W/hcheck.txt" 2> "$W/hcheck.log"
echo "hessian check: exit $?"; grep "LLQ_HESSIAN=check.*largest" "$W/hcheck.log" | sed 's/.*largest/largest/' | sort -t' ' -k3 -g | tail -3
grep "scaled on the GPU" "$W/hcheck.log" | sed 's/.*columns: //' | awk '{d+=$1; n++} END {print "GPU-scaled Hessians: " n " checked, " d " values differ from the CPU widening"}'
grep "LLQ_SOLVE=check" "$W/hcheck.log" | sed 's/.*LLQ_SOLVE/LLQ_SOLVE/' | sort -u -t' ' -k2,2 | head -4
grep "LLQ_LAZY=check" "$W/hcheck.log" | sed 's/.*LLQ_LAZY/LLQ_LAZY/' | sort | uniq -c | head -6
pack
K="--shapes 2048x8192,8192x2048,2048x2048 --batch-sizes 1,8 --repeats 10"
# Variants: `name plugin [options]`; dist/kvar/*.so (local builds of one plugin with other
# kernel sources) join as rtn at 4 bits.
specs=("nf4 plugins/nf4.so" "rtn4 plugins/rtn.so --opt bits=4" "rtn3 plugins/rtn.so --opt bits=3")
for f in dist/kvar/*.so; do [ -f "$f" ] && specs+=("$(basename "$f" .so) $f --opt bits=4"); done
[ -n "${SKIP_KERNELS:-}" ] && specs=()
for spec in "${specs[@]}"; do
  set -- $spec; v=$1; p=$2; shift 2
  "$BIN" kernels --quant $p "$@" $K --out "$W/kernels-$v.json" > "$W/kernels-$v.txt" 2>&1
  echo "== $v: exit $?"; grep -E "^  (check  2048|matvec|dequantize) " "$W/kernels-$v.txt"
done
pack
head -c 20000 data/gutenberg/evaluation.txt > /tmp/eval-short.txt
# GPTQ-1B, one run per VARIANTS entry `solve:lazy` ($LLQ_SOLVE: the factorization, $LLQ_LAZY:
# the column loop's lazy updates, each gpu or cpu), the plugin's own split logged
# (LLQ_GPTQ_TIMING) and the host's per-layer and per-factorization split (debug); BOTH=1 runs every variant, otherwise the first that succeeds ends it.
for v in ${VARIANTS:-gpu:gpu gpu:cpu}; do
IFS=: read -r solve lazy staging <<< "$v"; staging=${staging:-pinned}
name=gptq1b-4-$solve-$lazy-$staging
LLQ_GPTQ_TIMING=1 LLQ_SOLVE=$solve LLQ_LAZY=$lazy LLQ_STAGING=$staging LLQ_HESSIAN=${LLQ_HESSIAN:-bf16} RUST_LOG=info,llq_host=debug /usr/bin/time -f "$name: %e s wall, %M KB peak RSS" timeout ${RUN_LIMIT:-300} "$BIN" run --model synthetic:llama-3.2-1b \
  --quant plugins/gptq.so --opt bits=4 --opt group_size=128 --task tasks/perplexity.wasm \
  --data /tmp/eval-short.txt --task-opt split=none --device cuda --out "$W/$name" > "$W/$name.txt" 2> "$W/$name.log"
rc=$?; echo "$name: exit $rc"; grep -E "after block 15|calibration:|wall" "$W/$name.log" | cut -c1-400
grep -E "^gptq .*(down_proj|gate_proj)" "$W/$name.log" | tail -2
pack
[ $rc = 0 ] && [ -z "${BOTH:-}" ] && break
done
