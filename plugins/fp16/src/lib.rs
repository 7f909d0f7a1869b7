//! `fp16`: the unquantized baseline. Weights are stored in 16-bit (f16 by default, or bf16)
//! so every run, baseline included, goes through the same plugin path and size accounting.
use half::{bf16, f16};
use llq_sdk::{
    bail, export_plugin, Calibration, CudaKernels, KernelParam, OptionKind, OptionSpec, Options, PackedView,
    QuantMethod, Quantized, Result, Weights,
};

#[derive(Default)]
pub struct Fp16;

impl QuantMethod for Fp16 {
    const NAME: &'static str = "fp16";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str = "16-bit baseline: weights rounded to f16 (or bf16), nothing else";
    fn options(&self) -> Vec<OptionSpec> {
        vec![OptionSpec::new("dtype", OptionKind::String, "f16", "storage type").choices(&["f16", "bf16"])]
    }
    fn packed_size(&self, rows: u64, cols: u64, _opts: &Options) -> Result<u64> {
        Ok(2 * rows * cols)
    }
    fn quantize(&self, w: &Weights, opts: &Options, _c: Option<&Calibration>) -> Result<Quantized> {
        let dtype = opts.get_str("dtype")?;
        let bytes: Vec<u8> = match dtype {
            "f16" => w.data.iter().flat_map(|&v| f16::from_f32(v).to_le_bytes()).collect(),
            _ => w.data.iter().flat_map(|&v| bf16::from_f32(v).to_le_bytes()).collect(),
        };
        Ok(Quantized::new(serde_json::json!({ "dtype": dtype })).with_buffer("weight", bytes))
    }
    fn dequantize(&self, p: &PackedView, out: &mut [f32]) -> Result<()> {
        let b = p.buffer("weight")?;
        if b.len() != 2 * out.len() {
            bail!("weight buffer has {} bytes for {} values", b.len(), out.len());
        }
        let to_f32: fn([u8; 2]) -> f32 = match p.meta_str("dtype")? {
            "f16" => |b| f16::from_le_bytes(b).to_f32(),
            "bf16" => |b| bf16::from_le_bytes(b).to_f32(),
            other => bail!("unknown dtype `{other}` in metadata"),
        };
        for (o, c) in out.iter_mut().zip(b.chunks_exact(2)) {
            *o = to_f32([c[0], c[1]]);
        }
        Ok(())
    }
    fn cuda_kernels(&self) -> Option<CudaKernels> {
        Some(CudaKernels {
            source: llq_sdk::cuda::source(&[include_str!("fp16.cu")]),
            dequantize: "fp16_dequantize".into(),
            matvec: Some("fp16_matvec".into()),
            params: vec![KernelParam::Choice {
                key: "dtype".into(),
                values: vec!["f16".into(), "bf16".into()],
            }],
        })
    }
}

export_plugin!(Fp16);

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(json: &str) -> Options {
        Options::parse("fp16", &Fp16.options(), json).unwrap()
    }

    #[test]
    fn round_trips_within_half_precision() {
        let data: Vec<f32> = (0..64).map(|i| (i as f32 - 31.5) * 0.013).collect();
        for dtype in ["f16", "bf16"] {
            let o = opts(&format!(r#"{{"dtype":"{dtype}"}}"#));
            let w = Weights { layer: "l", rows: 4, cols: 16, data: &data };
            let q = Fp16.quantize(&w, &o, None).unwrap();
            assert_eq!(q.total_bytes(), Fp16.packed_size(4, 16, &o).unwrap());
            let view = PackedView {
                rows: 4,
                cols: 16,
                buffers: vec![("weight", &q.buffers[0].1)],
                metadata: q.metadata.clone(),
            };
            let mut out = vec![0f32; 64];
            Fp16.dequantize(&view, &mut out).unwrap();
            let tol = if dtype == "f16" { 1.0 / 2048.0 } else { 1.0 / 256.0 };
            for (a, b) in data.iter().zip(&out) {
                assert!((a - b).abs() <= a.abs() * tol, "{dtype}: {a} vs {b}");
            }
        }
        // 1 + 2^-11 is exactly between two f16 values: round half to even keeps 1.0.
        assert_eq!(f16::from_f32(1.0 + 1.0 / 2048.0).to_f32(), 1.0);
    }

    #[test]
    fn rejects_an_unknown_dtype() {
        let e = Options::parse("fp16", &Fp16.options(), r#"{"dtype":"f8"}"#).unwrap_err();
        assert!(e.0.contains("must be one of f16, bf16"), "{e}");
    }
}
