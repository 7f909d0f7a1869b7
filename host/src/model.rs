//! The Llama architecture, top to bottom, in the Hugging Face layout (rotate-half RoPE,
//! grouped-query attention, SwiGLU MLP, RMSNorm), on candle tensors. Loaders for the
//! formats llq reads (HF directory, GGUF, llama2.c, synthetic presets) live in `loader`;
//! they all produce a [`Config`] and a [`Weights`] map in HF naming, which
//! [`Llama::new`] turns into device tensors after the quantization plugin has replaced the
//! linear layers' weights by their dequantized values.

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Llama-3 style RoPE frequency scaling (`rope_scaling` in config.json).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RopeScaling {
    pub rope_type: String,
    pub factor: f64,
    pub low_freq_factor: f64,
    pub high_freq_factor: f64,
    pub original_max_position_embeddings: usize,
}

/// The model hyper-parameters, named as in HF `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    pub vocab_size: usize,
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    #[serde(default = "default_theta")]
    pub rope_theta: f64,
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: usize,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    #[serde(default)]
    pub rope_scaling: Option<RopeScaling>,
    #[serde(default)]
    pub head_dim: Option<usize>,
}

fn default_eps() -> f64 {
    1e-6
}
fn default_theta() -> f64 {
    10_000.0
}
fn default_max_pos() -> usize {
    4096
}

impl Config {
    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }
    pub fn head_dim(&self) -> usize {
        self.head_dim.unwrap_or(self.hidden_size / self.num_attention_heads)
    }

    /// Check the numbers fit together before any tensor is touched.
    pub fn validate(&self) -> Result<()> {
        let c = self;
        if c.hidden_size == 0 || c.num_hidden_layers == 0 || c.num_attention_heads == 0 || c.vocab_size == 0 || c.intermediate_size == 0 {
            bail!("hidden_size, intermediate_size, num_hidden_layers, num_attention_heads and vocab_size must be positive");
        }
        if c.kv_heads() == 0 || c.num_attention_heads % c.kv_heads() != 0 {
            bail!("num_attention_heads ({}) must be a multiple of num_key_value_heads ({})", c.num_attention_heads, c.kv_heads());
        }
        if c.head_dim() % 2 != 0 || c.head_dim() == 0 {
            bail!("head dimension {} must be even", c.head_dim());
        }
        if !(c.rms_norm_eps > 0.0 && c.rope_theta > 0.0) {
            bail!("rms_norm_eps and rope_theta must be positive");
        }
        Ok(())
    }

    /// The names and shapes (rows = out features, cols = in features) of every linear layer
    /// a quantization method replaces.
    pub fn linear_layers(&self) -> Vec<(String, usize, usize)> {
        let (h, i, d) = (self.hidden_size, self.intermediate_size, self.head_dim());
        let (q, kv) = (self.num_attention_heads * d, self.kv_heads() * d);
        let mut out = vec![];
        for l in 0..self.num_hidden_layers {
            let p = format!("model.layers.{l}");
            out.push((format!("{p}.self_attn.q_proj.weight"), q, h));
            out.push((format!("{p}.self_attn.k_proj.weight"), kv, h));
            out.push((format!("{p}.self_attn.v_proj.weight"), kv, h));
            out.push((format!("{p}.self_attn.o_proj.weight"), h, q));
            out.push((format!("{p}.mlp.gate_proj.weight"), i, h));
            out.push((format!("{p}.mlp.up_proj.weight"), i, h));
            out.push((format!("{p}.mlp.down_proj.weight"), h, i));
        }
        out
    }

    /// Every tensor the model needs, with its shape.
    pub fn expected_tensors(&self) -> Vec<(String, Vec<usize>)> {
        let h = self.hidden_size;
        let mut out = vec![("model.embed_tokens.weight".to_string(), vec![self.vocab_size, h]), ("model.norm.weight".into(), vec![h])];
        if !self.tie_word_embeddings {
            out.push(("lm_head.weight".into(), vec![self.vocab_size, h]));
        }
        for l in 0..self.num_hidden_layers {
            out.push((format!("model.layers.{l}.input_layernorm.weight"), vec![h]));
            out.push((format!("model.layers.{l}.post_attention_layernorm.weight"), vec![h]));
        }
        out.extend(self.linear_layers().into_iter().map(|(n, r, c)| (n, vec![r, c])));
        out
    }
}

/// A tensor in host memory, f32, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// All of a model's tensors by HF name.
pub type Weights = BTreeMap<String, HostTensor>;

/// Check that `weights` holds exactly the tensors `cfg` needs, with the right shapes.
pub fn check_weights(cfg: &Config, weights: &Weights) -> Result<()> {
    for (name, shape) in cfg.expected_tensors() {
        let t = weights.get(&name).with_context(|| format!("tensor `{name}` is missing"))?;
        if t.shape != shape {
            bail!("tensor `{name}` has shape {:?}, the config implies {:?}", t.shape, shape);
        }
        if t.data.len() != shape.iter().product::<usize>() {
            bail!("tensor `{name}` holds {} values for shape {:?}", t.data.len(), shape);
        }
    }
    Ok(())
}

/// RoPE inverse frequencies, one per pair of dimensions, with Llama-3 scaling applied
/// (transformers' `_compute_llama3_parameters`: long wavelengths divided by `factor`, short
/// ones kept, a linear blend in between).
pub fn rope_inv_freq(cfg: &Config) -> Vec<f64> {
    let d = cfg.head_dim();
    let mut inv: Vec<f64> = (0..d / 2).map(|i| 1.0 / cfg.rope_theta.powf(2.0 * i as f64 / d as f64)).collect();
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
fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    Ok(candle_nn::ops::rms_norm(&x.contiguous()?, w, eps as f32)?)
}

fn softmax_last(x: &Tensor) -> Result<Tensor> {
    Ok(candle_nn::ops::softmax_last_dim(&x.contiguous()?)?)
}

/// x (b, h, t, d) with cos/sin (b, t, d/2): x·cos + rotate_half(x)·sin.
fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    Ok(candle_nn::rotary_emb::rope(&x.contiguous()?, cos, sin)?)
}

/// A linear layer `y = x · Wᵀ`: a dense matrix held as its transpose (in, out) (a view is
/// fine: the tied lm_head is the embedding's transpose without a copy), or, on a GPU, a
/// method's packed matrix run by its own kernels.
pub enum Linear {
    Dense(Tensor),
    #[cfg(feature = "cuda")]
    Packed(crate::gpu::PackedLinear),
}

impl Linear {
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Linear::Dense(w) => Ok(x.broadcast_matmul(w)?),
            #[cfg(feature = "cuda")]
            Linear::Packed(p) => p.forward(x),
        }
    }
    /// Bytes of the weights on the device.
    pub fn bytes(&self) -> u64 {
        match self {
            Linear::Dense(w) => (w.elem_count() * w.dtype().size_in_bytes()) as u64,
            #[cfg(feature = "cuda")]
            Linear::Packed(p) => p.bytes(),
        }
    }
}

/// Linear layers kept packed by the quantization plugin (HF weight name → packed matrix),
/// with the plugin's CUDA kernels: on a GPU these run without being dequantized at load.
pub struct PackedLayers {
    pub method: String,
    pub kernels: llq_sdk::CudaKernels,
    pub layers: std::collections::HashMap<String, crate::quant::PackedMatrix>,
}

struct Layer {
    input_norm: Tensor,
    post_norm: Tensor,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    gate: Linear,
    up: Linear,
    down: Linear,
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
}

pub struct Llama {
    pub cfg: Config,
    pub device: Device,
    /// The dtype weights and activations are held in (f32 on the CPU, bf16 on CUDA);
    /// norms accumulate in f32, softmax and logits are computed in f32 either way.
    pub dtype: DType,
    embed: Tensor,
    layers: Vec<Layer>,
    norm: Tensor,
    /// (hidden, vocab): its own matrix, or the embedding's transpose when tied.
    lm_head: Linear,
    cos: Tensor,
    sin: Tensor,
}

/// `cpu`, `cuda`, `cuda:N`, or `auto` (the first GPU when built with the `cuda` feature and
/// one is present, else the CPU; said in the log).
pub fn device(spec: &str) -> Result<Device> {
    let cuda = |n: usize| -> Result<Device> {
        let d = Device::new_cuda(n).with_context(|| format!("cannot open CUDA device {n} (is llq-host built with --features cuda, and is there a GPU?)"))?;
        #[cfg(feature = "cuda")]
        if let Device::Cuda(c) = &d {
            // SAFETY: llq uses the one stream candle created, so the per-buffer events that
            // order work across streams are not needed; they cost driver calls on every launch.
            unsafe { c.disable_event_tracking() };
        }
        Ok(d)
    };
    match spec {
        "cpu" => Ok(Device::Cpu),
        "cuda" => cuda(0),
        "auto" => {
            let d = if cfg!(feature = "cuda") && candle_core::utils::cuda_is_available() { cuda(0).unwrap_or(Device::Cpu) } else { Device::Cpu };
            tracing::info!("device: {}", if d.is_cuda() { "cuda:0" } else { "cpu" });
            Ok(d)
        }
        s => match s.strip_prefix("cuda:").and_then(|n| n.parse().ok()) {
            Some(n) => cuda(n),
            None => bail!("unknown device `{s}` (cpu, cuda, cuda:N or auto)"),
        },
    }
}

/// The longest sequence the RoPE tables cover.
pub const MAX_POSITIONS: usize = 16_384;

impl Llama {
    /// Build the model from f32 host weights (already dequantized where a plugin applies),
    /// in f32 on the CPU and bf16 on a GPU.
    pub fn new(cfg: &Config, w: &Weights, device: &Device) -> Result<Self> {
        Self::with_packed(cfg, w, device, None)
    }

    /// As [`Llama::new`], with the layers in `packed` kept packed on a GPU (their entries in
    /// `w` are then not uploaded). On the CPU `packed` is ignored: `w` holds the plugin's
    /// dequantized values.
    pub fn with_packed(cfg: &Config, w: &Weights, device: &Device, packed: Option<&PackedLayers>) -> Result<Self> {
        let dtype = if device.is_cpu() { DType::F32 } else { DType::BF16 };
        Self::build(cfg, w, device, dtype, packed)
    }

    pub fn with_dtype(cfg: &Config, w: &Weights, device: &Device, dtype: DType) -> Result<Self> {
        Self::build(cfg, w, device, dtype, None)
    }

    fn build(cfg: &Config, w: &Weights, device: &Device, dtype: DType, packed: Option<&PackedLayers>) -> Result<Self> {
        cfg.validate()?;
        check_weights(cfg, w)?;
        #[cfg(feature = "cuda")]
        let kernels = match (packed, device) {
            (Some(p), Device::Cuda(d)) => Some((p, crate::gpu::compile(&p.method, &p.kernels, d)?, d)),
            _ => None,
        };
        #[cfg(not(feature = "cuda"))]
        let _ = packed;
        // Everything goes to `dtype` on the host first: one upload per tensor.
        let mat = |name: &str| -> Result<Tensor> {
            let h = &w[name];
            Ok(Tensor::from_slice(&h.data, h.shape.as_slice(), &Device::Cpu)?.to_dtype(dtype)?.to_device(device)?)
        };
        let lin = |name: &str| -> Result<Linear> {
            #[cfg(feature = "cuda")]
            if let Some((p, k, d)) = &kernels {
                if let Some(m) = p.layers.get(name) {
                    return Ok(Linear::Packed(crate::gpu::PackedLinear::upload(m, k, d).with_context(|| format!("uploading packed {name}"))?));
                }
            }
            Ok(Linear::Dense(mat(name)?.t()?.contiguous()?))
        };
        let mut layers = vec![];
        for l in 0..cfg.num_hidden_layers {
            let p = format!("model.layers.{l}");
            layers.push(Layer {
                input_norm: mat(&format!("{p}.input_layernorm.weight"))?,
                post_norm: mat(&format!("{p}.post_attention_layernorm.weight"))?,
                q: lin(&format!("{p}.self_attn.q_proj.weight"))?,
                k: lin(&format!("{p}.self_attn.k_proj.weight"))?,
                v: lin(&format!("{p}.self_attn.v_proj.weight"))?,
                o: lin(&format!("{p}.self_attn.o_proj.weight"))?,
                gate: lin(&format!("{p}.mlp.gate_proj.weight"))?,
                up: lin(&format!("{p}.mlp.up_proj.weight"))?,
                down: lin(&format!("{p}.mlp.down_proj.weight"))?,
            });
        }
        let embed = mat("model.embed_tokens.weight")?;
        let lm_head = if cfg.tie_word_embeddings { Linear::Dense(embed.t()?) } else { lin("lm_head.weight")? };
        let (cos, sin) = rope_tables(cfg, cfg.max_position_embeddings.min(MAX_POSITIONS), &Device::Cpu)?;
        let (cos, sin) = (cos.to_dtype(dtype)?.to_device(device)?, sin.to_dtype(dtype)?.to_device(device)?);
        Ok(Llama { cfg: cfg.clone(), device: device.clone(), dtype, embed, layers, norm: mat("model.norm.weight")?, lm_head, cos, sin })
    }

    /// Bytes one decode step of `batch` rows at `context` cached positions must read: every
    /// weight matrix once (lm_head included; the embedding lookup reads only `batch` rows)
    /// plus the KV cache.
    pub fn step_bytes(&self, batch: usize, context: usize) -> u64 {
        let c = &self.cfg;
        let linear: u64 = self.layers.iter().flat_map(|l| [&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down]).map(Linear::bytes).sum();
        let kv = (c.num_hidden_layers * 2 * c.kv_heads() * c.head_dim() * context * batch * self.dtype.size_in_bytes()) as u64;
        linear + self.lm_head.bytes() + kv
    }

    pub fn new_cache(&self) -> Cache {
        Cache::default()
    }

    /// One step over `tokens` (b, t) at `positions` (b, t) (u32, each row's own RoPE
    /// positions) with an additive attention `mask` (b, 1, t, past + t): 0 where a query may
    /// look, −inf elsewhere. Appends to `cache`. Returns logits (b, t, vocab), or (b, 1, vocab)
    /// for the last position only when `last_only`.
    pub fn forward(&self, tokens: &Tensor, positions: &Tensor, mask: &Tensor, cache: &mut Cache, last_only: bool) -> Result<Tensor> {
        let (b, t) = tokens.dims2()?;
        let c = &self.cfg;
        if cache.kv.len() != c.num_hidden_layers {
            cache.kv = (0..c.num_hidden_layers).map(|_| None).collect();
        }
        let (h, kvh, d) = (c.num_attention_heads, c.kv_heads(), c.head_dim());
        let rep = h / kvh;
        let flat_pos = positions.flatten_all()?;
        let cos = self.cos.index_select(&flat_pos, 0)?.reshape((b, t, d / 2))?;
        let sin = self.sin.index_select(&flat_pos, 0)?.reshape((b, t, d / 2))?;
        let mut x = self.embed.index_select(&tokens.flatten_all()?, 0)?.reshape((b, t, c.hidden_size))?;
        let scale = 1.0 / (d as f64).sqrt();
        for (i, l) in self.layers.iter().enumerate() {
            let xn = rms_norm(&x, &l.input_norm, c.rms_norm_eps)?;
            let q = l.q.forward(&xn)?.reshape((b, t, h, d))?.transpose(1, 2)?.contiguous()?;
            let k = l.k.forward(&xn)?.reshape((b, t, kvh, d))?.transpose(1, 2)?.contiguous()?;
            let v = l.v.forward(&xn)?.reshape((b, t, kvh, d))?.transpose(1, 2)?.contiguous()?;
            let q = rope(&q, &cos, &sin)?;
            let k = rope(&k, &cos, &sin)?;
            let (k, v) = match cache.kv[i].take() {
                Some((pk, pv)) => (Tensor::cat(&[&pk, &k], 2)?, Tensor::cat(&[&pv, &v], 2)?),
                None => (k, v),
            };
            cache.kv[i] = Some((k.clone(), v.clone()));
            let total = k.dim(2)?;
            // Grouped-query attention: each KV head serves `rep` query heads.
            let q = q.reshape((b, kvh, rep * t, d))?;
            let scores = (q.matmul(&k.t()?)?.to_dtype(DType::F32)? * scale)?.reshape((b, kvh, rep, t, total))?;
            let scores = scores.broadcast_add(&mask.reshape((b, 1, 1, t, total))?)?;
            let p = softmax_last(&scores)?.to_dtype(self.dtype)?.reshape((b, kvh, rep * t, total))?;
            let a = p.matmul(&v)?.reshape((b, h, t, d))?.transpose(1, 2)?.reshape((b, t, h * d))?;
            x = (x + l.o.forward(&a)?)?;
            let xn = rms_norm(&x, &l.post_norm, c.rms_norm_eps)?;
            let g = l.gate.forward(&xn)?.silu()?;
            let u = l.up.forward(&xn)?;
            x = (x + l.down.forward(&(g * u)?)?)?;
        }
        let x = if last_only { x.narrow(1, t - 1, 1)? } else { x };
        let x = rms_norm(&x, &self.norm, c.rms_norm_eps)?;
        Ok(self.lm_head.forward(&x)?.to_dtype(DType::F32)?)
    }

    /// Prefill-and-decode helper for rows that start at different lengths: builds positions
    /// and the mask from each row's count of left padding `pad[r]`.
    pub fn step(&self, tokens: &[Vec<u32>], pad: &[usize], cache: &mut Cache, last_only: bool) -> Result<Tensor> {
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
        let mut pos = Vec::with_capacity(b * t);
        let mut mask = Vec::with_capacity(b * t * total);
        for r in 0..b {
            for i in 0..t {
                let abs = past + i;
                pos.push(abs.saturating_sub(pad[r]) as u32);
                for j in 0..total {
                    // Causal, never into the row's padding; a padding query sees itself only.
                    let ok = if abs < pad[r] { j == abs } else { j <= abs && j >= pad[r] };
                    mask.push(if ok { 0f32 } else { f32::NEG_INFINITY });
                }
            }
        }
        let flat: Vec<u32> = tokens.iter().flatten().copied().collect();
        let dev = &self.device;
        let toks = Tensor::from_vec(flat, (b, t), dev)?;
        let pos = Tensor::from_vec(pos, (b, t), dev)?;
        let mask = Tensor::from_vec(mask, (b, 1, t, total), dev)?;
        self.forward(&toks, &pos, &mask, cache, last_only)
    }
}

/// Log-softmax over the last dimension, in f32 on the host: (rows, vocab) → rows of log-probs.
pub fn log_softmax_rows(logits: &Tensor) -> Result<Vec<Vec<f32>>> {
    let v = logits.to_dtype(DType::F32)?;
    let dims = v.dims().to_vec();
    let vocab = *dims.last().context("logits without dimensions")?;
    let rows: Vec<f32> = v.flatten_all()?.to_vec1()?;
    Ok(rows
        .chunks(vocab)
        .map(|r| {
            let m = r.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let lse = m + r.iter().map(|x| (x - m).exp()).sum::<f32>().ln();
            r.iter().map(|x| x - lse).collect()
        })
        .collect())
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
        let cfg = crate::loader::preset("llama-3.2-1b").unwrap();
        let inv = rope_inv_freq(&cfg);
        assert_eq!(inv.len(), 32);
        for (i, want) in [(0, 1.0), (15, 0.001290547928209264), (16, 0.00042955679655936815), (17, 9.70828780262767e-05), (31, 9.418306725434909e-08)] {
            assert!((inv[i] - want).abs() <= 1e-12 * want, "pair {i}: {} vs {want}", inv[i]);
        }
        // Without scaling: plain theta^(-2i/d).
        let plain = Config { rope_scaling: None, ..cfg };
        assert!((rope_inv_freq(&plain)[16] - 0.001414213562373095).abs() < 1e-15);
    }
}
