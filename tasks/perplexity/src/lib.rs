//! The perplexity task for llq (`tasks/perplexity.wasm`): llama.cpp's practice for judging a
//! quantization without labels. The user's text (`--data FILE`, UTF-8) is split into
//! documents (`split=paragraph|line|none`); each becomes a `loglikelihood-rolling` request,
//! which the host scores over the whole document in context windows.
//!
//! Reported: token perplexity `exp(−Σ log p / N)` with its uncertainty (delta method:
//! ppl · stderr of the per-token NLL, as llama.cpp prints it), mean NLL per token, bits per
//! UTF-8 byte `−Σ log p / (bytes · ln 2)`. When the host ran a baseline model too (it then
//! fills `kl` and `top1-agree`), also mean KL divergence (± stderr), its maximum, and the
//! fraction of tokens whose top-1 prediction matches the baseline's.
use llq_task_sdk::*;

pub struct Perplexity;

/// Per-document sums a sample carries to `aggregate`.
const SUMS: &[&str] =
    &["nll_sum", "nll_sq_sum", "tokens", "bytes", "kl_sum", "kl_sq_sum", "kl_max", "kl_tokens", "top1_sum"];

/// Split the text into documents.
pub fn documents(text: &str, split: &str) -> Vec<String> {
    match split {
        "none" => vec![text.to_string()],
        "line" => text.lines().filter(|l| !l.trim().is_empty()).map(str::to_string).collect(),
        _ => {
            let mut docs = vec![];
            let mut cur = String::new();
            for line in text.lines() {
                if line.trim().is_empty() {
                    if !cur.is_empty() {
                        docs.push(std::mem::take(&mut cur));
                    }
                } else {
                    if !cur.is_empty() {
                        cur.push('\n');
                    }
                    cur.push_str(line);
                }
            }
            if !cur.is_empty() {
                docs.push(cur);
            }
            docs
        }
    }
}

fn sample_metrics(r: &RollingResult) -> Result<Vec<Metric>, String> {
    if r.token_logprobs.len() != r.tokens as usize {
        return Err(format!("{} token log-probabilities for {} tokens", r.token_logprobs.len(), r.tokens));
    }
    if r.token_logprobs.iter().any(|l| !l.is_finite() || *l > 1e-9) {
        return Err("a token log-probability is positive or not finite".into());
    }
    if r.kl.len() != r.top1_agree.len() || (!r.kl.is_empty() && r.kl.len() != r.tokens as usize) {
        return Err(format!(
            "baseline comparison has {} KL values and {} top-1 flags for {} tokens",
            r.kl.len(),
            r.top1_agree.len(),
            r.tokens
        ));
    }
    let nll: Vec<f64> = r.token_logprobs.iter().map(|l| -l).collect();
    let m = |name: &str, value: f64| Metric { name: name.into(), value };
    Ok(vec![
        m("nll_sum", nll.iter().sum()),
        m("nll_sq_sum", nll.iter().map(|x| x * x).sum()),
        m("tokens", r.tokens as f64),
        m("bytes", r.bytes as f64),
        m("kl_sum", r.kl.iter().sum()),
        m("kl_sq_sum", r.kl.iter().map(|x| x * x).sum()),
        m("kl_max", r.kl.iter().cloned().fold(0.0, f64::max)),
        m("kl_tokens", r.kl.len() as f64),
        m("top1_sum", r.top1_agree.iter().map(|&a| (a != 0) as u8 as f64).sum()),
    ])
}

/// Mean and standard error of the mean from a sum, a sum of squares and a count.
fn mean_stderr(sum: f64, sq: f64, n: f64) -> (f64, Option<f64>) {
    let mean = if n > 0.0 { sum / n } else { 0.0 };
    let se = (n > 1.0).then(|| ((sq / n - mean * mean).max(0.0) / (n - 1.0)).sqrt());
    (mean, se)
}

impl Task for Perplexity {
    fn describe() -> TaskInfo {
        let spec = |name: &str, better: bool, help: &str| MetricSpec {
            name: name.into(),
            higher_is_better: better,
            help: help.into(),
        };
        TaskInfo {
            name: "perplexity".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "rolling log-likelihood of a text: perplexity, NLL, bits per byte; KL and top-1 agreement vs a baseline".into(),
            metrics: vec![
                spec("perplexity", false, "token perplexity exp(mean NLL); stderr by the delta method"),
                spec("nll", false, "mean negative log-likelihood per token (nats)"),
                spec("bits_per_byte", false, "total NLL / (UTF-8 bytes · ln 2)"),
                spec("kl_mean", false, "mean per-token KL(baseline ‖ model), when a baseline was run"),
                spec("kl_max", false, "largest per-token KL divergence"),
                spec("top1_agree", true, "fraction of tokens whose argmax matches the baseline's"),
            ],
            options: vec![OptionSpec {
                name: "split".into(),
                kind: "string:paragraph|line|none".into(),
                default: "paragraph".into(),
                help: "documents are blank-line separated paragraphs, single lines, or the whole file".into(),
            }],
        }
    }

    fn requests(data: Vec<u8>, options: &Options) -> Result<Vec<Request>, String> {
        let text = String::from_utf8(data)
            .map_err(|e| format!("the text is not UTF-8 (byte {})", e.utf8_error().valid_up_to()))?;
        let docs = documents(&text, options.get("split"));
        if docs.is_empty() {
            return Err("the text contains no documents (it is empty or only whitespace)".into());
        }
        Ok(docs
            .into_iter()
            .enumerate()
            .map(|(i, d)| Request {
                id: format!("doc{}", i + 1),
                kind: RequestKind::LoglikelihoodRolling(d),
                doc: String::new(),
            })
            .collect())
    }

    fn score(request: Request, response: Response, _options: &Options) -> Result<Vec<Metric>, String> {
        match response {
            Response::Rolling(r) => sample_metrics(&r).map_err(|e| format!("request {}: {e}", request.id)),
            _ => Err(format!("request {}: perplexity needs a rolling log-likelihood result", request.id)),
        }
    }

    fn aggregate(samples: Vec<Scored>, _options: &Options) -> Result<Report, String> {
        let mut t = [0.0f64; 9];
        let mut docs = 0u64;
        for s in &samples {
            if s.metrics.is_empty() {
                continue;
            }
            docs += 1;
            for (k, name) in SUMS.iter().enumerate() {
                let v = metric(s, name).unwrap_or(0.0);
                t[k] = if *name == "kl_max" { t[k].max(v) } else { t[k] + v };
            }
        }
        let [nll_sum, nll_sq, tokens, bytes, kl_sum, kl_sq, kl_max, kl_tokens, top1] = t;
        if tokens == 0.0 {
            return Err("no document was scored".into());
        }
        let (nll, nll_se) = mean_stderr(nll_sum, nll_sq, tokens);
        let ppl = nll.exp();
        let agg = |name: &str, value: f64, stderr: Option<f64>, count: f64| AggregateMetric {
            name: name.into(),
            value,
            stderr,
            count: count as u64,
        };
        let mut metrics = vec![
            agg("perplexity", ppl, nll_se.map(|se| ppl * se), tokens),
            agg("nll", nll, nll_se, tokens),
            agg("bits_per_byte", nll_sum / (bytes * std::f64::consts::LN_2), None, bytes),
        ];
        if kl_tokens > 0.0 {
            let (kl, kl_se) = mean_stderr(kl_sum, kl_sq, kl_tokens);
            let p = top1 / kl_tokens;
            metrics.push(agg("kl_mean", kl, kl_se, kl_tokens));
            metrics.push(agg("kl_max", kl_max, None, kl_tokens));
            metrics.push(agg(
                "top1_agree",
                p,
                (kl_tokens > 1.0).then(|| (p * (1.0 - p) / (kl_tokens - 1.0)).sqrt()),
                kl_tokens,
            ));
        }
        let mut native =
            format!("{{\n  \"documents\": {docs},\n  \"tokens\": {tokens},\n  \"bytes\": {bytes}");
        for m in &metrics {
            native.push_str(&format!(",\n  \"{}\": {}", m.name, m.value));
            if let Some(se) = m.stderr {
                native.push_str(&format!(",\n  \"{}_stderr\": {se}", m.name));
            }
        }
        native.push_str("\n}");
        Ok(Report { metrics, native_json: native })
    }
}

export_task!(Perplexity);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_split_as_documented() {
        let t = "one\ntwo\n\n\nthree\n  \nfour";
        assert_eq!(documents(t, "paragraph"), ["one\ntwo", "three", "four"]);
        assert_eq!(documents(t, "line"), ["one", "two", "three", "four"]);
        assert_eq!(documents(t, "none"), [t]);
    }

    #[test]
    fn mean_stderr_by_hand() {
        // values 1, 2, 3: mean 2, sample variance 1, stderr 1/sqrt(3)
        let (m, se) = mean_stderr(6.0, 14.0, 3.0);
        assert_eq!(m, 2.0);
        assert!((se.unwrap() - 1.0 / 3f64.sqrt()).abs() < 1e-12);
    }
}
