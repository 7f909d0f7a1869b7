//! Times the GPTQ solve alone (no model, no calibration pass) on one layer shape, with a
//! synthetic Hessian (rank 64 plus a diagonal), on all cores: the CPU part of issue 11's
//! "GPTQ for Llama-3.2-1B" target, split into its factorization and its column loop.
//! `cargo run --release -p llq-sdk --features testing --example gptq_time -- ROWS COLS`
use llq_sdk::quant::gptq::{gptq, GptqOptions};
use llq_sdk::quant::intgroup::IntGroupSpec;
use llq_sdk::quant::linalg::{
    inverse_upper_cholesky, matmul, mul_sub, sub_products_in_order, SquareMatrix, Strided,
};
use std::time::Instant;

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let [rows, cols] = args[..] else {
        eprintln!("usage: gptq_time ROWS COLS");
        std::process::exit(2);
    };
    let mut next = llq_sdk::testing::uniform(0x1234);
    let k = 64;
    let b: Vec<f64> = (0..k * cols).map(|_| next()).collect();
    let bt: Vec<f64> = (0..cols * k).map(|i| b[(i % k) * cols + i / k]).collect();
    let mut h = matmul(&bt, cols, k, &b, cols);
    for i in 0..cols {
        h[i * cols + i] += 0.5 + next().abs();
    }
    let w: Vec<f32> = (0..rows * cols).map(|_| next() as f32 * 0.1).collect();
    let t = Instant::now();
    inverse_upper_cholesky(&SquareMatrix { n: cols, a: h.clone() }).expect("positive definite");
    let factor = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let spec = IntGroupSpec { bits: 4, group_size: 128, sym: false, whole_row: false };
    let r = gptq(&w, rows, cols, &h, spec, GptqOptions::default()).expect("gptq");
    let all = t.elapsed().as_secs_f64();
    // One lazy update of the first block (rows × 128 errors into the other columns), in the
    // reference's order and by gemm.
    let kb = 128.min(cols);
    let e: Vec<f64> = (0..rows * kb).map(|_| next()).collect();
    let mut wp: Vec<f64> = w.iter().map(|&v| v as f64).collect();
    let d = Strided::rows(kb, rows, cols - kb, cols);
    let t = Instant::now();
    sub_products_in_order(&mut wp, d, &e, &h, kb, cols);
    let in_order = t.elapsed().as_secs_f64();
    let t = Instant::now();
    mul_sub(&mut wp, d, &e, Strided::rows(0, rows, kb, kb), &h, Strided::rows(kb, kb, cols - kb, cols));
    let by_gemm = t.elapsed().as_secs_f64();
    let gf = |s: f64| 2.0 * (rows * kb * (cols - kb)) as f64 / s / 1e9;
    println!(
        "{rows}x{cols}: gptq {all:.2} s (Hinv factor {factor:.2} s, columns {:.2} s, lazy updates {:.2} s of it), loss {:.6e}; one lazy update {:.1} GF/s in order, {:.1} GF/s by gemm",
        r.timing.columns_s,
        r.timing.lazy_s,
        r.loss,
        gf(in_order),
        gf(by_gemm)
    );
}
