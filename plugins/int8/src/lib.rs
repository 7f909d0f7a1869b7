//! `int8`: bitsandbytes' LLM.int8(). Weights: per-output-row absmax, `q = round(w·127/absmax)`
//! (round half to even) after rounding to f16 as `Int8Params` does. The reference `matmul`
//! quantizes activations per row the same way and computes input columns holding any
//! |x| ≥ `threshold` in 16-bit against the dequantized weight columns (mixed-precision
//! decomposition); `threshold=0` disables the decomposition.
use llq_sdk::quant::{int8_quantize_row, to_f16, INT8_DEQUANT, INT8_MM_DEQUANT};
use llq_sdk::{
    bail, export_plugin, f32_to_bytes, Calibration, CudaKernels, OptionKind, OptionSpec, Options, PackedView,
    QuantMethod, Quantized, Result, Weights,
};

#[derive(Default)]
pub struct Int8;

struct Packed<'a> {
    cb: &'a [u8],
    scb: Vec<f32>,
    threshold: f32,
}

fn unpack<'a>(p: &PackedView<'a>) -> Result<Packed<'a>> {
    let cb = p.buffer("CB")?;
    let scb = p.f32_buffer("SCB")?;
    if cb.len() != p.rows * p.cols || scb.len() != p.rows {
        bail!("CB/SCB sizes ({}, {}) do not fit a {}×{} matrix", cb.len(), scb.len(), p.rows, p.cols);
    }
    let threshold =
        p.metadata.get("threshold").and_then(|v| v.as_f64()).ok_or("metadata has no threshold")? as f32;
    Ok(Packed { cb, scb, threshold })
}

impl QuantMethod for Int8 {
    const NAME: &'static str = "int8";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str =
        "bitsandbytes LLM.int8(): int8 row-wise weights, int8 activations with fp16 outlier decomposition";
    const HAS_MATMUL: bool = true;

    fn options(&self) -> Vec<OptionSpec> {
        vec![OptionSpec::new(
            "threshold",
            OptionKind::Float,
            "6.0",
            "activation outlier threshold (transformers' llm_int8_threshold); 0 disables decomposition",
        )]
    }
    fn packed_size(&self, rows: u64, cols: u64, _opts: &Options) -> Result<u64> {
        Ok(rows * cols + 4 * rows)
    }
    fn quantize(&self, w: &Weights, opts: &Options, _c: Option<&Calibration>) -> Result<Quantized> {
        let threshold = opts.get_f64("threshold")?;
        if threshold < 0.0 {
            bail!("int8: threshold must be ≥ 0, got {threshold}");
        }
        let mut cb = vec![0i8; w.rows * w.cols];
        let mut scb = Vec::with_capacity(w.rows);
        let mut row16 = vec![0f32; w.cols];
        for (r, row) in w.data.chunks(w.cols).enumerate() {
            for (d, &v) in row16.iter_mut().zip(row) {
                *d = to_f16(v);
            }
            scb.push(int8_quantize_row(&row16, 0.0, &mut cb[r * w.cols..(r + 1) * w.cols]));
        }
        let cb: Vec<u8> = cb.into_iter().map(|v| v as u8).collect();
        Ok(Quantized::new(serde_json::json!({ "threshold": threshold }))
            .with_buffer("CB", cb)
            .with_buffer("SCB", f32_to_bytes(&scb)))
    }
    fn dequantize(&self, p: &PackedView, out: &mut [f32]) -> Result<()> {
        let k = unpack(p)?;
        for (i, o) in out.iter_mut().enumerate() {
            *o = (k.cb[i] as i8 as f32 * k.scb[i / p.cols]) * INT8_DEQUANT;
        }
        Ok(())
    }
    fn cuda_kernels(&self) -> Option<CudaKernels> {
        use llq_sdk::cuda;
        Some(CudaKernels {
            source: cuda::source(&[
                &cuda::f32_define("LLQ_INT8_DEQUANT", INT8_DEQUANT),
                include_str!("int8.cu"),
            ]),
            dequantize: "int8_dequantize".into(),
            matvec: Some("int8_matvec".into()),
            params: vec![],
        })
    }
    fn matmul(&self, p: &PackedView, x: &[f32], m: usize, out: &mut [f32]) -> Result<()> {
        let k = unpack(p)?;
        let (rows, cols) = (p.rows, p.cols);
        let x16: Vec<f32> = x.iter().map(|&v| to_f16(v)).collect();
        // Outlier columns: any |x| ≥ threshold in any row (bitsandbytes' `outliers.any(dim=0)`).
        let mut outlier = vec![false; cols];
        if k.threshold > 0.0 {
            for row in x16.chunks(cols) {
                for (o, v) in outlier.iter_mut().zip(row) {
                    *o |= v.abs() >= k.threshold;
                }
            }
        }
        let idx: Vec<usize> = (0..cols).filter(|&c| outlier[c]).collect();
        // Dequantized weight columns for the outliers, in f16 (state.subB).
        let sub_b: Vec<f32> = (0..rows)
            .flat_map(|r| idx.iter().map(move |&c| (r, c)))
            .map(|(r, c)| to_f16((k.cb[r * cols + c] as i8 as f32 * k.scb[r]) * INT8_DEQUANT))
            .collect();
        let mut ca = vec![0i8; cols];
        for (i, xrow) in x16.chunks(cols).enumerate().take(m) {
            let sca = int8_quantize_row(xrow, k.threshold, &mut ca);
            for &c in &idx {
                ca[c] = 0;
            }
            for r in 0..rows {
                let wrow = &k.cb[r * cols..(r + 1) * cols];
                let acc: i32 = ca.iter().zip(wrow).map(|(&a, &b)| a as i32 * b as i8 as i32).sum();
                let main = to_f16(((acc as f32 * sca) * k.scb[r]) * INT8_MM_DEQUANT);
                let extra: f32 =
                    idx.iter().enumerate().map(|(j, &c)| xrow[c] * sub_b[r * idx.len() + j]).sum();
                out[i * rows + r] = if idx.is_empty() { main } else { to_f16(main + extra) };
            }
        }
        Ok(())
    }
}

export_plugin!(Int8);

#[cfg(test)]
mod tests;
