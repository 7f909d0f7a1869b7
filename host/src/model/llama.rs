//! The Llama model: [`Attention`], [`Mlp`] and [`Block`] (each with `load` and `forward`,
//! like candle-transformers' `llama.rs`), the model itself and its KV cache. Weights come
//! from a [`WeightSource`], which names every tensor through [`layer_tensor`].

use super::config::{layer_tensor, Config, LayerTensor, EMBED, LM_HEAD, NORM};
use super::linear::{Linear, PackedLayers};
use super::mask::Mask;
use super::weights::{check_shapes, Weights};
#[cfg(feature = "cuda")]
use anyhow::Context;
use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor};

/// The longest sequence the RoPE tables cover.
pub const MAX_POSITIONS: usize = 16_384;

/// Where in a decoder block a tensor enters, in order: each stage's input feeds the linear
/// layers of [`Stage::layers`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    /// `input_layernorm(x)`: into q, k, v.
    Attention,
    /// The attention output: into o.
    OProj,
    /// `post_attention_layernorm(x)`: into gate, up.
    Mlp,
    /// `silu(gate) · up`: into down.
    DownProj,
    /// The block's output (the next block's input).
    Output,
}

impl Stage {
    /// The stages whose inputs feed linear layers, in block order.
    pub const INPUTS: [Stage; 4] = [Stage::Attention, Stage::OProj, Stage::Mlp, Stage::DownProj];

    /// The linear layers sharing this stage's input.
    pub fn layers(self) -> &'static [LayerTensor] {
        match self {
            Stage::Attention => &[LayerTensor::Q, LayerTensor::K, LayerTensor::V],
            Stage::OProj => &[LayerTensor::O],
            Stage::Mlp => &[LayerTensor::Gate, LayerTensor::Up],
            Stage::DownProj => &[LayerTensor::Down],
            Stage::Output => &[],
        }
    }

    /// What produces this stage's input: an RMSNorm (q/k/v, gate/up) or a linear layer whose
    /// output rows are the input columns (v for o, up for down), the place a layer group's
    /// input scale is folded into.
    pub fn producer(self) -> Option<LayerTensor> {
        match self {
            Stage::Attention => Some(LayerTensor::InputNorm),
            Stage::OProj => Some(LayerTensor::V),
            Stage::Mlp => Some(LayerTensor::PostNorm),
            Stage::DownProj => Some(LayerTensor::Up),
            Stage::Output => None,
        }
    }
}

/// Which of the GPU's fused kernels the eager model's forwards of many tokens take
/// (`gpu::PrefillKernels`): the attention, and the element-wise ones (q/k/v split with RoPE,
/// SwiGLU).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct PrefillFusion {
    pub attention: bool,
    pub pointwise: bool,
}

/// RoPE tables and the causal mask for one unpadded sequence of `t` tokens at positions
/// `0..t` (what calibration runs blocks on).
pub struct SequenceContext {
    pub cos: Tensor,
    pub sin: Tensor,
    pub mask: Mask,
}

impl SequenceContext {
    pub fn new(cfg: &Config, t: usize, device: &Device, dtype: DType) -> Result<Self> {
        if t == 0 || t > cfg.max_position_embeddings.min(MAX_POSITIONS) {
            bail!("a sequence of {t} tokens does not fit the model's positions");
        }
        let (cos, sin) = rope_tables(cfg, t, &Device::Cpu)?;
        let half = cfg.head_dim() / 2;
        let cos = cos.to_dtype(dtype)?.to_device(device)?.reshape((1, t, half))?;
        let sin = sin.to_dtype(dtype)?.to_device(device)?.reshape((1, t, half))?;
        Ok(SequenceContext { cos, sin, mask: Mask::causal(t, device)? })
    }

    pub fn rope(&self) -> (&Tensor, &Tensor) {
        (&self.cos, &self.sin)
    }
}

/// RoPE inverse frequencies, one per pair of dimensions, with Llama-3 scaling applied
/// (transformers' `_compute_llama3_parameters`: long wavelengths divided by `factor`, short
/// ones kept, a linear blend in between).
pub fn rope_inv_freq(cfg: &Config) -> Vec<f64> {
    let d = cfg.head_dim();
    let mut inv: Vec<f64> =
        (0..d / 2).map(|i| 1.0 / cfg.rope_theta.powf(2.0 * i as f64 / d as f64)).collect();
    if let Some(s) = cfg.rope_scaling.as_ref().filter(|s| s.rope_type == "llama3") {
        let old = s.original_max_position_embeddings as f64;
        let (low_wl, high_wl) = (old / s.low_freq_factor, old / s.high_freq_factor);
        for f in inv.iter_mut() {
            let wl = 2.0 * std::f64::consts::PI / *f;
            if wl > low_wl {
                *f /= s.factor;
            } else if wl >= high_wl {
                let smooth = (old / wl - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
                *f = (1.0 - smooth) * *f / s.factor + smooth * *f;
            }
        }
    }
    inv
}

/// RoPE tables (cos, sin), each (positions, head_dim / 2): one angle per pair of
/// dimensions, applied rotate-half style (dimension i pairs with i + head_dim/2).
fn rope_tables(cfg: &Config, positions: usize, dev: &Device) -> Result<(Tensor, Tensor)> {
    let half = cfg.head_dim() / 2;
    let inv = rope_inv_freq(cfg);
    let mut cos = Vec::with_capacity(positions * half);
    let mut sin = Vec::with_capacity(positions * half);
    for p in 0..positions {
        for f in &inv {
            let a = p as f64 * f;
            cos.push(a.cos() as f32);
            sin.push(a.sin() as f32);
        }
    }
    Ok((Tensor::from_vec(cos, (positions, half), dev)?, Tensor::from_vec(sin, (positions, half), dev)?))
}

// The three element-wise pieces use candle-nn's fused kernels (one launch each on a GPU,
// where a decode step is bound by launches): RMSNorm accumulates in f32 whatever the input
// dtype, softmax runs on f32 scores, RoPE is the rotate-half form with per-row positions.

/// RMSNorm; `w` has `x`'s dtype, the mean square is accumulated in f32.
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    Ok(candle_nn::ops::rms_norm(&x.contiguous()?, w, eps as f32)?)
}

fn softmax_last(x: &Tensor) -> Result<Tensor> {
    Ok(candle_nn::ops::softmax_last_dim(&x.contiguous()?)?)
}

/// x (b, h, t, d) with cos/sin (b, t, d/2): x·cos + rotate_half(x)·sin.
fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    Ok(candle_nn::rotary_emb::rope(&x.contiguous()?, cos, sin)?)
}

/// One window's way through a block, stage by stage ([`Block::advance`]).
pub struct StageState {
    /// The block's input.
    pub x: Tensor,
    xn: Option<Tensor>,
    attn: Option<Tensor>,
    residual: Option<Tensor>,
    mlp_in: Option<Tensor>,
    down_in: Option<Tensor>,
}

impl StageState {
    pub fn new(x: Tensor) -> Self {
        StageState { x, xn: None, attn: None, residual: None, mlp_in: None, down_in: None }
    }
}

/// Where a model's tensors come from when it is built on a device: the host weights, in the
/// dtype the model computes in, and the layers a plugin keeps packed (GPU only).
pub struct WeightSource<'a> {
    weights: &'a Weights,
    device: &'a Device,
    dtype: DType,
    /// The fused prefill kernels every block shares (GPU, sm_80+).
    #[cfg(feature = "cuda")]
    fused: Option<std::sync::Arc<crate::gpu::PrefillKernels>>,
    #[cfg(feature = "cuda")]
    packed: Option<(
        &'a PackedLayers,
        std::sync::Arc<crate::gpu::Kernels>,
        &'a candle_core::cuda_backend::CudaDevice,
    )>,
}

impl<'a> WeightSource<'a> {
    /// On the CPU `packed` is ignored: the weights already hold the plugin's dequantized values.
    pub fn new(
        weights: &'a Weights,
        device: &'a Device,
        dtype: DType,
        packed: Option<&'a PackedLayers>,
    ) -> Result<Self> {
        #[cfg(feature = "cuda")]
        let packed = match (packed, device) {
            (Some(p), Device::Cuda(d)) => Some((p, crate::gpu::compile(&p.method, &p.kernels, d)?, d)),
            _ => None,
        };
        #[cfg(feature = "cuda")]
        let fused = match device {
            Device::Cuda(d) => crate::gpu::PrefillKernels::compile(d)?,
            _ => None,
        };
        #[cfg(not(feature = "cuda"))]
        let _ = packed;
        Ok(WeightSource {
            weights,
            device,
            dtype,
            #[cfg(feature = "cuda")]
            packed,
            #[cfg(feature = "cuda")]
            fused,
        })
    }

    /// A tensor as stored (norms, the embedding), converted on the host: one upload each.
    /// To 16 bits on all cores, by the conversion candle's CPU backend uses (`half`'s
    /// round-to-nearest-even `from_f32`): candle's own is one thread, and it was most of
    /// loading Llama-3.2-1B (~10 s) and of each calibration block's `reload` (~0.6 s).
    pub fn tensor(&self, name: &str) -> Result<Tensor> {
        use rayon::prelude::*;
        let h = &self.weights[name];
        let shape = h.shape.as_slice();
        let t = match self.dtype {
            DType::BF16 => {
                let v: Vec<half::bf16> =
                    h.data.par_iter().with_min_len(1 << 16).map(|&x| half::bf16::from_f32(x)).collect();
                Tensor::from_vec(v, shape, &Device::Cpu)?
            }
            DType::F16 => {
                let v: Vec<half::f16> =
                    h.data.par_iter().with_min_len(1 << 16).map(|&x| half::f16::from_f32(x)).collect();
                Tensor::from_vec(v, shape, &Device::Cpu)?
            }
            d => Tensor::from_slice(&h.data, shape, &Device::Cpu)?.to_dtype(d)?,
        };
        Ok(t.to_device(self.device)?)
    }

    /// A linear layer: the plugin's packed matrix with its kernels when there is one, else
    /// the dense matrix held transposed.
    pub fn linear(&self, name: &str) -> Result<Linear> {
        #[cfg(feature = "cuda")]
        if let Some((p, k, d)) = &self.packed {
            if let Some(m) = p.layers.get(name) {
                let up = crate::gpu::PackedLinear::upload(m, k, d)
                    .with_context(|| format!("uploading packed {name}"))?;
                return Ok(Linear::Packed(up));
            }
        }
        // On a GPU the (out, in) rows stay as stored and cuBLAS reads them transposed: the
        // captured decode step's matvec reads rows, and one copy of each matrix is resident.
        // The CPU keeps the (in, out) copy its matmul has always used.
        let w = self.tensor(name)?.t()?;
        Ok(Linear::Dense(if self.device.is_cpu() { w.contiguous()? } else { w }))
    }
}

/// Self-attention with grouped-query heads and rotate-half RoPE.
pub struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    dtype: DType,
    #[cfg(feature = "cuda")]
    fused: Option<std::sync::Arc<crate::gpu::PrefillKernels>>,
}

impl Attention {
    pub fn load(w: &WeightSource, cfg: &Config, layer: usize) -> Result<Self> {
        let lin = |t| w.linear(&layer_tensor(layer, t));
        Ok(Attention {
            q: lin(LayerTensor::Q)?,
            k: lin(LayerTensor::K)?,
            v: lin(LayerTensor::V)?,
            o: lin(LayerTensor::O)?,
            heads: cfg.num_attention_heads,
            kv_heads: cfg.kv_heads(),
            head_dim: cfg.head_dim(),
            dtype: w.dtype,
            #[cfg(feature = "cuda")]
            fused: w.fused.clone(),
        })
    }

    /// `x` (b, t, hidden), already normed → the attention output before `o_proj`
    /// (b, t, heads · head_dim); appends this layer's keys and values to `kv`.
    pub fn attend(
        &self,
        x: &Tensor,
        rope_cs: (&Tensor, &Tensor),
        mask: &Mask,
        kv: &mut Option<(Tensor, Tensor)>,
    ) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let (h, kvh, d) = (self.heads, self.kv_heads, self.head_dim);
        let rep = h / kvh;
        let (q, k, v) = (self.q.forward(x)?, self.k.forward(x)?, self.v.forward(x)?);
        #[cfg(feature = "cuda")]
        let fused = match &self.fused {
            Some(f) => f.split_rope((&q, &k, &v), rope_cs, h, kvh)?,
            None => None,
        };
        #[cfg(not(feature = "cuda"))]
        let fused: Option<(Tensor, Tensor, Tensor)> = None;
        let (q, k, v) = match fused {
            Some(qkv) => qkv,
            None => {
                let (cos, sin) = rope_cs;
                let q = q.reshape((b, t, h, d))?.transpose(1, 2)?.contiguous()?;
                let k = k.reshape((b, t, kvh, d))?.transpose(1, 2)?.contiguous()?;
                let v = v.reshape((b, t, kvh, d))?.transpose(1, 2)?.contiguous()?;
                (rope(&q, cos, sin)?, rope(&k, cos, sin)?, v)
            }
        };
        let (k, v) = match kv.take() {
            Some((pk, pv)) => (Tensor::cat(&[&pk, &k], 2)?, Tensor::cat(&[&pv, &v], 2)?),
            None => (k, v),
        };
        *kv = Some((k.clone(), v.clone()));
        #[cfg(feature = "cuda")]
        if let Some(f) = &self.fused {
            if let Some(out) = f.attend(&q, &k, &v, mask.pad_tensor()?)? {
                return Ok(out);
            }
        }
        let total = k.dim(2)?;
        // Grouped-query attention: each KV head serves `rep` query heads.
        let q = q.reshape((b, kvh, rep * t, d))?;
        let scale = 1.0 / (d as f64).sqrt();
        let scores = (q.matmul(&k.t()?)?.to_dtype(DType::F32)? * scale)?.reshape((b, kvh, rep, t, total))?;
        let mask = mask.additive()?;
        let scores = scores.broadcast_add(&mask.reshape((mask.dim(0)?, 1, 1, t, total))?)?;
        let p = softmax_last(&scores)?.to_dtype(self.dtype)?.reshape((b, kvh, rep * t, total))?;
        Ok(p.matmul(&v)?.reshape((b, h, t, d))?.transpose(1, 2)?.reshape((b, t, h * d))?)
    }

    /// `x` (b, t, hidden), already normed → (b, t, hidden); appends to `kv`.
    pub fn forward(
        &self,
        x: &Tensor,
        rope_cs: (&Tensor, &Tensor),
        mask: &Mask,
        kv: &mut Option<(Tensor, Tensor)>,
    ) -> Result<Tensor> {
        self.o.forward(&self.attend(x, rope_cs, mask, kv)?)
    }

    fn linears(&self) -> [&Linear; 4] {
        [&self.q, &self.k, &self.v, &self.o]
    }
}

/// The SwiGLU MLP: down(silu(gate(x)) · up(x)).
pub struct Mlp {
    gate: Linear,
    up: Linear,
    down: Linear,
    #[cfg(feature = "cuda")]
    fused: Option<std::sync::Arc<crate::gpu::PrefillKernels>>,
}

impl Mlp {
    pub fn load(w: &WeightSource, layer: usize) -> Result<Self> {
        let lin = |t| w.linear(&layer_tensor(layer, t));
        Ok(Mlp {
            gate: lin(LayerTensor::Gate)?,
            up: lin(LayerTensor::Up)?,
            down: lin(LayerTensor::Down)?,
            #[cfg(feature = "cuda")]
            fused: w.fused.clone(),
        })
    }

    /// silu(gate(x)) · up(x): the input of `down_proj`.
    pub fn hidden(&self, x: &Tensor) -> Result<Tensor> {
        let (g, u) = (self.gate.forward(x)?, self.up.forward(x)?);
        #[cfg(feature = "cuda")]
        if let Some(h) = match &self.fused {
            Some(f) => f.swiglu(&g, &u)?,
            None => None,
        } {
            return Ok(h);
        }
        Ok((g.silu()? * u)?)
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.down.forward(&self.hidden(x)?)
    }

    fn linears(&self) -> [&Linear; 3] {
        [&self.gate, &self.up, &self.down]
    }
}

/// One decoder layer: pre-norm attention and pre-norm MLP, each with a residual.
pub struct Block {
    input_norm: Tensor,
    attn: Attention,
    post_norm: Tensor,
    mlp: Mlp,
    eps: f64,
}

impl Block {
    pub fn load(w: &WeightSource, cfg: &Config, layer: usize) -> Result<Self> {
        Ok(Block {
            input_norm: w.tensor(&layer_tensor(layer, LayerTensor::InputNorm))?,
            attn: Attention::load(w, cfg, layer)?,
            post_norm: w.tensor(&layer_tensor(layer, LayerTensor::PostNorm))?,
            mlp: Mlp::load(w, layer)?,
            eps: cfg.rms_norm_eps,
        })
    }

    /// Upload the given linear layers of block `layer` again from `w` (the calibration run
    /// replaces the layers it has just quantized, not the whole block).
    pub fn reload(&mut self, w: &WeightSource, layer: usize, tensors: &[LayerTensor]) -> Result<()> {
        for &t in tensors {
            let slot = match t {
                LayerTensor::Q => &mut self.attn.q,
                LayerTensor::K => &mut self.attn.k,
                LayerTensor::V => &mut self.attn.v,
                LayerTensor::O => &mut self.attn.o,
                LayerTensor::Gate => &mut self.mlp.gate,
                LayerTensor::Up => &mut self.mlp.up,
                LayerTensor::Down => &mut self.mlp.down,
                other => anyhow::bail!("{other:?} is not a linear layer"),
            };
            *slot = w.linear(&layer_tensor(layer, t))?;
        }
        Ok(())
    }

    pub fn forward(
        &self,
        x: &Tensor,
        rope_cs: (&Tensor, &Tensor),
        mask: &Mask,
        kv: &mut Option<(Tensor, Tensor)>,
    ) -> Result<Tensor> {
        let a = self.attn.forward(&rms_norm(x, &self.input_norm, self.eps)?, rope_cs, mask, kv)?;
        let x = (x + a)?;
        let m = self.mlp.forward(&rms_norm(&x, &self.post_norm, self.eps)?)?;
        Ok((x + m)?)
    }

    /// Advance one calibration window through this block by one stage: `state` holds what
    /// the stages before computed (with their layers as they were then), and the tensor
    /// entering `stage` is computed from it with this block's current weights and returned
    /// (for [`Stage::Output`], the block's output). Stages must come in order; each layer's
    /// input is then computed once, through the layers before it as they stand when it is
    /// reached — what calibrating layer by layer needs, at the cost of one block forward.
    pub fn advance(
        &self,
        state: &mut StageState,
        stage: Stage,
        rope_cs: (&Tensor, &Tensor),
        mask: &Mask,
    ) -> Result<Tensor> {
        let missing = || anyhow::anyhow!("block stages must be advanced in order (at {stage:?})");
        let out = match stage {
            Stage::Attention => rms_norm(&state.x, &self.input_norm, self.eps)?,
            Stage::OProj => {
                let xn = state.xn.as_ref().ok_or_else(missing)?;
                self.attn.attend(xn, rope_cs, mask, &mut None)?
            }
            Stage::Mlp => {
                let a = state.attn.as_ref().ok_or_else(missing)?;
                let h = (&state.x + self.attn.o.forward(a)?)?;
                let mn = rms_norm(&h, &self.post_norm, self.eps)?;
                state.residual = Some(h);
                mn
            }
            Stage::DownProj => self.mlp.hidden(state.mlp_in.as_ref().ok_or_else(missing)?)?,
            Stage::Output => {
                let h = state.residual.as_ref().ok_or_else(missing)?;
                (h + self.mlp.down.forward(state.down_in.as_ref().ok_or_else(missing)?)?)?
            }
        };
        match stage {
            Stage::Attention => state.xn = Some(out.clone()),
            Stage::OProj => state.attn = Some(out.clone()),
            Stage::Mlp => state.mlp_in = Some(out.clone()),
            Stage::DownProj => state.down_in = Some(out.clone()),
            Stage::Output => {}
        }
        Ok(out)
    }

    fn linears(&self) -> impl Iterator<Item = &Linear> {
        self.attn.linears().into_iter().chain(self.mlp.linears())
    }
}

/// Per-layer key/value cache, (batch, kv_heads, positions, head_dim).
#[derive(Default)]
pub struct Cache {
    kv: Vec<Option<(Tensor, Tensor)>>,
}

impl Cache {
    /// Positions already cached.
    pub fn len(&self) -> usize {
        self.kv.first().and_then(|x| x.as_ref()).map(|(k, _)| k.dim(2).unwrap_or(0)).unwrap_or(0)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Each layer's cached (keys, values), (batch, kv_heads, positions, head_dim).
    pub fn layers(&self) -> impl Iterator<Item = Option<&(Tensor, Tensor)>> {
        self.kv.iter().map(Option::as_ref)
    }
}

/// The tensors and layers of one block, for a step that runs them with its own kernels
/// (`model::graph`).
pub struct BlockParts<'a> {
    pub input_norm: &'a Tensor,
    pub post_norm: &'a Tensor,
    /// q, k, v, o, gate, up, down.
    pub linears: [&'a Linear; 7],
}

/// The whole model's parts, as [`BlockParts`].
pub struct ModelParts<'a> {
    pub embed: &'a Tensor,
    pub norm: &'a Tensor,
    pub lm_head: &'a Linear,
    /// RoPE tables (positions, head_dim / 2) in the model's dtype.
    pub cos: &'a Tensor,
    pub sin: &'a Tensor,
    pub blocks: Vec<BlockParts<'a>>,
}

pub struct Llama {
    pub cfg: Config,
    pub device: Device,
    /// The dtype weights and activations are held in (f32 on the CPU, bf16 on CUDA);
    /// norms accumulate in f32, softmax and logits are computed in f32 either way.
    pub dtype: DType,
    embed: Tensor,
    blocks: Vec<Block>,
    norm: Tensor,
    /// (hidden, vocab): its own matrix, or the embedding's transpose when tied.
    lm_head: Linear,
    cos: Tensor,
    sin: Tensor,
}

impl Llama {
    /// Build the model from f32 host weights (already dequantized where a plugin applies),
    /// in f32 on the CPU and bf16 on a GPU.
    pub fn new(cfg: &Config, w: &Weights, device: &Device) -> Result<Self> {
        Self::with_packed(cfg, w, device, None)
    }

    /// As [`Llama::new`], with the layers in `packed` kept packed on a GPU (their entries in
    /// `w` are then not uploaded). On the CPU `packed` is ignored: `w` holds the plugin's
    /// dequantized values.
    pub fn with_packed(
        cfg: &Config,
        w: &Weights,
        device: &Device,
        packed: Option<&PackedLayers>,
    ) -> Result<Self> {
        cfg.validate()?;
        // Values were checked where they were made: at load, and as a plugin dequantized them.
        check_shapes(cfg, w)?;
        let dtype = if device.is_cpu() { DType::F32 } else { DType::BF16 };
        let src = WeightSource::new(w, device, dtype, packed)?;
        let blocks =
            (0..cfg.num_hidden_layers).map(|l| Block::load(&src, cfg, l)).collect::<Result<Vec<_>>>()?;
        let embed = src.tensor(EMBED)?;
        let lm_head = if cfg.tie_word_embeddings { Linear::Dense(embed.t()?) } else { src.linear(LM_HEAD)? };
        let (cos, sin) = rope_tables(cfg, cfg.max_position_embeddings.min(MAX_POSITIONS), &Device::Cpu)?;
        let (cos, sin) = (cos.to_dtype(dtype)?.to_device(device)?, sin.to_dtype(dtype)?.to_device(device)?);
        Ok(Llama {
            cfg: cfg.clone(),
            device: device.clone(),
            dtype,
            embed,
            blocks,
            norm: src.tensor(NORM)?,
            lm_head,
            cos,
            sin,
        })
    }

    /// Bytes one decode step of `batch` rows at `context` cached positions must read: every
    /// weight matrix once (lm_head included; the embedding lookup reads only `batch` rows)
    /// plus the KV cache.
    pub fn step_bytes(&self, batch: usize, context: usize) -> u64 {
        let c = &self.cfg;
        let linear: u64 = self.blocks.iter().flat_map(Block::linears).map(Linear::bytes).sum();
        let kv = (c.num_hidden_layers
            * 2
            * c.kv_heads()
            * c.head_dim()
            * context
            * batch
            * self.dtype.size_in_bytes()) as u64;
        linear + self.lm_head.bytes() + kv
    }

    pub fn new_cache(&self) -> Cache {
        Cache::default()
    }

    /// One step over `tokens` (b, t) at `positions` (b, t) (u32, each row's own RoPE
    /// positions) with the attention `mask` of these rows after the cache's positions.
    /// Appends to `cache`. Returns logits (b, t, vocab), or (b, 1, vocab)
    /// for the last position only when `last_only`.
    pub fn forward(
        &self,
        tokens: &Tensor,
        positions: &Tensor,
        mask: &Mask,
        cache: &mut Cache,
        last_only: bool,
    ) -> Result<Tensor> {
        let (b, t) = tokens.dims2()?;
        let c = &self.cfg;
        if cache.kv.len() != c.num_hidden_layers {
            cache.kv = (0..c.num_hidden_layers).map(|_| None).collect();
        }
        let d = c.head_dim();
        let flat_pos = positions.flatten_all()?;
        let cos = self.cos.index_select(&flat_pos, 0)?.reshape((b, t, d / 2))?;
        let sin = self.sin.index_select(&flat_pos, 0)?.reshape((b, t, d / 2))?;
        let mut x = self.embed.index_select(&tokens.flatten_all()?, 0)?.reshape((b, t, c.hidden_size))?;
        for (block, kv) in self.blocks.iter().zip(cache.kv.iter_mut()) {
            x = block.forward(&x, (&cos, &sin), mask, kv)?;
        }
        let x = if last_only { x.narrow(1, t - 1, 1)? } else { x };
        let x = rms_norm(&x, &self.norm, c.rms_norm_eps)?;
        Ok(self.lm_head.forward(&x)?.to_dtype(DType::F32)?)
    }

    /// The embedding of one unpadded sequence, (1, t, hidden): the first block's input.
    pub fn embed(&self, tokens: &[u32]) -> Result<Tensor> {
        let ids = Tensor::new(tokens, &self.device)?;
        Ok(self.embed.index_select(&ids, 0)?.unsqueeze(0)?)
    }

    /// The model's tensors and layers by role (for the captured decode step).
    pub fn parts(&self) -> ModelParts<'_> {
        let blocks = self
            .blocks
            .iter()
            .map(|b| BlockParts {
                input_norm: &b.input_norm,
                post_norm: &b.post_norm,
                linears: [&b.attn.q, &b.attn.k, &b.attn.v, &b.attn.o, &b.mlp.gate, &b.mlp.up, &b.mlp.down],
            })
            .collect();
        ModelParts {
            embed: &self.embed,
            norm: &self.norm,
            lm_head: &self.lm_head,
            cos: &self.cos,
            sin: &self.sin,
            blocks,
        }
    }

    /// The blocks, for callers that run them one at a time (the bit-allocation search
    /// swaps one layer of one block and runs the rest from a cached input).
    pub fn blocks(&self) -> &[Block] {
        &self.blocks
    }

    pub fn block_mut(&mut self, i: usize) -> Option<&mut Block> {
        self.blocks.get_mut(i)
    }

    /// Which fused prefill kernels forwards take, where this model has them (GPU, sm_80+).
    pub fn prefill_fusion(&self) -> Option<PrefillFusion> {
        #[cfg(feature = "cuda")]
        if let Some(f) = self.blocks.first().and_then(|b| b.attn.fused.as_ref()) {
            let (attention, pointwise) = f.enabled();
            return Some(PrefillFusion { attention, pointwise });
        }
        None
    }

    /// Take the fused prefill kernels `f` says from now on (the bench's A/Bs against candle's
    /// ops on the same model); nothing where the model has none.
    pub fn set_prefill_fusion(&self, f: PrefillFusion) {
        #[cfg(feature = "cuda")]
        if let Some(k) = self.blocks.first().and_then(|b| b.attn.fused.as_ref()) {
            k.set_enabled(f.attention, f.pointwise);
        }
        let _ = f;
    }

    /// Run blocks `from..` on `x`, the input of block `from` of one unpadded sequence
    /// (`ctx` for its length), without a cache, and return the logits (1, t, vocab) in f32.
    pub fn forward_from(&self, from: usize, x: &Tensor, ctx: &SequenceContext) -> Result<Tensor> {
        let mut x = x.clone();
        for block in self.blocks.iter().skip(from) {
            x = block.forward(&x, ctx.rope(), &ctx.mask, &mut None)?;
        }
        let x = rms_norm(&x, &self.norm, self.cfg.rms_norm_eps)?;
        Ok(self.lm_head.forward(&x)?.to_dtype(DType::F32)?)
    }

    /// Prefill-and-decode helper for rows that start at different lengths: builds positions
    /// and the mask from each row's count of left padding `pad[r]`.
    pub fn step(
        &self,
        tokens: &[Vec<u32>],
        pad: &[usize],
        cache: &mut Cache,
        last_only: bool,
    ) -> Result<Tensor> {
        let b = tokens.len();
        let t = tokens.first().map_or(0, |r| r.len());
        if b == 0 || t == 0 || tokens.iter().any(|r| r.len() != t) || pad.len() != b {
            bail!("step needs {b} rows of equal, non-zero length and one padding count per row");
        }
        let past = cache.len();
        let total = past + t;
        if total > self.cos.dim(0)? {
            bail!("sequence of {total} tokens is longer than the model's {} positions", self.cos.dim(0)?);
        }
        let pos: Vec<u32> = pad
            .iter()
            .flat_map(|&pad_r| (past..total).map(move |abs| abs.saturating_sub(pad_r) as u32))
            .collect();
        let flat: Vec<u32> = tokens.iter().flatten().copied().collect();
        let dev = &self.device;
        let toks = Tensor::from_vec(flat, (b, t), dev)?;
        let pos = Tensor::from_vec(pos, (b, t), dev)?;
        let mask = Mask::new(pad, past, t, dev)?;
        self.forward(&toks, &pos, &mask, cache, last_only)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama3_rope_scaling_matches_the_published_formula() {
        // Expected values: Llama-3.2-1B's rope_scaling (factor 32, low 1, high 4, original
        // context 8192, theta 500000, head_dim 64) through transformers'
        // `_compute_llama3_parameters`, evaluated in Python with math (f64):
        // pair 0 is high-frequency (kept), 15-17 are in the blend band, 31 is divided by 32.
        let cfg = crate::model::config::preset("llama-3.2-1b").unwrap();
        let inv = rope_inv_freq(&cfg);
        assert_eq!(inv.len(), 32);
        for (i, want) in [
            (0, 1.0),
            (15, 0.001290547928209264),
            (16, 0.00042955679655936815),
            (17, 9.70828780262767e-05),
            (31, 9.418306725434909e-08),
        ] {
            assert!((inv[i] - want).abs() <= 1e-12 * want, "pair {i}: {} vs {want}", inv[i]);
        }
        // Without scaling: plain theta^(-2i/d).
        let plain = Config { rope_scaling: None, ..cfg };
        assert!((rope_inv_freq(&plain)[16] - 0.001414213562373095).abs() < 1e-15);
    }

    /// The parallel 16-bit conversion gives candle's own `to_dtype` bits, ties, subnormals,
    /// infinities and all (the values a GPU model computes with must not move).
    #[test]
    fn parallel_conversion_is_candles() {
        let mut data: Vec<f32> =
            (0..300_001u32).map(|i| f32::from_bits(i.wrapping_mul(2_654_435_761))).collect();
        data.retain(|v| !v.is_nan());
        data.extend([1.0 + f32::EPSILON * 0.5, 65520.0, -0.0, f32::MIN_POSITIVE / 3.0, f32::INFINITY]);
        let n = data.len();
        let weights: Weights =
            [("t".to_string(), super::super::weights::HostTensor { shape: vec![n], data: data.clone() })]
                .into();
        let cpu = Device::Cpu;
        for dtype in [DType::BF16, DType::F16] {
            let got = WeightSource::new(&weights, &cpu, dtype, None).unwrap().tensor("t").unwrap();
            let want = Tensor::from_slice(&data, n, &cpu).unwrap().to_dtype(dtype).unwrap();
            let bits = |t: &Tensor| {
                t.to_dtype(DType::F32)
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap()
                    .iter()
                    .map(|v| v.to_bits())
                    .collect::<Vec<_>>()
            };
            assert_eq!(got.dtype(), dtype);
            assert_eq!(bits(&got), bits(&want), "{dtype:?}");
        }
    }
}
