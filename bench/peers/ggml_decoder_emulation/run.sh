#!/usr/bin/env bash
# The gguf plugin's CUDA decoder (plugins/gguf/src/ggml.cu) compiled as host C++ (g++ ≥ 12 for
# _Float16; __fmul_rn & co. as volatile f32 operations, so no FMA) and compared bit for bit with
# the plugin's CPU dequantization (candle's to_float) of a 4×512 matrix in all ten types: a check
# that needs no GPU, run before device time is spent (`llq-host kernels` is the one on the GPU).
#   bench/peers/ggml_decoder_emulation/run.sh   (after make build; host/tests/plugins.rs runs it)
set -eu
here="$(cd "$(dirname "$0")" && pwd)"; root="$here/../../.."
H="${LLQ_HOST:-$root/target/release/llq-host}"; P="${GGUF_PLUGIN:-$root/plugins/gguf.so}"
w="$(mktemp -d)"; trap 'rm -rf "$w"' EXIT
cd "$w"
python3 "$here/make_input.py"
g++ -O2 -std=c++17 -x c++ "$here/emu.cpp" -o emu
i=0
for t in q4_0 q4_1 q5_0 q5_1 q8_0 q2_k q3_k q4_k q5_k q6_k; do
  "$H" quantize --input in.safetensors --output packed_$t.safetensors --quant "$P" --opt type=$t 2>/dev/null
  "$H" quantize --input in.safetensors --output deq_$t.safetensors --quant "$P" --opt type=$t --dequantize 2>/dev/null
  python3 "$here/extract.py" $t > /dev/null
  ./emu $i blocks_$t.bin deq_$t.bin
  i=$((i + 1))
done
