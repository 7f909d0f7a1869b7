//! Hostile and careless input (issue 14), each case asserting a clear error that names the
//! option or file, exit status 1, no panic, and that nothing already computed is lost.
//! Options outside their domain are errors, never silently adjusted; a second run on a folder
//! in use stops before touching it; commands refuse to write over their own input.

mod common;

use common::*;
use std::path::Path;
use std::process::Output;

fn clean_failure(o: &Output, needle: &str) {
    let e = stderr(o);
    assert_eq!(o.status.code(), Some(1), "expected exit 1 for {needle:?}: {e}");
    assert!(e.contains(needle), "expected {needle:?} in: {e}");
    assert!(!e.contains("panicked"), "{e}");
}

/// `llq-host run` on the fixture model and a one-paragraph perplexity task, plus `extra`.
fn run_ppl(dir: &Path, out: &Path, extra: &[&str]) -> Output {
    let text = write(dir, "t.txt", "Once upon a time, there was a little girl named Lily.\n");
    let task = wasm("perplexity");
    let model = p(STORIES);
    let mut args = vec![
        "run",
        "--model",
        &model,
        "--task",
        task.to_str().unwrap(),
        "--data",
        &text,
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    llq(&args)
}

#[test]
fn options_outside_their_domain_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o");
    for (extra, needle) in [
        (&["--window", "0"][..], "--window 0 is too small"),
        (&["--window", "1"][..], "--window 1 is too small"),
        (
            &["--task-timeout", "1e20"][..],
            "--task-timeout 100000000000000000000 is beyond the largest allowed",
        ),
        (&["--task-timeout", "0"][..], "--task-timeout must be a positive number"),
        (&["--task-timeout", "nan"][..], "--task-timeout must be a positive number"),
        (&["--task-memory", "0"][..], "--task-memory 0 MiB is outside 1..=4096"),
        (&["--task-memory", "17592186044416"][..], "--task-memory 17592186044416 MiB is outside"),
        (&["--task-memory", "4097"][..], "--task-memory 4097 MiB is outside"),
        (&["--batch-size", "0"][..], "--batch-size must be at least 1"),
        (&["--task-data-limit", "0"][..], "--task-data-limit 0 MiB is outside 1..=65536"),
        (&["--kl-baseline-from", "/nonexistent"][..], "--kl-baseline-from /nonexistent"),
    ] {
        let o = run_ppl(dir.path(), &out, extra);
        clean_failure(&o, needle);
        assert!(!out.join("samples.jsonl").exists(), "{extra:?} wrote samples before failing");
    }
}

#[test]
fn a_second_run_on_a_folder_in_use_stops_before_touching_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o");
    let first = run_ppl(dir.path(), &out, &[]);
    assert!(first.status.success(), "{}", stderr(&first));
    let before = std::fs::read(out.join("samples.jsonl")).unwrap();
    // Another process holds the folder (as a running llq does for its whole run).
    let held = std::fs::OpenOptions::new().write(true).open(out.join(".llq.lock")).unwrap();
    held.lock().unwrap();
    let o = run_ppl(dir.path(), &out, &["--resume"]);
    clean_failure(&o, "is in use by another llq run");
    assert_eq!(std::fs::read(out.join("samples.jsonl")).unwrap(), before, "the held run's samples changed");
    drop(held);
    let o = run_ppl(dir.path(), &out, &["--resume"]);
    assert!(o.status.success(), "released: {}", stderr(&o));
}

#[test]
fn commands_refuse_to_write_over_their_input_or_a_full_folder() {
    let dir = tempfile::tempdir().unwrap();
    let model = root().join(STORIES);
    // convert into a folder that holds something.
    let full = dir.path().join("full");
    std::fs::create_dir(&full).unwrap();
    write(&full, "keep.txt", "mine");
    let o = llq(&["convert", "--model", model.to_str().unwrap(), "--out", full.to_str().unwrap()]);
    clean_failure(&o, "is not empty; choose an empty folder or pass --force");
    assert_eq!(std::fs::read_to_string(full.join("keep.txt")).unwrap(), "mine");
    let file = write(dir.path(), "a-file", "x");
    let o = llq(&["convert", "--model", model.to_str().unwrap(), "--out", &file]);
    clean_failure(&o, "exists and is not a folder");
    // --force passes the check (this model then fails for its own reason: no tokenizer.json form).
    let o = llq(&["convert", "--model", model.to_str().unwrap(), "--out", full.to_str().unwrap(), "--force"]);
    clean_failure(&o, "has no tokenizer.json form");
    assert_eq!(std::fs::read_to_string(full.join("keep.txt")).unwrap(), "mine");
    // quantize --output spelled differently from --input but the same file.
    let weights = dir.path().join("w.safetensors");
    std::fs::copy(root().join("tests/fixtures/gptq/weights.safetensors"), &weights).unwrap();
    let before = std::fs::read(&weights).unwrap();
    let other_spelling = dir.path().join(".").join("w.safetensors");
    let o = llq(&[
        "quantize",
        "--quant",
        &plugin("nf4"),
        "--input",
        weights.to_str().unwrap(),
        "--output",
        other_spelling.to_str().unwrap(),
    ]);
    clean_failure(&o, "is --input: write the result elsewhere");
    assert_eq!(std::fs::read(&weights).unwrap(), before);
}

/// A plugin file cut short (a partial copy or download) used to kill the host with SIGBUS
/// inside dlopen; now every loading command names the file and says it is truncated.
#[test]
fn a_truncated_plugin_is_named_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let whole = std::fs::read(so("nf4")).unwrap();
    for (name, keep) in [("half.so", whole.len() / 2), ("phdrs.so", 100), ("head.so", 40)] {
        let path = dir.path().join(name);
        std::fs::write(&path, &whole[..keep]).unwrap();
        for args in [
            vec!["plugins", "inspect", path.to_str().unwrap()],
            vec!["quantize", "--quant", path.to_str().unwrap(), "--input", "x", "--output", "y"],
        ] {
            let o = llq(&args);
            let e = stderr(&o);
            assert_eq!(o.status.code(), Some(1), "{name} {args:?}: {e}");
            assert!(
                e.contains(path.to_str().unwrap()) && (e.contains("truncated") || e.contains("damaged")),
                "{name}: {e}"
            );
        }
    }
}

/// `score` reads llq's own samples.jsonl including its failed samples (no prediction, an
/// error: counted, those turns have no prediction) and refuses a file that predicts one id
/// twice, naming the id (which of the two was scored used to be left to a hash map).
#[test]
fn score_counts_failed_samples_and_refuses_duplicate_ids() {
    let dir = tempfile::tempdir().unwrap();
    let story = "3dr23u6we5exclen4th8uq9rb42tel";
    let line = |turn: u32, pred: &str| format!("{{\"id\":\"{story}#{turn}\",\"prediction\":\"{pred}\"}}\n");
    let failed =
        format!("{{\"id\":\"{story}#3\",\"prompt_sha256\":\"x\",\"error\":\"model: out of memory\"}}\n");
    let task = coqa();
    let score = |preds: &str| llq(&["score", "--task", &task, "--data", &p(SAMPLE), "--predictions", preds]);
    let with_failed =
        write(dir.path(), "f.jsonl", &format!("{}{}{failed}", line(1, "white"), line(2, "in a barn")));
    let o = score(&with_failed);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("1 samples failed in their run"), "{}", stderr(&o));
    let dup =
        write(dir.path(), "d.jsonl", &format!("{}{}{}", line(1, "white"), line(2, "barn"), line(1, "grey")));
    let o = score(&dup);
    clean_failure(&o, &format!("1 ids appear more than once ({story}#1)"));
}

/// GGUF metadata that is present but malformed (wrong type, zero, NaN) is an error naming the
/// key, not a silent default: the SmolLM2 file with one key's type or value patched in place.
#[test]
fn malformed_gguf_metadata_is_an_error_not_a_default() {
    let src = root().join("models/smollm2-135m-instruct.gguf");
    assert!(src.exists(), "run `make models`");
    let whole = std::fs::read(&src).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // (key, new type id or None, new 4 value bytes or None, expected message). Types: 4 = u32,
    // 6 = f32 (same size, so the file still parses).
    let nan = f32::NAN.to_le_bytes();
    /// (key, new type id, new value bytes, expected message)
    type Patch = (&'static str, Option<u32>, Option<[u8; 4]>, &'static str);
    let cases: [Patch; 6] = [
        ("llama.rope.freq_base", Some(4), None, "`llama.rope.freq_base` is malformed"),
        ("llama.rope.freq_base", None, Some(nan), "`llama.rope.freq_base` is NaN"),
        (
            "llama.attention.layer_norm_rms_epsilon",
            None,
            Some(0f32.to_le_bytes()),
            "`llama.attention.layer_norm_rms_epsilon` is 0",
        ),
        ("llama.context_length", Some(6), None, "`llama.context_length` is malformed"),
        ("llama.context_length", None, Some([0; 4]), "`llama.context_length` is 0"),
        ("tokenizer.ggml.eos_token_id", Some(6), None, "`tokenizer.ggml.eos_token_id` is malformed"),
    ];
    for (key, ty, value, want) in cases {
        let mut bytes = whole.clone();
        let at = bytes.windows(key.len()).position(|w| w == key.as_bytes()).unwrap() + key.len();
        if let Some(t) = ty {
            bytes[at..at + 4].copy_from_slice(&t.to_le_bytes());
        }
        if let Some(v) = value {
            bytes[at + 4..at + 8].copy_from_slice(&v);
        }
        let path = dir.path().join("m.gguf");
        std::fs::write(&path, &bytes).unwrap();
        let e = format!(
            "{:#}",
            llq_host::loader::load(path.to_str().unwrap()).err().unwrap_or_else(|| panic!("{want}: loaded"))
        );
        assert!(e.contains(want), "{want}: {e}");
    }
}

/// An HF folder's generation_config.json that is there must parse, and an eos_token_id that is
/// there must be token ids (they used to be skipped silently, changing where generation stops).
#[test]
fn a_malformed_generation_config_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let hf = dir.path().join("hf");
    let gguf = root().join("models/smollm2-135m-instruct.gguf");
    let o = llq(&["convert", "--model", gguf.to_str().unwrap(), "--out", hf.to_str().unwrap(), "--bf16"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let load = || llq_host::loader::load(hf.to_str().unwrap()).map(|m| m.eos).map_err(|e| format!("{e:#}"));
    let good = load().unwrap();
    for (text, want) in [
        ("{\"eos_token_id\": 2,", "generation_config.json ends in the middle of its JSON"),
        ("{\"eos_token_id\": \"</s>\"}", "eos_token_id \"</s>\" is not a token id"),
        ("{\"eos_token_id\": [2, -1]}", "eos_token_id -1 is not a token id"),
    ] {
        std::fs::write(hf.join("generation_config.json"), text).unwrap();
        let e = load().unwrap_err();
        assert!(e.contains(want), "{want}: {e}");
    }
    std::fs::write(hf.join("generation_config.json"), "{\"eos_token_id\": [2, 7]}").unwrap();
    let with7 = load().unwrap();
    assert!(with7.contains(&7) && good.iter().all(|t| with7.contains(t)), "{good:?} {with7:?}");
}

/// A dataset the size of CoQA's train set (7,200 stories, 86,400 turns, 68 MB here) used to be
/// refused: its requests exceeded wasmtime's 128 MiB per-call data default, with no flag. Now
/// the default is 1 GiB and `--task-data-limit` names itself when too small.
#[test]
fn a_train_sized_dataset_fits_and_the_data_limit_is_a_flag() {
    let dir = tempfile::tempdir().unwrap();
    let sample: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root().join(SAMPLE)).unwrap()).unwrap();
    let story = &sample["data"][0];
    let stories: Vec<serde_json::Value> = (0..7200)
        .map(|i| {
            let mut s = story.clone();
            s["id"] = serde_json::Value::String(format!("{}{i}", story["id"].as_str().unwrap()));
            s
        })
        .collect();
    let big = dir.path().join("big.json");
    std::fs::write(
        &big,
        serde_json::to_vec(&serde_json::json!({"version": "1.0", "data": stories})).unwrap(),
    )
    .unwrap();
    let preds = write(dir.path(), "p.jsonl", "{\"id\":\"x\",\"prediction\":\"y\"}\n");
    let task = coqa();
    let score = |extra: &[&str]| {
        let mut a = vec!["score", "--task", &task, "--data", big.to_str().unwrap(), "--predictions", &preds];
        a.extend_from_slice(extra);
        llq(&a)
    };
    let o = score(&[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("86400 of 86400 requests have no prediction"), "{}", stderr(&o));
    clean_failure(
        &score(&["--task-data-limit", "16"]),
        "returned more data than allowed (16 MiB; raise --task-data-limit)",
    );
}
