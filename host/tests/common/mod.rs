//! Helpers every integration test binary shares: where the repository, the build outputs
//! and the fixtures are, and how to run the `llq-host` binary.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("host/ has a parent").to_path_buf()
}

/// The cargo target dir: `LLQ_TARGET_DIR` (set by the Makefile), else `<repo>/target`.
pub fn target_dir() -> PathBuf {
    std::env::var_os("LLQ_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root().join("target"))
}

/// A path under the repository root, as a string argument.
pub fn p(rel: &str) -> String {
    root().join(rel).display().to_string()
}

/// A built plugin library (`make build` / `cargo build --release --workspace`).
pub fn so(name: &str) -> PathBuf {
    let p = target_dir().join(format!("release/lib{name}.so"));
    assert!(
        p.exists(),
        "{} is missing: run `make build` (cargo build --release --workspace) first",
        p.display()
    );
    p
}

/// A built plugin library, as a string argument.
pub fn plugin(name: &str) -> String {
    so(name).display().to_string()
}

/// A built WASM task component (`make build`).
pub fn wasm(name: &str) -> PathBuf {
    let p = target_dir().join(format!("wasm32-wasip2/release/{name}.wasm"));
    assert!(p.exists(), "{} is missing: run `make build` first", p.display());
    p
}

/// The CoQA task component, as a string argument.
pub fn coqa() -> String {
    wasm("coqa").display().to_string()
}

/// The one real CoQA dialogue.
pub const SAMPLE: &str = "tests/fixtures/coqa/coqa-dev-sample.json";
/// The 260K-parameter llama2.c model.
pub const STORIES: &str = "tests/fixtures/tinyllama/stories260K.bin";

/// Run `llq-host` with `args`.
pub fn llq(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_llq-host")).args(args).output().expect("run llq-host")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Write `text` to `dir/name` and return the path as a string argument.
pub fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write test file");
    p.display().to_string()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
