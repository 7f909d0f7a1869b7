//! Expected codes here are worked out by hand from bitsandbytes' published NF4 table
//! (`NF4` below, copied from the QLoRA paper / `get_4bit_type("nf4")`), not from our code.
use super::Nf4;
use llq_sdk::testing::{abi_quantize, buffer, bytes_f32, check_four_bit_against_bnb, round_trip};

const NF4: [f64; 16] = [
    -1.0,
    -0.6961928009986877,
    -0.5250730514526367,
    -0.39491748809814453,
    -0.28444138169288635,
    -0.18477343022823334,
    -0.09105003625154495,
    0.0,
    0.07958029955625534,
    0.16093020141124725,
    0.24611230194568634,
    0.33791524171829224,
    0.44070982933044434,
    0.5626170039176941,
    0.7229568362236023,
    1.0,
];

fn codes(packed: &[u8]) -> Vec<u8> {
    packed.iter().flat_map(|b| [b >> 4, b & 15]).collect()
}

#[test]
fn values_exactly_on_a_midpoint_take_the_lower_code() {
    // Block absmax 1.0 (first element), then each midpoint between codes c and c+1.
    // bitsandbytes' tree compares against its decimal midpoints rounded to f32.
    let mids = [
        "0.03979014977812767",
        "0.1202552504837513",
        "0.2035212516784668",
        "0.2920137718319893",
        "0.3893125355243683",
        "0.5016634166240692",
        "0.6427869200706482",
        "0.8614784181118011",
        "-0.8480964004993439",
        "-0.6106329262256622",
        "-0.4599952697753906",
        "-0.33967943489551544",
        "-0.23460740596055984",
        "-0.13791173323988914",
        "-0.045525018125772476",
    ];
    let lower = [7u8, 8, 9, 10, 11, 12, 13, 14, 0, 1, 2, 3, 4, 5, 6];
    let mut data = vec![1.0f32];
    for (m, lo) in mids.iter().zip(lower) {
        let v: f32 = m.parse().unwrap();
        // Sanity: each is (to f32 precision) the midpoint of the table entries lo and lo+1.
        let true_mid = (NF4[lo as usize] + NF4[lo as usize + 1]) / 2.0;
        assert!((v as f64 - true_mid).abs() < 1e-6, "{m} vs {true_mid}");
        data.push(v);
    }
    let (q, _) = round_trip::<Nf4>(1, data.len(), &data, "{}");
    let got = codes(buffer(&q, "codes"));
    assert_eq!(got[0], 15);
    assert_eq!(&got[1..16], &lower[..]);
}

#[test]
fn all_zero_block_follows_bitsandbytes_nan_path() {
    // absmax 0 → 0·(1/0) = NaN → every comparison is false → code 0 (−1.0), dequantized −1·0.
    let (q, out) = round_trip::<Nf4>(2, 32, &[0.0; 64], "{}");
    assert_eq!(buffer(&q, "codes"), &[0u8; 32][..]);
    assert_eq!(bytes_f32(buffer(&q, "absmax")), vec![0.0]);
    assert!(out.iter().all(|v| *v == 0.0));
}

#[test]
fn all_equal_and_plus_minus_absmax_blocks_are_exact() {
    let (q, out) = round_trip::<Nf4>(1, 64, &[0.75; 64], "{}");
    assert!(codes(buffer(&q, "codes")).iter().all(|&c| c == 15));
    assert!(out.iter().all(|&v| v == 0.75));
    let data: Vec<f32> = (0..64).map(|i| if i % 2 == 0 { 3.5 } else { -3.5 }).collect();
    let (q, out) = round_trip::<Nf4>(1, 64, &data, "{}");
    assert!(buffer(&q, "codes").iter().all(|&b| b == 0xF0)); // +absmax → 15, −absmax → 0
    assert_eq!(out, data);
}

#[test]
fn partial_last_block_and_odd_length() {
    // 101 values, block 64: 2 absmax values, 51 bytes; the pad nibble encodes 0.0 → code 7.
    let data: Vec<f32> = (0..101).map(|i| ((i * 37) % 23) as f32 - 11.0).collect();
    let (q, out) = round_trip::<Nf4>(1, 101, &data, "{}");
    assert_eq!(buffer(&q, "codes").len(), 51);
    assert_eq!(buffer(&q, "codes")[50] & 0x0f, 7);
    let absmax = bytes_f32(buffer(&q, "absmax"));
    assert_eq!(absmax, vec![11.0, 11.0]);
    // Round-trip error is at most half the widest NF4 gap times absmax.
    for (a, b) in data.iter().zip(&out) {
        assert!((a - b).abs() <= 0.1609 * 11.0, "{a} vs {b}");
    }
}

#[test]
fn random_round_trip_error_is_bounded() {
    // Deterministic pseudo-normal data (sum of uniforms), 256×128.
    let mut s = 0x2545F4914F6CDD1Du64;
    let data: Vec<f32> = (0..256 * 128)
        .map(|_| {
            (0..4)
                .map(|_| {
                    s ^= s << 13;
                    s ^= s >> 7;
                    s ^= s << 17;
                    (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
                })
                .sum::<f32>()
                * 0.02
        })
        .collect();
    for (opts, bits) in [
        ("{}", 4.5),
        (r#"{"double_quant":true}"#, 4.0 + 8.0 / 64.0 + 32.0 / (64.0 * 256.0) + 32.0 / (256.0 * 128.0)),
    ] {
        let (q, out) = round_trip::<Nf4>(256, 128, &data, opts);
        let eff = q.total_bytes() as f64 * 8.0 / data.len() as f64;
        assert!((eff - bits).abs() < 1e-9, "{opts}: {eff} bits/weight");
        let absmax: Vec<f32> = data.chunks(64).map(|c| c.iter().fold(0f32, |m, v| m.max(v.abs()))).collect();
        let mut sq = 0f64;
        for (i, (a, b)) in data.iter().zip(&out).enumerate() {
            // Largest half-gap of the table is (0.7229568 − 0.5626170)/2·… < 0.14 of absmax; allow
            // a little extra for double-quantized absmax.
            assert!((a - b).abs() <= 0.16 * absmax[i / 64] * 1.02, "{opts} [{i}] {a} vs {b}");
            sq += ((a - b) as f64).powi(2);
        }
        let rms = (sq / data.len() as f64).sqrt();
        assert!(rms < 0.0035, "{opts}: rms error {rms}");
    }
}

#[test]
fn non_finite_weights_and_bad_options_are_clear_errors() {
    let mut data = vec![0.5f32; 64];
    data[37] = f32::NAN;
    let e = abi_quantize::<Nf4>(2, 32, &data, "{}").unwrap_err();
    assert!(e.contains("non-finite") && e.contains("row 1, column 5"), "{e}");
    data[37] = f32::INFINITY;
    assert!(abi_quantize::<Nf4>(2, 32, &data, "{}").unwrap_err().contains("inf"));
    let e = abi_quantize::<Nf4>(1, 64, &[0.1; 64], r#"{"block_size":100}"#).unwrap_err();
    assert!(e.contains("block_size") && e.contains("must be one of"), "{e}");
    let e = abi_quantize::<Nf4>(1, 64, &[0.1; 64], r#"{"blocksize":64}"#).unwrap_err();
    assert!(e.contains("unknown option `blocksize`"), "{e}");
}

#[test]
fn matches_bitsandbytes_bit_for_bit() {
    assert_eq!(check_four_bit_against_bnb::<Nf4>("nf4"), 9);
}
