// LLM.int8() weights as the CPU dequantize computes them: W[r, c] = (CB[r, c] * SCB[r]) * (1/127).
// Buffers: b0 CB (int8, rows x cols), b1 SCB (f32, one per row). Needs LLQ_INT8_DEQUANT.
// Weight-only: the fused matvec multiplies bf16 activations by these weights in f32, as the
// host's CPU path does (activations are not quantized to int8; see the plugin docs).
struct LlqInt8 {
  enum { LUT = 0 };
  static __device__ float lut(int) { return 0.f; }
  typedef uint2 Raw;
  static __device__ __forceinline__ Raw load8(const LlqArgs& a, long long i) {
    return __ldg(reinterpret_cast<const uint2*>(a.b0 + i));
  }
  static __device__ __forceinline__ float w1(signed char q, float s) { return __fmul_rn(__fmul_rn((float)q, s), LLQ_INT8_DEQUANT); }
  static __device__ __forceinline__ void decode8(const LlqArgs& a, const float*, long long, long long row, Raw raw, float w[8]) {
    const float s = __ldg(reinterpret_cast<const float*>(a.b1) + row);
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      w[k] = w1((signed char)((raw.x >> (8 * k)) & 0xffu), s);
      w[4 + k] = w1((signed char)((raw.y >> (8 * k)) & 0xffu), s);
    }
  }
  static __device__ __forceinline__ float at(const LlqArgs& a, const float*, long long i, long long row) {
    return w1((signed char)a.b0[i], reinterpret_cast<const float*>(a.b1)[row]);
  }
};
LLQ_DEFINE_KERNELS(LlqInt8, 4, int8)
