//! `gptq`: GPTQ (Frantar et al., 2022) as IST-DASLab/gptq's `fasterquant` computes it
//! (llq_sdk::quant::gptq), from the input Hessian the host accumulates over calibration text,
//! into the integer group format `rtn` shares (llq_sdk::quant::intgroup).
use llq_sdk::quant::gptq::{gptq, GptqOptions};
use llq_sdk::quant::intgroup::{self, IntGroupSpec};
use llq_sdk::{
    bail, export_plugin, Calibration, CalibrationNeed, CudaKernels, OptionKind, OptionSpec, Options,
    PackedView, QuantMethod, Quantized, Result, Weights,
};

#[derive(Default)]
pub struct Gptq;

fn gptq_options(o: &Options) -> Result<GptqOptions> {
    let block_size = o.get_usize("block_size")?;
    if block_size == 0 {
        bail!("block_size must be at least 1");
    }
    let damp = o.get_f64("damp")?;
    if !(damp > 0.0 && damp < 1.0) {
        bail!("damp must be in (0, 1), got {damp}");
    }
    Ok(GptqOptions {
        damp,
        act_order: o.get_bool("act_order")?,
        static_groups: o.get_bool("static_groups")?,
        block_size,
    })
}

impl QuantMethod for Gptq {
    const NAME: &'static str = "gptq";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str =
        "GPTQ: integer group quantization with Hessian-based error feedback (needs calibration)";
    const CALIBRATION: CalibrationNeed = CalibrationNeed::Hessian;
    fn options(&self) -> Vec<OptionSpec> {
        let mut o = intgroup::options("4", "false");
        o.extend([
            OptionSpec::new("damp", OptionKind::Float, "0.01", "dampening: fraction of the mean Hessian diagonal (percdamp)"),
            OptionSpec::new("act_order", OptionKind::Bool, "false", "quantize columns by decreasing Hessian diagonal (desc_act)"),
            OptionSpec::new(
                "static_groups",
                OptionKind::Bool,
                "false",
                "group parameters from the weights before any update (with act_order: groups stay in column order)",
            ),
            OptionSpec::new("block_size", OptionKind::Int, "128", "columns per lazy batch update"),
        ]);
        o
    }
    fn packed_size(&self, rows: u64, cols: u64, opts: &Options) -> Result<u64> {
        let spec = IntGroupSpec::from_options(opts, cols as usize)?;
        Ok(intgroup::packed_size(rows, cols, &spec, gptq_options(opts)?.has_g_idx()))
    }
    fn quantize(&self, w: &Weights, opts: &Options, c: Option<&Calibration>) -> Result<Quantized> {
        let spec = IntGroupSpec::from_options(opts, w.cols)?;
        let Some(h) = c.and_then(|c| c.hessian) else {
            bail!("gptq: layer `{}` needs its input Hessian (calibration data from the host)", w.layer)
        };
        Ok(gptq(w.data, w.rows, w.cols, h, spec, gptq_options(opts)?)?.matrix.pack())
    }
    fn dequantize(&self, p: &PackedView, out: &mut [f32]) -> Result<()> {
        intgroup::dequantize(p, out)
    }
    fn cuda_kernels(&self) -> Option<CudaKernels> {
        Some(intgroup::cuda_kernels("gptq"))
    }
}

export_plugin!(Gptq);
