//! Host time of `generate`'s per-step stop check, the old rule (decode each row's whole output
//! after every token) against `generate::stopped` (the last tokens only), on 8 rows × 256
//! tokens of held-out Gutenberg text with the Llama 3 tokenizer: the figure quoted in
//! docs/benchmarks.md ("run vs bench at equal batch and context").
//! `make models data && cargo run --release -p llq-host --example stop_cost`
use anyhow::{Context, Result};
use llq_host::generate::stopped;
use llq_host::tokenizer::Tokenizer;
use std::path::Path;
use std::time::Instant;

fn main() -> Result<()> {
    let tok =
        Tokenizer::from_file(Path::new("models/llama-3.2/tokenizer.json")).context("run `make models`")?;
    let text = std::fs::read_to_string("data/gutenberg/evaluation.txt").context("run `make data`")?;
    let ids = tok.encode_plain(&text[..200_000])?;
    let stops: Vec<String> = vec!["\n\n".into(), "Q:".into()];
    let (rows, steps) = (8, 256);
    let outputs: Vec<&[u32]> = (0..rows).map(|r| &ids[r * 1000..r * 1000 + steps]).collect();
    let t = Instant::now();
    for out in &outputs {
        for s in 1..=steps {
            let full = tok.decode(&out[..s])?;
            std::hint::black_box(stops.iter().filter_map(|x| full.find(x.as_str())).min());
        }
    }
    let old = t.elapsed().as_secs_f64();
    let t = Instant::now();
    for out in &outputs {
        for s in 1..=steps {
            std::hint::black_box(stopped(&tok, &out[..s], &stops)?);
        }
    }
    let new = t.elapsed().as_secs_f64();
    let per_step = |x: f64| x / steps as f64 * 1e3;
    println!(
        "{rows} rows × {steps} steps: whole output decoded {:.3} ms/step, last tokens {:.3} ms/step",
        per_step(old),
        per_step(new)
    );
    Ok(())
}
