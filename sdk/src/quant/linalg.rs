//! The dense linear algebra GPTQ needs (Cholesky factor, inverse through it), in f64,
//! row-major, with every inner loop a contiguous dot product so the compiler vectorizes it.

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
    fn row(&self, i: usize) -> &[f64] {
        &self.a[i * self.n..(i + 1) * self.n]
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The lower Cholesky factor `L` of a symmetric positive definite `h` (`h = L Lᵀ`); the error
/// names the first pivot that is not positive.
pub fn cholesky_lower(h: &SquareMatrix) -> Result<SquareMatrix, String> {
    let n = h.n;
    let mut l = SquareMatrix::zeros(n);
    for i in 0..n {
        for j in 0..=i {
            let s = h.get(i, j) - dot(&l.row(i)[..j], &l.row(j)[..j]);
            if i == j {
                if s.is_nan() || s <= 0.0 || s.is_infinite() {
                    return Err(format!("pivot {i} is {s}"));
                }
                l.set(i, i, s.sqrt());
            } else {
                let v = s / l.get(j, j);
                l.set(i, j, v);
            }
        }
    }
    Ok(l)
}

/// `h⁻¹` from the lower Cholesky factor `l` of `h`: `h⁻¹ = L⁻ᵀ L⁻¹`.
pub fn inverse_from_cholesky(l: &SquareMatrix) -> SquareMatrix {
    let n = l.n;
    // m = (L⁻¹)ᵀ, upper triangular: row j of m is column j of L⁻¹, so the forward
    // substitution L x = e_j runs along contiguous rows.
    let mut m = SquareMatrix::zeros(n);
    for j in 0..n {
        for i in j..n {
            let s = if i == j { 1.0 } else { 0.0 } - dot(&l.row(i)[j..i], &m.row(j)[j..i]);
            m.set(j, i, s / l.get(i, i));
        }
    }
    // (L⁻ᵀ L⁻¹)[a][b] = Σ_k m[a][k] m[b][k], k ≥ max(a, b).
    let mut inv = SquareMatrix::zeros(n);
    for a in 0..n {
        for b in a..n {
            let v = dot(&m.row(a)[b..], &m.row(b)[b..]);
            inv.set(a, b, v);
            inv.set(b, a, v);
        }
    }
    inv
}

/// `a · b` for row-major `a` (m × k) and `b` (k × n), into a new row-major m × n matrix
/// (gemm on the rayon pool; without the `gemm` feature, row-by-row axpy loops).
pub fn matmul(a: &[f64], m: usize, k: usize, b: &[f64], n: usize) -> Vec<f64> {
    assert!(
        a.len() == m * k && b.len() == k * n,
        "matmul: {}×{k} · {k}×{n} with {} and {}",
        m,
        a.len(),
        b.len()
    );
    let mut out = vec![0f64; m * n];
    if m == 0 || n == 0 || k == 0 {
        return out;
    }
    #[cfg(not(feature = "gemm"))]
    for (arow, orow) in a.chunks(k).zip(out.chunks_mut(n)) {
        for (&av, brow) in arow.iter().zip(b.chunks(n)) {
            orow.iter_mut().zip(brow).for_each(|(o, bv)| *o += av * bv);
        }
    }
    // SAFETY: the three buffers hold m×k, k×n and m×n values, row-major (row stride = width,
    // column stride 1), and `out` does not alias the inputs.
    #[cfg(feature = "gemm")]
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            1,
            n as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::Rayon(0),
        )
    };
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cholesky_and_inverse_by_hand() {
        // [[4, 2], [2, 3]] = L Lᵀ with L = [[2, 0], [1, √2]]; inverse [[3, -2], [-2, 4]] / 8.
        let h = SquareMatrix { n: 2, a: vec![4.0, 2.0, 2.0, 3.0] };
        let l = cholesky_lower(&h).unwrap();
        assert_eq!((l.get(0, 0), l.get(1, 0), l.get(0, 1)), (2.0, 1.0, 0.0));
        assert!((l.get(1, 1) - 2f64.sqrt()).abs() < 1e-15);
        let inv = inverse_from_cholesky(&l);
        for (got, want) in inv.a.iter().zip([3.0 / 8.0, -0.25, -0.25, 0.5]) {
            assert!((got - want).abs() < 1e-15, "{:?}", inv.a);
        }
        assert!(cholesky_lower(&SquareMatrix { n: 2, a: vec![1.0, 2.0, 2.0, 1.0] })
            .unwrap_err()
            .contains("pivot 1"));
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

    #[test]
    fn inverse_times_matrix_is_identity() {
        let n = 37;
        let mut h = SquareMatrix::zeros(n);
        for i in 0..n {
            for j in 0..n {
                let v = ((i * 31 + j * 17) % 11) as f64 / 11.0 + if i == j { n as f64 } else { 0.0 };
                h.set(i, j, v);
                h.set(j, i, v);
            }
        }
        let inv = inverse_from_cholesky(&cholesky_lower(&h).unwrap());
        for i in 0..n {
            for j in 0..n {
                let p: f64 = (0..n).map(|k| h.get(i, k) * inv.get(k, j)).sum();
                assert!((p - if i == j { 1.0 } else { 0.0 }).abs() < 1e-12, "[{i},{j}] {p}");
            }
        }
    }
}
