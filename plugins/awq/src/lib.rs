//! `awq`: activation-aware weight quantization (Lin et al., 2023) as mit-han-lab/llm-awq runs it
//! (llq_sdk::quant::awq): for each group of layers sharing an input, a per-input-channel scale
//! `mean|x|^α` searched over α on the calibration data and folded by the host into the
//! producer; then, per layer, the clipping range searched per group; stored in the integer
//! group format `rtn` and `gptq` share (llq_sdk::quant::intgroup).
use llq_sdk::quant::awq::{self, auto_clip};
use llq_sdk::quant::intgroup::{self, IntGroupSpec};
use llq_sdk::{
    bail, export_plugin, Calibration, CalibrationNeed, CudaKernels, GroupScales, LayerGroup, OptionKind,
    OptionSpec, Options, PackedView, QuantMethod, Quantized, Result, Weights,
};

#[derive(Default)]
pub struct Awq;

/// llm-awq's `apply_clip` leaves the query and key projections unclipped: their outputs meet in
/// a softmax, where the per-layer output error is not what matters.
fn skips_clip(layer: &str) -> bool {
    layer.split('.').any(|part| matches!(part, "q_proj" | "k_proj"))
}

fn n_grid(o: &Options) -> Result<usize> {
    match o.get_usize("n_grid")? {
        0 => bail!("n_grid must be at least 1"),
        n => Ok(n),
    }
}

impl QuantMethod for Awq {
    const NAME: &'static str = "awq";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str =
        "AWQ: activation-aware input scales folded into the producer, clipping search, integer groups (needs calibration)";
    const CALIBRATION: CalibrationNeed = CalibrationNeed::Hessian;
    const GROUP_SCALES: bool = true;
    fn options(&self) -> Vec<OptionSpec> {
        let mut o = intgroup::options("4", "false");
        o.extend([
            OptionSpec::new("scale", OptionKind::Bool, "true", "search and fold input scales (auto_scale)"),
            OptionSpec::new(
                "clip",
                OptionKind::Bool,
                "true",
                "search clipping ranges, q/k excepted (auto_clip)",
            ),
            OptionSpec::new("n_grid", OptionKind::Int, "20", "grid points of both searches"),
            OptionSpec::new(
                "max_shrink",
                OptionKind::Float,
                "0.5",
                "largest fraction the clipping search shrinks a range by",
            ),
        ]);
        o
    }
    fn packed_size(&self, rows: u64, cols: u64, opts: &Options) -> Result<u64> {
        let spec = IntGroupSpec::from_options(opts, cols as usize)?;
        Ok(intgroup::packed_size(rows, cols, &spec, false))
    }
    fn search_scales(&self, g: &LayerGroup, opts: &Options) -> Result<Option<GroupScales>> {
        if !opts.get_bool("scale")? {
            return Ok(None);
        }
        let cols = g.cols();
        let spec = IntGroupSpec::from_options(opts, cols)?;
        let c = &g.calibration;
        let Some(h) = c.hessian else { bail!("awq: group after `{}` needs its input Hessian", g.producer) };
        if c.abs_mean.len() != cols {
            bail!("awq: group after `{}` needs mean |x| per column (a host of ABI 1.2 or later)", g.producer);
        }
        let layers: Vec<(&[f32], usize)> = g.layers.iter().map(|w| (w.data, w.rows)).collect();
        let r = awq::search_scale(&layers, cols, c.abs_mean, h, &spec, n_grid(opts)?)?;
        let info = serde_json::json!({
            "ratio": r.ratio,
            "loss": r.best_loss(),
            "loss_ratio0": r.losses[0],
        });
        Ok(Some(GroupScales { scales: r.scales.iter().map(|&v| v as f32).collect(), info }))
    }
    fn quantize(&self, w: &Weights, opts: &Options, c: Option<&Calibration>) -> Result<Quantized> {
        let spec = IntGroupSpec::from_options(opts, w.cols)?;
        let max_shrink = opts.get_f64("max_shrink")?;
        if !(0.0..1.0).contains(&max_shrink) {
            bail!("max_shrink must be in [0, 1), got {max_shrink}");
        }
        let Some(h) = c.and_then(|c| c.hessian) else {
            bail!("awq: layer `{}` needs its input Hessian (calibration data from the host)", w.layer)
        };
        let clipped = if opts.get_bool("clip")? && !skips_clip(w.layer) {
            auto_clip(w.data, w.rows, w.cols, h, &spec, n_grid(opts)?, max_shrink)
        } else {
            w.data.iter().map(|&v| v as f64).collect()
        };
        Ok(awq::quantize(&clipped, w.rows, w.cols, spec).pack())
    }
    fn dequantize(&self, p: &PackedView, out: &mut [f32]) -> Result<()> {
        intgroup::dequantize(p, out)
    }
    fn cuda_kernels(&self) -> Option<CudaKernels> {
        Some(intgroup::cuda_kernels("awq"))
    }
}

export_plugin!(Awq);

#[cfg(test)]
mod tests {
    #[test]
    fn q_and_k_are_not_clipped() {
        assert!(super::skips_clip("model.layers.0.self_attn.q_proj.weight"));
        assert!(super::skips_clip("model.layers.3.self_attn.k_proj.weight"));
        assert!(!super::skips_clip("model.layers.0.self_attn.v_proj.weight"));
        assert!(!super::skips_clip("model.layers.0.mlp.down_proj.weight"));
    }
}
