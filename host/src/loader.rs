//! Reading models into [`Config`] + [`Weights`] (HF naming, f32, HF rotate-half Q/K layout)
//! and a [`Tokenizer`], from any of:
//! - an HF directory: `config.json`, `model.safetensors` or sharded `*.safetensors` with
//!   `model.safetensors.index.json`, `tokenizer.json` (bf16/f16/f32 weights);
//! - a GGUF file (llama.cpp): tensors dequantized to f32 — the "unquantized" reference is
//!   then the file's own quantization dequantized, which reports say — Q/K rows un-permuted,
//!   the tokenizer built from the GGUF metadata;
//! - a llama2.c checkpoint (`*.bin`) with `tok512.bin`-style tokenizer beside it;
//! - `synthetic:<preset>`: a published config with seeded random weights (speed only).

use crate::model::{check_weights, Config, HostTensor, RopeScaling, Weights};
use crate::tokenizer::Tokenizer;
use anyhow::{anyhow, bail, Context, Result};
use std::path::{Path, PathBuf};

/// A loaded model: what it is, its numbers, and where they came from.
pub struct LoadedModel {
    /// What the user passed (path or `synthetic:<preset>`).
    pub id: String,
    /// `hf`, `gguf`, `llama2c` or `synthetic`.
    pub format: String,
    /// What the "unquantized" weights really are (e.g. "GGUF Q4_1 dequantized to f32").
    pub precision_note: String,
    pub config: Config,
    pub weights: Weights,
    pub tokenizer: Tokenizer,
    /// SHA-256 of the weight file(s) as read (hex), or of the preset name and seed.
    pub content_hash: String,
    /// Token ids that end generation.
    pub eos: Vec<u32>,
    /// Bytes of the weights in their stored form.
    pub file_bytes: u64,
    /// The model's chat template (Jinja), if it ships one.
    pub chat_template: Option<String>,
}

impl LoadedModel {
    /// `prompt` as a single user turn in the model's chat template, with the assistant's
    /// turn opened (what lm-eval's `--apply_chat_template` does for a zero-shot request).
    pub fn chat_prompt(&self, prompt: &str) -> Result<String> {
        let tpl = self.chat_template.as_deref().ok_or_else(|| anyhow!("model {} has no chat template", self.id))?;
        let mut env = minijinja::Environment::new();
        env.add_template("chat", tpl).map_err(|e| anyhow!("the chat template of {} does not parse: {e}", self.id))?;
        let ctx = minijinja::context! {
            messages => vec![minijinja::context! { role => "user", content => prompt }],
            add_generation_prompt => true,
            bos_token => "",
            eos_token => "",
        };
        env.get_template("chat").and_then(|t| t.render(ctx)).map_err(|e| anyhow!("rendering the chat template of {}: {e}", self.id))
    }
}

/// Meta/GGUF interleaved-pair rows → HF rotate-half rows, per head (inverse of the permute in
/// transformers' `convert_llama_weights_to_hf.py`, which llama.cpp's converter undoes).
pub fn unpermute_rows(t: &HostTensor, heads: usize) -> Result<HostTensor> {
    let (rows, cols) = (t.shape[0], t.shape[1]);
    if heads == 0 || rows % heads != 0 || (rows / heads) % 2 != 0 {
        bail!("cannot split {rows} rows into {heads} heads of even size");
    }
    let d = rows / heads;
    let mut out = vec![0f32; t.data.len()];
    for h in 0..heads {
        for half in 0..2 {
            for i in 0..d / 2 {
                let dst = h * d + half * (d / 2) + i;
                let src = h * d + 2 * i + half;
                out[dst * cols..(dst + 1) * cols].copy_from_slice(&t.data[src * cols..(src + 1) * cols]);
            }
        }
    }
    Ok(HostTensor { shape: t.shape.clone(), data: out })
}

fn sha256_file(path: &Path) -> Result<String> {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    let mut f = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    std::io::copy(&mut f, &mut h)?;
    Ok(format!("{:x}", h.finalize()))
}

/// Load whatever `spec` names.
pub fn load(spec: &str) -> Result<LoadedModel> {
    if let Some(preset) = spec.strip_prefix("synthetic:") {
        return synthetic(preset, spec);
    }
    let path = Path::new(spec);
    if !path.exists() {
        bail!("model {spec} does not exist (give an HF directory, a .gguf file, a llama2.c .bin, or synthetic:<preset>)");
    }
    let r = if path.is_dir() {
        load_hf(path)
    } else {
        let mut magic = [0u8; 4];
        use std::io::Read;
        std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut magic)).with_context(|| format!("cannot read model {spec}"))?;
        if &magic == b"GGUF" {
            load_gguf(path)
        } else if path.extension().is_some_and(|e| e == "bin") {
            load_llama2c(path)
        } else {
            bail!("model file {spec} is neither GGUF nor a llama2.c .bin")
        }
    };
    let m = r.with_context(|| format!("cannot load model {spec}"))?;
    if m.tokenizer.base_vocab_size() > m.config.vocab_size {
        bail!("model {spec}: its tokenizer has {} tokens but the model's vocab_size is {} (wrong tokenizer?)", m.tokenizer.base_vocab_size(), m.config.vocab_size);
    }
    if m.tokenizer.vocab_size() > m.config.vocab_size {
        tracing::warn!("model {spec}: the tokenizer's special tokens reach id {} beyond vocab_size {}; text never encodes to them", m.tokenizer.vocab_size() - 1, m.config.vocab_size);
    }
    Ok(m)
}

/// Write `m` as an HF directory: config.json, model.safetensors (f32 or bf16),
/// tokenizer.json (and tokenizer_config.json with the chat template, if any).
pub fn write_hf(m: &LoadedModel, dir: &Path, bf16: bool) -> Result<()> {
    let tok = m.tokenizer.to_json().ok_or_else(|| anyhow!("the tokenizer of {} has no tokenizer.json form", m.id))?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut cfg = serde_json::to_value(&m.config)?;
    let o = cfg.as_object_mut().context("config is not an object")?;
    o.insert("architectures".into(), serde_json::json!(["LlamaForCausalLM"]));
    o.insert("model_type".into(), "llama".into());
    o.insert("torch_dtype".into(), if bf16 { "bfloat16" } else { "float32" }.into());
    o.insert("eos_token_id".into(), serde_json::json!(m.eos));
    o.insert("llq_converted_from".into(), serde_json::json!({"id": m.id, "sha256": m.content_hash, "precision": m.precision_note}));
    let write = |name: &str, bytes: &[u8]| crate::results::write_atomic(&dir.join(name), bytes).with_context(|| format!("cannot write {}", dir.join(name).display()));
    write("config.json", serde_json::to_string_pretty(&cfg)?.as_bytes())?;
    write("tokenizer.json", tok.as_bytes())?;
    if let Some(t) = &m.chat_template {
        write("tokenizer_config.json", serde_json::to_string_pretty(&serde_json::json!({"chat_template": t}))?.as_bytes())?;
    }
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = m
        .weights
        .iter()
        .map(|(n, t)| {
            let b: Vec<u8> = if bf16 { t.data.iter().flat_map(|v| half::bf16::from_f32(*v).to_le_bytes()).collect() } else { t.data.iter().flat_map(|v| v.to_le_bytes()).collect() };
            (n.clone(), t.shape.clone(), b)
        })
        .collect();
    let dtype = if bf16 { safetensors::Dtype::BF16 } else { safetensors::Dtype::F32 };
    let views = bytes
        .iter()
        .map(|(n, s, b)| Ok((n.as_str(), safetensors::tensor::TensorView::new(dtype, s.clone(), b).map_err(|e| anyhow!("{n}: {e}"))?)))
        .collect::<Result<Vec<_>>>()?;
    let data = safetensors::serialize(views, None).map_err(|e| anyhow!("serializing: {e}"))?;
    write("model.safetensors", &data)
}

// ---- llama2.c -------------------------------------------------------------------------------

/// llama2.c's `run.c` layout: 7 i32 header (dim, hidden, layers, heads, kv heads, vocab
/// (negative: separate classifier), seq_len), then f32 arrays; RoPE pairs interleaved.
pub fn load_llama2c(path: &Path) -> Result<LoadedModel> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    if bytes.len() < 28 {
        bail!("file is too short for a llama2.c header");
    }
    let hdr: Vec<i32> = bytes[..28].chunks(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    let [dim, hidden, layers, heads, kv_heads, vocab, seq_len] = [hdr[0], hdr[1], hdr[2], hdr[3], hdr[4], hdr[5], hdr[6]];
    if [dim, hidden, layers, heads, kv_heads, seq_len].iter().any(|&v| v <= 0) || vocab == 0 {
        bail!("llama2.c header has non-positive sizes: {hdr:?}");
    }
    let shared = vocab > 0;
    let (dim, hidden, layers, heads, kvh, vocab, seq_len) =
        (dim as usize, hidden as usize, layers as usize, heads as usize, kv_heads as usize, vocab.unsigned_abs() as usize, seq_len as usize);
    if dim % heads != 0 {
        bail!("dim {dim} is not a multiple of {heads} heads");
    }
    let hs = dim / heads;
    let floats: Vec<f32> = bytes[28..].chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    let need = vocab * dim + 2 * layers * dim + layers * dim * (heads * hs) * 2 + 2 * layers * dim * (kvh * hs) + 3 * layers * hidden * dim + dim + seq_len * hs
        + if shared { 0 } else { vocab * dim };
    if floats.len() < need || (bytes.len() - 28) % 4 != 0 {
        bail!("llama2.c file holds {} floats, the header implies {need}", floats.len());
    }
    let mut at = 0usize;
    let mut take = |n: usize| {
        let s = floats[at..at + n].to_vec();
        at += n;
        s
    };
    let embed = take(vocab * dim);
    let rms_att = take(layers * dim);
    let wq = take(layers * dim * heads * hs);
    let wk = take(layers * dim * kvh * hs);
    let wv = take(layers * dim * kvh * hs);
    let wo = take(layers * heads * hs * dim);
    let rms_ffn = take(layers * dim);
    let w1 = take(layers * hidden * dim);
    let w2 = take(layers * dim * hidden);
    let w3 = take(layers * hidden * dim);
    let rms_final = take(dim);
    let _freq_cis = take(seq_len * hs);
    let wcls = if shared { None } else { Some(take(vocab * dim)) };
    let slice = |v: &[f32], l: usize, r: usize, c: usize| HostTensor { shape: vec![r, c], data: v[l * r * c..(l + 1) * r * c].to_vec() };
    let vec1 = |v: &[f32], l: usize, n: usize| HostTensor { shape: vec![n], data: v[l * n..(l + 1) * n].to_vec() };
    let mut w = Weights::new();
    w.insert("model.embed_tokens.weight".into(), HostTensor { shape: vec![vocab, dim], data: embed });
    w.insert("model.norm.weight".into(), HostTensor { shape: vec![dim], data: rms_final });
    if let Some(c) = wcls {
        w.insert("lm_head.weight".into(), HostTensor { shape: vec![vocab, dim], data: c });
    }
    for l in 0..layers {
        let p = format!("model.layers.{l}");
        w.insert(format!("{p}.input_layernorm.weight"), vec1(&rms_att, l, dim));
        w.insert(format!("{p}.post_attention_layernorm.weight"), vec1(&rms_ffn, l, dim));
        w.insert(format!("{p}.self_attn.q_proj.weight"), unpermute_rows(&slice(&wq, l, heads * hs, dim), heads)?);
        w.insert(format!("{p}.self_attn.k_proj.weight"), unpermute_rows(&slice(&wk, l, kvh * hs, dim), kvh)?);
        w.insert(format!("{p}.self_attn.v_proj.weight"), slice(&wv, l, kvh * hs, dim));
        w.insert(format!("{p}.self_attn.o_proj.weight"), slice(&wo, l, dim, heads * hs));
        w.insert(format!("{p}.mlp.gate_proj.weight"), slice(&w1, l, hidden, dim));
        w.insert(format!("{p}.mlp.down_proj.weight"), slice(&w2, l, dim, hidden));
        w.insert(format!("{p}.mlp.up_proj.weight"), slice(&w3, l, hidden, dim));
    }
    let config = Config {
        hidden_size: dim,
        intermediate_size: hidden,
        num_hidden_layers: layers,
        num_attention_heads: heads,
        num_key_value_heads: Some(kvh),
        vocab_size: vocab,
        rms_norm_eps: 1e-5,
        rope_theta: 10_000.0,
        max_position_embeddings: seq_len,
        tie_word_embeddings: shared,
        rope_scaling: None,
        head_dim: None,
    };
    check_weights(&config, &w)?;
    // The tokenizer sits beside the checkpoint: tok<vocab>.bin, or tokenizer.bin.
    let dir = path.parent().unwrap_or(Path::new("."));
    let tok_path = [dir.join(format!("tok{vocab}.bin")), dir.join("tokenizer.bin")]
        .into_iter()
        .find(|p| p.exists())
        .ok_or_else(|| anyhow!("no llama2.c tokenizer (tok{vocab}.bin or tokenizer.bin) next to {}", path.display()))?;
    let tokenizer = Tokenizer::from_llama2c(&tok_path, vocab)?;
    Ok(LoadedModel {
        id: path.display().to_string(),
        format: "llama2c".into(),
        precision_note: "f32 (llama2.c checkpoint)".into(),
        config,
        weights: w,
        tokenizer,
        content_hash: sha256_file(path)?,
        eos: vec![2],
        file_bytes: bytes.len() as u64,
        chat_template: None,
    })
}

// ---- GGUF -----------------------------------------------------------------------------------

pub fn load_gguf(path: &Path) -> Result<LoadedModel> {
    use candle_core::quantized::gguf_file;
    let mut f = std::fs::File::open(path)?;
    let content = gguf_file::Content::read(&mut f).map_err(|e| anyhow!("not a readable GGUF file: {e}"))?;
    let md = &content.metadata;
    let get = |k: &str| md.get(k).ok_or_else(|| anyhow!("GGUF metadata has no `{k}`"));
    let arch = get("general.architecture")?.to_string().map_err(|e| anyhow!("{e}"))?.clone();
    if arch != "llama" {
        bail!("GGUF architecture is `{arch}`; llq reads `llama`");
    }
    let u = |k: &str| -> Result<usize> { Ok(get(&format!("llama.{k}"))?.to_u32().map_err(|e| anyhow!("llama.{k}: {e}"))? as usize) };
    let fl = |k: &str, d: f64| -> f64 { md.get(&format!("llama.{k}")).and_then(|v| v.to_f32().ok()).map_or(d, |v| v as f64) };
    let heads = u("attention.head_count")?;
    let kvh = md.get("llama.attention.head_count_kv").and_then(|v| v.to_u32().ok()).map_or(heads, |v| v as usize);
    let tokens: Vec<String> = get("tokenizer.ggml.tokens")?
        .to_vec()
        .map_err(|e| anyhow!("{e}"))?
        .iter()
        .map(|v| v.to_string().cloned().map_err(|e| anyhow!("tokenizer.ggml.tokens: {e}")))
        .collect::<Result<_>>()?;
    let dev = candle_core::Device::Cpu;
    let mut w = Weights::new();
    let mut qtypes = std::collections::BTreeSet::new();
    let names: Vec<String> = content.tensor_infos.keys().cloned().collect();
    for name in &names {
        let qt = content.tensor(&mut f, name, &dev).map_err(|e| anyhow!("tensor {name}: {e}"))?;
        qtypes.insert(format!("{:?}", qt.dtype()));
        let t = qt.dequantize(&dev).map_err(|e| anyhow!("tensor {name}: {e}"))?;
        let shape = t.dims().to_vec();
        let data: Vec<f32> = t.flatten_all()?.to_vec1()?;
        let ht = HostTensor { shape, data };
        let hf = gguf_to_hf_name(name).ok_or_else(|| anyhow!("unexpected GGUF tensor `{name}`"))?;
        let ht = if hf.ends_with("q_proj.weight") {
            unpermute_rows(&ht, heads)?
        } else if hf.ends_with("k_proj.weight") {
            unpermute_rows(&ht, kvh)?
        } else {
            ht
        };
        w.insert(hf, ht);
    }
    let vocab = md.get("llama.vocab_size").and_then(|v| v.to_u32().ok()).map_or(tokens.len(), |v| v as usize);
    let config = Config {
        hidden_size: u("embedding_length")?,
        intermediate_size: u("feed_forward_length")?,
        num_hidden_layers: u("block_count")?,
        num_attention_heads: heads,
        num_key_value_heads: Some(kvh),
        vocab_size: vocab,
        rms_norm_eps: fl("attention.layer_norm_rms_epsilon", 1e-5),
        rope_theta: fl("rope.freq_base", 10_000.0),
        max_position_embeddings: u("context_length").unwrap_or(4096),
        tie_word_embeddings: !w.contains_key("lm_head.weight"),
        rope_scaling: None,
        head_dim: None,
    };
    check_weights(&config, &w)?;
    let tokenizer = Tokenizer::from_gguf(md, tokens)?;
    let eos = vec![md.get("tokenizer.ggml.eos_token_id").and_then(|v| v.to_u32().ok()).unwrap_or(2)];
    Ok(LoadedModel {
        id: path.display().to_string(),
        format: "gguf".into(),
        precision_note: format!("GGUF {} dequantized to f32 (not the original bf16 weights)", qtypes.into_iter().collect::<Vec<_>>().join("/")),
        config,
        weights: w,
        tokenizer,
        content_hash: sha256_file(path)?,
        eos,
        file_bytes: std::fs::metadata(path)?.len(),
        chat_template: md.get("tokenizer.chat_template").and_then(|v| v.to_string().ok().cloned()),
    })
}

fn gguf_to_hf_name(name: &str) -> Option<String> {
    Some(match name {
        "token_embd.weight" => "model.embed_tokens.weight".into(),
        "output_norm.weight" => "model.norm.weight".into(),
        "output.weight" => "lm_head.weight".into(),
        _ => {
            let rest = name.strip_prefix("blk.")?;
            let (l, t) = rest.split_once('.')?;
            let l: usize = l.parse().ok()?;
            let hf = match t {
                "attn_norm.weight" => "input_layernorm.weight",
                "ffn_norm.weight" => "post_attention_layernorm.weight",
                "attn_q.weight" => "self_attn.q_proj.weight",
                "attn_k.weight" => "self_attn.k_proj.weight",
                "attn_v.weight" => "self_attn.v_proj.weight",
                "attn_output.weight" => "self_attn.o_proj.weight",
                "ffn_gate.weight" => "mlp.gate_proj.weight",
                "ffn_up.weight" => "mlp.up_proj.weight",
                "ffn_down.weight" => "mlp.down_proj.weight",
                _ => return None,
            };
            format!("model.layers.{l}.{hf}")
        }
    })
}

// ---- HF directory ---------------------------------------------------------------------------

pub fn load_hf(dir: &Path) -> Result<LoadedModel> {
    let cfg_path = dir.join("config.json");
    let text = std::fs::read_to_string(&cfg_path).with_context(|| format!("cannot read {}", cfg_path.display()))?;
    let raw: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("{} is not JSON", cfg_path.display()))?;
    let config: Config = serde_json::from_value(raw.clone()).with_context(|| format!("{} is not a Llama config", cfg_path.display()))?;
    config.validate().with_context(|| format!("{}", cfg_path.display()))?;
    let index = dir.join("model.safetensors.index.json");
    let files: Vec<PathBuf> = if index.exists() {
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&index)?).with_context(|| format!("{} is not JSON", index.display()))?;
        let map = v["weight_map"].as_object().with_context(|| format!("{} has no weight_map", index.display()))?;
        let mut f: Vec<PathBuf> = map.values().filter_map(|x| x.as_str()).map(|s| dir.join(s)).collect();
        f.sort();
        f.dedup();
        f
    } else {
        vec![dir.join("model.safetensors")]
    };
    let mut w = Weights::new();
    let mut hasher_input = String::new();
    let mut file_bytes = 0;
    let mut dtypes = std::collections::BTreeSet::new();
    for file in &files {
        let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
        file_bytes += bytes.len() as u64;
        hasher_input.push_str(&sha256_file(file)?);
        let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| anyhow!("{} is not a valid safetensors file: {e}", file.display()))?;
        for (name, view) in st.tensors() {
            dtypes.insert(format!("{:?}", view.dtype()));
            let data = crate::quantize_cmd::to_f32(&name, view.dtype(), view.data()).with_context(|| format!("{}", file.display()))?;
            w.insert(name.to_string(), HostTensor { shape: view.shape().to_vec(), data });
        }
    }
    // Tied models may still carry lm_head; untied ones must.
    if config.tie_word_embeddings {
        w.remove("lm_head.weight");
    }
    w.retain(|k, _| !k.ends_with("rotary_emb.inv_freq"));
    check_weights(&config, &w).with_context(|| format!("weights in {}", dir.display()))?;
    let tok = dir.join("tokenizer.json");
    let tokenizer = Tokenizer::from_file(&tok)?;
    let mut eos = vec![];
    for src in [raw.get("eos_token_id").cloned(), read_json(&dir.join("generation_config.json")).and_then(|g| g.get("eos_token_id").cloned())].into_iter().flatten() {
        match src {
            serde_json::Value::Number(n) => eos.extend(n.as_u64().map(|v| v as u32)),
            serde_json::Value::Array(a) => eos.extend(a.iter().filter_map(|v| v.as_u64()).map(|v| v as u32)),
            _ => {}
        }
    }
    eos.sort();
    eos.dedup();
    let hash = {
        use sha2::Digest;
        format!("{:x}", sha2::Sha256::digest(hasher_input.as_bytes()))
    };
    Ok(LoadedModel {
        id: dir.display().to_string(),
        format: "hf".into(),
        precision_note: format!("{} safetensors, computed in f32", dtypes.into_iter().collect::<Vec<_>>().join("/")),
        config,
        weights: w,
        tokenizer,
        content_hash: hash,
        eos,
        file_bytes,
        chat_template: read_json(&dir.join("tokenizer_config.json")).and_then(|v| v.get("chat_template").and_then(|t| t.as_str()).map(str::to_string)),
    })
}

fn read_json(p: &Path) -> Option<serde_json::Value> {
    serde_json::from_str(&std::fs::read_to_string(p).ok()?).ok()
}

// ---- synthetic ------------------------------------------------------------------------------

/// Published configs for speed benchmarks.
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
            rope_scaling: Some(RopeScaling { rope_type: "llama3".into(), factor: 32.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_max_position_embeddings: 8192 }),
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
        other => bail!("unknown synthetic preset `{other}` (known: llama-3.2-1b, tiny)"),
    }
}

fn synthetic(name: &str, spec: &str) -> Result<LoadedModel> {
    let config = preset(name)?;
    let mut w = Weights::new();
    for (i, (tname, shape)) in config.expected_tensors().into_iter().enumerate() {
        let n: usize = shape.iter().product();
        let data = if shape.len() == 1 { vec![1.0; n] } else { crate::bench::synthetic_weights(i as u64 + 1, n, 0.02) };
        w.insert(tname, HostTensor { shape, data });
    }
    // The preset's real tokenizer when `make models` fetched it, else one token per byte.
    let tok_path = Path::new("models").join(match name {
        "llama-3.2-1b" => "llama-3.2/tokenizer.json",
        _ => "-",
    });
    let tokenizer = if tok_path.is_file() {
        Tokenizer::from_file(&tok_path)?
    } else {
        if name != "tiny" {
            tracing::warn!("{} not found (make models fetches it): synthetic:{name} uses a byte tokenizer", tok_path.display());
        }
        Tokenizer::bytes(config.vocab_size)
    };
    Ok(LoadedModel {
        id: spec.to_string(),
        format: "synthetic".into(),
        precision_note: "synthetic seeded random weights (speed and size only; accuracy is meaningless)".into(),
        content_hash: format!("synthetic:{name}:seed1"),
        eos: vec![],
        file_bytes: 0,
        chat_template: None,
        config,
        weights: w,
        tokenizer,
    })
}
