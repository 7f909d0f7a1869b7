//! Test helpers shared by the built-in plugins (feature `testing`): run a [`QuantMethod`]
//! without the C ABI and compare against the bitsandbytes reference vectors in
//! `tests/fixtures/bnb/` (made on an H100 by `bench/peers/bnb_reference.py`).

use crate::{OptionSpec, Options, PackedView, QuantMethod, Quantized};
use serde_json::Value;

/// A seeded xorshift64 stream of values uniform in [−0.5, 0.5) (53-bit resolution): test data
/// that is the same on every machine, without a random-number crate.
pub fn uniform(seed: u64) -> impl FnMut() -> f64 {
    let mut s = seed.max(1);
    move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 11) as f64 / (1u64 << 53) as f64 - 0.5
    }
}

/// `values(seed, n)` of `bench/peers/bnb_shapes.py` and `gguf_reference.py`: k/2^23 in
/// [−1, 1) from a 32-bit integer hash of (seed, index) — inputs both sides regenerate
/// exactly, so fixtures hold only the reference's outputs.
pub fn hash_values(seed: u64, n: usize) -> Vec<f32> {
    const MASK: u64 = 0xFFFF_FFFF;
    (0..n as u64)
        .map(|i| {
            let mut h = (i * 2_654_435_761 + seed * 97_531 + 12_345) & MASK;
            for _ in 0..2 {
                h ^= h >> 16;
                h = (h * 0x45D_9F3B) & MASK;
            }
            h ^= h >> 16;
            ((h >> 8) as i64 - (1 << 23)) as f32 / (1u32 << 23) as f32
        })
        .collect()
}

/// The scripts' `row_scales`: row r scaled by 2^(r mod 9 − 4) · (1 + (r mod 5)/4), exact in f32.
pub fn row_scale(r: usize) -> f32 {
    2f32.powi((r % 9) as i32 - 4) * (1.0 + (r % 5) as f32 / 4.0)
}

/// The input families of the reference scripts (`tensor()` in bench/peers/hashvals.py and
/// `heavy()` in hqq_reference.py) for `rows × cols` values from `seed`: `uniform`,
/// `scaled_rows` (row r times [`row_scale`]), `zeros_and_repeats` (an all-zero 32-value block
/// and one of 0.375 at the start of each row), `heavy` (v³, with 8·v every 61st column).
pub fn family_values(family: &str, seed: u64, rows: usize, cols: usize) -> Vec<f32> {
    let mut x = hash_values(seed, rows * cols);
    match family {
        "uniform" => {}
        "scaled_rows" => x.iter_mut().enumerate().for_each(|(i, v)| *v *= row_scale(i / cols)),
        "zeros_and_repeats" => x.chunks_mut(cols).for_each(|r| {
            r[..32].fill(0.0);
            r[32..64].fill(0.375);
        }),
        "heavy" => x
            .iter_mut()
            .enumerate()
            .for_each(|(i, v)| *v = if (i % cols).is_multiple_of(61) { 8.0 * *v } else { *v * *v * *v }),
        f => panic!("unknown input family `{f}`"),
    }
    x
}

/// The bitsandbytes 0.50.2 reference file, parsed.
pub fn bnb_reference() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/bnb/bnb-0.50.2-reference.json");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).expect("reference JSON")
}

/// f32 values from a JSON array of IEEE bit patterns.
pub fn f32s(v: &Value) -> Vec<f32> {
    v.as_array().expect("array").iter().map(|b| f32::from_bits(b.as_u64().expect("u32") as u32)).collect()
}

/// f16 bit patterns widened to f32.
pub fn f16s(v: &Value) -> Vec<f32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|b| half::f16::from_bits(b.as_u64().expect("u16") as u16).to_f32())
        .collect()
}

pub fn hex(v: &Value) -> Vec<u8> {
    let s = v.as_str().expect("hex string");
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex")).collect()
}

pub fn options(method: &str, specs: &[OptionSpec], json: &str) -> Options {
    Options::parse(method, specs, json).expect("options")
}

/// Call a method through its real C ABI (the same thunks a host calls), so tests cover the
/// SDK's input checks and panic catching too.
pub fn abi_quantize<T: QuantMethod>(
    rows: usize,
    cols: usize,
    data: &[f32],
    json: &str,
) -> Result<Quantized, String> {
    use crate::abi::*;
    let desc = crate::ffi::Descriptor::new::<T>();
    // SAFETY: the descriptor is valid while `desc` lives; all pointers passed are valid.
    let d = unsafe { &*desc.as_ptr() };
    let mut errbuf = vec![0u8; 4096];
    let mut err = LlqErrorBuf { ptr: errbuf.as_mut_ptr(), cap: errbuf.len(), len: 0 };
    let layer = "test";
    let w = LlqWeights {
        layer: LlqStr { ptr: layer.as_ptr(), len: layer.len() },
        rows: rows as u64,
        cols: cols as u64,
        data: data.as_ptr(),
    };
    let opts = LlqStr { ptr: json.as_ptr(), len: json.len() };
    let mut out = LlqQuantized::empty();
    let st = unsafe { (d.quantize)(&w, opts, std::ptr::null(), &mut out, &mut err) };
    if st != LlqStatus::Ok {
        return Err(String::from_utf8_lossy(&errbuf[..err.len]).into_owned());
    }
    let mut q = Quantized::default();
    unsafe {
        for b in std::slice::from_raw_parts(out.buffers, out.n_buffers) {
            let name =
                std::str::from_utf8(std::slice::from_raw_parts(b.name.ptr, b.name.len)).unwrap().to_string();
            q.buffers.push((name, std::slice::from_raw_parts(b.data, b.len).to_vec()));
        }
        let meta =
            std::str::from_utf8(std::slice::from_raw_parts(out.metadata.ptr, out.metadata.len)).unwrap();
        q.metadata = serde_json::from_str(meta).unwrap();
        (d.release_quantized)(out.handle);
    }
    Ok(q)
}

/// Quantize (through the ABI) then dequantize, checking the packed-size formula.
pub fn round_trip<T: QuantMethod>(
    rows: usize,
    cols: usize,
    data: &[f32],
    json: &str,
) -> (Quantized, Vec<f32>) {
    let m = T::default();
    let o = options(T::NAME, &m.options(), json);
    let q = abi_quantize::<T>(rows, cols, data, json).expect("quantize");
    assert_eq!(q.total_bytes(), m.packed_size(rows as u64, cols as u64, &o).unwrap(), "packed size formula");
    let mut out = vec![f32::NAN; rows * cols];
    m.dequantize(&view(rows, cols, &q), &mut out).expect("dequantize");
    (q, out)
}

pub fn view(rows: usize, cols: usize, q: &Quantized) -> PackedView<'_> {
    PackedView {
        rows,
        cols,
        buffers: q.buffers.iter().map(|(n, b)| (n.as_str(), b.as_slice())).collect(),
        metadata: q.metadata.clone(),
    }
}

pub fn buffer<'a>(q: &'a Quantized, name: &str) -> &'a [u8] {
    &q.buffers.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("no buffer {name}")).1
}

/// Compare a 4-bit method against every bitsandbytes record of its `quant_type`: packed
/// bytes, absmax (or the double-quantized state) and dequantized values, bit for bit.
/// Returns the number of records checked.
pub fn check_four_bit_against_bnb<T: QuantMethod>(quant_type: &str) -> usize {
    let r = bnb_reference();
    let mut checked = 0;
    for rec in r["four_bit"].as_array().unwrap().iter().filter(|r| r["quant_type"] == quant_type) {
        let x = f32s(&rec["input_f32"]);
        let bs = rec["blocksize"].as_u64().unwrap();
        let dq = rec["double_quant"].as_bool().unwrap();
        let name = format!("{} block {bs} dq {dq}", rec["name"]);
        let (q, out) =
            round_trip::<T>(1, x.len(), &x, &format!(r#"{{"block_size":{bs},"double_quant":{dq}}}"#));
        assert_eq!(buffer(&q, "codes"), hex(&rec["packed_hex"]).as_slice(), "{name}: packed codes");
        if dq {
            assert_eq!(
                buffer(&q, "absmax_codes"),
                hex(&rec["qabsmax_hex"]).as_slice(),
                "{name}: absmax codes"
            );
            let off = f32::from_bits(rec["offset_f32"].as_u64().unwrap() as u32);
            let ours = f32::from_le_bytes(buffer(&q, "absmax_offset").try_into().unwrap());
            assert_eq!(ours.to_bits(), off.to_bits(), "{name}: offset {ours} vs {off}");
            assert_eq!(bytes_f32(buffer(&q, "absmax2")), f32s(&rec["state2_absmax_f32"]), "{name}: absmax2");
        } else {
            assert_eq!(bytes_f32(buffer(&q, "absmax")), f32s(&rec["absmax_f32"]), "{name}: absmax");
        }
        let want = f32s(&rec["dequant_f32"]);
        for (i, (a, b)) in out.iter().zip(&want).enumerate() {
            assert_eq!(a.to_bits(), b.to_bits(), "{name}: dequantized[{i}] {a} vs {b}");
        }
        checked += 1;
    }
    checked
}

pub fn bytes_f32(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}
