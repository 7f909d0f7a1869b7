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
    let mut args = vec![
        "run",
        "--model",
        STORIES,
        "--task",
        task.to_str().unwrap(),
        "--data",
        &text,
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let root = root();
    let owned: Vec<String> = args
        .iter()
        .map(|a| if *a == STORIES { root.join(STORIES).display().to_string() } else { a.to_string() })
        .collect();
    llq(&owned.iter().map(String::as_str).collect::<Vec<_>>())
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
