//! Tokenizers: HF `tokenizer.json` (the `tokenizers` crate), GGUF metadata (a byte-level BPE
//! rebuilt in the `tokenizers` crate from the vocabulary, merges and pre-tokenizer name),
//! llama2.c's `tok*.bin` (its score-driven BPE, as `run.c` encodes), and raw bytes for
//! synthetic models.

use anyhow::{anyhow, bail, Context, Result};
use std::collections::HashMap;
use std::path::Path;

pub enum Tokenizer {
    Hf {
        inner: Box<tokenizers::Tokenizer>,
        bos: Option<u32>,
    },
    Llama2c(Llama2cTokenizer),
    /// One token per byte (synthetic models).
    Bytes(usize),
}

impl Tokenizer {
    pub fn from_file(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        // JSON errors first, in words (a cut file, a BOM); then the tokenizers crate's own.
        crate::util::json::parse::<serde_json::Value>(&bytes, path)?;
        let inner = tokenizers::Tokenizer::from_bytes(&bytes)
            .map_err(|e| anyhow!("{} is not a usable tokenizer.json: {e}", path.display()))?;
        let bos = ["<|begin_of_text|>", "<s>"].iter().find_map(|t| inner.token_to_id(t));
        Ok(Tokenizer::Hf { inner: Box::new(inner), bos })
    }

    /// Rebuild a GGUF (llama.cpp) byte-level BPE tokenizer from its metadata.
    pub fn from_gguf(
        md: &HashMap<String, candle_core::quantized::gguf_file::Value>,
        tokens: Vec<String>,
    ) -> Result<Self> {
        use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
        use tokenizers::models::bpe::BPE;
        use tokenizers::pre_tokenizers::byte_level::ByteLevel;
        use tokenizers::pre_tokenizers::sequence::Sequence;
        use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
        use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior};
        let s = |k: &str| md.get(k).and_then(|v| v.to_string().ok().cloned());
        let model = s("tokenizer.ggml.model").unwrap_or_default();
        if model != "gpt2" {
            bail!("GGUF tokenizer model `{model}` is not supported (llq rebuilds `gpt2` byte-level BPE)");
        }
        let merges: Vec<(String, String)> = md
            .get("tokenizer.ggml.merges")
            .ok_or_else(|| anyhow!("GGUF metadata has no tokenizer.ggml.merges"))?
            .to_vec()
            .map_err(|e| anyhow!("{e}"))?
            .iter()
            .map(|v| {
                let m = v.to_string().map_err(|e| anyhow!("{e}"))?;
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(|| anyhow!("malformed merge `{m}`"))
            })
            .collect::<Result<_>>()?;
        let vocab: tokenizers::models::bpe::Vocab =
            tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
        let bpe =
            BPE::builder().vocab_and_merges(vocab, merges).build().map_err(|e| anyhow!("GGUF BPE: {e}"))?;
        let mut tk = tokenizers::Tokenizer::new(bpe);
        let byte_level = ByteLevel::new(false, true, true);
        let pre = s("tokenizer.ggml.pre").unwrap_or_else(|| "default".into());
        let pre_tok: PreTokenizerWrapper = match pre.as_str() {
            // llama.cpp: single digits split off, then the GPT-2 regex.
            "smollm" | "starcoder" | "refact" => Sequence::new(vec![
                Split::new(SplitPattern::Regex(r"\p{N}".into()), SplitDelimiterBehavior::Isolated, false).map_err(|e| anyhow!("{e}"))?.into(),
                byte_level.into(),
            ])
            .into(),
            "default" | "gpt2" | "gpt-2" => byte_level.into(),
            "llama-bpe" | "llama3" => Sequence::new(vec![
                Split::new(
                    SplitPattern::Regex(r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+".into()),
                    SplitDelimiterBehavior::Isolated,
                    false,
                )
                .map_err(|e| anyhow!("{e}"))?
                .into(),
                ByteLevel::new(false, true, false).into(),
            ])
            .into(),
            other => bail!("GGUF pre-tokenizer `{other}` is not supported (known: smollm, starcoder, refact, gpt2, llama-bpe)"),
        };
        tk.with_pre_tokenizer(Some(pre_tok));
        tk.with_decoder(Some(ByteLevelDecoder::default()));
        // Control (3) and user-defined (4) tokens are matched whole, before BPE.
        if let Some(types) = md.get("tokenizer.ggml.token_type").and_then(|v| v.to_vec().ok()) {
            let special: Vec<AddedToken> = types
                .iter()
                .enumerate()
                .filter(|(_, t)| matches!(t.to_i32(), Ok(3) | Ok(4)))
                .filter_map(|(i, _)| tokens.get(i).map(|t| AddedToken::from(t.clone(), true)))
                .collect();
            tk.add_special_tokens(&special);
        }
        let add_bos = md.get("tokenizer.ggml.add_bos_token").and_then(|v| v.to_bool().ok()).unwrap_or(false);
        let bos =
            if add_bos { md.get("tokenizer.ggml.bos_token_id").and_then(|v| v.to_u32().ok()) } else { None };
        Ok(Tokenizer::Hf { inner: Box::new(tk), bos })
    }

    pub fn from_llama2c(path: &Path, vocab: usize) -> Result<Self> {
        Ok(Tokenizer::Llama2c(Llama2cTokenizer::read(path, vocab)?))
    }

    pub fn bytes(vocab: usize) -> Self {
        Tokenizer::Bytes(vocab.max(256))
    }

    /// Token ids of `text`, with the BOS token first when the model expects one.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        match self {
            Tokenizer::Hf { inner, bos } => {
                let enc = inner.encode(text, false).map_err(|e| anyhow!("tokenizing: {e}"))?;
                Ok(bos.iter().copied().chain(enc.get_ids().iter().copied()).collect())
            }
            Tokenizer::Llama2c(t) => Ok(t.encode(text, true)),
            Tokenizer::Bytes(_) => Ok(text.bytes().map(u32::from).collect()),
        }
    }

    /// The id [`Self::encode`] puts first, where the model expects one.
    pub fn bos(&self) -> Option<u32> {
        match self {
            Tokenizer::Hf { bos, .. } => *bos,
            Tokenizer::Llama2c(_) => Some(1),
            Tokenizer::Bytes(_) => None,
        }
    }

    /// Ids of `text` without BOS (for continuations).
    pub fn encode_plain(&self, text: &str) -> Result<Vec<u32>> {
        match self {
            Tokenizer::Hf { inner, .. } => {
                Ok(inner.encode(text, false).map_err(|e| anyhow!("tokenizing: {e}"))?.get_ids().to_vec())
            }
            Tokenizer::Llama2c(t) => Ok(t.encode(text, false)),
            Tokenizer::Bytes(_) => Ok(text.bytes().map(u32::from).collect()),
        }
    }

    /// [`Self::encode_plain`] of a long text (calibration books, a perplexity text) in pieces on
    /// the rayon pool: one `encode` of the 14 Gutenberg calibration books took 7.0 s on one
    /// thread with Llama-3.2's tokenizer (bench/NOTES.md, GPTQ-1B's prologue). The ids are those
    /// of one `encode`, because the text is cut only where the tokenizer itself does not join
    /// across the cut: at a blank line before a letter, after its first or its second newline
    /// (GPT-2's byte-level regex splits "\n\n" in two before a word, Llama-3's keeps it whole),
    /// where the [`CUT_CHECK`] bytes either side encode to the same ids whole as in two halves.
    /// Where no cut passes (SentencePiece's "▁" prepended to every encode, an added token made
    /// of newlines) the text is encoded whole. Only HF tokenizers are split (the others are fast).
    pub fn encode_long(&self, text: &str) -> Result<Vec<u32>> {
        let piece = (text.len() / (4 * rayon::current_num_threads())).max(LONG_PIECE);
        if !matches!(self, Tokenizer::Hf { .. }) || text.len() < 2 * piece {
            return self.encode_plain(text);
        }
        let enc = |s: &str| self.encode_plain(s);
        let mut cuts = vec![0usize];
        let mut from = piece;
        while from + piece / 2 < text.len() {
            let Some(at) = next_cut(text, from, &enc)? else { break };
            if text.len() - at < piece / 2 {
                break;
            }
            cuts.push(at);
            from = at + piece;
        }
        cuts.push(text.len());
        use rayon::prelude::*;
        let parts: Vec<Vec<u32>> =
            cuts.par_windows(2).map(|w| enc(&text[w[0]..w[1]])).collect::<Result<_>>()?;
        Ok(parts.concat())
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        match self {
            Tokenizer::Hf { inner, .. } => inner.decode(ids, true).map_err(|e| anyhow!("detokenizing: {e}")),
            Tokenizer::Llama2c(t) => Ok(t.decode(ids)),
            Tokenizer::Bytes(_) => {
                Ok(String::from_utf8_lossy(&ids.iter().map(|&i| i as u8).collect::<Vec<_>>()).into_owned())
            }
        }
    }

    /// Number of token ids, added (special) tokens included.
    pub fn vocab_size(&self) -> usize {
        match self {
            Tokenizer::Hf { inner, .. } => inner.get_vocab_size(true),
            _ => self.base_vocab_size(),
        }
    }

    /// Number of ids plain text can encode to (the BPE vocabulary, without added tokens).
    pub fn base_vocab_size(&self) -> usize {
        match self {
            Tokenizer::Hf { inner, .. } => inner.get_vocab_size(false),
            Tokenizer::Llama2c(t) => t.pieces.len(),
            Tokenizer::Bytes(n) => (*n).min(256),
        }
    }

    /// The tokenizer as an HF `tokenizer.json`, where it has one.
    pub fn to_json(&self) -> Option<String> {
        match self {
            Tokenizer::Hf { inner, .. } => inner.to_string(true).ok(),
            _ => None,
        }
    }
}

/// The smallest piece [`Tokenizer::encode_long`] encodes on one thread (bytes).
const LONG_PIECE: usize = 64 << 10;

/// Bytes either side of a cut that must encode the same whole and halved.
const CUT_CHECK: usize = 256;

/// Blank lines [`next_cut`] tries before it gives up.
const CUT_TRIES: usize = 8;

/// The first cut at or after byte `from` that `enc` accepts (see [`Tokenizer::encode_long`]):
/// after the first or the second newline of "\n\n" followed by a letter, where the
/// [`CUT_CHECK`] bytes either side encode to the same ids whole as in two halves. After
/// [`CUT_TRIES`] blank lines rejected, none (the rest is one piece).
fn next_cut(text: &str, from: usize, enc: &impl Fn(&str) -> Result<Vec<u32>>) -> Result<Option<usize>> {
    let bytes = text.as_bytes();
    let mut tries = 0;
    let mut i = from.max(1);
    while i + 2 < bytes.len() && tries < CUT_TRIES {
        // A blank line: bytes i-1.. = "\n\n" and a letter next (never inside a UTF-8 sequence).
        if bytes[i - 1] == b'\n'
            && bytes[i] == b'\n'
            && text[i + 1..].chars().next().is_some_and(char::is_alphabetic)
        {
            for at in [i, i + 1] {
                let lo = floor_char(text, at.saturating_sub(CUT_CHECK));
                let hi = floor_char(text, (at + CUT_CHECK).min(text.len()));
                let mut halves = enc(&text[lo..at])?;
                halves.extend(enc(&text[at..hi])?);
                if enc(&text[lo..hi])? == halves {
                    return Ok(Some(at));
                }
            }
            tries += 1;
        }
        i += 1;
    }
    Ok(None)
}

/// The largest char boundary of `s` at or below `i`.
fn floor_char(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// llama2.c's tokenizer: pieces with merge scores; encode = bytes/codepoints to pieces, then
/// repeatedly merge the adjacent pair whose merged piece has the highest score.
pub struct Llama2cTokenizer {
    pieces: Vec<Vec<u8>>,
    scores: Vec<f32>,
    lookup: HashMap<Vec<u8>, u32>,
}

impl Llama2cTokenizer {
    pub fn read(path: &Path, vocab: usize) -> Result<Self> {
        let b = std::fs::read(path).with_context(|| format!("cannot read tokenizer {}", path.display()))?;
        let mut at = 4usize; // max_token_length
        let mut pieces = Vec::with_capacity(vocab);
        let mut scores = Vec::with_capacity(vocab);
        let rd4 = |at: usize| -> Result<[u8; 4]> {
            b.get(at..at + 4)
                .and_then(|s| s.try_into().ok())
                .ok_or_else(|| anyhow!("tokenizer {} is truncated", path.display()))
        };
        for _ in 0..vocab {
            scores.push(f32::from_le_bytes(rd4(at)?));
            let len = i32::from_le_bytes(rd4(at + 4)?);
            at += 8;
            let len = usize::try_from(len)
                .map_err(|_| anyhow!("tokenizer {} has a negative piece length", path.display()))?;
            pieces.push(
                b.get(at..at + len)
                    .ok_or_else(|| anyhow!("tokenizer {} is truncated", path.display()))?
                    .to_vec(),
            );
            at += len;
        }
        let lookup = pieces.iter().enumerate().map(|(i, p)| (p.clone(), i as u32)).collect();
        Ok(Llama2cTokenizer { pieces, scores, lookup })
    }

    pub fn encode(&self, text: &str, bos: bool) -> Vec<u32> {
        let mut t: Vec<u32> = vec![];
        if bos {
            t.push(1);
        }
        if !text.is_empty() {
            if let Some(&sp) = self.lookup.get(b" ".as_slice()) {
                t.push(sp);
            }
        }
        let mut buf = [0u8; 4];
        for c in text.chars() {
            let bytes = c.encode_utf8(&mut buf).as_bytes();
            match self.lookup.get(bytes) {
                Some(&id) => t.push(id),
                None => t.extend(bytes.iter().map(|&b| b as u32 + 3)),
            }
        }
        let start = bos as usize;
        let merged = self.merge(&mut t[start..]);
        t.truncate(start);
        t.extend(merged);
        t
    }

    /// The piece of `a` followed by `b`'s, if the vocabulary has it: (score, id).
    fn pair(&self, a: u32, b: u32) -> Option<(f32, u32)> {
        let mut m = self.pieces[a as usize].clone();
        m.extend_from_slice(&self.pieces[b as usize]);
        self.lookup.get(&m).map(|&id| (self.scores[id as usize], id))
    }

    /// llama2.c's merge loop (`encode` in run.c: merge the adjacent pair whose merged piece
    /// scores highest, the leftmost on a tie, until none merges) with the same result in
    /// O(n log n): the candidate pairs sit in a heap, the tokens in a linked list, and a
    /// candidate is stale when either side has merged since (a merged piece is longer, so a
    /// token id never comes back). run.c rescans every pair after each merge, O(n²): a
    /// 200 KB prompt took minutes.
    fn merge(&self, t: &mut [u32]) -> Vec<u32> {
        let n = t.len();
        let mut next: Vec<usize> = (1..=n).collect();
        let mut prev: Vec<Option<usize>> = (0..n).map(|i| i.checked_sub(1)).collect();
        let mut alive = vec![true; n];
        let mut heap = std::collections::BinaryHeap::new();
        let push = |heap: &mut std::collections::BinaryHeap<Candidate>, t: &[u32], l: usize, r: usize| {
            if let Some((score, id)) = self.pair(t[l], t[r]) {
                heap.push(Candidate { score, left: l, right: r, tokens: (t[l], t[r]), id });
            }
        };
        for i in 0..n.saturating_sub(1) {
            push(&mut heap, t, i, i + 1);
        }
        while let Some(c) = heap.pop() {
            let (l, r) = (c.left, c.right);
            if !alive[l] || !alive[r] || next[l] != r || (t[l], t[r]) != c.tokens {
                continue;
            }
            t[l] = c.id;
            alive[r] = false;
            next[l] = next[r];
            if next[r] < n {
                prev[next[r]] = Some(l);
            }
            if let Some(p) = prev[l] {
                push(&mut heap, t, p, l);
            }
            if next[l] < n {
                push(&mut heap, t, l, next[l]);
            }
        }
        (0..n).filter(|&i| alive[i]).map(|i| t[i]).collect()
    }

    pub fn decode(&self, ids: &[u32]) -> String {
        let mut out = vec![];
        for &id in ids {
            let Some(p) = self.pieces.get(id as usize) else { continue };
            // <0xXX> byte tokens
            if p.len() == 6 && p.starts_with(b"<0x") && p.ends_with(b">") {
                if let Ok(v) = u8::from_str_radix(std::str::from_utf8(&p[3..5]).unwrap_or(""), 16) {
                    out.push(v);
                    continue;
                }
            }
            if id <= 2 {
                continue; // <unk>, <s>, </s>
            }
            out.extend_from_slice(p);
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// A mergeable adjacent pair: the highest score first, then the leftmost (run.c's order).
struct Candidate {
    score: f32,
    left: usize,
    right: usize,
    /// The two tokens when the pair was found; the pair is stale once either changed.
    tokens: (u32, u32),
    id: u32,
}

impl Ord for Candidate {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.score.total_cmp(&o.score).then_with(|| o.left.cmp(&self.left))
    }
}
impl PartialOrd for Candidate {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl PartialEq for Candidate {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o).is_eq()
    }
}
impl Eq for Candidate {}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// run.c's merge loop as written there: rescan every adjacent pair, merge the best
    /// (strictly higher score wins, so the leftmost on a tie), repeat. The reference for the
    /// heap version.
    fn merge_quadratic(tk: &Llama2cTokenizer, mut t: Vec<u32>) -> Vec<u32> {
        loop {
            let mut best: Option<(f32, usize, u32)> = None;
            for i in 0..t.len().saturating_sub(1) {
                if let Some((s, id)) = tk.pair(t[i], t[i + 1]) {
                    if best.is_none_or(|(b, _, _)| s > b) {
                        best = Some((s, i, id));
                    }
                }
            }
            let Some((_, i, id)) = best else { return t };
            t[i] = id;
            t.remove(i + 1);
        }
    }

    /// Specials, the 256 byte tokens, then `pieces` with `scores`.
    fn tokenizer(pieces: &[&str], scores: &[f32]) -> Llama2cTokenizer {
        let mut p: Vec<Vec<u8>> = ["<unk>", "<s>", "</s>"].iter().map(|s| s.as_bytes().to_vec()).collect();
        p.extend((0..=255u8).map(|b| format!("<0x{b:02X}>").into_bytes()));
        p.extend(pieces.iter().map(|s| s.as_bytes().to_vec()));
        let mut sc = vec![0.0; 259];
        sc.extend_from_slice(scores);
        let lookup = p.iter().enumerate().map(|(i, x)| (x.clone(), i as u32)).collect();
        Llama2cTokenizer { pieces: p, scores: sc, lookup }
    }

    const PIECES: [&str; 14] =
        [" ", "a", "b", "c", "ab", "bc", "ca", "aa", "abc", "bca", "  ", " a", "aab", "cab"];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(
            std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256)
        ))]
        #[test]
        fn heap_merge_is_run_c_merge(
            scores in proptest::collection::vec(-4i8..4, PIECES.len()),
            text in "[abc é]{0,80}",
            bos in any::<bool>(),
        ) {
            // Small integer scores make ties common: the leftmost rule is exercised.
            let scores: Vec<f32> = scores.into_iter().map(f32::from).collect();
            let tk = tokenizer(&PIECES, &scores);
            let fast = tk.encode(&text, bos);
            let start = bos as usize;
            let mut slow = fast[..start].to_vec();
            // The unmerged sequence, as encode builds it.
            let mut raw = vec![];
            if !text.is_empty() {
                raw.push(tk.lookup[b" ".as_slice()]);
            }
            for c in text.chars() {
                let mut buf = [0u8; 4];
                let b = c.encode_utf8(&mut buf).as_bytes();
                match tk.lookup.get(b) {
                    Some(&id) => raw.push(id),
                    None => raw.extend(b.iter().map(|&x| x as u32 + 3)),
                }
            }
            slow.extend(merge_quadratic(&tk, raw));
            prop_assert_eq!(&fast, &slow);
            prop_assert_eq!(tk.decode(&fast[start..]), if text.is_empty() { String::new() } else { format!(" {text}") });
        }
    }

    #[test]
    fn a_long_prompt_encodes_in_linearithmic_time() {
        // 200 KB of text: run.c's loop needs ~10¹⁰ pair lookups here.
        let tk = tokenizer(&PIECES, &[1.0, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 2.0, 3.0, 3.0, 0.5, 0.5, 4.0, 4.0]);
        let text = "abc cab aab bca ".repeat(12_500);
        let t = std::time::Instant::now();
        let ids = tk.encode(&text, true);
        assert!(t.elapsed().as_secs_f64() < 10.0, "{:?}", t.elapsed());
        assert_eq!(tk.decode(&ids[1..]), format!(" {text}"));
    }
}
