//! `llq-host quant-bench`: quantize + dequantize throughput of a plugin over the exact
//! weight-matrix shapes of Llama-3.2-1B.

use crate::model::config::{preset, EMBED};
use crate::plugin::QuantConfig;
use crate::util::par::par_map;
use crate::util::synth::synthetic_weights;
use anyhow::Result;
use serde::Serialize;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// Shapes (name, rows, cols) of every weight matrix of Llama-3.2-1B that bitsandbytes would
/// touch, plus the tied embedding/lm_head: 1,235,746,816 weights in all.
pub fn llama_3_2_1b_matrices() -> Result<Vec<(String, usize, usize)>> {
    let cfg = preset("llama-3.2-1b")?;
    let mut v = vec![(EMBED.to_string(), cfg.vocab_size, cfg.hidden_size)];
    v.extend(cfg.linear_layers());
    Ok(v)
}

#[derive(Debug, Serialize)]
pub struct QuantBenchReport {
    pub plugin: String,
    pub options: String,
    pub preset: String,
    pub matrices: usize,
    pub weights: u64,
    pub packed_bytes: u64,
    pub bits_per_weight: f64,
    pub threads: usize,
    pub quantize_s: f64,
    pub dequantize_s: f64,
    pub total_s: f64,
    pub weights_per_s: f64,
    pub max_abs_error: f32,
}

/// Quantize then dequantize every matrix, `threads` matrices at a time (largest first).
/// Weights are generated before the clock starts; quantize and dequantize are timed as two
/// separate phases over all matrices.
pub fn quant_bench(q: &QuantConfig, threads: usize) -> Result<QuantBenchReport> {
    let mut mats = llama_3_2_1b_matrices()?;
    mats.sort_by_key(|(_, r, c)| std::cmp::Reverse(r * c));
    let threads = threads.max(1);
    tracing::info!("generating {} synthetic matrices", mats.len());
    let weights: Vec<Vec<f32>> =
        par_map(threads, &mats, |i, (_, r, c)| Ok(synthetic_weights(i as u64 + 1, r * c, 0.02)))?;
    let t0 = Instant::now();
    let packed = par_map(threads, &mats, |i, (n, r, c)| q.quantize(n, *r, *c, &weights[i], None))?;
    let tq = t0.elapsed().as_secs_f64();
    // Dequantize is timed per call (busy time summed over threads, divided by the thread
    // count); the error check after each call stays outside the clock.
    let busy_ns = std::sync::atomic::AtomicU64::new(0);
    let errs = par_map(threads, &mats, |i, _| {
        let t = Instant::now();
        let d = q.dequantize(&packed[i])?;
        busy_ns.fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
        Ok(d.iter().zip(&weights[i]).fold(0f32, |m, (a, b)| m.max((a - b).abs())))
    })?;
    let td = busy_ns.into_inner() as f64 / 1e9 / threads as f64;
    let n: u64 = mats.iter().map(|(_, r, c)| (r * c) as u64).sum();
    let bytes: u64 = packed.iter().map(|p| p.bytes()).sum();
    Ok(QuantBenchReport {
        plugin: q.name().to_string(),
        options: q.canonical(),
        preset: "llama-3.2-1b".into(),
        matrices: mats.len(),
        weights: n,
        packed_bytes: bytes,
        bits_per_weight: bytes as f64 * 8.0 / n as f64,
        threads,
        quantize_s: tq,
        dequantize_s: td,
        total_s: tq + td,
        weights_per_s: n as f64 / (tq + td),
        max_abs_error: errs.into_iter().fold(0f32, f32::max),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_llama_3_2_1b_matrices_hold_the_published_count() {
        let m = super::llama_3_2_1b_matrices().unwrap();
        assert_eq!(m.iter().map(|(_, r, c)| (r * c) as u64).sum::<u64>(), 1_235_746_816);
    }
}
