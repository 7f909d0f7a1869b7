// Micro-benchmark of 4-bit matvec drivers (issue 13): the SDK header's drivers and candidate
// launch shapes on NF4 (block 64, no double quantization) and bf16 rows, timed with CUDA
// events over launches that rotate across enough copies of the matrix to defeat the 50 MB L2.
// Build (here): source scripts/cuda-build-env.sh; L=$(dirname $(dirname $(which nvcc)))/lib
//   nvcc -std=c++17 -O3 -arch=sm_90 -I sdk/src/cuda bench/kernels/mv4.cu -o dist/mv4 -cudart static -L$L
// Run on the GPU machine: ./mv4   (prints µs and % of the device-to-device copy bandwidth)
// results/h100/speed13/wide-matvec/mv4/: three calls as the file grew (1: narrow, wide, warp
// rows; 2: + the diag variants; 3: + the ww variants); this file runs all of them. "nf4 wide"
// is the header's driver as it stands: rows 1-3 ran it before the 16-entry staging (lut_len),
// which diag1 measured.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <algorithm>
#include <vector>
#include <cuda_runtime.h>
#include "llq_kernels.cuh"
__constant__ unsigned LLQ_CODE_BITS[16];
__constant__ unsigned LLQ_DYN_BITS[256];
#include "four_bit.cu"

// The same format without the wide entries: the 4-row, 8-column driver.
struct NF4Narrow {
  enum { LUT = LlqFourBit::LUT };
  static __device__ float lut(int i) { return LlqFourBit::lut(i); }
  typedef LlqFourBit::Raw Raw;
  static __device__ __forceinline__ Raw load8(const LlqArgs& a, long long i) { return LlqFourBit::load8(a, i); }
  static __device__ __forceinline__ void decode8(const LlqArgs& a, const float* l, long long i, long long r, Raw raw, float w[8]) {
    LlqFourBit::decode8(a, l, i, r, raw, w);
  }
  static __device__ __forceinline__ float at(const LlqArgs& a, const float* l, long long i, long long r) { return LlqFourBit::at(a, l, i, r); }
};

// The dense bf16 rows decoder of llq-host's decode step (LlqBf16Rows), with its kernels.
#include "../../host/src/gpu/step.cu"
typedef LlqBf16Rows Bf16Rows;

template <class D, int MAXB> __global__ void __launch_bounds__(256) k_narrow(LlqArgs a, const llq_bf16* x, llq_bf16* y, int batch) {
  llq_matvec_b<D, (MAXB == 8 ? 1 : 4), MAXB>(a, x, y, batch);
}
template <int MAXB> __global__ void __launch_bounds__(256) k_wide(LlqArgs a, const llq_bf16* x, llq_bf16* y, int batch) {
  llq_matvec_w<LlqFourBit, 4, MAXB>(a, x, y, batch);
}

// The warp-per-rows candidates' end: each row's partial sums met across the warp by shuffles,
// lane 0 writes them.
template <int RW, int MAXB>
static __device__ __forceinline__ void warp_store(float (&acc)[RW][MAXB], int lane, unsigned r0, unsigned rows,
                                                  llq_bf16* y, int batch) {
#pragma unroll
  for (int r = 0; r < RW; ++r)
#pragma unroll
    for (int b = 0; b < MAXB; ++b) {
      float v = acc[r][b];
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
      if (lane == 0 && b < batch && r0 + r < rows) y[(size_t)b * rows + r0 + r] = llq_f32_to_bf16(v);
    }
}

// Candidate: a warp per RW rows, its lanes over the row's 8-column groups (lane l: groups l,
// l + 32, ...; every code and x load coalesced across the warp), U groups a step with all
// RW * U code loads issued first, x loaded once per group for the RW rows, the partial sums
// met by shuffles alone. Grid: rows / (8 * RW) blocks of 256.
template <class D, int RW, int U, int MAXB>
__global__ void __launch_bounds__(256) k_warp(LlqArgs a, const llq_bf16* __restrict__ x, llq_bf16* __restrict__ y, int batch) {
  __shared__ float lut[D::LUT > 0 ? D::LUT : 1];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const unsigned r0 = (blockIdx.x * 8 + warp) * RW;
  const unsigned cols = (unsigned)a.cols, groups = cols >> 3;
  float acc[RW][MAXB];
#pragma unroll
  for (int r = 0; r < RW; ++r)
#pragma unroll
    for (int b = 0; b < MAXB; ++b) acc[r][b] = 0.f;
  bool staged = false;
  for (unsigned g0 = lane; g0 - lane < groups; g0 += 32u * U) {
    typename D::Raw raw[U][RW];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const unsigned g = g0 + 32u * u;
#pragma unroll
      for (int r = 0; r < RW; ++r)
        if (g < groups && r0 + r < a.rows) raw[u][r] = llq_load8<D>(a, (long long)(r0 + r) * cols + g * 8, r0 + r, g * 8);
    }
    if (!staged) { llq_fill_lut<D>(lut, a); staged = true; }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const unsigned g = g0 + 32u * u;
      if (g < groups) {
        uint4 xv[MAXB];
#pragma unroll
        for (int b = 0; b < MAXB; ++b)
          if (b < batch) xv[b] = __ldg(reinterpret_cast<const uint4*>(x + (size_t)b * cols + g * 8));
#pragma unroll
        for (int r = 0; r < RW; ++r)
          if (r0 + r < a.rows) {
            float w[8];
            llq_decode8<D>(a, lut, (long long)(r0 + r) * cols + g * 8, r0 + r, g * 8, raw[u][r], w);
#pragma unroll
            for (int b = 0; b < MAXB; ++b)
              if (b < batch) llq_dot8(acc[r][b], w, xv[b]);
          }
      }
    }
  }
  warp_store<RW, MAXB>(acc, lane, r0, (unsigned)a.rows, y, batch);
}


// Diagnostic variants of the wide driver on NF4 (block 64, no double quantization):
// MODE 0 the header's decode32 (table of 272 staged), 1 the same with only the 16 code
// entries staged, 2 no table decode (w = raw bits: memory and structure only), 3 no x loads
// (x = 1), 4 scale factored out of the chunk and nibbles masked into byte offsets of the
// table (BFE + LDS + FFMA a weight), 5 = 4 with the codes loaded L1::no_allocate.
static __device__ __forceinline__ uint4 ld_na(const void* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
  return v;
}
template <int MODE, int UNROLL, int MAXB>
__global__ void __launch_bounds__(256) k_diag(LlqArgs a, const llq_bf16* __restrict__ x, llq_bf16* __restrict__ y, int batch) {
  __shared__ float lut[LlqFourBit::LUT];
  __shared__ float part[8][MAXB];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const unsigned row = blockIdx.x * 4 + (threadIdx.x >> 6);
  const unsigned j = threadIdx.x & 63u;
  const unsigned cols = (unsigned)a.cols, chunks = cols >> 5;
  const bool live = row < (unsigned)a.rows;
  float acc[MAXB];
  for (int b = 0; b < MAXB; ++b) acc[b] = 0.f;
  bool staged = false;
  for (unsigned c0 = j; c0 - j < chunks; c0 += 64u * UNROLL) {
    LlqFourBit::Raw32 raw[UNROLL];
#pragma unroll
    for (int u = 0; u < UNROLL; ++u) {
      const unsigned c = c0 + 64u * u;
      if (live && c < chunks) {
        if (MODE == 5) {
          const size_t i = (size_t)row * cols + (c << 5);
          raw[u].q = ld_na(a.b0 + (i >> 1));
          raw[u].s = __ldg(reinterpret_cast<const unsigned*>(a.b1) + (i >> 6));
        } else raw[u] = LlqFourBit::load32_rc(a, row, c << 5);
      }
    }
    if (!staged) {
      const int n = MODE == 0 ? (int)LlqFourBit::LUT : 16;
      for (int i = threadIdx.x; i < n; i += blockDim.x) lut[i] = LlqFourBit::lut(i);
      __syncthreads();
      staged = true;
    }
#pragma unroll
    for (int u = 0; u < UNROLL; ++u) {
      const unsigned c = c0 + 64u * u;
      if (live && c < chunks) {
        if (MODE >= 4) {
          const unsigned q[4] = {raw[u].q.x, raw[u].q.y, raw[u].q.z, raw[u].q.w};
          const char* lb = reinterpret_cast<const char*>(lut);
          float part8[MAXB];
          for (int b = 0; b < MAXB; ++b) part8[b] = 0.f;
#pragma unroll
          for (int k = 0; k < 4; ++k) {
            const unsigned hi = (q[k] >> 2) & 0x3c3c3c3cu, lo = (q[k] << 2) & 0x3c3c3c3cu;
            float w[8];
#pragma unroll
            for (int t = 0; t < 4; ++t) {
              w[2 * t] = *reinterpret_cast<const float*>(lb + ((hi >> (8 * t)) & 0xffu));
              w[2 * t + 1] = *reinterpret_cast<const float*>(lb + ((lo >> (8 * t)) & 0xffu));
            }
#pragma unroll
            for (int b = 0; b < MAXB; ++b)
              if (b < batch) llq_dot8(part8[b], w, __ldg(reinterpret_cast<const uint4*>(x + (size_t)b * cols + (c << 5) + 8 * k)));
          }
          const float s = __uint_as_float(raw[u].s);
          for (int b = 0; b < MAXB; ++b) acc[b] = fmaf(part8[b], s, acc[b]);
        } else {
          float w[32];
          if (MODE == 2) {
            const unsigned q[4] = {raw[u].q.x, raw[u].q.y, raw[u].q.z, raw[u].q.w};
            for (int t = 0; t < 32; ++t) w[t] = __uint_as_float((q[t >> 3] << (t & 7)) ^ raw[u].s);
          } else LlqFourBit::decode32(a, lut, row, c << 5, raw[u], w);
#pragma unroll
          for (int k = 0; k < 4; ++k)
#pragma unroll
            for (int b = 0; b < MAXB; ++b)
              if (b < batch) {
                if (MODE == 3) { const float* ww = w + 8 * k; for (int t = 0; t < 8; ++t) acc[b] += ww[t]; }
                else llq_dot8(acc[b], w + 8 * k, __ldg(reinterpret_cast<const uint4*>(x + (size_t)b * cols + (c << 5) + 8 * k)));
              }
        }
      }
    }
  }
  for (int b = 0; b < MAXB; ++b) {
    if (b < batch) {
      float v = acc[b];
      for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
      if (lane == 0) part[warp][b] = v;
    }
  }
  __syncthreads();
  if (threadIdx.x < 4 * MAXB) {
    const int r = threadIdx.x / MAXB, b = threadIdx.x % MAXB;
    const unsigned out = blockIdx.x * 4 + r;
    if (b < batch && out < (unsigned)a.rows) y[(size_t)b * a.rows + out] = llq_f32_to_bf16(part[2 * r][b] + part[2 * r + 1][b]);
  }
}


// Candidate: a warp per RW rows with 16-byte code loads, lane l taking the row's 32-column
// chunks l, l + 32, ... (U of them a step, all RW * U loads issued first), x loaded once per
// chunk for the RW rows, partial sums met by shuffles alone; only the 16 code entries of
// the table staged. Grid: rows / (8 * RW) blocks of 256.
template <int RW, int U, int MAXB>
__global__ void __launch_bounds__(256) k_ww(LlqArgs a, const llq_bf16* __restrict__ x, llq_bf16* __restrict__ y, int batch) {
  __shared__ float lut[16];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const unsigned r0 = (blockIdx.x * 8 + warp) * RW;
  const unsigned cols = (unsigned)a.cols, chunks = cols >> 5;
  float acc[RW][MAXB];
  for (int r = 0; r < RW; ++r) for (int b = 0; b < MAXB; ++b) acc[r][b] = 0.f;
  bool staged = false;
  for (unsigned c0 = lane; c0 - lane < chunks; c0 += 32u * U) {
    LlqFourBit::Raw32 raw[U][RW];
#pragma unroll
    for (int u = 0; u < U; ++u)
#pragma unroll
      for (int r = 0; r < RW; ++r)
        if (c0 + 32u * u < chunks && r0 + r < a.rows) raw[u][r] = LlqFourBit::load32_rc(a, r0 + r, (c0 + 32u * u) << 5);
    if (!staged) {
      if (threadIdx.x < 16) lut[threadIdx.x] = LlqFourBit::lut(threadIdx.x);
      __syncthreads();
      staged = true;
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const unsigned c = c0 + 32u * u;
      if (c < chunks) {
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          uint4 xv[MAXB];
#pragma unroll
          for (int b = 0; b < MAXB; ++b)
            if (b < batch) xv[b] = __ldg(reinterpret_cast<const uint4*>(x + (size_t)b * cols + (c << 5) + 8 * k));
#pragma unroll
          for (int r = 0; r < RW; ++r) {
            if (r0 + r < a.rows) {
              const unsigned qq = k == 0 ? raw[u][r].q.x : k == 1 ? raw[u][r].q.y : k == 2 ? raw[u][r].q.z : raw[u][r].q.w;
              const float sc = __uint_as_float(raw[u][r].s);
              float w[8];
#pragma unroll
              for (int t = 0; t < 4; ++t) {
                const unsigned byte = (qq >> (8 * t)) & 0xffu;
                w[2 * t] = __fmul_rn(lut[byte >> 4], sc);
                w[2 * t + 1] = __fmul_rn(lut[byte & 15u], sc);
              }
#pragma unroll
              for (int b = 0; b < MAXB; ++b)
                if (b < batch) llq_dot8(acc[r][b], w, xv[b]);
            }
          }
        }
      }
    }
  }
  warp_store<RW, MAXB>(acc, lane, r0, (unsigned)a.rows, y, batch);
}

#define CK(x) do { cudaError_t e = (x); if (e != cudaSuccess) { printf("%s: %s\n", #x, cudaGetErrorString(e)); exit(1); } } while (0)

struct Mat { std::vector<LlqArgs> copies; double bytes; };

static Mat make(int kind, long long rows, long long cols, int ncopies) {
  Mat m;
  size_t code = kind == 0 ? rows * cols / 2 : rows * cols * 2;
  size_t absb = kind == 0 ? rows * cols / 64 * 4 : 0;
  std::vector<unsigned char> h(code);
  for (auto& c : h) c = rand() & 0xff;
  if (kind == 1) for (size_t i = 0; i < code; i += 2) h[i + 1] = 0x3c;  // bf16 around 0.01
  std::vector<float> ab(absb / 4 + 1, 0.05f);
  for (int i = 0; i < ncopies; ++i) {
    LlqArgs a{};
    unsigned char *c, *s = nullptr;
    CK(cudaMalloc(&c, code));
    CK(cudaMemcpy(c, h.data(), code, cudaMemcpyHostToDevice));
    if (absb) { CK(cudaMalloc(&s, absb)); CK(cudaMemcpy(s, ab.data(), absb, cudaMemcpyHostToDevice)); }
    a.b0 = c; a.b1 = s; a.rows = rows; a.cols = cols; a.p0 = 64;
    m.copies.push_back(a);
  }
  m.bytes = code + absb;
  return m;
}

template <class F> static float time_us(const Mat& m, F launch) {
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0)); CK(cudaEventCreate(&e1));
  const int iters = 240;
  for (int i = 0; i < 24; ++i) launch(m.copies[i % m.copies.size()]);
  std::vector<float> t;
  for (int rep = 0; rep < 7; ++rep) {
    CK(cudaEventRecord(e0));
    for (int i = 0; i < iters; ++i) launch(m.copies[i % m.copies.size()]);
    CK(cudaEventRecord(e1)); CK(cudaEventSynchronize(e1));
    float ms; CK(cudaEventElapsedTime(&ms, e0, e1)); t.push_back(ms * 1e3f / iters);
  }
  CK(cudaGetLastError());
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

int main() {
  std::vector<unsigned> nf4(16), dyn(256, 0);
  for (int i = 0; i < 16; ++i) { float v = (i - 7.5f) / 7.5f; memcpy(&nf4[i], &v, 4); }
  CK(cudaMemcpyToSymbol(LLQ_CODE_BITS, nf4.data(), 64));
  CK(cudaMemcpyToSymbol(LLQ_DYN_BITS, dyn.data(), 1024));
  // copy bandwidth
  size_t n = 512u << 20; void *s, *d; CK(cudaMalloc(&s, n)); CK(cudaMalloc(&d, n));
  cudaEvent_t e0, e1; CK(cudaEventCreate(&e0)); CK(cudaEventCreate(&e1));
  CK(cudaMemcpy(d, s, n, cudaMemcpyDeviceToDevice));
  CK(cudaEventRecord(e0)); for (int i = 0; i < 4; ++i) CK(cudaMemcpy(d, s, n, cudaMemcpyDeviceToDevice)); CK(cudaEventRecord(e1)); CK(cudaEventSynchronize(e1));
  float ms; CK(cudaEventElapsedTime(&ms, e0, e1)); const double copy = 2.0 * n * 4 / (ms * 1e-3) / 1e9;
  CK(cudaFree(s)); CK(cudaFree(d));
  printf("copy %.0f GB/s\n", copy);
  llq_bf16 *x, *y; CK(cudaMalloc(&x, 8 * 8192 * 2)); CK(cudaMalloc(&y, 8 * 8192 * 2));
  std::vector<llq_bf16> hx(8 * 8192, 0x3c00); CK(cudaMemcpy(x, hx.data(), hx.size() * 2, cudaMemcpyHostToDevice));
  const long long shapes[3][2] = {{2048, 8192}, {8192, 2048}, {2048, 2048}};
  for (auto& sh : shapes) {
    const long long rows = sh[0], cols = sh[1];
    Mat q = make(0, rows, cols, 12), h = make(1, rows, cols, 4);
    auto row = [&](const char* name, int b, const Mat& m, float us) {
      printf("%-22s %5lldx%-5lld b%d %8.2f us %6.0f GB/s %4.0f%%\n", name, rows, cols, b, us, m.bytes / us / 1e3, 100 * m.bytes / us / 1e3 / copy);
    };
    const unsigned g4 = (unsigned)((rows + 3) / 4);
    for (int b : {1, 4, 8}) {
      auto nar = [&](const LlqArgs& a) {
        if (b == 1) k_narrow<NF4Narrow, 1><<<g4, 256>>>(a, x, y, b);
        else if (b <= 4) k_narrow<NF4Narrow, 4><<<g4, 256>>>(a, x, y, b);
        else k_narrow<NF4Narrow, 8><<<g4, 256>>>(a, x, y, b);
      };
      row("nf4 narrow (v1)", b, q, time_us(q, nar));
      auto wid = [&](const LlqArgs& a) {
        if (b == 1) k_wide<1><<<g4, 256>>>(a, x, y, b);
        else if (b <= 4) k_wide<4><<<g4, 256>>>(a, x, y, b);
        else k_wide<8><<<g4, 256>>>(a, x, y, b);
      };
      row("nf4 wide (2 warps/row)", b, q, time_us(q, wid));
#define DIAG(MODE, NAME)                                                                                  \
      {                                                                                                   \
        auto f = [&](const LlqArgs& a) {                                                                  \
          if (b == 1) k_diag<MODE, 4, 1><<<g4, 256>>>(a, x, y, b);                                         \
          else if (b <= 4) k_diag<MODE, 4, 4><<<g4, 256>>>(a, x, y, b);                                    \
          else k_diag<MODE, 4, 8><<<g4, 256>>>(a, x, y, b);                                                \
        };                                                                                                \
        row(NAME, b, q, time_us(q, f));                                                                   \
      }
      DIAG(0, "diag0 header decode32");
      DIAG(1, "diag1 16-entry table");
      DIAG(2, "diag2 no table decode");
      DIAG(3, "diag3 no x loads");
      DIAG(4, "diag4 factored, offsets");
      DIAG(5, "diag5 = 4 + no_allocate");
#define WARP(RW, U, NAME)                                                                                 \
      {                                                                                                   \
        const unsigned gw = (unsigned)((rows + 8 * RW - 1) / (8 * RW));                                   \
        auto f = [&](const LlqArgs& a) {                                                                  \
          if (b == 1) k_warp<NF4Narrow, RW, U, 1><<<gw, 256>>>(a, x, y, b);                               \
          else if (b <= 4) k_warp<NF4Narrow, RW, U, 4><<<gw, 256>>>(a, x, y, b);                          \
          else k_warp<NF4Narrow, RW, (U > 2 ? 2 : U), 8><<<gw, 256>>>(a, x, y, b);                        \
        };                                                                                                \
        row(NAME, b, q, time_us(q, f));                                                                   \
      }
#define WW(RW, U, U8, NAME)                                                                               \
      {                                                                                                   \
        const unsigned gw = (unsigned)((rows + 8 * RW - 1) / (8 * RW));                                   \
        auto f = [&](const LlqArgs& a) {                                                                  \
          if (b == 1) k_ww<RW, U, 1><<<gw, 256>>>(a, x, y, b);                                            \
          else if (b <= 4) k_ww<RW, U, 4><<<gw, 256>>>(a, x, y, b);                                       \
          else k_ww<RW, U8, 8><<<gw, 256>>>(a, x, y, b);                                                  \
        };                                                                                                \
        row(NAME, b, q, time_us(q, f));                                                                   \
      }
      WW(1, 2, 2, "ww rw1 u2");
      WW(1, 4, 2, "ww rw1 u4");
      WW(1, 8, 2, "ww rw1 u8");
      WW(2, 2, 1, "ww rw2 u2");
      WW(2, 4, 2, "ww rw2 u4");
      WW(4, 2, 1, "ww rw4 u2");
      WW(4, 1, 1, "ww rw4 u1");
      WARP(1, 8, "nf4 warp rw1 u8");
      WARP(2, 4, "nf4 warp rw2 u4");
      WARP(2, 8, "nf4 warp rw2 u8");
      WARP(4, 4, "nf4 warp rw4 u4");
      auto hb = [&](const LlqArgs& a) {
        if (b == 1) k_narrow<Bf16Rows, 1><<<g4, 256>>>(a, x, y, b);
        else if (b <= 4) k_narrow<Bf16Rows, 4><<<g4, 256>>>(a, x, y, b);
        else k_narrow<Bf16Rows, 8><<<g4, 256>>>(a, x, y, b);
      };
      row("bf16 rows narrow", b, h, time_us(h, hb));
    }
  }
  return 0;
}
