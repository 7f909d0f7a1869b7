#!/usr/bin/env bash
# The controls behind docs/benchmarks.md's HQQ 3-bit finding (issue #15), on the 2-core CPU:
#  1. perplexity on the first 8 evaluation paragraphs for RTN-3 g64 and HQQ-3 g64 with and
#     without the solver, with the initial zero rounded or not, and with it rounded only in
#     some layers (`--opt-layer`);
#  2. each SmolLM2 layer's relative weight MSE after RTN-3 g64 and after HQQ-3's min/max start
#     (optimize=false), both through the plugins' own dequantize (`llq-host quantize
#     --dequantize` on every linear layer, decoded from the GGUF by gguf-py), and the same for
#     the full HQQ-3 on three layers.
# Needs `make build models data` and gguf-py (PyPI gguf==0.19.0) on PYTHONPATH, e.g.
#   python3 -m pip download gguf==0.19.0 --no-deps -d /tmp/w && unzip -q /tmp/w/gguf-*.whl -d /tmp/gguf-py
#   PYTHONPATH=/tmp/gguf-py bench/hqq3_probe.sh
set -eu
HOST=${HOST:-target/release/llq-host}
M=models/smollm2-135m-instruct.gguf
W=$(mktemp -d); trap 'rm -rf "$W"' EXIT
ppl() {  # label, then plugin and its arguments
  local label=$1; shift; local p=$1; shift
  "$HOST" run --model $M --quant plugins/$p.so "$@" --task tasks/perplexity.wasm \
    --data data/gutenberg/evaluation.txt --limit 8 --out "$W/run" 2>/dev/null | grep '^perplexity' | sed "s/^/$label: /"
  rm -rf "$W/run"
}
ppl "rtn3-g64" rtn --opt bits=3 --opt group_size=64
ppl "hqq3 (defaults)" hqq --opt bits=3
ppl "hqq3 optimize=false" hqq --opt bits=3 --opt optimize=false
ppl "hqq3 optimize=false round_zero=true" hqq --opt bits=3 --opt optimize=false --opt round_zero=true
ppl "hqq3 round_zero=true" hqq --opt bits=3 --opt round_zero=true
ppl "hqq3, round_zero=true in the MLP only" hqq --opt bits=3 --opt-layer '*.mlp.*:round_zero=true'
ppl "hqq3, round_zero=true in q_proj and k_proj only" hqq --opt bits=3 --opt-layer '*.self_attn.[qk]_proj:round_zero=true'
python3 bench/peers/weight_mse.py export $M "$W/all.safetensors"
"$HOST" quantize --quant plugins/rtn.so --opt bits=3 --opt group_size=64 --input "$W/all.safetensors" --output "$W/rtn.safetensors" --dequantize > /dev/null
"$HOST" quantize --quant plugins/hqq.so --opt bits=3 --opt optimize=false --input "$W/all.safetensors" --output "$W/hqq-start.safetensors" --dequantize > /dev/null
"$HOST" quantize --quant plugins/hqq.so --opt bits=3 --input "$W/all.safetensors" --output "$W/hqq.safetensors" --dequantize > /dev/null
python3 bench/peers/weight_mse.py compare "$W/all.safetensors" "$W/rtn.safetensors" "$W/hqq-start.safetensors" "$W/hqq.safetensors"
