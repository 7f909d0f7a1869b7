//! The GPU's approximate reciprocal, bit for bit. bitsandbytes is built with
//! `--use_fast_math`, so its `1.0f / absmax` (kQuantizeBlockwise) and `__fdividef(127,
//! absmax)` (LLM.int8's row quantization) compile to the approximate reciprocal (MUFU.RCP:
//! `rcp.approx.ftz.f32`; `div.approx`/`div.full` with numerator 1 give the same bits), which
//! is within one ulp of the correctly rounded `1/x` but not equal to it for 13% of inputs.
//! Values on a code boundary then round to the other code.
//!
//! NVIDIA does not document the approximation, so it is measured: `rcp_approx.i8.xz` holds,
//! for every f32 mantissa (x in [1, 2)), the distance in ulp of the H100's result from the
//! correctly rounded reciprocal (−1: 374,723 mantissas, 0: 7,280,086, +1: 733,799), made by
//! `bench/peers/bnb_shapes.py`; the result in other binades is the [1, 2) one scaled (checked
//! there at 2^37 and 2^−41). 158 KB compressed, 8 MB once unpacked on first use.

use std::sync::OnceLock;

static TABLE_XZ: &[u8] = include_bytes!("rcp_approx.i8.xz");

fn table() -> &'static [i8] {
    static T: OnceLock<Vec<i8>> = OnceLock::new();
    T.get_or_init(|| {
        let mut out = Vec::with_capacity(1 << 23);
        // The table is part of this crate; failing to unpack it is a build defect.
        lzma_rs::xz_decompress(&mut std::io::BufReader::new(TABLE_XZ), &mut out)
            .expect("the embedded reciprocal table unpacks");
        assert_eq!(out.len(), 1 << 23, "the reciprocal table has one entry per mantissa");
        out.into_iter().map(|b| b as i8).collect()
    })
}

/// `rcp.approx.ftz.f32(x)` as an H100 computes it: subnormal inputs and results flush to
/// zero (`.ftz`), 1/±0 = ±inf, 1/±inf = ±0, NaN stays NaN.
pub fn rcp_approx(x: f32) -> f32 {
    if x.is_nan() {
        return x;
    }
    let a = x.abs();
    if a < f32::MIN_POSITIVE {
        return f32::INFINITY.copysign(x);
    }
    if a.is_infinite() {
        return 0f32.copysign(x);
    }
    let rn = 1.0f32 / a;
    if rn < f32::MIN_POSITIVE {
        return 0f32.copysign(x);
    }
    let delta = table()[(a.to_bits() & 0x7F_FFFF) as usize] as i32;
    f32::from_bits((rn.to_bits() as i32 + delta) as u32).copysign(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_values_and_binades() {
        assert_eq!(rcp_approx(0.0), f32::INFINITY);
        assert_eq!(rcp_approx(-0.0), f32::NEG_INFINITY);
        assert_eq!(rcp_approx(1e-40), f32::INFINITY); // flushed to zero first
        assert_eq!(rcp_approx(f32::INFINITY), 0.0);
        assert!(rcp_approx(f32::NAN).is_nan());
        assert_eq!(rcp_approx(2.0), 0.5);
        assert_eq!(rcp_approx(-4.0), -0.25);
        // A mantissa where the approximation is one ulp off: the same offset in every binade.
        let m = (0..1u32 << 23).find(|&m| table()[m as usize] != 0).unwrap();
        let x = f32::from_bits(0x3F80_0000 | m);
        let d = table()[m as usize] as i32;
        for s in [1.0f32, 2f32.powi(20), 2f32.powi(-20)] {
            let r = rcp_approx(x * s);
            assert_eq!(r.to_bits() as i32 - (1.0 / (x * s)).to_bits() as i32, d);
            assert_eq!(rcp_approx(-x * s), -r);
        }
        let h: [usize; 3] = table().iter().fold([0; 3], |mut h, &d| {
            h[(d + 1) as usize] += 1;
            h
        });
        assert_eq!(h, [374_723, 7_280_086, 733_799]);
    }
}
