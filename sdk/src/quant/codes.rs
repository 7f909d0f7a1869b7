//! The 4-bit code books of bitsandbytes (NF4, FP4) and the functions that pick a code for a
//! normalized value exactly as its CUDA decision trees do.

/// bitsandbytes' NF4 code table (`get_4bit_type("nf4")`), index = code. The decimals are
/// bitsandbytes' own (f64 literals it stores as f32), kept as the citation.
#[allow(clippy::excessive_precision)]
pub const NF4_TABLE: [f32; 16] = [
    -1.0,
    -0.696_192_800_998_687_7,
    -0.525_073_051_452_636_7,
    -0.394_917_488_098_144_53,
    -0.284_441_381_692_886_35,
    -0.184_773_430_228_233_34,
    -0.091_050_036_251_544_95,
    0.0,
    0.079_580_299_556_255_34,
    0.160_930_201_411_247_25,
    0.246_112_301_945_686_34,
    0.337_915_241_718_292_24,
    0.440_709_829_330_444_34,
    0.562_617_003_917_694_1,
    0.722_956_836_223_602_3,
    1.0,
];

/// bitsandbytes' FP4 (e2m1) code magnitudes before normalization, codes 0..7; bit 3 is the sign.
const FP4_MAGNITUDES: [f32; 8] = [0.0, 0.0625, 8.0, 12.0, 4.0, 6.0, 2.0, 3.0];

/// bitsandbytes' FP4 table (`get_4bit_type("fp4")`: the magnitudes divided by 12 in f32).
pub fn fp4_table() -> [f32; 16] {
    let mut t = [0f32; 16];
    for (i, m) in FP4_MAGNITUDES.iter().enumerate() {
        t[i] = m / 12.0;
        t[i + 8] = -(m / 12.0);
    }
    t
}

/// bitsandbytes' NF4 decision thresholds (`dQuantizeNF4`), ascending: the midpoints between
/// consecutive table entries, as bitsandbytes' decimal literals rounded directly to f32 (as
/// NVCC does; several differ by one ulp from the same decimals rounded through f64, and that
/// decides ties).
#[allow(clippy::excessive_precision)]
pub const NF4_THRESHOLDS: [f32; 15] = [
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
];

/// NF4 code of a normalized value. bitsandbytes walks a binary decision tree over
/// [`NF4_THRESHOLDS`]; counting the thresholds strictly below `x` gives the same code (a
/// value exactly on a midpoint takes the lower code; NaN compares false everywhere and gets
/// code 0) without branches, so the compiler vectorizes it.
#[inline(always)]
pub fn nf4_code(x: f32) -> u8 {
    NF4_THRESHOLDS.iter().map(|&t| (x > t) as u8).sum()
}

/// bitsandbytes' FP4 pivots (`dQuantizeFP4`) on |x|, ascending.
#[allow(clippy::excessive_precision)]
pub const FP4_PIVOTS: [f32; 7] =
    [0.00260417, 0.0859375, 0.20833333, 0.29166667, 0.4166667, 0.583333, 0.8333333];
/// FP4 magnitude codes in ascending magnitude order: 0, 0.0625, 2, 3, 4, 6, 8, 12 (÷12).
const FP4_BY_RANK: [u8; 8] = [0b000, 0b001, 0b110, 0b111, 0b100, 0b101, 0b010, 0b011];

/// FP4 code of a normalized value: the sign in bit 3 (`x < 0`), the magnitude code from the
/// number of pivots strictly below |x| — the same result as bitsandbytes' decision tree.
#[inline(always)]
pub fn fp4_code(x: f32) -> u8 {
    let sign = if x < 0.0 { 0b1000 } else { 0 };
    let a = x.abs();
    let rank: u8 = FP4_PIVOTS.iter().map(|&t| (a > t) as u8).sum();
    FP4_BY_RANK[rank as usize] | sign
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nf4_tree_picks_the_nearest_code_and_lower_on_ties() {
        // Midpoints between consecutive table entries, computed from the table.
        for c in 0..15 {
            let lo = NF4_TABLE[c];
            let hi = NF4_TABLE[c + 1];
            assert_eq!(nf4_code(lo) as usize, c, "table value {lo}");
            let mid = ((lo as f64 + hi as f64) / 2.0) as f32;
            // Just above and below the midpoint go to the nearer side.
            assert_eq!(nf4_code(mid + 1e-4) as usize, c + 1);
            assert_eq!(nf4_code(mid - 1e-4) as usize, c);
        }
        assert_eq!(nf4_code(1.0), 15);
        assert_eq!(nf4_code(-1.0), 0);
        assert_eq!(nf4_code(0.0), 7);
        assert_eq!(nf4_code(f32::NAN), 0);
    }

    /// bitsandbytes' `dQuantizeNF4` decision tree, transcribed from its CUDA source.
    #[allow(clippy::excessive_precision)]
    fn bnb_nf4_tree(x: f32) -> u8 {
        if x > 0.03979014977812767 {
            if x > 0.3893125355243683 {
                if x > 0.6427869200706482 {
                    if x > 0.8614784181118011 {
                        15
                    } else {
                        14
                    }
                } else if x > 0.5016634166240692 {
                    13
                } else {
                    12
                }
            } else if x > 0.2035212516784668 {
                if x > 0.2920137718319893 {
                    11
                } else {
                    10
                }
            } else if x > 0.1202552504837513 {
                9
            } else {
                8
            }
        } else if x > -0.33967943489551544 {
            if x > -0.13791173323988914 {
                if x > -0.045525018125772476 {
                    7
                } else {
                    6
                }
            } else if x > -0.23460740596055984 {
                5
            } else {
                4
            }
        } else if x > -0.6106329262256622 {
            if x > -0.4599952697753906 {
                3
            } else {
                2
            }
        } else if x > -0.8480964004993439 {
            1
        } else {
            0
        }
    }

    /// bitsandbytes' `dQuantizeFP4`, transcribed from its CUDA source.
    #[allow(clippy::excessive_precision)]
    fn bnb_fp4_tree(x: f32) -> u8 {
        let sign = if x < 0.0 { 8 } else { 0 };
        let x = x.abs();
        let c = if x > 0.29166667 {
            if x > 0.583333 {
                if x > 0.8333333 {
                    3
                } else {
                    2
                }
            } else if x > 0.4166667 {
                5
            } else {
                4
            }
        } else if x > 0.0859375 {
            if x > 0.20833333 {
                7
            } else {
                6
            }
        } else if x > 0.00260417 {
            1
        } else {
            0
        };
        c + sign
    }

    #[test]
    fn branchless_codes_equal_the_bitsandbytes_trees() {
        let mut xs: Vec<f32> = (-20000..=20000).map(|i| i as f32 / 19000.0).collect();
        for t in NF4_THRESHOLDS.iter().chain(FP4_PIVOTS.iter()) {
            for v in [*t, -*t] {
                xs.extend([f32::from_bits(v.to_bits() - 1), v, f32::from_bits(v.to_bits() + 1)]);
            }
        }
        xs.extend([f32::NAN, -f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0]);
        for x in xs {
            assert_eq!(nf4_code(x), bnb_nf4_tree(x), "nf4 {x}");
            assert_eq!(fp4_code(x), bnb_fp4_tree(x), "fp4 {x}");
        }
    }

    #[test]
    fn fp4_table_and_tree_agree() {
        let t = fp4_table();
        assert_eq!(t[3], 1.0);
        assert_eq!(t[1], 0.0625 / 12.0);
        assert_eq!(t[11], -1.0);
        for (c, v) in t.iter().enumerate() {
            if c == 8 {
                continue; // -0 encodes as +0 (sign comes from x < 0)
            }
            assert_eq!(fp4_code(*v) as usize, c, "value {v}");
        }
        assert_eq!(fp4_code(-0.0), 0);
        assert_eq!(fp4_code(f32::NAN), 0);
    }
}
