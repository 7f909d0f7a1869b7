// The decode step's own kernels (llq-host): everything a Llama decode step does besides the
// plugins' matvecs, written so the whole step can be captured once as a CUDA graph and
// replayed. Nothing a replay needs is a launch argument that changes per step: the tokens,
// each row's RoPE position and the cache slot live in device memory, and the last kernel
// (argmax) advances them. Placed after llq_sdk's kernel header (for the bf16 helpers and the
// matvec driver), compiled by NVRTC.
//
// Every kernel here starts with llq_grid_enter() (the header's, v1.5) before it reads or
// writes anything, so the step may launch it as a programmatic dependent of the kernel before
// (`LLQ_PDL`): its blocks are scheduled while that one drains, and wait there.
//
// Rounding follows the eager candle path it replaces, op for op, so the two agree to the
// last bf16 bit wherever the order of a sum does not differ: bf16 results of bf16 ops
// (residual adds, RoPE's products and sums, silu·up), f32 norms and softmax, attention
// scores rounded to bf16 before the scale (cuBLAS writes bf16), probabilities rounded to
// bf16 before p·V.

// LLQ_NEG_INF, llq_round_bf16, llq_aligned16 and the SwiGLU kernel come from pointwise.cu.

// Dense bf16 rows (out, in), row-major, through the same driver as the plugins' kernels:
// the unquantized layers and the lm_head (16-bit weights reach ~76% of copy bandwidth with
// it, bench/NOTES.md).
struct LlqBf16Rows {
  enum { LUT = 0 };
  static __device__ float lut(int) { return 0.f; }
  typedef uint4 Raw;
  static __device__ __forceinline__ Raw load8_rc(const LlqArgs& a, unsigned row, unsigned col) {
    return __ldg(reinterpret_cast<const uint4*>(a.b0) + (((long long)row * a.cols + col) >> 3));
  }
  static __device__ __forceinline__ void decode8_rc(const LlqArgs&, const float*, unsigned, unsigned, Raw v, float w[8]) {
    const unsigned xs[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      w[2 * k] = __uint_as_float(xs[k] << 16);
      w[2 * k + 1] = __uint_as_float(xs[k] & 0xffff0000u);
    }
  }
  static __device__ __forceinline__ float at(const LlqArgs& a, const float*, long long i, long long) {
    return llq_bf16_to_f32(reinterpret_cast<const llq_bf16*>(a.b0)[i]);
  }
};
// Its 4 loads of 16 bytes a row in flight take the registers of two blocks an SM: bounded to
// three, the normalizing entries (header v1.6) spilled 66-510 bytes.
#undef LLQ_FX_MIN_BLOCKS
#define LLQ_FX_MIN_BLOCKS 2
LLQ_DEFINE_KERNELS(LlqBf16Rows, 4, llq_bf16rows)

// The 1-row entries at UNROLL 1, for a tied lm_head of few columns (Llama-3.2-1B: 2048, one
// 8-column group a thread, so UNROLL 4 only holds registers: 86 against 38, two blocks an SM
// against six; with the norm folded in 128 against 80). `$LLQ_LM_HEAD_UNROLL=1` takes them.
extern "C" __global__ void __launch_bounds__(256)
    llq_bf16rows_u1_matvec_b1(LLQ_KERNEL_ARGS, const llq_bf16* x, llq_bf16* y, int batch) {
  const LlqArgs a = LLQ_ARGS_INIT;
  llq_matvec_b<LlqBf16Rows, 1, 1>(a, x, y, batch, blockIdx.x);
}
extern "C" __global__ void __launch_bounds__(256) llq_bf16rows_u1_matvec_b1_norm(
    LLQ_KERNEL_ARGS, const llq_bf16* x, llq_bf16* y, int batch, const llq_bf16* norm, float eps) {
  const LlqArgs a = LLQ_ARGS_INIT;
  llq_matvec_b<LlqBf16Rows, 1, 1, LLQ_FX_NORM>(a, x, y, batch, blockIdx.x, LlqFx{norm, eps});
}

// llq_block_sum: the kernel header's (v1.6).

static __device__ __forceinline__ float llq_block_max(float v, float* scratch) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, warps = (blockDim.x + 31) >> 5;
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < warps ? scratch[lane] : LLQ_NEG_INF;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// x[r] = table[tokens[r]]: one block per row.
extern "C" __global__ void llq_step_embed(const llq_bf16* table, const unsigned* tokens, llq_bf16* x, int n) {
  llq_grid_enter();
  const long long r = blockIdx.x, t = tokens[r];
  for (int i = threadIdx.x; i < n; i += blockDim.x) x[r * n + i] = table[t * n + i];
}

// With `add`: x = bf16(x + add) first (candle's bf16 add). Then out = bf16(x · rsqrt(mean(x²)
// + eps) · w) with the mean square in f32 (candle-nn's rmsnorm kernel). One block of 256 a row,
// through the kernel header's llq_rmsnorm_row: the 1-row matvec entries that normalize their
// own x (header v1.6) run the same function, so a step with and without them computes the same
// bits.
extern "C" __global__ void __launch_bounds__(256)
    llq_step_add_rmsnorm(llq_bf16* x, const llq_bf16* add, const llq_bf16* w, llq_bf16* out, int n, float eps) {
  llq_grid_enter();
  __shared__ float scratch[32];
  const long long base = (long long)blockIdx.x * n;
  llq_rmsnorm_row<true>(x + base, add ? add + base : nullptr, w, out + base, n, eps, scratch);
}

// RoPE (rotate-half, candle's bf16 `rope`: each product and sum rounded to bf16) on this
// step's q (in place) and k, at each row's position pos[r]; k and v are written into the
// caches (batch, kv_heads, cap, d) at `*slot`. One block per row.
extern "C" __global__ void llq_step_rope_append(llq_bf16* q, const llq_bf16* k, const llq_bf16* v, llq_bf16* kc,
                                                llq_bf16* vc, const llq_bf16* cos, const llq_bf16* sin,
                                                const unsigned* pos, const unsigned* slot, int heads, int kv_heads,
                                                int d, int cap) {
  llq_grid_enter();
  const int r = blockIdx.x, half = d >> 1;
  const long long p = pos[r], s = *slot;
  for (int idx = threadIdx.x; idx < (heads + kv_heads) * half; idx += blockDim.x) {
    const int hh = idx / half, i = idx - hh * half;
    const float c = llq_bf16_to_f32(cos[p * half + i]), sn = llq_bf16_to_f32(sin[p * half + i]);
    const llq_bf16* src;
    llq_bf16* dst;
    if (hh < heads) {
      src = q + ((long long)r * heads + hh) * d;
      dst = q + ((long long)r * heads + hh) * d;
    } else {
      const int kh = hh - heads;
      src = k + ((long long)r * kv_heads + kh) * d;
      dst = kc + (((long long)r * kv_heads + kh) * cap + s) * d;
    }
    float a, b;
    llq_rope_pair(llq_bf16_to_f32(src[i]), llq_bf16_to_f32(src[i + half]), c, sn, a, b);
    dst[i] = llq_f32_to_bf16(a);
    dst[i + half] = llq_f32_to_bf16(b);
  }
  for (int idx = threadIdx.x; idx < kv_heads * d; idx += blockDim.x) {
    const int kh = idx / d, i = idx - kh * d;
    vc[(((long long)r * kv_heads + kh) * cap + s) * d + i] = v[(long long)r * kv_heads * d + idx];
  }
}

// Attention of this step's query over the cache positions pad[r]..=*slot (a row's left
// padding is never looked at), grouped-query heads. One block of LLQ_ATT_THREADS per (head,
// row); dynamic shared memory holds one f32 per cache position. Scores: one position a
// thread, its key row read in 16-byte loads all issued before use (v1 reduced each position
// across a warp, one dependent round trip after another: ~100 µs a layer), q·k accumulated
// in f32 and rounded to bf16 (what cuBLAS writes), times 1/sqrt(d) in f32; softmax in f32;
// probabilities rounded to bf16; p·V with a warp per position stride and a lane per
// dimension (coalesced rows), f32 partial sums met in shared memory, rounded to bf16.
// d: a multiple of 8, at most 128.
// Key row j (d = 8·chunks bf16) in 16-byte loads, all issued before any is used.
static __device__ __forceinline__ void llq_att_key(const llq_bf16* K, int j, int d, int chunks, uint4 kv[16]) {
  const uint4* row = reinterpret_cast<const uint4*>(K + (long long)j * d);
#pragma unroll
  for (int c = 0; c < 16; ++c)
    if (c < chunks) kv[c] = __ldg(row + c);
}

// q·k in f32 for a query (d = 8·chunks floats) and a key row in 16-byte loads, in order.
static __device__ __forceinline__ float llq_att_dot(const float* qs, const uint4 kv[16], int chunks) {
  float s = 0.f;
#pragma unroll
  for (int c = 0; c < 16; ++c)
    if (c < chunks) llq_dot8(s, qs + 8 * c, kv[c]);
  return s;
}

#define LLQ_ATT_THREADS 256
#define LLQ_ATT_WARPS (LLQ_ATT_THREADS / 32)

// After the scores of positions first..len-1 are in score[] (this waits for them): each
// becomes exp(score − max) in f32 and the block's sum of them is returned, ready to divide by
// (softmax divides, as candle's kernel does: no reciprocal).
static __device__ __forceinline__ float llq_att_softmax(float* score, int first, int len, float* scratch) {
  __syncthreads();
  float m = LLQ_NEG_INF;
  for (int j = first + threadIdx.x; j < len; j += LLQ_ATT_THREADS) m = fmaxf(m, score[j]);
  m = llq_block_max(m, scratch);
  float sum = 0.f;
  for (int j = first + threadIdx.x; j < len; j += LLQ_ATT_THREADS) {
    const float e = expf(score[j] - m);
    score[j] = e;
    sum += e;
  }
  sum = llq_block_sum(sum, scratch);
  __syncthreads();
  return sum;
}
extern "C" __global__ void __launch_bounds__(LLQ_ATT_THREADS)
    llq_step_attend(const llq_bf16* q, const llq_bf16* kc, const llq_bf16* vc, llq_bf16* out, const unsigned* pad,
                    const unsigned* slot, int heads, int kv_heads, int d, int cap, float scale) {
  llq_grid_enter();
  extern __shared__ float score[];
  __shared__ float qs[128];
  __shared__ float scratch[32];
  __shared__ float part[LLQ_ATT_WARPS][128];
  const int h = blockIdx.x, r = blockIdx.y, kh = h / (heads / kv_heads);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int first = pad[r], len = (int)*slot + 1;
  for (int i = threadIdx.x; i < d; i += LLQ_ATT_THREADS) qs[i] = llq_bf16_to_f32(q[((long long)r * heads + h) * d + i]);
  __syncthreads();
  const llq_bf16* K = kc + ((long long)r * kv_heads + kh) * cap * d;
  const llq_bf16* V = vc + ((long long)r * kv_heads + kh) * cap * d;
  const int chunks = d >> 3;
  for (int j = first + threadIdx.x; j < len; j += LLQ_ATT_THREADS) {
    uint4 kv[16];
    llq_att_key(K, j, d, chunks, kv);
    score[j] = llq_round_bf16(llq_att_dot(qs, kv, chunks)) * scale;
  }
  const float den = llq_att_softmax(score, first, len, scratch);
  float acc[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll 4
  for (int j = first + warp; j < len; j += LLQ_ATT_WARPS) {
    const float p = llq_round_bf16(score[j] / den);
    const llq_bf16* vr = V + (long long)j * d;
#pragma unroll
    for (int k = 0; k < 4; ++k)
      if (lane + 32 * k < d) acc[k] = fmaf(p, llq_bf16_to_f32(vr[lane + 32 * k]), acc[k]);
  }
#pragma unroll
  for (int k = 0; k < 4; ++k)
    if (lane + 32 * k < d) part[warp][lane + 32 * k] = acc[k];
  __syncthreads();
  if (threadIdx.x < d) {
    float v = 0.f;
#pragma unroll
    for (int w = 0; w < LLQ_ATT_WARPS; ++w) v += part[w][threadIdx.x];
    out[((long long)r * heads + h) * d + threadIdx.x] = llq_f32_to_bf16(v);
  }
}

// v3 of the per-head attention, for head dimensions of 8, 16, 32, 64 or 128 (chunks = d / 8
// divides a warp): the same scores, softmax and bf16 probabilities as above, in fewer
// dependent round trips. Each thread's first key row and its first LLQ_ATT_VPRE value slices
// are in flight before the query is staged, so the value loads overlap the scores and the
// softmax (above, p·V issued its loads only after both barriers: at 160 positions a layer's
// attention took ~15 µs, bench/NOTES.md). p·V: lane l of warp w takes the 8 dimensions
// (l % chunks)·8… of the rows w·s + l / chunks + k·8s (s = 32 / chunks rows a warp at once,
// each row read whole by its chunks lanes), accumulates in f32 and meets the warp's other
// rows through shuffles, the warps in shared memory, in a fixed order.
//
// With FOLD, RoPE and the cache write are folded in (llq_step_rope_append's work for this
// head): the block rotates its own query head and its kv head's new key (the same
// llq_rope_pair, rounded to bf16 alike), scores the newest position (the slot) against that
// key from shared memory and takes its value straight from this step's v; the first query
// head of each group writes the rotated key and the value into the caches at the slot, which
// no block of this step reads. So its scores and outputs are bit for bit those of the two
// launches, one launch a layer fewer (RoPE took 104 µs a step at batch 1, bench/NOTES.md).
#define LLQ_ATT_VPRE 4
static __device__ __forceinline__ void llq_att_pv(float acc[8], float p, uint4 v) {
  const unsigned vs[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    acc[2 * k] = fmaf(p, __uint_as_float(vs[k] << 16), acc[2 * k]);
    acc[2 * k + 1] = fmaf(p, __uint_as_float(vs[k] & 0xffff0000u), acc[2 * k + 1]);
  }
}
// Arguments: q, the caches and the output as llq_step_attend's; with FOLD also this step's
// (unrotated) k and v, the RoPE tables and each row's position (unused without).
template <bool FOLD>
static __device__ __forceinline__ void llq_att_v3(const llq_bf16* q, const llq_bf16* k, const llq_bf16* v, llq_bf16* kc,
                                                  llq_bf16* vc, const llq_bf16* cos, const llq_bf16* sin,
                                                  const unsigned* pos, llq_bf16* out, const unsigned* pad,
                                                  const unsigned* slot, int heads, int kv_heads, int d, int cap,
                                                  float scale) {
  llq_grid_enter();
  extern __shared__ float score[];
  __shared__ float qs[128];
  __shared__ __align__(16) llq_bf16 kr[FOLD ? 128 : 8];
  __shared__ float scratch[32];
  __shared__ float part[LLQ_ATT_WARPS][128];
  const int h = blockIdx.x, r = blockIdx.y, G = heads / kv_heads, kh = h / G;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int first = pad[r], len = (int)*slot + 1;
  // The newest position, whose key and value come from this step's k and v (FOLD), or none.
  const int sl = FOLD ? len - 1 : -1;
  const llq_bf16* K = kc + ((long long)r * kv_heads + kh) * cap * d;
  const llq_bf16* V = vc + ((long long)r * kv_heads + kh) * cap * d;
  const llq_bf16* vnew = FOLD ? v + ((long long)r * kv_heads + kh) * d : V;
  const int chunks = d >> 3, sub = 32 / chunks;  // rows a warp reads at once in p·V
  const int vc8 = lane % chunks, vrow = warp * sub + lane / chunks, vstep = LLQ_ATT_WARPS * sub;
  uint4 vv[LLQ_ATT_VPRE];
#pragma unroll
  for (int u = 0; u < LLQ_ATT_VPRE; ++u) {
    const int j = first + vrow + u * vstep;
    if (j < len) vv[u] = __ldg(reinterpret_cast<const uint4*>(j == sl ? vnew : V + (long long)j * d) + vc8);
  }
  const int j0 = first + threadIdx.x;
  uint4 kv[16];
  if (j0 < len && j0 != sl) llq_att_key(K, j0, d, chunks, kv);
  if constexpr (FOLD) {
    const int half = d >> 1;
    const long long p = pos[r];
    const llq_bf16* qh = q + ((long long)r * heads + h) * d;
    const llq_bf16* kn = k + ((long long)r * kv_heads + kh) * d;
    llq_bf16* kdst = kc + (((long long)r * kv_heads + kh) * cap + sl) * d;
    for (int i = threadIdx.x; i < 2 * half; i += LLQ_ATT_THREADS) {
      const int pi = i < half ? i : i - half;
      const llq_bf16* src = i < half ? qh : kn;
      const float c = llq_bf16_to_f32(cos[p * half + pi]), sn = llq_bf16_to_f32(sin[p * half + pi]);
      float a, b;
      llq_rope_pair(llq_bf16_to_f32(src[pi]), llq_bf16_to_f32(src[pi + half]), c, sn, a, b);
      const llq_bf16 ha = llq_f32_to_bf16(a), hb = llq_f32_to_bf16(b);
      if (i < half) {
        qs[pi] = llq_bf16_to_f32(ha);
        qs[pi + half] = llq_bf16_to_f32(hb);
      } else {
        kr[pi] = ha;
        kr[pi + half] = hb;
        if (h % G == 0) {
          kdst[pi] = ha;
          kdst[pi + half] = hb;
        }
      }
    }
    if (h % G == 0)
      for (int i = threadIdx.x; i < d; i += LLQ_ATT_THREADS) vc[(((long long)r * kv_heads + kh) * cap + sl) * d + i] = vnew[i];
  } else {
    for (int i = threadIdx.x; i < d; i += LLQ_ATT_THREADS) qs[i] = llq_bf16_to_f32(q[((long long)r * heads + h) * d + i]);
  }
  __syncthreads();
  for (int j = j0; j < len; j += LLQ_ATT_THREADS) {
    if (j == sl) {
#pragma unroll
      for (int c = 0; c < 16; ++c)
        if (c < chunks) kv[c] = reinterpret_cast<const uint4*>(kr)[c];
    } else if (j != j0) {
      llq_att_key(K, j, d, chunks, kv);
    }
    score[j] = llq_round_bf16(llq_att_dot(qs, kv, chunks)) * scale;
  }
  const float den = llq_att_softmax(score, first, len, scratch);
  float acc[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
#pragma unroll
  for (int u = 0; u < LLQ_ATT_VPRE; ++u) {
    const int j = first + vrow + u * vstep;
    if (j < len) llq_att_pv(acc, llq_round_bf16(score[j] / den), vv[u]);
  }
#pragma unroll 4
  for (int j = first + vrow + LLQ_ATT_VPRE * vstep; j < len; j += vstep)
    llq_att_pv(acc, llq_round_bf16(score[j] / den),
               __ldg(reinterpret_cast<const uint4*>(j == sl ? vnew : V + (long long)j * d) + vc8));
#pragma unroll
  for (int o = 16; o >= 1; o >>= 1)
    if (o >= chunks)
#pragma unroll
      for (int e = 0; e < 8; ++e) acc[e] += __shfl_xor_sync(0xffffffffu, acc[e], o);
  if (lane < chunks)
#pragma unroll
    for (int e = 0; e < 8; ++e) part[warp][lane * 8 + e] = acc[e];
  __syncthreads();
  if (threadIdx.x < d) {
    float val = 0.f;
#pragma unroll
    for (int w = 0; w < LLQ_ATT_WARPS; ++w) val += part[w][threadIdx.x];
    out[((long long)r * heads + h) * d + threadIdx.x] = llq_f32_to_bf16(val);
  }
}

extern "C" __global__ void __launch_bounds__(LLQ_ATT_THREADS)
    llq_step_attend_v3(const llq_bf16* q, const llq_bf16* kc, const llq_bf16* vc, llq_bf16* out, const unsigned* pad,
                       const unsigned* slot, int heads, int kv_heads, int d, int cap, float scale) {
  llq_att_v3<false>(q, nullptr, nullptr, const_cast<llq_bf16*>(kc), const_cast<llq_bf16*>(vc), nullptr, nullptr,
                    nullptr, out, pad, slot, heads, kv_heads, d, cap, scale);
}

extern "C" __global__ void __launch_bounds__(LLQ_ATT_THREADS)
    llq_step_rope_attend_v3(const llq_bf16* q, const llq_bf16* k, const llq_bf16* v, llq_bf16* kc, llq_bf16* vc,
                            const llq_bf16* cos, const llq_bf16* sin, const unsigned* pos, llq_bf16* out,
                            const unsigned* pad, const unsigned* slot, int heads, int kv_heads, int d, int cap,
                            float scale) {
  llq_att_v3<true>(q, k, v, kc, vc, cos, sin, pos, out, pad, slot, heads, kv_heads, d, cap, scale);
}

// The same attention with one block per (kv head, row) for all G = heads / kv_heads query
// heads that share it (G ≤ LLQ_ATT_WARPS): each key and value row is read once for the group
// instead of once per query head — at batch 64 the per-head kernel above took 1.6 ms of a
// 5.0 ms step for 268 MB of cache (bench/NOTES.md, issue 13). Same arithmetic per head: q·k in
// the same order, rounded to bf16, times the scale; softmax max and sum per head by one warp
// (so the sum's order differs from the block-wide one above); p·V with a warp per position
// stride and a lane per pair of dimensions (4-byte loads), partial sums met in shared memory.
// Dynamic shared memory: G·d floats of queries, then G·cap scores, reused for the warps' G·d
// partial sums each (the host sizes it: 4·(G·d + max(G·cap, LLQ_ATT_WARPS·G·d)) bytes).
extern "C" __global__ void __launch_bounds__(LLQ_ATT_THREADS)
    llq_step_attend_gqa(const llq_bf16* q, const llq_bf16* kc, const llq_bf16* vc, llq_bf16* out, const unsigned* pad,
                        const unsigned* slot, int heads, int kv_heads, int d, int cap, float scale) {
  llq_grid_enter();
  extern __shared__ float smem[];
  __shared__ float den[LLQ_ATT_WARPS];
  const int kh = blockIdx.x, r = blockIdx.y, G = heads / kv_heads;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  float* qs = smem;            // [G][d]
  float* score = smem + G * d; // [G][cap], later part [LLQ_ATT_WARPS][G][d]
  const int first = pad[r], len = (int)*slot + 1;
  const llq_bf16* qg = q + ((long long)r * heads + (long long)kh * G) * d;
  for (int i = threadIdx.x; i < G * d; i += LLQ_ATT_THREADS) qs[i] = llq_bf16_to_f32(qg[i]);
  __syncthreads();
  const llq_bf16* K = kc + ((long long)r * kv_heads + kh) * cap * d;
  const llq_bf16* V = vc + ((long long)r * kv_heads + kh) * cap * d;
  const int chunks = d >> 3;
  for (int j = first + threadIdx.x; j < len; j += LLQ_ATT_THREADS) {
    uint4 kv[16];
    llq_att_key(K, j, d, chunks, kv);
    for (int g = 0; g < G; ++g) {
      score[g * cap + j] = llq_round_bf16(llq_att_dot(qs + g * d, kv, chunks)) * scale;
    }
  }
  __syncthreads();
  if (warp < G) {
    float* sc = score + warp * cap;
    float m = LLQ_NEG_INF;
    for (int j = first + lane; j < len; j += 32) m = fmaxf(m, sc[j]);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
    float sum = 0.f;
    for (int j = first + lane; j < len; j += 32) {
      const float e = expf(sc[j] - m);
      sc[j] = e;
      sum += e;
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
    if (lane == 0) den[warp] = sum;
  }
  __syncthreads();
  // acc[g][k]: dimensions 2·lane + 64·k and the next one, for query head g.
  float acc[LLQ_ATT_WARPS][2][2];
#pragma unroll
  for (int g = 0; g < LLQ_ATT_WARPS; ++g)
#pragma unroll
    for (int k = 0; k < 2; ++k) acc[g][k][0] = acc[g][k][1] = 0.f;
  for (int j = first + warp; j < len; j += LLQ_ATT_WARPS) {
    const llq_bf16* vr = V + (long long)j * d;
    float v[2][2];
#pragma unroll
    for (int k = 0; k < 2; ++k) {
      const int i = 2 * lane + 64 * k;
      const unsigned u = i < d ? *reinterpret_cast<const unsigned*>(vr + i) : 0u;
      v[k][0] = __uint_as_float(u << 16);
      v[k][1] = __uint_as_float(u & 0xffff0000u);
    }
#pragma unroll
    for (int g = 0; g < LLQ_ATT_WARPS; ++g) {
      if (g < G) {
        const float p = llq_round_bf16(score[g * cap + j] / den[g]);
#pragma unroll
        for (int k = 0; k < 2; ++k) {
          acc[g][k][0] = fmaf(p, v[k][0], acc[g][k][0]);
          acc[g][k][1] = fmaf(p, v[k][1], acc[g][k][1]);
        }
      }
    }
  }
  __syncthreads();  // the scores are read: their space takes the partial sums
  float* part = score;
#pragma unroll
  for (int g = 0; g < LLQ_ATT_WARPS; ++g)
    if (g < G)
#pragma unroll
      for (int k = 0; k < 2; ++k) {
        const int i = 2 * lane + 64 * k;
        if (i < d) {
          part[(warp * G + g) * d + i] = acc[g][k][0];
          part[(warp * G + g) * d + i + 1] = acc[g][k][1];
        }
      }
  __syncthreads();
  for (int i = threadIdx.x; i < G * d; i += LLQ_ATT_THREADS) {
    float v = 0.f;
#pragma unroll
    for (int w = 0; w < LLQ_ATT_WARPS; ++w) v += part[w * G * d + i];
    out[((long long)r * heads + (long long)kh * G) * d + i] = llq_f32_to_bf16(v);
  }
}

static __device__ __forceinline__ void llq_better(float& best, long long& idx, float ov, long long oi) {
  if (ov > best || (ov == best && oi < idx)) { best = ov; idx = oi; }
}
static __device__ __forceinline__ void llq_warp_best(float& best, long long& idx) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, best, o);
    const long long oi = __shfl_xor_sync(0xffffffffu, idx, o);
    llq_better(best, idx, ov, oi);
  }
}

// The greedy token of each row (the lowest index of the largest logit, as the host's argmax;
// NaN and -inf are never taken, a row without a finite logit gives 0), written to tokens[r]
// — the next step's input — and to out[r]; then the row's RoPE position and (block 0) the
// cache slot advance: the step is ready to replay. One block of 1024 threads per row.
extern "C" __global__ void __launch_bounds__(1024)
    llq_step_argmax_advance(const llq_bf16* logits, long long vocab, unsigned* tokens, unsigned* out, unsigned* pos,
                            unsigned* slot) {
  llq_grid_enter();
  __shared__ float bv[32];
  __shared__ long long bi[32];
  const int r = blockIdx.x, warp = threadIdx.x >> 5, lane = threadIdx.x & 31, warps = blockDim.x >> 5;
  float best = LLQ_NEG_INF;
  long long idx = 0x7fffffffffffffffLL;
  for (long long i = threadIdx.x; i < vocab; i += blockDim.x) {
    const float v = llq_bf16_to_f32(logits[r * vocab + i]);
    if (v > best) { best = v; idx = i; }  // ascending i: the first of equal values stays
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, best, o);
    const long long oi = __shfl_xor_sync(0xffffffffu, idx, o);
    llq_better(best, idx, ov, oi);
  }
  if (lane == 0) { bv[warp] = best; bi[warp] = idx; }
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < warps; ++w) llq_better(best, idx, bv[w], bi[w]);
    const unsigned t = idx < vocab ? (unsigned)idx : 0u;
    tokens[r] = t;
    out[r] = t;
    pos[r] += 1;
    if (r == 0) *slot += 1;
  }
}

// The same over gridDim.x blocks of 1024 threads a row (2 to 32, `$LLQ_ARGMAX_BLOCKS` on the
// host; the kernel above read Llama's 128256 logits in ~50 µs a step, bench/NOTES.md): each
// block takes a slice of the vocabulary and writes its best (value bits, index) to the row's
// scratch, and the row's last block to finish (a ticket counter, reset for the next replay)
// combines them in slice order — ties keep the lower index, so the token is the one-block
// kernel's. Scratch per row, rows 2·gridDim.x + 1 apart (the host allocates room for 32
// blocks): gridDim.x value bits, gridDim.x indices, 1 counter.
extern "C" __global__ void __launch_bounds__(1024)
    llq_step_argmax_split(const llq_bf16* logits, long long vocab, unsigned* tokens, unsigned* out, unsigned* pos,
                            unsigned* slot, unsigned* scratch) {
  llq_grid_enter();
  __shared__ float bv[32];
  __shared__ long long bi[32];
  __shared__ bool last;
  const int r = blockIdx.y, blk = blockIdx.x, nblk = gridDim.x;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, warps = blockDim.x >> 5;
  const long long per = (vocab + nblk - 1) / nblk, lo = blk * per, hi = min(vocab, lo + per);
  const long long NONE = 0x7fffffffffffffffLL;
  float best = LLQ_NEG_INF;
  long long idx = NONE;
  for (long long i = lo + threadIdx.x; i < hi; i += blockDim.x) {
    const float v = llq_bf16_to_f32(logits[r * vocab + i]);
    if (v > best) { best = v; idx = i; }  // ascending i: the first of equal values stays
  }
  llq_warp_best(best, idx);
  if (lane == 0) { bv[warp] = best; bi[warp] = idx; }
  __syncthreads();
  unsigned* sv = scratch + (long long)r * (2 * nblk + 1);
  unsigned* si = sv + nblk;
  unsigned* done = si + nblk;
  if (threadIdx.x == 0) {
    for (int w = 1; w < warps; ++w) llq_better(best, idx, bv[w], bi[w]);
    sv[blk] = __float_as_uint(best);
    si[blk] = idx < vocab ? (unsigned)idx : 0xffffffffu;
    __threadfence();  // the partial is visible before the ticket is taken
    last = atomicAdd(done, 1u) == (unsigned)nblk - 1u;
  }
  __syncthreads();
  if (!last) return;
  __threadfence();
  if (warp == 0) {
    best = LLQ_NEG_INF;
    idx = NONE;
    for (int b = lane; b < nblk; b += 32) {
      const unsigned oi = __ldcg(si + b);
      llq_better(best, idx, __uint_as_float(__ldcg(sv + b)), oi == 0xffffffffu ? NONE : (long long)oi);
    }
    llq_warp_best(best, idx);
    if (lane == 0) {
      const unsigned t = idx < vocab ? (unsigned)idx : 0u;
      tokens[r] = t;
      out[r] = t;
      pos[r] += 1;
      if (r == 0) *slot += 1;
      *done = 0u;  // ready for the next replay
    }
  }
}
