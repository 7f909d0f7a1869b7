//! Integer group quantization: the format GPTQ, AWQ and their round-to-nearest baseline share.
//!
//! Each row (output channel) of a weight matrix is split into groups of `group_size` input
//! columns (the whole row with `group_size = -1`); each (row, group) has a scale and an
//! integer zero point, and a weight is stored as a `bits`-bit code
//! `q = clamp(round(w / scale) + zero, 0, 2^bits − 1)`, read back as `scale · (q − zero)`.
//! The parameters are GPTQ's `Quantizer.find_params` (IST-DASLab/gptq `quant.py`, weights,
//! per channel, no MSE search): the range `[min(x, 0), max(x, 0)]`, symmetric about 0 when
//! `sym`, `[-1, 1]` for an all-zero group, `scale = (max − min) / maxq`, `zero = round(−min /
//! scale)` or `(maxq + 1) / 2` when symmetric. Rounding is half-to-even, as `torch.round`.
//!
//! Computation is in f64; what is stored is what GPTQ's packers (AutoGPTQ, GPTQModel) store:
//! the codes, f16 scales and integer zeros, so `scale` is rounded to f16 once when packed and
//! dequantization is `f32(scale_f16) · (q − zero)` in f32. With act-order the groups follow
//! the order in which GPTQ visited the columns: `g_idx[c]` names the group of column `c`
//! (transformers' GPTQ layout); otherwise the group of column `c` is `c / group_size`.
//!
//! Packed buffers: `codes` (u32 little-endian words, each row a bit stream of `bits`-bit codes,
//! first column in the lowest bits, rows padded to whole words), `scales` (f16, rows × groups),
//! `zeros` (u8, rows × groups), and `g_idx` (u32 per column) only when the groups are not in
//! column order. Methods whose zero point is not an integer (HQQ optimises it as a real
//! number) store `zeros` as f16 instead and say so in the metadata (`"zero": "f16"`); the
//! weight is then `f32(scale_f16) · (q − f32(zero_f16))`.

use super::linalg::par_each;
use crate::{bail, OptionKind, OptionSpec, Options, PackedView, Quantized, Result};

/// Bits a method may store per weight.
pub const BITS: [&str; 4] = ["2", "3", "4", "8"];
/// Group sizes offered (`-1`: one group per row).
pub const GROUP_SIZES: [&str; 4] = ["32", "64", "128", "-1"];

/// Bit width and grouping of an integer group format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntGroupSpec {
    pub bits: u32,
    /// Columns per group; `cols` when the user asked for one group per row.
    pub group_size: usize,
    pub sym: bool,
    /// The user asked for one group per row (`group_size = -1`), which GPTQ treats apart.
    pub whole_row: bool,
}

impl IntGroupSpec {
    /// From a method's `bits`, `group_size`, `sym` options, for a matrix of `cols` columns.
    pub fn from_options(o: &Options, cols: usize) -> Result<Self> {
        let bits = o.get_usize("bits")? as u32;
        if !(1..=8).contains(&bits) {
            bail!("bits must be between 1 and 8, got {bits}");
        }
        let g = o.get_str("group_size")?;
        let (group_size, whole_row) = match g.parse::<i64>() {
            Ok(-1) => (cols.max(1), true),
            Ok(n) if n > 0 => (n as usize, false),
            _ => bail!("group_size must be positive or -1, got `{g}`"),
        };
        Ok(IntGroupSpec { bits, group_size, sym: o.get_bool("sym")?, whole_row })
    }

    pub fn maxq(&self) -> u32 {
        (1u32 << self.bits) - 1
    }

    pub fn groups(&self, cols: usize) -> usize {
        cols.div_ceil(self.group_size)
    }
}

/// The options every integer group method declares.
pub fn options(default_bits: &str, default_sym: &str) -> Vec<OptionSpec> {
    vec![
        OptionSpec::new("bits", OptionKind::Int, default_bits, "bits per weight").choices(&BITS),
        OptionSpec::new(
            "group_size",
            OptionKind::Int,
            "128",
            "input columns sharing a scale and zero point (-1: the whole row)",
        )
        .choices(&GROUP_SIZES),
        OptionSpec::new(
            "sym",
            OptionKind::Bool,
            default_sym,
            "symmetric range with a fixed zero point (else an integer zero point per group)",
        ),
    ]
}

/// One group's quantizer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GroupParams {
    pub scale: f64,
    pub zero: f64,
}

/// GPTQ's `find_params` over the values of one row's group (see the module docs).
pub fn find_params(values: impl Iterator<Item = f64>, spec: &IntGroupSpec) -> GroupParams {
    let (mut xmin, mut xmax) = (0f64, 0f64);
    for v in values {
        xmin = xmin.min(v);
        xmax = xmax.max(v);
    }
    if spec.sym {
        xmax = xmax.max(xmin.abs());
        if xmin < 0.0 {
            xmin = -xmax;
        }
    }
    if xmin == 0.0 && xmax == 0.0 {
        (xmin, xmax) = (-1.0, 1.0);
    }
    let maxq = spec.maxq() as f64;
    let scale = (xmax - xmin) / maxq;
    let zero = if spec.sym { (maxq + 1.0) / 2.0 } else { (-xmin / scale).round_ties_even() };
    GroupParams { scale, zero }
}

/// The code of `x` (GPTQ's `quantize` before the rescale).
pub fn code(x: f64, p: GroupParams, maxq: u32) -> u8 {
    ((x / p.scale).round_ties_even() + p.zero).clamp(0.0, maxq as f64) as u8
}

/// What `x` becomes, at the precision the method computes in (GPTQ's `quantize`).
pub fn fake_quantize(x: f64, p: GroupParams, maxq: u32) -> f64 {
    p.scale * (code(x, p, maxq) as f64 - p.zero)
}

/// A quantized matrix before packing: one code per weight, parameters per (row, group).
#[derive(Debug, Clone, PartialEq)]
pub struct IntGroupMatrix {
    pub rows: usize,
    pub cols: usize,
    pub spec: IntGroupSpec,
    /// rows × cols codes, row-major, in column order.
    pub codes: Vec<u8>,
    /// rows × groups.
    pub params: Vec<GroupParams>,
    /// The group of each column, when not `c / group_size`.
    pub g_idx: Option<Vec<u32>>,
    /// Zero points stored as f16 (real-valued, HQQ) instead of u8 integers.
    pub zero_f16: bool,
}

impl IntGroupMatrix {
    /// An all-zero matrix in column-order groups with u8 zero points, to be filled in.
    pub fn new(rows: usize, cols: usize, spec: IntGroupSpec) -> Self {
        IntGroupMatrix {
            rows,
            cols,
            spec,
            codes: vec![0; rows * cols],
            params: vec![],
            g_idx: None,
            zero_f16: false,
        }
    }

    pub fn group_of(&self, c: usize) -> usize {
        match &self.g_idx {
            Some(g) => g[c] as usize,
            None => c / self.spec.group_size,
        }
    }

    /// Pack into the stored buffers (module docs) with metadata for `dequantize`.
    pub fn pack(&self) -> Quantized {
        let (rows, cols, bits) = (self.rows, self.cols, self.spec.bits as usize);
        let words = words_per_row(cols, self.spec.bits);
        let mut codes = vec![0u32; rows * words];
        // Rows are independent: on the pool (a 2048 × 8192 layer is 16.7 M codes, and a
        // calibrated run packs every layer between its calibration passes).
        let mut packed_rows: Vec<&mut [u32]> = codes.chunks_mut(words.max(1)).collect();
        par_each(&mut packed_rows, |r, row| {
            for c in 0..cols {
                let (bit, v) = (c * bits, self.codes[r * cols + c] as u64);
                let (w, off) = (bit / 32, bit % 32);
                let spread = v << off;
                row[w] |= spread as u32;
                if off + bits > 32 {
                    row[w + 1] |= (spread >> 32) as u32;
                }
            }
        });
        let scales: Vec<u8> =
            self.params.iter().flat_map(|p| half::f16::from_f64(p.scale).to_le_bytes()).collect();
        let zeros: Vec<u8> = if self.zero_f16 {
            self.params.iter().flat_map(|p| half::f16::from_f64(p.zero).to_le_bytes()).collect()
        } else {
            self.params.iter().map(|p| p.zero as u8).collect()
        };
        let mut meta = serde_json::json!({
            "format": "int-group",
            "bits": self.spec.bits,
            "group_size": self.spec.group_size,
            "sym": self.spec.sym,
            "g_idx": self.g_idx.is_some(),
        });
        if self.zero_f16 {
            meta["zero"] = "f16".into();
        }
        let mut q = Quantized::new(meta)
            .with_buffer("codes", codes.iter().flat_map(|w| w.to_le_bytes()).collect())
            .with_buffer("scales", scales)
            .with_buffer("zeros", zeros);
        if let Some(g) = &self.g_idx {
            q = q.with_buffer("g_idx", g.iter().flat_map(|v| v.to_le_bytes()).collect());
        }
        q
    }
}

/// GPU kernels (convention v1) for the format, shared by every method that stores it:
/// entry points `<prefix>_dequantize` and `<prefix>_matvec` with `p0..p2` = bits,
/// group_size, g_idx present, and `p3` = f16 zero points (methods that store them pass the
/// metadata key with [`cuda_kernels_f16_zeros`]; for the others `p3` is 0 and the kernels are
/// built without the f16-zero decode: 64 registers for the 1-row entry against 80 with it).
pub fn cuda_kernels(prefix: &str) -> crate::CudaKernels {
    kernels_with(prefix, false)
}

/// [`cuda_kernels`] for a method storing f16 zero points (`p3` from the metadata's `zero`).
pub fn cuda_kernels_f16_zeros(prefix: &str) -> crate::CudaKernels {
    let mut k = kernels_with(prefix, true);
    k.params.push(crate::KernelParam::Choice { key: "zero".into(), values: vec!["u8".into(), "f16".into()] });
    k
}

/// The kernels of `cuda/intgroup.cu`'s decoder: `LlqIntGroup` (both zero kinds) with
/// `f16_zeros`, else `LlqIntGroupU8`, which also holds q/k/v's three-matrix entry in 64
/// registers at four blocks an SM (98 unbounded; ptxas sm_90; with both zero kinds it spilled
/// there, so that one stays unbounded).
fn kernels_with(prefix: &str, f16_zeros: bool) -> crate::CudaKernels {
    use crate::cuda;
    let (decoder, bounds) = if f16_zeros {
        ("LlqIntGroup", "")
    } else {
        ("LlqIntGroupU8", "#undef LLQ_X3_BOUNDS\n#define LLQ_X3_BOUNDS __launch_bounds__(256, 4)\n")
    };
    crate::CudaKernels {
        source: cuda::source(&[
            cuda::INT_GROUP_DECODER,
            bounds,
            &format!("LLQ_DEFINE_KERNELS({decoder}, 4, {prefix})\n"),
        ]),
        dequantize: format!("{prefix}_dequantize"),
        matvec: Some(format!("{prefix}_matvec")),
        params: vec![
            crate::KernelParam::Key("bits".into()),
            crate::KernelParam::Key("group_size".into()),
            crate::KernelParam::Key("g_idx".into()),
        ],
    }
}

/// u32 words one packed row takes.
pub fn words_per_row(cols: usize, bits: u32) -> usize {
    (cols * bits as usize).div_ceil(32)
}

/// Bytes of the packed form (module docs), with u8 zero points.
pub fn packed_size(rows: u64, cols: u64, spec: &IntGroupSpec, with_g_idx: bool) -> u64 {
    packed_size_with(rows, cols, spec, with_g_idx, false)
}

/// Bytes of the packed form, with u8 or (`zero_f16`) f16 zero points.
pub fn packed_size_with(rows: u64, cols: u64, spec: &IntGroupSpec, with_g_idx: bool, zero_f16: bool) -> u64 {
    let groups = spec.groups(cols as usize) as u64;
    rows * 4 * words_per_row(cols as usize, spec.bits) as u64
        + rows * groups * if zero_f16 { 4 } else { 3 }
        + if with_g_idx { 4 * cols } else { 0 }
}

/// Round-to-nearest: every group's parameters from its own values, no error feedback (the
/// baseline GPTQ and AWQ are measured against).
pub fn rtn(data: &[f32], rows: usize, cols: usize, spec: IntGroupSpec) -> IntGroupMatrix {
    let (gs, groups, maxq) = (spec.group_size, spec.groups(cols), spec.maxq());
    let mut m = IntGroupMatrix::new(rows, cols, spec);
    m.params.reserve(rows * groups);
    for r in 0..rows {
        let row = &data[r * cols..(r + 1) * cols];
        for g in 0..groups {
            let span = g * gs..((g + 1) * gs).min(cols);
            let p = find_params(row[span.clone()].iter().map(|&v| v as f64), &spec);
            for c in span {
                m.codes[r * cols + c] = code(row[c] as f64, p, maxq);
            }
            m.params.push(p);
        }
    }
    m
}

/// Dequantize a packed integer group matrix into `out` (rows × cols, f32).
pub fn dequantize(p: &PackedView, out: &mut [f32]) -> Result<()> {
    if p.meta_str("format")? != "int-group" {
        bail!("packed matrix is not in the int-group format");
    }
    let (rows, cols) = (p.rows, p.cols);
    let bits = p.meta_u64("bits")? as u32;
    let gs = p.meta_u64("group_size")? as usize;
    if !(1..=8).contains(&bits) || gs == 0 {
        bail!("invalid bits {bits} or group_size {gs} in metadata");
    }
    let groups = cols.div_ceil(gs);
    let words = words_per_row(cols, bits);
    let codes = p.buffer("codes")?;
    let scales = p.buffer("scales")?;
    let zeros = p.buffer("zeros")?;
    let zero_f16 = match p.metadata.get("zero").map(|z| z.as_str()) {
        None => false,
        Some(Some("f16")) => true,
        Some(z) => bail!("metadata `zero` is {z:?}, not \"f16\""),
    };
    let zero_bytes = if zero_f16 { 2 } else { 1 };
    if codes.len() != rows * words * 4
        || scales.len() != rows * groups * 2
        || zeros.len() != rows * groups * zero_bytes
    {
        bail!("packed buffers do not fit a {rows}×{cols} matrix of {bits}-bit codes in groups of {gs}");
    }
    if out.len() != rows * cols {
        bail!("an output of {} values for a {rows}×{cols} matrix", out.len());
    }
    // Each group's scale and zero point converted once (not once per weight).
    let f16_at = |b: &[u8], i: usize| half::f16::from_le_bytes([b[2 * i], b[2 * i + 1]]).to_f32();
    let scale: Vec<f32> = (0..rows * groups).map(|g| f16_at(scales, g)).collect();
    let zero: Vec<f32> =
        (0..rows * groups).map(|g| if zero_f16 { f16_at(zeros, g) } else { zeros[g] as f32 }).collect();
    let g_idx: Option<Vec<u32>> = if p.meta_bool("g_idx")? {
        let b = p.buffer("g_idx")?;
        if b.len() != 4 * cols {
            bail!("g_idx has {} bytes for {cols} columns", b.len());
        }
        let g: Vec<u32> = b.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        if let Some(bad) = g.iter().find(|&&v| v as usize >= groups) {
            bail!("g_idx names group {bad} of {groups}");
        }
        Some(g)
    } else {
        None
    };
    let mask = (1u64 << bits) - 1;
    // Rows are independent: on the pool.
    let mut out_rows: Vec<&mut [f32]> = out.chunks_mut(cols.max(1)).collect();
    par_each(&mut out_rows, |r, orow| {
        let row = &codes[r * words * 4..(r + 1) * words * 4];
        let word = |i: usize| -> u64 {
            if i < words {
                u32::from_le_bytes([row[4 * i], row[4 * i + 1], row[4 * i + 2], row[4 * i + 3]]) as u64
            } else {
                0
            }
        };
        for c in 0..cols {
            let bit = c * bits as usize;
            let (w, off) = (bit / 32, bit % 32);
            let q = ((word(w) | (word(w + 1) << 32)) >> off) & mask;
            let g = r * groups + g_idx.as_ref().map_or(c / gs, |g| g[c] as usize);
            orow[c] = scale[g] * (q as f32 - zero[g]);
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(bits: u32, gs: usize, sym: bool) -> IntGroupSpec {
        IntGroupSpec { bits, group_size: gs, sym, whole_row: false }
    }

    #[test]
    fn only_kernels_that_read_f16_zeros_are_given_the_zero_kind() {
        // LlqIntGroupU8 ignores p3: the kernels built on it must not be handed the `zero` key
        // (p3 stays 0), and the f16 variant must be the decoder that reads it.
        let decoder = |k: &crate::CudaKernels| {
            let tail = k.source.rsplit("LLQ_DEFINE_KERNELS(").next().unwrap().to_string();
            tail.split(',').next().unwrap().trim().to_string()
        };
        let zero_key = |k: &crate::CudaKernels| {
            k.params.iter().any(|p| matches!(p, crate::KernelParam::Choice { key, .. } if key == "zero"))
        };
        let u8z = cuda_kernels("rtn");
        assert_eq!((decoder(&u8z).as_str(), zero_key(&u8z)), ("LlqIntGroupU8", false));
        let f16z = cuda_kernels_f16_zeros("hqq");
        assert_eq!((decoder(&f16z).as_str(), zero_key(&f16z)), ("LlqIntGroup", true));
        assert_eq!(f16z.params.len(), 4, "p3 is the fourth parameter");
        // Only the u8 decoder asks for four blocks an SM in q/k/v's entry (hqq's spilled there).
        let bounded = "#define LLQ_X3_BOUNDS __launch_bounds__(256, 4)";
        assert!(u8z.source.contains(bounded) && !f16z.source.contains(bounded));
        // Both decoders are the one template, so they share every decode but the zero kind's.
        let src = crate::cuda::INT_GROUP_DECODER;
        assert!(src.contains("typedef LlqIntGroupOf<true> LlqIntGroup;"));
        assert!(src.contains("typedef LlqIntGroupOf<false> LlqIntGroupU8;"));
        assert!(!src.replace("a.p3 != 0", "").contains("a.p3"), "p3 is read only through zf16");
    }

    #[test]
    fn find_params_by_hand() {
        // Asymmetric 4-bit over [-1, 2]: scale 3/15 = 0.2, zero round(1/0.2) = 5.
        let p = find_params([-1.0, 0.5, 2.0].into_iter(), &spec(4, 3, false));
        assert!((p.scale - 0.2).abs() < 1e-15 && p.zero == 5.0, "{p:?}");
        assert_eq!(code(2.0, p, 15), 15);
        assert_eq!(code(-1.0, p, 15), 0);
        // 0.1 / 0.2 = 0.5 rounds to even (0) + 5.
        assert_eq!(code(0.1, p, 15), 5);
        // Symmetric: range [-2, 2], scale 4/15, zero 8.
        let p = find_params([-1.0, 0.5, 2.0].into_iter(), &spec(4, 3, true));
        assert!((p.scale - 4.0 / 15.0).abs() < 1e-15 && p.zero == 8.0, "{p:?}");
        // All zeros: [-1, 1].
        let p = find_params([0.0, 0.0].into_iter(), &spec(2, 2, false));
        assert!((p.scale - 2.0 / 3.0).abs() < 1e-15 && p.zero == 2.0, "{p:?}");
        // A positive-only group still includes 0 in its range.
        let p = find_params([1.0, 3.0].into_iter(), &spec(8, 2, false));
        assert!((p.scale - 3.0 / 255.0).abs() < 1e-15 && p.zero == 0.0, "{p:?}");
    }

    #[test]
    fn pack_and_dequantize_round_trip_for_every_width() {
        let (rows, cols) = (3, 77);
        let data: Vec<f32> = (0..rows * cols).map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0).collect();
        for bits in [2, 3, 4, 8] {
            for gs in [32, 77] {
                let m = rtn(&data, rows, cols, spec(bits, gs, bits == 3));
                let q = m.pack();
                assert_eq!(q.total_bytes(), packed_size(rows as u64, cols as u64, &m.spec, false));
                let view = PackedView {
                    rows,
                    cols,
                    buffers: q.buffers.iter().map(|(n, b)| (n.as_str(), b.as_slice())).collect(),
                    metadata: q.metadata.clone(),
                };
                let mut out = vec![0f32; rows * cols];
                dequantize(&view, &mut out).unwrap();
                for r in 0..rows {
                    for c in 0..cols {
                        let p = m.params[r * m.spec.groups(cols) + c / gs];
                        let s = half::f16::from_f64(p.scale).to_f32();
                        let want = s * (m.codes[r * cols + c] as f32 - p.zero as f32);
                        assert_eq!(
                            out[r * cols + c].to_bits(),
                            want.to_bits(),
                            "bits {bits} gs {gs} [{r},{c}]"
                        );
                    }
                }
                // 8-bit codes are close to the weights (error at most half a step).
                if bits == 8 {
                    let worst = data.iter().zip(&out).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                    assert!(worst < 0.02, "{worst}");
                }
            }
        }
    }
}
