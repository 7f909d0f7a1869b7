//! Parity with real bitsandbytes 0.50.2 over many shapes (issue 14): 280 4-bit cases (NF4 and
//! FP4; every block size 64…4096; 1 to 8,192 blocks; shapes whose blocks straddle rows; rows
//! of very different scale; values on code boundaries; f32/f16/bf16 inputs; with and without
//! double quantization) and 42 LLM.int8 row-quantization cases (thresholds 0 and 6; values at
//! .5 after scaling), made on an H100 by `bench/peers/bnb_shapes.py`. The inputs are not in
//! the fixture: `testing::hash_values` and friends regenerate them exactly as the script does.
//!
//! What must hold is what the README states: everything bit for bit. Codes, absmax and the
//! whole double-quant state (its offset is torch's CUDA `mean`, whose summation order
//! depends on the length: `double_quant::mean_f32`), and LLM.int8's `CB`/`SCB` (which need
//! the GPU's approximate reciprocal: `rcp`).

use super::double_quant::double_quantize;
use super::{fp4_code, int8::int8_quantize_row, nf4_code, quantize_4bit};
use crate::testing::{hash_values as values, row_scale};
use serde_json::Value;

/// The script's tie values: the NF4 midpoints and FP4 pivots as Python floats, which torch
/// rounds from f64 to f32 — not `codes::NF4_THRESHOLDS`/`FP4_PIVOTS`, which are NVCC's direct
/// decimal-to-f32 roundings and differ from these by an ulp in places.
#[allow(clippy::excessive_precision)]
const MIDS: [f64; 22] = [
    -0.8480964004993439,
    -0.6106329262256622,
    -0.4599952697753906,
    -0.33967943489551544,
    -0.23460740596055984,
    -0.13791173323988914,
    -0.045525018125772476,
    0.03979014977812767,
    0.1202552504837513,
    0.2035212516784668,
    0.2920137718319893,
    0.3893125355243683,
    0.5016634166240692,
    0.6427869200706482,
    0.8614784181118011,
    0.00260417,
    0.0859375,
    0.20833333,
    0.29166667,
    0.4166667,
    0.583333,
    0.8333333,
];

/// Round to the input dtype and back, as `.to(dtype)` then the kernel's load do.
fn through(dtype: &str, x: f32) -> f32 {
    match dtype {
        "f32" => x,
        "f16" => half::f16::from_f32(x).to_f32(),
        "bf16" => half::bf16::from_f32(x).to_f32(),
        d => panic!("dtype {d}"),
    }
}

/// The script's `tensor(family, seed, rows, cols, dtype)`, flattened.
fn tensor(c: &Value) -> Vec<f32> {
    let (seed, rows, cols) = (u(c, "seed"), u(c, "rows") as usize, u(c, "cols") as usize);
    let mut x = values(seed, rows * cols);
    match c["family"].as_str().unwrap() {
        "uniform" => {}
        "scaled_rows" => {
            for (i, v) in x.iter_mut().enumerate() {
                *v *= row_scale(i / cols);
            }
        }
        "ties" => {
            let n = x.len();
            let a: Vec<f32> =
                values(seed + 1, n.div_ceil(64)).iter().map(|v| (v.abs() + 0.5) * 3.0).collect();
            for b in (0..n).step_by(64) {
                let big_a = a[b / 64];
                for k in 0..(n - b).min(64) {
                    let mut v = MIDS[(k + b / 64) % MIDS.len()] as f32 * big_a;
                    if k % 3 == 0 {
                        v = -v;
                    }
                    x[b + k] = if k == 0 { big_a } else { v };
                }
            }
        }
        f => panic!("family {f}"),
    }
    let dt = c["dtype"].as_str().unwrap();
    x.into_iter().map(|v| through(dt, v)).collect()
}

/// The script's `int8_input`, in f16 precision, flattened.
fn int8_input(c: &Value) -> Vec<f32> {
    let (seed, rows, cols) = (u(c, "seed"), u(c, "rows") as usize, u(c, "cols") as usize);
    let f16 = |v: f32| half::f16::from_f32(v).to_f32();
    if c["family"] == "halves" {
        let mut x = vec![0f32; rows * cols];
        for r in 0..rows {
            let a = 100.0 + r as f32;
            for j in 0..cols {
                let k = ((r * cols + j) as u64 * 7 + seed) % 127;
                x[r * cols + j] = if j == 0 { f16(a) } else { f16((k as f32 + 0.5) * a / 127.0) };
            }
        }
        return x;
    }
    let mut x: Vec<f32> = values(seed, rows * cols).into_iter().map(|v| v * 4.0).collect();
    for (i, v) in x.iter_mut().enumerate() {
        if c["family"] == "scaled_rows" {
            *v *= row_scale(i / cols);
        }
        if i % cols == cols / 2 {
            *v *= 3.0;
        }
    }
    x.into_iter().map(f16).collect()
}

fn u(c: &Value, k: &str) -> u64 {
    c[k].as_u64().unwrap_or_else(|| panic!("{k} in {c}"))
}

struct Fixture {
    meta: Value,
    bytes: Vec<u8>,
}

impl Fixture {
    fn load() -> Fixture {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/bnb/");
        let meta =
            serde_json::from_slice(&std::fs::read(format!("{dir}bnb-0.50.2-shapes.json")).unwrap()).unwrap();
        let xz = std::fs::read(format!("{dir}bnb-0.50.2-shapes.safetensors.xz")).unwrap();
        let mut bytes = vec![];
        lzma_rs::xz_decompress(&mut std::io::BufReader::new(&xz[..]), &mut bytes).unwrap();
        Fixture { meta, bytes }
    }

    fn get(&self, name: &str) -> Option<Vec<u8>> {
        let st = safetensors::SafeTensors::deserialize(&self.bytes).unwrap();
        st.tensor(name).ok().map(|t| t.data().to_vec())
    }

    fn f32s(&self, name: &str) -> Vec<f32> {
        self.get(name)
            .unwrap_or_else(|| panic!("{name}"))
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    }
}

#[test]
fn four_bit_codes_and_absmax_match_bitsandbytes_on_every_shape() {
    let fx = Fixture::load();
    let (mut cases, mut packed_checked, mut nested) = (0, 0, 0);
    for c in fx.meta["four_bit"].as_array().unwrap() {
        assert!(c.get("error").is_none(), "bitsandbytes refused a case: {c}");
        let key = c["key"].as_str().unwrap();
        let x = tensor(c);
        let code_of = if c["quant_type"] == "nf4" { nf4_code } else { fp4_code };
        let (packed, absmax) = quantize_4bit(&x, u(c, "blocksize") as usize, code_of);
        if let Some(want) = fx.get(&format!("{key}.packed")) {
            let bad = packed.iter().zip(&want).filter(|(a, b)| a != b).count();
            assert!(bad == 0 && packed.len() == want.len(), "{c}: {bad} of {} code bytes differ", want.len());
            packed_checked += 1;
        }
        if c["double_quant"] == true {
            nested += 1;
            let d = double_quantize(&absmax);
            let offset = fx.f32s(&format!("{key}.offset"))[0];
            assert_eq!(d.offset.to_bits(), offset.to_bits(), "{c}: offset {} vs {offset}", d.offset);
            assert_eq!(d.codes, fx.get(&format!("{key}.qabsmax")).unwrap(), "{c}: absmax codes");
            assert_eq!(d.absmax2, fx.f32s(&format!("{key}.absmax2")), "{c}: second-level absmax");
        } else {
            let want = fx.f32s(&format!("{key}.absmax"));
            assert_eq!(absmax, want, "{c}: absmax");
        }
        cases += 1;
    }
    eprintln!("4-bit: {cases} cases equal, {packed_checked} with codes, {nested} with double quantization");
    assert!(cases >= 280 && packed_checked >= 240 && nested >= 90);
}

#[test]
fn int8_rows_match_bitsandbytes_on_every_shape() {
    let fx = Fixture::load();
    let (mut cases, mut rows_checked) = (0, 0);
    for c in fx.meta["int8"].as_array().unwrap() {
        let key = c["key"].as_str().unwrap();
        let (rows, cols) = (u(c, "rows") as usize, u(c, "cols") as usize);
        let thr = c["threshold"].as_f64().unwrap() as f32;
        let x = int8_input(c);
        let want_scb = fx.f32s(&format!("{key}.SCB"));
        let want_cb = fx.get(&format!("{key}.CB"));
        // bitsandbytes zeroes the outlier columns in every row when there is more than one row
        // (callers do: the int8 plugin's matmul); the kernel zeroes the outliers themselves.
        let outlier_cols: Vec<usize> = (0..cols)
            .filter(|&j| thr > 0.0 && rows > 1 && (0..rows).any(|r| x[r * cols + j].abs() >= thr))
            .collect();
        let listed: Vec<usize> =
            c["outlier_cols"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
        if rows > 1 {
            assert_eq!(outlier_cols, listed, "{c}: outlier columns");
        }
        let mut q = vec![0i8; cols];
        for r in 0..rows {
            let a = int8_quantize_row(&x[r * cols..(r + 1) * cols], thr, &mut q);
            for &j in &outlier_cols {
                q[j] = 0;
            }
            assert_eq!(a.to_bits(), want_scb[r].to_bits(), "{c}: SCB of row {r}: {a} vs {}", want_scb[r]);
            if let Some(cb) = &want_cb {
                let theirs = &cb[r * cols..(r + 1) * cols];
                let bad: Vec<usize> = (0..cols).filter(|&j| q[j] as u8 != theirs[j]).collect();
                assert!(
                    bad.is_empty(),
                    "{c}: row {r}: {} codes differ, first at column {} (x {}, ours {}, theirs {})",
                    bad.len(),
                    bad[0],
                    x[r * cols + bad[0]],
                    q[bad[0]],
                    theirs[bad[0]] as i8
                );
                rows_checked += 1;
            }
        }
        cases += 1;
    }
    eprintln!("int8: {cases} cases, {rows_checked} rows of codes compared, all equal");
    assert!(cases >= 42 && rows_checked > 1000);
}
