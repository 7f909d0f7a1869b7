//! Test plugin: declares one packed size and returns another, and returns metadata that is
//! not JSON when asked for `rows == 3`.
use llq_sdk::{export_plugin, Calibration, Options, PackedView, QuantMethod, Quantized, Result, Weights};

#[derive(Default)]
pub struct WrongSize;

impl QuantMethod for WrongSize {
    const NAME: &'static str = "wrong-size";
    const VERSION: &'static str = "0.0.1";
    const DESCRIPTION: &'static str = "test plugin whose buffers do not match its declared size";
    fn packed_size(&self, rows: u64, cols: u64, _o: &Options) -> Result<u64> {
        Ok(rows * cols)
    }
    fn quantize(&self, w: &Weights, _o: &Options, _c: Option<&Calibration>) -> Result<Quantized> {
        Ok(Quantized::new(serde_json::json!({})).with_buffer("data", vec![0u8; w.rows * w.cols + 5]))
    }
    fn dequantize(&self, _p: &PackedView, out: &mut [f32]) -> Result<()> {
        out.fill(0.0);
        Ok(())
    }
}

export_plugin!(WrongSize);
