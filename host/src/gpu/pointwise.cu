// Element-wise pieces shared by the decode step (step.cu) and the eager prefill (prefill.cu):
// each of those modules is compiled from llq_sdk's kernel header, this file and its own.
// Rounding follows candle's bf16 kernels as they run on the GPU (each function cites the
// kernel it stands in for), so a fused launch agrees with the unfused candle ops to the last
// bit: bf16 × bf16 is exact in f32 (8-bit significands), so rounding an f32 product once is
// the bf16 product.

#ifndef LLQ_NEG_INF
#define LLQ_NEG_INF __int_as_float(0xff800000)
#endif

// llq_round_bf16, llq_aligned16: the kernel header's (v1.6).

// One bf16 fused multiply-add, a·b + c rounded once (PTX `fma.rn.bf16`, sm_80+).
static __device__ __forceinline__ llq_bf16 llq_fma_bf16(llq_bf16 a, llq_bf16 b, llq_bf16 c) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  llq_bf16 d;
  asm("fma.rn.bf16 %0, %1, %2, %3;" : "=h"(d) : "h"(a), "h"(b), "h"(c));
  return d;
#else
  // Older devices: f32 then bf16, which rounds twice where a·b + c does not fit 24 bits.
  return llq_f32_to_bf16(fmaf(llq_bf16_to_f32(a), llq_bf16_to_f32(b), llq_bf16_to_f32(c)));
#endif
}

// RoPE on one pair (x1, x2) = (x[i], x[i + d/2]) as candle-kernels' bf16 `rope` (reduce.cu)
// computes it on the GPU: its source is x1·c − x2·s and x1·s + x2·c in bf16 operators, whose
// `__hmul`/`__hsub` permit contraction (unlike `__hmul_rn`), and ptxas contracts each into
// one product rounded to bf16 and one fused multiply-add: a = fma(x1, c, −bf16(x2·s)),
// b = fma(x1, s, bf16(x2·c)) (its SASS for sm_90a: HMUL2.BF16 then HFMA2.BF16; read with
// cuobjdump from the PTX candle ships). Torch's eager RoPE rounds each product and the sum
// (three roundings): within a bf16 ulp of this, not equal to it.
static __device__ __forceinline__ void llq_rope_pair(float x1, float x2, float c, float s, float& a, float& b) {
  const llq_bf16 h1 = llq_f32_to_bf16(x1), hc = llq_f32_to_bf16(c), hs = llq_f32_to_bf16(s);
  // bf16 × bf16 is exact in f32: rounding it once is the bf16 product.
  const llq_bf16 x2s = llq_f32_to_bf16(x2 * s), x2c = llq_f32_to_bf16(x2 * c);
  a = llq_bf16_to_f32(llq_fma_bf16(h1, hc, (llq_bf16)(x2s ^ 0x8000u)));
  b = llq_bf16_to_f32(llq_fma_bf16(h1, hs, x2c));
}

// llq_swiglu1: the kernel header's (v1.6), which the gate/up matvec entry runs too.

// out = bf16(bf16(silu(g)) · u) over n elements. 16-byte loads and stores where all three
// are aligned (every fresh candle tensor is), a scalar loop for the rest. Enters like the
// decode step's kernels (a programmatic dependent there, step.cu).
extern "C" __global__ void llq_swiglu(const llq_bf16* g, const llq_bf16* u, llq_bf16* out, long long n) {
  llq_grid_enter();
  const long long stride = (long long)gridDim.x * blockDim.x, first = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  long long done = 0;
  if (llq_aligned16(g) && llq_aligned16(u) && llq_aligned16(out)) {
    const long long n8 = n >> 3;
    for (long long i = first; i < n8; i += stride) {
      const uint4 gv = reinterpret_cast<const uint4*>(g)[i], uv = reinterpret_cast<const uint4*>(u)[i];
      const unsigned gs[4] = {gv.x, gv.y, gv.z, gv.w}, us[4] = {uv.x, uv.y, uv.z, uv.w};
      float o[8];
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        o[2 * k] = llq_swiglu1(__uint_as_float(gs[k] << 16), __uint_as_float(us[k] << 16));
        o[2 * k + 1] = llq_swiglu1(__uint_as_float(gs[k] & 0xffff0000u), __uint_as_float(us[k] & 0xffff0000u));
      }
      reinterpret_cast<uint4*>(out)[i] = llq_pack8(o);
    }
    done = n8 << 3;
  }
  for (long long i = done + first; i < n; i += stride)
    out[i] = llq_f32_to_bf16(llq_swiglu1(llq_bf16_to_f32(g[i]), llq_bf16_to_f32(u[i])));
}
