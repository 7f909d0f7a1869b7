//! The Meta/GGUF RoPE row layout (interleaved pairs) and the HF one (rotate-half).

use crate::model::HostTensor;
use anyhow::{bail, Result};

/// Meta/GGUF interleaved-pair rows → HF rotate-half rows, per head (inverse of the permute in
/// transformers' `convert_llama_weights_to_hf.py`, which llama.cpp's converter undoes).
pub fn unpermute_rows(t: &HostTensor, heads: usize) -> Result<HostTensor> {
    let (rows, cols) = (t.shape[0], t.shape[1]);
    if heads == 0 || !rows.is_multiple_of(heads) || !(rows / heads).is_multiple_of(2) {
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
