#!/usr/bin/env bash
# Registers and spills of the kernel modules as NVRTC would build them, from ptxas on this
# machine (no GPU needed): the host's step module (header + pointwise.cu + step.cu) and the
# NF4, u8 int-group (rtn/gptq/awq), hqq, fp16, int8 and gguf plugin modules, compiled for sm_90
# with the CUDA 13 toolkit that `scripts/cuda-build-env.sh` installs. The register counts quoted
# in bench/NOTES.md (2026-12-08) come from this script.
#   bench/ptxas_regs.sh [ENTRY_REGEX]   (default: matvec entries)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/cuda-build-env.sh > /dev/null
W=$(mktemp -d); trap 'rm -rf "$W"' EXIT
H=sdk/src/cuda/llq_kernels.cuh
U8_BOUNDS=$'#undef LLQ_X3_BOUNDS\n#define LLQ_X3_BOUNDS __launch_bounds__(256, 4)'
cat $H host/src/gpu/pointwise.cu host/src/gpu/step.cu > "$W/step.cu"
{ cat $H; echo '__constant__ unsigned LLQ_CODE_BITS[16]; __constant__ unsigned LLQ_DYN_BITS[256];'
  cat sdk/src/cuda/four_bit.cu; echo 'LLQ_DEFINE_KERNELS(LlqFourBit, 4, nf4)'; } > "$W/nf4.cu"
{ cat $H sdk/src/cuda/intgroup.cu; echo "$U8_BOUNDS"; echo 'LLQ_DEFINE_KERNELS(LlqIntGroupU8, 4, rtn)'; } > "$W/rtn.cu"
{ cat $H sdk/src/cuda/intgroup.cu; echo 'LLQ_DEFINE_KERNELS(LlqIntGroup, 4, hqq)'; } > "$W/hqq.cu"
cat $H plugins/fp16/src/fp16.cu > "$W/fp16.cu"
{ cat $H; echo '#define LLQ_INT8_DEQUANT 0.0078740157f'; cat plugins/int8/src/int8.cu; } > "$W/int8.cu"
{ cat $H plugins/gguf/src/ggml.cu; echo 'LLQ_DEFINE_KERNELS(LlqGgml, 4, gguf)'; } > "$W/gguf.cu"
for m in step nf4 rtn hqq fp16 int8 gguf; do
  nvcc -std=c++17 -arch=sm_90 -cubin -Xptxas -v -o "$W/$m.cubin" "$W/$m.cu" > "$W/$m.log" 2>&1 ||
    { cat "$W/$m.log"; exit 1; }
  python3 - "$W/$m.log" "${1:-matvec}" <<'PY'
import re, sys
cur, info = None, {}
for line in open(sys.argv[1]):
    m = re.search(r"Compiling entry function '(\S+)'", line)
    if m:
        cur = m.group(1); info[cur] = ["", "0"]; continue
    m = re.search(r"(\d+) bytes spill stores", line)
    if m and cur: info[cur][1] = m.group(1)
    m = re.search(r"Used (\d+) registers", line)
    if m and cur: info[cur][0] = m.group(1)
for k, (r, s) in info.items():
    if re.search(sys.argv[2], k): print(f"{k:40s} {r:>4s} registers, {s} bytes spilled")
PY
done
