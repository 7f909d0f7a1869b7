# Sourced by bench/gpu_study.sh and bench/gpu_scaling.sh on the GPU machine: the CUDA runtime's
# environment, the GGUF parts each device call brings (kept in /tmp/parts between calls on one
# warm machine: tracked files + carry ≤ 64 MiB a call), unpacking the carried binary and
# bundle, and joining the parts into the model.
source scripts/cuda-device-env.sh
export LLQ_CACHE_DIR=/tmp/llq-cache RUST_LOG=${RUST_LOG:-warn}
BIN=dist/llq-host-cuda
G=models/smollm2-135m-instruct.gguf
collect_parts() {
  mkdir -p /tmp/parts
  for f in models/smollm2.part-a?; do
    [ -f "$f" ] && [ ! -f "/tmp/parts/${f##*/}" ] && cp "$f" /tmp/parts/
  done
  ls /tmp/parts
}
unpack_binary() {
  python3 -c "import lzma,shutil; shutil.copyfileobj(lzma.open('$BIN.xz'), open('$BIN','wb'))" && chmod +x "$BIN"
}
unpack_bundle() {
  tar xJf dist/gpu-bundle.tar.xz && xz -d -f data/gutenberg/calibration.txt.xz
}
join_model() {
  [ -f "$G" ] || { cat /tmp/parts/smollm2.part-a? > "$G.tmp" && mv "$G.tmp" "$G"; }
  echo "model sha256: $(sha256sum "$G" | cut -c1-64)"
}
# `llq-host bench` once per stdin line `TAG PLUGIN [K=V …]` (PLUGIN none: no --quant) with the
# shared arguments "$1"; each row's report into $OUT/bench-TAG.{json,txt,log}.
bench_rows() {
  local args="$1" tag plugin opts q o
  while read -r tag plugin opts; do
    q=""; [ "$plugin" = none ] || q="--quant plugins/$plugin.so"
    for o in $opts; do q="$q --opt $o"; done
    "$BIN" bench $args $q --out "$OUT/bench-$tag.json" > "$OUT/bench-$tag.txt" 2> "$OUT/bench-$tag.log"
    echo "bench $tag: exit $?"; cat "$OUT/bench-$tag.txt"
  done
}
