//! `rtn`: round-to-nearest integer group quantization — GPTQ's quantizer applied to every
//! group on its own, with no calibration and no error feedback: the baseline GPTQ and AWQ
//! are compared against. Same packed format as `gptq` (llq_sdk::quant::intgroup).
use llq_sdk::quant::intgroup::{self, IntGroupSpec};
use llq_sdk::{
    export_plugin, Calibration, CudaKernels, OptionSpec, Options, PackedView, QuantMethod, Quantized, Result,
    Weights,
};

#[derive(Default)]
pub struct Rtn;

impl QuantMethod for Rtn {
    const NAME: &'static str = "rtn";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str =
        "round-to-nearest integer quantization per group of input columns (scale + zero point)";
    fn options(&self) -> Vec<OptionSpec> {
        intgroup::options("4", "false")
    }
    fn packed_size(&self, rows: u64, cols: u64, opts: &Options) -> Result<u64> {
        let spec = IntGroupSpec::from_options(opts, cols as usize)?;
        Ok(intgroup::packed_size(rows, cols, &spec, false))
    }
    fn quantize(&self, w: &Weights, opts: &Options, _c: Option<&Calibration>) -> Result<Quantized> {
        let spec = IntGroupSpec::from_options(opts, w.cols)?;
        Ok(intgroup::rtn(w.data, w.rows, w.cols, spec).pack())
    }
    fn dequantize(&self, p: &PackedView, out: &mut [f32]) -> Result<()> {
        intgroup::dequantize(p, out)
    }
    fn cuda_kernels(&self) -> Option<CudaKernels> {
        Some(intgroup::cuda_kernels("rtn"))
    }
}

export_plugin!(Rtn);
