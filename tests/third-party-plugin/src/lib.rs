//! A third-party method: 1-bit sign quantization with a per-row mean-|w| scale
//! (a BitNet-style binarization), built against `llq-sdk` outside llq's workspace.
use llq_sdk::{
    export_plugin, f32_to_bytes, Calibration, Options, PackedView, QuantMethod, Quantized, Result, Weights,
};

#[derive(Default)]
pub struct Sign;

impl QuantMethod for Sign {
    const NAME: &'static str = "sign";
    const VERSION: &'static str = "0.1.0";
    const DESCRIPTION: &'static str = "1-bit sign quantization with a per-row mean |w| scale";
    fn packed_size(&self, rows: u64, cols: u64, _o: &Options) -> Result<u64> {
        Ok(rows * cols.div_ceil(8) + 4 * rows)
    }
    fn quantize(&self, w: &Weights, _o: &Options, _c: Option<&Calibration>) -> Result<Quantized> {
        let per_row = w.cols.div_ceil(8);
        let mut bits = vec![0u8; w.rows * per_row];
        let mut scales = Vec::with_capacity(w.rows);
        for (r, row) in w.data.chunks(w.cols).enumerate() {
            scales.push(row.iter().map(|v| v.abs()).sum::<f32>() / w.cols as f32);
            for (c, v) in row.iter().enumerate() {
                if *v >= 0.0 {
                    bits[r * per_row + c / 8] |= 1 << (c % 8);
                }
            }
        }
        Ok(Quantized::new(serde_json::json!({}))
            .with_buffer("bits", bits)
            .with_buffer("scale", f32_to_bytes(&scales)))
    }
    fn dequantize(&self, p: &PackedView, out: &mut [f32]) -> Result<()> {
        let bits = p.buffer("bits")?;
        let scale = p.f32_buffer("scale")?;
        let per_row = p.cols.div_ceil(8);
        for (i, o) in out.iter_mut().enumerate() {
            let (r, c) = (i / p.cols, i % p.cols);
            let s = scale[r];
            *o = if bits[r * per_row + c / 8] >> (c % 8) & 1 == 1 { s } else { -s };
        }
        Ok(())
    }
}

export_plugin!(Sign);
