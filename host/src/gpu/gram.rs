//! The calibration Hessian's running sum `Σ xᵀx` on the GPU from bf16 layer inputs, by one
//! cuBLAS `GemmEx` a window: bf16 inputs, f32 compute, f32 output accumulated in place
//! (β = 1). The products of two bf16 values are exact in f32, so this is the f32 matrix
//! product the reference takes (GPTQ's `add_batch`: `inp.float()`, then `H += inp.matmul(inp.t())`,
//! TF32 off) on the same values, at tensor-core rate: at 8192 columns and 2048 rows a window
//! that product was most of calibration's `statistics` phase on the H100 (1.2 s a block of
//! Llama-3.2-1B). Opt-in until checked on a GPU (`$LLQ_HESSIAN=bf16`; the default `f32` keeps
//! the f32 product through candle), and `$LLQ_HESSIAN=check` runs both and logs their largest
//! difference.

use super::step::tensor_ptr;
use anyhow::{anyhow, bail, Result};
use candle_core::cuda_backend::cudarc::cublas::{result::gemm_ex, sys};
use candle_core::{DType, Device, Tensor};

/// How the calibration Hessian is accumulated on the GPU (`$LLQ_HESSIAN`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GramMode {
    /// bf16 inputs into an f32 sum by cuBLAS `GemmEx` (the default since the H100 check of
    /// 2026-12-07: ≤ 4.7e-6 of the largest entry from the f32 product over SmolLM2's 120 groups,
    /// results/h100/calibrated/speed/gpu-solve/hcheck.log).
    Bf16,
    /// x converted to f32, then candle's f32 product (the A/B baseline).
    F32,
    /// Both; the largest difference relative to the sum's largest entry is logged.
    Check,
}

impl GramMode {
    pub fn from_env() -> Result<Self> {
        crate::util::env::choice(
            "LLQ_HESSIAN",
            GramMode::Bf16,
            &[("bf16", GramMode::Bf16), ("f32", GramMode::F32), ("check", GramMode::Check)],
        )
    }
}

/// `acc += xᵀ · x` for `x` (n × cols, bf16, on the GPU) and `acc` (cols × cols, f32, on the
/// same GPU, contiguous, owned by the caller and read by no one else until this is done).
pub fn add_gram_bf16(x: &Tensor, acc: &Tensor) -> Result<()> {
    let (n, cols) = x.dims2()?;
    if x.dtype() != DType::BF16 || acc.dtype() != DType::F32 || acc.dims2()? != (cols, cols) {
        bail!("add_gram_bf16: x {:?} {:?} into {:?} {:?}", x.dims(), x.dtype(), acc.dims(), acc.dtype());
    }
    let Device::Cuda(cd) = x.device() else { bail!("add_gram_bf16: x is not on the GPU") };
    if n == 0 {
        return Ok(());
    }
    let x = x.contiguous()?;
    let (xp, cp) = (tensor_ptr(&x)?, tensor_ptr(acc)?);
    let blas = cd.cublas_handle();
    let (alpha, beta) = (1f32, 1f32);
    // Row-major x (n × cols) is column-major A (cols × n, lda = cols); C = A · Aᵀ is xᵀx, and
    // symmetric, so its layout does not matter.
    // SAFETY: x holds n · cols bf16 and acc cols · cols f32 on cuBLAS's stream (candle's), as
    // the arguments say; alpha and beta are host values (cuBLAS's default pointer mode).
    unsafe {
        gemm_ex(
            *blas.handle(),
            sys::cublasOperation_t::CUBLAS_OP_N,
            sys::cublasOperation_t::CUBLAS_OP_T,
            cols as i32,
            cols as i32,
            n as i32,
            &alpha as *const f32 as *const _,
            xp as *const _,
            sys::cudaDataType::CUDA_R_16BF,
            cols as i32,
            xp as *const _,
            sys::cudaDataType::CUDA_R_16BF,
            cols as i32,
            &beta as *const f32 as *const _,
            cp as *mut _,
            sys::cudaDataType::CUDA_R_32F,
            cols as i32,
            sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
            sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
        )
    }
    .map_err(|e| anyhow!("cuBLAS GemmEx for the calibration Hessian: {e:?}"))?;
    // x may be a fresh contiguous copy that is dropped now: cudarc frees on the stream
    // (`cuMemFreeAsync`, or a synchronize first), after the product has read it.
    Ok(())
}

/// The Hessian as GPTQ scales it, `2/n · Σ xᵀx`, in f64 on the host: the CPU's
/// `2.0 * v as f64 / n` operation for operation on the device (the f32 → f64 widening and × 2
/// are exact, and the division is IEEE in f64 there as here, so the bits are the CPU's), then
/// one download through the pinned halves (`super::staging`; pageable under
/// `$LLQ_STAGING=pageable`). Before, the f32 sum came down into a fresh vector and was widened
/// into another: 256 + 512 MB of fresh host memory per `down_proj` of Llama-3.2-1B.
pub fn scaled_to_host(xtx: &Tensor, n: f64) -> Result<Vec<f64>> {
    let Device::Cuda(cd) = xtx.device() else { bail!("scaled_to_host: the sum is not on the GPU") };
    let dev = xtx.device();
    let h = xtx
        .to_dtype(DType::F64)?
        .broadcast_mul(&Tensor::new(2f64, dev)?)?
        .broadcast_div(&Tensor::new(n, dev)?)?
        .flatten_all()?
        .contiguous()?;
    let stream = cd.cuda_stream();
    let mut staging =
        if super::staging::pinned_from_env()? { Some(super::staging::Staging::new(&stream)?) } else { None };
    let mut out = vec![0f64; h.elem_count()];
    // SAFETY: `h` holds out.len() f64 on this stream's device, alive past the download.
    unsafe { super::staging::copy_down(staging.as_mut(), &stream, tensor_ptr(&h)?, &mut out) }?;
    Ok(out)
}
