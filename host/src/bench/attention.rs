//! The fused prefill attention (`gpu::prefill`) checked alone on shapes the bench's models do
//! not reach: head dimension 128, grouped ratios 1, 3, 4 and 8, query counts that leave a
//! partial tile, keys already cached (chunked prefill), and rows whose left padding reaches
//! into the new tokens. The reference is plain attention in f32 through candle's ops (scores
//! not rounded, an exact softmax, the additive form of the same `Mask`), so it shares no code
//! with either the kernel or the model's unfused bf16 path.

use serde::Serialize;
#[cfg(feature = "cuda")]
use {
    crate::gpu::PrefillKernels,
    crate::model::Mask,
    anyhow::{bail, Result},
    candle_core::{DType, Device, Tensor, D},
};

/// One shape's result: max |Δ| / max |reference| over the whole output.
#[derive(Debug, Serialize)]
pub struct AttentionCheck {
    pub rows: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub queries: usize,
    pub cached: usize,
    pub head_dim: usize,
    pub pad: Vec<usize>,
    pub max_rel_err: f64,
    pub passed: bool,
}

/// The bound a shape must meet: bf16 inputs and output, probabilities rounded to bf16
/// before p·V (the unfused bf16 path is ~1e-2 from this f32 reference too).
pub const MAX_REL_ERR: f64 = 3e-2;

/// (rows, heads, kv_heads, queries, cached, head_dim, left padding per row)
#[cfg(feature = "cuda")]
type Shape = (usize, usize, usize, usize, usize, usize, &'static [usize]);

#[cfg(feature = "cuda")]
const SHAPES: [Shape; 5] = [
    (1, 32, 8, 2048, 0, 64, &[0]),
    (2, 9, 3, 100, 0, 64, &[0, 37]),
    (1, 8, 8, 77, 50, 128, &[0]),
    (3, 4, 1, 16, 130, 64, &[0, 5, 140]),
    (2, 16, 2, 300, 20, 128, &[3, 250]),
];

/// Every shape of [`SHAPES`] through `flash` against the f32 reference on `dev`.
#[cfg(feature = "cuda")]
pub fn check(flash: &PrefillKernels, dev: &Device) -> Result<Vec<AttentionCheck>> {
    let mut out = vec![];
    for (i, &(b, h, kvh, t, past, d, pad)) in SHAPES.iter().enumerate() {
        let total = past + t;
        let rand = |shape: (usize, usize, usize, usize)| -> Result<Tensor> {
            Ok(Tensor::randn(0f32, 1f32, shape, dev)?.to_dtype(DType::BF16)?)
        };
        let (q, k, v) = (rand((b, h, t, d))?, rand((b, kvh, total, d))?, rand((b, kvh, total, d))?);
        let mask = Mask::new(pad, past, t, dev)?;
        let Some(got) = flash.attend(&q, &k, &v, mask.pad_tensor()?)? else {
            bail!("prefill attention check {i}: the kernel declined {:?}", SHAPES[i]);
        };
        let got = got.to_dtype(DType::F32)?;
        let want = reference(&q, &k, &v, mask.additive()?)?;
        let scale = want.abs()?.max_all()?.to_scalar::<f32>()? as f64;
        let err = (got - &want)?.abs()?.max_all()?.to_scalar::<f32>()? as f64 / scale;
        out.push(AttentionCheck {
            rows: b,
            heads: h,
            kv_heads: kvh,
            queries: t,
            cached: past,
            head_dim: d,
            pad: pad.to_vec(),
            max_rel_err: err,
            passed: err <= MAX_REL_ERR,
        });
    }
    Ok(out)
}

/// softmax(q·kᵀ/√d + mask)·v in f32, each query head on its kv head, as (b, t, h·d).
#[cfg(feature = "cuda")]
fn reference(q: &Tensor, k: &Tensor, v: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let (b, h, t, d) = q.dims4()?;
    let (_, kvh, total, _) = k.dims4()?;
    let rep = h / kvh;
    let f = |x: &Tensor| x.to_dtype(DType::F32);
    let q = f(q)?.reshape((b, kvh, rep * t, d))?;
    let scores = (q.matmul(&f(k)?.t()?)? / (d as f64).sqrt())?.reshape((b, kvh, rep, t, total))?;
    let scores = scores.broadcast_add(&mask.reshape((mask.dim(0)?, 1, 1, t, total))?)?;
    let p = candle_nn::ops::softmax(&scores, D::Minus1)?.reshape((b, kvh, rep * t, total))?;
    Ok(p.matmul(&f(v)?.contiguous()?)?.reshape((b, h, t, d))?.transpose(1, 2)?.reshape((b, t, h * d))?)
}
