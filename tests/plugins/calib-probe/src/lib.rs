//! Test plugin for the calibration step: it asks for activation statistics, refuses to
//! quantize without them, and scales each input column by sqrt(mean x²) before a per-row
//! int8 round-to-nearest (an AWQ-like use of the statistics). It records what it received
//! in its metadata so tests can check the host delivered the right numbers. With
//! `--opt scales=true` it also searches input scales (ABI 1.2): a fixed pattern
//! `1 + (c mod 3) / 4`, reporting the group it saw in the info.
use llq_sdk::{
    bail, export_plugin, f32_to_bytes, Calibration, CalibrationNeed, GroupScales, LayerGroup, OptionKind,
    OptionSpec, Options, PackedView, Producer, QuantMethod, Quantized, Result, Weights,
};

#[derive(Default)]
pub struct CalibProbe;

impl QuantMethod for CalibProbe {
    const NAME: &'static str = "calib-probe";
    const VERSION: &'static str = "0.0.1";
    const DESCRIPTION: &'static str = "test plugin that needs calibration statistics";
    const CALIBRATION: CalibrationNeed = CalibrationNeed::Stats;
    const GROUP_SCALES: bool = true;
    fn options(&self) -> Vec<OptionSpec> {
        vec![OptionSpec::new("scales", OptionKind::Bool, "false", "return input scales for layer groups")]
    }
    fn search_scales(&self, g: &LayerGroup, o: &Options) -> Result<Option<GroupScales>> {
        if !o.get_bool("scales")? {
            return Ok(None);
        }
        let info = serde_json::json!({
            "producer": g.producer,
            "norm": g.producer_kind == Producer::Norm,
            "layers": g.layers.iter().map(|w| w.layer).collect::<Vec<_>>(),
            "n_tokens": g.calibration.n_tokens,
            "abs_mean": g.calibration.abs_mean,
            "mean_sq": g.calibration.mean_sq,
        });
        let scales = (0..g.cols()).map(|c| 1.0 + (c % 3) as f32 / 4.0).collect();
        Ok(Some(GroupScales { scales, info }))
    }
    fn packed_size(&self, rows: u64, cols: u64, _o: &Options) -> Result<u64> {
        Ok(rows * cols + 4 * rows + 4 * cols)
    }
    fn quantize(&self, w: &Weights, _o: &Options, c: Option<&Calibration>) -> Result<Quantized> {
        let Some(c) = c else { bail!("calib-probe: layer `{}` needs calibration statistics", w.layer) };
        if c.mean_sq.len() != w.cols {
            bail!("calib-probe: {} statistics for {} columns", c.mean_sq.len(), w.cols);
        }
        let s: Vec<f32> = c.mean_sq.iter().map(|m| m.sqrt().max(1e-3)).collect();
        let mut q = Vec::with_capacity(w.rows * w.cols);
        let mut scales = Vec::with_capacity(w.rows);
        for row in w.data.chunks(w.cols) {
            let amax = row.iter().zip(&s).fold(0f32, |m, (v, s)| m.max((v * s).abs())).max(f32::MIN_POSITIVE);
            scales.push(amax / 127.0);
            q.extend(row.iter().zip(&s).map(|(v, s)| ((v * s) / (amax / 127.0)).round() as i8 as u8));
        }
        let meta = serde_json::json!({
            "n_tokens": c.n_tokens,
            "abs_max": c.abs_max,
            "mean_sq": c.mean_sq,
        });
        Ok(Quantized::new(meta)
            .with_buffer("q", q)
            .with_buffer("row_scale", f32_to_bytes(&scales))
            .with_buffer("col_scale", f32_to_bytes(&s)))
    }
    fn dequantize(&self, p: &PackedView, out: &mut [f32]) -> Result<()> {
        let q = p.buffer("q")?;
        let rs = p.f32_buffer("row_scale")?;
        let cs = p.f32_buffer("col_scale")?;
        for (i, o) in out.iter_mut().enumerate() {
            *o = q[i] as i8 as f32 * rs[i / p.cols] / cs[i % p.cols];
        }
        Ok(())
    }
}

export_plugin!(CalibProbe);
