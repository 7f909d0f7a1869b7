//! The decode step on a GPU as one CUDA graph (the gpt-fast recipe, in llq's kernels): a
//! static KV cache of fixed capacity, every buffer allocated once, the step's ~10 launches a
//! layer (fused add + RMSNorm, the plugins' matvecs or the dense bf16 matvec, RoPE with the
//! cache write, single-query attention, SwiGLU) captured once and replayed; the greedy token
//! is chosen on the device and the step advances its own position, so the host reads `batch`
//! u32 per token instead of the vocabulary's logits.
//!
//! Prefill stays on the eager path (`Llama::step`); [`GraphDecoder::start`] copies its cache
//! in. Used by `run`'s generation and `bench`'s decode rows for batches of up to what
//! every layer's matvec takes in one launch (8, or 64 with the kernel header's tensor-core
//! entries, v1.3) when every layer has a matvec kernel; [`GraphDecoder::supports`]
//! says why not otherwise, and callers fall back to the eager step.

use super::linear::Linear;
use super::llama::{Cache, Llama};
use crate::gpu::linear::{launch_multi, launch_multi_norm, Edge, MMA_MAX_BATCH};
use crate::gpu::nvrtc::has_mma;
use crate::gpu::step::{
    head_dim_supported, tensor_ptr, AttendArgs, Attention, AttentionKernel, RopeArgs, StepKernels, StepState,
    ARGMAX_SCRATCH,
};
use crate::gpu::{MatvecTarget, MATVEC_MAX_BATCH};
use crate::util::first_use;
use anyhow::{anyhow, bail, Context, Result};
use candle_core::cuda_backend::cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
use candle_core::cuda_backend::cudarc::driver::{result, CudaGraph};
use candle_core::{DType, Device, Tensor};
use std::sync::Arc;

/// Cache positions the attention kernel keeps in shared memory (4 bytes each, under the
/// 48 KiB every launch may use without opting in).
pub const MAX_CAPACITY: usize = 11_264;

/// How the step runs: captured and replayed, or the same launches issued one by one (when
/// the capture failed; the reason is kept).
#[derive(Debug, Clone, PartialEq)]
pub enum Launch {
    Graph,
    Direct(String),
}

struct LayerTargets {
    input_norm: u64,
    post_norm: u64,
    /// q, k, v, o, gate, up, down.
    mv: [MatvecTarget; 7],
    kc: Tensor,
    vc: Tensor,
    /// Device addresses of `kc`, `vc`.
    kc_ptr: u64,
    vc_ptr: u64,
}

/// A batch's decode state on the device and the step that advances it.
pub struct GraphDecoder<'m> {
    model: &'m Llama,
    k: Arc<StepKernels>,
    batch: usize,
    cap: usize,
    layers: Vec<LayerTargets>,
    lm_head: MatvecTarget,
    embed: u64,
    norm: u64,
    cos: u64,
    sin: u64,
    /// tokens, out, pos, pad (batch each), slot (1), the argmax scratch: u32, held for its
    /// storage (`st`).
    _state: Tensor,
    st: StepState,
    /// x, xn, q, k, v, attention out, o, gate, up, silu·up, down: bf16 activations (held
    /// for their storage), and their device addresses.
    _act: Vec<Tensor>,
    act_ptr: [u64; 11],
    logits: Tensor,
    logits_ptr: u64,
    graph: Option<CudaGraph>,
    launch: Launch,
    /// Every matrix of the step (and lm_head) takes the 1-row entries with the edges folded
    /// in (header v1.6, [`MatvecTarget::edges_ok`]).
    edges_ok: bool,
}

/// `l` as a launch target; `lm_head`: a dense one takes [`StepKernels::dense_lm_head`].
fn rows_target(k: &StepKernels, l: &Linear, lm_head: bool) -> Result<MatvecTarget> {
    match l {
        Linear::Packed(p) if p.has_matvec() => Ok(p.target().clone()),
        Linear::Packed(_) => bail!("a packed layer has no matvec kernel"),
        Linear::Dense(w) => {
            // `w` is (in, out); its transpose must be the stored (out, in) rows.
            let rows = w.t()?;
            if w.dtype() != DType::BF16
                || !rows.is_contiguous()
                || !rows.layout().start_offset().is_multiple_of(8)
            {
                bail!("a dense layer is not stored as aligned bf16 rows");
            }
            let (out, inp) = rows.dims2()?;
            let w = tensor_ptr(&rows)?;
            Ok(if lm_head { k.dense_lm_head(w, out, inp) } else { k.dense(w, out, inp) })
        }
    }
}

/// The most rows one captured step takes: what every layer's matvec takes in one launch —
/// 64 with the tensor-core entries (header v1.3; the host's dense kernels have them on sm_80
/// and later), else 8.
fn max_batch(model: &Llama) -> usize {
    let Device::Cuda(dev) = &model.device else { return 0 };
    let dense = if has_mma(dev).unwrap_or(false) { MMA_MAX_BATCH } else { MATVEC_MAX_BATCH };
    let of = |l: &Linear| match l {
        Linear::Packed(p) => p.target().max_batch(),
        Linear::Dense(w) if w.dim(0).is_ok_and(|cols| cols % 32 == 0) => dense,
        Linear::Dense(_) => MATVEC_MAX_BATCH,
    };
    let parts = model.parts();
    parts
        .blocks
        .iter()
        .flat_map(|b| b.linears.iter().map(|l| of(l)))
        .chain([of(parts.lm_head)])
        .min()
        .unwrap_or(0)
}

impl<'m> GraphDecoder<'m> {
    /// Why `model` cannot decode `batch` rows up to `capacity` positions here (`None`: it can).
    pub fn supports(model: &Llama, batch: usize, capacity: usize) -> Option<String> {
        let c = &model.cfg;
        let d = c.head_dim();
        if !model.device.is_cuda() {
            Some("not on a GPU".into())
        } else if batch == 0 || batch > max_batch(model) {
            Some(format!(
                "batch {batch} is outside 1..={} (what every layer's matvec takes)",
                max_batch(model)
            ))
        } else if capacity > MAX_CAPACITY {
            Some(format!("{capacity} positions exceed the static cache's {MAX_CAPACITY}"))
        } else if !head_dim_supported(d) {
            Some(format!("head dimension {d} is not a multiple of 8 up to 128"))
        } else if !c.hidden_size.is_multiple_of(8) || !c.intermediate_size.is_multiple_of(8) {
            Some("hidden or intermediate size is not a multiple of 8".into())
        } else if model.dtype != DType::BF16 {
            Some(format!("the model computes in {:?}, the step kernels in bf16", model.dtype))
        } else {
            None
        }
    }

    /// Buffers for `batch` rows and a cache of `capacity` positions; kernels compiled (or
    /// read from the PTX cache). The first step captures the graph.
    pub fn new(model: &'m Llama, batch: usize, capacity: usize) -> Result<Self> {
        if let Some(why) = Self::supports(model, batch, capacity) {
            bail!("the captured decode step cannot run: {why}");
        }
        let Device::Cuda(dev) = &model.device else { bail!("not on a GPU") };
        let k = StepKernels::compile(dev)?;
        k.set_programmatic(k.programmatic_mode().wanted(batch));
        let c = &model.cfg;
        let (h, kvh, d) = (c.num_attention_heads, c.kv_heads(), c.head_dim());
        let dev = &model.device;
        let zeros = |n: usize| Tensor::zeros(n, DType::BF16, dev);
        let parts = model.parts();
        let mut layers = Vec::with_capacity(parts.blocks.len());
        for (i, b) in parts.blocks.iter().enumerate() {
            let mv = b.linears.map(|l| rows_target(&k, l, false));
            let mut it = mv.into_iter();
            let mut next = || it.next().expect("seven layers").with_context(|| format!("block {i}"));
            let mv = [next()?, next()?, next()?, next()?, next()?, next()?, next()?];
            let cache = || Tensor::zeros((batch, kvh, capacity, d), DType::BF16, dev);
            let (kc, vc) = (cache()?, cache()?);
            layers.push(LayerTargets {
                input_norm: tensor_ptr(b.input_norm)?,
                post_norm: tensor_ptr(b.post_norm)?,
                mv,
                kc_ptr: tensor_ptr(&kc)?,
                vc_ptr: tensor_ptr(&vc)?,
                kc,
                vc,
            });
        }
        let lm_head = rows_target(&k, parts.lm_head, true).context("lm_head")?;
        let edges_ok = lm_head.edges_ok() && layers.iter().all(|l| l.mv.iter().all(MatvecTarget::edges_ok));
        let (hid, inter, vocab) = (c.hidden_size, c.intermediate_size, c.vocab_size);
        let sizes = [hid, hid, h * d, kvh * d, kvh * d, h * d, hid, inter, inter, inter, hid];
        let act = sizes.iter().map(|&n| zeros(batch * n)).collect::<candle_core::Result<Vec<_>>>()?;
        let mut act_ptr = [0u64; 11];
        for (p, t) in act_ptr.iter_mut().zip(&act) {
            *p = tensor_ptr(t)?;
        }
        let logits = zeros(batch * vocab)?;
        let state = Tensor::zeros(4 * batch + 1 + ARGMAX_SCRATCH * batch, DType::U32, dev)?;
        let base = tensor_ptr(&state)?;
        let at = |i: usize| base + (i * batch * 4) as u64;
        let st =
            StepState { tokens: at(0), out: at(1), pos: at(2), pad: at(3), slot: at(4), scratch: at(4) + 4 };
        Ok(GraphDecoder {
            model,
            batch,
            cap: capacity,
            layers,
            lm_head,
            embed: tensor_ptr(parts.embed)?,
            norm: tensor_ptr(parts.norm)?,
            cos: tensor_ptr(parts.cos)?,
            sin: tensor_ptr(parts.sin)?,
            _state: state,
            st,
            _act: act,
            act_ptr,
            logits_ptr: tensor_ptr(&logits)?,
            logits,
            graph: None,
            launch: Launch::Graph,
            edges_ok,
            k,
        })
    }

    /// Rows a step decodes.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Positions the static cache holds.
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// How the steps run (a failed capture falls back to direct launches and says why).
    pub fn launch_mode(&self) -> &Launch {
        &self.launch
    }

    /// Whether the step's launches are programmatic dependents of the kernel before
    /// (`$LLQ_PDL`, sm_90; [`crate::gpu::launch`]).
    pub fn programmatic(&self) -> bool {
        self.k.programmatic()
    }

    /// Turn programmatic launches on or off; the next step captures the graph anew (A/B runs).
    pub fn set_programmatic(&mut self, on: bool) {
        if on != self.k.programmatic() {
            self.k.set_programmatic(on);
            self.graph = None;
        }
    }

    /// The attention kernel this step launches (its name, [`AttentionKernel::describe`]).
    pub fn attention_kernel(&self) -> AttentionKernel {
        let c = &self.model.cfg;
        self.k.attention_kernel(c.num_attention_heads, c.kv_heads(), c.head_dim(), self.cap, self.batch)
    }

    /// Whether the step folds RoPE and the cache write into its attention launch.
    pub fn folds_rope(&self) -> bool {
        let c = &self.model.cfg;
        self.k.folds_rope(c.num_attention_heads, c.kv_heads(), c.head_dim(), self.cap, self.batch)
    }

    /// Whether the step folds its RMSNorms into the matvecs that read them and its residual
    /// adds into the matvecs that produce them (batch 1, header v1.6 entries everywhere,
    /// `$LLQ_STEP_NORM=fused`): 2 · layers + 1 fewer launches.
    pub fn folds_norm(&self) -> bool {
        self.batch == 1 && self.edges_ok && self.k.fold_norm()
    }

    /// Whether a folded step (above) also runs gate, up and SwiGLU as one launch
    /// (`$LLQ_STEP_GLU=fused`, every layer's gate and up of one kind and shape).
    pub fn folds_glu(&self) -> bool {
        self.folds_norm() && self.k.fold_glu() && self.layers.iter().all(|l| l.mv[4].glu_ok(&l.mv[5]))
    }

    /// Gate, up and SwiGLU in one launch or not; the next step captures the graph anew (A/B
    /// runs).
    pub fn set_fold_glu(&mut self, on: bool) {
        if on != self.k.fold_glu() {
            self.k.set_fold_glu(on);
            self.graph = None;
        }
    }

    /// Fold the norms into the matvecs or not; the next step captures the graph anew (A/B
    /// runs).
    pub fn set_fold_norm(&mut self, on: bool) {
        if on != self.k.fold_norm() {
            self.k.set_fold_norm(on);
            self.graph = None;
        }
    }

    /// Whether a dense lm_head runs on the UNROLL-1 entries (`$LLQ_LM_HEAD_UNROLL=1`).
    pub fn lm_head_u1(&self) -> bool {
        self.k.lm_head_u1() && matches!(self.model.parts().lm_head, Linear::Dense(_))
    }

    /// Put a dense lm_head on the UNROLL-1 entries or not; the next step captures the graph
    /// anew (A/B runs).
    pub fn set_lm_head_u1(&mut self, on: bool) -> Result<()> {
        if on != self.k.lm_head_u1() {
            self.k.set_lm_head_u1(on);
            self.lm_head = rows_target(&self.k, self.model.parts().lm_head, true).context("lm_head")?;
            self.graph = None;
        }
        Ok(())
    }

    /// Blocks per row of the greedy argmax.
    pub fn argmax_blocks(&self) -> usize {
        self.k.argmax_blocks()
    }

    /// Set the argmax's blocks per row; the next step captures the graph anew (A/B runs).
    pub fn set_argmax_blocks(&mut self, n: usize) {
        if n != self.k.argmax_blocks() {
            self.k.set_argmax_blocks(n);
            self.graph = None;
        }
    }

    /// Fold RoPE into the attention or not; the next step captures the graph anew (A/B runs).
    pub fn set_fold_rope(&mut self, on: bool) {
        if on != self.k.fold_rope() {
            self.k.set_fold_rope(on);
            self.graph = None;
        }
    }

    /// Choose the attention kernel; the next step captures the graph anew (A/B runs).
    pub fn set_attention(&mut self, a: Attention) {
        if a != self.k.attention() {
            self.k.set_attention(a);
            self.graph = None;
        }
    }

    /// Continue from an eager prefill: its `cache` (every row `past` positions, left padding
    /// `pad[r]`) is copied into the static cache and `first` (one token a row) is the next
    /// step's input.
    pub fn start(&mut self, cache: &Cache, pad: &[usize], first: &[u32]) -> Result<()> {
        let b = self.batch;
        if pad.len() != b || first.len() != b {
            bail!("the decode step holds {b} rows, got {} paddings and {} tokens", pad.len(), first.len());
        }
        let past = cache.len();
        if past == 0 || past >= self.cap {
            bail!("a prefill of {past} positions does not fit a static cache of {}", self.cap);
        }
        for (l, kv) in self.layers.iter().zip(cache.layers()) {
            let (k, v) = kv.ok_or_else(|| anyhow!("the prefill cache has an empty layer"))?;
            l.kc.slice_set(&k.contiguous()?, 2, 0)?;
            l.vc.slice_set(&v.contiguous()?, 2, 0)?;
        }
        let mut host = Vec::with_capacity(4 * b + 1);
        host.extend_from_slice(first);
        host.extend(std::iter::repeat_n(0u32, b));
        host.extend(pad.iter().map(|&p| past.saturating_sub(p) as u32));
        host.extend(pad.iter().map(|&p| p as u32));
        host.push(past as u32);
        let stream = self.k.stream();
        // SAFETY: `state` holds 4b + 1 u32 and lives as long as `self`; `host` outlives the
        // copy because the stream is synchronized before returning.
        unsafe { result::memcpy_htod_async(self.st.tokens, &host, stream.cu_stream()) }
            .map_err(|e| anyhow!("uploading the decode state: {e:?}"))?;
        stream.synchronize().map_err(|e| anyhow!("{e:?}"))?;
        Ok(())
    }

    /// Issue one step's launches on the stream.
    fn enqueue(&self) -> Result<()> {
        self.enqueue_marked(&mut |_| Ok(()))
    }

    /// [`Self::enqueue`], calling `mark(what)` after each launch (`what` names the kind of
    /// work it was: the profile's categories).
    fn enqueue_marked(&self, mark: &mut dyn FnMut(&'static str) -> Result<()>) -> Result<()> {
        let (k, b, c) = (&self.k, self.batch, &self.model.cfg);
        let stream = k.stream();
        let [x, xn, q, kk, v, att, o, g, u, hm, dn] = self.act_ptr;
        let (hid, eps) = (c.hidden_size, c.rms_norm_eps as f32);
        let (h, kvh, d) = (c.num_attention_heads as i32, c.kv_heads() as i32, c.head_dim() as i32);
        let pdl = k.programmatic();
        let mv =
            |t: &MatvecTarget, x: u64, y: u64| t.launch(stream, x, y, b, pdl).map_err(anyhow::Error::from);
        // The matrices that read the same input in one launch where their kernels allow it.
        let mv3 = |t: &[&MatvecTarget], x: u64, y: &[u64]| -> Result<()> {
            if k.fused_matvec() {
                launch_multi(t, stream, x, y, b, pdl)?;
            } else {
                for (t, &y) in t.iter().zip(y) {
                    mv(t, x, y)?;
                }
            }
            Ok(())
        };
        // Folded (batch 1): x is the residual stream itself; the matvecs reading a norm's
        // output normalize x themselves and o and down add into x, so neither `xn` nor `dn`
        // is written and no norm kernel runs.
        let (folded, glu) = (self.folds_norm(), self.folds_glu());
        let res = |t: &MatvecTarget, a: u64| -> Result<()> {
            Ok(t.launch_edge(stream, a, x, Edge::Residual, pdl)?)
        };
        let normed = |t: &MatvecTarget, w: u64, y: u64| -> Result<()> {
            Ok(t.launch_edge(stream, x, y, Edge::Norm { w, eps }, pdl)?)
        };
        k.embed(self.embed, self.st.tokens, x, b, hid)?;
        mark("embedding, argmax")?;
        for (i, l) in self.layers.iter().enumerate() {
            let qkv = [&l.mv[0], &l.mv[1], &l.mv[2]];
            if folded {
                if k.fused_matvec() {
                    launch_multi_norm(&qkv, stream, x, &[q, kk, v], (l.input_norm, eps), pdl)?;
                } else {
                    for (t, y) in qkv.into_iter().zip([q, kk, v]) {
                        normed(t, l.input_norm, y)?;
                    }
                }
            } else {
                k.add_rmsnorm(x, if i == 0 { 0 } else { dn }, l.input_norm, xn, b, hid, eps)?;
                mark("add + RMSNorm")?;
                mv3(&qkv, xn, &[q, kk, v])?;
            }
            mark("matvec q, k, v")?;
            let (kc, vc) = (l.kc_ptr, l.vc_ptr);
            let (cap, slot) = (self.cap as i32, self.st.slot);
            let rope = RopeArgs {
                q,
                k: kk,
                v,
                kc,
                vc,
                cos: self.cos,
                sin: self.sin,
                pos: self.st.pos,
                slot,
                heads: h,
                kv_heads: kvh,
                d,
                cap,
            };
            let scale = 1.0 / (d as f32).sqrt();
            let attend = AttendArgs {
                q,
                kc,
                vc,
                out: att,
                pad: self.st.pad,
                slot,
                heads: h,
                kv_heads: kvh,
                d,
                cap,
                scale,
            };
            if self.folds_rope() {
                k.rope_attend(&rope, &attend, b)?;
                mark("RoPE + cache write + attention")?;
            } else {
                k.rope_append(&rope, b)?;
                mark("RoPE + cache write")?;
                k.attend(&attend, b)?;
                mark("attention")?;
            }
            if folded {
                res(&l.mv[3], att)?;
                mark("matvec o")?;
                if glu {
                    l.mv[4].launch_glu(&l.mv[5], stream, x, hm, (l.post_norm, eps), pdl)?;
                    mark("matvec gate, up")?;
                } else {
                    normed(&l.mv[4], l.post_norm, g)?;
                    normed(&l.mv[5], l.post_norm, u)?;
                    mark("matvec gate, up")?;
                    k.swiglu(g, u, hm, c.intermediate_size)?;
                    mark("SwiGLU")?;
                }
                res(&l.mv[6], hm)?;
                mark("matvec down")?;
                continue;
            }
            mv(&l.mv[3], att, o)?;
            mark("matvec o")?;
            k.add_rmsnorm(x, o, l.post_norm, xn, b, hid, eps)?;
            mark("add + RMSNorm")?;
            // At batch 1 gate and up (8192 rows each) gain nothing from sharing a launch
            // and the int-group entry lost 84 µs a step there (results/h100/speed13/mma/fused).
            if b > 1 {
                mv3(&[&l.mv[4], &l.mv[5]], xn, &[g, u])?;
            } else {
                mv(&l.mv[4], xn, g)?;
                mv(&l.mv[5], xn, u)?;
            }
            mark("matvec gate, up")?;
            k.swiglu(g, u, hm, b * c.intermediate_size)?;
            mark("SwiGLU")?;
            mv(&l.mv[6], hm, dn)?;
            mark("matvec down")?;
        }
        if folded {
            normed(&self.lm_head, self.norm, self.logits_ptr)?;
        } else {
            k.add_rmsnorm(x, dn, self.norm, xn, b, hid, eps)?;
            mark("add + RMSNorm")?;
            mv(&self.lm_head, xn, self.logits_ptr)?;
        }
        mark("lm_head")?;
        k.argmax_advance(self.logits_ptr, c.vocab_size, &self.st, b)?;
        mark("embedding, argmax")
    }

    fn capture(&self) -> Result<CudaGraph> {
        let stream = self.k.stream();
        stream
            .begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .map_err(|e| anyhow!("begin capture: {e:?}"))?;
        let issued = self.enqueue();
        // End the capture whatever happened, so the stream is usable again.
        let graph = stream.end_capture(CUgraphInstantiate_flags(0));
        issued?;
        graph
            .map_err(|e| anyhow!("end capture: {e:?}"))?
            .ok_or_else(|| anyhow!("the capture recorded nothing"))
    }

    /// Run one step (asynchronously): the tokens of the last step go in, the greedy tokens
    /// come out into the state, positions advance. The first step captures the graph.
    pub fn step(&mut self) -> Result<()> {
        if self.launch == Launch::Graph && self.graph.is_none() {
            let t = std::time::Instant::now();
            match self.capture() {
                Ok(g) => {
                    g.upload().map_err(|e| anyhow!("graph upload: {e:?}"))?;
                    self.graph = Some(g);
                    let s = t.elapsed().as_secs_f64();
                    first_use::record(|c| {
                        c.graph_capture_s += s;
                        c.graph_captures += 1;
                    });
                }
                Err(e) => {
                    tracing::warn!(
                        "CUDA graph capture of the decode step failed ({e:#}); launching directly"
                    );
                    self.launch = Launch::Direct(format!("capture failed: {e:#}"));
                }
            }
        }
        match &self.graph {
            Some(g) => g.launch().map_err(|e| anyhow!("graph launch: {e:?}")),
            None => self.enqueue(),
        }
    }

    /// Where a step's device time goes: the step captured once more with a CUDA event
    /// after each launch (event records are graph nodes, so the times are the device's, with
    /// no host gaps), replayed `steps` times; seconds per step by kind of work, largest first.
    /// Advances the state like [`Self::step`]. Captured without programmatic launches: a
    /// kernel that overlaps the one before has no time of its own to report.
    pub fn profile(&mut self, steps: usize) -> Result<Vec<(String, f64)>> {
        let was = self.k.programmatic();
        self.k.set_programmatic(false);
        let out = self.profile_launches(steps);
        self.k.set_programmatic(was);
        out
    }

    fn profile_launches(&mut self, steps: usize) -> Result<Vec<(String, f64)>> {
        use candle_core::cuda_backend::cudarc::driver::sys;
        let stream = self.k.stream().clone();
        // Recorded as graph nodes only with CU_EVENT_RECORD_EXTERNAL: a plain record in a
        // capture only orders streams and is never timed.
        let ev = || -> Result<_> {
            let e = stream
                .context()
                .new_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT))
                .map_err(|e| anyhow!("cuda event: {e:?}"))?;
            // SAFETY: a live event and the capturing stream of the same context.
            let r = unsafe {
                sys::cuEventRecordWithFlags(
                    e.cu_event(),
                    stream.cu_stream(),
                    sys::CUevent_record_flags::CU_EVENT_RECORD_EXTERNAL as u32,
                )
            };
            if r != sys::CUresult::CUDA_SUCCESS {
                bail!("recording a profile event in the capture: {r:?}");
            }
            Ok(e)
        };
        stream
            .begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .map_err(|e| anyhow!("begin capture: {e:?}"))?;
        let mut marks = vec![];
        let issued = ev().and_then(|e| {
            marks.push(("start", e));
            self.enqueue_marked(&mut |what| {
                marks.push((what, ev()?));
                Ok(())
            })
        });
        let graph = stream.end_capture(CUgraphInstantiate_flags(0));
        issued?;
        let graph =
            graph.map_err(|e| anyhow!("end capture: {e:?}"))?.ok_or_else(|| anyhow!("empty capture"))?;
        let mut by: std::collections::BTreeMap<&str, f64> = Default::default();
        for _ in 0..steps {
            graph.launch().map_err(|e| anyhow!("graph launch: {e:?}"))?;
            stream.synchronize().map_err(|e| anyhow!("{e:?}"))?;
            for w in marks.windows(2) {
                let ms = w[0].1.elapsed_ms(&w[1].1).map_err(|e| anyhow!("cuda event timing: {e:?}"))?;
                *by.entry(w[1].0).or_default() += ms as f64 * 1e-3 / steps.max(1) as f64;
            }
        }
        let mut v: Vec<(String, f64)> = by.into_iter().map(|(k, s)| (k.to_string(), s)).collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1));
        Ok(v)
    }

    /// The greedy tokens of the last step (waits for it).
    pub fn tokens(&self) -> Result<Vec<u32>> {
        let mut out = vec![0u32; self.batch];
        let stream = self.k.stream();
        // SAFETY: `out` is `batch` u32, the size of the state's output slice; the stream is
        // synchronized before `out` is read.
        unsafe { result::memcpy_dtoh_async(&mut out, self.st.out, stream.cu_stream()) }
            .map_err(|e| anyhow!("reading the greedy tokens: {e:?}"))?;
        stream.synchronize().map_err(|e| anyhow!("{e:?}"))?;
        Ok(out)
    }

    /// The last step's logits (batch, vocab) in f32 (a copy; for checks).
    pub fn logits(&self) -> Result<Tensor> {
        Ok(self.logits.reshape((self.batch, self.model.cfg.vocab_size))?.to_dtype(DType::F32)?)
    }
}
