// 16-bit weights: b0 holds rows x cols values, f16 (p0 = 0) or bf16 (p0 = 1).
struct LlqSixteen {
  enum { LUT = 0 };
  static __device__ float lut(int) { return 0.f; }
  typedef uint4 Raw;
  static __device__ __forceinline__ float one(const LlqArgs& a, unsigned short h) {
    return a.p0 ? llq_bf16_to_f32(h) : llq_f16_to_f32(h);
  }
  static __device__ __forceinline__ Raw load8(const LlqArgs& a, long long i) {
    return __ldg(reinterpret_cast<const uint4*>(a.b0 + 2 * i));
  }
  static __device__ __forceinline__ void decode8(const LlqArgs& a, const float*, long long, long long, Raw raw, float w[8]) {
    const unsigned v[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      w[2 * k] = one(a, (unsigned short)(v[k] & 0xffffu));
      w[2 * k + 1] = one(a, (unsigned short)(v[k] >> 16));
    }
  }
  static __device__ __forceinline__ float at(const LlqArgs& a, const float*, long long i, long long) {
    return one(a, reinterpret_cast<const unsigned short*>(a.b0)[i]);
  }
};
LLQ_DEFINE_KERNELS(LlqSixteen, 2, fp16)
