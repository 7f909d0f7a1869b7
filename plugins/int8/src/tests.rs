use super::Int8;
use llq_sdk::testing::{abi_quantize, bnb_reference, buffer, bytes_f32, f16s, f32s, hex, round_trip, view};
use llq_sdk::QuantMethod;

#[test]
fn rows_scale_by_absmax_and_round_half_to_even() {
    // Row 0: absmax 127 → scale 1: 2.5 → 2, 3.5 → 4, −2.5 → −2, −127 → −127 (by hand).
    // Row 1: absmax 2 → scale 63.5: 1 → 63.5 → 64 (even), −0.5 → −31.75 → −32, 0 → 0.
    let w = [127.0, 2.5, 3.5, -2.5, 2.0, 1.0, -0.5, 0.0];
    let (q, out) = round_trip::<Int8>(2, 4, &w, "{}");
    let cb: Vec<i8> = buffer(&q, "CB").iter().map(|&b| b as i8).collect();
    assert_eq!(cb, vec![127, 2, 4, -2, 127, 64, -32, 0]);
    assert_eq!(bytes_f32(buffer(&q, "SCB")), vec![127.0, 2.0]);
    assert_eq!(q.total_bytes(), 8 + 8);
    // Dequantized = q · absmax / 127 (bitsandbytes multiplies by 7.874015718698502e-3).
    assert!((out[1] - 2.0).abs() < 1e-5 && (out[5] - 64.0 * 2.0 / 127.0).abs() < 1e-6);
}

#[test]
fn zero_rows_and_non_finite_input() {
    let (q, out) = round_trip::<Int8>(1, 4, &[0.0; 4], "{}");
    // 0 · (127/0) = NaN, cast to int8 as 0 (Rust saturating cast; CUDA __float2int_rn gives 0).
    assert!(buffer(&q, "CB").iter().all(|&b| b == 0));
    assert!(out.iter().all(|v| *v == 0.0));
    assert!(abi_quantize::<Int8>(1, 2, &[1.0, f32::NAN], "{}").unwrap_err().contains("non-finite"));
    // An empty matrix is refused by the SDK before the method runs (int8 panicked on 128×0).
    for (r, c) in [(128, 0), (0, 64)] {
        let e = abi_quantize::<Int8>(r, c, &[], "{}").unwrap_err();
        assert!(e.contains(&format!("empty {r}×{c} matrix")), "{e}");
    }
    assert!(abi_quantize::<Int8>(1, 2, &[1.0, 2.0], r#"{"threshold":-1}"#)
        .unwrap_err()
        .contains("threshold"));
}

#[test]
fn weights_and_matmul_match_bitsandbytes() {
    let r = bnb_reference();
    let t = &r["int8"];
    let (rows, cols, m) = (
        t["rows"].as_u64().unwrap() as usize,
        t["cols"].as_u64().unwrap() as usize,
        t["m"].as_u64().unwrap() as usize,
    );
    let w = f32s(&t["w_f32"]);
    let x = f32s(&t["x_f32"]);
    let (q, _) = round_trip::<Int8>(rows, cols, &w, "{}");
    assert_eq!(buffer(&q, "CB"), hex(&t["CB_hex"]).as_slice(), "CB");
    assert_eq!(bytes_f32(buffer(&q, "SCB")), f32s(&t["SCB_f32"]), "SCB");
    for case in t["cases"].as_array().unwrap() {
        let thr = case["threshold"].as_f64().unwrap();
        let json = format!(r#"{{"threshold":{thr}}}"#);
        let q = abi_quantize::<Int8>(rows, cols, &w, &json).unwrap();
        let want = f16s(&case["y_f16"]);
        let mut y = vec![0f32; m * rows];
        Int8.matmul(&view(rows, cols, &q), &x, m, &mut y).unwrap();
        // bitsandbytes' int8 GEMM and int8_mm_dequant are exact; the outlier part goes through
        // cuBLAS fp16 (f32 accumulate, order unknown), so allow 1 f16 ulp there.
        let mut exact = 0;
        for (i, (a, b)) in y.iter().zip(&want).enumerate() {
            let ulp = half::f16::from_f32(*b).to_f32().abs() * (1.0 / 1024.0);
            assert!((a - b).abs() <= ulp.max(1e-7), "threshold {thr}: y[{i}] = {a}, bitsandbytes {b}");
            exact += (a == b) as usize;
        }
        if thr == 0.0 {
            assert_eq!(exact, y.len(), "without outliers the result is exact");
        }
        assert!(exact * 10 >= y.len() * 9, "threshold {thr}: only {exact}/{} exact", y.len());
    }
}
