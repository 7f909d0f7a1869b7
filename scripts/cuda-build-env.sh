# Source this file (bash) to build CUDA code on a machine with no CUDA toolkit.
#   source scripts/cuda-build-env.sh && make build-cuda   (or cargo build --release -p llq-host --features cuda)
# It installs, once, NVIDIA's compiler from PyPI (pinned to CUDA 13.0, the version
# an H100 machine with driver 580 supports), and makes link-time stub libraries for
# libcuda/libcublas/libcublasLt/libcurand/libnvrtc, which the GPU machine provides
# at run time. The cudarc crate must already be in cargo's registry: run
# `cargo fetch` in the workspace first (the script does it if a Cargo.toml is here).
LLQ_CUDA_HOME="${LLQ_CUDA_HOME:-$HOME/.cache/llq-cuda-13.0}"
_llq_py="$LLQ_CUDA_HOME/venv/bin/python"
if [ ! -x "$LLQ_CUDA_HOME/venv/bin/pip" ]; then
  python3 -m venv "$LLQ_CUDA_HOME/venv" || return 1
fi
_llq_t="$LLQ_CUDA_HOME/venv/lib/python3.11/site-packages/nvidia/cu13"
if [ ! -x "$_llq_t/bin/nvcc" ]; then
  "$LLQ_CUDA_HOME/venv/bin/pip" install -q \
    nvidia-cuda-nvcc==13.0.88 nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85 \
    nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88 || return 1
fi
_llq_t="$(ls -d "$LLQ_CUDA_HOME"/venv/lib/python3*/site-packages/nvidia/cu13 | head -1)"
[ -f Cargo.toml ] && cargo fetch -q 2>/dev/null
_llq_cudarc="$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-* 2>/dev/null | sort -V | tail -1)"
_llq_stubs="$LLQ_CUDA_HOME/stubs"
if [ -n "$_llq_cudarc" ] && [ ! -f "$_llq_stubs/.from-$(basename "$_llq_cudarc")" ]; then
  mkdir -p "$_llq_stubs"
  _llq_stub() { # module lib soname symbol-prefix
    grep -ohE "^\s+fn ${4}[A-Za-z_0-9]*\(" "$_llq_cudarc/src/$1/sys/mod.rs" \
      | sed -E 's/^\s+fn ([A-Za-z_0-9]+)\(/void \1(void){}/' | sort -u > "$_llq_stubs/$2.c"
    gcc -shared -fPIC -o "$_llq_stubs/lib$2.so" -Wl,-soname,"$3" "$_llq_stubs/$2.c"
  }
  _llq_stub driver cuda libcuda.so.1 cu
  _llq_stub cublas cublas libcublas.so.13 cublas
  _llq_stub cublaslt cublasLt libcublasLt.so.13 cublasLt
  _llq_stub curand curand libcurand.so.10 curand
  _llq_stub nvrtc nvrtc libnvrtc.so.13 nvrtc
  ln -sf "$_llq_t/lib/libcudart.so.13" "$_llq_stubs/libcudart.so"
  touch "$_llq_stubs/.from-$(basename "$_llq_cudarc")"
elif [ -z "$_llq_cudarc" ]; then
  echo "build-env.sh: cudarc is not in cargo's registry yet; run 'cargo fetch' and source again" >&2
fi
export PATH="$_llq_t/bin:$PATH" CUDA_ROOT="$_llq_t" CUDA_PATH="$_llq_t" CUDA_HOME="$_llq_t"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}" NVCC_CCBIN="${NVCC_CCBIN:-gcc}"
export LIBRARY_PATH="$_llq_stubs${LIBRARY_PATH:+:$LIBRARY_PATH}"
echo "CUDA 13.0 build env ready: nvcc=$(command -v nvcc), sm_${CUDA_COMPUTE_CAP}, stubs in $_llq_stubs"
