// Integer group format (llq_sdk::quant::intgroup; rtn, gptq, awq, hqq): each row a bit stream of
// p0-bit codes (first column in the lowest bits, rows padded to 32-bit words), one f16 scale and
// one zero point per (row, group of p1 columns) — u8, or f16 when p3 != 0 (hqq) — and with
// p2 != 0 a u32 group index per column (act-order). w = f32(scale) * (q - zero), rounded as the
// CPU does (no FMA).
// Buffers: b0 codes (u32 words), b1 scales (f16), b2 zeros (u8 or f16), b3 g_idx (u32) or null.
// F16Z: whether p3 (f16 zeros) is read at all. Methods that never store f16 zeros (rtn, gptq,
// awq) take LlqIntGroupU8: with both zero kinds in the 1-row driver's unrolled loop the
// compiler kept two decodes' registers (80 against 48 at UNROLL 4, ptxas for sm_90: three
// blocks an SM instead of five; bench/NOTES.md, issue 11).
template <bool F16Z>
struct LlqIntGroupOf {
  static __device__ __forceinline__ bool zf16(const LlqArgs& a) { return F16Z && a.p3 != 0; }
  enum { LUT = 0 };
  static __device__ float lut(int) { return 0.f; }
  static __device__ __forceinline__ long long words_per_row(const LlqArgs& a) { return (a.cols * a.p0 + 31) >> 5; }
  static __device__ __forceinline__ long long groups(const LlqArgs& a) { return (a.cols + a.p1 - 1) / a.p1; }
  static __device__ __forceinline__ float weight(const LlqArgs& a, unsigned q, long long row, long long g) {
    const long long k = row * groups(a) + g;
    const float s = llq_f16_to_f32(__ldg(reinterpret_cast<const unsigned short*>(a.b1) + k));
    return __fmul_rn(s, __fsub_rn((float)q, zero(a, k)));
  }
  static __device__ __forceinline__ unsigned zero_bits(const LlqArgs& a, long long k) {
    return zf16(a) ? (unsigned)__ldg(reinterpret_cast<const unsigned short*>(a.b2) + k) : (unsigned)__ldg(a.b2 + k);
  }
  static __device__ __forceinline__ float zero_of(const LlqArgs& a, unsigned bits) {
    return zf16(a) ? llq_f16_to_f32((unsigned short)bits) : (float)bits;
  }
  static __device__ __forceinline__ float zero(const LlqArgs& a, long long k) { return zero_of(a, zero_bits(a, k)); }
  static __device__ __forceinline__ unsigned group_of(const LlqArgs& a, unsigned c) {
    const unsigned gs = (unsigned)a.p1;
    return (gs & (gs - 1u)) == 0u ? c >> (__ffs(gs) - 1) : c / gs;
  }
  // The 8·p0 bits of 8 consecutive codes (at most 64, in at most two words), and the group's
  // scale (f16 bits) and zero in one word, fetched with the codes so both loads are in flight
  // at once. Only the row/column entries (header v1.1): the flat-index ones would need a
  // division by cols per 8 weights (v1–v5).
  struct Raw { unsigned lo, hi, sz; };
  // The 8 weights at column c share one group (no g_idx, groups a multiple of 8).
  static __device__ __forceinline__ bool fast8(const LlqArgs& a) { return !a.p2 && (a.p1 & 7) == 0; }
  static __device__ __forceinline__ unsigned groups32(const LlqArgs& a) {
    return group_of(a, (unsigned)a.cols + (unsigned)a.p1 - 1u);
  }
  static __device__ __forceinline__ Raw load8_rc(const LlqArgs& a, unsigned row, unsigned c) {
    const unsigned bit = c * (unsigned)a.p0;
    const unsigned wpr = ((unsigned)a.cols * (unsigned)a.p0 + 31u) >> 5;
    const unsigned* w = reinterpret_cast<const unsigned*>(a.b0) + (size_t)row * wpr + (bit >> 5);
    Raw r;
    r.lo = __ldg(w);
    r.hi = (int)(bit & 31u) + 8 * (int)a.p0 > 32 ? __ldg(w + 1) : 0u;
    r.sz = 0u;
    if (fast8(a)) {
      const size_t k = (size_t)row * groups32(a) + group_of(a, c);
      r.sz = (unsigned)__ldg(reinterpret_cast<const unsigned short*>(a.b1) + k) | (zero_bits(a, (long long)k) << 16);
    }
    return r;
  }
  static __device__ __forceinline__ void decode8_rc(const LlqArgs& a, const float*, unsigned row, unsigned c, Raw raw, float w[8]) {
    if (!fast8(a)) {
      const long long i = (long long)row * a.cols + c;
      for (int k = 0; k < 8; ++k) w[k] = at(a, nullptr, i + k, row);
      return;
    }
    const int off = (int)((c * (unsigned)a.p0) & 31u);
    const unsigned long long bits = (((unsigned long long)raw.hi << 32) | raw.lo) >> off;
    const unsigned mask = (1u << a.p0) - 1u;
    const float s = llq_f16_to_f32((unsigned short)(raw.sz & 0xffffu));
    const float z = zero_of(a, raw.sz >> 16);
#pragma unroll
    for (int j = 0; j < 8; ++j) w[j] = __fmul_rn(s, __fsub_rn((float)((unsigned)(bits >> (j * a.p0)) & mask), z));
  }
  // Header v1.2: 4-bit codes without act-order, groups a multiple of 32: 32 codes are one
  // aligned 16-byte load and share one scale and zero. Integer zeros use the 2^23 trick,
  // (2^23 + q) - (2^23 + z) = q - z exactly, instead of an int-to-float conversion per
  // weight (a quarter-rate instruction on sm_90); f16 zeros (hqq) subtract as before.
  struct Raw32 { uint4 q; unsigned sz; };
  static __device__ __forceinline__ bool wide_ok(const LlqArgs& a) {
    return a.p0 == 4 && !a.p2 && (a.p1 & 31) == 0 && (a.cols & 31) == 0 && ((size_t)a.b0 & 15) == 0;
  }
  static __device__ __forceinline__ Raw32 load32_rc(const LlqArgs& a, unsigned row, unsigned col) {
    const unsigned wpr = (unsigned)a.cols >> 3;  // 8 four-bit codes a word, cols % 32 == 0
    Raw32 r;
    r.q = __ldg(reinterpret_cast<const uint4*>(reinterpret_cast<const unsigned*>(a.b0) + (size_t)row * wpr + (col >> 3)));
    const size_t k = (size_t)row * groups32(a) + group_of(a, col);
    r.sz = (unsigned)__ldg(reinterpret_cast<const unsigned short*>(a.b1) + k) | (zero_bits(a, (long long)k) << 16);
    return r;
  }
  static __device__ __forceinline__ void decode32(const LlqArgs& a, const float*, unsigned, unsigned, const Raw32& raw,
                                                  float w[32]) {
    const float s = llq_f16_to_f32((unsigned short)(raw.sz & 0xffffu));
    const float z = zero_of(a, raw.sz >> 16);
    const unsigned q[4] = {raw.q.x, raw.q.y, raw.q.z, raw.q.w};
    if (zf16(a)) {
#pragma unroll
      for (int j = 0; j < 32; ++j) w[j] = __fmul_rn(s, __fsub_rn((float)((q[j >> 3] >> (4 * (j & 7))) & 15u), z));
    } else {
      const float zb = __fadd_rn(8388608.f, z);
#pragma unroll
      for (int j = 0; j < 32; ++j)
        w[j] = __fmul_rn(s, __fsub_rn(__uint_as_float(0x4b000000u | ((q[j >> 3] >> (4 * (j & 7))) & 15u)), zb));
    }
  }
  static __device__ __forceinline__ float at(const LlqArgs& a, const float*, long long i, long long row) {
    const long long c = i - row * a.cols;
    const long long bit = c * a.p0;
    const unsigned* w = reinterpret_cast<const unsigned*>(a.b0) + row * words_per_row(a) + (bit >> 5);
    const int off = (int)(bit & 31);
    unsigned long long v = __ldg(w);
    if (off + a.p0 > 32) v |= (unsigned long long)__ldg(w + 1) << 32;
    const unsigned q = (unsigned)(v >> off) & ((1u << a.p0) - 1u);
    const long long g = a.p2 ? (long long)__ldg(reinterpret_cast<const unsigned*>(a.b3) + c) : c / a.p1;
    return weight(a, q, row, g);
  }
};
// Any int-group tensor (u8 or f16 zeros), and one with u8 zeros only (p3 is ignored).
typedef LlqIntGroupOf<true> LlqIntGroup;
typedef LlqIntGroupOf<false> LlqIntGroupU8;
