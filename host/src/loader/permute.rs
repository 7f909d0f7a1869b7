//! The Meta/GGUF RoPE row layout (interleaved pairs) and the HF one (rotate-half).
//!
//! A permutation of whole rows, so it applies alike to f32 rows and to packed rows whose
//! blocks run along the row (GGUF blocks): [`hf_row_sources`] says which GGUF row each HF row
//! is, [`unpermute_rows`] and [`permute_byte_rows`] move the rows.

use crate::model::HostTensor;
use anyhow::{bail, Result};

/// For each HF (rotate-half) row, the Meta/GGUF (interleaved-pair) row it comes from, per
/// head: the inverse of the permute in transformers' `convert_llama_weights_to_hf.py`,
/// which llama.cpp's `convert_hf_to_gguf.py` applies again (`LlamaModel.permute`).
pub fn hf_row_sources(rows: usize, heads: usize) -> Result<Vec<usize>> {
    if heads == 0 || !rows.is_multiple_of(heads) || !(rows / heads).is_multiple_of(2) {
        bail!("cannot split {rows} rows into {heads} heads of even size");
    }
    let d = rows / heads;
    let mut src = vec![0; rows];
    for h in 0..heads {
        for half in 0..2 {
            for i in 0..d / 2 {
                src[h * d + half * (d / 2) + i] = h * d + 2 * i + half;
            }
        }
    }
    Ok(src)
}

/// Meta/GGUF interleaved-pair rows → HF rotate-half rows.
pub fn unpermute_rows(t: &HostTensor, heads: usize) -> Result<HostTensor> {
    let cols = t.shape[1];
    let src = hf_row_sources(t.shape[0], heads)?;
    let mut out = vec![0f32; t.data.len()];
    for (dst, &s) in src.iter().enumerate() {
        out[dst * cols..(dst + 1) * cols].copy_from_slice(&t.data[s * cols..(s + 1) * cols]);
    }
    Ok(HostTensor { shape: t.shape.clone(), data: out })
}

/// Rows of `row_bytes` bytes each, moved between the layouts: `to_hf` takes GGUF rows to HF
/// rows (what the loader does), otherwise HF rows back to GGUF rows (what an export does).
pub fn permute_byte_rows(bytes: &[u8], rows: usize, heads: usize, to_hf: bool) -> Result<Vec<u8>> {
    if rows == 0 || !bytes.len().is_multiple_of(rows) {
        bail!("{} bytes are not {rows} rows of equal size", bytes.len());
    }
    let rb = bytes.len() / rows;
    let src = hf_row_sources(rows, heads)?;
    let mut out = vec![0u8; bytes.len()];
    for (hf, &gg) in src.iter().enumerate() {
        let (from, to) = if to_hf { (gg, hf) } else { (hf, gg) };
        out[to * rb..(to + 1) * rb].copy_from_slice(&bytes[from * rb..(from + 1) * rb]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_rows_round_trip_and_agree_with_f32_rows() {
        let (rows, cols, heads) = (8, 3, 2);
        let t = HostTensor { shape: vec![rows, cols], data: (0..rows * cols).map(|v| v as f32).collect() };
        let bytes: Vec<u8> = t.data.iter().flat_map(|v| v.to_le_bytes()).collect();
        let hf = permute_byte_rows(&bytes, rows, heads, true).unwrap();
        let want: Vec<u8> =
            unpermute_rows(&t, heads).unwrap().data.iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(hf, want);
        assert_ne!(hf, bytes);
        assert_eq!(permute_byte_rows(&hf, rows, heads, false).unwrap(), bytes);
        assert!(permute_byte_rows(&bytes[1..], rows, heads, true).is_err());
    }
}
