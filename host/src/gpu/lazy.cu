// GPTQ's lazy updates on the GPU (host/src/gpu/lazy.rs): W[:, i2..] -= E · U[i1..i2, i2..] with
// W (rows × cols), E (rows × k, k = i2 − i1) and U (cols × cols) row-major f64. Every element
// is updated as the SDK's `sub_products_in_order` does it on the CPU — v = v − e·u for t in
// order, the product and the difference each rounded (__dmul_rn/__dsub_rn are never fused
// into an FMA) — so both give the same bits.

#define LLQ_LAZY_ROWS 8   // rows a thread updates (its column, 8 rows: E's values from shared memory)
#define LLQ_LAZY_KT 64    // E's columns staged in shared memory at a time

extern "C" __global__ void llq_gptq_lazy_update(double* w, const double* e, const double* u,
                                                int rows, int cols, int i1, int i2) {
    __shared__ double es[LLQ_LAZY_ROWS][LLQ_LAZY_KT];
    const int k = i2 - i1;
    const int c = i2 + blockIdx.x * blockDim.x + threadIdx.x;
    const int r0 = blockIdx.y * LLQ_LAZY_ROWS;
    const bool col = c < cols;
    double acc[LLQ_LAZY_ROWS];
#pragma unroll
    for (int r = 0; r < LLQ_LAZY_ROWS; r++)
        acc[r] = (col && r0 + r < rows) ? w[(size_t)(r0 + r) * cols + c] : 0.0;
    for (int t0 = 0; t0 < k; t0 += LLQ_LAZY_KT) {
        const int kt = min(LLQ_LAZY_KT, k - t0);
        __syncthreads();
        for (int i = threadIdx.x; i < LLQ_LAZY_ROWS * LLQ_LAZY_KT; i += blockDim.x) {
            const int r = i / LLQ_LAZY_KT, t = i % LLQ_LAZY_KT;
            es[r][t] = (r0 + r < rows && t < kt) ? e[(size_t)(r0 + r) * k + t0 + t] : 0.0;
        }
        __syncthreads();
        if (col) {
            const double* up = u + (size_t)(i1 + t0) * cols + c;
            for (int t = 0; t < kt; t++) {
                const double b = up[(size_t)t * cols];
#pragma unroll
                for (int r = 0; r < LLQ_LAZY_ROWS; r++) acc[r] = __dsub_rn(acc[r], __dmul_rn(es[r][t], b));
            }
        }
    }
    if (col) {
#pragma unroll
        for (int r = 0; r < LLQ_LAZY_ROWS; r++)
            if (r0 + r < rows) w[(size_t)(r0 + r) * cols + c] = acc[r];
    }
}

// out (rows × width, row-major) := W[:, c0..c0 + width].
extern "C" __global__ void llq_gptq_lazy_gather(const double* w, double* out, int rows, int cols, int c0,
                                                int width) {
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)rows * width) return;
    const size_t r = i / width, j = i % width;
    out[i] = w[r * cols + c0 + j];
}
