//! Test plugin for `plugins check`: a sign quantizer with the mistakes the conformance suite
//! exists to catch. Its bytes depend on how many calls came before (not deterministic, not
//! thread-safe in result), its dequantize never looks at the buffers it is given (accepts
//! truncated and missing ones), and `--opt crash=true` / `--opt hang=true` make quantize
//! abort the process or never return (the suite must contain both).
use llq_sdk::{
    export_plugin, Calibration, OptionKind, OptionSpec, Options, PackedView, QuantMethod, Quantized, Result,
    Weights,
};
use std::sync::atomic::{AtomicU8, Ordering};

static CALLS: AtomicU8 = AtomicU8::new(0);

#[derive(Default)]
pub struct Sloppy;

impl QuantMethod for Sloppy {
    const NAME: &'static str = "sloppy";
    const VERSION: &'static str = "0.0.1";
    const DESCRIPTION: &'static str = "test plugin that breaks the contract on purpose";
    fn options(&self) -> Vec<OptionSpec> {
        vec![
            OptionSpec::new("crash", OptionKind::Bool, "false", "abort the process in quantize"),
            OptionSpec::new("hang", OptionKind::Bool, "false", "never return from quantize"),
        ]
    }
    fn packed_size(&self, rows: u64, cols: u64, _o: &Options) -> Result<u64> {
        Ok(rows * cols)
    }
    fn quantize(&self, w: &Weights, o: &Options, _c: Option<&Calibration>) -> Result<Quantized> {
        if o.get_bool("crash")? {
            std::process::abort();
        }
        while o.get_bool("hang")? {
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
        let n = CALLS.fetch_add(1, Ordering::SeqCst);
        let data = w.data.iter().map(|v| (*v > 0.0) as u8 + n).collect();
        Ok(Quantized::new(serde_json::json!({})).with_buffer("data", data))
    }
    fn dequantize(&self, _p: &PackedView, out: &mut [f32]) -> Result<()> {
        out.fill(0.01);
        Ok(())
    }
}

export_plugin!(Sloppy);
