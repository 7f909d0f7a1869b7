//! Against llama.cpp's own Python package (gguf-py 0.19.0, `bench/peers/gguf_reference.py` →
//! `tests/fixtures/gguf/`), and against the blocks of the SmolLM2 GGUF as it was published.
use super::Gguf;
use llq_sdk::testing::{abi_quantize, buffer, family_values, hash_values, hex, view};
use llq_sdk::{Calibration, QuantMethod, Quantized, Weights};
use serde_json::Value;

fn fixture() -> Value {
    let p = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/gguf/gguf-py-0.19.0.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn input(c: &Value) -> (usize, usize, Vec<f32>) {
    let (rows, cols) = (c["rows"].as_u64().unwrap() as usize, c["cols"].as_u64().unwrap() as usize);
    (rows, cols, family_values(c["family"].as_str().unwrap(), c["seed"].as_u64().unwrap(), rows, cols))
}

fn opts(t: &str) -> String {
    format!("{{\"type\": \"{t}\"}}")
}

#[test]
fn legacy_types_quantize_as_gguf_py_does() {
    let fx = fixture();
    let cases = fx["quantize"].as_array().unwrap();
    for c in cases {
        let (rows, cols, x) = input(c);
        let t = c["type"].as_str().unwrap();
        let q = abi_quantize::<Gguf>(rows, cols, &x, &opts(t)).unwrap();
        let want = hex(&c["blocks_hex"]);
        let got = buffer(&q, "blocks");
        let first = got.iter().zip(&want).position(|(a, b)| a != b);
        assert!(
            got == want.as_slice(),
            "{t} {} {rows}×{cols}: blocks differ from byte {first:?}",
            c["family"]
        );
    }
    assert_eq!(cases.len(), 45);
}

#[test]
fn every_type_decodes_as_gguf_py_does() {
    let fx = fixture();
    for c in fx["dequantize"].as_array().unwrap() {
        let t = c["type"].as_str().unwrap();
        let bytes = hex(&c["bytes_hex"]);
        let want: Vec<f32> = c["values_f32"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| f32::from_bits(v.as_u64().unwrap() as u32))
            .collect();
        let q = llq_sdk::Quantized::new(serde_json::json!({ "type": t })).with_buffer("blocks", bytes);
        let mut out = vec![0f32; want.len()];
        Gguf.dequantize(&view(1, want.len(), &q), &mut out).unwrap();
        let bad = out.iter().zip(&want).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
        assert_eq!(bad, 0, "{t}: {bad} of {} values differ", want.len());
    }
}

#[test]
fn k_types_fall_back_like_llama_quantize_and_round_trip() {
    // 576 columns (SmolLM2's hidden size) are not whole 256-blocks: q4_k falls back to q5_0.
    let x = hash_values(7, 2 * 576);
    let q = abi_quantize::<Gguf>(2, 576, &x, &opts("q4_k")).unwrap();
    assert_eq!(q.metadata["type"], "q5_0");
    let e = abi_quantize::<Gguf>(2, 576, &x, "{\"type\": \"q4_k\", \"fallback\": \"false\"}").unwrap_err();
    assert!(e.contains("not whole blocks of 256"), "{e}");
    let e = abi_quantize::<Gguf>(1, 33, &hash_values(1, 33), &opts("q8_0")).unwrap_err();
    assert!(e.contains("rows of 33 values are not whole blocks of 32"), "{e}");
    // Whole blocks: each K type keeps its type; the error shrinks with more bits.
    let x = hash_values(9, 4 * 512);
    let mut last = f64::INFINITY;
    for t in ["q2_k", "q3_k", "q4_k", "q5_k", "q6_k"] {
        let q = abi_quantize::<Gguf>(4, 512, &x, &opts(t)).unwrap();
        assert_eq!(q.metadata["type"], t);
        let mut out = vec![0f32; x.len()];
        Gguf.dequantize(&view(4, 512, &q), &mut out).unwrap();
        let rms =
            (x.iter().zip(&out).map(|(a, b)| ((a - b) as f64).powi(2)).sum::<f64>() / x.len() as f64).sqrt();
        assert!(rms < last && rms < 0.2, "{t}: rms error {rms} after {last}");
        last = rms;
    }
}

/// The published SmolLM2 GGUF's Q4_1 layers and Q8_0 embedding: decoding a tensor and
/// quantizing it again with its own type gives back its blocks, byte for byte.
#[test]
fn the_shipped_smollm2_blocks_are_reproduced() {
    use candle_core::quantized::gguf_file;
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../models/smollm2-135m-instruct.gguf");
    let Ok(mut f) = std::fs::File::open(path) else {
        panic!("{path} is missing: run `make models`");
    };
    let content = gguf_file::Content::read(&mut f).unwrap();
    let mut checked = 0;
    for (name, want_type) in [
        ("token_embd.weight", "q8_0"),
        ("blk.0.attn_q.weight", "q4_1"),
        ("blk.0.ffn_down.weight", "q4_1"),
        ("blk.29.ffn_up.weight", "q4_1"),
    ] {
        let qt = content.tensor(&mut f, name, &candle_core::Device::Cpu).unwrap();
        let raw = qt.data().unwrap().into_owned();
        let (rows, cols) = qt.shape().dims2().unwrap();
        let x: Vec<f32> =
            qt.dequantize(&candle_core::Device::Cpu).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let q = abi_quantize::<Gguf>(rows, cols, &x, &opts(want_type)).unwrap();
        let got = buffer(&q, "blocks");
        let same = got.chunks(20).zip(raw.chunks(20)).filter(|(a, b)| a == b).count();
        assert!(got == raw.as_slice(), "{name}: {same} of {} 20-byte chunks equal", raw.len() / 20);
        checked += 1;
    }
    assert_eq!(checked, 4);
}

/// llama.cpp's C quantizers (ggml-quants.c through `ggml_quantize_chunk`, as `llama-quantize`
/// calls them; vendored in the llama-cpp-python 0.3.36 sdist, `bench/peers/ggml_quants_reference.py`):
/// every offered type byte for byte, and the K types with an importance matrix too.
#[test]
fn every_type_quantizes_as_llama_cpp_does_with_and_without_an_imatrix() {
    let p = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/gguf/ggml-quants-llama-cpp-python-0.3.36.json"
    );
    let fx: Value = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
    let cases = fx["cases"].as_array().unwrap();
    let (mut plain, mut weighted) = (0, 0);
    let mut differ = vec![];
    for c in cases {
        let (rows, cols, x) = input(c);
        let t = c["type"].as_str().unwrap();
        let want = hex(&c["blocks_hex"]);
        let got = match c.get("imatrix_f32") {
            None => {
                plain += 1;
                let q = abi_quantize::<Gguf>(rows, cols, &x, &opts(t)).unwrap();
                assert_eq!(q.metadata["imatrix"], false);
                buffer(&q, "blocks").to_vec()
            }
            Some(im) => {
                weighted += 1;
                let im = llq_sdk::testing::f32s(im);
                let q = quantize_with_imatrix(rows, cols, &x, t, &im).unwrap();
                assert_eq!(q.metadata["imatrix"], true, "{t}");
                buffer(&q, "blocks").to_vec()
            }
        };
        if got != want {
            let bytes = got.iter().zip(&want).filter(|(a, b)| a != b).count();
            differ.push(format!(
                "{t} {} {rows}×{cols} imatrix={}: {bytes} of {} bytes differ",
                c["family"],
                c.get("imatrix_f32").is_some(),
                want.len()
            ));
        }
    }
    assert!(differ.is_empty(), "{} of {} cases differ:\n{}", differ.len(), cases.len(), differ.join("\n"));
    assert_eq!((plain, weighted), (90, 45));
}

fn quantize_with_imatrix(
    rows: usize,
    cols: usize,
    x: &[f32],
    t: &str,
    im: &[f32],
) -> Result<Quantized, String> {
    let o = llq_sdk::testing::options(
        "gguf",
        &Gguf.options(),
        &format!("{{\"type\": \"{t}\", \"imatrix\": \"true\"}}"),
    );
    let ones = vec![1f32; cols];
    let c = Calibration {
        n_tokens: 1,
        abs_max: &ones,
        mean_sq: im,
        samples: &[],
        n_samples: 0,
        hessian: None,
        abs_mean: &[],
    };
    let w = Weights { layer: "test", rows, cols, data: x };
    Gguf.quantize(&w, &o, Some(&c)).map_err(|e| e.0)
}

/// The importance matrix is used where candle has llama.cpp's weighted quantizer (K types),
/// reported per layer; it changes the blocks and lowers the importance-weighted error; the
/// host is asked for calibration only when it is on; without data it is an error.
#[test]
fn the_importance_matrix_is_applied_recorded_and_asked_for_only_when_on() {
    use llq_sdk::CalibrationNeed;
    let (rows, cols) = (8, 512);
    let x = hash_values(31, rows * cols);
    // A few columns matter a lot more than the rest, as in real activations.
    let im: Vec<f32> = (0..cols).map(|j| if j % 37 == 0 { 50.0 } else { 0.05 }).collect();
    let weighted_err = |q: &Quantized| {
        let mut out = vec![0f32; x.len()];
        Gguf.dequantize(&view(rows, cols, q), &mut out).unwrap();
        x.iter()
            .zip(&out)
            .enumerate()
            .map(|(i, (a, b))| im[i % cols] as f64 * ((a - b) as f64).powi(2))
            .sum::<f64>()
    };
    for t in ["q2_k", "q3_k", "q4_k", "q5_k", "q6_k"] {
        let plain = abi_quantize::<Gguf>(rows, cols, &x, &opts(t)).unwrap();
        let with = quantize_with_imatrix(rows, cols, &x, t, &im).unwrap();
        assert_ne!(buffer(&plain, "blocks"), buffer(&with, "blocks"), "{t}");
        let (e0, e1) = (weighted_err(&plain), weighted_err(&with));
        assert!(e1 < e0, "{t}: importance-weighted error {e1} with the imatrix, {e0} without");
    }
    // 576-wide rows fall back to a legacy type, which is quantized without the matrix.
    let x576 = hash_values(5, 2 * 576);
    let q = quantize_with_imatrix(2, 576, &x576, "q4_k", &vec![1.0; 576]).unwrap();
    assert_eq!((q.metadata["type"].as_str(), q.metadata["imatrix"].as_bool()), (Some("q5_0"), Some(false)));
    let need = |json: &str| Gguf.calibration_for(&llq_sdk::testing::options("gguf", &Gguf.options(), json));
    assert_eq!(need("{}"), CalibrationNeed::None);
    assert_eq!(need("{\"imatrix\": \"true\"}"), CalibrationNeed::Stats);
    let e = abi_quantize::<Gguf>(1, 256, &hash_values(2, 256), "{\"type\": \"q4_k\", \"imatrix\": \"true\"}")
        .unwrap_err();
    assert!(e.contains("imatrix=true on layer test: no calibration data"), "{e}");
}
