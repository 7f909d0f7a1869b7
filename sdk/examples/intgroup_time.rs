//! Times the int-group format's pack and dequantize on one layer shape, on all cores: the
//! part of a calibrated run's `quantize` phase after the method (every layer is packed by the
//! plugin and dequantized by the host before the next calibration pass). Prints a checksum of
//! the dequantized values so two builds can be compared for equal output.
//! `cargo run --release -p llq-sdk --features testing --example intgroup_time -- ROWS COLS`
use llq_sdk::quant::intgroup::{dequantize, rtn, IntGroupSpec};
use std::time::Instant;

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let [rows, cols] = args[..] else {
        eprintln!("usage: intgroup_time ROWS COLS");
        std::process::exit(2);
    };
    let mut next = llq_sdk::testing::uniform(0x7e57);
    let w: Vec<f32> = (0..rows * cols).map(|_| next() as f32).collect();
    let spec = IntGroupSpec { bits: 4, group_size: 128, sym: false, whole_row: false };
    let m = rtn(&w, rows, cols, spec);
    let (mut pack_s, mut deq_s) = (f64::MAX, f64::MAX);
    let mut out = vec![0f32; rows * cols];
    for _ in 0..5 {
        let t = Instant::now();
        let q = m.pack();
        pack_s = pack_s.min(t.elapsed().as_secs_f64());
        let t = Instant::now();
        dequantize(&llq_sdk::testing::view(rows, cols, &q), &mut out).expect("dequantize");
        deq_s = deq_s.min(t.elapsed().as_secs_f64());
    }
    let sum: f64 = out.iter().map(|&v| v as f64).sum();
    println!(
        "{rows}x{cols}: pack {:.1} ms, dequantize {:.1} ms (best of 5); checksum {sum:.6e}",
        pack_s * 1e3,
        deq_s * 1e3
    );
}
