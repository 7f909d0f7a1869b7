//! Stored baseline distributions for KL divergence: `run --save-logprobs` writes the
//! unquantized model's next-token distribution at every scored token of a rolling
//! log-likelihood task; `run --kl-baseline-from RUN` reads them back instead of running the
//! unquantized model again. A sweep computes them once per model and task (the baseline
//! cell) and every quantized cell's KL reads them.
//!
//! The encoding is llama.cpp's KL-divergence base file (`llama-perplexity --save-all-logits` /
//! `--kl-divergence-base`, `log_softmax` in tools/perplexity/perplexity.cpp): per token an
//! f32 `scale`, an f32 floor `min` and one u16 per vocabulary entry, `lp ≈ min + scale·q`,
//! over the top 16 nats of the row; entries further below the row's maximum are stored at the
//! floor. A stored log-prob is within `scale/2 ≤ 16/65535/2 = 1.2e-4` nats of the computed
//! one, so KL read from it differs from the exact in-process KL (`--kl-baseline`) by about
//! that much per token at most (measured: tests/sweep.rs and docs/benchmarks.md). Exact f32
//! rows would double the size (SmolLM2: 49,152 entries, 98 KB per token as u16).
//!
//! Layout: `<run>/logprobs/manifest.json` ([`Manifest`]) and one file per request, named by
//! the request's `prompt_sha256` (so a dependent run finds the rows of the same text):
//! magic `LLQLPB01`, u32 vocabulary size, u32 window, then per scored token: u32 target
//! token, f32 scale, f32 floor, u16 × vocabulary (little-endian). A request's file appears
//! by rename once all its tokens are written.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// The folder inside a run's `--out`.
pub const DIR: &str = "logprobs";
/// `manifest.json`'s `format`.
pub const FORMAT: &str = "llq-logprobs/1";
const MAGIC: &[u8; 8] = b"LLQLPB01";
/// The span of log-probability below each row's maximum that is stored (llama.cpp's 16 nats).
const SPAN: f32 = 16.0;

/// What the stored rows were computed with; a reader refuses rows made otherwise.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: String,
    /// The model's content hash (`results.json` `model.sha256`).
    pub model_sha256: String,
    pub vocab: usize,
    /// Rolling window (tokens per forward pass): the context each distribution saw.
    pub window: usize,
    pub encoding: String,
}

impl Manifest {
    pub fn new(model_sha256: &str, vocab: usize, window: usize) -> Manifest {
        Manifest {
            format: FORMAT.into(),
            model_sha256: model_sha256.into(),
            vocab,
            window,
            encoding: "llama.cpp KL base: per token f32 scale, f32 floor, u16 codes over the top 16 nats"
                .into(),
        }
    }

    pub fn write(&self, run: &Path) -> Result<()> {
        let dir = run.join(DIR);
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        crate::util::fs::write_json(&manifest_path(run), self)
    }

    /// What differs between rows stored as `self` says and a run made as `ours` would
    /// compute ("model A, this run has B"), or `None` when they can be compared.
    pub fn mismatch(&self, ours: &Manifest) -> Option<String> {
        let differs = |what: &str, theirs: &dyn std::fmt::Display, ours: &dyn std::fmt::Display| {
            Some(format!("{what} {theirs}, this run has {ours}"))
        };
        if self.model_sha256 != ours.model_sha256 {
            return differs("model", &self.model_sha256, &ours.model_sha256);
        }
        if self.vocab != ours.vocab {
            return differs("vocabulary size", &self.vocab, &ours.vocab);
        }
        if self.window != ours.window {
            return differs("window", &self.window, &ours.window);
        }
        None
    }

    pub fn read(run: &Path) -> Result<Manifest> {
        let p = manifest_path(run);
        let text = std::fs::read(&p).with_context(|| {
            format!("{} holds no stored log-probs (was its run made with --save-logprobs?)", p.display())
        })?;
        let m: Manifest =
            serde_json::from_slice(&text).with_context(|| format!("{} is malformed", p.display()))?;
        if m.format != FORMAT {
            bail!("{}: format `{}` is not {FORMAT}", p.display(), m.format);
        }
        Ok(m)
    }
}

fn manifest_path(run: &Path) -> PathBuf {
    run.join(DIR).join("manifest.json")
}

/// Whether the run folder `run` holds stored log-probs (their manifest is written first).
pub fn stored_in(run: &Path) -> bool {
    manifest_path(run).is_file()
}

fn row_bytes(vocab: usize) -> usize {
    12 + 2 * vocab
}

/// Append one row of log-probabilities, encoded, to `out`.
pub fn encode_row(target: u32, lp: &[f32], out: &mut Vec<u8>) {
    let max = lp.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let min = lp.iter().copied().fold(f32::INFINITY, f32::min).max(max - SPAN);
    let scale = (max - min) / 65535.0;
    out.extend_from_slice(&target.to_le_bytes());
    out.extend_from_slice(&scale.to_le_bytes());
    out.extend_from_slice(&min.to_le_bytes());
    for &v in lp {
        let q = if scale > 0.0 && v > min { ((v - min) / scale).round().min(65535.0) as u16 } else { 0 };
        out.extend_from_slice(&q.to_le_bytes());
    }
}

/// The log-probability [`decode_row`] gives entries that were below the stored span: no mass
/// (`exp` underflows to 0 in f64, and `0 × (BELOW − lq)` is 0), as llama.cpp's KL sum skips
/// base entries under −16. Stored at the floor instead they would each carry e^-16 of the
/// maximum and bias KL upwards (measured: +2.8e-4 nats per token on the tiny test model).
pub const BELOW_SPAN: f32 = -1.0e4;

/// One encoded row back: (target token, log-probabilities); entries that were more than 16
/// nats below the row's maximum come back as [`BELOW_SPAN`].
pub fn decode_row(row: &[u8], out: &mut Vec<f32>) -> u32 {
    let word = |i: usize| [row[i], row[i + 1], row[i + 2], row[i + 3]];
    let target = u32::from_le_bytes(word(0));
    let scale = f32::from_le_bytes(word(4));
    let min = f32::from_le_bytes(word(8));
    // The span was capped (16 nats): code 0 means "at or below the floor".
    let capped = scale * 65535.0 >= SPAN * (1.0 - 1e-5);
    out.extend(row[12..].chunks_exact(2).map(|c| match u16::from_le_bytes([c[0], c[1]]) {
        0 if capped => BELOW_SPAN,
        q => min + scale * f32::from(q),
    }));
    target
}

fn request_file(run: &Path, prompt_sha256: &str) -> PathBuf {
    run.join(DIR).join(format!("{prompt_sha256}.bin"))
}

/// Writes one request's rows; the file appears under its name only on [`Writer::finish`].
pub struct Writer {
    path: PathBuf,
    tmp: PathBuf,
    file: std::io::BufWriter<std::fs::File>,
    vocab: usize,
    buf: Vec<u8>,
}

impl Writer {
    pub fn create(run: &Path, prompt_sha256: &str, m: &Manifest) -> Result<Writer> {
        let path = request_file(run, prompt_sha256);
        let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
        let f = std::fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        let mut file = std::io::BufWriter::new(f);
        file.write_all(MAGIC)?;
        file.write_all(&(m.vocab as u32).to_le_bytes())?;
        file.write_all(&(m.window as u32).to_le_bytes())?;
        Ok(Writer { path, tmp, file, vocab: m.vocab, buf: vec![] })
    }

    /// Rows of log-probabilities (`lp.len() = targets.len() × vocab`), in token order.
    pub fn write(&mut self, targets: &[u32], lp: &[f32]) -> Result<()> {
        if lp.len() != targets.len() * self.vocab {
            bail!("{} log-probs for {} tokens of a {}-entry vocabulary", lp.len(), targets.len(), self.vocab);
        }
        self.buf.clear();
        for (t, row) in targets.iter().zip(lp.chunks_exact(self.vocab)) {
            encode_row(*t, row, &mut self.buf);
        }
        self.file.write_all(&self.buf).with_context(|| format!("cannot write {}", self.tmp.display()))
    }

    pub fn finish(mut self) -> Result<()> {
        self.file.flush().with_context(|| format!("cannot write {}", self.tmp.display()))?;
        drop(self.file);
        std::fs::rename(&self.tmp, &self.path)
            .with_context(|| format!("cannot move {} to {}", self.tmp.display(), self.path.display()))
    }
}

/// Reads one request's rows in order, checking that they were made for the same tokens.
pub struct Reader {
    path: PathBuf,
    file: std::io::BufReader<std::fs::File>,
    vocab: usize,
    rows_left: usize,
    buf: Vec<u8>,
}

impl Reader {
    pub fn open(run: &Path, prompt_sha256: &str, m: &Manifest) -> Result<Reader> {
        let path = request_file(run, prompt_sha256);
        let f = std::fs::File::open(&path).with_context(|| {
            format!("the baseline run stored no log-probs for this request ({})", path.display())
        })?;
        let len = f.metadata()?.len() as usize;
        let mut file = std::io::BufReader::new(f);
        let mut head = [0u8; 16];
        file.read_exact(&mut head).with_context(|| format!("{} is truncated", path.display()))?;
        let word = |i: usize| u32::from_le_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]) as usize;
        if &head[..8] != MAGIC {
            bail!("{} is not an llq log-prob file", path.display());
        }
        if (word(8), word(12)) != (m.vocab, m.window) {
            bail!(
                "{} was written for vocabulary {} and window {}, its manifest says {} and {}",
                path.display(),
                word(8),
                word(12),
                m.vocab,
                m.window
            );
        }
        let body = len - 16;
        if !body.is_multiple_of(row_bytes(m.vocab)) {
            bail!("{} is truncated ({} bytes of rows)", path.display(), body);
        }
        Ok(Reader { path, file, vocab: m.vocab, rows_left: body / row_bytes(m.vocab), buf: vec![] })
    }

    /// The next `targets.len()` rows as log-probabilities (`targets.len() × vocab`); an
    /// error when they were stored for other tokens.
    pub fn next(&mut self, targets: &[u32]) -> Result<Vec<f32>> {
        if targets.len() > self.rows_left {
            bail!("{} holds fewer tokens than this request scores", self.path.display());
        }
        self.rows_left -= targets.len();
        self.buf.resize(targets.len() * row_bytes(self.vocab), 0);
        self.file
            .read_exact(&mut self.buf)
            .with_context(|| format!("cannot read {}", self.path.display()))?;
        let mut out = Vec::with_capacity(targets.len() * self.vocab);
        for (t, row) in targets.iter().zip(self.buf.chunks_exact(row_bytes(self.vocab))) {
            let stored = decode_row(row, &mut out);
            if stored != *t {
                bail!(
                    "{}: the baseline scored token {stored} where this run scores {t}: different tokenization",
                    self.path.display()
                );
            }
        }
        Ok(out)
    }

    /// Every row was read: a baseline that scored more tokens than this run is an error.
    pub fn finish(self) -> Result<()> {
        if self.rows_left > 0 {
            bail!("{} holds {} more tokens than this request scores", self.path.display(), self.rows_left);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_comes_back_within_half_a_step() {
        let lp: Vec<f32> = vec![-0.1, -2.5, -15.9, -16.2, -40.0, -0.1 - 1e-5, f32::NEG_INFINITY];
        let mut bytes = vec![];
        encode_row(7, &lp, &mut bytes);
        assert_eq!(bytes.len(), row_bytes(lp.len()));
        let mut back = vec![];
        assert_eq!(decode_row(&bytes, &mut back), 7);
        let step = 16.0 / 65535.0;
        for (a, b) in lp.iter().zip(&back) {
            if *a >= -0.1 - 16.0 {
                assert!((a - b).abs() <= step / 2.0 + 1e-6, "{a} came back as {b}");
            } else {
                // Below the 16-nat span: no mass.
                assert_eq!(*b, BELOW_SPAN, "{a}");
            }
        }
        // A flat row (one value) has scale 0 and comes back exactly.
        let mut flat = vec![];
        encode_row(0, &[-3.0; 4], &mut flat);
        let mut back = vec![];
        decode_row(&flat, &mut back);
        assert_eq!(back, vec![-3.0; 4]);
    }

    #[test]
    fn rows_for_other_tokens_or_a_short_file_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let m = Manifest::new("abc", 3, 8);
        m.write(dir.path()).unwrap();
        assert_eq!(Manifest::read(dir.path()).unwrap(), m);
        let mut w = Writer::create(dir.path(), "r1", &m).unwrap();
        w.write(&[1, 2], &[-0.5, -1.0, -2.0, -0.1, -3.0, -4.0]).unwrap();
        assert!(w.write(&[1], &[-0.5]).is_err(), "a row of the wrong width");
        w.finish().unwrap();
        let mut r = Reader::open(dir.path(), "r1", &m).unwrap();
        let lp = r.next(&[1]).unwrap();
        assert!((lp[1] + 1.0).abs() < 1e-4);
        let e = r.next(&[5]).unwrap_err().to_string();
        assert!(e.contains("token 2") && e.contains("scores 5"), "{e}");
        let mut r = Reader::open(dir.path(), "r1", &m).unwrap();
        r.next(&[1]).unwrap();
        assert!(r.finish().unwrap_err().to_string().contains("1 more tokens"));
        let e = Reader::open(dir.path(), "r1", &Manifest::new("abc", 3, 16)).err().unwrap().to_string();
        assert!(e.contains("window 8"), "{e}");
        assert!(Reader::open(dir.path(), "missing", &m).is_err());
        let f = request_file(dir.path(), "r1");
        let bytes = std::fs::read(&f).unwrap();
        std::fs::write(&f, &bytes[..bytes.len() - 1]).unwrap();
        assert!(Reader::open(dir.path(), "r1", &m).err().unwrap().to_string().contains("truncated"));
    }
}
