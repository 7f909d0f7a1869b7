//! Times the two factorizations behind GPTQ's `Hinv` (the blocked Cholesky factor and the
//! triangular inverse) beside one plain product of the same size, on all cores, as GF/s: how
//! far the factorizations are from the rate the `gemm` crate reaches on this machine.
//! `cargo run --release -p llq-sdk --features testing --example factor_time -- N`
use llq_sdk::quant::linalg::{cholesky_lower, lower_inverse, matmul, SquareMatrix};
use std::time::Instant;

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(2048);
    let mut next = llq_sdk::testing::uniform(0x9e37);
    let b: Vec<f64> = (0..n * n).map(|_| next()).collect();
    let t = Instant::now();
    let mut h = matmul(&b, n, n, &b, n);
    let mm = t.elapsed().as_secs_f64();
    // Symmetric positive definite: (B·B + (B·B)ᵀ)/2 + n·I.
    for i in 0..n {
        for j in 0..i {
            let v = 0.5 * (h[i * n + j] + h[j * n + i]);
            h[i * n + j] = v;
            h[j * n + i] = v;
        }
        h[i * n + i] += n as f64;
    }
    let h = SquareMatrix { n, a: h };
    let t = Instant::now();
    let l = cholesky_lower(&h).expect("positive definite");
    let ch = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let x = lower_inverse(&l);
    let inv = t.elapsed().as_secs_f64();
    // Checks: L·Lᵀ = H and X·L = I, worst entry.
    let lt: Vec<f64> = (0..n * n).map(|i| l.a[(i % n) * n + i / n]).collect();
    let llt = matmul(&l.a, n, n, &lt, n);
    let e1 = llt.iter().zip(&h.a).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max) / n as f64;
    let xl = matmul(&x.a, n, n, &l.a, n);
    let e2 = (0..n * n).map(|i| (xl[i] - if i % (n + 1) == 0 { 1.0 } else { 0.0 }).abs()).fold(0.0, f64::max);
    let nf = n as f64;
    println!(
        "n {n}: gemm {:.1} GF/s ({mm:.2} s); cholesky {ch:.2} s ({:.1} GF/s, |LLᵀ−H|/n {e1:.1e}); lower inverse {inv:.2} s ({:.1} GF/s, |XL−I| {e2:.1e})",
        2.0 * nf * nf * nf / mm / 1e9,
        nf * nf * nf / 3.0 / ch / 1e9,
        nf * nf * nf / 3.0 / inv / 1e9
    );
}
