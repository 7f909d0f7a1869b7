//! The K-type quantizers of current llama.cpp where candle-core's port is older.
//!
//! candle 0.11's `k_quants` encodes q2_K, q4_K and q5_K with `make_qkx1_quants` and q6_K
//! (and the weighted q3_K) with an older `make_qx_quants`; llama.cpp's `ggml-quants.c` moved
//! to weighted `make_qkx2_quants` and a 19-step scale search. The blocks differ in about a
//! third of their bytes (measured against llama.cpp's C code through `ggml_quantize_chunk`,
//! `bench/peers/ggml_quants_reference.py`). These are the functions `llama-quantize` runs —
//! `quantize_row_{q2,q4,q5,q6}_K_ref` without an importance matrix, `quantize_row_q3_K_impl`
//! and `quantize_row_q6_K_impl` with one — followed operation for operation in f32 (same
//! order of sums, `nearest_int`'s rounding trick, f16 by round-to-nearest-even), so their
//! bytes are llama.cpp's. The block layouts are ggml-common.h's; candle still decodes them,
//! and candle still encodes every (type, imatrix) pair it gets right.

use half::f16;

const QK_K: usize = 256;
/// ggml-quants.c's `GROUP_MAX_EPS`: a group whose largest |x| is below it is all zero.
const GROUP_MAX_EPS: f32 = 1e-15;

/// ggml-quants.c's `nearest_int`: adding 1.5·2²³ puts the rounded integer (ties to even, by
/// the f32 addition) in the low mantissa bits. Valid for |x| ≤ 2²² − 1, as there.
fn nearest_int(x: f32) -> i32 {
    let v = x + 12_582_912.0;
    (v.to_bits() & 0x007f_ffff) as i32 - 0x0040_0000
}

fn put_f16(b: &mut [u8], at: usize, v: f32) {
    b[at..at + 2].copy_from_slice(&f16::from_f32(v).to_le_bytes());
}

fn get_f16(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// `make_qx_quants` with `rmse_type = 1`: symmetric codes in [0, 2·nmax) (stored +nmax),
/// weights `qw` or x²; the scale of the best of 19 trial inverse scales.
fn make_qx_quants(nmax: i32, x: &[f32], l_out: &mut [i8], qw: Option<&[f32]>) -> f32 {
    let (mut max, mut amax) = (0f32, 0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        l_out.fill(0);
        return 0.0;
    }
    let w = |i: usize| qw.map_or(x[i] * x[i], |q| q[i]);
    let code = |iscale: f32, v: f32| nearest_int(iscale * v).clamp(-nmax, nmax - 1);
    let mut iscale = (-nmax) as f32 / max;
    let (mut sumlx, mut suml2) = (0f32, 0f32);
    for (i, &v) in x.iter().enumerate() {
        let l = code(iscale, v);
        l_out[i] = (l + nmax) as i8;
        sumlx += w(i) * v * l as f32;
        suml2 += w(i) * l as f32 * l as f32;
    }
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in (-9..=9).filter(|&is| is != 0) {
        iscale = -(nmax as f32 + 0.1 * is as f32) / max;
        let (mut slx, mut sl2) = (0f32, 0f32);
        for (i, &v) in x.iter().enumerate() {
            let l = code(iscale, v);
            slx += w(i) * v * l as f32;
            sl2 += w(i) * l as f32 * l as f32;
        }
        if sl2 > 0.0 && slx * slx > best * sl2 {
            for (i, &v) in x.iter().enumerate() {
                l_out[i] = (nmax + code(iscale, v)) as i8;
            }
            scale = slx / sl2;
            best = scale * slx;
        }
    }
    scale
}

/// The options of `make_qkx2_quants`'s search over trial scales.
struct Qkx2 {
    nmax: i32,
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    use_mad: bool,
}

/// `make_qkx2_quants`: asymmetric codes in [0, nmax] with a non-positive minimum, weighted
/// least squares over `nstep + 1` trial scales. Returns (scale, −min).
fn make_qkx2_quants(p: &Qkx2, x: &[f32], weights: &[f32], l_out: &mut [u8]) -> (f32, f32) {
    let n = x.len();
    let (mut min, mut max) = (x[0], x[0]);
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        min = if x[i] < min { x[i] } else { min };
        max = if x[i] > max { x[i] } else { max };
        sum_w += weights[i];
        sum_x += weights[i] * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l_out.fill(0);
        return (0.0, -min);
    }
    let err = |d: f32| if p.use_mad { d.abs() } else { d * d };
    let mut iscale = p.nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best = 0f32;
    for i in 0..n {
        let l = nearest_int(iscale * (x[i] - min)).clamp(0, p.nmax);
        l_out[i] = l as u8;
        best += weights[i] * err(scale * l as f32 + min - x[i]);
    }
    // Sub-blocks are 16 or 32 values: scratch on the stack (this runs once per sub-block).
    let mut aux_buf = [0u8; 32];
    let aux = &mut aux_buf[..n];
    for is in 0..=p.nstep {
        iscale = (p.rmin + p.rdelta * is as f32 + p.nmax as f32) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0f32, 0f32, 0f32);
        for i in 0..n {
            let l = nearest_int(iscale * (x[i] - min)).clamp(0, p.nmax);
            aux[i] = l as u8;
            let (w, l) = (weights[i], l as f32);
            sum_l += w * l;
            sum_l2 += w * l * l;
            sum_xl += w * l * x[i];
        }
        let d = sum_w * sum_l2 - sum_l * sum_l;
        if d > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / d;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / d;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur = 0f32;
            for i in 0..n {
                cur += weights[i] * err(this_scale * aux[i] as f32 + this_min - x[i]);
            }
            if cur < best {
                l_out.copy_from_slice(aux);
                best = cur;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// ggml-quants.c's `get_scale_min_k4`: the 6-bit scale and min of sub-block `j` (q4_K, q5_K).
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        ((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    }
}

/// The shared part of `quantize_row_q4_K_ref` / `quantize_row_q5_K_ref` for one 256-value
/// block: eight 32-value sub-blocks fitted by `make_qkx2_quants`, their scales and mins
/// packed in 6 bits under the f16 `d`/`dmin` (`head` = the block's first 16 bytes), and the
/// final codes in [0, nmax].
fn k4_block(x: &[f32], p: &Qkx2, head: &mut [u8], l: &mut [u8; QK_K]) {
    let nmax = p.nmax;
    let (mut scales, mut mins) = ([0f32; 8], [0f32; 8]);
    let (mut max_scale, mut max_min) = (0f32, 0f32);
    for j in 0..8 {
        let xs = &x[32 * j..32 * j + 32];
        let mut sum_x2 = 0f32;
        for &v in xs {
            sum_x2 += v * v;
        }
        let av_x = (sum_x2 / 32.0).sqrt();
        let weights: [f32; 32] = std::array::from_fn(|i| av_x + xs[i].abs());
        (scales[j], mins[j]) = make_qkx2_quants(p, xs, &weights, &mut l[32 * j..32 * j + 32]);
        max_scale = if scales[j] > max_scale { scales[j] } else { max_scale };
        max_min = if mins[j] > max_min { mins[j] } else { max_min };
    }
    let inv_scale = if max_scale > 0.0 { 63.0 / max_scale } else { 0.0 };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let sc = &mut head[4..16];
    sc.fill(0);
    for j in 0..8 {
        // uint8_t ls = nearest_int(...): the C conversion keeps the low byte.
        let ls = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        let lm = (nearest_int(inv_min * mins[j]) as u8).min(63);
        if j < 4 {
            sc[j] = ls;
            sc[j + 4] = lm;
        } else {
            sc[j + 4] = (ls & 0xF) | ((lm & 0xF) << 4);
            sc[j - 4] |= (ls >> 4) << 6;
            sc[j] |= (lm >> 4) << 6;
        }
    }
    put_f16(head, 0, max_scale / 63.0);
    put_f16(head, 2, max_min / 63.0);
    for j in 0..8 {
        let (s, m) = scale_min_k4(j, &head[4..16]);
        let d = get_f16(head, 0) * s as f32;
        if d == 0.0 {
            continue;
        }
        let dm = get_f16(head, 2) * m as f32;
        for ii in 0..32 {
            l[32 * j + ii] = nearest_int((x[32 * j + ii] + dm) / d).clamp(0, nmax) as u8;
        }
    }
}

fn q4_k_block(x: &[f32], b: &mut [u8]) {
    let mut l = [0u8; QK_K];
    let p = Qkx2 { nmax: 15, rmin: -1.0, rdelta: 0.1, nstep: 20, use_mad: false };
    k4_block(x, &p, &mut b[..16], &mut l);
    for (n, q) in (0..QK_K).step_by(64).zip(b[16..144].chunks_mut(32)) {
        for i in 0..32 {
            q[i] = l[n + i] | (l[n + i + 32] << 4);
        }
    }
}

fn q5_k_block(x: &[f32], b: &mut [u8]) {
    let mut l = [0u8; QK_K];
    let p = Qkx2 { nmax: 31, rmin: -0.5, rdelta: 0.1, nstep: 15, use_mad: false };
    k4_block(x, &p, &mut b[..16], &mut l);
    let (qh, ql) = b[16..176].split_at_mut(32);
    qh.fill(0);
    let (mut m1, mut m2) = (1u8, 2u8);
    for (n, q) in (0..QK_K).step_by(64).zip(ql.chunks_mut(32)) {
        for j in 0..32 {
            let (mut l1, mut l2) = (l[n + j], l[n + j + 32]);
            if l1 > 15 {
                l1 -= 16;
                qh[j] |= m1;
            }
            if l2 > 15 {
                l2 -= 16;
                qh[j] |= m2;
            }
            q[j] = l1 | (l2 << 4);
        }
        m1 <<= 2;
        m2 <<= 2;
    }
}

fn q2_k_block(x: &[f32], b: &mut [u8]) {
    let p = Qkx2 { nmax: 3, rmin: -0.5, rdelta: 0.1, nstep: 15, use_mad: true };
    let mut l = [0u8; QK_K];
    let (mut scales, mut mins) = ([0f32; 16], [0f32; 16]);
    let (mut max_scale, mut max_min) = (0f32, 0f32);
    for j in 0..16 {
        let xs = &x[16 * j..16 * j + 16];
        let weights: [f32; 16] = std::array::from_fn(|i| xs[i].abs());
        (scales[j], mins[j]) = make_qkx2_quants(&p, xs, &weights, &mut l[16 * j..16 * j + 16]);
        max_scale = if scales[j] > max_scale { scales[j] } else { max_scale };
        max_min = if mins[j] > max_min { mins[j] } else { max_min };
    }
    const Q4SCALE: f32 = 15.0;
    let sc = &mut b[..16];
    if max_scale > 0.0 {
        let iscale = Q4SCALE / max_scale;
        for j in 0..16 {
            sc[j] = nearest_int(iscale * scales[j]) as u8;
        }
    } else {
        sc.fill(0);
    }
    put_f16(b, 80, if max_scale > 0.0 { max_scale / Q4SCALE } else { 0.0 });
    if max_min > 0.0 {
        let iscale = Q4SCALE / max_min;
        for j in 0..16 {
            b[j] |= (nearest_int(iscale * mins[j]) << 4) as u8;
        }
    }
    put_f16(b, 82, if max_min > 0.0 { max_min / Q4SCALE } else { 0.0 });
    for j in 0..16 {
        let d = get_f16(b, 80) * (b[j] & 0xF) as f32;
        if d == 0.0 {
            continue;
        }
        let dm = get_f16(b, 82) * (b[j] >> 4) as f32;
        for ii in 0..16 {
            l[16 * j + ii] = nearest_int((x[16 * j + ii] + dm) / d).clamp(0, 3) as u8;
        }
    }
    pack_2bit(&l, &mut b[16..80]);
}

/// Four 2-bit codes a byte: value `j + l + 32k` of each 128 in bits 2k (q2_K, q3_K).
fn pack_2bit(l: &[u8; QK_K], qs: &mut [u8]) {
    for j in (0..QK_K).step_by(128) {
        for i in 0..32 {
            qs[j / 4 + i] = l[j + i] | (l[j + i + 32] << 2) | (l[j + i + 64] << 4) | (l[j + i + 96] << 6);
        }
    }
}

/// `quantize_row_q3_K_impl` with an importance matrix `qw` (this block's 256 values).
fn q3_k_block(x: &[f32], qw: &[f32], b: &mut [u8]) {
    let mut l8 = [0i8; QK_K];
    let (mut scales, mut sw) = ([0f32; 16], [0f32; 16]);
    let mut sumx2 = 0f32;
    for &v in x {
        sumx2 += v * v;
    }
    let sigma2 = 2.0 * sumx2 / QK_K as f32;
    for j in 0..16 {
        let xs = &x[16 * j..16 * j + 16];
        let weight: [f32; 16] = std::array::from_fn(|i| qw[16 * j + i] * (sigma2 + xs[i] * xs[i]).sqrt());
        let mut s = 0f32;
        for &w in &weight {
            s += w;
        }
        sw[j] = s;
        scales[j] = make_qx_quants(4, xs, &mut l8[16 * j..16 * j + 16], Some(&weight));
    }
    let mut ls = [0i8; 16];
    let d_block = make_qx_quants(32, &scales, &mut ls, Some(&sw));
    let sc = &mut b[96..108];
    sc.fill(0);
    for j in 0..16 {
        let v = ls[j] as i32;
        if j < 8 {
            sc[j] = (v & 0xF) as u8;
        } else {
            sc[j - 8] |= ((v & 0xF) << 4) as u8;
        }
        sc[j % 4 + 8] |= ((v >> 4) << (2 * (j / 4))) as u8;
    }
    put_f16(b, 108, d_block);
    let mut l = [0u8; QK_K];
    for (d, s) in l.iter_mut().zip(&l8) {
        *d = *s as u8;
    }
    for j in 0..16 {
        let sc = &b[96..108];
        let low = if j < 8 { sc[j] & 0xF } else { sc[j - 8] >> 4 };
        let s = (low | (((sc[8 + j % 4] >> (2 * (j / 4))) & 3) << 4)) as i32 - 32;
        let d = get_f16(b, 108) * s as f32;
        if d == 0.0 {
            continue;
        }
        for ii in 0..16 {
            l[16 * j + ii] = (nearest_int(x[16 * j + ii] / d).clamp(-4, 3) + 4) as u8;
        }
    }
    let hmask = &mut b[..32];
    hmask.fill(0);
    for (j, v) in l.iter_mut().enumerate() {
        if *v > 3 {
            hmask[j % 32] |= 1 << (j / 32);
            *v -= 4;
        }
    }
    pack_2bit(&l, &mut b[32..96]);
}

/// `quantize_row_q6_K_ref` (`qw` = None) and `quantize_row_q6_K_impl` (this block's 256
/// importance values).
fn q6_k_block(x: &[f32], qw: Option<&[f32]>, b: &mut [u8]) {
    let mut l8 = [0i8; QK_K];
    let mut scales = [0f32; 16];
    let (mut max_scale, mut max_abs) = (0f32, 0f32);
    for ib in 0..16 {
        let w = qw.map(|q| &q[16 * ib..16 * ib + 16]);
        scales[ib] = make_qx_quants(32, &x[16 * ib..16 * ib + 16], &mut l8[16 * ib..16 * ib + 16], w);
        if scales[ib].abs() > max_abs {
            max_abs = scales[ib].abs();
            max_scale = scales[ib];
        }
    }
    if max_abs < GROUP_MAX_EPS {
        b.fill(0);
        return;
    }
    let iscale = -128.0 / max_scale;
    put_f16(b, 208, 1.0 / iscale);
    for ib in 0..16 {
        b[192 + ib] = nearest_int(iscale * scales[ib]).min(127) as i8 as u8;
    }
    for j in 0..16 {
        let d = get_f16(b, 208) * b[192 + j] as i8 as f32;
        if d == 0.0 {
            continue;
        }
        for ii in 0..16 {
            l8[16 * j + ii] = (nearest_int(x[16 * j + ii] / d).clamp(-32, 31) + 32) as i8;
        }
    }
    let l: [u8; QK_K] = std::array::from_fn(|i| l8[i] as u8);
    for (n, j) in (0..QK_K).step_by(128).enumerate() {
        for i in 0..32 {
            let q = |k: usize| l[j + i + 32 * k];
            b[64 * n + i] = (q(0) & 0xF) | ((q(2) & 0xF) << 4);
            b[64 * n + i + 32] = (q(1) & 0xF) | ((q(3) & 0xF) << 4);
            b[128 + 32 * n + i] = (q(0) >> 4) | ((q(1) >> 4) << 2) | ((q(2) >> 4) << 4) | ((q(3) >> 4) << 6);
        }
    }
}

/// One 256-value block: values, their importance values (zeros when unweighted), bytes out.
type BlockFn = fn(&[f32], &[f32], &mut [u8]);

/// llama.cpp's blocks for `rows × cols` values of `type_name` with optional importance
/// matrix `imatrix` (`cols` values), or `None` where candle's port already gives them.
pub fn quantize(type_name: &str, x: &[f32], cols: usize, imatrix: Option<&[f32]>) -> Option<Vec<u8>> {
    let (size, f): (usize, BlockFn) = match (type_name, imatrix.is_some()) {
        ("q2_k", false) => (84, |x, _, b| q2_k_block(x, b)),
        ("q4_k", false) => (144, |x, _, b| q4_k_block(x, b)),
        ("q5_k", false) => (176, |x, _, b| q5_k_block(x, b)),
        ("q6_k", false) => (210, |x, _, b| q6_k_block(x, None, b)),
        ("q6_k", true) => (210, |x, w, b| q6_k_block(x, Some(w), b)),
        ("q3_k", true) => (110, q3_k_block),
        _ => return None,
    };
    let none = [0f32; QK_K];
    let mut out = vec![0u8; x.len() / QK_K * size];
    for (k, (xb, b)) in x.chunks_exact(QK_K).zip(out.chunks_exact_mut(size)).enumerate() {
        // The importance values of this block's columns (rows are whole blocks).
        let at = k * QK_K % cols;
        f(xb, imatrix.map_or(&none[..], |im| &im[at..at + QK_K]), b);
    }
    Some(out)
}
