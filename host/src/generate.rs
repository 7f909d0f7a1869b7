//! Running a model on task requests: greedy generation with a KV cache over left-padded
//! batches (stop sequences, EOS, token limit), log-likelihood of a continuation, and rolling
//! log-likelihood of a whole text in windows (lm-eval's scheme).

use crate::model::{Cache, Llama, MAX_POSITIONS};
use crate::results::logprobs;
use crate::tokenizer::Tokenizer;
use anyhow::{bail, Context, Result};
use candle_core::{DType, Tensor, D};

/// What one generation produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    pub text: String,
    pub prompt_tokens: usize,
    pub new_tokens: usize,
    /// Prompt tokens dropped from the left to fit the model (lm-eval's truncation).
    pub truncated: usize,
}

/// Index of the largest value; the lowest index wins ties (deterministic).
pub fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best as u32
}

/// Cut `text` before the earliest stop sequence; `None` when none occurs.
fn cut_at_stop(text: &str, stop: &[String]) -> Option<String> {
    stop.iter().filter_map(|s| text.find(s.as_str())).min().map(|i| text[..i].to_string())
}

/// Tokens decoded before the longest stop string's worth: decoders change text at the first
/// token of a slice (a UTF-8 character split across tokens, SentencePiece's dropped leading
/// space), so the stop must lie clear of it.
const STOP_MARGIN: usize = 4;

/// The text of a row's output `out` cut at its first stop string, once one has appeared;
/// called after each new token, so only a stop ending in that token can be new. Looks in the
/// decoded text of the last tokens only — as many as the longest stop has bytes (a token is
/// at least one byte) plus [`STOP_MARGIN`] — and decodes the whole output once a stop shows
/// there. Decoding the whole output every step was O(n²): at batch 8 and 256 new tokens it
/// cost 0.2–0.3 ms a step, 10–16% of `run`'s decode time on the H100
/// (results/h100/speed13/runbench).
pub fn stopped(tok: &Tokenizer, out: &[u32], stops: &[String]) -> Result<Option<String>> {
    if stops.is_empty() {
        return Ok(None);
    }
    let window = stops.iter().map(String::len).max().unwrap_or(0) + STOP_MARGIN;
    let tail = tok.decode(&out[out.len().saturating_sub(window)..])?;
    if !stops.iter().any(|s| tail.contains(s.as_str())) {
        return Ok(None);
    }
    Ok(cut_at_stop(&tok.decode(out)?, stops))
}

/// How decode steps run on a GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodePath {
    /// The captured step on a static cache with the greedy token chosen on the device
    /// (`model::graph`), where it supports the batch; else the eager step.
    Graph,
    /// The eager candle step (one launch per op, logits to the host every token).
    Eager,
}

/// What produced a generation's tokens after the prefill.
#[derive(Debug, Clone, PartialEq)]
pub enum StepsRan {
    Eager(String),
    Graph,
    /// The captured step's launches issued one by one (the capture failed).
    Direct(String),
}

/// The greedy next token of each row of `logits` (b, 1, vocab), on the host.
fn host_argmax(logits: &Tensor) -> Result<Vec<u32>> {
    Ok(logits.flatten_to(1)?.to_vec2::<f32>()?.iter().map(|r| argmax(r)).collect())
}

/// Captured decode steps kept across the generation batches of one run: a CoQA run at batch 8
/// had captured a graph and allocated a static cache for each of its 13 batches (issue 13). A
/// held step is reused by the next generation of the same batch size whose prefill and new
/// tokens fit its cache; caches are allocated rounded up to [`CAPACITY_STEP`] positions so
/// that batches of similar lengths share one. [`StepPool::default`] holds none (a fresh pool
/// per call gives the old behaviour).
#[derive(Default)]
pub struct StepPool<'m> {
    #[cfg(feature = "cuda")]
    held: Vec<crate::model::graph::GraphDecoder<'m>>,
    #[cfg(not(feature = "cuda"))]
    _model: std::marker::PhantomData<&'m ()>,
    /// Captured steps built so far (each allocates a cache and captures once).
    pub built: usize,
    /// Generations that reused a held one.
    pub reused: usize,
}

/// Static-cache capacities are rounded up to a multiple of this many positions.
pub const CAPACITY_STEP: usize = 256;

/// The steps after a prefill: the eager model, or the captured step on a GPU.
enum Stepper<'m> {
    Eager(Option<String>),
    #[cfg(feature = "cuda")]
    Graph(Box<crate::model::graph::GraphDecoder<'m>>, bool),
    #[cfg(not(feature = "cuda"))]
    #[allow(dead_code)]
    Never(std::marker::PhantomData<&'m ()>),
}

impl<'m> Stepper<'m> {
    fn new(
        model: &'m Llama,
        path: DecodePath,
        batch: usize,
        capacity: usize,
        pool: &mut StepPool<'m>,
    ) -> Result<Self> {
        if path == DecodePath::Eager || model.device.is_cpu() {
            return Ok(Stepper::Eager(None));
        }
        #[cfg(feature = "cuda")]
        {
            use crate::model::graph::{GraphDecoder, MAX_CAPACITY};
            if let Some(why) = GraphDecoder::supports(model, batch, capacity) {
                return Ok(Stepper::Eager(Some(why)));
            }
            let fits = |g: &GraphDecoder| g.batch() == batch && g.capacity() >= capacity;
            if let Some(i) = pool.held.iter().position(fits) {
                pool.reused += 1;
                return Ok(Stepper::Graph(Box::new(pool.held.swap_remove(i)), false));
            }
            // A held step of this batch size is too short: free its cache before allocating.
            pool.held.retain(|g| g.batch() != batch);
            // Rounded up where the static cache allows it (`supports` checked `capacity`).
            let rounded = capacity.next_multiple_of(CAPACITY_STEP).min(MAX_CAPACITY).max(capacity);
            pool.built += 1;
            Ok(Stepper::Graph(Box::new(GraphDecoder::new(model, batch, rounded)?), false))
        }
        #[cfg(not(feature = "cuda"))]
        {
            let _ = (batch, capacity, pool);
            Ok(Stepper::Eager(None))
        }
    }

    /// Hand a captured step back to `pool` for the next generation of its batch size (one
    /// held per batch size: the newest replaces an older one).
    fn release(self, pool: &mut StepPool<'m>) {
        #[cfg(feature = "cuda")]
        if let Stepper::Graph(g, _) = self {
            pool.held.retain(|h| h.batch() != g.batch());
            pool.held.push(*g);
        }
        #[cfg(not(feature = "cuda"))]
        let _ = (self, pool);
    }

    /// Feed `tokens` (one a row) and return the next greedy tokens.
    fn next(&mut self, model: &Llama, tokens: &[u32], pad: &[usize], cache: &mut Cache) -> Result<Vec<u32>> {
        match self {
            Stepper::Eager(_) => {
                let feed: Vec<Vec<u32>> = tokens.iter().map(|&t| vec![t]).collect();
                host_argmax(&model.step(&feed, pad, cache, true)?)
            }
            #[cfg(feature = "cuda")]
            Stepper::Graph(g, started) => {
                if !*started {
                    g.start(cache, pad, tokens)?;
                    *started = true;
                }
                g.step()?;
                g.tokens()
            }
            #[cfg(not(feature = "cuda"))]
            Stepper::Never(_) => unreachable!("no graph steps without CUDA"),
        }
    }

    fn ran(&self) -> StepsRan {
        match self {
            Stepper::Eager(why) => StepsRan::Eager(why.clone().unwrap_or_default()),
            #[cfg(feature = "cuda")]
            Stepper::Graph(g, _) => match g.launch_mode() {
                crate::model::graph::Launch::Graph => StepsRan::Graph,
                crate::model::graph::Launch::Direct(why) => StepsRan::Direct(why.clone()),
            },
            #[cfg(not(feature = "cuda"))]
            Stepper::Never(_) => unreachable!("no graph steps without CUDA"),
        }
    }
}

/// Greedy generation for a batch of prompts (already tokenized), each with its own stop
/// sequences and token limit. Rows are left-padded to a common length.
pub fn generate(
    model: &Llama,
    tok: &Tokenizer,
    prompts: &[Vec<u32>],
    stops: &[Vec<String>],
    max_new: &[usize],
    eos: &[u32],
) -> Result<Vec<Generated>> {
    Ok(generate_with(model, tok, prompts, stops, max_new, eos, DecodePath::Eager, &mut StepPool::default())?
        .0)
}

/// Where one generation's model time went: the prefill (to its greedy tokens on the host),
/// then the decode loop (every step's tokens back on the host, the stop checks between
/// steps included: what `run` spends per token), with the context each step attended to.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct GenerationTime {
    pub prefill_s: f64,
    pub decode_s: f64,
    /// Decode steps run, each one token for every row.
    pub decode_steps: usize,
    /// Σ over those steps of the positions already in the cache when the step ran (its
    /// context, as `llq-host bench` counts it).
    pub context_sum: usize,
}

impl GenerationTime {
    pub fn add(&mut self, o: &GenerationTime) {
        self.prefill_s += o.prefill_s;
        self.decode_s += o.decode_s;
        self.decode_steps += o.decode_steps;
        self.context_sum += o.context_sum;
    }
}

/// [`generate`] with the decode steps run as `path` says, reusing a captured step held in
/// `pool` where one fits; returns what ran them and where the time went.
#[allow(clippy::too_many_arguments)]
pub fn generate_with<'m>(
    model: &'m Llama,
    tok: &Tokenizer,
    prompts: &[Vec<u32>],
    stops: &[Vec<String>],
    max_new: &[usize],
    eos: &[u32],
    path: DecodePath,
    pool: &mut StepPool<'m>,
) -> Result<(Vec<Generated>, StepsRan, GenerationTime)> {
    let b = prompts.len();
    if b == 0 {
        return Ok((vec![], StepsRan::Eager(String::new()), GenerationTime::default()));
    }
    if prompts.iter().any(|p| p.is_empty()) {
        bail!("a prompt encodes to no tokens");
    }
    let limit = model.cfg.max_position_embeddings.min(MAX_POSITIONS);
    let budget = max_new.iter().copied().max().unwrap_or(0);
    if budget >= limit {
        bail!("max new tokens {budget} leaves no room for a prompt in the model's {limit} positions");
    }
    // Like lm-eval: keep the last (positions − max new tokens) prompt tokens.
    let keep = limit - budget;
    let truncated: Vec<usize> = prompts.iter().map(|p| p.len().saturating_sub(keep)).collect();
    let prompts: Vec<&[u32]> = prompts.iter().zip(&truncated).map(|(p, &t)| &p[t..]).collect();
    let longest = prompts.iter().map(|p| p.len()).max().unwrap_or(0);
    let pad: Vec<usize> = prompts.iter().map(|p| longest - p.len()).collect();
    let rows: Vec<Vec<u32>> = prompts
        .iter()
        .map(|p| std::iter::repeat_n(0u32, longest - p.len()).chain(p.iter().copied()).collect())
        .collect();
    let steps = budget.min(limit - longest);
    let mut stepper = Stepper::new(model, path, b, longest + steps, pool)?;
    let mut cache = model.new_cache();
    let mut time = GenerationTime::default();
    let t = std::time::Instant::now();
    let mut next = host_argmax(&model.step(&rows, &pad, &mut cache, true)?)?;
    time.prefill_s = t.elapsed().as_secs_f64();
    let t = std::time::Instant::now();
    let mut out: Vec<Vec<u32>> = vec![vec![]; b];
    let mut text: Vec<Option<String>> = vec![None; b];
    for step in 0..steps {
        for r in 0..b {
            if text[r].is_some() {
                continue;
            }
            let t = next[r];
            if eos.contains(&t) {
                text[r] = Some(tok.decode(&out[r])?);
                continue;
            }
            out[r].push(t);
            if let Some(cut) = stopped(tok, &out[r], &stops[r])? {
                text[r] = Some(cut);
            } else if out[r].len() >= max_new[r] {
                text[r] = Some(tok.decode(&out[r])?);
            }
        }
        if text.iter().all(Option::is_some) || step + 1 == budget {
            break;
        }
        // Finished rows are fed their last token (their outputs are no longer read).
        next = stepper.next(model, &next, &pad, &mut cache)?;
        time.decode_steps += 1;
        time.context_sum += longest + step;
    }
    time.decode_s = t.elapsed().as_secs_f64();
    let ran = stepper.ran();
    stepper.release(pool);
    let generated = (0..b)
        .map(|r| {
            let text = match text[r].take() {
                Some(t) => t,
                None => tok.decode(&out[r])?,
            };
            Ok(Generated {
                text,
                prompt_tokens: prompts[r].len(),
                new_tokens: out[r].len(),
                truncated: truncated[r],
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((generated, ran, time))
}

/// Log-probabilities of `targets[i]` after `inputs[..=i]`, one forward pass, plus whether
/// each target was the argmax.
fn score_tokens(model: &Llama, inputs: &[u32], targets: &[u32]) -> Result<(Vec<f64>, Vec<bool>)> {
    let mut cache = model.new_cache();
    let logits = model.step(&[inputs.to_vec()], &[0], &mut cache, false)?;
    let rows = log_softmax_rows(&logits)?;
    let n = targets.len();
    let first = rows.len() - n;
    let mut lps = Vec::with_capacity(n);
    let mut greedy = Vec::with_capacity(n);
    for (i, &t) in targets.iter().enumerate() {
        let row = &rows[first + i];
        lps.push(row[t as usize] as f64);
        greedy.push(argmax(row) == t);
    }
    Ok((lps, greedy))
}

/// log P(continuation | context): (sum of log-probs, greedy, continuation tokens).
pub fn loglikelihood(
    model: &Llama,
    tok: &Tokenizer,
    context: &str,
    continuation: &str,
) -> Result<(f64, bool, usize)> {
    let ctx = tok.encode(context)?;
    let whole = tok.encode(&format!("{context}{continuation}"))?;
    // Split where the context's tokens end if they are a prefix, else encode apart.
    let cont: Vec<u32> = if whole.starts_with(&ctx) && whole.len() > ctx.len() {
        whole[ctx.len()..].to_vec()
    } else {
        tok.encode_plain(continuation)?
    };
    if cont.is_empty() {
        bail!("the continuation encodes to no tokens");
    }
    // The first continuation token is predicted from the context's last token (or BOS): with
    // neither there is nothing to predict it from.
    if ctx.is_empty() {
        bail!("log-likelihood with an empty context needs a BOS token, and this tokenizer adds none");
    }
    let mut input = ctx.clone();
    input.extend_from_slice(&cont[..cont.len() - 1]);
    let (lps, greedy) = score_tokens(model, &input, &cont)?;
    Ok((lps.iter().sum(), greedy.iter().all(|&g| g), cont.len()))
}

/// Per-token results of a rolling log-likelihood.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rolling {
    pub logprobs: Vec<f64>,
    /// KL(baseline ‖ model) per token, when a baseline model is given.
    pub kl: Vec<f64>,
    /// 1 where the model's argmax equals the baseline's.
    pub top1_agree: Vec<u8>,
}

/// Log-probabilities (f32, on the model's device) at the last `n` positions of one forward
/// pass over `inputs`: (n, vocab). Nothing of vocabulary size leaves the device.
fn last_log_probs(model: &Llama, inputs: &[u32], n: usize) -> Result<Tensor> {
    let logits = model.step(&[inputs.to_vec()], &[0], &mut model.new_cache(), false)?;
    let t = logits.dim(1)?;
    let last = logits.squeeze(0)?.narrow(0, t - n, n)?.to_dtype(DType::F32)?;
    Ok(candle_nn::ops::log_softmax(&last, D::Minus1)?)
}

/// The window `rolling` uses for a requested `window`: at most the model's positions, at
/// least 2.
pub fn rolling_window(cfg: &crate::model::Config, window: usize) -> usize {
    window.min(cfg.max_position_embeddings.min(MAX_POSITIONS)).max(2)
}

/// The distributions KL is measured against, if any.
pub enum Baseline<'a> {
    None,
    /// The same model unquantized, run here: exact KL.
    Model(&'a Llama),
    /// The unquantized model's distributions stored by an earlier run (`--save-logprobs`),
    /// u16-encoded as llama.cpp's KL base file: within 1.2e-4 nats per log-prob.
    Stored(logprobs::Reader),
}

/// Rolling log-likelihood of `text` (lm-eval's `loglikelihood_rolling`): every token is
/// predicted once, in windows of at most `window` tokens; the first is conditioned on BOS
/// (when the tokenizer has one), later windows on the tokens just before them. With a
/// `baseline`, also the per-token KL divergence KL(P_baseline ‖ P_model) over the whole
/// vocabulary and top-1 agreement; with `save`, every scored token's distribution is written
/// (for later runs' `Baseline::Stored`).
pub fn rolling(
    model: &Llama,
    mut baseline: Baseline,
    tok: &Tokenizer,
    text: &str,
    window: usize,
    mut save: Option<&mut logprobs::Writer>,
) -> Result<Rolling> {
    let prefix = tok.bos();
    let toks = tok.encode_long(text)?;
    if toks.is_empty() {
        bail!("the text encodes to no tokens");
    }
    let window = rolling_window(&model.cfg, window);
    let mut out = Rolling::default();
    let mut done = 0usize;
    while done < toks.len() {
        let end = (done + window).min(toks.len());
        let (inputs, targets): (Vec<u32>, &[u32]) = if done == 0 {
            match prefix {
                Some(b) => {
                    (std::iter::once(b).chain(toks[..end - 1].iter().copied()).collect(), &toks[..end])
                }
                // No BOS: the first token cannot be predicted; score from the second.
                None => {
                    if toks.len() < 2 {
                        bail!("the text is a single token and the tokenizer has no BOS to condition it on");
                    }
                    let end = end.max(2);
                    (toks[..end - 1].to_vec(), &toks[1..end])
                }
            }
        } else {
            let start = end.saturating_sub(window + 1);
            (toks[start..end - 1].to_vec(), &toks[done..end])
        };
        let lq = last_log_probs(model, &inputs, targets.len())?;
        let idx = Tensor::new(targets, lq.device())?.unsqueeze(1)?;
        let lp: Vec<f32> = lq.gather(&idx, 1)?.squeeze(1)?.to_vec1()?;
        out.logprobs.extend(lp.into_iter().map(f64::from));
        if let Some(w) = save.as_deref_mut() {
            w.write(targets, &lq.flatten_all()?.to_vec1::<f32>()?)?;
        }
        let lb = match &mut baseline {
            Baseline::None => None,
            Baseline::Model(base) => {
                Some(last_log_probs(base, &inputs, targets.len())?.to_device(lq.device())?)
            }
            Baseline::Stored(r) => Some(
                Tensor::from_vec(r.next(targets)?, lq.dims(), &candle_core::Device::Cpu)?
                    .to_device(lq.device())?,
            ),
        };
        if let Some(lb) = lb {
            // KL(P_base ‖ P_model) per token over the whole vocabulary, summed in f64.
            let (b64, q64) = (lb.to_dtype(DType::F64)?, lq.to_dtype(DType::F64)?);
            let kl: Vec<f64> = (b64.exp()? * (&b64 - &q64)?)?.sum(1)?.to_vec1()?;
            out.kl.extend(kl.into_iter().map(|k| k.max(0.0)));
            let agree: Vec<u8> = lq.argmax(1)?.eq(&lb.argmax(1)?)?.to_vec1()?;
            out.top1_agree.extend(agree);
        }
        done = end;
    }
    if let Baseline::Stored(r) = baseline {
        r.finish()?;
    }
    Ok(out)
}

/// Log-softmax over the last dimension, in f32 on the host: (rows, vocab) → rows of log-probs.
pub fn log_softmax_rows(logits: &Tensor) -> Result<Vec<Vec<f32>>> {
    let v = logits.to_dtype(DType::F32)?;
    let dims = v.dims().to_vec();
    let vocab = *dims.last().context("logits without dimensions")?;
    let rows: Vec<f32> = v.flatten_all()?.to_vec1()?;
    Ok(rows
        .chunks(vocab)
        .map(|r| {
            let m = r.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let lse = m + r.iter().map(|x| (x - m).exp()).sum::<f32>().ln();
            r.iter().map(|x| x - lse).collect()
        })
        .collect())
}
