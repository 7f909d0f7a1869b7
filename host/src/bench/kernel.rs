//! `llq-host kernels`: check a method's CUDA kernels against its CPU `dequantize` and time
//! them against the memory-bandwidth floor and cuBLAS (feature `cuda`).
//!
//! Checks draw fresh random weights and activations on every invocation (the seed is
//! reported), poison every output before the launch and verify every element was written:
//! dequantize must equal the CPU dequantize rounded to bf16 bit for bit; the fused matvec
//! must be within 1e-2 relative L2 error of an f64 product of the same bf16 activations and
//! the CPU-dequantized weights. Timing: CUDA events around back-to-back launches that rotate
//! over enough copies of the matrix (and of the dequantize output) to defeat the 50 MB L2,
//! median of repeats; the cuBLAS baseline and the plugin's matvec both write into a
//! preallocated output.

use crate::calib::stats::from_rows;
use crate::gpu::timing::{copy_bandwidth, time_launches};
use crate::gpu::{self, PackedLinear};
use crate::plugin::{CalibrationData, QuantConfig};
use crate::util::stats::Spread;
use crate::util::synth::synthetic_weights;
use anyhow::{bail, Context, Result};
use candle_core::cuda_backend::cudarc::cublas::sys::cublasOperation_t;
use candle_core::cuda_backend::cudarc::cublas::{CudaBlas, Gemm, GemmConfig};
use candle_core::cuda_backend::cudarc::driver::CudaSlice;
use candle_core::cuda_backend::CudaDevice;
use half::bf16;
use rayon::prelude::*;
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct KernelCheck {
    pub rows: usize,
    pub cols: usize,
    /// Elements of the dequantize output that differ from bf16(CPU dequantize).
    pub dequantize_mismatches: usize,
    pub dequantize_unwritten: usize,
    /// The batch sizes checked: 1–8, and 9, 16, 33, 64 where the matrix takes the
    /// tensor-core matvec (header v1.3).
    pub matvec_batches: Vec<usize>,
    /// Per batch size of `matvec_batches`: ‖y − ref‖ / ‖ref‖ of the fused matvec.
    pub matvec_rel_err: Vec<f64>,
    pub matvec_unwritten: usize,
    pub passed: bool,
}

#[derive(Debug, Serialize)]
pub struct KernelTiming {
    pub kernel: String,
    pub rows: usize,
    pub cols: usize,
    pub batch: usize,
    /// Bytes one launch must move (packed weights or bf16 weights, activations in and out).
    pub bytes: u64,
    pub seconds: Spread,
    pub gb_per_s: f64,
    /// Achieved bandwidth over the measured device-to-device copy bandwidth.
    pub fraction_of_copy_bw: f64,
}

#[derive(Debug, Serialize)]
pub struct KernelReport {
    pub method: String,
    pub options: String,
    pub device: String,
    pub arch: String,
    pub ptx: String,
    pub seed: u64,
    /// Device-to-device copy of 1 GiB, bytes read + written per second.
    pub copy_gb_per_s: f64,
    pub checks: Vec<KernelCheck>,
    /// Edge-case shapes the plugin refuses (e.g. hqq: rows that are not whole groups), with
    /// its reason; the timed shapes are never skipped.
    pub skipped: Vec<String>,
    pub timings: Vec<KernelTiming>,
    pub all_passed: bool,
}

fn poisoned(dev: &CudaDevice, n: usize) -> Result<CudaSlice<bf16>> {
    Ok(dev.clone_htod(&vec![bf16::from_bits(0xffff); n])?)
}

/// What a calibrated plugin needs to quantize a test matrix of `cols` inputs: the statistics of
/// seeded Gaussian inputs (the kernels decode whatever codes the plugin chose).
fn calibration_for(q: &QuantConfig, cols: usize) -> Result<Option<CalibrationData>> {
    let need = q.calibration();
    if need == llq_sdk::CalibrationNeed::None {
        return Ok(None);
    }
    Ok(Some(from_rows(&synthetic_weights(cols as u64 ^ 0x5eed, 256 * cols, 1.0), cols, need)?))
}

fn random_bf16(seed: u64, n: usize) -> Vec<bf16> {
    synthetic_weights(seed, n, 1.0).into_iter().map(bf16::from_f32).collect()
}

/// What `kernel_bench` checks and times.
#[derive(Debug, Clone)]
pub struct KernelBenchSettings {
    /// Timed shapes (rows = out features, cols = in features).
    pub shapes: Vec<(usize, usize)>,
    /// Batch sizes timed (the fused matvec covers 1–8; larger ones time cuBLAS only).
    pub batch_sizes: Vec<usize>,
    pub repeats: usize,
    pub device: String,
    /// Seed for the random inputs (default: a fresh one, reported).
    pub seed: Option<u64>,
}

pub fn kernel_bench(q: &QuantConfig, s: &KernelBenchSettings) -> Result<KernelReport> {
    let (shapes, batches, repeats, seed) = (&s.shapes, &s.batch_sizes, s.repeats, s.seed);
    let plugin = q.plugin;
    let dev = crate::device::open(&s.device)?;
    let cd = gpu::cuda_device(&dev)?;
    let name = plugin.info.name.clone();
    let options = q.canonical();
    let k =
        plugin.info.cuda_kernels.as_ref().with_context(|| format!("plugin {name} ships no CUDA kernels"))?;
    let kernels = gpu::compile(&name, k, cd)?;
    let stream = cd.cuda_stream();
    let seed = seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    let copy_gb_per_s = copy_bandwidth(cd, repeats)?;
    tracing::info!("device-to-device copy: {copy_gb_per_s:.0} GB/s");

    // Correctness: the timed shapes plus shapes that take the scalar path (cols % 8 != 0),
    // a partial last block, a row count that is not a multiple of 8, and one the wide matvec
    // (cols % 32 == 0) takes with a partial last block of rows.
    let mut check_shapes: Vec<(usize, usize)> = shapes.to_vec();
    check_shapes.extend([(37, 100), (13, 72), (3, 1000), (37, 96)]);
    let (mut checks, mut skipped) = (vec![], vec![]);
    for (i, &(rows, cols)) in check_shapes.iter().enumerate() {
        if i >= shapes.len() {
            if let Err(e) = q.packed_size(rows, cols) {
                tracing::info!("check {rows}×{cols}: skipped, the plugin refuses it: {e:#}");
                skipped.push(format!("{rows}×{cols}: {e:#}"));
                continue;
            }
        }
        let s = seed.wrapping_add(i as u64 * 1_000_003);
        let w = synthetic_weights(s, rows * cols, 0.02);
        let packed = q.quantize("check", rows, cols, &w, calibration_for(q, cols)?.as_ref())?;
        let reference = q.dequantize(&packed)?;
        let pl = PackedLinear::upload(&packed, &kernels, cd)?;
        let n = rows * cols;
        let mut out = poisoned(cd, n)?;
        pl.launch_dequantize(&mut out)?;
        let got = cd.clone_dtoh(&out)?;
        let (mut mismatches, mut unwritten) = (0, 0);
        for (g, r) in got.iter().zip(&reference) {
            let want = bf16::from_f32(*r);
            if g.to_bits() == 0xffff && want.to_bits() != 0xffff {
                unwritten += 1;
            } else if g.to_bits() != want.to_bits() && !(g.is_nan() && want.is_nan()) {
                mismatches += 1;
            }
        }
        let mut rel = vec![];
        let mut mv_unwritten = 0;
        let max_b = pl.target().max_batch();
        let batches: Vec<usize> = (1..=max_b.min(gpu::MATVEC_MAX_BATCH))
            .chain([9, 16, 33, 64].into_iter().filter(|&b| b <= max_b))
            .collect();
        for &b in &batches {
            let x = random_bf16(s ^ (b as u64 * 7919), b * cols);
            let xd = cd.clone_htod(&x)?;
            let mut y = poisoned(cd, b * rows)?;
            pl.launch_matvec(&xd.slice(..), &mut y, b)?;
            let y = cd.clone_dtoh(&y)?;
            // (squared error, squared reference, unwritten) per output, rows in parallel.
            let per: Vec<(f64, f64, usize)> = (0..b * rows)
                .into_par_iter()
                .map(|o| {
                    let (bi, r) = (o / rows, o % rows);
                    let want: f64 =
                        (0..cols).map(|c| x[bi * cols + c].to_f64() * reference[r * cols + c] as f64).sum();
                    let g = y[bi * rows + r];
                    let gf = g.to_f64();
                    let e = if gf.is_finite() { (gf - want).powi(2) } else { f64::INFINITY };
                    (e, want * want, usize::from(g.to_bits() == 0xffff))
                })
                .collect();
            mv_unwritten += per.iter().map(|p| p.2).sum::<usize>();
            let (num, den) = per.iter().fold((0f64, 0f64), |(n, d), p| (n + p.0, d + p.1));
            rel.push((num / den.max(1e-300)).sqrt());
        }
        let passed = mismatches == 0 && unwritten == 0 && mv_unwritten == 0 && rel.iter().all(|e| *e <= 1e-2);
        tracing::info!("check {rows}×{cols}: dequantize mismatches {mismatches}, unwritten {unwritten}; matvec rel err {rel:?} → {}", if passed { "ok" } else { "FAILED" });
        checks.push(KernelCheck {
            rows,
            cols,
            dequantize_mismatches: mismatches,
            dequantize_unwritten: unwritten,
            matvec_batches: batches,
            matvec_rel_err: rel,
            matvec_unwritten: mv_unwritten,
            passed,
        });
    }

    // Timing, rotating over copies so that the working set is ≥ 256 MB (the L2 is 50 MB).
    let mut timings = vec![];
    let frac = |bytes: u64, s: &Spread| {
        (bytes as f64 / s.median / 1e9, bytes as f64 / s.median / 1e9 / copy_gb_per_s)
    };
    for &(rows, cols) in shapes.iter() {
        let w = synthetic_weights(seed ^ 0xABCD, rows * cols, 0.02);
        let packed = q.quantize("bench", rows, cols, &w, calibration_for(q, cols)?.as_ref())?;
        let packed_bytes = packed.bytes();
        let copies = (256u64 << 20).div_ceil(packed_bytes).clamp(2, 64) as usize;
        let pls: Vec<PackedLinear> =
            (0..copies).map(|_| PackedLinear::upload(&packed, &kernels, cd)).collect::<Result<_>>()?;
        let iters = copies * 4;
        let n = rows * cols;
        // The outputs rotate too: one 33.5 MB output rewritten every launch stays in the 50 MB
        // L2 and the writes never reach HBM (issue 13's review).
        let ocopies = (256u64 << 20).div_ceil(2 * n as u64).clamp(2, 16) as usize;
        let mut outs: Vec<CudaSlice<bf16>> =
            (0..ocopies).map(|_| cd.alloc_zeros::<bf16>(n)).collect::<candle_core::Result<_>>()?;
        let s = time_launches(&stream, repeats, iters, |i| {
            Ok(pls[i % copies].launch_dequantize(&mut outs[i % ocopies])?)
        })?;
        let bytes = packed_bytes + 2 * n as u64;
        let (g, f) = frac(bytes, &s);
        timings.push(KernelTiming {
            kernel: "dequantize".into(),
            rows,
            cols,
            batch: 0,
            bytes,
            seconds: s,
            gb_per_s: g,
            fraction_of_copy_bw: f,
        });
        drop(outs);
        // cuBLAS over the same weights in bf16 (the GEMM the dense path's matmul runs), called
        // directly into a preallocated output as the plugin's matvec writes into one: through
        // candle each call also allocated its output (issue 13's review).
        let dense_bytes = 2 * n as u64;
        let dcopies = (256u64 << 20).div_ceil(dense_bytes).clamp(2, 64) as usize;
        let wb: Vec<bf16> = w.iter().map(|v| bf16::from_f32(*v)).collect();
        let dense: Vec<CudaSlice<bf16>> =
            (0..dcopies).map(|_| cd.clone_htod(&wb)).collect::<candle_core::Result<_>>()?;
        drop(wb);
        let blas = cd.cublas_handle();
        for &b in batches.iter() {
            let x = random_bf16(seed ^ b as u64, b * cols);
            if b <= pls[0].target().max_batch() {
                let xd = cd.clone_htod(&x)?;
                let mut y = cd.alloc_zeros::<bf16>(b * rows)?;
                let xv = xd.slice(..);
                let s = time_launches(&stream, repeats, iters, |i| {
                    Ok(pls[i % copies].launch_matvec(&xv, &mut y, b)?)
                })?;
                let bytes = packed_bytes + 2 * (b * (rows + cols)) as u64;
                let (g, f) = frac(bytes, &s);
                let mma = pls[0].target().uses_mma(b);
                timings.push(KernelTiming {
                    kernel: if mma { "matvec-mma" } else { "matvec" }.into(),
                    rows,
                    cols,
                    batch: b,
                    bytes,
                    seconds: s,
                    gb_per_s: g,
                    fraction_of_copy_bw: f,
                });
            }
            let xd = cd.clone_htod(&x)?;
            let mut y = cd.alloc_zeros::<bf16>(b * rows)?;
            let s = time_launches(&stream, repeats, dcopies * 4, |i| {
                dense_matvec(&blas, &dense[i % dcopies], &xd, &mut y, rows, cols, b)
            })?;
            let bytes = dense_bytes + 2 * (b * (rows + cols)) as u64;
            let (g, f) = frac(bytes, &s);
            timings.push(KernelTiming {
                kernel: "cublas-bf16".into(),
                rows,
                cols,
                batch: b,
                bytes,
                seconds: s,
                gb_per_s: g,
                fraction_of_copy_bw: f,
            });
        }
    }
    let all_passed = checks.iter().all(|c| c.passed);
    if !all_passed {
        tracing::error!("plugin {name}: a kernel check failed (see checks in the report)");
    }
    let props = cd.cuda_stream().context().name().unwrap_or_else(|_| "CUDA device".into());
    Ok(KernelReport {
        method: name,
        options,
        device: props,
        arch: gpu::arch(cd)?,
        ptx: kernels.origin.clone(),
        seed,
        copy_gb_per_s,
        checks,
        timings,
        all_passed,
        skipped,
    })
}

/// `y` (b × rows) = `x` (b × cols) · Wᵀ for row-major bf16 `w` (rows × cols), f32 accumulation:
/// in cuBLAS's column-major terms yᵀ = op(W)·xᵀ with W read transposed (lda = cols).
fn dense_matvec(
    blas: &CudaBlas,
    w: &CudaSlice<bf16>,
    x: &CudaSlice<bf16>,
    y: &mut CudaSlice<bf16>,
    rows: usize,
    cols: usize,
    b: usize,
) -> Result<()> {
    let cfg = GemmConfig {
        transa: cublasOperation_t::CUBLAS_OP_T,
        transb: cublasOperation_t::CUBLAS_OP_N,
        m: rows as i32,
        n: b as i32,
        k: cols as i32,
        alpha: bf16::ONE,
        lda: cols as i32,
        ldb: cols as i32,
        beta: bf16::ZERO,
        ldc: rows as i32,
    };
    // SAFETY: the buffers hold rows·cols, b·cols and b·rows elements, as cfg describes.
    unsafe { blas.gemm(cfg, w, x, y) }.map_err(|e| anyhow::anyhow!("cuBLAS gemm: {e:?}"))
}

/// The report as a table for the terminal.
pub fn print_table(r: &KernelReport) {
    println!(
        "{} {} on {} ({}), copy {:.0} GB/s, seed {}",
        r.method, r.options, r.device, r.arch, r.copy_gb_per_s, r.seed
    );
    for c in &r.checks {
        let worst = c.matvec_rel_err.iter().cloned().fold(0f64, f64::max);
        println!(
            "  check {:>5}×{:<5} dequantize {} mismatches, {} unwritten; matvec worst rel err {:.1e}, {} unwritten: {}",
            c.rows, c.cols, c.dequantize_mismatches, c.dequantize_unwritten, worst, c.matvec_unwritten, if c.passed { "ok" } else { "FAILED" }
        );
    }
    for s in &r.skipped {
        println!("  skip  {s}");
    }
    println!(
        "  {:<12} {:>11} {:>5} {:>10} {:>10} {:>8} {:>7}",
        "kernel", "shape", "batch", "MB", "µs", "GB/s", "of copy"
    );
    for t in &r.timings {
        println!(
            "  {:<12} {:>5}×{:<5} {:>5} {:>10.2} {:>10.2} {:>8.0} {:>6.0}%",
            t.kernel,
            t.rows,
            t.cols,
            t.batch,
            t.bytes as f64 / 1e6,
            t.seconds.median * 1e6,
            t.gb_per_s,
            100.0 * t.fraction_of_copy_bw
        );
    }
    if !r.all_passed {
        println!("  SOME CHECKS FAILED");
    }
}

/// Fail the command (after the report is written) when a check failed.
pub fn require_passed(r: &KernelReport) -> Result<()> {
    if !r.all_passed {
        bail!("plugin {}: its CUDA kernels disagree with its CPU dequantize (details above)", r.method);
    }
    Ok(())
}
