// The reversals and the identity of GPTQ's factorization on the GPU (host/src/gpu/solve.rs), so
// the n² values cross PCIe once each way and the host touches them only there (the route of
// llq_sdk::quant::linalg::inverse_upper_cholesky_by). One thread an element, n ≤ 46340.

// out[k] := in[n² − 1 − k]: R = J h J, h row-major, is h's buffer reversed.
extern "C" __global__ void llq_solve_reverse(const double* in, double* out, int n) {
    const size_t len = (size_t)n * n, k = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (k < len) out[k] = in[len - 1 - k];
}

// y := I (n × n).
extern "C" __global__ void llq_solve_eye(double* y, int n) {
    const size_t k = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (k < (size_t)n * n) y[k] = (k / n == k % n) ? 1.0 : 0.0;
}

// u (row-major) := V⁻¹'s column-major buffer `y` reversed, zero below the diagonal.
extern "C" __global__ void llq_solve_reverse_upper(const double* y, double* u, int n) {
    const size_t len = (size_t)n * n, k = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (k < len) u[k] = (k % n < k / n) ? 0.0 : y[len - 1 - k];
}
