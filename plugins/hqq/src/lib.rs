//! `hqq`: Half-Quadratic Quantization (mobiusml/hqq 0.2.8) — no calibration data; each group's
//! zero point fitted by hqq's proximal solver (llq_sdk::quant::hqq). Stored in the integer
//! group format of rtn/gptq/awq with f16 zero points (hqq's zeros are real numbers), so it runs
//! on the same CUDA kernels. Groups run along rows (hqq's `axis=1`, its default since 0.2).
use llq_sdk::quant::hqq::{self, Proximal};
use llq_sdk::quant::intgroup::{self, IntGroupSpec};
use llq_sdk::{
    bail, export_plugin, Calibration, CudaKernels, OptionKind, OptionSpec, Options, PackedView, QuantMethod,
    Quantized, Result, Weights,
};

#[derive(Default)]
pub struct Hqq;

/// The group spec, refusing rows that are not whole groups (hqq's `reshape(-1, group_size)`
/// would let a group straddle two rows; llq's format keeps groups within a row).
fn spec(opts: &Options, cols: usize) -> Result<IntGroupSpec> {
    let bits = opts.get_usize("bits")? as u32;
    let gs = opts.get_usize("group_size")?;
    if !cols.is_multiple_of(gs) {
        bail!("hqq: rows of {cols} values are not whole groups of {gs} (hqq's groups would straddle rows)");
    }
    Ok(IntGroupSpec { bits, group_size: gs, sym: false, whole_row: false })
}

impl QuantMethod for Hqq {
    const NAME: &'static str = "hqq";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str =
        "Half-Quadratic Quantization: per-group zero points fitted by a proximal lp solver, no calibration data";
    fn options(&self) -> Vec<OptionSpec> {
        vec![
            OptionSpec::new("bits", OptionKind::Int, "4", "bits per weight").choices(&["1", "2", "3", "4", "8"]),
            OptionSpec::new("group_size", OptionKind::Int, "64", "consecutive values of a row sharing a scale and zero")
                .choices(&["16", "32", "64", "128", "256"]),
            OptionSpec::new(
                "axis",
                OptionKind::Int,
                "1",
                "grouping axis: 1 (along rows, hqq's default); hqq's axis=0 strides groups across rows, which llq's packed format does not hold",
            )
            .choices(&["1"]),
            OptionSpec::new("optimize", OptionKind::Bool, "true", "run the proximal solver (false: min/max rounding)"),
            OptionSpec::new(
                "round_zero",
                OptionKind::String,
                "auto",
                "round the initial zero point (auto: for 4 bits only, as hqq_base_quant_config)",
            )
            .choices(&["auto", "true", "false"]),
            OptionSpec::new("lp_norm", OptionKind::Float, "0.7", "p of the lp error the solver minimises"),
            OptionSpec::new("beta", OptionKind::Float, "10", "the solver's shrinkage β"),
            OptionSpec::new("iters", OptionKind::Int, "20", "most solver steps (it stops when the error rises)"),
        ]
    }
    fn packed_size(&self, rows: u64, cols: u64, opts: &Options) -> Result<u64> {
        Ok(intgroup::packed_size_with(rows, cols, &spec(opts, cols as usize)?, false, true))
    }
    fn quantize(&self, w: &Weights, opts: &Options, _c: Option<&Calibration>) -> Result<Quantized> {
        let spec = spec(opts, w.cols)?;
        let round_zero = match opts.get_str("round_zero")? {
            "auto" => spec.bits == 4,
            v => v == "true",
        };
        let (lp_norm, beta) = (opts.get_f64("lp_norm")? as f32, opts.get_f64("beta")? as f32);
        if !(lp_norm > 0.0 && lp_norm <= 1.0 && beta > 0.0 && beta.is_finite()) {
            bail!("hqq: lp_norm must be in (0, 1] and beta positive, got {lp_norm} and {beta}");
        }
        let solver =
            opts.get_bool("optimize")?.then_some(Proximal { lp_norm, beta, iters: opts.get_usize("iters")? });
        Ok(hqq::quantize(w.data, w.rows, w.cols, spec, round_zero, solver).pack())
    }
    fn dequantize(&self, p: &PackedView, out: &mut [f32]) -> Result<()> {
        intgroup::dequantize(p, out)
    }
    fn cuda_kernels(&self) -> Option<CudaKernels> {
        Some(intgroup::cuda_kernels_f16_zeros("hqq"))
    }
}

export_plugin!(Hqq);

#[cfg(test)]
mod tests;
