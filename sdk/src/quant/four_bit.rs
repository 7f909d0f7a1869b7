//! The bitsandbytes 4-bit formats (NF4, FP4) as one parameterized method, so the `nf4` and
//! `fp4` plugins differ only in their table and decision tree.

use super::blockwise::{dequantize_4bit, dynamic_map, n_blocks, quantize_4bit};
use super::codes::{fp4_code, fp4_table, nf4_code, NF4_TABLE};
use super::double_quant::{double_dequantize, double_quantize, DoubleQuant, DOUBLE_QUANT_BLOCK};
use crate::{bail, f32_to_bytes, OptionKind, OptionSpec, Options, PackedView, Quantized, Result, Weights};

/// One 4-bit data type.
#[derive(Clone, Copy)]
pub struct Format {
    /// `"nf4"` or `"fp4"` (recorded in metadata).
    pub quant_type: &'static str,
    pub code_of: fn(f32) -> u8,
    pub table: fn() -> [f32; 16],
}

pub const NF4: Format = Format { quant_type: "nf4", code_of: nf4_code, table: || NF4_TABLE };
pub const FP4: Format = Format { quant_type: "fp4", code_of: fp4_code, table: fp4_table };

/// Block sizes bitsandbytes' CUDA kernels accept.
pub const BLOCK_SIZES: [&str; 7] = ["64", "128", "256", "512", "1024", "2048", "4096"];

pub fn options() -> Vec<OptionSpec> {
    vec![
        OptionSpec::new("block_size", OptionKind::Int, "64", "elements per absmax block (bitsandbytes: 64)")
            .choices(&BLOCK_SIZES),
        OptionSpec::new(
            "double_quant",
            OptionKind::Bool,
            "false",
            "quantize the absmax values too (8-bit dynamic map, block 256), as bnb_4bit_use_double_quant",
        ),
    ]
}

fn layout(rows: u64, cols: u64, opts: &Options) -> Result<(usize, usize, bool)> {
    let n = rows.checked_mul(cols).ok_or("matrix too large")? as usize;
    Ok((n, opts.get_usize("block_size")?, opts.get_bool("double_quant")?))
}

/// Codes (`ceil(n/2)` bytes) + absmax (4 bytes a block), or with double quantization
/// 1 byte a block + a 4-byte offset + 4 bytes per 256 blocks.
pub fn packed_size(rows: u64, cols: u64, opts: &Options) -> Result<u64> {
    let (n, block, dq) = layout(rows, cols, opts)?;
    let nb = n_blocks(n, block);
    let scales = if dq { nb + 4 + 4 * n_blocks(nb, DOUBLE_QUANT_BLOCK) } else { 4 * nb };
    Ok((n.div_ceil(2) + scales) as u64)
}

pub fn quantize(fmt: Format, w: &Weights, opts: &Options) -> Result<Quantized> {
    let (_, block, dq) = layout(w.rows as u64, w.cols as u64, opts)?;
    let (codes, absmax) = quantize_4bit(w.data, block, fmt.code_of);
    let meta = serde_json::json!({"quant_type": fmt.quant_type, "block_size": block, "double_quant": dq});
    let q = Quantized::new(meta).with_buffer("codes", codes);
    Ok(if dq {
        let d = double_quantize(&absmax);
        q.with_buffer("absmax_codes", d.codes)
            .with_buffer("absmax_offset", d.offset.to_le_bytes().to_vec())
            .with_buffer("absmax2", f32_to_bytes(&d.absmax2))
    } else {
        q.with_buffer("absmax", f32_to_bytes(&absmax))
    })
}

/// The absmax values of a packed matrix (double-dequantized when needed).
pub fn absmax_of(p: &PackedView) -> Result<Vec<f32>> {
    if p.meta_bool("double_quant")? {
        let offset = p.f32_buffer("absmax_offset")?;
        let [offset] = offset[..] else { bail!("absmax_offset must hold one f32") };
        let d = DoubleQuant {
            codes: p.buffer("absmax_codes")?.to_vec(),
            offset,
            absmax2: p.f32_buffer("absmax2")?,
        };
        if d.absmax2.len() != n_blocks(d.codes.len(), DOUBLE_QUANT_BLOCK) {
            bail!("absmax2 has {} values for {} absmax codes", d.absmax2.len(), d.codes.len());
        }
        Ok(double_dequantize(&d))
    } else {
        p.f32_buffer("absmax")
    }
}

/// GPU kernels (convention v1) for a 4-bit format: the shared 4-bit decoder with this
/// format's table; entry points `<quant_type>_dequantize` and `<quant_type>_matvec`.
pub fn cuda_kernels(fmt: Format) -> crate::CudaKernels {
    use crate::cuda;
    let q = fmt.quant_type;
    let source = cuda::source(&[
        &cuda::f32_table("LLQ_CODE_BITS", &(fmt.table)()),
        &cuda::f32_table("LLQ_DYN_BITS", &dynamic_map()),
        cuda::FOUR_BIT_DECODER,
        &format!("LLQ_DEFINE_KERNELS(LlqFourBit, 4, {q})\n"),
    ]);
    crate::CudaKernels {
        source,
        dequantize: format!("{q}_dequantize"),
        matvec: Some(format!("{q}_matvec")),
        params: vec![
            crate::KernelParam::Key("block_size".into()),
            crate::KernelParam::Key("double_quant".into()),
        ],
    }
}

pub fn dequantize(fmt: Format, p: &PackedView, out: &mut [f32]) -> Result<()> {
    if p.meta_str("quant_type")? != fmt.quant_type {
        bail!("packed matrix is {}, not {}", p.meta_str("quant_type")?, fmt.quant_type);
    }
    let block = p.meta_u64("block_size")? as usize;
    if block < 2 || !block.is_multiple_of(2) {
        bail!("invalid block_size {block} in metadata");
    }
    let codes = p.buffer("codes")?;
    let absmax = absmax_of(p)?;
    let n = out.len();
    if codes.len() != n.div_ceil(2) || absmax.len() != n_blocks(n, block) {
        bail!(
            "packed buffers do not fit a {}×{} matrix: {} code bytes, {} absmax values",
            p.rows,
            p.cols,
            codes.len(),
            absmax.len()
        );
    }
    dequantize_4bit(codes, &absmax, block, &(fmt.table)(), out);
    Ok(())
}
