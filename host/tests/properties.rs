//! Property tests of the parsers (issue 14): llama2.c checkpoints, GGUF headers and metadata,
//! safetensors headers (through an HF directory) and the CoQA task's data parser, each fed
//! mutated real files and arbitrary bytes. The property: an error or a model, never a panic,
//! and an error that names the file. The case budget is fixed (`PROPTEST_CASES`, default
//! 48 per property here) so `make test` stays bounded; proptest's own seed persistence is off
//! (no files written into the tree) and a failure prints its minimal input.

mod common;

use common::*;
use proptest::prelude::*;
use std::path::Path;

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(48);
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

/// Load `bytes` written as `name` in a fresh folder: Ok or an error naming the file.
fn load_file(name: &str, bytes: &[u8]) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    check(llq_host::loader::load(path.to_str().unwrap()), name)
}

fn check<T>(r: anyhow::Result<T>, name: &str) -> Result<(), TestCaseError> {
    if let Err(e) = r {
        let msg = format!("{e:#}");
        prop_assert!(msg.contains(name), "the error does not name {name}: {msg}");
    }
    Ok(())
}

/// Byte edits: (position as a fraction of the length, new byte).
fn edits(max: usize) -> impl Strategy<Value = Vec<(f64, u8)>> {
    proptest::collection::vec((0.0f64..1.0, any::<u8>()), 1..max)
}

fn apply(mut b: Vec<u8>, edits: &[(f64, u8)], within: usize) -> Vec<u8> {
    let n = within.min(b.len());
    for &(at, v) in edits {
        b[((at * n as f64) as usize).min(n - 1)] = v;
    }
    b
}

proptest! {
    #![proptest_config(config())]

    /// llama2.c: any header values, any cut, any bytes.
    #[test]
    fn llama2c_checkpoints_never_panic(
        field in 0usize..7,
        value in any::<i32>(),
        cut in 0.0f64..1.2,
        e in edits(8),
    ) {
        let mut b = std::fs::read(p(STORIES)).unwrap();
        b[field * 4..field * 4 + 4].copy_from_slice(&value.to_le_bytes());
        let b = apply(b, &e, 28 + 4096);
        let keep = ((cut * b.len() as f64) as usize).min(b.len());
        load_file("model.bin", &b[..keep])?;
    }

    /// GGUF: the real SmolLM2 file's header and metadata (its first 2 MB: tokenizer included),
    /// with bytes changed anywhere in them, and cut anywhere.
    #[test]
    fn gguf_headers_and_metadata_never_panic(e in edits(6), cut in 0.0f64..1.0) {
        let head = gguf_head();
        let b = apply(head.to_vec(), &e, head.len());
        let keep = ((cut * b.len() as f64) as usize).max(4);
        load_file("model.gguf", &b[..keep])?;
    }

    /// Arbitrary bytes behind the GGUF magic.
    #[test]
    fn arbitrary_gguf_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut b = b"GGUF".to_vec();
        b.extend(body);
        load_file("model.gguf", &b)?;
    }

    /// safetensors: the header of a real (tiny) file with bytes changed, cut anywhere, or an
    /// arbitrary 8-byte length in front of arbitrary JSON-ish text.
    #[test]
    fn safetensors_headers_never_panic(
        e in edits(6),
        cut in 0.0f64..1.0,
        len in any::<u64>(),
        text in "[{}\\[\\]\":,a-z0-9_ .-]{0,200}",
    ) {
        let st = tiny_safetensors();
        let n = u64::from_le_bytes(st[..8].try_into().unwrap()) as usize;
        let b = apply(st.clone(), &e, 8 + n);
        let keep = ((cut * b.len() as f64) as usize).max(1);
        load_hf(&b[..keep])?;
        let mut raw = len.to_le_bytes().to_vec();
        raw.extend_from_slice(text.as_bytes());
        load_hf(&raw)?;
    }

    /// The CoQA task's data parser (inside its sandbox): the real dev sample with bytes
    /// changed, and arbitrary JSON-ish text. The runtime stays usable after every call.
    #[test]
    fn coqa_data_parsing_never_traps(
        e in edits(6),
        cut in 0.0f64..1.0,
        text in "[{}\\[\\]\":,a-z0-9_ #\n]{0,300}",
    ) {
        let sample = std::fs::read(p(SAMPLE)).unwrap();
        let b = apply(sample, &e, usize::MAX);
        let keep = (cut * b.len() as f64) as usize;
        TASK.with(|t| {
            let mut t = t.borrow_mut();
            for data in [&b[..keep], text.as_bytes()] {
                if let Err(err) = t.requests(data, &[]) {
                    let msg = format!("{err:#}");
                    prop_assert!(!msg.contains("panicked"), "{msg}");
                }
                prop_assert!(t.describe().is_ok(), "the task runtime is broken after a bad input");
            }
            Ok(())
        })?;
    }
}

thread_local! {
    static TASK: std::cell::RefCell<llq_host::task::TaskRuntime> = std::cell::RefCell::new(
        llq_host::task::TaskRuntime::load(Path::new(&coqa()), llq_host::task::Limits::default()).unwrap()
    );
}

fn gguf_head() -> &'static [u8] {
    static HEAD: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    HEAD.get_or_init(|| {
        use std::io::Read;
        let mut b = vec![0u8; 2 << 20];
        let mut f = std::fs::File::open(p("models/smollm2-135m-instruct.gguf")).unwrap();
        f.read_exact(&mut b).unwrap();
        b
    })
}

/// A two-tensor safetensors file.
fn tiny_safetensors() -> Vec<u8> {
    let a: Vec<u8> = (0..16u32).flat_map(|i| (i as f32).to_le_bytes()).collect();
    let b: Vec<u8> = (0..8u32).flat_map(|i| (i as f32 * 0.5).to_le_bytes()).collect();
    let va = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![4, 4], &a).unwrap();
    let vb = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![8], &b).unwrap();
    safetensors::serialize(vec![("model.embed_tokens.weight", va), ("model.norm.weight", vb)], None).unwrap()
}

/// An HF directory with a valid config and `st` as model.safetensors.
fn load_hf(st: &[u8]) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.json"),
        br#"{"hidden_size": 4, "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2, "vocab_size": 4, "tie_word_embeddings": true}"#,
    )
    .unwrap();
    std::fs::write(dir.path().join("model.safetensors"), st).unwrap();
    let r = llq_host::loader::load(dir.path().to_str().unwrap());
    if let Err(e) = r {
        let msg = format!("{e:#}");
        // The error names the file, or the tensor the weights lack (the config is valid).
        prop_assert!(msg.contains("model.safetensors") || msg.contains("tensor `"), "{msg}");
    }
    Ok(())
}
