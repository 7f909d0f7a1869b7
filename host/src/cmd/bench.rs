//! `llq-host bench`: prefill and decode speed of a model, optionally quantized.

use super::args::{CalibArgs, DecodeArg, MaybePluginArgs};
use crate::bench::model::{model_bench, ModelBenchReport, ModelBenchSettings, PrefillAb};
use crate::util::fs::write_json;
use crate::util::par::default_threads;
use anyhow::{bail, Result};
use std::path::PathBuf;

/// Prefill and decode speed of a model, optionally quantized (CPU or GPU).
#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(long)]
    pub model: String,
    #[command(flatten)]
    pub plugin: MaybePluginArgs,
    /// Prompt lengths for prefill, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "128,512")]
    pub prompt_lens: Vec<usize>,
    /// Batch sizes for decode, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,4")]
    pub batch_sizes: Vec<usize>,
    /// Decode steps timed per repeat.
    #[arg(long, default_value_t = 16)]
    pub decode_steps: usize,
    /// Prompt tokens before decode (the cache then grows by `--decode-steps`): set it to a
    /// `run`'s `timing.generation[].mean_context` minus half the steps to compare the two.
    #[arg(long, default_value_t = 128)]
    pub context: usize,
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    #[arg(long)]
    pub threads: Option<usize>,
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// cpu, cuda, cuda:N, or auto.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Decode step paths to time, comma-separated: `eager` (candle, a launch per op) and
    /// `graph` (the captured step on a static cache that `run --decode graph` uses; GPU,
    /// batches ≤ 8). Each batch size runs through each, in the order given.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "eager,graph")]
    pub decode: Vec<DecodeArg>,
    /// Skip the accuracy checks that run beside the timings (GPU logits vs the CPU model, the
    /// prefill attention kernel vs f32 attention, each prefill again through candle's ops
    /// alone and with the element-wise kernels flipped): for a profiler that should see only
    /// the timed work.
    #[arg(long)]
    pub no_checks: bool,
    #[command(flatten)]
    pub calib: CalibArgs,
}

pub fn main(a: Args) -> Result<()> {
    if a.repeats == 0
        || a.decode_steps == 0
        || a.context == 0
        || a.prompt_lens.contains(&0)
        || a.batch_sizes.contains(&0)
    {
        bail!("--repeats, --decode-steps, --context, --prompt-lens and --batch-sizes must be positive");
    }
    let plugin = a.plugin.load()?;
    let q = a.plugin.configure(plugin.as_ref())?;
    if a.plugin.native && a.calib.given() {
        bail!("--native runs the file's quantization as stored: drop the --calib-* options");
    }
    let calibration = if a.plugin.native { None } else { a.calib.resolve(q.as_ref())? };
    let settings = ModelBenchSettings {
        prompt_lens: a.prompt_lens,
        batch_sizes: a.batch_sizes,
        decode_steps: a.decode_steps,
        context: a.context,
        repeats: a.repeats,
        threads: default_threads(a.threads),
        device: a.device,
        calibration,
        layer_opts: a.plugin.all_layer_opts()?,
        native: a.plugin.native,
        decode_paths: a.decode.iter().map(|d| d.path()).collect(),
        checks: !a.no_checks,
    };
    let r = model_bench(&a.model, q.as_ref(), &settings)?;
    print_report(&r);
    if let Some(out) = a.out {
        write_json(&out, &r)?;
    }
    Ok(())
}

fn print_report(r: &ModelBenchReport) {
    println!("{} [{}] {} {} on {}", r.model, r.precision, r.method, r.options, r.device);
    if let Some(n) = &r.numerics {
        println!("  {} is measured {n}", r.method);
    }
    if !r.checks {
        println!("  accuracy checks skipped (--no-checks)");
    }
    if let Some(e) = r.logits_rel_err_vs_cpu {
        println!("  logits vs the CPU f32 model (32-token prompt): max relative error {e:.2e}");
    }
    if let Some(e) = r.padded_logits_rel_err_vs_cpu {
        println!("  logits vs the CPU f32 model (a batch of 32 and 20 tokens, left-padded): max relative error {e:.2e}");
    }
    if let Some(d) = r.dequantize_all_s {
        println!("  dequantize all layers once: {:.1} ms (per-call dequantization would add this to every forward)", d * 1e3);
    }
    for p in &r.prefill {
        let s = &p.seconds;
        println!(
            "  prefill {:>5} tokens: {:8.1} ms (min {:.1}, max {:.1}) = {:7.1} tok/s",
            p.prompt_tokens,
            s.median * 1e3,
            s.min * 1e3,
            s.max * 1e3,
            p.tokens_per_s
        );
        let ab = |what: &str, u: &PrefillAb| {
            println!(
                "    {what}: {:8.1} ms (min {:.1}, max {:.1}); logits vs the row's {:.2e}, greedy {}",
                u.seconds.median * 1e3,
                u.seconds.min * 1e3,
                u.seconds.max * 1e3,
                u.logits_rel_err,
                if u.greedy_agrees { "agrees" } else { "differs" }
            )
        };
        if let Some(f) = &p.fusion {
            println!(
                "    fused kernels: attention {}, element-wise (q/k/v RoPE, SwiGLU) {}",
                if f.attention { "on" } else { "off" },
                if f.pointwise { "on" } else { "off" }
            );
        }
        if let Some(u) = &p.unfused {
            ab("candle's ops alone (no fused kernel)", u);
        }
        if let Some(u) = &p.pointwise_flipped {
            ab(if u.fusion.pointwise { "element-wise kernels on" } else { "element-wise kernels off" }, u);
        }
    }
    for c in &r.prefill_attention_check {
        println!(
            "  fused prefill attention vs f32 attention: {} rows, {}/{} heads, {} queries after {}, d {}, pad {:?}: max relative error {:.2e} {}",
            c.rows,
            c.heads,
            c.kv_heads,
            c.queries,
            c.cached,
            c.head_dim,
            c.pad,
            c.max_rel_err,
            if c.passed { "ok" } else { "FAILED" }
        );
    }
    for d in &r.decode {
        let roof = d
            .roofline_fraction
            .map(|f| {
                format!(", {:.0}% of the {:.2} ms roofline", 100.0 * f, d.roofline_s.unwrap_or(0.0) * 1e3)
            })
            .unwrap_or_default();
        let s = &d.step_seconds;
        let check = d
            .logits_rel_err_vs_eager
            .map(|e| {
                let agree = if d.greedy_agrees_with_eager == Some(true) { "same" } else { "DIFFERENT" };
                let argmax = match d.device_argmax_agrees {
                    Some(false) => "; device argmax DIFFERS from the host's",
                    _ => "",
                };
                format!("; vs eager: logits {e:.1e}, {agree} greedy tokens{argmax}")
            })
            .unwrap_or_default();
        println!(
            "  decode batch {:>3} (context {}, {}): {:7.2} ms/step (min {:.2}, max {:.2}) = {:7.1} tok/s{roof}{check}",
            d.batch,
            d.context,
            d.path,
            s.median * 1e3,
            s.min * 1e3,
            s.max * 1e3,
            d.tokens_per_s
        );
        if let (Some(p), Some(k)) = (d.programmatic, &d.step_kernels) {
            println!("      programmatic launches {}; attention {k}", if p { "on" } else { "off" });
        }
        for a in &d.ab {
            println!(
                "      vs {}, {} interleaved rounds: {:.3} (row) vs {:.3} ms/step, \
                 difference {:+.3} ms [{:+.3}, {:+.3}], sign-flip p {:.3}; first step's logits {:.1e} (relative), \
                 after the same steps max |Δ| {:.1e}, tokens {}",
                a.other,
                a.pairs,
                a.row_step_seconds.median * 1e3,
                a.step_seconds.median * 1e3,
                a.paired_diff_s * 1e3,
                a.paired_diff_lo_s * 1e3,
                a.paired_diff_hi_s * 1e3,
                a.sign_flip_p,
                a.first_step_logits_rel_err,
                a.logits_max_abs_diff,
                if a.tokens_agree { "agree" } else { "DIFFER" }
            );
        }
        if !d.step_profile.is_empty() {
            let parts: Vec<String> =
                d.step_profile.iter().map(|p| format!("{} {:.0} µs", p.what, p.seconds * 1e6)).collect();
            println!("      device time per step: {}", parts.join(", "));
        }
    }
    for n in &r.decode_notes {
        println!("  no decode row for {n}");
    }
    if let (Some(m), Some(p)) = (r.device_memory_bytes, r.peak_device_memory_bytes) {
        println!(
            "  device memory: {:.2} GB after loading, {:.2} GB at peak (sampled after each case)",
            m as f64 / 1e9,
            p as f64 / 1e9
        );
    }
    if let (Some(m), Some(p)) = (r.allocated_after_load_bytes, r.peak_allocated_bytes) {
        println!(
            "  allocated (memory pool): {:.3} GB after loading, {:.3} GB high-water mark",
            m as f64 / 1e9,
            p as f64 / 1e9
        );
    }
}
