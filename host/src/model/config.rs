//! Model hyper-parameters (named as in HF `config.json`), the published presets llq
//! benchmarks, and the one place tensor names are built ([`layer_tensor`], [`EMBED`],
//! [`NORM`], [`LM_HEAD`]): loaders, the model and quantization all name tensors through it.

use anyhow::{bail, Result};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The token embedding (HF name).
pub const EMBED: &str = "model.embed_tokens.weight";
/// The final RMSNorm.
pub const NORM: &str = "model.norm.weight";
/// The output projection (absent when tied to the embedding).
pub const LM_HEAD: &str = "lm_head.weight";

/// The tensors of one decoder layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LayerTensor {
    InputNorm,
    Q,
    K,
    V,
    O,
    PostNorm,
    Gate,
    Up,
    Down,
}

impl LayerTensor {
    /// The linear layers a quantization method replaces, in model order.
    pub const LINEAR: [LayerTensor; 7] = [
        LayerTensor::Q,
        LayerTensor::K,
        LayerTensor::V,
        LayerTensor::O,
        LayerTensor::Gate,
        LayerTensor::Up,
        LayerTensor::Down,
    ];

    /// The HF module path inside `model.layers.N`.
    pub fn module(self) -> &'static str {
        match self {
            LayerTensor::InputNorm => "input_layernorm",
            LayerTensor::Q => "self_attn.q_proj",
            LayerTensor::K => "self_attn.k_proj",
            LayerTensor::V => "self_attn.v_proj",
            LayerTensor::O => "self_attn.o_proj",
            LayerTensor::PostNorm => "post_attention_layernorm",
            LayerTensor::Gate => "mlp.gate_proj",
            LayerTensor::Up => "mlp.up_proj",
            LayerTensor::Down => "mlp.down_proj",
        }
    }
}

/// The HF name of tensor `t` of decoder layer `layer`, e.g. `model.layers.3.mlp.up_proj.weight`.
pub fn layer_tensor(layer: usize, t: LayerTensor) -> String {
    format!("model.layers.{layer}.{}.weight", t.module())
}

/// Llama-3 style RoPE frequency scaling (`rope_scaling` in config.json).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RopeScaling {
    pub rope_type: String,
    pub factor: f64,
    pub low_freq_factor: f64,
    pub high_freq_factor: f64,
    pub original_max_position_embeddings: usize,
}

/// The model hyper-parameters, named as in HF `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
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
        if c.hidden_size == 0
            || c.num_hidden_layers == 0
            || c.num_attention_heads == 0
            || c.vocab_size == 0
            || c.intermediate_size == 0
        {
            bail!("hidden_size, intermediate_size, num_hidden_layers, num_attention_heads and vocab_size must be positive");
        }
        if c.kv_heads() == 0 || !c.num_attention_heads.is_multiple_of(c.kv_heads()) {
            bail!(
                "num_attention_heads ({}) must be a multiple of num_key_value_heads ({})",
                c.num_attention_heads,
                c.kv_heads()
            );
        }
        if !c.head_dim().is_multiple_of(2) || c.head_dim() == 0 {
            bail!("head dimension {} must be even", c.head_dim());
        }
        if !(c.rms_norm_eps > 0.0 && c.rope_theta > 0.0) {
            bail!("rms_norm_eps and rope_theta must be positive");
        }
        Ok(())
    }

    /// The names and shapes (rows = out features, cols = in features) of every linear layer
    /// a quantization method replaces, layer by layer in [`LayerTensor::LINEAR`] order.
    pub fn linear_layers(&self) -> Vec<(String, usize, usize)> {
        (0..self.num_hidden_layers)
            .flat_map(|l| LayerTensor::LINEAR.map(|t| (layer_tensor(l, t), self.linear_shape(t))))
            .map(|(n, (r, c))| (n, r, c))
            .collect()
    }

    /// (out features, in features) of a linear tensor; norms are (hidden, 1).
    pub fn linear_shape(&self, t: LayerTensor) -> (usize, usize) {
        let (h, i, d) = (self.hidden_size, self.intermediate_size, self.head_dim());
        let (q, kv) = (self.num_attention_heads * d, self.kv_heads() * d);
        match t {
            LayerTensor::Q => (q, h),
            LayerTensor::K | LayerTensor::V => (kv, h),
            LayerTensor::O => (h, q),
            LayerTensor::Gate | LayerTensor::Up => (i, h),
            LayerTensor::Down => (h, i),
            LayerTensor::InputNorm | LayerTensor::PostNorm => (h, 1),
        }
    }

    /// Every tensor the model needs, with its shape.
    pub fn expected_tensors(&self) -> Vec<(String, Vec<usize>)> {
        let h = self.hidden_size;
        let mut out = vec![(EMBED.to_string(), vec![self.vocab_size, h]), (NORM.into(), vec![h])];
        if !self.tie_word_embeddings {
            out.push((LM_HEAD.into(), vec![self.vocab_size, h]));
        }
        for l in 0..self.num_hidden_layers {
            for t in [LayerTensor::InputNorm, LayerTensor::PostNorm] {
                out.push((layer_tensor(l, t), vec![h]));
            }
        }
        out.extend(self.linear_layers().into_iter().map(|(n, r, c)| (n, vec![r, c])));
        out
    }
}

/// Published configs for speed benchmarks, by preset name (`synthetic:<preset>`).
pub fn preset(name: &str) -> Result<Config> {
    match name {
        // meta-llama/Llama-3.2-1B config.json
        "llama-3.2-1b" => Ok(Config {
            hidden_size: 2048,
            intermediate_size: 8192,
            num_hidden_layers: 16,
            num_attention_heads: 32,
            num_key_value_heads: Some(8),
            vocab_size: 128_256,
            rms_norm_eps: 1e-5,
            rope_theta: 500_000.0,
            max_position_embeddings: 131_072,
            tie_word_embeddings: true,
            rope_scaling: Some(RopeScaling {
                rope_type: "llama3".into(),
                factor: 32.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_position_embeddings: 8192,
            }),
            head_dim: Some(64),
        }),
        // HuggingFaceTB/SmolLM2-135M-Instruct config.json: the real model's shapes (three
        // query heads a kv head, 576 = 9 × 64 wide) for GPU paths the 1B model's do not take.
        "smollm2-135m" => Ok(Config {
            hidden_size: 576,
            intermediate_size: 1536,
            num_hidden_layers: 30,
            num_attention_heads: 9,
            num_key_value_heads: Some(3),
            vocab_size: 49_152,
            rms_norm_eps: 1e-5,
            rope_theta: 100_000.0,
            max_position_embeddings: 8192,
            tie_word_embeddings: true,
            rope_scaling: None,
            head_dim: Some(64),
        }),
        // A tiny config for tests.
        "tiny" => Ok(Config {
            hidden_size: 64,
            intermediate_size: 128,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: Some(2),
            vocab_size: 256,
            rms_norm_eps: 1e-5,
            rope_theta: 10_000.0,
            max_position_embeddings: 512,
            tie_word_embeddings: true,
            rope_scaling: None,
            head_dim: None,
        }),
        other => bail!("unknown synthetic preset `{other}` (known: llama-3.2-1b, smollm2-135m, tiny)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensor_names_are_the_hf_names() {
        assert_eq!(layer_tensor(3, LayerTensor::Up), "model.layers.3.mlp.up_proj.weight");
        assert_eq!(layer_tensor(0, LayerTensor::InputNorm), "model.layers.0.input_layernorm.weight");
        let cfg = preset("llama-3.2-1b").unwrap();
        let l = cfg.linear_layers();
        assert_eq!(l.len(), 16 * 7);
        assert_eq!(l[1], ("model.layers.0.self_attn.k_proj.weight".to_string(), 512, 2048));
        assert_eq!(l[6], ("model.layers.0.mlp.down_proj.weight".to_string(), 2048, 8192));
        // Llama-3.2-1B with its tied embedding: 1,235,814,400 parameters.
        let n: usize = cfg.expected_tensors().iter().map(|(_, s)| s.iter().product::<usize>()).sum();
        assert_eq!(n, 1_235_814_400);
    }
}
