//! Against the real hqq package (0.2.8.post1 on torch 2.11, CPU f32: `bench/peers/hqq_reference.py`
//! → `tests/fixtures/hqq/`): codes, inverse scales and zero points for 1–8 bits, groups of
//! 32/64/128, with and without the solver, on uniform, row-scaled, zero/repeated and
//! heavy-tailed inputs.
use super::Hqq;
use llq_sdk::quant::hqq;
use llq_sdk::quant::intgroup::IntGroupSpec;
use llq_sdk::testing::{abi_quantize, f32s, family_values, hash_values, hex, view};
use llq_sdk::QuantMethod;
use serde_json::Value;

fn input(c: &Value) -> (usize, usize, Vec<f32>) {
    let (rows, cols) = (c["rows"].as_u64().unwrap() as usize, c["cols"].as_u64().unwrap() as usize);
    (rows, cols, family_values(c["family"].as_str().unwrap(), c["seed"].as_u64().unwrap(), rows, cols))
}

/// Every code and inverse scale bit for bit as hqq computes them (f32 on the CPU; torch's
/// `max_v / denom` is `reciprocal(denom) * max_v`, followed here); zero points within a few
/// f32 ulps (torch sums each group's mean in its own order).
#[test]
fn codes_and_scales_are_hqqs_bit_for_bit_and_zeros_within_ulps() {
    let p = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/hqq/hqq-0.2.8.json");
    let fx: Value = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
    let cases = fx["cases"].as_array().unwrap();
    let (mut codes_total, mut zeros_total, mut zeros_off, mut worst_ulps) = (0, 0, 0, 0);
    for c in cases {
        let (rows, cols, x) = input(c);
        let (bits, gs) = (c["bits"].as_u64().unwrap() as u32, c["group_size"].as_u64().unwrap() as usize);
        let optimize = c["optimize"].as_bool().unwrap();
        let spec = IntGroupSpec { bits, group_size: gs, sym: false, whole_row: false };
        let m = hqq::quantize(&x, rows, cols, spec, bits == 4, optimize.then(hqq::Proximal::default));
        let label = format!("{bits} bits g{gs} {} {rows}×{cols} optimize={optimize}", c["family"]);
        let want_codes = hex(&c["codes_hex"]);
        let (want_scale, want_zero) = (f32s(&c["scale_f32"]), f32s(&c["zero_f32"]));
        assert_eq!((m.codes.len(), m.params.len()), (want_codes.len(), want_scale.len()), "{label}");
        let differ = m.codes.iter().zip(&want_codes).filter(|(a, b)| a != b).count();
        assert_eq!(differ, 0, "{label}: {differ} of {} codes differ", want_codes.len());
        for (g, p) in m.params.iter().enumerate() {
            assert_eq!((p.scale as f32).to_bits(), want_scale[g].to_bits(), "{label}: scale of group {g}");
            // torch sums the group mean in its own order (and its vectorised pow may differ by
            // an ulp): measured at most 23 ulps apart, in 515 of the 1,284 groups.
            let ulps = ((p.zero as f32).to_bits() as i64 - want_zero[g].to_bits() as i64).unsigned_abs();
            assert!(
                ulps <= 64 && (p.zero as f32).signum() == want_zero[g].signum(),
                "{label}: zero of group {g}: {} vs {}",
                p.zero,
                want_zero[g]
            );
            zeros_off += (ulps > 0) as usize;
            worst_ulps = worst_ulps.max(ulps);
        }
        zeros_total += m.params.len();
        codes_total += want_codes.len();
    }
    eprintln!("{zeros_off} of {zeros_total} zero points differ from hqq's, by at most {worst_ulps} ulps");
    assert_eq!((cases.len(), codes_total), (24, 82_048));
}

/// Through the ABI: the packed size formula, f16 zeros in the metadata, the plugin's own
/// dequantization is hqq's formula, and rows that are not whole groups are refused.
#[test]
fn packs_as_int_groups_with_f16_zeros() {
    let (rows, cols) = (6, 128);
    let x = hash_values(11, rows * cols);
    let q = abi_quantize::<Hqq>(rows, cols, &x, "{\"bits\": \"3\"}").unwrap();
    assert_eq!(q.metadata["zero"], "f16");
    let o = llq_sdk::testing::options("hqq", &Hqq.options(), "{\"bits\": \"3\"}");
    assert_eq!(q.total_bytes(), Hqq.packed_size(rows as u64, cols as u64, &o).unwrap());
    // 3-bit codes (12 words a row) + f16 scale + f16 zero per 64 values: 3.5 bits/weight.
    assert_eq!(q.total_bytes() as usize, rows * 12 * 4 + rows * 2 * 4);
    let mut out = vec![0f32; rows * cols];
    Hqq.dequantize(&view(rows, cols, &q), &mut out).unwrap();
    let spec = IntGroupSpec { bits: 3, group_size: 64, sym: false, whole_row: false };
    let m = hqq::quantize(&x, rows, cols, spec, false, Some(hqq::Proximal::default()));
    for (i, v) in out.iter().enumerate() {
        let p = m.params[i / 64];
        let (s, z) = (half::f16::from_f64(p.scale).to_f32(), half::f16::from_f64(p.zero).to_f32());
        assert_eq!(v.to_bits(), (s * (m.codes[i] as f32 - z)).to_bits(), "value {i}");
    }
    let e = abi_quantize::<Hqq>(2, 96, &hash_values(1, 192), "{}").unwrap_err();
    assert!(e.contains("rows of 96 values are not whole groups of 64"), "{e}");
}
