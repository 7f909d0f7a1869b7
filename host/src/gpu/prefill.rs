//! Prefill attention on the GPU (`prefill.cu`): causal grouped-query attention over a whole
//! prompt with an online softmax, so no (heads × t × t) score tensor is written. Unless
//! turned off (`$LLQ_PREFILL_ATTENTION=unfused`, see [`FlashAttention::compile`]) the eager
//! model takes it for forwards of at least [`MIN_QUERIES`] tokens (prefills, calibration
//! windows, scoring); single-token eager steps keep candle's ops, which the captured decode
//! step is checked against.

use super::nvrtc::{entry, has_mma, ptx};
use super::step::tensor_ptr;
use crate::util::env::choice as env_choice;
use anyhow::{anyhow, Context, Result};
use candle_core::cuda_backend::cudarc::driver::{CudaFunction, CudaStream, LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::CudaDevice;
use candle_core::{DType, Device, Tensor};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

const SOURCE: &str = include_str!("prefill.cu");

/// Query rows a block owns and its threads (`LLQ_FA_ROWS`, `LLQ_FA_THREADS` in prefill.cu).
const ROWS: usize = 64;
const THREADS: u32 = 128;

/// Forwards shorter than this keep the unfused path: a block owns 64 queries, so a
/// one-token step would leave 63 of them idle (and the eager step stays candle's, the
/// reference of the captured step's check).
pub const MIN_QUERIES: usize = 16;

/// The compiled kernels for one device, and whether forwards take them.
pub struct FlashAttention {
    d64: CudaFunction,
    d128: CudaFunction,
    stream: Arc<CudaStream>,
    enabled: AtomicBool,
}

impl FlashAttention {
    /// The kernels for `dev` (from the PTX cache or NVRTC; candle loads the module once per
    /// device), or `None` where `$LLQ_PREFILL_ATTENTION=unfused` asks for candle's unfused
    /// ops (the A/B baseline) and before sm_80, which has no bf16 mma. On by default since
    /// `bench/gpu_prefill.sh` checked and timed it on the H100 (bench/NOTES.md, "Fused
    /// prefill attention": logits within bf16 rounding of the unfused path, greedy tokens
    /// equal, prefill 2048 131 → 15 ms).
    pub fn compile(dev: &CudaDevice) -> Result<Option<Arc<Self>>> {
        let on = env_choice("LLQ_PREFILL_ATTENTION", true, &[("flash", true), ("unfused", false)])?;
        if !on || !has_mma(dev)? {
            return Ok(None);
        }
        let source = format!("{}\n{}", llq_sdk::cuda::HEADER, SOURCE);
        let (ptx, _origin, module) = ptx("prefill", "llq-host's prefill attention", &source, dev)?;
        let load = |name: &str| -> Result<CudaFunction> {
            entry(dev, &module, &ptx, name)
                .with_context(|| format!("prefill attention kernel `{name}` missing"))
        };
        Ok(Some(Arc::new(FlashAttention {
            d64: load("llq_prefill_attend_d64")?,
            d128: load("llq_prefill_attend_d128")?,
            stream: dev.cuda_stream(),
            enabled: AtomicBool::new(true),
        })))
    }

    /// Take (true) or leave (false) the kernels from now on: the bench's A/B against the
    /// unfused path on the same model.
    pub fn set_enabled(&self, on: bool) {
        self.enabled.store(on, Ordering::Relaxed);
    }

    /// Attention output (b, t, heads · d) of queries `q` (b, heads, t, d) after RoPE over keys
    /// and values `k`, `v` (b, kv_heads, total, d), the last t of them the queries' own,
    /// causal and never into a row's left padding (`pad`: u32, one per row, or one for all
    /// rows); `None` where this forward keeps the unfused path (disabled, fewer than
    /// [`MIN_QUERIES`] queries, a head dimension other than 64 or 128, not bf16).
    pub fn attend(&self, q: &Tensor, k: &Tensor, v: &Tensor, pad: &Tensor) -> Result<Option<Tensor>> {
        let (b, heads, t, d) = q.dims4()?;
        let (kb, kv_heads, total, kd) = k.dims4()?;
        let f = match d {
            64 => &self.d64,
            128 => &self.d128,
            _ => return Ok(None),
        };
        if !self.enabled.load(Ordering::Relaxed) || t < MIN_QUERIES || q.dtype() != DType::BF16 {
            return Ok(None);
        }
        if kb != b
            || kd != d
            || v.dims4()? != k.dims4()?
            || total < t
            || kv_heads == 0
            || heads % kv_heads != 0
        {
            anyhow::bail!(
                "prefill attention: q {:?}, k {:?}, v {:?} do not fit together",
                q.dims(),
                k.dims(),
                v.dims()
            );
        }
        let pad_stride: i32 = match pad.dims1()? {
            1 => 0,
            n if n == b => 1,
            n => anyhow::bail!("prefill attention: {n} padding counts for {b} rows"),
        };
        if !matches!(q.device(), Device::Cuda(_)) {
            return Ok(None);
        }
        let (q, k, v) = (q.contiguous()?, k.contiguous()?, v.contiguous()?);
        let qkv = [tensor_ptr(&q)?, tensor_ptr(&k)?, tensor_ptr(&v)?];
        // K and V rows are read 16 bytes at a time: a view that starts off that alignment
        // (never a fresh tensor) keeps the unfused path.
        if qkv.iter().any(|p| p % 16 != 0) {
            return Ok(None);
        }
        let out = Tensor::zeros((b, t, heads * d), DType::BF16, q.device())?;
        let ptrs = [qkv[0], qkv[1], qkv[2], tensor_ptr(&out)?, tensor_ptr(pad)?];
        let scale_log2 = (1.0 / (d as f64).sqrt() * std::f64::consts::LOG2_E) as f32;
        let dims = [t as i32, total as i32, heads as i32, kv_heads as i32, pad_stride];
        let mut l = self.stream.launch_builder(f);
        for p in &ptrs {
            l.arg(p);
        }
        for x in &dims {
            l.arg(x);
        }
        l.arg(&scale_log2);
        let cfg = LaunchConfig {
            grid_dim: (t.div_ceil(ROWS) as u32, heads as u32, b as u32),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        unsafe { l.launch(cfg) }
            .map_err(|e| anyhow!("launching the prefill attention kernel failed: {e:?}"))?;
        Ok(Some(out))
    }
}
