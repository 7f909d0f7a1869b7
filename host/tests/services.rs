//! The host's services to plugins (ABI 1.4, `llq_host::services`), in a process of their own:
//! an installed backend is process-wide, so no other test may quantize while one is.

mod common;

use llq_host::services::{install, LazyMatrix, Solver, HOST_SERVICES};
use llq_sdk::abi::{LlqErrorBuf, LlqStatus};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;

/// A backend that writes a recognizable value, to see the ABI entry route to it.
struct Marker;
impl Solver for Marker {
    fn inverse_upper_cholesky(&self, n: usize, _h: &[f64], u: &mut [f64]) -> anyhow::Result<bool> {
        if n == 3 {
            return Err(anyhow::anyhow!("three is refused"));
        }
        u.fill(7.0);
        Ok(true)
    }
}

fn call(n: usize) -> (LlqStatus, u32, Vec<f64>, String) {
    let h = vec![1.0; n * n];
    let mut u = vec![0.0; n * n];
    let mut done = 9u32;
    let mut msg = vec![0u8; 64];
    let mut err = LlqErrorBuf { ptr: msg.as_mut_ptr(), cap: msg.len(), len: 0 };
    // SAFETY: valid pointers for the call.
    let s = unsafe {
        (HOST_SERVICES.inverse_upper_cholesky)(n as u64, h.as_ptr(), u.as_mut_ptr(), &mut done, &mut err)
    };
    let m = String::from_utf8_lossy(&msg[..err.len]).into_owned();
    (s, done, u, m)
}

/// Not done without a backend, the backend's answer with one, its error as an error, and
/// "not done" again once the guard is dropped; a second install is refused.
fn routes_to_the_installed_backend_only_while_installed() {
    assert_eq!(call(2).1, 0);
    let g = install(Arc::new(Marker)).unwrap();
    assert!(install(Arc::new(Marker)).is_err());
    let (s, d, u, _) = call(2);
    assert_eq!((s, d), (LlqStatus::Ok, 1));
    assert!(u.iter().all(|&v| v == 7.0));
    let (s, _, _, m) = call(3);
    assert_eq!(s, LlqStatus::Error);
    assert!(m.contains("three is refused"), "{m}");
    drop(g);
    assert_eq!(call(2).1, 0);
}

/// A host backend for the ABI 1.4 factorization service, for the test below: the SDK's own
/// CPU factorization (so the codes must not change) or a wrong answer (so they must), and
/// a count of the calls.
struct TestSolver {
    calls: AtomicUsize,
    wrong: bool,
}

impl Solver for TestSolver {
    fn inverse_upper_cholesky(&self, n: usize, h: &[f64], u: &mut [f64]) -> anyhow::Result<bool> {
        self.calls.fetch_add(1, SeqCst);
        if self.wrong {
            u.fill(0.0);
            (0..n).for_each(|i| u[i * n + i] = 1.0);
            return Ok(true);
        }
        let m = llq_sdk::quant::linalg::SquareMatrix { n, a: h.to_vec() };
        let r = llq_sdk::quant::linalg::inverse_upper_cholesky(&m).map_err(anyhow::Error::msg)?;
        u.copy_from_slice(&r.a);
        Ok(true)
    }
}

/// A `rows × cols` layer of uniform weights and its calibration from 256 uniform input rows
/// (the Hessian `2/n Σ x xᵀ` and the column statistics), from `seed`.
fn layer(rows: usize, cols: usize, seed: u64) -> (Vec<f32>, llq_host::plugin::CalibrationData) {
    let n = 256usize;
    let mut next = llq_sdk::testing::uniform(seed);
    let w: Vec<f32> = (0..rows * cols).map(|_| next() as f32).collect();
    let x: Vec<f64> = (0..n * cols).map(|_| next()).collect();
    let mut hessian = vec![0f64; cols * cols];
    for r in x.chunks(cols) {
        for i in 0..cols {
            for j in 0..cols {
                hessian[i * cols + j] += 2.0 / n as f64 * r[i] * r[j];
            }
        }
    }
    let col = |f: &dyn Fn(usize) -> f32| (0..cols).map(f).collect::<Vec<f32>>();
    let calib = llq_host::plugin::CalibrationData {
        n_tokens: n as u64,
        abs_max: col(&|c| x.iter().skip(c).step_by(cols).fold(0f64, |m, v| m.max(v.abs())) as f32),
        mean_sq: col(&|c| (x.iter().skip(c).step_by(cols).map(|v| v * v).sum::<f64>() / n as f64) as f32),
        samples: vec![],
        n_samples: 0,
        hessian,
        abs_mean: col(&|c| (x.iter().skip(c).step_by(cols).map(|v| v.abs()).sum::<f64>() / n as f64) as f32),
    };
    (w, calib)
}

/// ABI 1.4: the gptq plugin takes its factorization from the host while a backend is
/// installed — one call for the layer, the same codes when the backend computes the same
/// thing, other codes when it answers something else — and computes it itself otherwise.
/// (The GPU backend differs from the CPU one only in rounding: `LLQ_SOLVE=check` on a GPU
/// measures by how much.)
fn gptq_takes_its_factorization_from_the_host_while_one_is_installed() {
    let gptq = llq_host::plugin::Plugin::load(&common::so("gptq")).unwrap();
    let (rows, cols) = (16usize, 64usize);
    let (w, calib) = layer(rows, cols, 0x9e3779b97f4a7c15);
    let opts = r#"{"bits":4,"group_size":32}"#;
    // The plugin keeps the last Hessian's factorization (q/k/v share one): quantizing with
    // another Hessian in between makes each measured call factor its own.
    let mut other = calib.clone();
    other.hessian.iter_mut().step_by(cols + 1).for_each(|d| *d *= 2.0);
    let quantize = |c| gptq.quantize("layer", rows, cols, &w, opts, Some(c)).unwrap();
    let own = quantize(&calib);
    for wrong in [false, true] {
        let solver = Arc::new(TestSolver { calls: AtomicUsize::new(0), wrong });
        quantize(&other);
        let guard = install(solver.clone()).unwrap();
        let hosted = quantize(&calib);
        drop(guard);
        assert_eq!(solver.calls.load(SeqCst), 1, "wrong={wrong}: one factorization for the layer");
        assert_eq!(hosted == own, !wrong, "wrong={wrong}: the codes follow the host's answer");
        quantize(&other);
        assert!(quantize(&calib) == own, "after the guard, the plugin's own factorization again");
        assert_eq!(solver.calls.load(SeqCst), 1);
    }
}

/// A host backend for the ABI 1.5 lazy updates: its own copy of W and U updated by the SDK's
/// in-order product (what the GPU kernel computes bit for bit), or left as it is (`wrong`),
/// counting the matrices and updates; it leaves the factorization to the plugin.
struct TestLazy {
    begun: AtomicUsize,
    updates: Arc<AtomicUsize>,
    wrong: bool,
}

struct CopyLazy {
    rows: usize,
    cols: usize,
    w: Vec<f64>,
    u: Vec<f64>,
    updates: Arc<AtomicUsize>,
    wrong: bool,
}

impl Solver for TestLazy {
    fn inverse_upper_cholesky(&self, _n: usize, _h: &[f64], _u: &mut [f64]) -> anyhow::Result<bool> {
        Ok(false)
    }
    fn lazy_begin(
        &self,
        rows: usize,
        cols: usize,
        w: &[f64],
        u: &[f64],
    ) -> anyhow::Result<Option<Box<dyn LazyMatrix>>> {
        self.begun.fetch_add(1, SeqCst);
        let (w, u) = (w.to_vec(), u.to_vec());
        Ok(Some(Box::new(CopyLazy { rows, cols, w, u, updates: self.updates.clone(), wrong: self.wrong })))
    }
}

impl LazyMatrix for CopyLazy {
    fn rows(&self) -> usize {
        self.rows
    }
    fn update(&mut self, i1: usize, i2: usize, e: &[f64], c1: usize, out: &mut [f64]) -> anyhow::Result<()> {
        let (rows, cols) = (self.rows, self.cols);
        self.updates.fetch_add(1, SeqCst);
        if !self.wrong {
            let d = llq_sdk::quant::linalg::Strided::rows(i2, rows, cols - i2, cols);
            llq_sdk::quant::linalg::sub_products_in_order(&mut self.w, d, e, &self.u, i1 * cols + i2, cols);
        }
        for (o, r) in out.chunks_mut(c1 - i2).zip(self.w.chunks(cols)) {
            o.copy_from_slice(&r[i2..c1]);
        }
        Ok(())
    }
}

/// ABI 1.5: while a backend offers lazy updates, the gptq plugin hands each layer's working
/// weights over and takes back only the columns it reads: one matrix per layer, one update per
/// later block (64 columns in blocks of 16: 3), the same codes when the host's product is the
/// SDK's, other codes when the host leaves the matrix as it was; and its own loop again after
/// the guard. Dynamic groups of 32 over blocks of 16 read past their block (from the group's start).
fn gptq_hands_its_lazy_updates_to_the_host_while_one_is_offered() {
    let gptq = llq_host::plugin::Plugin::load(&common::so("gptq")).unwrap();
    let (rows, cols) = (16usize, 64usize);
    let (w, calib) = layer(rows, cols, 0x51ed27);
    for opts in [
        r#"{"bits":4,"group_size":32,"block_size":16}"#,
        r#"{"bits":3,"group_size":32,"block_size":16,"act_order":true}"#,
    ] {
        let quantize = || gptq.quantize("layer", rows, cols, &w, opts, Some(&calib)).unwrap();
        let own = quantize();
        for wrong in [false, true] {
            let solver = Arc::new(TestLazy { begun: AtomicUsize::new(0), updates: Arc::default(), wrong });
            let guard = install(solver.clone()).unwrap();
            let hosted = quantize();
            drop(guard);
            assert_eq!(solver.begun.load(SeqCst), 1, "{opts} wrong={wrong}: one matrix for the layer");
            assert_eq!(solver.updates.load(SeqCst), 3, "{opts} wrong={wrong}: one update per later block");
            assert_eq!(hosted == own, !wrong, "{opts} wrong={wrong}: the codes follow the host's product");
            assert!(quantize() == own, "{opts}: after the guard, the plugin's own loop again");
        }
    }
}

/// The checks one after the other: each installs a process-wide backend.
#[test]
fn host_services() {
    routes_to_the_installed_backend_only_while_installed();
    gptq_takes_its_factorization_from_the_host_while_one_is_installed();
    gptq_hands_its_lazy_updates_to_the_host_while_one_is_offered();
}
