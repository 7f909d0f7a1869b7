//! The quantized linear layer on a GPU: a plugin's packed matrix resident on the device, run
//! by the method's own kernels on candle's stream — the fused dequantize-matvec for decode,
//! dequantize into a scratch matrix + cuBLAS for larger batches.

use super::launch::Launch;
use super::nvrtc::Kernels;
use crate::plugin::PackedMatrix;
use anyhow::{anyhow, bail, Context, Result};
use candle_core::cuda_backend::cudarc::driver::{
    CudaSlice, CudaStream, CudaView, DevicePtr, DevicePtrMut, LaunchConfig,
};
use candle_core::cuda_backend::{CudaDevice, CudaStorage};
use candle_core::{CpuStorage, CustomOp1, DType, Layout, Shape, Tensor};
use half::bf16;
use std::sync::Arc;

pub use super::nvrtc::{MATVEC_MAX_BATCH, MMA_MAX_BATCH};
/// W rows one block of the tensor-core matvec owns (`LLQ_MMA_ROWS`, header v1.3).
const MMA_ROWS: usize = 16;

/// A packed matrix resident on the device, with the kernels that read it.
pub struct PackedLinear {
    pub rows: usize,
    pub cols: usize,
    bufs: Vec<CudaSlice<u8>>,
    kernels: Arc<Kernels>,
    dev: CudaDevice,
    /// The launch target on `bufs`' addresses, built once at upload.
    target: MatvecTarget,
}

/// A launch error as candle's (the layer runs inside candle's ops), its context kept.
fn candle_err(e: anyhow::Error) -> candle_core::Error {
    candle_core::Error::Msg(format!("{e:#}"))
}

impl PackedLinear {
    pub fn upload(p: &PackedMatrix, kernels: &Arc<Kernels>, dev: &CudaDevice) -> Result<Self> {
        if p.buffers.len() > 4 {
            bail!(
                "plugin {}: {} buffers, the kernel convention passes at most 4",
                kernels.method,
                p.buffers.len()
            );
        }
        let meta: serde_json::Value =
            serde_json::from_str(&p.metadata).context("packed metadata is not JSON")?;
        let mut params = [0i64; 4];
        for (slot, spec) in params.iter_mut().zip(&kernels.params) {
            *slot = spec.resolve(&meta).map_err(|e| anyhow!("plugin {}: {e}", kernels.method))?;
        }
        let bufs = p
            .buffers
            .iter()
            .map(|(_, b)| dev.clone_htod(b.as_slice()))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let stream = dev.cuda_stream();
        let mut ptrs = [0u64; 4];
        for (slot, b) in ptrs.iter_mut().zip(&bufs) {
            *slot = b.device_ptr(&stream).0;
        }
        Ok(PackedLinear {
            rows: p.rows,
            cols: p.cols,
            target: MatvecTarget::new(kernels.clone(), ptrs, p.rows, p.cols, params),
            bufs,
            kernels: kernels.clone(),
            dev: dev.clone(),
        })
    }

    /// Device bytes of the packed buffers.
    pub fn bytes(&self) -> u64 {
        self.bufs.iter().map(|b| b.len() as u64).sum()
    }

    pub fn has_matvec(&self) -> bool {
        self.kernels.matvec.is_some()
    }

    /// `y = x · Wᵀ` for x (…, cols) in bf16: the fused matvec for as many rows as this
    /// matrix's kernels take ([`MatvecTarget::max_batch`]), else dequantize into a scratch
    /// bf16 matrix and multiply with cuBLAS.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let m = x.elem_count() / self.cols;
        let mut out_dims = dims.clone();
        *out_dims.last_mut().context("linear layer input has no dimensions")? = self.rows;
        if m <= self.target.max_batch() {
            let x = x.to_dtype(DType::BF16)?.reshape((m, self.cols))?.contiguous()?;
            let x = if x.layout().start_offset() % 8 == 0 { x } else { x.copy()? };
            Ok(x.apply_op1_no_bwd(&Matvec(self))?.reshape(out_dims)?)
        } else {
            // The op ignores its input; `x` only says which device the scratch matrix goes to.
            let w = x.apply_op1_no_bwd(&Dequantize(self))?;
            Ok(x.broadcast_matmul(&w.t()?)?)
        }
    }

    /// This matrix as a launch target on raw device pointers (what a captured decode step
    /// replays); valid while `self` lives.
    pub fn target(&self) -> &MatvecTarget {
        &self.target
    }

    /// Launch the dequantize kernel into `out` (rows·cols bf16).
    pub fn launch_dequantize(&self, out: &mut CudaSlice<bf16>) -> candle_core::Result<()> {
        let n = self.rows * self.cols;
        let stream = self.dev.cuda_stream();
        let out_ptr = out.device_ptr_mut(&stream).0;
        let mut b = Launch::new(&stream, &self.kernels.dequantize);
        self.target.push_args(&mut b);
        b.arg(out_ptr);
        let cfg = LaunchConfig {
            grid_dim: (n.div_ceil(256 * 8 * 4) as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: the convention's dequantize signature (b0..b3, rows, cols, p0..p3, out);
        // `out` holds rows·cols bf16 (the caller's contract).
        unsafe { b.run(cfg, &format!("plugin {}'s dequantize", self.kernels.method)) }.map_err(candle_err)
    }

    /// Launch the matvec kernel: `y` (batch × rows) from `x` (batch × cols).
    pub fn launch_matvec(
        &self,
        x: &CudaView<'_, bf16>,
        y: &mut CudaSlice<bf16>,
        batch: usize,
    ) -> candle_core::Result<()> {
        let stream = self.dev.cuda_stream();
        let (xp, yp) = (x.device_ptr(&stream).0, y.device_ptr_mut(&stream).0);
        self.target.launch(&stream, xp, yp, batch, false)
    }
}

/// What a 1-row launch does besides `y = x · Wᵀ` (kernel header v1.6): normalize x first
/// (the RMSNorm with weight `w` at a device address, and `eps`), or add its result into y
/// (the residual stream: `y = bf16(y + bf16(x · Wᵀ))`).
#[derive(Clone, Copy, Debug)]
pub enum Edge {
    Norm { w: u64, eps: f32 },
    Residual,
}

/// The most dynamic shared memory a launch takes without opting in: a normalizing entry
/// keeps x (cols bf16) there.
const EDGE_MAX_SHARED: usize = 48 * 1024;

/// One matrix's matvec on raw device pointers: a method's kernels (or the host's dense bf16
/// rows) and the buffers and parameters they read. Nothing here owns the buffers: the
/// caller keeps them alive (the model's layers) for as long as it launches.
#[derive(Clone)]
pub struct MatvecTarget {
    kernels: Arc<Kernels>,
    bufs: [u64; 4],
    /// rows, cols: the kernels' `long long` arguments.
    rc: [i64; 2],
    params: [i64; 4],
}

impl MatvecTarget {
    pub fn new(kernels: Arc<Kernels>, bufs: [u64; 4], rows: usize, cols: usize, params: [i64; 4]) -> Self {
        MatvecTarget { kernels, bufs, rc: [rows as i64, cols as i64], params }
    }

    pub fn rows(&self) -> usize {
        self.rc[0] as usize
    }

    /// Blocks of a launch over this matrix: 16 rows a block on tensor cores (`LLQ_MMA_ROWS`),
    /// else 4 (`LLQ_MV_ROWS`).
    fn blocks(&self, mma: bool) -> u32 {
        self.rows().div_ceil(if mma { MMA_ROWS } else { 4 }) as u32
    }

    /// The tensor-core entries are there, can take this matrix, and are not turned off.
    fn mma_ok(&self) -> bool {
        self.kernels.matvec_mma.is_some()
            && self.rc[1] % 32 == 0
            && self.kernels.mma_min_batch <= MMA_MAX_BATCH
    }

    /// Whether `batch` rows go to the tensor-core entries: from 2 rows, or from the batch
    /// `$LLQ_MMA_MIN_BATCH` names (`nvrtc::mma_min_batch`).
    pub fn uses_mma(&self, batch: usize) -> bool {
        self.mma_ok() && batch >= self.kernels.mma_min_batch
    }

    /// The most rows of x one launch takes: 64 with the tensor-core entries (header v1.3,
    /// sm_80+, columns a multiple of 32), 8 with the v1 matvec, 0 without a matvec.
    pub fn max_batch(&self) -> usize {
        if self.kernels.matvec.is_none() {
            0
        } else if self.mma_ok() {
            MMA_MAX_BATCH
        } else {
            MATVEC_MAX_BATCH
        }
    }

    /// The convention's leading arguments: b0..b3, rows, cols, p0..p3.
    fn push_args(&self, b: &mut Launch<'_>) {
        for &p in &self.bufs {
            b.arg(p);
        }
        b.arg(self.rc[0]).arg(self.rc[1]);
        for &p in &self.params {
            b.arg(p);
        }
    }

    /// Whether one row of x can take the entries with the step's edges folded in: the module
    /// has them (header v1.6), batch 1 goes to the 1-row driver, and x fits the launch's
    /// shared memory.
    pub fn edges_ok(&self) -> bool {
        self.kernels.edges.is_some()
            && self.max_batch() >= 1
            && !self.uses_mma(1)
            && (self.rc[1] as usize) * 2 <= EDGE_MAX_SHARED
    }

    /// One row: `y = x · Wᵀ` with `edge` ([`Edge`]), through the header v1.6 entries (the
    /// caller checked [`Self::edges_ok`]).
    pub fn launch_edge(
        &self,
        stream: &Arc<CudaStream>,
        x: u64,
        y: u64,
        edge: Edge,
        programmatic: bool,
    ) -> candle_core::Result<()> {
        let k = &self.kernels;
        let e = match (&k.edges, self.edges_ok()) {
            (Some(e), true) => e,
            _ => candle_core::bail!("plugin {}: no 1-row matvec with folded edges for this matrix", k.method),
        };
        let (f, shared) = match edge {
            Edge::Norm { .. } => (&e.norm, self.rc[1] as u32 * 2),
            Edge::Residual => (&e.res, 0),
        };
        let mut b = Launch::new(stream, f).programmatic(programmatic && k.pdl);
        self.push_args(&mut b);
        b.arg(x).arg(y).arg(1i32);
        if let Edge::Norm { w, eps } = edge {
            b.arg(w).arg(eps);
        }
        let cfg = LaunchConfig {
            grid_dim: (self.blocks(false), 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: shared,
        };
        // SAFETY: the header v1.6 signatures: the convention's matvec arguments (b0..b3, rows,
        // cols, p0..p3, x, y, batch = 1), then for `_b1_norm` the norm's weight (cols bf16)
        // and eps, with cols · 2 bytes of dynamic shared memory.
        unsafe { b.run(cfg, &format!("plugin {}'s 1-row matvec ({edge:?})", k.method)) }.map_err(candle_err)
    }

    /// Whether `up` can share one gate/up launch with this matrix (`self` the gate): the same
    /// kernels and parameters, the same shape, both taking the folded edges.
    pub fn glu_ok(&self, up: &MatvecTarget) -> bool {
        Arc::ptr_eq(&self.kernels, &up.kernels)
            && self.rc == up.rc
            && self.params == up.params
            && self.edges_ok()
            && up.edges_ok()
    }

    /// One row: `y = silu(gate · n) · (up · n)` for `n` = RMSNorm(x) with weight `w` and
    /// `eps`, `self` the gate (header v1.6 `_b1_glu_norm`, rows / 2 blocks; the caller
    /// checked [`Self::glu_ok`]). y holds `rows` bf16.
    pub fn launch_glu(
        &self,
        up: &MatvecTarget,
        stream: &Arc<CudaStream>,
        x: u64,
        y: u64,
        (w, eps): (u64, f32),
        programmatic: bool,
    ) -> candle_core::Result<()> {
        let k = &self.kernels;
        let e = match (&k.edges, self.glu_ok(up)) {
            (Some(e), true) => e,
            _ => candle_core::bail!("plugin {}: gate and up cannot share one launch", k.method),
        };
        let mut b = Launch::new(stream, &e.glu_norm).programmatic(programmatic && k.pdl);
        self.push_args(&mut b);
        up.push_args(&mut b);
        b.arg(x).arg(y).arg(1i32).arg(w).arg(eps);
        let cfg = LaunchConfig {
            grid_dim: (self.rows().div_ceil(2) as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: self.rc[1] as u32 * 2,
        };
        // SAFETY: the header v1.6 `_b1_glu_norm` signature: the gate's convention arguments,
        // the up matrix's (same shape and parameters), x, y (rows bf16), batch = 1, the norm's
        // weight (cols bf16) and eps, with cols · 2 bytes of dynamic shared memory.
        unsafe { b.run(cfg, &format!("plugin {}'s gate/up matvec", k.method)) }.map_err(candle_err)
    }

    /// `y` (batch × rows, bf16) = `x` (batch × cols, bf16) · Wᵀ, both device pointers,
    /// 16-byte aligned, on `stream`; `programmatic`: as a programmatic dependent of the kernel
    /// before, where this method's module allows it (header v1.5, [`super::launch`]).
    pub fn launch(
        &self,
        stream: &Arc<CudaStream>,
        x: u64,
        y: u64,
        batch: usize,
        programmatic: bool,
    ) -> candle_core::Result<()> {
        let k = &self.kernels;
        if batch == 0 || batch > self.max_batch() {
            return Err(candle_core::Error::Msg(format!(
                "plugin {}: matvec batch {batch} is outside 1..={}",
                k.method,
                self.max_batch()
            )));
        }
        let mma = self.uses_mma(batch);
        let f = if mma {
            if batch <= 16 {
                k.matvec_mma16.as_ref().or(k.matvec_mma.as_ref())
            } else {
                k.matvec_mma.as_ref()
            }
        } else {
            match batch {
                1 => k.matvec_b1.as_ref().or(k.matvec_b4.as_ref()).or(k.matvec.as_ref()),
                2..=4 => k.matvec_b4.as_ref().or(k.matvec.as_ref()),
                _ => k.matvec.as_ref(),
            }
        };
        let f =
            f.ok_or_else(|| candle_core::Error::Msg(format!("plugin {} has no matvec kernel", k.method)))?;
        let mut b = Launch::new(stream, f).programmatic(programmatic && k.pdl);
        self.push_args(&mut b);
        b.arg(x).arg(y).arg(batch as i32);
        let cfg =
            LaunchConfig { grid_dim: (self.blocks(mma), 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
        // SAFETY: the convention's matvec signature (b0..b3, rows, cols, p0..p3, x, y, batch);
        // the buffers are this matrix's and the caller's x and y of `batch` rows.
        unsafe { b.run(cfg, &format!("plugin {}'s matvec", k.method)) }.map_err(candle_err)
    }
}

/// `ys[i]` (batch × rows of target i) = x · W_iᵀ for up to three matrices that read the same
/// `x` (q, k, v; gate, up): one launch through the header v1.4 entries where the targets
/// share their kernels and take the same driver, else a launch each.
pub fn launch_multi(
    targets: &[&MatvecTarget],
    stream: &Arc<CudaStream>,
    x: u64,
    ys: &[u64],
    batch: usize,
    programmatic: bool,
) -> candle_core::Result<()> {
    launch_multi_with(targets, stream, x, ys, batch, programmatic, None)
}

/// [`launch_multi`] for one row of x before its RMSNorm (weight `w`, `eps`): each matrix
/// normalizes x itself (header v1.6, `_b1_x3_norm`, or `_b1_norm` a matrix where they do not
/// share one launch). The targets must pass [`MatvecTarget::edges_ok`].
pub fn launch_multi_norm(
    targets: &[&MatvecTarget],
    stream: &Arc<CudaStream>,
    x: u64,
    ys: &[u64],
    (w, eps): (u64, f32),
    programmatic: bool,
) -> candle_core::Result<()> {
    launch_multi_with(targets, stream, x, ys, 1, programmatic, Some((w, eps)))
}

fn launch_multi_with(
    targets: &[&MatvecTarget],
    stream: &Arc<CudaStream>,
    x: u64,
    ys: &[u64],
    batch: usize,
    programmatic: bool,
    norm: Option<(u64, f32)>,
) -> candle_core::Result<()> {
    let first = match targets.first() {
        Some(t) if targets.len() == ys.len() && targets.len() <= 3 => *t,
        _ => candle_core::bail!("a fused matvec takes one to three targets and as many outputs"),
    };
    let k = &first.kernels;
    let mma = first.uses_mma(batch);
    let same = targets
        .iter()
        .all(|t| Arc::ptr_eq(&t.kernels, k) && t.uses_mma(batch) == mma && batch <= t.max_batch());
    let f = match (mma, batch, norm) {
        _ if !same || targets.len() < 2 => None,
        (_, _, Some(_)) => k.edges.as_ref().filter(|_| first.edges_ok() && batch == 1).map(|e| &e.norm_x3),
        (true, ..=16, None) => k.matvec_mma16_x3.as_ref().or(k.matvec_mma_x3.as_ref()),
        (true, _, None) => k.matvec_mma_x3.as_ref(),
        (false, 1, None) => k.matvec_b1_x3.as_ref(),
        (false, _, None) => None,
    };
    let Some(f) = f else {
        for (t, &y) in targets.iter().zip(ys) {
            match norm {
                Some((w, eps)) => t.launch_edge(stream, x, y, Edge::Norm { w, eps }, programmatic)?,
                None => t.launch(stream, x, y, batch, programmatic)?,
            }
        }
        return Ok(());
    };
    // An unused slot is a matrix of no rows (0 blocks, never reached), so every slot's
    // arguments go through the same `push_args` as a single launch's.
    let none = MatvecTarget::new(k.clone(), [0; 4], 0, 0, [0; 4]);
    let slots: Vec<(&MatvecTarget, u64, u32)> = (0..3)
        .map(|i| match targets.get(i) {
            Some(t) => (*t, ys[i], t.blocks(mma)),
            None => (&none, 0, 0),
        })
        .collect();
    let total: u32 = slots.iter().map(|s| s.2).sum();
    let mut b = Launch::new(stream, f).programmatic(programmatic && k.pdl);
    for &(t, y, blocks) in &slots {
        t.push_args(&mut b);
        b.arg(y).arg(blocks);
    }
    b.arg(x).arg(batch as i32);
    let mut shared = 0;
    if let Some((w, eps)) = norm {
        b.arg(w).arg(eps);
        shared = first.rc[1] as u32 * 2;
    }
    let cfg = LaunchConfig { grid_dim: (total, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: shared };
    // SAFETY: the header v1.4 signature: three slots of (b0..b3, rows, cols, p0..p3, y,
    // blocks), then x and batch; a slot's blocks are within its matrix. With `norm`, the
    // header v1.6 `_b1_x3_norm`: then the norm's weight (cols bf16) and eps, with cols · 2
    // bytes of dynamic shared memory (every slot reads the same x, so the same cols).
    unsafe { b.run(cfg, &format!("plugin {}'s fused matvec", k.method)) }.map_err(candle_err)
}

struct Matvec<'a>(&'a PackedLinear);
struct Dequantize<'a>(&'a PackedLinear);

impl CustomOp1 for Matvec<'_> {
    fn name(&self) -> &'static str {
        "llq-matvec"
    }
    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        candle_core::bail!("the fused matvec runs on CUDA only")
    }
    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
        let p = self.0;
        let (m, cols) = l.shape().dims2()?;
        if cols != p.cols || !l.is_contiguous() {
            candle_core::bail!("matvec input must be contiguous (m, {}), got {:?}", p.cols, l.shape());
        }
        let x = s.as_cuda_slice::<bf16>()?.slice(l.start_offset()..);
        let mut y = unsafe { s.device.alloc::<bf16>(m * p.rows)? };
        p.launch_matvec(&x, &mut y, m)?;
        Ok((CudaStorage::wrap_cuda_slice(y, s.device.clone()), Shape::from((m, p.rows))))
    }
}

/// The whole matrix as bf16 (rows, cols), by the method's dequantize kernel.
impl CustomOp1 for Dequantize<'_> {
    fn name(&self) -> &'static str {
        "llq-dequantize"
    }
    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        candle_core::bail!("plugin dequantize kernels run on CUDA only")
    }
    fn cuda_fwd(&self, s: &CudaStorage, _: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
        let p = self.0;
        let mut out = unsafe { s.device.alloc::<bf16>(p.rows * p.cols)? };
        p.launch_dequantize(&mut out)?;
        Ok((CudaStorage::wrap_cuda_slice(out, s.device.clone()), Shape::from((p.rows, p.cols))))
    }
}
