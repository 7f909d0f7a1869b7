//! Expected codes worked out by hand from bitsandbytes' FP4 (e2m1) table: code bits
//! `s e e m`, magnitudes {0, 0.0625, 8, 12, 4, 6, 2, 3}/12 for codes 0..7, sign in bit 3.
use super::Fp4;
use llq_sdk::testing::{abi_quantize, buffer, bytes_f32, check_four_bit_against_bnb, round_trip};

fn codes(packed: &[u8]) -> Vec<u8> {
    packed.iter().flat_map(|b| [b >> 4, b & 15]).collect()
}

#[test]
fn every_table_value_maps_to_its_code_and_midpoints_go_down() {
    // absmax 12 so normalized values are magnitude/12 exactly representable steps.
    let mags = [0.0f32, 0.0625, 8.0, 12.0, 4.0, 6.0, 2.0, 3.0];
    let mut data = vec![12.0f32];
    data.extend(mags.iter().skip(1));
    data.extend(mags.iter().skip(1).map(|m| -m));
    let (q, out) = round_trip::<Fp4>(1, data.len(), &data, r#"{"block_size":64}"#);
    let c = codes(buffer(&q, "codes"));
    assert_eq!(&c[..15], &[3, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15]);
    for (a, b) in data.iter().zip(&out) {
        assert_eq!(a, b);
    }
    // Midpoints between sorted magnitudes (0, .0625, 2, 3, 4, 6, 8, 12)/12, by hand:
    // bitsandbytes' pivots 0.00260417, 0.0859375, 0.20833333, 0.29166667, 0.4166667,
    // 0.583333, 0.8333333 — a value on a pivot takes the lower magnitude.
    let pivots =
        ["0.00260417", "0.0859375", "0.20833333", "0.29166667", "0.4166667", "0.583333", "0.8333333"];
    let lower = [0u8, 1, 6, 7, 4, 5, 2];
    let mut data = vec![1.0f32];
    data.extend(pivots.iter().map(|p| p.parse::<f32>().unwrap()));
    data.extend(pivots.iter().map(|p| -p.parse::<f32>().unwrap()));
    let (q, _) = round_trip::<Fp4>(1, data.len(), &data, "{}");
    let c = codes(buffer(&q, "codes"));
    assert_eq!(&c[1..8], &lower);
    assert_eq!(&c[8..15], &lower.map(|l| l | 8));
}

#[test]
fn zeros_all_equal_and_partial_blocks() {
    let (q, out) = round_trip::<Fp4>(1, 64, &[0.0; 64], "{}");
    assert!(buffer(&q, "codes").iter().all(|&b| b == 0));
    assert!(out.iter().all(|&v| v == 0.0));
    let (q, out) = round_trip::<Fp4>(1, 64, &[-0.3; 64], "{}");
    assert!(codes(buffer(&q, "codes")).iter().all(|&c| c == 0b1011)); // −1.0 · absmax
    assert!(out.iter().all(|&v| v == -0.3));
    let data: Vec<f32> = (0..101).map(|i| (i as f32 - 50.0) / 10.0).collect();
    let (q, _) = round_trip::<Fp4>(1, 101, &data, "{}");
    assert_eq!(buffer(&q, "codes").len(), 51);
    assert_eq!(buffer(&q, "codes")[50] & 0x0f, 0); // pad 0.0 → +0 code
    assert_eq!(bytes_f32(buffer(&q, "absmax")), vec![5.0, 5.0]);
}

#[test]
fn random_round_trip_error_is_bounded() {
    let data: Vec<f32> = (0..128 * 64).map(|i| ((i as f32 * 0.618).fract() - 0.5) * 0.1).collect();
    let (q, out) = round_trip::<Fp4>(128, 64, &data, r#"{"double_quant":true}"#);
    assert_eq!(q.total_bytes(), (128 * 64 / 2 + 128 + 4 + 4) as u64);
    let absmax: Vec<f32> = data.chunks(64).map(|c| c.iter().fold(0f32, |m, v| m.max(v.abs()))).collect();
    for (i, (a, b)) in data.iter().zip(&out).enumerate() {
        // Widest FP4 gap is 8/12 → 12/12: half of it is 1/6 of absmax.
        assert!((a - b).abs() <= absmax[i / 64] / 6.0 * 1.02, "[{i}] {a} vs {b}");
    }
}

#[test]
fn non_finite_weights_are_rejected() {
    let e = abi_quantize::<Fp4>(1, 2, &[1.0, f32::NEG_INFINITY], "{}").unwrap_err();
    assert!(e.contains("non-finite") && e.contains("column 1"), "{e}");
}

#[test]
fn matches_bitsandbytes_bit_for_bit() {
    assert_eq!(check_four_bit_against_bnb::<Fp4>("fp4"), 9);
}
