//! The decode step's own kernels (`step.cu`): embedding lookup, fused residual add +
//! RMSNorm, RoPE with the KV-cache write, single-query attention over a static cache, SwiGLU,
//! and the on-device greedy argmax that advances the step — each launched on raw device
//! pointers, so a whole step can be captured as a CUDA graph. The dense bf16 matvec for
//! unquantized layers and the lm_head comes from the same source, through the SDK's driver.
//! What a step is made of (the model's layers) is the model's concern (`model::graph`).

use super::launch::Launch;
use super::linear::MatvecTarget;
use super::nvrtc::{entry, has_mma, has_programmatic_launch, mma_min_batch, ptx, Edges, Kernels};
use crate::util::env::choice as env_choice;
use anyhow::{bail, Context, Result};
use candle_core::cuda_backend::cudarc::driver::{CudaFunction, CudaStream, DevicePtr, LaunchConfig};
use candle_core::cuda_backend::CudaDevice;
use candle_core::{DType, Storage, Tensor};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;

const SOURCE: &str = include_str!("step.cu");

/// Threads of one attention block (`LLQ_ATT_THREADS` in step.cu) and its warps.
pub const ATTEND_THREADS: usize = 256;
const ATTEND_WARPS: usize = ATTEND_THREADS / 32;
/// Dynamic shared memory every launch may use without opting in (48 KiB).
const DEFAULT_SHARED: usize = 48 * 1024;

/// Blocks from which the grouped attention kernel is taken by default. On the H100 (132
/// SMs), synthetic Llama-3.2-1B at context 128 (8 kv heads): grouped vs per head 823 vs 1567
/// µs a step at batch 64 (512 blocks), 409 vs 463 at 16 (128 blocks), but 404 vs 252 at
/// batch 1-4 (8-32 blocks), and SmolLM2-135M's shapes (3 kv heads) lost at batch 16 (48
/// blocks, 645 vs 462): with fewer blocks than about one per SM, the per-head kernel's 4×
/// more blocks win (results/h100/speed13/mma/attention).
const GROUPED_MIN_BLOCKS: usize = 128;

/// Which attention kernel the step launches: `Auto` (grouped from [`GROUPED_MIN_BLOCKS`]
/// blocks where its shared memory fits, else per head), `Grouped` (one block per kv head and
/// row, for the query heads that share it, wherever it fits) or `PerHead` (one block per
/// query head and row: `llq_step_attend_v3` where the head dimension is a power of two, else
/// the v2 kernel), `PerHeadV2` (always the v2 kernel, for A/B runs), by `$LLQ_ATTENTION`
/// (`auto` | `grouped` | `per-head` | `per-head-v2`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Attention {
    Auto,
    Grouped,
    PerHead,
    PerHeadV2,
}

impl Attention {
    const NAMES: [(&'static str, Attention); 4] = [
        ("auto", Attention::Auto),
        ("grouped", Attention::Grouped),
        ("per-head", Attention::PerHead),
        ("per-head-v2", Attention::PerHeadV2),
    ];

    fn from_env() -> Result<Self> {
        env_choice("LLQ_ATTENTION", Attention::Auto, &Self::NAMES)
    }

    fn code(self) -> u8 {
        Self::NAMES.iter().position(|(_, a)| *a == self).unwrap_or(0) as u8
    }

    fn from_code(c: u8) -> Self {
        Self::NAMES.get(c as usize).map(|(_, a)| *a).unwrap_or(Attention::Auto)
    }
}

/// The attention kernel one launch takes ([`StepKernels::attention_kernel`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AttentionKernel {
    /// One block per (kv head, row), with this many bytes of dynamic shared memory.
    Grouped(usize),
    /// One block per (head, row): `llq_step_attend_v3`.
    PerHeadV3,
    /// One block per (head, row): `llq_step_attend` (v2).
    PerHeadV2,
}

impl AttentionKernel {
    pub fn describe(self) -> &'static str {
        match self {
            AttentionKernel::Grouped(_) => "grouped",
            AttentionKernel::PerHeadV3 => "per head, v3",
            AttentionKernel::PerHeadV2 => "per head, v2",
        }
    }
}

/// The head dimensions `llq_step_attend_v3` takes: d / 8 divides a warp.
fn v3_head_dim(d: usize) -> bool {
    matches!(d, 8 | 16 | 32 | 64 | 128)
}

/// Programmatic dependent launch in the captured step, by `$LLQ_PDL`: `auto` (the default:
/// on for batches up to [`PROGRAMMATIC_MAX_BATCH`]), `on`, `off`; never before sm_90.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Programmatic {
    Auto,
    On,
    Off,
}

impl Programmatic {
    fn from_env() -> Result<Self> {
        use Programmatic::*;
        env_choice("LLQ_PDL", Auto, &[("auto", Auto), ("on", On), ("off", Off)])
    }

    /// Whether a step of `batch` rows launches programmatically under this setting.
    pub fn wanted(self, batch: usize) -> bool {
        match self {
            Programmatic::Auto => batch <= PROGRAMMATIC_MAX_BATCH,
            Programmatic::On => true,
            Programmatic::Off => false,
        }
    }
}

/// The largest batch `auto` launches programmatically. On the H100 (synthetic Llama-3.2-1B,
/// context 128, interleaved paired A/B, every difference's 95% interval clear of 0): batch 1
/// gained 0.08 ms a step with NF4, 0.12 with bf16 and RTN-4; batch 4 0.02-0.03 ms; batch 16
/// lost 0.01-0.06 ms and NF4 at batch 64 lost 0.27 ms (results/h100/speed13/pdl). Batches 5-15
/// were not measured.
pub const PROGRAMMATIC_MAX_BATCH: usize = 4;

/// The head dimensions the attention kernel takes: multiples of 8 (16-byte key loads) up to
/// 128 (its shared query and partial sums).
pub fn head_dim_supported(d: usize) -> bool {
    d > 0 && d.is_multiple_of(8) && d <= 128
}

/// The step kernels, compiled and loaded on one device.
pub struct StepKernels {
    embed: CudaFunction,
    add_rmsnorm: CudaFunction,
    rope_append: CudaFunction,
    attend: CudaFunction,
    /// One block per (kv head, row) for the query heads sharing it ([`Attention::Grouped`]).
    attend_gqa: CudaFunction,
    attend_v3: CudaFunction,
    /// v3 with RoPE and the cache write folded in, taken where v3 is when
    /// `$LLQ_STEP_ROPE=folded` (or [`Self::set_fold_rope`]) asks for it. Off by default until
    /// a GPU has measured it (written 2026-12-07; the device was not lent again that day).
    rope_attend_v3: CudaFunction,
    fold_rope: AtomicBool,
    /// Whether a step at batch 1 folds its RMSNorms and residual adds into the matvecs
    /// (header v1.6 entries, where every matrix's module has them): `$LLQ_STEP_NORM=fused`
    /// or [`Self::set_fold_norm`]. Off by default until a GPU has measured it (written
    /// 2026-12-07, seventh session).
    fold_norm: AtomicBool,
    /// With the norms folded: gate and up in one launch that writes silu(gate)·up, no SwiGLU
    /// kernel (`$LLQ_STEP_GLU=fused`, [`Self::set_fold_glu`]; off by default until measured).
    fold_glu: AtomicBool,
    /// [`Attention`] as its code (settable for A/B runs).
    attention: AtomicU8,
    /// Whether matrices reading the same input share one launch (`launch_multi`);
    /// `$LLQ_FUSED_MATVEC=0` turns it off for A/B runs.
    fused_matvec: bool,
    swiglu: CudaFunction,
    argmax: CudaFunction,
    /// The argmax over several blocks a row (`$LLQ_ARGMAX_BLOCKS` > 1).
    argmax_split: CudaFunction,
    /// Blocks per row of the argmax (`$LLQ_ARGMAX_BLOCKS`; settable for A/B runs).
    argmax_blocks: AtomicUsize,
    /// Whether the step's kernels, and the matvecs whose modules allow it, are launched as
    /// programmatic dependents of the kernel before ([`super::launch`]); never before sm_90.
    programmatic: AtomicBool,
    supports_programmatic: bool,
    programmatic_mode: Programmatic,
    /// The dense bf16 rows matvec, as a method's kernels (convention v1 entry points).
    rows: Arc<Kernels>,
    /// The same with the 1-row entries at UNROLL 1 (`llq_bf16rows_u1_*`), for lm_head.
    rows_u1: Arc<Kernels>,
    /// Whether lm_head takes [`Self::rows_u1`] (`$LLQ_LM_HEAD_UNROLL=1`; 4, the default, not).
    lm_head_u1: AtomicBool,
    stream: Arc<CudaStream>,
}

fn grid(x: usize, y: usize, threads: usize, shared: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (x as u32, y as u32, 1),
        block_dim: (threads as u32, 1, 1),
        shared_mem_bytes: shared as u32,
    }
}

/// The device address of a contiguous tensor's first element (CUDA storage only). Valid
/// while the tensor's storage lives; llq keeps one stream and no per-buffer events, so the
/// pointer needs no synchronization guard.
pub fn tensor_ptr(t: &Tensor) -> Result<u64> {
    if !t.is_contiguous() {
        bail!("a decode-step buffer must be contiguous");
    }
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cuda(cs) = &*storage else { bail!("a decode-step buffer must be on the GPU") };
    let stream = cs.device.cuda_stream();
    let (base, size) = match t.dtype() {
        DType::BF16 => (cs.as_cuda_slice::<half::bf16>()?.device_ptr(&stream).0, 2),
        DType::U32 => (cs.as_cuda_slice::<u32>()?.device_ptr(&stream).0, 4),
        DType::F32 => (cs.as_cuda_slice::<f32>()?.device_ptr(&stream).0, 4),
        DType::F64 => (cs.as_cuda_slice::<f64>()?.device_ptr(&stream).0, 8),
        d => bail!("no decode-step buffers of {d:?}"),
    };
    Ok(base + (layout.start_offset() * size) as u64)
}

impl StepKernels {
    pub fn compile(dev: &CudaDevice) -> Result<Arc<Self>> {
        let source = format!("{}\n{}\n{}", llq_sdk::cuda::HEADER, super::pointwise::SOURCE, SOURCE);
        let (ptx, origin, module) = ptx("step", "llq-host's decode-step kernels", &source, dev)?;
        let load = |name: &str| -> Result<CudaFunction> {
            entry(dev, &module, &ptx, name).with_context(|| format!("decode-step kernel `{name}` missing"))
        };
        let (mma, pdl) = (has_mma(dev)?, has_programmatic_launch(dev)?);
        let mode = Programmatic::from_env()?;
        let rows = Arc::new(Kernels {
            method: "bf16 (dense layers)".to_string(),
            dequantize: load("llq_bf16rows_dequantize")?,
            matvec: Some(load("llq_bf16rows_matvec")?),
            matvec_b1: Some(load("llq_bf16rows_matvec_b1")?),
            matvec_b4: Some(load("llq_bf16rows_matvec_b4")?),
            matvec_mma: if mma { Some(load("llq_bf16rows_matvec_mma")?) } else { None },
            matvec_mma16: if mma { Some(load("llq_bf16rows_matvec_mma16")?) } else { None },
            matvec_b1_x3: Some(load("llq_bf16rows_matvec_b1_x3")?),
            matvec_mma16_x3: if mma { Some(load("llq_bf16rows_matvec_mma16_x3")?) } else { None },
            matvec_mma_x3: if mma { Some(load("llq_bf16rows_matvec_mma_x3")?) } else { None },
            pdl: load("llq_bf16rows_matvec_pdl").is_ok(),
            edges: Some(Edges {
                norm: load("llq_bf16rows_matvec_b1_norm")?,
                norm_x3: load("llq_bf16rows_matvec_b1_x3_norm")?,
                res: load("llq_bf16rows_matvec_b1_res")?,
                glu_norm: load("llq_bf16rows_matvec_b1_glu_norm")?,
            }),
            mma_min_batch: mma_min_batch()?,
            params: vec![],
            origin,
        });
        // The dense rows with their two UNROLL-1 entries in place of the 1-row ones.
        let rows_u1 = Arc::new(Kernels {
            method: "bf16 (dense layers, 1-row entries at UNROLL 1)".to_string(),
            matvec_b1: Some(load("llq_bf16rows_u1_matvec_b1")?),
            edges: match &rows.edges {
                Some(e) => Some(Edges { norm: load("llq_bf16rows_u1_matvec_b1_norm")?, ..e.clone() }),
                None => None,
            },
            ..Kernels::clone(&rows)
        });
        Ok(Arc::new(StepKernels {
            embed: load("llq_step_embed")?,
            add_rmsnorm: load("llq_step_add_rmsnorm")?,
            rope_append: load("llq_step_rope_append")?,
            attend: load("llq_step_attend")?,
            attend_gqa: load("llq_step_attend_gqa")?,
            attend_v3: load("llq_step_attend_v3")?,
            rope_attend_v3: load("llq_step_rope_attend_v3")?,
            fold_rope: AtomicBool::new(env_choice(
                "LLQ_STEP_ROPE",
                false,
                &[("folded", true), ("separate", false)],
            )?),
            fold_norm: AtomicBool::new(env_choice(
                "LLQ_STEP_NORM",
                false,
                &[("fused", true), ("separate", false)],
            )?),
            fold_glu: AtomicBool::new(env_choice(
                "LLQ_STEP_GLU",
                false,
                &[("fused", true), ("separate", false)],
            )?),
            attention: AtomicU8::new(Attention::from_env()?.code()),
            fused_matvec: env_choice("LLQ_FUSED_MATVEC", true, &[("1", true), ("0", false)])?,
            swiglu: load("llq_swiglu")?,
            argmax: load("llq_step_argmax_advance")?,
            argmax_split: load("llq_step_argmax_split")?,
            argmax_blocks: AtomicUsize::new(argmax_blocks()?),
            programmatic: AtomicBool::new(pdl && mode != Programmatic::Off),
            supports_programmatic: pdl,
            programmatic_mode: mode,
            rows,
            rows_u1,
            lm_head_u1: AtomicBool::new(env_choice(
                "LLQ_LM_HEAD_UNROLL",
                false,
                &[("1", true), ("4", false)],
            )?),
            stream: dev.cuda_stream(),
        }))
    }

    /// A dense bf16 matrix (rows, cols) stored row-major at `w` as a matvec target.
    pub fn dense(&self, w: u64, rows: usize, cols: usize) -> MatvecTarget {
        MatvecTarget::new(self.rows.clone(), [w, 0, 0, 0], rows, cols, [0; 4])
    }

    /// A dense lm_head (rows, cols) at `w`: [`Self::dense`], on the UNROLL-1 entries where
    /// `$LLQ_LM_HEAD_UNROLL=1` (or [`Self::set_lm_head_u1`]) asks for them.
    pub fn dense_lm_head(&self, w: u64, rows: usize, cols: usize) -> MatvecTarget {
        let k = if self.lm_head_u1() { &self.rows_u1 } else { &self.rows };
        MatvecTarget::new(k.clone(), [w, 0, 0, 0], rows, cols, [0; 4])
    }

    /// Whether a dense lm_head takes the UNROLL-1 entries.
    pub fn lm_head_u1(&self) -> bool {
        self.lm_head_u1.load(Ordering::Relaxed)
    }

    /// Take the UNROLL-1 entries for a dense lm_head or not (A/B runs: the decoder builds its
    /// lm_head target anew).
    pub fn set_lm_head_u1(&self, on: bool) {
        self.lm_head_u1.store(on, Ordering::Relaxed);
    }

    /// What `$LLQ_PDL` asked for.
    pub fn programmatic_mode(&self) -> Programmatic {
        self.programmatic_mode
    }

    /// Whether launches are programmatic dependents of the kernel before (where allowed).
    pub fn programmatic(&self) -> bool {
        self.programmatic.load(Ordering::Relaxed)
    }

    /// Turn programmatic launches on or off (for A/B runs; a captured graph keeps what it
    /// was captured with). Off wherever the device lacks them (before sm_90).
    pub fn set_programmatic(&self, on: bool) {
        self.programmatic.store(on && self.supports_programmatic, Ordering::Relaxed);
    }

    /// The attention kernel choice ([`Attention`]).
    pub fn attention(&self) -> Attention {
        Attention::from_code(self.attention.load(Ordering::Relaxed))
    }

    /// Choose the attention kernel (for A/B runs; a captured graph keeps what it was
    /// captured with).
    pub fn set_attention(&self, a: Attention) {
        self.attention.store(a.code(), Ordering::Relaxed);
    }

    /// Blocks per row of the greedy argmax.
    pub fn argmax_blocks(&self) -> usize {
        self.argmax_blocks.load(Ordering::Relaxed)
    }

    /// Set the argmax's blocks per row (1 to 32; A/B runs; a captured graph keeps what it
    /// was captured with).
    pub fn set_argmax_blocks(&self, n: usize) {
        self.argmax_blocks.store(n.clamp(1, ARGMAX_MAX_BLOCKS), Ordering::Relaxed);
    }

    /// Whether a step of these shapes folds RoPE and the cache write into its attention
    /// launch ([`Self::rope_attend`]): where it takes the v3 kernel and folding is on.
    pub fn folds_rope(&self, heads: usize, kvh: usize, d: usize, cap: usize, batch: usize) -> bool {
        self.fold_rope() && self.attention_kernel(heads, kvh, d, cap, batch) == AttentionKernel::PerHeadV3
    }

    /// Whether folding the norms and residual adds into the 1-row matvecs is asked for.
    pub fn fold_norm(&self) -> bool {
        self.fold_norm.load(Ordering::Relaxed)
    }

    /// Fold the norms into the matvecs or not (for A/B runs; a captured graph keeps what it
    /// was captured with).
    pub fn set_fold_norm(&self, on: bool) {
        self.fold_norm.store(on, Ordering::Relaxed);
    }

    /// Whether gate, up and SwiGLU in one launch is asked for (where the norms are folded).
    pub fn fold_glu(&self) -> bool {
        self.fold_glu.load(Ordering::Relaxed)
    }

    /// Gate, up and SwiGLU in one launch or not (A/B runs).
    pub fn set_fold_glu(&self, on: bool) {
        self.fold_glu.store(on, Ordering::Relaxed);
    }

    /// Whether folding RoPE into the v3 attention is asked for.
    pub fn fold_rope(&self) -> bool {
        self.fold_rope.load(Ordering::Relaxed)
    }

    /// Fold RoPE into the v3 attention or not (A/B runs; a captured graph keeps what it was
    /// captured with).
    pub fn set_fold_rope(&self, on: bool) {
        self.fold_rope.store(on, Ordering::Relaxed);
    }

    /// What [`Self::rope_append`] then [`Self::attend`] do, in one launch of the v3 kernel
    /// (only where [`Self::folds_rope`]).
    pub fn rope_attend(&self, ra: &RopeArgs, a: &AttendArgs, batch: usize) -> Result<()> {
        let mut b = self.launch(&self.rope_attend_v3);
        b.arg(ra.q).arg(ra.k).arg(ra.v).arg(ra.kc).arg(ra.vc).arg(ra.cos).arg(ra.sin).arg(ra.pos);
        b.arg(a.out).arg(a.pad).arg(a.slot);
        b.arg(a.heads).arg(a.kv_heads).arg(a.d).arg(a.cap).arg(a.scale);
        let cfg = grid(a.heads as usize, batch, ATTEND_THREADS, a.cap as usize * 4);
        // SAFETY: llq_step_rope_attend_v3(ptr ×11, int ×4, float); the caller's buffers are
        // those the two separate launches take.
        unsafe { b.run(cfg, "decode step's RoPE + attention") }
    }

    /// The attention kernel a step of these shapes launches under the current choice.
    pub fn attention_kernel(
        &self,
        heads: usize,
        kvh: usize,
        d: usize,
        cap: usize,
        batch: usize,
    ) -> AttentionKernel {
        let g = if kvh > 0 && heads.is_multiple_of(kvh) { heads / kvh } else { 0 };
        let grouped_shared = 4 * (g * d + (g * cap).max(ATTEND_WARPS * g * d));
        let attention = self.attention();
        let wanted = match attention {
            Attention::Auto => kvh * batch >= GROUPED_MIN_BLOCKS,
            Attention::Grouped => true,
            Attention::PerHead | Attention::PerHeadV2 => false,
        };
        if wanted && (1..=ATTEND_WARPS).contains(&g) && grouped_shared <= DEFAULT_SHARED {
            AttentionKernel::Grouped(grouped_shared)
        } else if attention != Attention::PerHeadV2 && v3_head_dim(d) {
            AttentionKernel::PerHeadV3
        } else {
            AttentionKernel::PerHeadV2
        }
    }

    /// Launch `f` from this step (programmatic where turned on).
    fn launch<'a>(&'a self, f: &'a CudaFunction) -> Launch<'a> {
        Launch::new(&self.stream, f).programmatic(self.programmatic())
    }

    /// Whether the step fuses the launches of matrices that read the same input.
    pub fn fused_matvec(&self) -> bool {
        self.fused_matvec
    }

    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// x[r] = table[tokens[r]] for `batch` rows of `n`.
    pub fn embed(&self, table: u64, tokens: u64, x: u64, batch: usize, n: usize) -> Result<()> {
        let n32 = n as i32;
        let mut b = self.launch(&self.embed);
        b.arg(table).arg(tokens).arg(x).arg(n32);
        // SAFETY: step.cu's llq_step_embed(ptr, ptr, ptr, int); buffers sized by the step.
        unsafe { b.run(grid(batch, 1, 256, 0), "decode step's embedding") }
    }

    /// With `add` (non-zero): x += add (bf16). Then out = rmsnorm(x) · w.
    #[allow(clippy::too_many_arguments)]
    pub fn add_rmsnorm(
        &self,
        x: u64,
        add: u64,
        w: u64,
        out: u64,
        batch: usize,
        n: usize,
        eps: f32,
    ) -> Result<()> {
        let n32 = n as i32;
        let mut b = self.launch(&self.add_rmsnorm);
        b.arg(x).arg(add).arg(w).arg(out).arg(n32).arg(eps);
        // SAFETY: llq_step_add_rmsnorm(ptr ×4, int, float).
        unsafe { b.run(grid(batch, 1, 256, 0), "decode step's add + RMSNorm") }
    }

    /// RoPE on q (in place) and k at each row's position; k and v into the caches at the slot.
    pub fn rope_append(&self, a: &RopeArgs, batch: usize) -> Result<()> {
        let mut b = self.launch(&self.rope_append);
        b.arg(a.q).arg(a.k).arg(a.v).arg(a.kc).arg(a.vc).arg(a.cos).arg(a.sin).arg(a.pos).arg(a.slot);
        b.arg(a.heads).arg(a.kv_heads).arg(a.d).arg(a.cap);
        // SAFETY: llq_step_rope_append(ptr ×9, int ×4).
        unsafe { b.run(grid(batch, 1, 256, 0), "decode step's RoPE + cache write") }
    }

    /// out (batch, heads·d) = attention of q over the caches up to the slot: the grouped
    /// kernel where [`Attention`] asks for it and its shared memory fits the launch default,
    /// else one block per head.
    pub fn attend(&self, a: &AttendArgs, batch: usize) -> Result<()> {
        let (heads, kvh, d, cap) = (a.heads as usize, a.kv_heads as usize, a.d as usize, a.cap as usize);
        let (f, cfg) = match self.attention_kernel(heads, kvh, d, cap, batch) {
            AttentionKernel::Grouped(shared) => (&self.attend_gqa, grid(kvh, batch, ATTEND_THREADS, shared)),
            AttentionKernel::PerHeadV3 => (&self.attend_v3, grid(heads, batch, ATTEND_THREADS, cap * 4)),
            AttentionKernel::PerHeadV2 => (&self.attend, grid(heads, batch, ATTEND_THREADS, cap * 4)),
        };
        let mut b = self.launch(f);
        b.arg(a.q).arg(a.kc).arg(a.vc).arg(a.out).arg(a.pad).arg(a.slot);
        b.arg(a.heads).arg(a.kv_heads).arg(a.d).arg(a.cap).arg(a.scale);
        // SAFETY: both attention kernels take (ptr ×6, int ×4, float).
        unsafe { b.run(cfg, "decode step's attention") }
    }

    /// out = silu(g) · u over n elements.
    pub fn swiglu(&self, g: u64, u: u64, out: u64, n: usize) -> Result<()> {
        let n64 = n as i64;
        let mut b = self.launch(&self.swiglu);
        b.arg(g).arg(u).arg(out).arg(n64);
        // SAFETY: llq_swiglu(ptr ×3, long long).
        unsafe { b.run(grid(n.div_ceil(256).min(1024), 1, 256, 0), "decode step's SwiGLU") }
    }

    /// The greedy token of each row into `tokens` and `out`; positions and the slot advance.
    pub fn argmax_advance(&self, logits: u64, vocab: usize, s: &StepState, batch: usize) -> Result<()> {
        let v = vocab as i64;
        let blocks = self.argmax_blocks();
        let mut b = self.launch(if blocks > 1 { &self.argmax_split } else { &self.argmax });
        b.arg(logits).arg(v).arg(s.tokens).arg(s.out).arg(s.pos).arg(s.slot);
        if blocks > 1 {
            b.arg(s.scratch);
        }
        // The one-block kernel takes a row per block (x), the split one a row per y.
        let cfg = if blocks > 1 { grid(blocks, batch, 1024, 0) } else { grid(batch, 1, 1024, 0) };
        // SAFETY: llq_step_argmax_advance(ptr, long long, ptr ×4), llq_step_argmax_split the
        // same and the scratch (ARGMAX_SCRATCH u32 a row, zeroed once: the kernel resets its
        // counter).
        unsafe { b.run(cfg, "decode step's argmax") }
    }
}

/// The most blocks per row the greedy argmax takes, and the u32 of scratch each row holds for
/// them: the blocks' best values and indices and a ticket counter.
const ARGMAX_MAX_BLOCKS: usize = 32;
pub const ARGMAX_SCRATCH: usize = 2 * ARGMAX_MAX_BLOCKS + 1;

/// Blocks per row of the greedy argmax: `$LLQ_ARGMAX_BLOCKS` (1 to 32), default 1 — the
/// one-block kernel, as measured so far (~50 µs a step over Llama's 128256 logits); more take
/// `llq_step_argmax_split`, written 2026-12-07 and not yet run on a GPU (the bench's graph
/// rows check the device's tokens against the host's argmax, `device_argmax_agrees`).
fn argmax_blocks() -> Result<usize> {
    let Some(v) = crate::util::env::var("LLQ_ARGMAX_BLOCKS")? else { return Ok(1) };
    match v.trim().parse::<usize>() {
        Ok(n) if (1..=ARGMAX_MAX_BLOCKS).contains(&n) => Ok(n),
        _ => bail!("LLQ_ARGMAX_BLOCKS={v:?}: expected a number of blocks from 1 to {ARGMAX_MAX_BLOCKS}"),
    }
}

/// The step's state in device memory (u32 each): input tokens, greedy output, per-row RoPE
/// position and left padding, the cache slot this step writes, and the argmax's scratch
/// ([`ARGMAX_SCRATCH`] a row, zeroed before the first step).
#[derive(Clone, Copy)]
pub struct StepState {
    pub tokens: u64,
    pub out: u64,
    pub pos: u64,
    pub pad: u64,
    pub slot: u64,
    pub scratch: u64,
}

/// Arguments of [`StepKernels::rope_append`] (device pointers, then shapes as the kernel's ints).
pub struct RopeArgs {
    pub q: u64,
    pub k: u64,
    pub v: u64,
    pub kc: u64,
    pub vc: u64,
    pub cos: u64,
    pub sin: u64,
    pub pos: u64,
    pub slot: u64,
    pub heads: i32,
    pub kv_heads: i32,
    pub d: i32,
    pub cap: i32,
}

/// Arguments of [`StepKernels::attend`].
pub struct AttendArgs {
    pub q: u64,
    pub kc: u64,
    pub vc: u64,
    pub out: u64,
    pub pad: u64,
    pub slot: u64,
    pub heads: i32,
    pub kv_heads: i32,
    pub d: i32,
    pub cap: i32,
    pub scale: f32,
}
