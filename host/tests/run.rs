//! `llq-host run` end to end on the 260K-parameter llama2.c model (fast enough for CI) with
//! the real CoQA dialogue: results files, determinism, resume, and bad input; plus
//! `convert` → HF directory → the same logits.

mod common;

use common::{coqa, llq, p, plugin, stderr, target_dir, SAMPLE, STORIES};
use std::path::Path;
use std::process::Output;

fn run(out: &Path, extra: &[&str]) -> Output {
    let (model, data, task, out) = (p(STORIES), p(SAMPLE), coqa(), out.display().to_string());
    let mut args = vec![
        "run",
        "--model",
        &model,
        "--task",
        &task,
        "--data",
        &data,
        "--out",
        &out,
        "--task-opt",
        "max_new_tokens=12",
    ];
    args.extend_from_slice(extra);
    llq(&args)
}

fn predictions(dir: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(dir.join("samples.jsonl")).unwrap();
    let mut v: Vec<(String, String)> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|r| (r["id"].as_str().unwrap().to_string(), r["prediction"].as_str().unwrap_or("").to_string()))
        .collect();
    v.sort();
    v
}

/// The schema of results/README.md, checked key by key.
fn check_schema(r: &serde_json::Value) {
    assert_eq!(r["schema"], "llq-results/2");
    // The typed schema reads back everything the run wrote.
    serde_json::from_value::<llq_host::results::RunResults>(r.clone())
        .expect("results.json follows the typed schema");
    for k in ["version", "git_revision"] {
        assert!(r["llq"][k].is_string(), "llq.{k}");
    }
    assert!(r["date"].as_str().unwrap().ends_with('Z'));
    assert!(r["command_line"].as_array().unwrap().len() > 3);
    for k in ["id", "format", "sha256", "precision"] {
        assert!(r["model"][k].is_string(), "model.{k}");
    }
    assert!(r["model"]["config"]["hidden_size"].is_u64());
    for k in ["params", "quantized_params", "quantized_bytes", "other_bytes", "total_bytes"] {
        assert!(r["size"][k].is_u64(), "size.{k}");
    }
    assert!(r["size"]["bits_per_weight"].is_f64());
    for k in ["name", "version", "path", "data", "data_sha256"] {
        assert!(r["task"][k].is_string(), "task.{k}");
    }
    for m in r["metrics"].as_array().unwrap() {
        assert!(m["name"].is_string() && m["value"].is_f64() && m["count"].is_u64(), "{m}");
    }
    assert!(r["native"].is_object());
    for k in ["load_s", "generate_s", "wall_s"] {
        assert!(r["timing"][k].is_f64(), "timing.{k}");
    }
    assert!(r["samples"]["total"].is_u64() && r["samples"]["failed"].is_u64());
}

#[test]
fn run_writes_results_and_samples_and_is_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let nf4 = plugin("nf4");
    let o = run(&a, &["--quant", &nf4, "--limit", "3", "--batch-size", "2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(a.join("results.json")).unwrap()).unwrap();
    check_schema(&r);
    assert_eq!(r["quantization"]["method"], "nf4");
    assert!(r["quantization"].get("numerics").is_none(), "NF4 runs as the method: no label");
    assert_eq!(r["samples"]["total"], 3);
    // NF4 block 64: 4 bits + one f32 absmax per 64 weights = 4.5 bits per weight.
    assert_eq!(r["size"]["bits_per_weight"], 4.5);
    assert_eq!(r["native"]["children_stories"]["turns"], 3);
    assert_eq!(r["model"]["precision"], "f32 (llama2.c checkpoint)");
    let first = predictions(&a);
    assert_eq!(first.len(), 3);
    assert!(first.iter().any(|(_, p)| !p.trim().is_empty()), "{first:?}");
    // The same command again: byte-identical predictions.
    let o = run(&b, &["--quant", &nf4, "--limit", "3", "--batch-size", "2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(predictions(&b), first);
    // --quantize-lm-head adds the (tied, so untied and copied) 512×64 classifier to the
    // quantized set; the embedding stays unquantized.
    let c = dir.path().join("c");
    let o = run(&c, &["--quant", &nf4, "--limit", "1", "--quantize-lm-head"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let rc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(c.join("results.json")).unwrap()).unwrap();
    assert_eq!(rc["quantization"]["lm_head"], true);
    assert_eq!(
        rc["size"]["quantized_params"].as_u64().unwrap(),
        r["size"]["quantized_params"].as_u64().unwrap() + 512 * 64
    );
    assert_eq!(rc["quantization"]["layers"], r["quantization"]["layers"].as_u64().unwrap() + 1);
    // LLM.int8 brings its own matmul, which run does not use: every result says so.
    let d = dir.path().join("d");
    let o = run(&d, &["--quant", &plugin("int8"), "--limit", "1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let rd: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("results.json")).unwrap()).unwrap();
    let label = rd["quantization"]["numerics"].as_str().unwrap();
    assert!(label.starts_with("weight-only") && label.contains("outlier"), "{label}");
    // An existing run is not overwritten without --resume.
    let o = run(&a, &["--quant", &nf4, "--limit", "3"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("already holds a run (samples.jsonl); pass --resume"), "{}", stderr(&o));
}

#[test]
fn an_interrupted_run_resumes_without_redoing_or_losing_samples() {
    let dir = tempfile::tempdir().unwrap();
    let (full, cut) = (dir.path().join("full"), dir.path().join("cut"));
    assert!(run(&full, &["--limit", "4"]).status.success());
    let reference = predictions(&full);
    // Simulate a kill mid-write after an earlier session that ran 6 samples and wrote one
    // line of garbage bytes: samples 1-2 complete, a line that is not UTF-8, a sample outside
    // the coming --limit 4 (sample 6), then half of sample 3's line.
    std::fs::create_dir_all(&cut).unwrap();
    std::fs::copy(full.join("run.json"), cut.join("run.json")).unwrap();
    let text = std::fs::read_to_string(full.join("samples.jsonl")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let six = run(&dir.path().join("six"), &["--limit", "6"]);
    assert!(six.status.success(), "{}", stderr(&six));
    let six_text = std::fs::read_to_string(dir.path().join("six/samples.jsonl")).unwrap();
    let sixth = six_text.lines().nth(5).unwrap().to_string();
    // The stored metrics of sample 1 are wrong: a resume re-scores, it does not trust them.
    let mut first: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    first["metrics"]["f1"] = serde_json::json!(0.123);
    let mut bytes = format!("{first}\n{}\n", lines[1]).into_bytes();
    bytes.extend_from_slice(b"\xff\xfe not utf-8\n");
    bytes.extend_from_slice(format!("{sixth}\n{}", &lines[2][..lines[2].len() / 2]).as_bytes());
    std::fs::write(cut.join("samples.jsonl"), &bytes).unwrap();
    let o = run(&cut, &["--limit", "4", "--resume"]);
    let e = stderr(&o);
    assert!(o.status.success(), "{e}");
    assert!(e.contains("resuming: 2 of 4 samples already done"), "{e}");
    assert!(e.contains("line(s) 3, 5 are not sample records"), "{e}");
    assert!(e.contains("1 stored samples score differently under the current task"), "{e}");
    // Nothing was deleted: the two bad lines are in .rejected, byte for byte.
    let rejected = std::fs::read(cut.join("samples.jsonl.rejected")).unwrap();
    let mut want = b"\xff\xfe not utf-8\n".to_vec();
    want.extend_from_slice(format!("{}\n", &lines[2][..lines[2].len() / 2]).as_bytes());
    assert_eq!(rejected, want);
    // Sample 6 (outside --limit 4) is still there, the others once each with the
    // uninterrupted run's predictions.
    let mut with_sixth = reference.clone();
    let six_rec: serde_json::Value = serde_json::from_str(&sixth).unwrap();
    with_sixth.push((six_rec["id"].as_str().unwrap().into(), six_rec["prediction"].as_str().unwrap().into()));
    with_sixth.sort();
    assert_eq!(predictions(&cut), with_sixth);
    // The aggregate covers the 4 samples with the re-scored metrics: the same as the
    // uninterrupted run's, and it says what the earlier session contributed.
    let r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(cut.join("results.json")).unwrap()).unwrap();
    let rf: serde_json::Value =
        serde_json::from_slice(&std::fs::read(full.join("results.json")).unwrap()).unwrap();
    assert_eq!(r["native"]["overall"]["turns"], 4);
    assert_eq!(r["metrics"], rf["metrics"]);
    assert_eq!(r["timing"]["earlier_sessions"]["samples"], 2);
    assert_eq!(r["timing"]["earlier_sessions"]["rescored_differently"], 1);
    assert!(rf["timing"].get("earlier_sessions").is_none());

    // The run manifest: a resume with other settings is refused, naming the field, before
    // anything is computed; the samples are untouched.
    let before = std::fs::read(cut.join("samples.jsonl")).unwrap();
    let nf4 = plugin("nf4");
    for (extra, field) in [
        (vec!["--quant", nf4.as_str()], "plugin_sha256: stored null"),
        (vec!["--chat-template"], "chat_template: stored false, now true"),
        (vec!["--window", "64"], "window: stored 2048, now 64"),
    ] {
        let mut args = vec!["--limit", "4", "--resume"];
        args.extend(extra);
        let o = run(&cut, &args);
        assert_clean_failure(&o, "--resume: ");
        assert_clean_failure(&o, "holds a run that differs from this one");
        assert_clean_failure(&o, field);
    }
    let o = llq(&[
        "run",
        "--model",
        &p(STORIES),
        "--task",
        &coqa(),
        "--data",
        &p(SAMPLE),
        "--out",
        cut.to_str().unwrap(),
        "--task-opt",
        "max_new_tokens=13",
        "--limit",
        "4",
        "--resume",
    ]);
    assert_clean_failure(
        &o,
        "task_options: stored {\"max_new_tokens\":\"12\"}, now {\"max_new_tokens\":\"13\"}",
    );
    assert_eq!(std::fs::read(cut.join("samples.jsonl")).unwrap(), before);
    // A folder from before manifests cannot be shown to be the same run.
    std::fs::remove_file(cut.join("run.json")).unwrap();
    assert_clean_failure(&run(&cut, &["--limit", "4", "--resume"]), "has no run.json");
    // A larger --limit extends the run: the 4 done samples (and sample 6) are kept.
    std::fs::copy(full.join("run.json"), cut.join("run.json")).unwrap();
    let o = run(&cut, &["--limit", "6", "--resume"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("resuming: 5 of 6 samples already done"), "{}", stderr(&o));
}

fn assert_clean_failure(o: &Output, needle: &str) {
    let e = stderr(o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(e.contains(needle), "expected {needle:?} in: {e}");
    assert!(!e.contains("panicked"), "{e}");
}

#[test]
fn bad_input_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o");
    let (data, task) = (p(SAMPLE), coqa());
    let run_model = |model: &str, extra: &[&str]| {
        let o = out.display().to_string();
        let mut args =
            vec!["run", "--model", model, "--task", &task, "--data", &data, "--out", &o, "--limit", "1"];
        args.extend_from_slice(extra);
        llq(&args)
    };
    assert_clean_failure(&run_model("no/such/model.gguf", &[]), "model no/such/model.gguf does not exist");
    // --limit beyond the data.
    let o = run(&dir.path().join("l"), &["--limit", "50"]);
    assert_clean_failure(&o, "--limit 50 is out of range");
    assert_clean_failure(&o, "holds 12 requests");
    // An --out that cannot be a directory.
    let file = dir.path().join("file");
    std::fs::write(&file, "x").unwrap();
    let o = run(&file.join("sub"), &[]);
    assert_clean_failure(&o, "cannot create output directory");
    // HF directories: missing config keys, corrupt safetensors, a tokenizer of another model.
    let hf = dir.path().join("hf");
    std::fs::create_dir_all(&hf).unwrap();
    std::fs::write(hf.join("config.json"), r#"{"hidden_size": 64, "num_hidden_layers": 2}"#).unwrap();
    assert_clean_failure(
        &run_model(hf.to_str().unwrap(), &[]),
        "is not a Llama config: missing field `intermediate_size`",
    );
    std::fs::write(
        hf.join("config.json"),
        r#"{"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1, "num_attention_heads": 4, "vocab_size": 300, "tie_word_embeddings": true}"#,
    )
    .unwrap();
    std::fs::write(hf.join("model.safetensors"), b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
        .unwrap();
    assert_clean_failure(
        &run_model(hf.to_str().unwrap(), &[]),
        "model.safetensors is not a valid safetensors file",
    );
    // Valid weights, but the tokenizer is SmolLM2's 49152-token one.
    let conv = dir.path().join("smol");
    let c = llq(&[
        "convert",
        "--model",
        &p("models/smollm2-135m-instruct.gguf"),
        "--out",
        conv.to_str().unwrap(),
        "--bf16",
    ]);
    assert!(c.status.success(), "{}", stderr(&c));
    std::fs::copy(conv.join("tokenizer.json"), hf.join("tokenizer.json")).unwrap();
    let names = [
        "model.embed_tokens.weight",
        "model.norm.weight",
        "model.layers.0.input_layernorm.weight",
        "model.layers.0.post_attention_layernorm.weight",
    ];
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = names
        .iter()
        .map(|n| (n.to_string(), if n.contains("embed") { vec![300, 64] } else { vec![64] }))
        .map(|(n, s)| {
            let len: usize = s.iter().product();
            (n, s, vec![0u8; len * 4])
        })
        .collect();
    for (n, r, c) in [("q_proj", 64, 64), ("k_proj", 64, 64), ("v_proj", 64, 64), ("o_proj", 64, 64)] {
        tensors.push((format!("model.layers.0.self_attn.{n}.weight"), vec![r, c], vec![0u8; r * c * 4]));
    }
    for (n, r, c) in [("gate_proj", 128, 64), ("up_proj", 128, 64), ("down_proj", 64, 128)] {
        tensors.push((format!("model.layers.0.mlp.{n}.weight"), vec![r, c], vec![0u8; r * c * 4]));
    }
    let views: Vec<(&str, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, s, b)| {
            (n.as_str(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b).unwrap())
        })
        .collect();
    safetensors::serialize_to_file(views, None, &hf.join("model.safetensors")).unwrap();
    assert_clean_failure(
        &run_model(hf.to_str().unwrap(), &[]),
        "its tokenizer has 49152 tokens but the model's vocab_size is 300",
    );
    // A tensor missing.
    let views: Vec<(&str, safetensors::tensor::TensorView)> = tensors
        .iter()
        .skip(1)
        .map(|(n, s, b)| {
            (n.as_str(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b).unwrap())
        })
        .collect();
    safetensors::serialize_to_file(views, None, &hf.join("model.safetensors")).unwrap();
    assert_clean_failure(
        &run_model(hf.to_str().unwrap(), &[]),
        "tensor `model.embed_tokens.weight` is missing",
    );
}

#[test]
fn a_converted_hf_directory_gives_the_gguf_model_s_logits() {
    use llq_host::loader::load;
    use llq_host::model::Llama;
    let dir = tempfile::tempdir().unwrap();
    let gguf = p("models/smollm2-135m-instruct.gguf");
    assert!(Path::new(&gguf).exists(), "run `make models`");
    let o = llq(&["convert", "--model", &gguf, "--out", dir.path().to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let a = load(&gguf).unwrap();
    let b = load(dir.path().to_str().unwrap()).unwrap();
    assert_eq!(a.config, b.config);
    let text = "Q: What color was Cotton?\n\nA:";
    let ids = a.tokenizer.encode(text).unwrap();
    assert_eq!(b.tokenizer.encode(text).unwrap(), ids);
    let dev = candle_core::Device::Cpu;
    let la: Vec<f32> = Llama::new(&a.config, &a.weights, &dev)
        .unwrap()
        .step(std::slice::from_ref(&ids), &[0], &mut Default::default(), true)
        .map(|t| t.flatten_all().unwrap().to_vec1().unwrap())
        .unwrap_or_default();
    let mb = Llama::new(&b.config, &b.weights, &dev).unwrap();
    let lb: Vec<f32> = mb
        .step(std::slice::from_ref(&ids), &[0], &mut mb.new_cache(), true)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(la, lb, "f32 round trip through safetensors must be exact");
    assert_eq!(b.eos, vec![2]);
    assert!(b.chat_template.is_some());

    // The same weights split over two shards with an index load identically.
    let sharded = tempfile::tempdir().unwrap();
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(dir.path().join(f), sharded.path().join(f)).unwrap();
    }
    let bytes = std::fs::read(dir.path().join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<String> = st.names().into_iter().map(str::to_string).collect();
    names.sort();
    let mut map = serde_json::Map::new();
    for (k, part) in names.chunks(names.len() / 2 + 1).enumerate() {
        let file = format!("model-{:05}-of-00002.safetensors", k + 1);
        let views: Vec<(String, safetensors::tensor::TensorView)> =
            part.iter().map(|n| (n.clone(), st.tensor(n).unwrap())).collect();
        safetensors::serialize_to_file(views, None, &sharded.path().join(&file)).unwrap();
        for n in part {
            map.insert(n.clone(), file.clone().into());
        }
    }
    std::fs::write(
        sharded.path().join("model.safetensors.index.json"),
        serde_json::json!({"weight_map": map}).to_string(),
    )
    .unwrap();
    let c = load(sharded.path().to_str().unwrap()).unwrap();
    assert_eq!(c.weights, b.weights);
}

#[test]
fn perplexity_with_kl_against_the_unquantized_model() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("story.txt");
    std::fs::write(&text, "Once upon a time, there was a little girl named Lily. She loved to play outside.\n\nOne day, she saw a big red ball in the park. She ran to get it.\n").unwrap();
    let ppl = target_dir().join("wasm32-wasip2/release/perplexity.wasm").display().to_string();
    let model = p(STORIES);
    let metrics = |q: Option<&str>, kl: bool, name: &str| -> std::collections::HashMap<String, f64> {
        let out = dir.path().join(name).display().to_string();
        let mut args =
            vec!["run", "--model", &model, "--task", &ppl, "--data", text.to_str().unwrap(), "--out", &out];
        let qp;
        if let Some(q) = q {
            qp = plugin(q);
            args.extend_from_slice(&["--quant", &qp]);
        }
        if kl {
            args.push("--kl-baseline");
        }
        let o = llq(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        let r: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join(name).join("results.json")).unwrap())
                .unwrap();
        // Perplexity is exp(mean NLL) of the per-token log-probs the samples file keeps.
        let lps: Vec<f64> = std::fs::read_to_string(dir.path().join(name).join("samples.jsonl"))
            .unwrap()
            .lines()
            .flat_map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["token_logprobs"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_f64().unwrap())
                    .collect::<Vec<_>>()
            })
            .collect();
        let m: std::collections::HashMap<String, f64> = r["metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| (m["name"].as_str().unwrap().to_string(), m["value"].as_f64().unwrap()))
            .collect();
        let direct = (-lps.iter().sum::<f64>() / lps.len() as f64).exp();
        assert!((m["perplexity"] - direct).abs() < 1e-9 * direct, "{} vs {direct}", m["perplexity"]);
        m
    };
    let base = metrics(None, false, "f32");
    assert!(base["perplexity"] > 1.0 && base["perplexity"] < 512.0, "{base:?}");
    let fp16 = metrics(Some("fp16"), true, "fp16");
    let nf4 = metrics(Some("nf4"), true, "nf4");
    // f16 rounding barely moves the distribution; NF4 moves it much more.
    assert!(fp16["kl_mean"] < 1e-3 && fp16["top1_agree"] > 0.95, "{fp16:?}");
    assert!(nf4["kl_mean"] > 10.0 * fp16["kl_mean"] && nf4["kl_mean"] > 0.0, "{nf4:?} vs {fp16:?}");
    assert!(nf4["kl_max"] >= nf4["kl_mean"] && nf4["top1_agree"] <= 1.0);
    // The per-token KL and agreement the samples keep (for paired comparisons) are what the
    // task aggregated.
    let (records, _) = llq_host::results::read_samples(&dir.path().join("nf4/samples.jsonl")).unwrap();
    let kl: Vec<f64> = records.iter().flat_map(|r| r.token_kl.clone().unwrap()).collect();
    let agree: Vec<u8> = records.iter().flat_map(|r| r.token_top1_agree.clone().unwrap()).collect();
    let n = records.iter().map(|r| r.token_logprobs.as_ref().unwrap().len()).sum::<usize>();
    assert_eq!((kl.len(), agree.len()), (n, n));
    let mean = kl.iter().sum::<f64>() / n as f64;
    assert!((mean - nf4["kl_mean"]).abs() <= 1e-9 * mean, "{mean} vs {}", nf4["kl_mean"]);
    let top1 = agree.iter().map(|&a| a as f64).sum::<f64>() / n as f64;
    assert!((top1 - nf4["top1_agree"]).abs() < 1e-12, "{top1} vs {}", nf4["top1_agree"]);
    // KL needs something to compare.
    let o = llq(&[
        "run",
        "--model",
        &model,
        "--task",
        &ppl,
        "--data",
        text.to_str().unwrap(),
        "--out",
        dir.path().join("x").to_str().unwrap(),
        "--kl-baseline",
    ]);
    assert!(
        stderr(&o)
            .contains("--kl-baseline compares a quantized model with the unquantized one: it needs --quant"),
        "{}",
        stderr(&o)
    );
}

/// Every built-in plugin ships CUDA kernels; on a CPU-only build `llq-host kernels` says
/// what it needs instead of failing obscurely, and `--device cuda` is a clear error.
#[test]
fn cuda_kernels_are_declared_and_a_cpu_build_says_what_it_needs() {
    for name in ["nf4", "fp4", "int8", "fp16"] {
        let o = llq(&["plugins", "inspect", &plugin(name)]);
        assert!(o.status.success(), "{}", stderr(&o));
        let info: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let k = &info["cuda_kernels"];
        let src = k["source"].as_str().unwrap_or_else(|| panic!("{name} has no CUDA source"));
        for entry in [k["dequantize"].as_str().unwrap(), k["matvec"].as_str().unwrap()] {
            assert!(
                src.contains(&"LLQ_DEFINE_KERNELS(".to_string()) && entry.starts_with(name),
                "{name}: entry {entry}"
            );
        }
    }
    // Malformed shapes are refused before any device is touched.
    assert_clean_failure(
        &llq(&["kernels", "--quant", &plugin("nf4"), "--shapes", "12"]),
        "shape `12` is not ROWSxCOLS",
    );
    assert_clean_failure(
        &llq(&["kernels", "--quant", &plugin("nf4"), "--shapes", "0x8"]),
        "must be positive",
    );
    if cfg!(feature = "cuda") {
        return;
    }
    let o = llq(&["kernels", "--quant", &plugin("nf4")]);
    assert_clean_failure(&o, "needs llq-host built with --features cuda");
    let o = llq(&["bench", "--model", &p(STORIES), "--device", "cuda"]);
    assert_clean_failure(&o, "cannot open CUDA device 0");
}

#[test]
fn per_layer_options_are_applied_recorded_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let nf4 = plugin("nf4");
    let out = dir.path().join("a");
    let o = run(
        &out,
        &[
            "--quant",
            &nf4,
            "--limit",
            "1",
            "--opt-layer",
            "layers.*.mlp.down_proj:block_size=4096",
            "--opt-layer",
            "model.layers.0.*:double_quant=true",
            "--opt-layer",
            "layers.0.mlp.down_proj:block_size=128",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("results.json")).unwrap()).unwrap();
    let q = &r["quantization"];
    assert_eq!(q["layer_options"].as_array().unwrap().len(), 3);
    let layers = q["layers_detail"].as_array().unwrap();
    assert_eq!(layers.len(), 5 * 7, "every linear layer of the 5-layer model");
    let get = |name: &str| layers.iter().find(|l| l["name"] == name).unwrap_or_else(|| panic!("{name}"));
    // A later match wins: layer 0's down_proj has block 128 and double quantization.
    let d0 = get("model.layers.0.mlp.down_proj.weight");
    assert_eq!(d0["options"]["block_size"], "128");
    assert_eq!(d0["options"]["double_quant"], "true");
    let d3 = get("model.layers.3.mlp.down_proj.weight");
    assert_eq!(d3["options"]["block_size"], "4096");
    // 64 × 172 weights: codes at 4 bits plus one f32 absmax per (partial) block of 4096.
    let n: u64 = 64 * 172;
    assert_eq!(d3["bytes"], n / 2 + 4 * n.div_ceil(4096));
    let q3 = get("model.layers.3.self_attn.q_proj.weight");
    assert!(q3.get("options").is_none(), "untouched layers carry no override");
    assert_eq!(q3["bits_per_weight"], 4.5);
    // The total is the sum of the layers.
    let sum: u64 = layers.iter().map(|l| l["bytes"].as_u64().unwrap()).sum();
    assert_eq!(r["size"]["quantized_bytes"].as_u64().unwrap(), sum);
    // Errors: a pattern that matches nothing, an option the plugin does not have, no plugin,
    // a calibrating plugin.
    for (extra, needle) in [
        (
            vec!["--quant", nf4.as_str(), "--opt-layer", "layers.*.mlp.dwn_proj:block_size=128"],
            "matches none of the 35 layers",
        ),
        (vec!["--quant", nf4.as_str(), "--opt-layer", "layers.1.*:colour=blue"], "unknown option `colour`"),
        (vec!["--opt-layer", "layers.1.*:block_size=128"], "--opt-layer needs --quant"),
        (vec!["--quant", nf4.as_str(), "--opt-layer", "layers.1.*"], "is not PATTERN:KEY=VALUE"),
    ] {
        let mut args = vec!["--limit", "1"];
        args.extend(extra);
        let o = run(&dir.path().join(format!("e{}", needle.len())), &args);
        let e = stderr(&o);
        assert!(!o.status.success() && e.contains(needle), "{needle}: {e}");
    }
}

#[test]
fn decode_paths_are_recorded_and_the_cpu_runs_eager() {
    // `--decode graph` (the default) asks for the captured GPU step; the CPU has none, so it
    // runs the eager step and results.json says so, with the same predictions as `--decode
    // eager`. An unknown path is refused by name.
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("graph"), dir.path().join("eager"));
    let o = run(&a, &["--device", "cpu", "--limit", "3", "--batch-size", "2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(&b, &["--device", "cpu", "--limit", "3", "--batch-size", "2", "--decode", "eager"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(predictions(&a), predictions(&b));
    let results = |d: &Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(d.join("results.json")).unwrap()).unwrap()
    };
    let decode = |d: &Path| results(d)["device"]["decode"].clone();
    assert_eq!(decode(&a), serde_json::json!(["eager: 2 batches"]));
    assert_eq!(decode(&b), decode(&a));
    // First-use GPU costs are a GPU run's: none on the CPU.
    assert!(results(&a)["timing"].get("first_use").is_none(), "{}", results(&a)["timing"]);
    // The generation time split by batch size: one batch of 2 prompts, then one of 1; each
    // row's n new tokens took n - 1 decode steps at least (the first comes from the prefill),
    // and the split stays inside the model time.
    let r = results(&a);
    let g = r["timing"]["generation"].as_array().unwrap_or_else(|| panic!("{}", r["timing"])).clone();
    assert_eq!(
        g.iter().map(|e| (e["batch"].as_u64(), e["batches"].as_u64())).collect::<Vec<_>>(),
        [(Some(1), Some(1)), (Some(2), Some(1))]
    );
    let samples: Vec<serde_json::Value> = std::fs::read_to_string(a.join("samples.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let most_new =
        |s: &[serde_json::Value]| s.iter().map(|x| x["new_tokens"].as_u64().unwrap()).max().unwrap();
    let (pair, single) = (&g[1], &g[0]);
    assert!(pair["decode_steps"].as_u64().unwrap() + 1 >= most_new(&samples[..2]), "{pair}");
    assert!(single["decode_steps"].as_u64().unwrap() + 1 >= most_new(&samples[2..]), "{single}");
    let split: f64 =
        g.iter().map(|e| e["prefill_s"].as_f64().unwrap() + e["decode_s"].as_f64().unwrap()).sum();
    assert!(split > 0.0 && split <= r["timing"]["generate_s"].as_f64().unwrap(), "{}", r["timing"]);
    for e in &g {
        let steps = e["decode_steps"].as_u64().unwrap();
        if steps > 0 {
            let ms = e["decode_s"].as_f64().unwrap() * 1e3 / steps as f64;
            assert!((e["ms_per_step"].as_f64().unwrap() - ms).abs() <= 1e-9 * ms.max(1.0), "{e}");
            assert!(e["mean_context"].as_f64().unwrap() >= 1.0, "{e}");
        } else {
            assert!(e["ms_per_step"].is_null() && e["mean_context"].is_null(), "{e}");
        }
    }
    let o = run(&dir.path().join("bad"), &["--device", "cpu", "--decode", "warp"]);
    assert!(!o.status.success() && stderr(&o).contains("--decode"), "{}", stderr(&o));
}

/// `bench --no-checks` says so, on screen and in the report (`checks`), and a plain bench
/// records that its checks were on (on the CPU they are the GPU-only ones, so none run there).
#[test]
fn bench_says_whether_its_accuracy_checks_ran() {
    let dir = tempfile::tempdir().unwrap();
    let model = p(STORIES);
    for (flag, on) in [(None, true), (Some("--no-checks"), false)] {
        let out = dir.path().join(format!("bench-{on}.json"));
        let mut args = vec!["bench", "--model", &model, "--device", "cpu", "--prompt-lens", "8"];
        args.extend(["--batch-sizes", "1", "--decode-steps", "1", "--repeats", "1", "--decode", "eager"]);
        args.extend(["--out", out.to_str().unwrap()]);
        args.extend(flag);
        let o = llq(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        let said = String::from_utf8_lossy(&o.stdout).contains("accuracy checks skipped (--no-checks)");
        assert_eq!(said, !on, "{flag:?}");
        let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
        assert_eq!(r["checks"], on, "{flag:?}");
    }
}

#[test]
fn bench_times_each_decode_path_it_can_and_says_why_not_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bench.json");
    let model = p(STORIES);
    let o = llq(&[
        "bench",
        "--model",
        &model,
        "--device",
        "cpu",
        "--prompt-lens",
        "8",
        "--batch-sizes",
        "1,2",
        "--decode-steps",
        "2",
        "--repeats",
        "1",
        "--decode",
        "eager,graph",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let rows = r["decode"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(rows.iter().all(|d| d["path"] == "eager"), "{rows:?}");
    let notes: Vec<&str> =
        r["decode_notes"].as_array().unwrap().iter().map(|n| n.as_str().unwrap()).collect();
    assert_eq!(notes, ["batch 1, graph: not on a GPU", "batch 2, graph: not on a GPU"]);
    // On the CPU no device memory is reported, sampled or allocated.
    assert!(r["peak_allocated_bytes"].is_null() && r["allocated_after_load_bytes"].is_null());
}
