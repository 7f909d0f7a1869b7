// llama.cpp's block types (the gguf plugin's packed format: one buffer b0 of blocks along each
// row) decoded as candle-core's CPU `to_float` decodes them (k_quants.rs), the same f32
// operations in the same order with no FMA contraction, so the GPU's weights are the CPU
// dequantization bit for bit. p0 = the type, in the plugin's TYPES order:
// 0 q4_0, 1 q4_1, 2 q5_0, 3 q5_1, 4 q8_0, 5 q2_k, 6 q3_k, 7 q4_k, 8 q5_k, 9 q6_k.
// Block layouts (ggml-common.h): bytes a block, values a block (32, or 256 for the K types).
struct LlqGgml {
  enum { LUT = 0 };
  static __device__ float lut(int) { return 0.f; }
  static __device__ __forceinline__ int block_bytes(long long t) {
    switch (t) {
      case 0: return 18; case 1: return 20; case 2: return 22; case 3: return 24; case 4: return 34;
      case 5: return 84; case 6: return 110; case 7: return 144; case 8: return 176; default: return 210;
    }
  }
  static __device__ __forceinline__ int block_values(long long t) { return t >= 5 ? 256 : 32; }
  static __device__ __forceinline__ unsigned u8(const unsigned char* b, int o) { return (unsigned)__ldg(b + o); }
  static __device__ __forceinline__ float f16at(const unsigned char* b, int o) {
    return llq_f16_to_f32((unsigned short)(u8(b, o) | (u8(b, o + 1) << 8)));
  }
  static __device__ __forceinline__ unsigned u32at(const unsigned char* b, int o) {
    return u8(b, o) | (u8(b, o + 1) << 8) | (u8(b, o + 2) << 16) | (u8(b, o + 3) << 24);
  }
  // candle's get_scale_min_k4: the 6-bit scale and min of sub-block j of a q4_K/q5_K block.
  static __device__ __forceinline__ void scale_min_k4(const unsigned char* q, int j, unsigned* d, unsigned* m) {
    if (j < 4) {
      *d = u8(q, j) & 63u;
      *m = u8(q, j + 4) & 63u;
    } else {
      *d = (u8(q, j + 4) & 0xFu) | ((u8(q, j - 4) >> 6) << 4);
      *m = (u8(q, j + 4) >> 4) | ((u8(q, j) >> 6) << 4);
    }
  }
  // A weight is `code · s`, `code · s + m` (q4_1, q5_1) or `s · code − m` (q2_K, q4_K, q5_K), in
  // candle's order of operations; `s` and `m` are shared by the 16 or 32 values of a
  // (sub-)block, so 8 weights at a multiple of 8 need them once.
  struct Affine { float s, m; int mode; };
  static __device__ __forceinline__ float apply(const Affine& f, int code) {
    const float x = (float)code;
    if (f.mode == 1) return __fadd_rn(__fmul_rn(x, f.s), f.m);
    if (f.mode == 2) return __fsub_rn(__fmul_rn(f.s, x), f.m);
    return __fmul_rn(x, f.s);
  }
  // q3_K's 6-bit scale `is` (candle's aux-word unpacking of the 12 scale bytes).
  static __device__ __forceinline__ int q3k_scale(const unsigned char* b, int is) {
    const unsigned a0 = u32at(b, 96), a1 = u32at(b, 100), tmp = u32at(b, 104);
    const unsigned K1 = 0x03030303u, K2 = 0x0f0f0f0fu;
    unsigned w;
    switch (is >> 2) {
      case 0: w = (a0 & K2) | ((tmp & K1) << 4); break;
      case 1: w = (a1 & K2) | (((tmp >> 2) & K1) << 4); break;
      case 2: w = ((a0 >> 4) & K2) | (((tmp >> 4) & K1) << 4); break;
      default: w = ((a1 >> 4) & K2) | (((tmp >> 6) & K1) << 4); break;
    }
    return (int)(signed char)((w >> (8 * (is & 3))) & 0xFFu);
  }
  // The scale (and offset) of the (sub-)block holding value e of the block at b.
  static __device__ Affine affine(long long t, const unsigned char* b, int e) {
    switch (t) {
      case 0: case 2: case 4: return Affine{f16at(b, 0), 0.f, 0};     // q4_0, q5_0, q8_0: d
      case 1: case 3: return Affine{f16at(b, 0), f16at(b, 2), 1};      // q4_1, q5_1: d, m
      case 5: {  // q2_K: 4-bit scale and min per 16 values
        const int chunk = e >> 7, r = e & 127, j = r >> 5, half = (r >> 4) & 1;
        const unsigned sc = u8(b, chunk * 8 + j * 2 + half);
        return Affine{__fmul_rn(f16at(b, 80), (float)(sc & 0xFu)), __fmul_rn(f16at(b, 82), (float)(sc >> 4)), 2};
      }
      case 6: {  // q3_K: 6-bit scale − 32 per 16 values
        const int chunk = e >> 7, r = e & 127, j = r >> 5, half = (r >> 4) & 1;
        return Affine{__fmul_rn(f16at(b, 108), __fsub_rn((float)q3k_scale(b, chunk * 8 + j * 2 + half), 32.0f)), 0.f, 0};
      }
      case 7: case 8: {  // q4_K, q5_K: 6-bit scale and min per 32 values
        unsigned sc, mn;
        scale_min_k4(b + 4, 2 * (e >> 6) + ((e >> 5) & 1), &sc, &mn);
        return Affine{__fmul_rn(f16at(b, 0), (float)sc), __fmul_rn(f16at(b, 2), (float)mn), 2};
      }
      default: {  // q6_K: int8 scale per 16 values, d · scale first
        const int n = e >> 7, r = e & 127, quarter = r >> 5, is = (r & 31) >> 4;
        const int s = (int)(signed char)u8(b, 192 + 8 * n + is + 2 * quarter);
        return Affine{__fmul_rn(f16at(b, 208), (float)s), 0.f, 0};
      }
    }
  }
  // The integer code of value e of the block at b (offsets applied: q4_0 − 8, q5_0 − 16,
  // q3_K's high bit, q5_K's + 16, q6_K − 32).
  static __device__ int code(long long t, const unsigned char* b, int e) {
    switch (t) {
      case 0: return (int)(e < 16 ? (u8(b, 2 + e) & 0xFu) : (u8(b, 2 + e - 16) >> 4)) - 8;
      case 1: return (int)(e < 16 ? (u8(b, 4 + e) & 0xFu) : (u8(b, 4 + e - 16) >> 4));
      case 2:
      case 3: {
        const int hq = t == 2 ? 2 : 4, qs = hq + 4, j = e < 16 ? e : e - 16;
        const unsigned qh = u32at(b, hq);
        const unsigned xh = e < 16 ? (((qh >> j) << 4) & 0x10u) : ((qh >> (j + 12)) & 0x10u);
        const int q = (int)((e < 16 ? (u8(b, qs + j) & 0xFu) : (u8(b, qs + j) >> 4)) | xh);
        return t == 2 ? q - 16 : q;
      }
      case 4: return (int)(signed char)u8(b, 2 + e);
      case 5: {
        const int chunk = e >> 7, r = e & 127, j = r >> 5, half = (r >> 4) & 1, i = r & 15;
        return (int)((u8(b, 16 + 32 * chunk + 16 * half + i) >> (2 * j)) & 3u);
      }
      case 6: {
        const int chunk = e >> 7, r = e & 127, j = r >> 5, qi = r & 31;
        const unsigned m = 1u << (chunk * 4 + j);
        return (int)((u8(b, 32 + 32 * chunk + qi) >> (2 * j)) & 3u) - ((u8(b, qi) & m) == 0u ? 4 : 0);
      }
      case 7:
      case 8: {
        const int j64 = e >> 6, r = e & 63, hi = r >> 5, l = r & 31;
        const unsigned byte = u8(b, (t == 7 ? 16 : 48) + 32 * j64 + l);
        int q = (int)(hi ? (byte >> 4) : (byte & 0xFu));
        if (t == 8 && (u8(b, 16 + l) & ((hi ? 2u : 1u) << (2 * j64)))) q += 16;
        return q;
      }
      default: {
        const int n = e >> 7, r = e & 127, quarter = r >> 5, l = r & 31;
        const int ql = 64 * n + l + ((quarter & 1) ? 32 : 0);
        const unsigned lo = (quarter < 2) ? (u8(b, ql) & 0xFu) : (u8(b, ql) >> 4);
        const unsigned h = (u8(b, 128 + 32 * n + l) >> (2 * quarter)) & 3u;
        return (int)(lo | (h << 4)) - 32;
      }
    }
  }
  // Value e (0 ≤ e < block_values) of the block at b.
  static __device__ __forceinline__ float value(long long t, const unsigned char* b, int e) {
    return apply(affine(t, b, e), code(t, b, e));
  }
  static __device__ __forceinline__ const unsigned char* block(const LlqArgs& a, unsigned row, unsigned col) {
    const long long t = a.p0;
    const long long per_row = a.cols / block_values(t);
    return a.b0 + ((long long)row * per_row + col / block_values(t)) * block_bytes(t);
  }
  // The 8 weights at a column that is a multiple of 8 lie in one block (32 and 256 are
  // multiples of 8): nothing to fetch ahead; decode8_rc reads the block's bytes.
  struct Raw { int unused; };
  static __device__ __forceinline__ Raw load8_rc(const LlqArgs&, unsigned, unsigned) { return Raw{0}; }
  static __device__ __forceinline__ void decode8_rc(const LlqArgs& a, const float*, unsigned row, unsigned col, Raw, float w[8]) {
    const unsigned char* b = block(a, row, col);
    const int e0 = (int)(col % (unsigned)block_values(a.p0));
    const Affine f = affine(a.p0, b, e0);
#pragma unroll
    for (int k = 0; k < 8; ++k) w[k] = apply(f, code(a.p0, b, e0 + k));
  }
  static __device__ __forceinline__ float at(const LlqArgs& a, const float*, long long i, long long row) {
    const unsigned col = (unsigned)(i - row * a.cols);
    return value(a.p0, block(a, (unsigned)row, col), (int)(col % (unsigned)block_values(a.p0)));
  }
};
