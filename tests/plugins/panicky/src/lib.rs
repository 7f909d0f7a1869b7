//! Test plugin: panics inside `quantize` and `dequantize`; the SDK must turn the panics into
//! errors instead of unwinding into the host.
use llq_sdk::{export_plugin, Calibration, Options, PackedView, QuantMethod, Quantized, Result, Weights};

#[derive(Default)]
pub struct Panicky;

impl QuantMethod for Panicky {
    const NAME: &'static str = "panicky";
    const VERSION: &'static str = "0.0.1";
    const DESCRIPTION: &'static str = "test plugin that panics";
    fn packed_size(&self, rows: u64, cols: u64, _o: &Options) -> Result<u64> {
        Ok(rows * cols)
    }
    fn quantize(&self, w: &Weights, _o: &Options, _c: Option<&Calibration>) -> Result<Quantized> {
        let v: Vec<u8> = Vec::new();
        // An out-of-bounds index: a real-world bug, not a deliberate `panic!`.
        Ok(Quantized::default().with_buffer("x", vec![v[w.rows]]))
    }
    fn dequantize(&self, _p: &PackedView, _out: &mut [f32]) -> Result<()> {
        panic!("dequantize exploded on purpose")
    }
}

export_plugin!(Panicky);
