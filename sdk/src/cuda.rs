//! Building blocks for a method's CUDA kernels (kernel convention v1).
//!
//! The host compiles a method's CUDA C source with NVRTC and launches two entry points on
//! its stream (see [`crate::CudaKernels`] for the signatures). Rather than writing the loops
//! itself, a method writes a small *decoder* for its packed format and instantiates the
//! shared drivers in [`HEADER`] with `LLQ_DEFINE_KERNELS(Decoder, unroll, prefix)`: the
//! dequantize-to-bf16 kernel, and the fused dequantize-matvec for decode (batch 1–8), four
//! output rows a block with f32 accumulation. The header's comment documents the decoder
//! interface; `four_bit.cu` (NF4/FP4) is a complete example. The header has grown by
//! optional decoder entries only, found by their presence, so older decoders compile
//! unchanged: v1.1 row/column entries (`load8_rc`/`decode8_rc`), v1.2 the wide matvec
//! (`wide_ok`/`load32_rc`/`decode32`: 32 weights from one 16-byte load, used for one row of
//! x in the same launch shape) and `lut_len` (stage only the table entries a matrix reads);
//! v1.3 adds entries, not decoder requirements: the tensor-core matvec `<prefix>_matvec_mma`
//! (and `_mma16`) for 2–64 rows of x, built from the same decoder; v1.4 the three-matrix entries
//! (`_b1_x3`, `_mma16_x3`, `_mma_x3`); v1.5 programmatic dependent launch (every driver waits
//! for the kernel before with `llq_grid_enter` after its weight-only prologue, and the
//! `<prefix>_matvec_pdl` marker says so); v1.6 the 1-row entries with the decode step's edges
//! folded in (`_b1_norm`, `_b1_x3_norm`, `_b1_res`, `_b1_glu_norm`: the RMSNorm before, the
//! residual add or SwiGLU after, with the host kernels' own arithmetic, which moved into the
//! header as `llq_rmsnorm_row` and `llq_swiglu1`).
//!
//! Constants are emitted as exact bit patterns ([`f32_table`], [`f32_define`]) so the GPU
//! uses the very same values as the CPU reference.

/// The shared kernel drivers (`llq_kernels.cuh`), to be placed first in a method's source.
pub const HEADER: &str = include_str!("cuda/llq_kernels.cuh");

/// The decoder of bitsandbytes' 4-bit formats (needs `LLQ_CODE_BITS` and `LLQ_DYN_BITS`).
pub const FOUR_BIT_DECODER: &str = include_str!("cuda/four_bit.cu");

/// The decoder of the integer group format ([`crate::quant::intgroup`]).
pub const INT_GROUP_DECODER: &str = include_str!("cuda/intgroup.cu");

/// `__constant__ unsigned NAME[n] = {…};` holding the f32 bit patterns of `values`
/// (read them with `__uint_as_float`).
pub fn f32_table(name: &str, values: &[f32]) -> String {
    let items: Vec<String> = values.iter().map(|v| format!("0x{:08x}u", v.to_bits())).collect();
    format!("__constant__ unsigned {name}[{}] = {{{}}};\n", values.len(), items.join(", "))
}

/// `#define NAME` as an exact f32 value.
pub fn f32_define(name: &str, v: f32) -> String {
    format!("#define {name} __uint_as_float(0x{:08x}u)\n", v.to_bits())
}

/// A complete kernel source: the header, then `parts` in order.
pub fn source(parts: &[&str]) -> String {
    let mut s = String::from(HEADER);
    for p in parts {
        s.push('\n');
        s.push_str(p);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The body of the first definition of `name(` in `src`: from there to the next line
    /// holding only `}` (the header's functions are formatted that way).
    fn body<'a>(src: &'a str, name: &str) -> &'a str {
        let at = src.find(&format!("{name}(")).unwrap_or_else(|| panic!("{name} not in the header"));
        let end = src[at..].find("\n}\n").map(|e| at + e).unwrap_or(src.len());
        &src[at..end]
    }

    /// Header v1.5's promise (`<matvec>_pdl`): every driver waits for the kernel before it
    /// (`llq_grid_enter`) before it reads x or writes, so the host may launch the entries as
    /// programmatic dependents; and the entry macro exports the marker that says so.
    #[test]
    fn every_driver_waits_for_the_kernel_before_and_the_marker_is_exported() {
        for d in ["llq_dequantize", "llq_matvec_w", "llq_matvec_b", "llq_matvec_mma"] {
            let b = body(HEADER, d);
            let enter = b.find("llq_grid_enter();").unwrap_or_else(|| panic!("{d} never waits"));
            for first_use in [
                "llq_ldx8<FX>(x",
                "llq_fx_stage(x",
                "__ldg(reinterpret_cast<const uint4*>(x",
                "x[",
                "y[",
                "llq_store_y<FX>(y",
                "out + i",
                "out[j]",
            ] {
                if let Some(at) = b.find(first_use) {
                    assert!(enter < at, "{d} touches `{first_use}` before it waits");
                }
            }
        }
        let define = body(HEADER, "#define LLQ_DEFINE_KERNELS");
        assert!(define.contains("PREFIX##_matvec_pdl()"), "LLQ_DEFINE_KERNELS does not export the marker");
        assert!(
            HEADER.contains("griddepcontrol.wait;") && HEADER.contains("griddepcontrol.launch_dependents;")
        );
    }

    /// Header v1.6's promise: the 1-row entries that take x before its RMSNorm normalize it
    /// with the function llq-host's norm kernel runs (so a step with and without them computes
    /// the same bits), inside the driver after the wait and before any x is read; the residual
    /// entry adds into y with the norm kernel's rounding, the gate/up entry rounds gate and up
    /// as their stores would and runs the SwiGLU kernel's function; the entry macro exports all
    /// four.
    #[test]
    fn the_folded_edges_share_the_norm_and_are_exported() {
        let stage = body(HEADER, "static __device__ __forceinline__ void llq_fx_stage");
        assert!(stage.contains("llq_rmsnorm_row<false>("), "the matvec's norm is not llq_rmsnorm_row");
        for d in ["llq_matvec_w", "llq_matvec_b"] {
            let b = body(HEADER, d);
            let (enter, stage) = (b.find("llq_grid_enter();").unwrap(), b.find("llq_fx_stage(").unwrap());
            let read =
                b.find("llq_ldx8<FX>(").unwrap_or_else(|| panic!("{d} does not read x through llq_ldx8"));
            assert!(enter < stage && stage < read, "{d}: wait, normalize, then read x");
            assert!(b.contains("llq_store_y<FX>("), "{d} does not store through llq_store_y");
        }
        let store = body(HEADER, "static __device__ __forceinline__ void llq_store_y");
        assert!(
            store.contains("llq_bf16_to_f32(y[i]) + llq_round_bf16(v)"),
            "the residual add rounds differently"
        );
        let define = body(HEADER, "#define LLQ_DEFINE_KERNELS");
        let glu = body(HEADER, "static __device__ __forceinline__ void llq_store_glu");
        assert!(
            glu.contains("llq_swiglu1(llq_round_bf16(g), llq_round_bf16(u))"),
            "gate/up not rounded as stored"
        );
        for e in [
            "PREFIX##_matvec_b1_norm(",
            "PREFIX##_matvec_b1_res(",
            "PREFIX##_matvec_b1_x3_norm)",
            "PREFIX##_matvec_b1_glu_norm(",
        ] {
            assert!(define.contains(e), "LLQ_DEFINE_KERNELS does not export {e}");
        }
    }

    #[test]
    fn constants_are_exact_bit_patterns() {
        assert_eq!(f32_define("X", 1.0), "#define X __uint_as_float(0x3f800000u)\n");
        let t = f32_table("T", &[-1.0, 0.5]);
        assert_eq!(t, "__constant__ unsigned T[2] = {0xbf800000u, 0x3f000000u};\n");
    }

    #[test]
    fn header_defines_the_convention() {
        for needle in
            ["LLQ_DEFINE_KERNELS", "##_dequantize", "##_matvec", "llq_f32_to_bf16", "LLQ_MAX_BATCH 8"]
        {
            assert!(HEADER.contains(needle), "header lacks {needle}");
        }
    }

    #[test]
    fn four_bit_sources_carry_the_exact_tables_and_entries() {
        use crate::quant::{dynamic_map, four_bit, fp4_table, NF4_TABLE};
        for (fmt, table) in [(four_bit::NF4, NF4_TABLE), (four_bit::FP4, fp4_table())] {
            let k = four_bit::cuda_kernels(fmt);
            let q = fmt.quant_type;
            assert_eq!(k.dequantize, format!("{q}_dequantize"));
            assert_eq!(k.matvec.as_deref(), Some(format!("{q}_matvec").as_str()));
            assert!(k.source.contains(&f32_table("LLQ_CODE_BITS", &table)));
            assert!(k.source.contains(&f32_table("LLQ_DYN_BITS", &dynamic_map())));
            assert!(k.source.contains(&format!("LLQ_DEFINE_KERNELS(LlqFourBit, 4, {q})")));
        }
    }

    #[test]
    fn kernel_params_resolve_from_metadata() {
        use crate::KernelParam;
        let meta = serde_json::json!({"block_size": 64, "double_quant": true, "dtype": "bf16", "x": 1.5});
        assert_eq!(KernelParam::Key("block_size".into()).resolve(&meta).unwrap(), 64);
        assert_eq!(KernelParam::Key("double_quant".into()).resolve(&meta).unwrap(), 1);
        let choice = KernelParam::Choice { key: "dtype".into(), values: vec!["f16".into(), "bf16".into()] };
        assert_eq!(choice.resolve(&meta).unwrap(), 1);
        assert!(KernelParam::Key("missing".into())
            .resolve(&meta)
            .unwrap_err()
            .0
            .contains("not in the metadata"));
        assert!(KernelParam::Key("x".into()).resolve(&meta).unwrap_err().0.contains("not an integer"));
        let bad = KernelParam::Choice { key: "dtype".into(), values: vec!["f16".into()] };
        assert!(bad.resolve(&meta).is_err());
        // The JSON form plugins write: a bare key or an object.
        let ps: Vec<KernelParam> =
            serde_json::from_str(r#"["block_size", {"key": "dtype", "values": ["f16", "bf16"]}]"#).unwrap();
        assert_eq!(ps[1], choice);
    }
}
