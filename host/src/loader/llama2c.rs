//! llama2.c checkpoints (`*.bin`, Karpathy's `run.c` layout) with the `tok<N>.bin`
//! tokenizer beside them.

use super::loaded::LoadedModel;
use super::permute::unpermute_rows;
use crate::model::config::{layer_tensor, LayerTensor, EMBED, LM_HEAD, NORM};
use crate::model::{check_weights, Config, HostTensor, Weights};
use crate::tokenizer::Tokenizer;
use crate::util::digest::sha256_file;
use anyhow::{anyhow, bail, Context, Result};
use std::path::Path;

/// llama2.c's `run.c` layout: 7 i32 header (dim, hidden, layers, heads, kv heads, vocab
/// (negative: separate classifier), seq_len), then f32 arrays; RoPE pairs interleaved.
pub fn load(path: &Path) -> Result<LoadedModel> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    if bytes.len() < 28 {
        bail!("file is too short for a llama2.c header");
    }
    let hdr: Vec<i32> = bytes[..28].chunks(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    let [dim, hidden, layers, heads, kv_heads, vocab, seq_len] =
        [hdr[0], hdr[1], hdr[2], hdr[3], hdr[4], hdr[5], hdr[6]];
    if [dim, hidden, layers, heads, kv_heads, seq_len].iter().any(|&v| v <= 0) || vocab == 0 {
        bail!("llama2.c header has non-positive sizes: {hdr:?}");
    }
    let shared = vocab > 0;
    let (dim, hidden, layers, heads, kvh, vocab, seq_len) = (
        dim as usize,
        hidden as usize,
        layers as usize,
        heads as usize,
        kv_heads as usize,
        vocab.unsigned_abs() as usize,
        seq_len as usize,
    );
    if dim % heads != 0 {
        bail!("dim {dim} is not a multiple of {heads} heads");
    }
    let hs = dim / heads;
    // In u128: a hostile header's sizes must not overflow into a small, "valid" total.
    let [d, hd, l, h, k, v, sl] =
        [dim, hidden, layers, heads * hs, kvh * hs, vocab, seq_len].map(|x| x as u128);
    let need = v * d
        + 2 * l * d
        + l * d * h * 2
        + 2 * l * d * k
        + 3 * l * hd * d
        + d
        + sl * (hs as u128)
        + if shared { 0 } else { v * d };
    let have = (bytes.len() - 28) as u128;
    // llama2.c's export writes exactly these floats: fewer is a cut file, more a header that
    // does not describe the weights (reading a prefix would run a different model).
    if !have.is_multiple_of(4) || have / 4 != need {
        bail!(
            "llama2.c file holds {} bytes of weights ({} floats{}), the header {hdr:?} implies {need} floats",
            have,
            have / 4,
            if !have.is_multiple_of(4) { " and a partial one" } else { "" }
        );
    }
    let floats: Vec<f32> =
        bytes[28..].chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
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
    let slice = |v: &[f32], l: usize, r: usize, c: usize| HostTensor {
        shape: vec![r, c],
        data: v[l * r * c..(l + 1) * r * c].to_vec(),
    };
    let vec1 =
        |v: &[f32], l: usize, n: usize| HostTensor { shape: vec![n], data: v[l * n..(l + 1) * n].to_vec() };
    let mut w = Weights::new();
    w.insert(EMBED.into(), HostTensor { shape: vec![vocab, dim], data: embed });
    w.insert(NORM.into(), HostTensor { shape: vec![dim], data: rms_final });
    if let Some(c) = wcls {
        w.insert(LM_HEAD.into(), HostTensor { shape: vec![vocab, dim], data: c });
    }
    for l in 0..layers {
        let name = |t| layer_tensor(l, t);
        w.insert(name(LayerTensor::InputNorm), vec1(&rms_att, l, dim));
        w.insert(name(LayerTensor::PostNorm), vec1(&rms_ffn, l, dim));
        w.insert(name(LayerTensor::Q), unpermute_rows(&slice(&wq, l, heads * hs, dim), heads)?);
        w.insert(name(LayerTensor::K), unpermute_rows(&slice(&wk, l, kvh * hs, dim), kvh)?);
        w.insert(name(LayerTensor::V), slice(&wv, l, kvh * hs, dim));
        w.insert(name(LayerTensor::O), slice(&wo, l, dim, heads * hs));
        w.insert(name(LayerTensor::Gate), slice(&w1, l, hidden, dim));
        w.insert(name(LayerTensor::Down), slice(&w2, l, dim, hidden));
        w.insert(name(LayerTensor::Up), slice(&w3, l, hidden, dim));
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
        .ok_or_else(|| {
            anyhow!("no llama2.c tokenizer (tok{vocab}.bin or tokenizer.bin) next to {}", path.display())
        })?;
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
