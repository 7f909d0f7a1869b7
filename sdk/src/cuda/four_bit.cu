// bitsandbytes 4-bit formats (NF4, FP4): packed codes two a byte (first element in the high
// nibble), one absmax per block of p0 elements, optionally double-quantized (p1 != 0).
// Buffers: b0 codes; b1 absmax (f32) or, with double quantization, b1 absmax codes (u8),
// b2 the absmax offset (one f32), b3 absmax2 (f32, one per 256 absmax codes).
// Needs LLQ_CODE_BITS[16] (the 4-bit table) and LLQ_DYN_BITS[256] (the dynamic 8-bit map).
// q/k/v in one launch at four blocks an SM: 64 registers, no spill (80 unbounded; the header's
// LLQ_X3_BOUNDS).
#undef LLQ_X3_BOUNDS
#define LLQ_X3_BOUNDS __launch_bounds__(256, 4)
struct LlqFourBit {
  enum { LUT = 16 + 256 };
  static __device__ float lut(int i) { return __uint_as_float(i < 16 ? LLQ_CODE_BITS[i] : LLQ_DYN_BITS[i - 16]); }
  // The dynamic map is read only to decode double-quantized absmax codes.
  static __device__ __forceinline__ int lut_len(const LlqArgs& a) { return a.p1 ? (int)LUT : 16; }
  static __device__ __forceinline__ bool pow2_block(const LlqArgs& a) { return a.p0 >= 8 && (a.p0 & (a.p0 - 1)) == 0; }
  static __device__ __forceinline__ float absmax(const LlqArgs& a, const float* lut, long long blk) {
    if (a.p1) {
      // dequantize_blockwise(code) * absmax2 + offset, rounded as the CPU does (no FMA).
      const float s2 = __ldg(reinterpret_cast<const float*>(a.b3) + (blk >> 8));
      return __fadd_rn(__fmul_rn(lut[16 + a.b1[blk]], s2), __ldg(reinterpret_cast<const float*>(a.b2)));
    }
    return __ldg(reinterpret_cast<const float*>(a.b1) + blk);
  }
  // The codes of 8 weights and, for power-of-two blocks (all of bitsandbytes' sizes), their
  // absmax (or, double-quantized, its 8-bit code), fetched together so both loads are in
  // flight at once; the rest of a double-quantized absmax is shared by 16K weights (cached).
  struct Raw { unsigned q; unsigned s; };
  static __device__ __forceinline__ Raw load8(const LlqArgs& a, long long i) {
    Raw r;
    r.q = __ldg(reinterpret_cast<const unsigned*>(a.b0 + (i >> 1)));
    r.s = 0;
    if (pow2_block(a)) {
      const long long blk = i >> (__ffsll(a.p0) - 1);
      r.s = a.p1 ? (unsigned)__ldg(a.b1 + blk) : __ldg(reinterpret_cast<const unsigned*>(a.b1) + blk);
    }
    return r;
  }
  static __device__ __forceinline__ void decode8(const LlqArgs& a, const float* lut, long long i, long long, Raw raw, float w[8]) {
    if (pow2_block(a)) {
      // 8 aligned weights never straddle a power-of-two block: one absmax.
      float s = __uint_as_float(raw.s);
      if (a.p1) {
        const long long blk = i >> (__ffsll(a.p0) - 1);
        const float s2 = __ldg(reinterpret_cast<const float*>(a.b3) + (blk >> 8));
        s = __fadd_rn(__fmul_rn(lut[16 + raw.s], s2), __ldg(reinterpret_cast<const float*>(a.b2)));
      }
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        const unsigned byte = (raw.q >> (8 * k)) & 0xffu;
        w[2 * k] = __fmul_rn(lut[byte >> 4], s);
        w[2 * k + 1] = __fmul_rn(lut[byte & 15u], s);
      }
    } else {  // any other even block size: one division per weight (never taken by bitsandbytes' sizes)
      for (int k = 0; k < 8; ++k) {
        const unsigned byte = (raw.q >> (8 * (k >> 1))) & 0xffu;
        w[k] = __fmul_rn(lut[(k & 1) ? (byte & 15u) : (byte >> 4)], absmax(a, lut, (i + k) / a.p0));
      }
    }
  }
  // Header v1.2: 32 weights (16 bytes of codes) a load, for blocks of at least 32 weights
  // (one absmax per load) and rows whose codes start 16-byte aligned.
  struct Raw32 { uint4 q; unsigned s; };
  static __device__ __forceinline__ bool wide_ok(const LlqArgs& a) {
    return pow2_block(a) && a.p0 >= 32 && (a.cols & 31) == 0 && ((size_t)a.b0 & 15) == 0;
  }
  static __device__ __forceinline__ Raw32 load32_rc(const LlqArgs& a, unsigned row, unsigned col) {
    const size_t i = (size_t)row * (size_t)a.cols + col;
    const size_t blk = i >> (__ffsll(a.p0) - 1);
    Raw32 r;
    r.q = __ldg(reinterpret_cast<const uint4*>(a.b0 + (i >> 1)));
    r.s = a.p1 ? (unsigned)__ldg(a.b1 + blk) : __ldg(reinterpret_cast<const unsigned*>(a.b1) + blk);
    return r;
  }
  static __device__ __forceinline__ void decode32(const LlqArgs& a, const float* lut, unsigned row, unsigned col,
                                                  const Raw32& raw, float w[32]) {
    float s = __uint_as_float(raw.s);
    if (a.p1) {
      const size_t blk = ((size_t)row * (size_t)a.cols + col) >> (__ffsll(a.p0) - 1);
      const float s2 = __ldg(reinterpret_cast<const float*>(a.b3) + (blk >> 8));
      s = __fadd_rn(__fmul_rn(lut[16 + raw.s], s2), __ldg(reinterpret_cast<const float*>(a.b2)));
    }
    const unsigned q[4] = {raw.q.x, raw.q.y, raw.q.z, raw.q.w};
#pragma unroll
    for (int k = 0; k < 16; ++k) {
      const unsigned byte = (q[k >> 2] >> (8 * (k & 3))) & 0xffu;
      w[2 * k] = __fmul_rn(lut[byte >> 4], s);
      w[2 * k + 1] = __fmul_rn(lut[byte & 15u], s);
    }
  }
  static __device__ __forceinline__ float at(const LlqArgs& a, const float* lut, long long i, long long) {
    const unsigned byte = a.b0[i >> 1];
    return __fmul_rn(lut[(i & 1) ? (byte & 15u) : (byte >> 4)], absmax(a, lut, llq_block_of(i, a.p0)));
  }
};
