//! The dense linear algebra GPTQ and AWQ need, in f64, row-major: a blocked Cholesky factor,
//! a blocked inverse of a lower-triangular matrix, the upper Cholesky factor of an inverse
//! (GPTQ's `Hinv`), and products. The O(n³) parts are matrix products on the `gemm` crate
//! (the one candle uses, on a rayon pool); what is left per block is O(n²·b) and runs along
//! contiguous rows, split over rows on the same pool.

#[cfg(feature = "gemm")]
use rayon::prelude::*;

/// A dense n × n matrix, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct SquareMatrix {
    pub n: usize,
    pub a: Vec<f64>,
}

impl SquareMatrix {
    pub fn zeros(n: usize) -> Self {
        SquareMatrix { n, a: vec![0.0; n * n] }
    }
    pub fn get(&self, i: usize, j: usize) -> f64 {
        self.a[i * self.n + j]
    }
    pub fn set(&mut self, i: usize, j: usize, v: f64) {
        self.a[i * self.n + j] = v;
    }
    pub fn row(&self, i: usize) -> &[f64] {
        &self.a[i * self.n..(i + 1) * self.n]
    }
}

/// `a · b` with four running sums (vectorized; the factorizations need no particular order).
fn dot(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut s = [0f64; 4];
    for (x, y) in a.chunks_exact(4).zip(b.chunks_exact(4)) {
        for i in 0..4 {
            s[i] += x[i] * y[i];
        }
    }
    let tail: f64 = a[n / 4 * 4..].iter().zip(&b[n / 4 * 4..]).map(|(x, y)| x * y).sum();
    (s[0] + s[1]) + (s[2] + s[3]) + tail
}

/// Columns per panel of the blocked factorizations: the products below then have an inner
/// dimension of 128, enough for gemm to run near its peak.
const PANEL: usize = 128;

/// A strided view of part of a row-major buffer: `rows × cols` values, element (i, j) at
/// `off + i·rs + j·cs`. Checked against the buffer when made, so the product below may hand
/// raw pointers to gemm.
#[derive(Debug, Clone, Copy)]
pub struct Strided {
    pub off: usize,
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl Strided {
    /// Row-major `rows × cols` starting at `off` with row stride `rs`.
    pub fn rows(off: usize, rows: usize, cols: usize, rs: usize) -> Self {
        Strided { off, rows, cols, rs, cs: 1 }
    }
    /// The transpose of the same values.
    pub fn t(self) -> Self {
        Strided { off: self.off, rows: self.cols, cols: self.rows, rs: self.cs, cs: self.rs }
    }
    fn check(&self, len: usize, what: &str) {
        if self.rows > 0 && self.cols > 0 {
            let last = self.off + (self.rows - 1) * self.rs + (self.cols - 1) * self.cs;
            assert!(last < len, "{what}: view {self:?} ends past a buffer of {len}");
        }
    }
}

/// `dst[d] -= a[va] · b[vb]` on views of three buffers (`dst` does not alias `a` or `b`, which
/// the borrow checker guarantees).
pub fn mul_sub(dst: &mut [f64], d: Strided, a: &[f64], va: Strided, b: &[f64], vb: Strided) {
    add_product(dst, d, a, va, b, vb, -1.0);
}

/// `dst[d] += sign · a[va] · b[vb]`: the one place the gemm crate is called (gemm on the rayon
/// pool; without the `gemm` feature, plain loops).
fn add_product(dst: &mut [f64], d: Strided, a: &[f64], va: Strided, b: &[f64], vb: Strided, sign: f64) {
    assert!(
        va.rows == d.rows && vb.cols == d.cols && va.cols == vb.rows,
        "product: {}×{} · {}×{} into {}×{}",
        va.rows,
        va.cols,
        vb.rows,
        vb.cols,
        d.rows,
        d.cols
    );
    d.check(dst.len(), "product dst");
    va.check(a.len(), "product lhs");
    vb.check(b.len(), "product rhs");
    let (m, k, n) = (d.rows, va.cols, d.cols);
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    #[cfg(not(feature = "gemm"))]
    for i in 0..m {
        for t in 0..k {
            let av = sign * a[va.off + i * va.rs + t * va.cs];
            for j in 0..n {
                dst[d.off + i * d.rs + j * d.cs] += av * b[vb.off + t * vb.rs + j * vb.cs];
            }
        }
    }
    // SAFETY: every view was checked to lie inside its buffer; `dst` is a unique borrow, so it
    // aliases neither input.
    #[cfg(feature = "gemm")]
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr().add(d.off),
            d.cs as isize,
            d.rs as isize,
            true,
            a.as_ptr().add(va.off),
            va.cs as isize,
            va.rs as isize,
            b.as_ptr().add(vb.off),
            vb.cs as isize,
            vb.rs as isize,
            1.0,
            sign,
            false,
            false,
            false,
            gemm::Parallelism::Rayon(0),
        )
    };
}

/// `dst[d] -= a · b` for row-major `a` (m × k, row stride k) and `b` (k × n, row stride
/// `b_rs`, from `b_off`), each element updated as the plain loop would, `v -= a[i][t]·b[t][j]` for
/// t = 0, 1, …, k−1, with a separate multiply and subtract: the same bits on any thread count,
/// unlike a blocked gemm, whose sums are reordered and fused. GPTQ's lazy updates need that:
/// the algorithm is chaotic in its rounding (one flipped code changes the errors spread over the
/// rest of its row), and the reference's codes are matched in this order (with gemm, one of the
/// eleven fixtures fell to 99.80% equal codes).
pub fn sub_products_in_order(dst: &mut [f64], d: Strided, a: &[f64], b: &[f64], b_off: usize, b_rs: usize) {
    let (m, n) = (d.rows, d.cols);
    let k = a.len().checked_div(m).unwrap_or(0);
    assert!(a.len() == m * k && d.cs == 1, "sub_products_in_order: {} values for {m} rows", a.len());
    d.check(dst.len(), "sub_products_in_order dst");
    Strided::rows(b_off, k, n, b_rs).check(b.len(), "sub_products_in_order rhs");
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    // Register tiles of R rows × C columns; the rows go to the pool in groups of G, and a
    // group walks the columns in chunks of W so the chunk of `b` it reads (k × W) stays in cache
    // while every row of the group uses it.
    const G: usize = 64;
    let rows: Vec<&mut [f64]> = dst[d.off..].chunks_mut(d.rs).take(m).map(|r| &mut r[..n]).collect();
    let mut groups: Vec<(usize, Vec<&mut [f64]>)> = vec![];
    let mut rest = rows;
    let mut g0 = 0;
    while !rest.is_empty() {
        let tail = rest.split_off(rest.len().min(G));
        let len = rest.len();
        groups.push((g0, rest));
        rest = tail;
        g0 += len;
    }
    par_each(&mut groups, |_, (g0, group)| GroupJob { g0: *g0, a, k, b, b_off, b_rs, n }.run(group));
}

/// One group of rows of [`sub_products_in_order`].
struct GroupJob<'a> {
    g0: usize,
    a: &'a [f64],
    k: usize,
    b: &'a [f64],
    b_off: usize,
    b_rs: usize,
    n: usize,
}

impl GroupJob<'_> {
    fn run(&self, group: &mut [&mut [f64]]) {
        const R: usize = 4;
        const C: usize = 8;
        const W: usize = 256;
        let GroupJob { g0, a, k, b, b_off, b_rs, n } = *self;
        #[cfg(target_arch = "x86_64")]
        let avx2 = std::arch::is_x86_feature_detected!("avx2");
        for w0 in (0..n).step_by(W) {
            let w1 = (w0 + W).min(n);
            for (ti, tile) in group.chunks_mut(R).enumerate() {
                let r0 = g0 + ti * R;
                for c0 in (w0..w1).step_by(C) {
                    let w = (w1 - c0).min(C);
                    #[cfg(target_arch = "x86_64")]
                    if avx2 && tile.len() == R && w == C {
                        let ar: [&[f64]; R] = std::array::from_fn(|r| &a[(r0 + r) * k..(r0 + r + 1) * k]);
                        // SAFETY: AVX2 was detected; tile_4x8 checks every index it reads.
                        unsafe { tile_4x8(tile, c0, ar, b, b_off, b_rs, k) };
                        continue;
                    }
                    let mut acc = [[0f64; C]; R];
                    for (r, row) in tile.iter().enumerate() {
                        acc[r][..w].copy_from_slice(&row[c0..c0 + w]);
                    }
                    for t in 0..k {
                        let at = b_off + t * b_rs + c0;
                        let brow = &b[at..at + w];
                        for (r, accr) in acc.iter_mut().enumerate().take(tile.len()) {
                            let e = a[(r0 + r) * k + t];
                            for j in 0..w {
                                accr[j] -= e * brow[j];
                            }
                        }
                    }
                    for (r, row) in tile.iter_mut().enumerate() {
                        row[c0..c0 + w].copy_from_slice(&acc[r][..w]);
                    }
                }
            }
        }
    }
}

/// A 4 × 8 register tile of [`sub_products_in_order`]: rows `tile`, columns `c0..c0 + 8`,
/// `row_r -= Σ_t a_r[t] · b[t]` in order of t, with separate multiplies and subtractions (AVX2
/// has no implicit fusion), so the bits are the plain loop's.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn tile_4x8(
    tile: &mut [&mut [f64]],
    c0: usize,
    a: [&[f64]; 4],
    b: &[f64],
    b_off: usize,
    b_rs: usize,
    k: usize,
) {
    use std::arch::x86_64::*;
    assert!(tile.len() == 4 && a.iter().all(|r| r.len() == k));
    assert!(tile.iter().all(|r| r.len() >= c0 + 8));
    assert!(k == 0 || b.len() >= b_off + (k - 1) * b_rs + c0 + 8);
    let mut acc = [[_mm256_setzero_pd(); 2]; 4];
    for r in 0..4 {
        let p = tile[r].as_ptr().add(c0);
        acc[r] = [_mm256_loadu_pd(p), _mm256_loadu_pd(p.add(4))];
    }
    for t in 0..k {
        let p = b.as_ptr().add(b_off + t * b_rs + c0);
        let (b0, b1) = (_mm256_loadu_pd(p), _mm256_loadu_pd(p.add(4)));
        for r in 0..4 {
            let e = _mm256_set1_pd(*a[r].get_unchecked(t));
            acc[r][0] = _mm256_sub_pd(acc[r][0], _mm256_mul_pd(e, b0));
            acc[r][1] = _mm256_sub_pd(acc[r][1], _mm256_mul_pd(e, b1));
        }
    }
    for r in 0..4 {
        let p = tile[r].as_mut_ptr().add(c0);
        _mm256_storeu_pd(p, acc[r][0]);
        _mm256_storeu_pd(p.add(4), acc[r][1]);
    }
}

/// Run `f(i, item)` over `items`, on the rayon pool when there is one (the `gemm` feature).
pub fn par_each<T: Send>(items: &mut [T], f: impl Fn(usize, &mut T) + Sync + Send) {
    #[cfg(feature = "gemm")]
    items.par_iter_mut().enumerate().for_each(|(i, t)| f(i, t));
    #[cfg(not(feature = "gemm"))]
    items.iter_mut().enumerate().for_each(|(i, t)| f(i, t));
}

/// Elements a pool task copies or scans at once in the whole-matrix helpers below.
const CHUNK: usize = 1 << 16;

/// `src` copied into `dst` (resized to it), in chunks on the pool: GPTQ's Hessians of 8192
/// columns are 512 MB, and one thread copying into fresh pages took ~0.2 s of the plugin's
/// time around each `down_proj` factorization (bench/NOTES.md).
pub fn par_copy_into(dst: &mut Vec<f64>, src: &[f64]) {
    if dst.len() != src.len() {
        if dst.capacity() >= src.len() {
            dst.resize(src.len(), 0.0);
        } else {
            // Zeroed pages from the allocator, first touched by the copy below on all threads.
            *dst = vec![0.0; src.len()];
        }
    }
    let mut chunks: Vec<&mut [f64]> = dst.chunks_mut(CHUNK).collect();
    par_each(&mut chunks, |c, d| d.copy_from_slice(&src[c * CHUNK..c * CHUNK + d.len()]));
}

/// A copy of `src`, made on the pool ([`par_copy_into`]).
pub fn par_copy(src: &[f64]) -> Vec<f64> {
    let mut v = vec![];
    par_copy_into(&mut v, src);
    v
}

/// The index of the first value of `v` that is not finite, scanned on the pool.
pub fn first_non_finite(v: &[f64]) -> Option<usize> {
    let first =
        |(c, chunk): (usize, &[f64])| chunk.iter().position(|x| !x.is_finite()).map(|i| c * CHUNK + i);
    #[cfg(feature = "gemm")]
    return v.par_chunks(CHUNK).enumerate().find_map_first(first);
    #[cfg(not(feature = "gemm"))]
    v.chunks(CHUNK).enumerate().find_map(first)
}

/// The lower Cholesky factor `L` of a symmetric positive definite `h` (`h = L Lᵀ`; only the
/// lower triangle of `h` is read); the error names the first pivot that is not positive.
/// Right-looking and blocked: a panel of [`PANEL`] columns is factored, the rows below it solved
/// against it, and the trailing lower triangle updated by products, one block row at a time.
pub fn cholesky_lower(h: &SquareMatrix) -> Result<SquareMatrix, String> {
    cholesky_factor(h.clone(), PANEL).map_err(|(i, s)| format!("pivot {i} is {s}"))
}

/// [`cholesky_lower`] in place with panels of `nb` columns; the error is the failing pivot's
/// index and value.
fn cholesky_factor(h: SquareMatrix, nb: usize) -> Result<SquareMatrix, (usize, f64)> {
    let n = h.n;
    let mut a = h.a;
    let mut panel = vec![];
    for k0 in (0..n).step_by(nb) {
        let k1 = (k0 + nb).min(n);
        // The diagonal block; columns before k0 were subtracted by earlier trailing updates.
        for i in k0..k1 {
            for j in k0..=i {
                let s = a[i * n + j] - dot(&a[i * n + k0..i * n + j], &a[j * n + k0..j * n + j]);
                if i == j {
                    if s.is_nan() || s <= 0.0 || s.is_infinite() {
                        return Err((i, s));
                    }
                    a[i * n + i] = s.sqrt();
                } else {
                    a[i * n + j] = s / a[j * n + j];
                }
            }
        }
        if k1 == n {
            break;
        }
        // The rows below solve l · L11ᵀ = a against the diagonal block.
        let (top, below) = a.split_at_mut(k1 * n);
        let top = &*top;
        let mut rows: Vec<&mut [f64]> = below.chunks_mut(n).collect();
        par_each(&mut rows, |_, row| {
            for j in k0..k1 {
                let s = row[j] - dot(&row[k0..j], &top[j * n + k0..j * n + j]);
                row[j] = s / top[j * n + j];
            }
        });
        // Trailing update of the lower triangle: A22 -= P Pᵀ with P the solved panel, in block
        // rows so the upper triangle is (almost) never computed.
        let (m, w) = (n - k1, k1 - k0);
        panel.clear();
        for i in k1..n {
            panel.extend_from_slice(&a[i * n + k0..i * n + k1]);
        }
        for r0 in (0..m).step_by(4 * nb) {
            let r1 = (r0 + 4 * nb).min(m);
            let d = Strided::rows((k1 + r0) * n + k1, r1 - r0, r1, n);
            let p = Strided::rows(r0 * w, r1 - r0, w, w);
            let pt = Strided::rows(0, r1, w, w).t();
            mul_sub(&mut a, d, &panel, p, &panel, pt);
        }
    }
    for i in 0..n {
        a[i * n + i + 1..(i + 1) * n].fill(0.0);
    }
    Ok(SquareMatrix { n, a })
}

/// `L⁻¹` for a lower-triangular `l` with a non-zero diagonal, blocked by rows: for a block row
/// I, `X[I, I] = L[I, I]⁻¹` by substitution and `X[I, :I] = −X[I, I] · (L[I, :I] · X[:I, :I])`,
/// the inner product taken per column block from its first non-zero row.
pub fn lower_inverse(l: &SquareMatrix) -> SquareMatrix {
    lower_inverse_with(l, PANEL)
}

/// [`lower_inverse`] with block rows of `nb`.
fn lower_inverse_with(l: &SquareMatrix, nb: usize) -> SquareMatrix {
    let n = l.n;
    let mut x = SquareMatrix::zeros(n);
    let mut t = vec![];
    for i0 in (0..n).step_by(nb) {
        let i1 = (i0 + nb).min(n);
        let b = i1 - i0;
        // Diagonal block: row i of X[I, I] from L[i, i0..=i] · X[I, I] = e_i.
        for i in i0..i1 {
            for j in i0..=i {
                let mut s = if i == j { 1.0 } else { 0.0 };
                for k in j..i {
                    s -= l.get(i, k) * x.get(k, j);
                }
                x.set(i, j, s / l.get(i, i));
            }
        }
        if i0 == 0 {
            continue;
        }
        // T = L[I, :i0] · X[:i0, :i0], X lower: column block C needs rows from its start on.
        t.clear();
        t.resize(b * i0, 0.0);
        for c0 in (0..i0).step_by(4 * nb) {
            let c1 = (c0 + 4 * nb).min(i0);
            let d = Strided::rows(c0, b, c1 - c0, i0);
            let lv = Strided::rows(i0 * n + c0, b, i0 - c0, n);
            let xv = Strided::rows(c0 * n + c0, i0 - c0, c1 - c0, n);
            // t starts at zero, so subtracting gives −T.
            mul_sub(&mut t, d, &l.a, lv, &x.a, xv);
        }
        // X[I, :i0] = −X[I, I] · T, and mul_sub gives 0 − X[I, I] · (−T) = X[I, I] · T.
        let xii: Vec<f64> = (i0..i1).flat_map(|i| x.a[i * n + i0..i * n + i1].iter().copied()).collect();
        let mut out = vec![0f64; b * i0];
        let (dv, tv) = (Strided::rows(0, b, i0, i0), Strided::rows(0, b, b, b));
        mul_sub(&mut out, dv, &xii, tv, &t, dv);
        for (r, o) in out.chunks(i0).enumerate() {
            for (dst, v) in x.a[(i0 + r) * n..(i0 + r) * n + i0].iter_mut().zip(o) {
                *dst = -v;
            }
        }
    }
    x
}

/// The upper Cholesky factor `U` of `h⁻¹` (`h⁻¹ = Uᵀ U`), GPTQ's `Hinv`, without forming `h⁻¹`
/// (the reference takes `cholesky(cholesky_inverse(cholesky(H)), upper=True)`): with `J` the
/// reversal permutation, `J h J = L Lᵀ` gives `h⁻¹ = (J L⁻¹ J)ᵀ (J L⁻¹ J)`, and `J L⁻¹ J` is
/// upper triangular with a positive diagonal, so it is `U` (the factor is unique). Reversing
/// both the rows and the columns of a row-major matrix reverses its buffer. Half the work of
/// the reference's route: one factorization and one triangular inverse.
pub fn inverse_upper_cholesky(h: &SquareMatrix) -> Result<SquareMatrix, String> {
    let n = h.n;
    let r = SquareMatrix { n, a: reversed(&h.a) };
    let l = cholesky_factor(r, PANEL).map_err(|(i, s)| format!("pivot {} is {s}", n - 1 - i))?;
    Ok(SquareMatrix { n, a: reversed(&lower_inverse(&l).a) })
}

/// The column-major steps of [`inverse_upper_cholesky_by`] on an n × n matrix held elsewhere
/// (the host's GPU: `host/src/gpu/solve.rs` implements them with cuBLAS and two kernels). `A`
/// is the matrix as the implementation holds it, column-major; "the block at k0" is
/// `A[k0..k0+w, k0..k0+w]`. The reversals at both ends are the implementation's, so a device
/// never sends the n² values through the host more than once each way.
pub trait PanelOps {
    /// The block at `k0` (w × w), column-major.
    fn block(&mut self, k0: usize, w: usize) -> Result<Vec<f64>, String>;
    /// Overwrite the block at `k0` with `v` (w × w, column-major).
    fn set_block(&mut self, k0: usize, w: usize, v: &[f64]) -> Result<(), String>;
    /// `A[k0..k1, k1..] := V11⁻ᵀ · A[k0..k1, k1..]`, `V11` the upper triangle of the block at
    /// `k0` and `k1 = k0 + w` (`dtrsm`: left, upper, transposed).
    fn solve_panel(&mut self, k0: usize, w: usize) -> Result<(), String>;
    /// The upper triangle of `A[k1.., k1..]` minus `Pᵀ P`, `P = A[k0..k1, k1..]` (`dsyrk`).
    fn update_trailing(&mut self, k0: usize, w: usize) -> Result<(), String>;
    /// `u` (row-major n × n) := `V⁻¹`'s column-major buffer reversed, with every entry below
    /// the diagonal set to 0 (`V` the upper triangle of `A`; `V⁻¹` by `dtrsm` against `I`).
    fn reversed_upper_inverse(&mut self, u: &mut [f64]) -> Result<(), String>;
}

/// [`inverse_upper_cholesky`] into `u` by column-major steps an implementation of [`PanelOps`]
/// runs where it likes (cuBLAS on a GPU); `load` receives `h` and returns the implementation
/// holding `R = J h J` column-major, which is `h`'s buffer reversed. The same route, so only
/// rounding differs: the column-major view of `R` is `R` itself, cuBLAS's upper triangle of it
/// is the row-major lower triangle the CPU code reads, its upper Cholesky factor `V`
/// (`R = Vᵀ V`, right-looking in panels of `nb`, each diagonal block factored here by
/// [`cholesky_lower`]) has the row-major view `L`, the column-major `V⁻¹` has the row-major
/// view `L⁻¹`, and `U = J L⁻¹ J` is that buffer reversed (upper triangular by construction:
/// the implementation writes the zeros whatever its rounding left there). The error names the
/// first pivot (in `h`'s numbering) that is not positive, as [`inverse_upper_cholesky`]'s does.
pub fn inverse_upper_cholesky_by<P: PanelOps>(
    n: usize,
    h: &[f64],
    nb: usize,
    load: impl FnOnce(&[f64]) -> Result<P, String>,
    u: &mut [f64],
) -> Result<(), String> {
    if h.len() != n * n || u.len() != n * n {
        return Err(format!("{} and {} values for an {n} × {n} matrix", h.len(), u.len()));
    }
    let nb = nb.max(1);
    let mut ops = load(h)?;
    for k0 in (0..n).step_by(nb) {
        let w = nb.min(n - k0);
        // The block's column-major upper triangle is its row-major lower one: the SDK's `L`
        // (row-major) is, read column-major, the upper factor `V11`.
        let block = SquareMatrix { n: w, a: ops.block(k0, w)? };
        let l =
            cholesky_factor(block, PANEL).map_err(|(i, s)| format!("pivot {} is {s}", n - 1 - (k0 + i)))?;
        ops.set_block(k0, w, &l.a)?;
        if k0 + w < n {
            ops.solve_panel(k0, w)?;
            ops.update_trailing(k0, w)?;
        }
    }
    ops.reversed_upper_inverse(u)
}

/// `v` reversed into a new vector, in chunks on the pool (8192² values are 512 MB).
fn reversed(v: &[f64]) -> Vec<f64> {
    let mut out = vec![0f64; v.len()];
    let mut chunks: Vec<&mut [f64]> = out.chunks_mut(CHUNK).collect();
    par_each(&mut chunks, |c, dst| {
        let (end, len) = (v.len() - c * CHUNK, dst.len());
        for (d, s) in dst.iter_mut().zip(v[end - len..end].iter().rev()) {
            *d = *s;
        }
    });
    out
}

/// `a · b` for row-major `a` (m × k) and `b` (k × n), into a new row-major m × n matrix.
pub fn matmul(a: &[f64], m: usize, k: usize, b: &[f64], n: usize) -> Vec<f64> {
    assert!(
        a.len() == m * k && b.len() == k * n,
        "matmul: {}×{k} · {k}×{n} with {} and {}",
        m,
        a.len(),
        b.len()
    );
    let mut out = vec![0f64; m * n];
    add_product(
        &mut out,
        Strided::rows(0, m, n, n),
        a,
        Strided::rows(0, m, k, k),
        b,
        Strided::rows(0, k, n, n),
        1.0,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A symmetric positive definite n × n matrix with uneven scales and strong correlations.
    fn spd(n: usize) -> SquareMatrix {
        let mut next = crate::testing::uniform(0x9e37_79b9u64);
        let k = n + 3;
        let x: Vec<f64> = (0..n * k).map(|i| next() * (1.0 + (i / k % 5) as f64)).collect();
        let mut h = SquareMatrix::zeros(n);
        for i in 0..n {
            for j in 0..n {
                h.set(
                    i,
                    j,
                    dot(&x[i * k..(i + 1) * k], &x[j * k..(j + 1) * k]) + if i == j { 0.1 } else { 0.0 },
                );
            }
        }
        h
    }

    fn product(a: &SquareMatrix, at: bool, b: &SquareMatrix) -> SquareMatrix {
        let n = a.n;
        let mut p = SquareMatrix::zeros(n);
        for i in 0..n {
            for j in 0..n {
                p.set(i, j, (0..n).map(|k| if at { a.get(k, i) } else { a.get(i, k) } * b.get(k, j)).sum());
            }
        }
        p
    }

    fn max_off_identity(p: &SquareMatrix) -> f64 {
        let n = p.n;
        (0..n * n).map(|i| (p.a[i] - if i / n == i % n { 1.0 } else { 0.0 }).abs()).fold(0.0, f64::max)
    }

    #[test]
    fn pool_copies_and_scans_match_the_serial_ones() {
        // Lengths around the chunk: a partial last chunk, exactly one, several.
        for len in [0, 7, CHUNK, 3 * CHUNK + 11] {
            let src: Vec<f64> = (0..len).map(|i| (i as f64).sin()).collect();
            assert_eq!(par_copy(&src), src);
            // Into buffers that are longer, shorter, or hold stale values.
            for mut dst in [vec![9.0; len + 5], vec![9.0; len / 2], Vec::with_capacity(len + CHUNK)] {
                par_copy_into(&mut dst, &src);
                assert_eq!(dst, src);
            }
            assert_eq!(first_non_finite(&src), None);
            if len > 0 {
                let mut bad = src.clone();
                // The first of two non-finite values is the one named.
                bad[len - 1] = f64::INFINITY;
                bad[len / 3] = f64::NAN;
                assert_eq!(first_non_finite(&bad), Some(len / 3));
            }
        }
    }

    #[test]
    fn cholesky_and_inverse_by_hand() {
        // [[4, 2], [2, 3]] = L Lᵀ with L = [[2, 0], [1, √2]]; L⁻¹ = [[1/2, 0], [−1/(2√2), 1/√2]];
        // inverse [[3, −2], [−2, 4]] / 8 = Uᵀ U.
        let h = SquareMatrix { n: 2, a: vec![4.0, 2.0, 2.0, 3.0] };
        let l = cholesky_lower(&h).unwrap();
        assert_eq!((l.get(0, 0), l.get(1, 0), l.get(0, 1)), (2.0, 1.0, 0.0));
        assert!((l.get(1, 1) - 2f64.sqrt()).abs() < 1e-15);
        let x = lower_inverse(&l);
        let s = 2f64.sqrt();
        for (got, want) in x.a.iter().zip([0.5, 0.0, -1.0 / (2.0 * s), 1.0 / s]) {
            assert!((got - want).abs() < 1e-15, "{:?}", x.a);
        }
        let u = inverse_upper_cholesky(&h).unwrap();
        assert_eq!(u.get(1, 0), 0.0);
        for (got, want) in product(&u, true, &u).a.iter().zip([3.0 / 8.0, -0.25, -0.25, 0.5]) {
            assert!((got - want).abs() < 1e-15, "{:?}", u.a);
        }
        let bad = SquareMatrix { n: 2, a: vec![1.0, 2.0, 2.0, 1.0] };
        assert!(cholesky_lower(&bad).unwrap_err().contains("pivot 1"));
        // The reversed factorization meets the bad pivot first at column 0.
        assert!(
            inverse_upper_cholesky(&bad).unwrap_err().contains("pivot 0"),
            "{:?}",
            inverse_upper_cholesky(&bad)
        );
    }

    /// Several panels and block rows (small `nb`), and the production panel size on a matrix
    /// larger than one panel: L Lᵀ = H, L · L⁻¹ = I and Uᵀ U H = I, to round-off.
    #[test]
    fn blocked_factorizations_by_their_definitions() {
        for (n, nb) in [(45, 8), (61, 7), (300, PANEL)] {
            let h = spd(n);
            let l = cholesky_factor(h.clone(), nb).unwrap();
            assert!((0..n).all(|i| (i + 1..n).all(|j| l.get(i, j) == 0.0)), "n {n}: L not lower");
            let llt = {
                let mut p = SquareMatrix::zeros(n);
                for i in 0..n {
                    for j in 0..n {
                        p.set(i, j, dot(l.row(i), l.row(j)));
                    }
                }
                p
            };
            let scale = h.a.iter().fold(0f64, |m, v| m.max(v.abs()));
            let err = llt.a.iter().zip(&h.a).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
            assert!(err < 1e-12 * scale, "n {n} nb {nb}: |LLᵀ − H| = {err}");
            let x = lower_inverse_with(&l, nb);
            assert!(max_off_identity(&product(&l, false, &x)) < 1e-9, "n {n} nb {nb}: L·L⁻¹");
            let u = inverse_upper_cholesky(&h).unwrap();
            assert!((0..n).all(|i| (0..i).all(|j| u.get(i, j) == 0.0) && u.get(i, i) > 0.0));
            let uuh = product(&product(&u, true, &u), false, &h);
            assert!(max_off_identity(&uuh) < 1e-8, "n {n}: UᵀU·H off I by {}", max_off_identity(&uuh));
        }
    }

    #[test]
    fn mul_sub_on_strided_views() {
        // dst (3×2 inside a 3×4 buffer, from column 1) −= A (3×2) · Bᵀ with B stored 2×2.
        let mut dst = vec![0f64; 12];
        let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let b = [1.0, 0.0, 1.0, 1.0]; // B = [[1, 0], [1, 1]], Bᵀ = [[1, 1], [0, 1]]
        mul_sub(
            &mut dst,
            Strided::rows(1, 3, 2, 4),
            &a,
            Strided::rows(0, 3, 2, 2),
            &b,
            Strided::rows(0, 2, 2, 2).t(),
        );
        assert_eq!(dst, vec![0.0, -1.0, -3.0, 0.0, 0.0, -3.0, -7.0, 0.0, 0.0, -5.0, -11.0, 0.0]);
    }

    /// The in-order product gives the plain loop's bits, rows and columns not multiples of its
    /// tiles, inside a wider destination.
    #[test]
    fn in_order_products_equal_the_plain_loop_bit_for_bit() {
        let (m, k, n, width, off) = (70, 37, 300, 310, 7);
        let mut next = crate::testing::uniform(7u64);
        let dst0: Vec<f64> = (0..m * width).map(|_| next()).collect();
        let a: Vec<f64> = (0..m * k).map(|_| next()).collect();
        let b: Vec<f64> = (0..(k + 1) * width).map(|_| next()).collect();
        let mut got = dst0.clone();
        sub_products_in_order(&mut got, Strided::rows(off, m, n, width), &a, &b, width + 3, width);
        let mut want = dst0.clone();
        for i in 0..m {
            for t in 0..k {
                for j in 0..n {
                    want[i * width + off + j] -= a[i * k + t] * b[width + 3 + t * width + j];
                }
            }
        }
        assert!(got.iter().zip(&want).all(|(g, w)| g.to_bits() == w.to_bits()));
    }

    #[test]
    fn matmul_by_hand() {
        // [[1, 2, 3], [4, 5, 6]] · [[1, 0], [0, 1], [1, 1]] = [[4, 5], [10, 11]].
        let c = matmul(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 2, 3, &[1.0, 0.0, 0.0, 1.0, 1.0, 1.0], 2);
        assert_eq!(c, vec![4.0, 5.0, 10.0, 11.0]);
        // Larger than one micro-kernel tile, against the naive sum.
        let (m, k, n) = (67, 45, 33);
        let a: Vec<f64> = (0..m * k).map(|i| ((i * 7 % 13) as f64 - 6.0) / 5.0).collect();
        let b: Vec<f64> = (0..k * n).map(|i| ((i * 11 % 17) as f64 - 8.0) / 3.0).collect();
        let c = matmul(&a, m, k, &b, n);
        for i in 0..m {
            for j in 0..n {
                let want: f64 = (0..k).map(|t| a[i * k + t] * b[t * n + j]).sum();
                assert!((c[i * n + j] - want).abs() < 1e-10, "[{i},{j}]");
            }
        }
    }

    /// [`PanelOps`] on a column-major buffer by the definitions (plain loops, nothing shared
    /// with the code under test): the CPU stand-in for the host's cuBLAS steps.
    struct ColumnMajor {
        n: usize,
        a: Vec<f64>,
    }

    impl ColumnMajor {
        fn reversed(n: usize, h: &[f64]) -> Self {
            ColumnMajor { n, a: h.iter().rev().copied().collect() }
        }
        fn at(&self, i: usize, j: usize) -> f64 {
            self.a[i + j * self.n]
        }
    }

    impl PanelOps for ColumnMajor {
        fn block(&mut self, k0: usize, w: usize) -> Result<Vec<f64>, String> {
            Ok((0..w * w).map(|e| self.at(k0 + e % w, k0 + e / w)).collect())
        }
        fn set_block(&mut self, k0: usize, w: usize, v: &[f64]) -> Result<(), String> {
            let n = self.n;
            (0..w * w).for_each(|e| self.a[(k0 + e % w) + (k0 + e / w) * n] = v[e]);
            Ok(())
        }
        fn solve_panel(&mut self, k0: usize, w: usize) -> Result<(), String> {
            // V11ᵀ X = B, V11ᵀ lower: forward substitution, column by column of B.
            let (n, k1) = (self.n, k0 + w);
            for c in k1..n {
                for i in 0..w {
                    let mut s = self.at(k0 + i, c);
                    for k in 0..i {
                        s -= self.at(k0 + k, k0 + i) * self.at(k0 + k, c);
                    }
                    self.a[(k0 + i) + c * n] = s / self.at(k0 + i, k0 + i);
                }
            }
            Ok(())
        }
        fn update_trailing(&mut self, k0: usize, w: usize) -> Result<(), String> {
            let (n, k1) = (self.n, k0 + w);
            for j in k1..n {
                for i in k1..=j {
                    let p: f64 = (k0..k1).map(|k| self.at(k, i) * self.at(k, j)).sum();
                    self.a[i + j * n] -= p;
                }
            }
            Ok(())
        }
        fn reversed_upper_inverse(&mut self, u: &mut [f64]) -> Result<(), String> {
            // V Y = I by back substitution, column by column; only V's upper triangle is read.
            let n = self.n;
            let mut y = vec![0f64; n * n];
            for c in 0..n {
                for i in (0..n).rev() {
                    let mut s = if i == c { 1.0 } else { 0.0 };
                    for k in i + 1..n {
                        s -= self.at(i, k) * y[k + c * n];
                    }
                    y[i + c * n] = s / self.at(i, i);
                }
            }
            for (k, v) in u.iter_mut().enumerate() {
                *v = if k % n < k / n { 0.0 } else { y[n * n - 1 - k] };
            }
            Ok(())
        }
    }

    /// The column-major route equals the row-major one (rounding apart), reads the same
    /// triangle of `h` (the other one is spoiled here), and names the same failing pivot.
    #[test]
    fn inverse_upper_cholesky_by_column_major_steps_is_the_cpu_route() {
        for (n, nb) in [(1, 4), (37, 8), (70, 16), (70, 70), (64, 100)] {
            let mut h = spd(n);
            let want = inverse_upper_cholesky(&h).unwrap();
            // The CPU route reads h's upper triangle (the reversed matrix's lower one): spoil
            // the lower one and the answer must not move.
            for i in 0..n {
                for j in 0..i {
                    h.a[i * n + j] = f64::NAN;
                }
            }
            assert_eq!(
                inverse_upper_cholesky(&h).unwrap(),
                want,
                "n {n}: the CPU route reads h's upper triangle"
            );
            let mut got = SquareMatrix::zeros(n);
            inverse_upper_cholesky_by(n, &h.a, nb, |h| Ok(ColumnMajor::reversed(n, h)), &mut got.a).unwrap();
            let top = want.a.iter().fold(0f64, |m, v| m.max(v.abs()));
            let diff = want.a.iter().zip(&got.a).fold(0f64, |m, (a, b)| m.max((a - b).abs()));
            assert!(diff <= 1e-12 * top, "n {n} nb {nb}: {diff:e} of {top:e}");
            assert!((0..n).all(|i| (0..i).all(|j| got.get(i, j) == 0.0)), "n {n}: upper triangular");
        }
        // A pivot that fails in the third panel is named as the CPU route names it.
        let n = 40;
        let mut h = spd(n);
        h.set(5, 5, -1.0);
        let cpu = inverse_upper_cholesky(&h).unwrap_err();
        let mut u = vec![0f64; n * n];
        let by =
            inverse_upper_cholesky_by(n, &h.a, 8, |h| Ok(ColumnMajor::reversed(n, h)), &mut u).unwrap_err();
        assert_eq!(cpu.split(' ').nth(1), by.split(' ').nth(1), "{cpu} / {by}");
        assert!(by.starts_with("pivot 5 "), "{by}");
    }
}
