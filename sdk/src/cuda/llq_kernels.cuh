// llq kernel header (llq-sdk, kernel convention v1): the shared drivers of every method's
// GPU kernels. A method writes a *decoder* for its packed format and instantiates the
// entry points with LLQ_DEFINE_KERNELS; the loops, the bf16 conversions, the launch shape
// and the argument order live here once. Compiled by the host with NVRTC: no #include.
//
// A decoder D is a struct with
//   enum { LUT = n };                       floats of shared-memory table it wants (≤ 512)
//   static __device__ float lut(int i);     entry i of that table (filled once per block)
//   typedef ... Raw;                        what load8 fetches for 8 consecutive weights
//   static __device__ Raw load8(const LlqArgs&, long long i);
//   static __device__ void decode8(const LlqArgs&, const float* lut, long long i,
//                                  long long row, Raw raw, float w[8]);
//   static __device__ float at(const LlqArgs&, const float* lut, long long i, long long row);
// `i` is the flat row-major index of a weight (row * cols + col). The 8-wide path is used
// only when cols % 8 == 0, so i is a multiple of 8 and the 8 weights share one row;
// otherwise every weight goes through `at`.
//
// Optional (header v1.1, found by their presence, so v1 decoders compile unchanged): formats
// stored per row can take the row and column the driver already knows instead of the flat
// index, and so need no division by `cols` per 8 weights:
//   static __device__ Raw load8_rc(const LlqArgs&, unsigned row, unsigned col);
//   static __device__ void decode8_rc(const LlqArgs&, const float* lut, unsigned row,
//                                     unsigned col, Raw raw, float w[8]);
// A decoder that has them needs no `load8`/`decode8`: the drivers then call only these (row
// and column as 32-bit values: a matrix has fewer than 2³² rows and columns).
//
// Optional (header v1.2), the wide matvec: a decoder whose codes for 32 consecutive weights of
// a row fill one 16-byte load can offer
//   typedef ... Raw32;
//   static __device__ bool wide_ok(const LlqArgs&);     this matrix can take the wide path
//   static __device__ Raw32 load32_rc(const LlqArgs&, unsigned row, unsigned col);  col % 32 == 0
//   static __device__ void decode32(const LlqArgs&, const float* lut, unsigned row, unsigned col,
//                                   const Raw32&, float w[32]);
//   static __device__ int lut_len(const LlqArgs&);      (any decoder) table entries this matrix
//                                                        reads: only those are staged
// and the matvec entries for up to LLQ_MV_WIDE_MAXB rows of x then read 32 weights a thread a
// step, two warps a row (see llq_matvec_w). 4-byte code loads (8 weights) kept NF4 at 14-19% of
// copy bandwidth where 16-byte bf16 loads reached 76% with the same driver (bench/NOTES.md,
// issue 13). Decoders without these entries compile and run as before.
//
// Header v1.3 adds entry points, not decoder requirements: LLQ_DEFINE_KERNELS also defines
// PREFIX_matvec_mma (up to 64 rows of x) and PREFIX_matvec_mma16 (up to 16) on tensor cores
// from the same decoder (llq_matvec_mma below), which the host uses for batches 2-64
// (the 1-8-row drivers above then serve batch 1; without these entries, batches above 8 are
// dequantized into a scratch matrix for cuBLAS).
//
// Header v1.4, entries again: PREFIX_matvec_b1_x3, PREFIX_matvec_mma16_x3 and
// PREFIX_matvec_mma_x3 run up to three matrices that read the same x in one launch
// (LLQ_DEFINE_MULTI below).
//
// Header v1.5, programmatic dependent launch (sm_90 and later): every entry calls
// llq_grid_enter() — griddepcontrol.wait, then griddepcontrol.launch_dependents — after what
// it can do before the previous kernel has finished (issue the first weight loads, stage the
// decoder's table: weights do not change during a forward pass) and before it reads x or
// writes anything. LLQ_DEFINE_KERNELS also defines the empty PREFIX_matvec_pdl, never
// launched: its presence tells the host that the module's entries keep this rule, so it may
// launch them as programmatic dependents (CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION)
// and let a matvec's blocks start while the kernel before it drains. A kernel launched without
// the attribute finds the wait already satisfied (CUDA Programming Guide, "Programmatic
// Dependent Launch and Synchronization"; PTX ISA, griddepcontrol).
//
// Header v1.6, the step's edges folded into the 1-row matvec (entries again, no decoder
// requirement): PREFIX_matvec_b1_norm and PREFIX_matvec_b1_x3_norm take x before its RMSNorm
// (two more arguments: the norm's weight and eps) and normalize it themselves, each block into
// shared memory (the host gives the launch cols · 2 bytes of dynamic shared memory) with the
// same arithmetic as llq-host's norm kernel (llq_rmsnorm_row); PREFIX_matvec_b1_res adds its
// result into y, the residual stream (y = bf16(y + bf16(W·x)), candle's bf16 add). A decode
// step at batch 1 then launches no norm kernels: 33 fewer launches for Llama-3.2-1B
// (bench/NOTES.md, issue 13). PREFIX_matvec_b1_glu_norm takes the gate matrix's arguments and
// then the up matrix's (same shape and parameters) and writes silu(gate · x)·(up · x) with the
// SwiGLU kernel's roundings (llq_swiglu1): one launch, no SwiGLU kernel, rows/2 blocks.

typedef unsigned short llq_bf16;

struct LlqArgs {
  const unsigned char* b0; const unsigned char* b1; const unsigned char* b2; const unsigned char* b3;
  long long rows, cols;
  long long p0, p1, p2, p3;
};

#define LLQ_MAX_BATCH 8

// Programmatic dependent launch (header v1.5, above): wait until the kernels this one depends
// on have completed and their writes are visible, then let the next kernel's blocks be
// scheduled. Every thread that reads a predecessor's output or writes memory calls it first.
// Triggering only after the wait keeps at most one kernel ahead resident (each trigger needs
// every block of its kernel to have passed its own wait), so early blocks do not crowd the
// SMs the running kernel still needs. Before sm_90 (no griddepcontrol) it does nothing, and
// the stream orders the kernels as always.
static __device__ __forceinline__ void llq_grid_enter() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
#define LLQ_LUT_MAX 512

static __device__ __forceinline__ float llq_bf16_to_f32(llq_bf16 h) { return __uint_as_float(((unsigned)h) << 16); }

// Round to nearest even, NaN kept NaN (what __float2bfloat16 does).
static __device__ __forceinline__ llq_bf16 llq_f32_to_bf16(float f) {
  unsigned u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (llq_bf16)((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return (llq_bf16)(u >> 16);
}

static __device__ __forceinline__ float llq_round_bf16(float f) { return llq_bf16_to_f32(llq_f32_to_bf16(f)); }
static __device__ __forceinline__ bool llq_aligned16(const void* p) { return ((size_t)p & 15) == 0; }

static __device__ __forceinline__ float llq_f16_to_f32(unsigned short h) {
  float f;
  asm("{ .reg .b16 t; mov.b16 t, %1; cvt.f32.f16 %0, t; }" : "=f"(f) : "h"(h));
  return f;
}

// Index of the block holding element i, for blocks of `block` elements (a shift when the
// block is a power of two, which every bitsandbytes block size is).
static __device__ __forceinline__ long long llq_block_of(long long i, long long block) {
  return (block & (block - 1)) == 0 ? (i >> (__ffsll(block) - 1)) : i / block;
}

template <class... T> struct llq_void { typedef void type; };
template <class D, class = void> struct llq_has_rc { static constexpr bool value = false; };
template <class D>
struct llq_has_rc<D, typename llq_void<decltype(&D::load8_rc), decltype(&D::decode8_rc)>::type> {
  static constexpr bool value = true;
};

// Whether D offers the wide matvec entries (header v1.2).
template <class D, class = void> struct llq_has_wide { static constexpr bool value = false; };
template <class D>
struct llq_has_wide<D, typename llq_void<decltype(&D::load32_rc), decltype(&D::decode32), decltype(&D::wide_ok)>::type> {
  static constexpr bool value = true;
};

// The 8 weights at (row, col) = flat index i, through the decoder's row/column entries when
// it has them.
template <class D>
static __device__ __forceinline__ typename D::Raw llq_load8(const LlqArgs& a, long long i, long long row, long long col) {
  if constexpr (llq_has_rc<D>::value) return D::load8_rc(a, (unsigned)row, (unsigned)col);
  else return D::load8(a, i);
}
template <class D>
static __device__ __forceinline__ void llq_decode8(const LlqArgs& a, const float* lut, long long i, long long row, long long col,
                                                   typename D::Raw raw, float w[8]) {
  if constexpr (llq_has_rc<D>::value) D::decode8_rc(a, lut, (unsigned)row, (unsigned)col, raw, w);
  else D::decode8(a, lut, i, row, raw, w);
}

// Whether D says how much of its table a matrix reads (header v1.2).
template <class D, class = void> struct llq_has_lut_len { static constexpr bool value = false; };
template <class D>
struct llq_has_lut_len<D, typename llq_void<decltype(&D::lut_len)>::type> {
  static constexpr bool value = true;
};

// Stage the table's first D::lut_len(a) entries (header v1.2, optional; all LUT without it).
// Tables sit in __constant__ memory, which serves a warp one address at a time: staging the
// 256-entry double-quantization map costs a 4-bit matvec 3 µs of its 16 on 8192×2048 even
// when the matrix has no double quantization (bench/kernels/mv4.cu, issue 13).
template <class D>
static __device__ __forceinline__ void llq_fill_lut(float* lut, const LlqArgs& a) {
  int n = (int)D::LUT;
  if constexpr (llq_has_lut_len<D>::value) n = min(n, D::lut_len(a));
  for (int i = threadIdx.x; i < n; i += blockDim.x) lut[i] = D::lut(i);
  __syncthreads();
}

static __device__ __forceinline__ uint4 llq_pack8(const float w[8]) {
  uint4 v;
  v.x = llq_f32_to_bf16(w[0]) | ((unsigned)llq_f32_to_bf16(w[1]) << 16);
  v.y = llq_f32_to_bf16(w[2]) | ((unsigned)llq_f32_to_bf16(w[3]) << 16);
  v.z = llq_f32_to_bf16(w[4]) | ((unsigned)llq_f32_to_bf16(w[5]) << 16);
  v.w = llq_f32_to_bf16(w[6]) | ((unsigned)llq_f32_to_bf16(w[7]) << 16);
  return v;
}

// The sum of v over the block (any size up to 1024), in every thread; scratch: 32 floats of
// shared memory. Synchronizes the block.
static __device__ __forceinline__ float llq_block_sum(float v, float* scratch) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, warps = (blockDim.x + 31) >> 5;
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < warps ? scratch[lane] : 0.f;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// One row of n elements through the decode step's add + RMSNorm, by the whole block: with
// `add`, x = bf16(x + add) first, written back (candle's bf16 add); then out = bf16(x ·
// rsqrt(mean(x²) + eps) · w) with the mean square in f32 (candle-nn's rmsnorm kernel). Rows
// of up to blockDim · 8 · LLQ_NORM_CHUNKS elements in multiples of 8 (every Llama width) stay
// in registers between the two halves, read and written 16 bytes a thread: one pass over
// memory instead of two with 2-byte accesses (the first version took ~9 µs a call at width
// 2048, bench/NOTES.md). llq-host's norm kernel runs it with one block a row; the matvec
// entries that normalize their own x (header v1.6) run it into shared memory with the same
// block size, so both compute the same bits. `out` may be shared memory (generic stores).
#define LLQ_NORM_CHUNKS 4
// 8 elements of the row at i as f32, with `add` added and written back (the first half).
static __device__ __forceinline__ void llq_norm_in8(llq_bf16* x, const llq_bf16* add, int i, float v[8]) {
  uint4 xv = *reinterpret_cast<const uint4*>(x + i);
  const unsigned xs[4] = {xv.x, xv.y, xv.z, xv.w};
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    v[2 * k] = __uint_as_float(xs[k] << 16);
    v[2 * k + 1] = __uint_as_float(xs[k] & 0xffff0000u);
  }
  if (add) {
    const uint4 av = *reinterpret_cast<const uint4*>(add + i);
    const unsigned as[4] = {av.x, av.y, av.z, av.w};
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      v[2 * k] = llq_round_bf16(v[2 * k] + __uint_as_float(as[k] << 16));
      v[2 * k + 1] = llq_round_bf16(v[2 * k + 1] + __uint_as_float(as[k] & 0xffff0000u));
    }
    *reinterpret_cast<uint4*>(x + i) = llq_pack8(v);
  }
}
// out[i..i+8] = bf16(scale · v · w) (the second half).
static __device__ __forceinline__ void llq_norm_out8(const float v[8], float scale, const llq_bf16* w, llq_bf16* out, int i) {
  const uint4 wv = *reinterpret_cast<const uint4*>(w + i);
  const unsigned ws[4] = {wv.x, wv.y, wv.z, wv.w};
  float o[8];
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    o[2 * k] = scale * v[2 * k] * __uint_as_float(ws[k] << 16);
    o[2 * k + 1] = scale * v[2 * k + 1] * __uint_as_float(ws[k] & 0xffff0000u);
  }
  *reinterpret_cast<uint4*>(out + i) = llq_pack8(o);
}
// KEEP: the row stays in registers between the halves (the norm kernel); without it the
// second half reads x again (the matvec entries, whose weight loads are in flight and
// whose registers bound how many blocks an SM holds: 80 -> 128 for RTN's 1-row entry with the
// row kept). The same operations in the same order either way.
template <bool KEEP>
static __device__ __forceinline__ void llq_rmsnorm_row(llq_bf16* x, const llq_bf16* add, const llq_bf16* w,
                                                       llq_bf16* out, int n, float eps, float* scratch) {
  if ((n & 7) == 0 && n <= (int)blockDim.x * 8 * LLQ_NORM_CHUNKS && llq_aligned16(x) && llq_aligned16(w) &&
      llq_aligned16(out) && (!add || llq_aligned16(add))) {
    float v[KEEP ? LLQ_NORM_CHUNKS : 1][8];
    float ss = 0.f;
#pragma unroll
    for (int c = 0; c < LLQ_NORM_CHUNKS; ++c) {
      const int i = (threadIdx.x + c * blockDim.x) * 8;
      if (i < n) {
        float* vc = v[KEEP ? c : 0];
        llq_norm_in8(x, add, i, vc);
#pragma unroll
        for (int k = 0; k < 8; ++k) ss += vc[k] * vc[k];
      }
    }
    const float scale = rsqrtf(llq_block_sum(ss, scratch) / n + eps);
#pragma unroll
    for (int c = 0; c < LLQ_NORM_CHUNKS; ++c) {
      const int i = (threadIdx.x + c * blockDim.x) * 8;
      if (i < n) {
        float* vc = v[KEEP ? c : 0];
        if (!KEEP) llq_norm_in8(x, nullptr, i, vc);  // `add` was written back by now
        llq_norm_out8(vc, scale, w, out, i);
      }
    }
    return;
  }
  float ss = 0.f;
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    float v = llq_bf16_to_f32(x[i]);
    if (add) {
      v = llq_round_bf16(v + llq_bf16_to_f32(add[i]));
      x[i] = llq_f32_to_bf16(v);
    }
    ss += v * v;
  }
  const float scale = rsqrtf(llq_block_sum(ss, scratch) / n + eps);
  for (int i = threadIdx.x; i < n; i += blockDim.x)
    out[i] = llq_f32_to_bf16(scale * llq_bf16_to_f32(x[i]) * llq_bf16_to_f32(w[i]));
}

// What a 1-row matvec entry does at its edges (header v1.6), a mask: nothing (LLQ_FX_NONE),
// x normalized by the block first (LLQ_FX_NORM: `norm`, `eps`), y += the result (LLQ_FX_RES:
// y holds the residual stream), or gate and up together (LLQ_FX_GLU: the block's rows 0-1 are
// rows 2·blk, 2·blk + 1 of the gate matrix, rows 2-3 the same rows of the up matrix, and y
// gets silu(gate)·up for its two rows).
#define LLQ_FX_NONE 0
#define LLQ_FX_NORM 1
#define LLQ_FX_RES 2
#define LLQ_FX_GLU 4

// silu(g)·u as candle's bf16 `silu` (unary.cu: g / (1 + expf(−g)) in f32, rounded to bf16)
// then its bf16 `mul` (__hmul2): the f32 value the caller rounds once more. llq-host's
// SwiGLU kernel and the gate/up entry (LLQ_FX_GLU) both run it.
static __device__ __forceinline__ float llq_swiglu1(float g, float u) {
  return llq_round_bf16(g / (1.f + expf(-g))) * u;
}
struct LlqFx {
  const llq_bf16* norm;
  float eps;
};

// The block's normalized copy of x (cols bf16, the entry's dynamic shared memory), called
// by every thread of the block after llq_grid_enter: x is the previous kernel's output.
static __device__ __forceinline__ void llq_fx_stage(const llq_bf16* x, const LlqFx& fx, int cols, llq_bf16* xs) {
  __shared__ float scratch[32];
  // No `add`: x is only read.
  llq_rmsnorm_row<false>(const_cast<llq_bf16*>(x), nullptr, fx.norm, xs, cols, fx.eps, scratch);
  __syncthreads();
}

// 8 elements of x at p: from the block's shared copy under LLQ_FX_NORM, else through the
// read-only data cache.
template <int FX>
static __device__ __forceinline__ uint4 llq_ldx8(const llq_bf16* __restrict__ x, const llq_bf16* xs, size_t off) {
  if constexpr ((FX & LLQ_FX_NORM) != 0) return *reinterpret_cast<const uint4*>(xs + off);
  else return __ldg(reinterpret_cast<const uint4*>(x + off));
}

// y[i] = v in bf16, or under LLQ_FX_RES y[i] = bf16(y[i] + bf16(v)) (the norm kernel's add).
template <int FX>
static __device__ __forceinline__ void llq_store_y(llq_bf16* __restrict__ y, size_t i, float v) {
  if constexpr ((FX & LLQ_FX_RES) != 0) y[i] = llq_f32_to_bf16(llq_bf16_to_f32(y[i]) + llq_round_bf16(v));
  else y[i] = llq_f32_to_bf16(v);
}

// y[i] = bf16(silu(bf16(g)) · bf16(u)): gate and up rounded as their own stores would be,
// then the SwiGLU kernel's arithmetic (LLQ_FX_GLU).
static __device__ __forceinline__ void llq_store_glu(llq_bf16* __restrict__ y, size_t i, float g, float u) {
  y[i] = llq_f32_to_bf16(llq_swiglu1(llq_round_bf16(g), llq_round_bf16(u)));
}

// The matrix and the row of the block's local row r (0-3; two of each matrix under
// LLQ_FX_GLU, else the block's four consecutive rows of `a`).
// By value: a reference chosen at run time put both argument sets in local memory (160 bytes
// of stack frame in ptxas' report).
template <int FX>
static __device__ __forceinline__ LlqArgs llq_fx_args(const LlqArgs& a, const LlqArgs* a1, int r) {
  if constexpr ((FX & LLQ_FX_GLU) != 0) return r >= 2 ? *a1 : a;
  else return a;
}
template <int FX>
static __device__ __forceinline__ unsigned llq_fx_row(unsigned blk, int r) {
  if constexpr ((FX & LLQ_FX_GLU) != 0) return blk * 2 + (r & 1);
  else return blk * 4 + r;
}

// The dynamic shared memory of the LLQ_FX_NORM entries: x normalized, cols bf16.
static __device__ __forceinline__ llq_bf16* llq_fx_smem() {
  extern __shared__ __align__(16) unsigned char llq_fx_dyn[];
  return reinterpret_cast<llq_bf16*>(llq_fx_dyn);
}

// out[i] = bf16(W[i]) for all rows*cols weights. 256 threads a block; a block covers
// LLQ_DQ_GROUPS * 256 groups of 8 weights, each thread LLQ_DQ_GROUPS of them (strided by
// the block, so every load instruction is coalesced), all loads issued before any use.
#define LLQ_DQ_GROUPS 4
template <class D>
static __device__ void llq_dequantize(const LlqArgs& a, llq_bf16* out) {
  __shared__ float lut[D::LUT > 0 ? D::LUT : 1];
  llq_fill_lut<D>(lut, a);
  llq_grid_enter();  // out may still be read by the kernel before
  const long long n = a.rows * a.cols;
  const long long g0 = (long long)blockIdx.x * blockDim.x * LLQ_DQ_GROUPS + threadIdx.x;
  if ((a.cols & 7) == 0) {
    typename D::Raw raw[LLQ_DQ_GROUPS];
#pragma unroll
    for (int u = 0; u < LLQ_DQ_GROUPS; ++u) {
      const long long i = (g0 + (long long)u * blockDim.x) * 8;
      if (i < n) {
        const long long row = i / a.cols;
        raw[u] = llq_load8<D>(a, i, row, i - row * a.cols);
      }
    }
#pragma unroll
    for (int u = 0; u < LLQ_DQ_GROUPS; ++u) {
      const long long i = (g0 + (long long)u * blockDim.x) * 8;
      if (i < n) {
        float w[8];
        const long long row = i / a.cols;
        llq_decode8<D>(a, lut, i, row, i - row * a.cols, raw[u], w);
        *reinterpret_cast<uint4*>(out + i) = llq_pack8(w);
      }
    }
  } else {
    for (int u = 0; u < LLQ_DQ_GROUPS; ++u) {
      const long long i = (g0 + (long long)u * blockDim.x) * 8;
      for (long long j = i; j < i + 8 && j < n; ++j) out[j] = llq_f32_to_bf16(D::at(a, lut, j, j / a.cols));
    }
  }
}

static __device__ __forceinline__ void llq_dot8(float& acc, const float w[8], uint4 xv) {
  const unsigned xs[4] = {xv.x, xv.y, xv.z, xv.w};
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    acc = fmaf(w[2 * k], __uint_as_float(xs[k] << 16), acc);
    acc = fmaf(w[2 * k + 1], __uint_as_float(xs[k] & 0xffff0000u), acc);
  }
}

// y[b, r] = sum_c x[b, c] * W[r, c] for b < batch <= 8, f32 accumulation, bf16 in and out;
// x is (batch, cols), y (batch, rows), both row-major and 16-byte aligned.
// A block of 256 threads owns RB rows and splits their columns: thread t takes the groups of
// 8 columns t, t + 256, ...; for each step of UNROLL groups it first issues the RB * UNROLL
// weight loads (all in flight together), then loads each 8-column slice of x once and uses
// it for all RB rows. Partial sums meet through warp shuffles and shared memory.
// The batch bound MAXB is a template parameter: PREFIX_matvec takes up to 8 rows,
// PREFIX_matvec_b4 up to 4 and PREFIX_matvec_b1 one (fewer registers, more blocks an SM). The first weight loads are
// issued before the decoder's table is staged, so the two latencies overlap.
#define LLQ_MV_ROWS 4

// The wide matvec (header v1.2): the block's LLQ_MV_ROWS = 4 rows (the launch shape of
// convention v1, unchanged) get two warps each; thread j of a row's 64 takes the 32-column
// chunks j, j + 64, ... and issues UNROLL 16-byte code loads before decoding any. One row a
// thread, so a step needs one 32-weight code load, MAXB x slices of 64 bytes and no table
// of partial sums: the row's two warps meet once, in shared memory, at the end. With 2048
// columns every thread has exactly one chunk; the 4-row, 8-column driver below left 3/4 of
// the 4-bit chunks' threads idle there.
template <class D, int UNROLL, int MAXB, int FX = LLQ_FX_NONE>
static __device__ __forceinline__ void llq_matvec_w(const LlqArgs& a0, const llq_bf16* __restrict__ x, llq_bf16* __restrict__ y, int batch,
                                                    unsigned blk, const LlqFx& fx = LlqFx{}, const LlqArgs* a1 = nullptr) {
  static_assert(FX == LLQ_FX_NONE || MAXB == 1, "the fused edges take one row of x");
  __shared__ float lut[D::LUT > 0 ? D::LUT : 1];
  llq_bf16* const xs = llq_fx_smem();
  __shared__ float part[8][MAXB];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  // This thread's matrix and row (LLQ_FX_GLU: the up matrix for the block's last two rows).
  const LlqArgs a = llq_fx_args<FX>(a0, a1, threadIdx.x >> 6);
  const unsigned row = llq_fx_row<FX>(blk, threadIdx.x >> 6);
  const unsigned j = threadIdx.x & 63u;
  const unsigned cols = (unsigned)a.cols, chunks = cols >> 5;
  const bool live = row < (unsigned)a.rows;
  float acc[MAXB];
#pragma unroll
  for (int b = 0; b < MAXB; ++b) acc[b] = 0.f;
  bool staged = false;
  // c0 - j is the same for every thread, so the whole block takes each step (the table fill
  // below synchronizes).
  for (unsigned c0 = j; c0 - j < chunks; c0 += 64u * UNROLL) {
    typename D::Raw32 raw[UNROLL];
#pragma unroll
    for (int u = 0; u < UNROLL; ++u) {
      const unsigned c = c0 + 64u * u;
      if (live && c < chunks) raw[u] = D::load32_rc(a, row, c << 5);
    }
    if (!staged) {
      llq_fill_lut<D>(lut, a0);  // (LLQ_FX_GLU: the host pairs matrices of equal parameters)
      llq_grid_enter();  // the first codes are in flight and the table is staged; x is next
      if constexpr ((FX & LLQ_FX_NORM) != 0) llq_fx_stage(x, fx, (int)cols, xs);
      staged = true;
    }
#pragma unroll
    for (int u = 0; u < UNROLL; ++u) {
      const unsigned c = c0 + 64u * u;
      if (live && c < chunks) {
        float w[32];
        D::decode32(a, lut, row, c << 5, raw[u], w);
#pragma unroll
        for (int k = 0; k < 4; ++k)
#pragma unroll
          for (int b = 0; b < MAXB; ++b)
            if (b < batch)
              llq_dot8(acc[b], w + 8 * k, llq_ldx8<FX>(x, xs, (size_t)b * cols + (c << 5) + 8 * k));
      }
    }
  }
  if (!staged) llq_grid_enter();  // no columns: nothing was loaded, y is still written
#pragma unroll
  for (int b = 0; b < MAXB; ++b) {
    if (b < batch) {
      float v = acc[b];
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
      if (lane == 0) part[warp][b] = v;
    }
  }
  __syncthreads();
  if constexpr ((FX & LLQ_FX_GLU) != 0) {
    // Local rows r and r + 2 are the same row of gate and up (two warps each).
    if (threadIdx.x < 2) {
      const unsigned out = llq_fx_row<FX>(blk, threadIdx.x);
      const int r = threadIdx.x;
      if (out < (unsigned)a0.rows)
        llq_store_glu(y, out, part[2 * r][0] + part[2 * r + 1][0], part[2 * r + 4][0] + part[2 * r + 5][0]);
    }
  } else if (threadIdx.x < LLQ_MV_ROWS * MAXB) {
    const int r = threadIdx.x / MAXB, b = threadIdx.x % MAXB;
    const unsigned out = blk * LLQ_MV_ROWS + r;
    if (b < batch && out < (unsigned)a.rows) llq_store_y<FX>(y, (size_t)b * a.rows + out, part[2 * r][b] + part[2 * r + 1][b]);
  }
}

// Entries for up to this many rows of x take the wide driver when the decoder offers it: the
// wide driver loads x once per row of W, the 4-row driver once per 4 rows, which matters as
// the batch grows: at 4 rows the two split the Llama shapes between them (wide 32.4 vs 39.9
// µs on 8192×2048, 36.5 vs 22.7 on 2048×8192), at 8 the 4-row driver wins (bench/NOTES.md).
#ifndef LLQ_MV_WIDE_MAXB
#define LLQ_MV_WIDE_MAXB 1
#endif

template <class D, int UNROLL, int MAXB, int FX = LLQ_FX_NONE>
static __device__ __forceinline__ void llq_matvec_b(const LlqArgs& a, const llq_bf16* __restrict__ x, llq_bf16* __restrict__ y, int batch,
                                                    unsigned blk, const LlqFx& fx = LlqFx{}, const LlqArgs* a1 = nullptr) {
  static_assert(FX == LLQ_FX_NONE || MAXB == 1, "the fused edges take one row of x");
  if constexpr (llq_has_wide<D>::value && MAXB <= LLQ_MV_WIDE_MAXB) {
    if ((a.cols & 31) == 0 && D::wide_ok(a)) {
      llq_matvec_w<D, UNROLL, MAXB, FX>(a, x, y, batch, blk, fx, a1);
      return;
    }
  }
  llq_bf16* const xs = llq_fx_smem();
  // Where the wide driver is compiled in, this one only serves shapes it cannot take (odd
  // column counts, 3-bit codes): one load a step keeps its registers from setting the whole
  // kernel's (the wide driver alone needs 64-80, this one at UNROLL 4 up to 128).
  constexpr bool has_wide = llq_has_wide<D>::value && MAXB <= LLQ_MV_WIDE_MAXB;
  constexpr int NU = has_wide ? 1 : UNROLL;
  constexpr int RB = LLQ_MV_ROWS;
  __shared__ float lut[D::LUT > 0 ? D::LUT : 1];
  __shared__ float part[8][RB][MAXB];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  // Local row r is row rr(r) of matrix ar(r): the block's 4 consecutive rows, or under
  // LLQ_FX_GLU two rows of gate then the same two of up.
  auto ar = [&](int r) { return llq_fx_args<FX>(a, a1, r); };
  auto rr = [&](int r) -> long long { return llq_fx_row<FX>(blk, r); };
  const long long cols = a.cols;
  float acc[RB][MAXB];
#pragma unroll
  for (int r = 0; r < RB; ++r)
#pragma unroll
    for (int b = 0; b < MAXB; ++b) acc[r][b] = 0.f;
  if ((cols & 7) == 0) {
    const long long groups = cols >> 3;
    bool staged = false;
    for (long long g0 = threadIdx.x; g0 - threadIdx.x < groups; g0 += 256LL * NU) {
      typename D::Raw raw[NU][RB];
#pragma unroll
      for (int u = 0; u < NU; ++u) {
        const long long g = g0 + 256LL * u;
#pragma unroll
        for (int r = 0; r < RB; ++r)
          if (g < groups && rr(r) < ar(r).rows) raw[u][r] = llq_load8<D>(ar(r), rr(r) * cols + g * 8, rr(r), g * 8);
      }
      if (!staged) {  // every thread of the block takes this branch on its first step
        llq_fill_lut<D>(lut, a);
        llq_grid_enter();
        if constexpr ((FX & LLQ_FX_NORM) != 0) llq_fx_stage(x, fx, (int)cols, xs);
        staged = true;
      }
#pragma unroll
      for (int u = 0; u < NU; ++u) {
        const long long g = g0 + 256LL * u;
        if (g < groups) {
          uint4 xv[MAXB];
#pragma unroll
          for (int b = 0; b < MAXB; ++b)
            if (b < batch) xv[b] = llq_ldx8<FX>(x, xs, b * cols + g * 8);
#pragma unroll
          for (int r = 0; r < RB; ++r) {
            if (rr(r) < ar(r).rows) {
              float w[8];
              llq_decode8<D>(ar(r), lut, rr(r) * cols + g * 8, rr(r), g * 8, raw[u][r], w);
#pragma unroll
              for (int b = 0; b < MAXB; ++b)
                if (b < batch) llq_dot8(acc[r][b], w, xv[b]);
            }
          }
        }
      }
    }
    if (!staged) {  // not reached for cols > 0; kept for safety
      llq_fill_lut<D>(lut, a);
      llq_grid_enter();
    }
  } else {
    llq_fill_lut<D>(lut, a);
    llq_grid_enter();
    if constexpr ((FX & LLQ_FX_NORM) != 0) llq_fx_stage(x, fx, (int)cols, xs);
    for (long long c = threadIdx.x; c < cols; c += 256) {
#pragma unroll
      for (int r = 0; r < RB; ++r) {
        if (rr(r) < ar(r).rows) {
          const float w = D::at(ar(r), lut, rr(r) * cols + c, rr(r));
#pragma unroll
          for (int b = 0; b < MAXB; ++b)
            if (b < batch)
              acc[r][b] = fmaf(w, llq_bf16_to_f32((FX & LLQ_FX_NORM) != 0 ? xs[c] : x[b * cols + c]), acc[r][b]);
        }
      }
    }
  }
#pragma unroll
  for (int r = 0; r < RB; ++r)
#pragma unroll
    for (int b = 0; b < MAXB; ++b) {
      if (b < batch) {
        float v = acc[r][b];
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
        if (lane == 0) part[warp][r][b] = v;
      }
    }
  __syncthreads();
  auto total = [&](int r, int b) {
    float v = 0.f;
#pragma unroll
    for (int w = 0; w < 8; ++w) v += part[w][r][b];
    return v;
  };
  if constexpr ((FX & LLQ_FX_GLU) != 0) {
    if (threadIdx.x < 2 && rr(threadIdx.x) < a.rows)
      llq_store_glu(y, rr(threadIdx.x), total(threadIdx.x, 0), total(threadIdx.x + 2, 0));
  } else if (threadIdx.x < RB * MAXB) {
    const int r = threadIdx.x / MAXB, b = threadIdx.x % MAXB;
    if (b < batch && rr(r) < a.rows) llq_store_y<FX>(y, b * a.rows + rr(r), total(r, b));
  }
}


// The tensor-core matvec (header v1.3, sm_80 and later): y = x · Wᵀ for up to LLQ_MMA_MAXB
// = 64 rows of x, for matrices whose column count is a multiple of 32. A block of 256
// threads owns LLQ_MMA_ROWS = 16 rows of W; its 8 warps split the columns in chunks of 128,
// and within a warp thread (g = lane / 4, t = lane % 4) decodes rows g and g + 8 at the 32
// columns t·32 … t·32 + 31 of the chunk (one 16-byte code load where the decoder has the
// wide entries, else four 8-weight loads), rounds them to bf16 and feeds them to
// mma.m16n8k16 (bf16 in, f32 accumulation) as the A operand — W's rows are the M side, the
// batch the N side. The k order inside a chunk is permuted so that the weights a thread
// decodes are exactly the A-fragment elements it holds (PTX ISA, "Matrix Fragments for
// mma.m16n8k16": a thread holds columns 2t, 2t+1, 2t+8, 2t+9 of each 16-wide step); x is
// read with the same permutation for the B operand, so the dot products are unchanged.
// No shared-memory staging of W: each weight is decoded once a step, by the thread that
// multiplies it. The warps' partial sums meet in shared memory at the end. Weights are
// rounded to bf16 before the product, as the dequantize + cuBLAS path rounds them. The
// batch-1..8 drivers above keep f32 weights.
#define LLQ_MMA_ROWS 16
#define LLQ_MMA_MAXB 64

// Two f32 to a bf16 pair, round to nearest even (one cvt for two where sm_80's is there).
static __device__ __forceinline__ unsigned llq_bf16x2(float lo, float hi) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  unsigned r;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
#else
  return (unsigned)llq_f32_to_bf16(lo) | ((unsigned)llq_f32_to_bf16(hi) << 16);
#endif
}

static __device__ __forceinline__ void llq_mma_bf16(float c[4], unsigned a0, unsigned a1, unsigned a2, unsigned a3,
                                                    unsigned b0, unsigned b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
#endif
}

// The codes of one row's 32 columns from `col` (wide: one load; else four 8-weight loads).
template <class D, bool WIDE> struct LlqMmaRaw;
template <class D> struct LlqMmaRaw<D, true> { typename D::Raw32 r; };
template <class D> struct LlqMmaRaw<D, false> { typename D::Raw r[4]; };

template <class D, bool WIDE>
static __device__ __forceinline__ void llq_mma_load(const LlqArgs& a, unsigned row, unsigned col, LlqMmaRaw<D, WIDE>& raw) {
  if constexpr (WIDE) {
    raw.r = D::load32_rc(a, row, col);
  } else {
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      const unsigned c = col + 8u * u;
      raw.r[u] = llq_load8<D>(a, (long long)row * a.cols + c, row, c);
    }
  }
}

// Decode what llq_mma_load fetched into 16 bf16 pairs: p[j] = (w[2j], w[2j+1]).
template <class D, bool WIDE>
static __device__ __forceinline__ void llq_mma_decode(const LlqArgs& a, const float* lut, unsigned row, unsigned col,
                                                      const LlqMmaRaw<D, WIDE>& raw, unsigned p[16]) {
  float w[32];
  if constexpr (WIDE) {
    D::decode32(a, lut, row, col, raw.r, w);
  } else {
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      const unsigned c = col + 8u * u;
      llq_decode8<D>(a, lut, (long long)row * a.cols + c, row, c, raw.r[u], w + 8 * u);
    }
  }
#pragma unroll
  for (int j = 0; j < 16; ++j) p[j] = llq_bf16x2(w[2 * j], w[2 * j + 1]);
}

template <class D, bool WIDE, int MAXNT>
static __device__ __forceinline__ void llq_matvec_mma_run(const LlqArgs& a, const float* lut, const llq_bf16* __restrict__ x,
                                                          int batch, unsigned blk, float acc[MAXNT][4]) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const unsigned cols = (unsigned)a.cols, rows = (unsigned)a.rows;
  const unsigned ra = blk * LLQ_MMA_ROWS + g, rb = ra + 8;
  const bool la = ra < rows, lb = rb < rows;
  const int ntiles = (batch + 7) >> 3;
  for (unsigned k0 = warp * 128u; k0 < cols; k0 += 8u * 128u) {
    const unsigned c = k0 + 32u * t;
    const bool live = c < cols;
    unsigned pa[16], pb[16];
#pragma unroll
    for (int j = 0; j < 16; ++j) pa[j] = pb[j] = 0u;
    if constexpr (WIDE || !llq_has_wide<D>::value) {
      // Both rows' codes in flight before either is decoded.
      LlqMmaRaw<D, WIDE> rawa, rawb;
      if (live && la) llq_mma_load<D, WIDE>(a, ra, c, rawa);
      if (live && lb) llq_mma_load<D, WIDE>(a, rb, c, rawb);
      if (live && la) llq_mma_decode<D, WIDE>(a, lut, ra, c, rawa, pa);
      if (live && lb) llq_mma_decode<D, WIDE>(a, lut, rb, c, rawb, pb);
    } else {
      // The fallback of a decoder with a wide path (3-bit codes, act-order), one row at a
      // time: the 8-weight loads of two rows held together set the whole kernel's registers
      // (int-group: 193 against 127 this way, one block an SM against two; ptxas sm_90), as
      // in llq_matvec_b. Decoders without a wide path (the host's bf16 rows) keep both.
      if (live && la) {
        LlqMmaRaw<D, WIDE> raw;
        llq_mma_load<D, WIDE>(a, ra, c, raw);
        llq_mma_decode<D, WIDE>(a, lut, ra, c, raw, pa);
      }
      if (live && lb) {
        LlqMmaRaw<D, WIDE> raw;
        llq_mma_load<D, WIDE>(a, rb, c, raw);
        llq_mma_decode<D, WIDE>(a, lut, rb, c, raw, pb);
      }
    }
#pragma unroll
    for (int nt = 0; nt < MAXNT; ++nt) {
      if (nt < ntiles) {
        const int n = nt * 8 + g;
        uint4 xv[4];
#pragma unroll
        for (int q = 0; q < 4; ++q) {
          xv[q] = make_uint4(0u, 0u, 0u, 0u);
          if (live && n < batch) xv[q] = __ldg(reinterpret_cast<const uint4*>(x + (size_t)n * cols + c) + q);
        }
        const unsigned xs[16] = {xv[0].x, xv[0].y, xv[0].z, xv[0].w, xv[1].x, xv[1].y, xv[1].z, xv[1].w,
                                 xv[2].x, xv[2].y, xv[2].z, xv[2].w, xv[3].x, xv[3].y, xv[3].z, xv[3].w};
#pragma unroll
        for (int m = 0; m < 8; ++m)
          llq_mma_bf16(acc[nt], pa[2 * m], pb[2 * m], pa[2 * m + 1], pb[2 * m + 1], xs[2 * m], xs[2 * m + 1]);
      }
    }
  }
}

template <class D, int MAXNT>
static __device__ __forceinline__ void llq_matvec_mma(const LlqArgs& a, const llq_bf16* __restrict__ x, llq_bf16* __restrict__ y, int batch,
                                                      unsigned blk) {
  __shared__ float lut[D::LUT > 0 ? D::LUT : 1];
  __shared__ float part[8][LLQ_MMA_ROWS][MAXNT * 8];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  float acc[MAXNT][4];
#pragma unroll
  for (int nt = 0; nt < MAXNT; ++nt) acc[nt][0] = acc[nt][1] = acc[nt][2] = acc[nt][3] = 0.f;
  llq_fill_lut<D>(lut, a);
  llq_grid_enter();
  bool wide = false;
  if constexpr (llq_has_wide<D>::value) wide = D::wide_ok(a);
  if constexpr (llq_has_wide<D>::value) {
    if (wide) llq_matvec_mma_run<D, true, MAXNT>(a, lut, x, batch, blk, acc);
    else llq_matvec_mma_run<D, false, MAXNT>(a, lut, x, batch, blk, acc);
  } else {
    llq_matvec_mma_run<D, false, MAXNT>(a, lut, x, batch, blk, acc);
  }
  const int ntiles = (batch + 7) >> 3;
#pragma unroll
  for (int nt = 0; nt < MAXNT; ++nt) {
    if (nt < ntiles) {
      part[warp][g][nt * 8 + 2 * t] = acc[nt][0];
      part[warp][g][nt * 8 + 2 * t + 1] = acc[nt][1];
      part[warp][g + 8][nt * 8 + 2 * t] = acc[nt][2];
      part[warp][g + 8][nt * 8 + 2 * t + 1] = acc[nt][3];
    }
  }
  __syncthreads();
  const unsigned rows = (unsigned)a.rows, r0 = blk * LLQ_MMA_ROWS;
  for (int i = threadIdx.x; i < LLQ_MMA_ROWS * batch; i += blockDim.x) {
    const int r = i % LLQ_MMA_ROWS, b = i / LLQ_MMA_ROWS;
    if (r0 + r < rows) {
      float v = 0.f;
#pragma unroll
      for (int w = 0; w < 8; ++w) v += part[w][r][b];
      y[(size_t)b * rows + r0 + r] = llq_f32_to_bf16(v);
    }
  }
}

#define LLQ_KERNEL_ARGS                                                                          \
  const unsigned char *b0, const unsigned char *b1, const unsigned char *b2,                     \
      const unsigned char *b3, long long rows, long long cols, long long p0, long long p1,       \
      long long p2, long long p3
#define LLQ_ARGS_INIT {b0, b1, b2, b3, rows, cols, p0, p1, p2, p3}
// A second matrix's arguments (header v1.6's gate/up entry).
#define LLQ_ARGS_PARAMS(i)                                                                                   \
  const unsigned char *b0_##i, const unsigned char *b1_##i, const unsigned char *b2_##i,                     \
      const unsigned char *b3_##i, long long rows_##i, long long cols_##i, long long p0_##i, long long p1_##i, \
      long long p2_##i, long long p3_##i
#define LLQ_ARGS_OF(i) {b0_##i, b1_##i, b2_##i, b3_##i, rows_##i, cols_##i, p0_##i, p1_##i, p2_##i, p3_##i}

// Several matrices that read the same x in one launch (header v1.4): q, k and v after the
// input norm, gate and up after the post-attention norm. Each matrix's blocks follow the
// previous one's (blocks_i of them, what its single launch would have had); a block finds
// its matrix and runs the same driver on it, so the results are those of separate launches.
// One launch instead of three saves the launch gaps and the tails of the small k and v
// matrices (bench/NOTES.md, issue 13). KIND: 0 the 1-row driver, 1 the tensor-core driver up
// to 16 rows, 2 up to 64.
template <int KIND, class D, int UNROLL, int FX>
static __device__ __forceinline__ void llq_multi_one(const LlqArgs& a, const llq_bf16* __restrict__ x, llq_bf16* __restrict__ y,
                                                     int batch, unsigned blk, const LlqFx& fx) {
  static_assert(KIND == 0 || FX == LLQ_FX_NONE, "the fused edges are the 1-row driver's");
  if constexpr (KIND == 0) llq_matvec_b<D, UNROLL, 1, FX>(a, x, y, batch, blk, fx);
  else if constexpr (KIND == 1) llq_matvec_mma<D, 2>(a, x, y, batch, blk);
  else llq_matvec_mma<D, LLQ_MMA_MAXB / 8>(a, x, y, batch, blk);
}

#define LLQ_MULTI_PARAMS(i)                                                                                  \
  const unsigned char *b0_##i, const unsigned char *b1_##i, const unsigned char *b2_##i,                     \
      const unsigned char *b3_##i, long long rows_##i, long long cols_##i, long long p0_##i, long long p1_##i, \
      long long p2_##i, long long p3_##i, llq_bf16 *y_##i, unsigned blocks_##i
#define LLQ_MULTI_ONE(i, D, UNROLL)                                                                          \
  {                                                                                                          \
    const LlqArgs a = {b0_##i, b1_##i, b2_##i, b3_##i, rows_##i, cols_##i, p0_##i, p1_##i, p2_##i, p3_##i};  \
    llq_multi_one<KIND, D, UNROLL, FX>(a, x, y_##i, batch, blk, fx);                                         \
  }
// Up to three matrices (a third with blocks_2 = 0 is never reached). The 1-row driver picks
// its matrix's arguments by value and runs one inlined copy of the driver: with a copy per
// matrix the three argument sets stayed live (ptxas sm_90: NF4 80 registers against 64 alone,
// the host's bf16 rows 128 against 83). The tensor-core drivers keep a copy each (picking by
// value took them from ~127 registers to 217-227).
#define LLQ_MULTI_PICK(i) LlqArgs{b0_##i, b1_##i, b2_##i, b3_##i, rows_##i, cols_##i, p0_##i, p1_##i, p2_##i, p3_##i}
#define LLQ_MULTI_BODY(D, UNROLL)                                                                            \
  unsigned blk = blockIdx.x;                                                                                 \
  if constexpr (KIND == 0) {                                                                                 \
    const int m = blk < blocks_0 ? 0 : blk - blocks_0 < blocks_1 ? 1 : 2;                                    \
    blk -= m == 0 ? 0u : m == 1 ? blocks_0 : blocks_0 + blocks_1;                                            \
    if (m == 2 && blk >= blocks_2) return;                                                                   \
    const LlqArgs a = m == 0 ? LLQ_MULTI_PICK(0) : m == 1 ? LLQ_MULTI_PICK(1) : LLQ_MULTI_PICK(2);           \
    llq_multi_one<KIND, D, UNROLL, FX>(a, x, m == 0 ? y_0 : m == 1 ? y_1 : y_2, batch, blk, fx);             \
  } else {                                                                                                   \
    if (blk < blocks_0) {                                                                                    \
      LLQ_MULTI_ONE(0, D, UNROLL) return;                                                                    \
    }                                                                                                        \
    blk -= blocks_0;                                                                                         \
    if (blk < blocks_1) {                                                                                    \
      LLQ_MULTI_ONE(1, D, UNROLL) return;                                                                    \
    }                                                                                                        \
    blk -= blocks_1;                                                                                         \
    if (blk < blocks_2) LLQ_MULTI_ONE(2, D, UNROLL)                                                          \
  }
#define LLQ_DEFINE_MULTI(D, UNROLL, NAME, KIND_, BOUNDS)                                                     \
  extern "C" __global__ void BOUNDS                                                                          \
      NAME(LLQ_MULTI_PARAMS(0), LLQ_MULTI_PARAMS(1), LLQ_MULTI_PARAMS(2), const llq_bf16* x, int batch) {     \
    constexpr int KIND = KIND_, FX = LLQ_FX_NONE;                                                            \
    const LlqFx fx{};                                                                                        \
    LLQ_MULTI_BODY(D, UNROLL)                                                                                \
  }
// Launch bounds of the three-matrix 1-row entry (q/k/v at batch 1 without the folded norm).
// A decoder may redefine it before LLQ_DEFINE_KERNELS: unbounded, ptxas (sm_90) gave NF4's
// 80 registers and the u8 int-group's 98 where 64 hold them without a spill (four blocks an
// SM against three and two, for a 768-block grid), so those two ask for four blocks; bounded
// alike, the 16-bit, int8 and ggml decoders took more registers than unbounded (gguf 48 → 56),
// hqq's spilled 18 bytes and the host's bf16 rows 142.
#ifndef LLQ_X3_BOUNDS
#define LLQ_X3_BOUNDS __launch_bounds__(256)
#endif
// The same with x normalized first (header v1.6: q, k, v after the input norm at batch 1).
// Blocks an SM must hold for the normalizing entries: the weight loads stay in flight across
// the norm, and unbounded the bf16 rows' entry took 142-169 registers (one block an SM, where
// the plain 1-row entry has 102, two); 3 bounds them at 85 (NF4's and RTN's need no more).
#ifndef LLQ_FX_MIN_BLOCKS
#define LLQ_FX_MIN_BLOCKS 3
#endif
#define LLQ_DEFINE_MULTI_NORM(D, UNROLL, NAME)                                                               \
  extern "C" __global__ void __launch_bounds__(256, LLQ_FX_MIN_BLOCKS)                                      \
      NAME(LLQ_MULTI_PARAMS(0), LLQ_MULTI_PARAMS(1), LLQ_MULTI_PARAMS(2), const llq_bf16* x, int batch,       \
           const llq_bf16* norm, float eps) {                                                                \
    constexpr int KIND = 0, FX = LLQ_FX_NORM;                                                                \
    const LlqFx fx{norm, eps};                                                                               \
    LLQ_MULTI_BODY(D, UNROLL)                                                                                \
  }

// Weight loads in flight per thread for the 8-row entry: its 8 accumulators per row and 8 x
// slices a step already fill the registers, and at the method's UNROLL (4 for the built-in
// ones) it ran at 168 registers, 2-5x slower per byte than the 1-row entry (bench/NOTES.md,
// issue 13). The 1- and 4-row entries keep the method's UNROLL.
#ifndef LLQ_MV_UNROLL_B8
#define LLQ_MV_UNROLL_B8 1
#endif

// The two entry points of convention v1, named PREFIX_dequantize and PREFIX_matvec.
#define LLQ_DEFINE_KERNELS(D, UNROLL, PREFIX)                                                     \
  extern "C" __global__ void __launch_bounds__(256) PREFIX##_dequantize(LLQ_KERNEL_ARGS, llq_bf16* out) { \
    const LlqArgs a = LLQ_ARGS_INIT;                                                             \
    llq_dequantize<D>(a, out);                                                                   \
  }                                                                                              \
  extern "C" __global__ void __launch_bounds__(256)                                              \
      PREFIX##_matvec(LLQ_KERNEL_ARGS, const llq_bf16* x, llq_bf16* y, int batch) {              \
    const LlqArgs a = LLQ_ARGS_INIT;                                                             \
    llq_matvec_b<D, (UNROLL < LLQ_MV_UNROLL_B8 ? UNROLL : LLQ_MV_UNROLL_B8), LLQ_MAX_BATCH>(a, x, y, batch, blockIdx.x);                                      \
  }                                                                                              \
  extern "C" __global__ void __launch_bounds__(256)                                              \
      PREFIX##_matvec_b4(LLQ_KERNEL_ARGS, const llq_bf16* x, llq_bf16* y, int batch) {           \
    const LlqArgs a = LLQ_ARGS_INIT;                                                             \
    llq_matvec_b<D, UNROLL, 4>(a, x, y, batch, blockIdx.x);                                               \
  }                                                                                              \
  extern "C" __global__ void __launch_bounds__(256)                                              \
      PREFIX##_matvec_b1(LLQ_KERNEL_ARGS, const llq_bf16* x, llq_bf16* y, int batch) {           \
    const LlqArgs a = LLQ_ARGS_INIT;                                                             \
    llq_matvec_b<D, UNROLL, 1>(a, x, y, batch, blockIdx.x);                                               \
  }                                                                                              \
  extern "C" __global__ void __launch_bounds__(256)                                              \
      PREFIX##_matvec_mma(LLQ_KERNEL_ARGS, const llq_bf16* x, llq_bf16* y, int batch) {          \
    const LlqArgs a = LLQ_ARGS_INIT;                                                             \
    llq_matvec_mma<D, LLQ_MMA_MAXB / 8>(a, x, y, batch, blockIdx.x);                                         \
  }                                                                                              \
  extern "C" __global__ void __launch_bounds__(256)                                              \
      PREFIX##_matvec_mma16(LLQ_KERNEL_ARGS, const llq_bf16* x, llq_bf16* y, int batch) {        \
    const LlqArgs a = LLQ_ARGS_INIT;                                                             \
    llq_matvec_mma<D, 2>(a, x, y, batch, blockIdx.x);                                                     \
  }                                                                                              \
  LLQ_DEFINE_MULTI(D, UNROLL, PREFIX##_matvec_b1_x3, 0, LLQ_X3_BOUNDS)                           \
  LLQ_DEFINE_MULTI(D, UNROLL, PREFIX##_matvec_mma16_x3, 1, __launch_bounds__(256))               \
  LLQ_DEFINE_MULTI(D, UNROLL, PREFIX##_matvec_mma_x3, 2, __launch_bounds__(256))                 \
  extern "C" __global__ void PREFIX##_matvec_pdl() {}                                            \
  extern "C" __global__ void __launch_bounds__(256, LLQ_FX_MIN_BLOCKS) PREFIX##_matvec_b1_norm(                     \
      LLQ_KERNEL_ARGS, const llq_bf16* x, llq_bf16* y, int batch, const llq_bf16* norm, float eps) { \
    const LlqArgs a = LLQ_ARGS_INIT;                                                             \
    llq_matvec_b<D, UNROLL, 1, LLQ_FX_NORM>(a, x, y, batch, blockIdx.x, LlqFx{norm, eps});       \
  }                                                                                              \
  extern "C" __global__ void __launch_bounds__(256)                                              \
      PREFIX##_matvec_b1_res(LLQ_KERNEL_ARGS, const llq_bf16* x, llq_bf16* y, int batch) {       \
    const LlqArgs a = LLQ_ARGS_INIT;                                                             \
    llq_matvec_b<D, UNROLL, 1, LLQ_FX_RES>(a, x, y, batch, blockIdx.x);                          \
  }                                                                                              \
  extern "C" __global__ void __launch_bounds__(256, LLQ_FX_MIN_BLOCKS) PREFIX##_matvec_b1_glu_norm( \
      LLQ_KERNEL_ARGS, LLQ_ARGS_PARAMS(1), const llq_bf16* x, llq_bf16* y, int batch,            \
      const llq_bf16* norm, float eps) {                                                         \
    const LlqArgs a = LLQ_ARGS_INIT, a1 = LLQ_ARGS_OF(1);                                        \
    llq_matvec_b<D, UNROLL, 1, LLQ_FX_NORM | LLQ_FX_GLU>(a, x, y, batch, blockIdx.x, LlqFx{norm, eps}, &a1); \
  }                                                                                              \
  LLQ_DEFINE_MULTI_NORM(D, UNROLL, PREFIX##_matvec_b1_x3_norm)
