//! The eager model's fused GPU kernels for forwards over many tokens (prefills, calibration
//! windows, scoring), in `prefill.cu` after the shared `pointwise.cu`:
//! - causal grouped-query attention with an online softmax, so no (heads × t × t) score
//!   tensor is written (`$LLQ_PREFILL_ATTENTION=flash|unfused`, on by default);
//! - the q/k/v split into heads with RoPE in one pass, and SwiGLU in one pass
//!   (`$LLQ_PREFILL_POINTWISE=fused|unfused`, on by default since the H100 call of
//!   bench/NOTES.md, "Prefill: the q/k/v split with RoPE and SwiGLU fused": 2048-token
//!   prefill 13.7 → 11.1 ms, greedy tokens equal; they round as candle's kernels do on the GPU).
//!
//! Forwards of fewer than [`MIN_QUERIES`] tokens keep candle's ops: single-token eager steps
//! are the reference the captured decode step is checked against.

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

/// The compiled kernels for one device, and which of them forwards take.
pub struct PrefillKernels {
    d64: CudaFunction,
    d128: CudaFunction,
    split_rope: CudaFunction,
    swiglu: CudaFunction,
    stream: Arc<CudaStream>,
    attention: AtomicBool,
    pointwise: AtomicBool,
}

impl PrefillKernels {
    /// The kernels for `dev` (from the PTX cache or NVRTC; candle loads the module once per
    /// device), or `None` before sm_80, which has no bf16 mma. The attention is on unless
    /// `$LLQ_PREFILL_ATTENTION=unfused` (the A/B baseline): `bench/gpu_prefill.sh` checked
    /// and timed it on the H100 (bench/NOTES.md, "Fused prefill attention": logits within
    /// bf16 rounding of the unfused path, greedy tokens equal, prefill 2048 131 → 15 ms).
    /// The element-wise fusions are on unless `$LLQ_PREFILL_POINTWISE=unfused`.
    pub fn compile(dev: &CudaDevice) -> Result<Option<Arc<Self>>> {
        let attention = env_choice("LLQ_PREFILL_ATTENTION", true, &[("flash", true), ("unfused", false)])?;
        let pointwise = env_choice("LLQ_PREFILL_POINTWISE", true, &[("fused", true), ("unfused", false)])?;
        if !has_mma(dev)? {
            return Ok(None);
        }
        let source = format!("{}\n{}\n{}", llq_sdk::cuda::HEADER, super::pointwise::SOURCE, SOURCE);
        let (ptx, _origin, module) = ptx("prefill", "llq-host's prefill kernels", &source, dev)?;
        let load = |name: &str| -> Result<CudaFunction> {
            entry(dev, &module, &ptx, name).with_context(|| format!("prefill kernel `{name}` missing"))
        };
        Ok(Some(Arc::new(PrefillKernels {
            d64: load("llq_prefill_attend_d64")?,
            d128: load("llq_prefill_attend_d128")?,
            split_rope: load("llq_prefill_split_rope")?,
            swiglu: load("llq_swiglu")?,
            stream: dev.cuda_stream(),
            attention: AtomicBool::new(attention),
            pointwise: AtomicBool::new(pointwise),
        })))
    }

    /// Which kernels forwards take: (attention, element-wise).
    pub fn enabled(&self) -> (bool, bool) {
        (self.attention.load(Ordering::Relaxed), self.pointwise.load(Ordering::Relaxed))
    }

    /// Take (true) or leave (false) the attention and the element-wise kernels from now on:
    /// the bench's A/Bs against candle's ops on the same model.
    pub fn set_enabled(&self, attention: bool, pointwise: bool) {
        self.attention.store(attention, Ordering::Relaxed);
        self.pointwise.store(pointwise, Ordering::Relaxed);
    }

    /// Whether this forward of `t` tokens of `dtype` takes the element-wise kernels.
    fn pointwise_for(&self, t: usize, dtype: DType) -> bool {
        self.pointwise.load(Ordering::Relaxed) && t >= MIN_QUERIES && dtype == DType::BF16
    }

    /// The projections' outputs `q` (b, t, heads · d), `k` and `v` (b, t, kv_heads · d) as the
    /// attention reads them: q (b, heads, t, d) and k (b, kv_heads, t, d) after RoPE with
    /// `cos`/`sin` (1 or b, t, d/2), v (b, kv_heads, t, d). `None` where this forward keeps
    /// candle's ops (disabled, fewer than [`MIN_QUERIES`] tokens, not bf16, an odd head
    /// dimension, tables of another shape).
    pub fn split_rope(
        &self,
        (q, k, v): (&Tensor, &Tensor, &Tensor),
        (cos, sin): (&Tensor, &Tensor),
        heads: usize,
        kv_heads: usize,
    ) -> Result<Option<(Tensor, Tensor, Tensor)>> {
        let (b, t, qw) = q.dims3()?;
        if !self.pointwise_for(t, q.dtype())
            || heads == 0
            || qw % heads != 0
            || !matches!(q.device(), Device::Cuda(_))
        {
            return Ok(None);
        }
        let d = qw / heads;
        // Tables of another rank (or any shape this kernel does not index) keep candle's path.
        let (Ok((cb, ct, half)), Ok(sdims), Ok(kdims), Ok(vdims)) =
            (cos.dims3(), sin.dims3(), k.dims3(), v.dims3())
        else {
            return Ok(None);
        };
        if kdims != (b, t, kv_heads * d)
            || vdims != kdims
            || [k.dtype(), v.dtype(), cos.dtype(), sin.dtype()].iter().any(|&x| x != DType::BF16)
            || sdims != (cb, ct, half)
            || (cb != 1 && cb != b)
            || ct != t
            || half * 2 != d
        {
            return Ok(None);
        }
        let (q, k, v, cos, sin) =
            (q.contiguous()?, k.contiguous()?, v.contiguous()?, cos.contiguous()?, sin.contiguous()?);
        let dev = q.device();
        // SAFETY: the kernel writes every element of the three outputs (one block per token
        // and row, every head's pairs and every v element of that token) before they are read.
        let (qo, ko, vo) = unsafe {
            (
                Tensor::empty((b, heads, t, d), DType::BF16, dev)?,
                Tensor::empty((b, kv_heads, t, d), DType::BF16, dev)?,
                Tensor::empty((b, kv_heads, t, d), DType::BF16, dev)?,
            )
        };
        let ptrs = [&q, &k, &v, &cos, &sin, &qo, &ko, &vo]
            .map(tensor_ptr)
            .into_iter()
            .collect::<Result<Vec<_>>>()?;
        let dims = [t as i32, heads as i32, kv_heads as i32, d as i32];
        let cs_stride: i64 = if cb == 1 { 0 } else { (t * half) as i64 };
        let mut l = self.stream.launch_builder(&self.split_rope);
        for p in &ptrs {
            l.arg(p);
        }
        for x in &dims {
            l.arg(x);
        }
        l.arg(&cs_stride);
        let cfg =
            LaunchConfig { grid_dim: (t as u32, b as u32, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
        unsafe { l.launch(cfg) }
            .map_err(|e| anyhow!("launching the prefill q/k/v RoPE kernel failed: {e:?}"))?;
        Ok(Some((qo, ko, vo)))
    }

    /// silu(g) · u of the gate and up projections' outputs (b, t, n), or `None` where this
    /// forward keeps candle's ops.
    pub fn swiglu(&self, g: &Tensor, u: &Tensor) -> Result<Option<Tensor>> {
        let (_, t, _) = g.dims3()?;
        if !self.pointwise_for(t, g.dtype())
            || u.dtype() != DType::BF16
            || u.dims() != g.dims()
            || !matches!(g.device(), Device::Cuda(_))
        {
            return Ok(None);
        }
        let (g, u) = (g.contiguous()?, u.contiguous()?);
        // SAFETY: the grid-stride loop writes every element of `out` before it is read.
        let out = unsafe { Tensor::empty(g.shape(), DType::BF16, g.device())? };
        let n = g.elem_count() as i64;
        let ptrs = [tensor_ptr(&g)?, tensor_ptr(&u)?, tensor_ptr(&out)?];
        let mut l = self.stream.launch_builder(&self.swiglu);
        l.arg(&ptrs[0]).arg(&ptrs[1]).arg(&ptrs[2]).arg(&n);
        // 8 elements a thread where aligned; enough blocks to fill the device, the loop strides.
        let blocks = (g.elem_count().div_ceil(8 * 256)).clamp(1, 4096) as u32;
        let cfg = LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
        unsafe { l.launch(cfg) }.map_err(|e| anyhow!("launching the prefill SwiGLU kernel failed: {e:?}"))?;
        Ok(Some(out))
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
        if !self.attention.load(Ordering::Relaxed) || t < MIN_QUERIES || q.dtype() != DType::BF16 {
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
        // SAFETY: the grid covers every (query tile, head, row) and each warp writes all d
        // values of its 16 queries that are < t (a padding query attends to itself, so no row
        // sum is zero): every element is written before it is read.
        let out = unsafe { Tensor::empty((b, t, heads * d), DType::BF16, q.device())? };
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
