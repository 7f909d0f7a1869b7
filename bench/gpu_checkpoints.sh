#!/usr/bin/env bash
# Issue #15's bitsandbytes round trip on the GPU machine (transformers + bitsandbytes need CUDA):
# llq (the CPU build, run on that machine's CPU in f32) exports SmolLM2 as an HF bnb-4bit
# checkpoint (nf4, double quant) and scores a text with it (`run --native --save-logprobs`);
# bench/peers/bnb_checkpoint_check.py then has transformers quantize the same f32 weights and
# save a real bitsandbytes checkpoint (compared with llq's tensor by tensor), loads llq's
# export into bitsandbytes' Linear4bit layers and compares its log-probs with llq's; and llq
# runs the real checkpoint (`--native`) on the same text. Six calls back to back (the machine
# keeps /tmp while warm), as the carry limit (64 MiB with the ~38 MiB tracked tree) asks:
#   bench/gpu_checkpoints.sh OUT setup   carry dist/bnb-0.50.2-cuda130.tar.xz dist/llq-host-cpu.xz dist/cpu-bundle.tar.xz
#   bench/gpu_checkpoints.sh OUT part    carry models/smollm2.part-0   (then -1, -2, -3)
#   bench/gpu_checkpoints.sh OUT check   carry models/smollm2.part-4
# dist/llq-host-cpu.xz: xz of target/release/llq-host; dist/cpu-bundle.tar.xz: plugins/nf4.so
# tasks/perplexity.wasm; dist/bnb-0.50.2-cuda130.tar.xz: the bitsandbytes 0.50.2 wheel's
# package with only its CUDA 13.0 and CPU libraries (the whole wheel is 43 MB); the parts: the
# GGUF's first 15,000,000 bytes, then `split -b 21000000 -d -a 1` of the rest.
set -u
FINAL="${1:?usage: bench/gpu_checkpoints.sh OUT setup|part|check}"; WHAT="${2:?stage}"
mkdir -p "$FINAL"
W=/tmp/llq-ck; mkdir -p "$W" /tmp/parts
export RUST_LOG=${RUST_LOG:-warn}
H="$W/llq-host"
case "$WHAT" in
setup)
  python3 -c "import lzma,shutil; shutil.copyfileobj(lzma.open('dist/llq-host-cpu.xz'), open('$H','wb'))" && chmod +x "$H"
  tar xJf dist/cpu-bundle.tar.xz -C "$W"
  mkdir -p /tmp/llq-bnb && tar xJf dist/bnb-0.50.2-cuda130.tar.xz -C /tmp/llq-bnb
  cp models/smollm2.part-? /tmp/parts/ 2>/dev/null
  echo "setup: $? $(ls $W /tmp/llq-bnb /tmp/parts | tr '\n' ' ')"
  ;;
part)
  cp models/smollm2.part-? /tmp/parts/ && ls -la /tmp/parts
  ;;
check)
  [ -f dist/llq-host-cpu.xz ] && python3 -c "import lzma,shutil; shutil.copyfileobj(lzma.open('dist/llq-host-cpu.xz'), open('$H','wb'))"
  cp models/smollm2.part-? /tmp/parts/ 2>/dev/null
  G=$W/smollm2.gguf
  cat /tmp/parts/smollm2.part-? > "$G"; echo "model sha256: $(sha256sum "$G" | cut -c1-64)"
  cp bench/peers/bnb_check_text.txt "$W/text.txt"   # the first 2,400 bytes of the evaluation books
  set -x
  "$H" convert --model "$G" --out "$W/f32" 2> "$FINAL/convert.log"
  "$H" quantize --model "$G" --quant "$W/plugins/nf4.so" --opt double_quant=true --export hf-bnb --output "$W/llq-nf4" 2> "$FINAL/export.log"
  "$H" run --model "$W/llq-nf4" --quant "$W/plugins/nf4.so" --native --task "$W/tasks/perplexity.wasm" --data "$W/text.txt" \
    --window 2048 --save-logprobs --out "$W/run-llq" > "$FINAL/run-llq.txt" 2> "$FINAL/run-llq.log"
  source scripts/cuda-device-env.sh 2>/dev/null
  PYTHONPATH="/tmp/llq-bnb${PYTHONPATH:+:$PYTHONPATH}" python3 bench/peers/bnb_checkpoint_check.py \
    "$W/f32" "$W/llq-nf4" "$W/text.txt" "$W/run-llq" "$W/check" > "$FINAL/check.txt" 2> "$FINAL/check.log"
  echo "check: exit $?"
  cp "$W/f32/tokenizer.json" "$W/check/realbnb/" 2>/dev/null
  "$H" run --model "$W/check/realbnb" --quant "$W/plugins/nf4.so" --native --task "$W/tasks/perplexity.wasm" --data "$W/text.txt" \
    --window 2048 --save-logprobs --out "$W/run-real" > "$FINAL/run-real.txt" 2> "$FINAL/run-real.log"
  set +x
  cp "$W/check/bnb_checkpoint_check.json" "$FINAL/" 2>/dev/null
  cp "$W/run-llq/results.json" "$FINAL/results-llq-export.json" 2>/dev/null
  cp "$W/run-real/results.json" "$FINAL/results-real-bnb.json" 2>/dev/null
  python3 bench/peers/bnb_checkpoint_check.py runs "$W/run-llq" "$W/run-real" > "$FINAL/real-vs-export.txt" 2>&1
  echo "llq on the real checkpoint vs llq on its export: $(cat "$FINAL/real-vs-export.txt")"
  tail -c 3000 "$FINAL/check.txt"; tail -n 5 "$FINAL/check.log" "$FINAL/run-real.log"
  grep -h perplexity "$FINAL"/run-*.txt
  ;;
esac
