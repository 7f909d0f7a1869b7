//! `fp4`: bitsandbytes' 4-bit float (e2m1, sign in bit 3), blockwise absmax, optional double
//! quantization — bit for bit as bitsandbytes 0.50's CUDA kernels pack it.
use llq_sdk::quant::four_bit::{self, FP4};
use llq_sdk::{
    export_plugin, Calibration, CudaKernels, OptionSpec, Options, PackedView, QuantMethod, Quantized, Result,
    Weights,
};

#[derive(Default)]
pub struct Fp4;

impl QuantMethod for Fp4 {
    const NAME: &'static str = "fp4";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str = "bitsandbytes FP4: 4-bit e2m1 float codes with blockwise absmax";
    fn options(&self) -> Vec<OptionSpec> {
        four_bit::options()
    }
    fn packed_size(&self, rows: u64, cols: u64, opts: &Options) -> Result<u64> {
        four_bit::packed_size(rows, cols, opts)
    }
    fn quantize(&self, w: &Weights, opts: &Options, _c: Option<&Calibration>) -> Result<Quantized> {
        four_bit::quantize(FP4, w, opts)
    }
    fn dequantize(&self, p: &PackedView, out: &mut [f32]) -> Result<()> {
        four_bit::dequantize(FP4, p, out)
    }
    fn cuda_kernels(&self) -> Option<CudaKernels> {
        Some(four_bit::cuda_kernels(FP4))
    }
}

export_plugin!(Fp4);

#[cfg(test)]
mod tests;
