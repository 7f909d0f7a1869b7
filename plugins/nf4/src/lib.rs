//! `nf4`: bitsandbytes' 4-bit NormalFloat (QLoRA), blockwise absmax, optional double
//! quantization — bit for bit as bitsandbytes 0.50's CUDA kernels pack it.
use llq_sdk::quant::four_bit::{self, NF4};
use llq_sdk::{
    export_plugin, Calibration, CudaKernels, OptionSpec, Options, PackedView, QuantMethod, Quantized, Result,
    Weights,
};

#[derive(Default)]
pub struct Nf4;

impl QuantMethod for Nf4 {
    const NAME: &'static str = "nf4";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str =
        "bitsandbytes NF4: 4-bit NormalFloat codes with blockwise absmax (QLoRA)";
    fn options(&self) -> Vec<OptionSpec> {
        four_bit::options()
    }
    fn packed_size(&self, rows: u64, cols: u64, opts: &Options) -> Result<u64> {
        four_bit::packed_size(rows, cols, opts)
    }
    fn quantize(&self, w: &Weights, opts: &Options, _c: Option<&Calibration>) -> Result<Quantized> {
        four_bit::quantize(NF4, w, opts)
    }
    fn dequantize(&self, p: &PackedView, out: &mut [f32]) -> Result<()> {
        four_bit::dequantize(NF4, p, out)
    }
    fn cuda_kernels(&self) -> Option<CudaKernels> {
        Some(four_bit::cuda_kernels(NF4))
    }
}

export_plugin!(Nf4);

#[cfg(test)]
mod tests;
