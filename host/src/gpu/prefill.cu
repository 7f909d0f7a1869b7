// Prefill attention (llq-host): causal grouped-query attention over a whole prompt without
// materializing the scores, after FlashAttention-2 (Dao, 2023, "FlashAttention-2: Faster
// Attention with Better Parallelism and Work Partitioning", Algorithm 1: a block owns a tile
// of queries, walks the key tiles with an online softmax, rescales its output accumulator
// and divides by the row sum once at the end). The unfused candle path it replaces wrote
// f32 scores for every (head, query, key) and read them back four times (scale, mask,
// softmax, bf16): at 2048 tokens that was 0.5 GB a layer and ~90% of the prefill
// (bench/NOTES.md). Placed after llq_sdk's kernel header (bf16 helpers, `llq_mma_bf16`,
// `llq_bf16x2`) and pointwise.cu (RoPE, SwiGLU, LLQ_NEG_INF), compiled by NVRTC.
//
// Layouts: q (rows, heads, t, D) after RoPE; k, v (rows, kv_heads, total, D) with the
// prompt's keys last (total = past + t); out (rows, t, heads·D), what o_proj reads. The
// mask is the model's (`model::llama::Mask`), computed here from each row's left padding
// (pad[row · pad_stride]): a query at absolute position a sees keys pad ≤ j ≤ a, and a
// padding query (a < pad) sees itself.
//
// Rounding follows the unfused path where it can: scores are rounded to bf16 before the
// scale (cuBLAS writes bf16 there), softmax runs in f32 and probabilities are rounded to
// bf16 before p·V. What differs: the probabilities are rounded before normalization (the
// row sum divides the f32 output at the end) and the running maximum shifts the exponent,
// so outputs agree to bf16 rounding, not bit for bit (the bench records the logits' distance).
//
// Tiles: 4 warps of 16 query rows each (64 a block) and 64 keys a tile, K and V staged in
// shared memory with rows padded by 8 elements so the fragment loads hit 32 distinct banks.
// S = Q·Kᵀ and O += P·V are mma.m16n8k16 (bf16 in, f32 accumulation); the accumulator of
// two 8-key n-tiles of S is, packed to bf16, exactly the A fragment of one 16-key k-step of
// P·V (the FlashAttention-2 register trick), and V's B fragments come from `ldmatrix.trans`.

#define LLQ_FA_ROWS 64
#define LLQ_FA_KEYS 64
#define LLQ_FA_THREADS 128

static __device__ __forceinline__ unsigned llq_fa_ld32(const llq_bf16* p) {
  return *reinterpret_cast<const unsigned*>(p);
}

// Four 8×8 bf16 matrices from shared memory, transposed (lanes 8i..8i+7 give matrix i's
// row addresses): the B fragments of two n-tiles of P·V from row-major V.
static __device__ __forceinline__ void llq_fa_ldmatrix_t(unsigned r[4], const llq_bf16* p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  unsigned a;
  asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a));
#else
  r[0] = r[1] = r[2] = r[3] = 0;
#endif
}

template <int D>
static __device__ __forceinline__ void llq_fa(const llq_bf16* __restrict__ q, const llq_bf16* __restrict__ k,
                                              const llq_bf16* __restrict__ v, llq_bf16* __restrict__ out,
                                              const unsigned* __restrict__ pad, int t, int total, int heads,
                                              int kv_heads, int pad_stride, float scale_log2) {
  constexpr int S = D + 8;  // padded shared row, in elements
  constexpr int KS = D / 16; // k-steps of Q·Kᵀ
  __shared__ __align__(16) llq_bf16 ks[LLQ_FA_KEYS * S];
  __shared__ __align__(16) llq_bf16 vs[LLQ_FA_KEYS * S];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, tq = lane & 3;
  // The latest query tiles see the most keys: launch them first.
  const int tile = gridDim.x - 1 - blockIdx.x;
  const int head = blockIdx.y, row = blockIdx.z;
  const int kvh = head / (heads / kv_heads);
  const int past = total - t;
  const int p = (int)pad[row * pad_stride];
  const int q0 = tile * LLQ_FA_ROWS + warp * 16;
  const llq_bf16* qh = q + ((long long)row * heads + head) * t * D;
  const llq_bf16* kh = k + ((long long)row * kv_heads + kvh) * total * D;
  const llq_bf16* vh = v + ((long long)row * kv_heads + kvh) * total * D;

  // This warp's queries as A fragments: rows g and g+8, columns 2tq, 2tq+1 (+8) of each
  // 16-column k-step.
  unsigned qa[KS][4];
  const int r0 = q0 + g, r1 = q0 + g + 8;
#pragma unroll
  for (int s = 0; s < KS; ++s) {
    const int c = 16 * s + 2 * tq;
    qa[s][0] = r0 < t ? llq_fa_ld32(qh + (long long)r0 * D + c) : 0u;
    qa[s][1] = r1 < t ? llq_fa_ld32(qh + (long long)r1 * D + c) : 0u;
    qa[s][2] = r0 < t ? llq_fa_ld32(qh + (long long)r0 * D + c + 8) : 0u;
    qa[s][3] = r1 < t ? llq_fa_ld32(qh + (long long)r1 * D + c + 8) : 0u;
  }
  float o[D / 8][4];
#pragma unroll
  for (int j = 0; j < D / 8; ++j) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.f;
  float m[2] = {LLQ_NEG_INF, LLQ_NEG_INF}, l[2] = {0.f, 0.f};
  const int abs0 = past + r0, abs1 = past + r1;
  const int block_last = past + min(tile * LLQ_FA_ROWS + LLQ_FA_ROWS - 1, t - 1);
  const int warp_last = past + q0 + 15;  // no key after it is seen by this warp
  const int tiles = block_last / LLQ_FA_KEYS + 1;

  for (int kt = 0; kt < tiles; ++kt) {
    const int k0 = kt * LLQ_FA_KEYS;
    __syncthreads();
    for (int c = threadIdx.x; c < LLQ_FA_KEYS * (D / 8); c += LLQ_FA_THREADS) {
      const int r = c / (D / 8), col = (c % (D / 8)) * 8;
      uint4 kk = make_uint4(0, 0, 0, 0), vv = kk;
      if (k0 + r < total) {
        kk = __ldg(reinterpret_cast<const uint4*>(kh + (long long)(k0 + r) * D + col));
        vv = __ldg(reinterpret_cast<const uint4*>(vh + (long long)(k0 + r) * D + col));
      }
      *reinterpret_cast<uint4*>(ks + r * S + col) = kk;
      *reinterpret_cast<uint4*>(vs + r * S + col) = vv;
    }
    __syncthreads();
    if (q0 >= t || k0 > warp_last) continue;  // warp-uniform: nothing of this tile is seen

    float sc[LLQ_FA_KEYS / 8][4];
#pragma unroll
    for (int j = 0; j < LLQ_FA_KEYS / 8; ++j) {
      sc[j][0] = sc[j][1] = sc[j][2] = sc[j][3] = 0.f;
      const llq_bf16* kr = ks + (8 * j + g) * S + 2 * tq;
#pragma unroll
      for (int s = 0; s < KS; ++s)
        llq_mma_bf16(sc[j], qa[s][0], qa[s][1], qa[s][2], qa[s][3], llq_fa_ld32(kr + 16 * s),
                     llq_fa_ld32(kr + 16 * s + 8));
    }
    // Scale, mask and the tile's row maxima (element e of an n-tile: row g for e < 2, else
    // g+8; key 2tq + (e & 1)).
    float mx[2] = {LLQ_NEG_INF, LLQ_NEG_INF};
    // Tiles wholly inside every row's window (no padding key, no key after the warp's first
    // query) skip the per-element mask: the softmax's ALU work, not the mma, bounds this
    // kernel at d = 64 (FlashAttention-2 masks only the diagonal blocks the same way).
    if (k0 >= p && k0 + LLQ_FA_KEYS - 1 <= past + q0) {
#pragma unroll
      for (int j = 0; j < LLQ_FA_KEYS / 8; ++j) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const float x = llq_round_bf16(sc[j][e]) * scale_log2;
          sc[j][e] = x;
          mx[e >> 1] = fmaxf(mx[e >> 1], x);
        }
      }
    } else {
#pragma unroll
      for (int j = 0; j < LLQ_FA_KEYS / 8; ++j) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int a = e < 2 ? abs0 : abs1, key = k0 + 8 * j + 2 * tq + (e & 1);
          const bool ok = a < p ? key == a : (key >= p && key <= a);
          const float x = ok ? llq_round_bf16(sc[j][e]) * scale_log2 : LLQ_NEG_INF;
          sc[j][e] = x;
          mx[e >> 1] = fmaxf(mx[e >> 1], x);
        }
      }
    }
    float ref[2];
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 1));
      mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 2));
      const float mn = fmaxf(m[i], mx[i]);
      // A row that has seen nothing yet keeps -inf; exponents are taken from 0 then (all
      // its probabilities are 0 and its accumulator is still empty).
      ref[i] = mn == LLQ_NEG_INF ? 0.f : mn;
      const float alpha = exp2f(m[i] - ref[i]);
      m[i] = mn;
      l[i] *= alpha;
#pragma unroll
      for (int j = 0; j < D / 8; ++j) {
        o[j][2 * i] *= alpha;
        o[j][2 * i + 1] *= alpha;
      }
    }
    unsigned pa[LLQ_FA_KEYS / 16][4];
#pragma unroll
    for (int j = 0; j < LLQ_FA_KEYS / 8; ++j) {
      float pr[4];
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        pr[e] = llq_round_bf16(exp2f(sc[j][e] - ref[e >> 1]));
        l[e >> 1] += pr[e];
      }
      pa[j >> 1][(j & 1) * 2] = llq_bf16x2(pr[0], pr[1]);
      pa[j >> 1][(j & 1) * 2 + 1] = llq_bf16x2(pr[2], pr[3]);
    }
#pragma unroll
    for (int s = 0; s < LLQ_FA_KEYS / 16; ++s) {
#pragma unroll
      for (int jj = 0; jj < D / 16; ++jj) {
        unsigned b[4];
        llq_fa_ldmatrix_t(b, vs + (16 * s + (lane & 15)) * S + 16 * jj + (lane >> 4) * 8);
        llq_mma_bf16(o[2 * jj], pa[s][0], pa[s][1], pa[s][2], pa[s][3], b[0], b[1]);
        llq_mma_bf16(o[2 * jj + 1], pa[s][0], pa[s][1], pa[s][2], pa[s][3], b[2], b[3]);
      }
    }
  }

  // The quad's partial row sums, then one division per row.
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    l[i] += __shfl_xor_sync(0xffffffffu, l[i], 1);
    l[i] += __shfl_xor_sync(0xffffffffu, l[i], 2);
  }
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int r = i ? r1 : r0;
    if (r >= t) continue;
    const float inv = 1.f / l[i];
    unsigned* dst = reinterpret_cast<unsigned*>(out + (((long long)row * t + r) * heads + head) * D + 2 * tq);
#pragma unroll
    for (int j = 0; j < D / 8; ++j) dst[4 * j] = llq_bf16x2(o[j][2 * i] * inv, o[j][2 * i + 1] * inv);
  }
}

// Entries by head dimension; grid (query tiles, heads, rows), LLQ_FA_THREADS threads.
#define LLQ_FA_ENTRY(D)                                                                                        \
  extern "C" __global__ void __launch_bounds__(LLQ_FA_THREADS)                                                 \
      llq_prefill_attend_d##D(const llq_bf16* q, const llq_bf16* k, const llq_bf16* v, llq_bf16* out,          \
                              const unsigned* pad, int t, int total, int heads, int kv_heads, int pad_stride,  \
                              float scale_log2) {                                                              \
    llq_fa<D>(q, k, v, out, pad, t, total, heads, kv_heads, pad_stride, scale_log2);                            \
  }
LLQ_FA_ENTRY(64)
LLQ_FA_ENTRY(128)

// The q, k and v projections' outputs, (rows, t, heads·D) and (rows, t, kv_heads·D) as the
// linears write them, into the layouts the attention reads: q (rows, heads, t, D) and k
// (rows, kv_heads, t, D) rotated (RoPE, rotate-half, llq_rope_pair: candle's bf16 `rope`),
// v (rows, kv_heads, t, D) as is. cos/sin: (1 or rows, t, D/2), cs_stride elements apart a
// row (0: one table for all rows). One launch and one pass over the three instead of
// candle's reshape → transpose → contiguous (3 copies) and two `rope` launches, bit for bit
// the same values. Grid (t, rows), a thread per rotated pair or v element of the token.
extern "C" __global__ void llq_prefill_split_rope(const llq_bf16* __restrict__ q, const llq_bf16* __restrict__ k,
                                                  const llq_bf16* __restrict__ v, const llq_bf16* __restrict__ cos,
                                                  const llq_bf16* __restrict__ sin, llq_bf16* __restrict__ qo,
                                                  llq_bf16* __restrict__ ko, llq_bf16* __restrict__ vo, int t,
                                                  int heads, int kv_heads, int d, long long cs_stride) {
  const int ti = blockIdx.x, r = blockIdx.y, half = d >> 1;
  const long long tok = (long long)r * t + ti;
  const llq_bf16* cr = cos + r * cs_stride + (long long)ti * half;
  const llq_bf16* sr = sin + r * cs_stride + (long long)ti * half;
  const int pairs = (heads + kv_heads) * half;
  for (int idx = threadIdx.x; idx < pairs + kv_heads * d; idx += blockDim.x) {
    if (idx < pairs) {
      const int hh = idx / half, i = idx - hh * half;
      const llq_bf16* src;
      llq_bf16* dst;
      if (hh < heads) {
        src = q + (tok * heads + hh) * d;
        dst = qo + (((long long)r * heads + hh) * t + ti) * d;
      } else {
        const int kh = hh - heads;
        src = k + (tok * kv_heads + kh) * d;
        dst = ko + (((long long)r * kv_heads + kh) * t + ti) * d;
      }
      float a, b;
      llq_rope_pair(llq_bf16_to_f32(src[i]), llq_bf16_to_f32(src[i + half]), llq_bf16_to_f32(cr[i]),
                    llq_bf16_to_f32(sr[i]), a, b);
      dst[i] = llq_f32_to_bf16(a);
      dst[i + half] = llq_f32_to_bf16(b);
    } else {
      const int j = idx - pairs, kh = j / d, i = j - kh * d;
      vo[(((long long)r * kv_heads + kh) * t + ti) * d + i] = v[tok * kv_heads * d + j];
    }
  }
}
