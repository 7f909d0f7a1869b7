//! CoQA metrics exactly as the official `evaluate-v1.0.py` defines them (and as lm-eval's
//! `squad_metrics` repeats them): answer normalization, exact match, multiset-token F1, and
//! the leave-one-out average over several gold answers.

/// Python's `str.isspace()` (what `str.split()` splits on): Unicode White_Space plus the
/// ASCII separators U+001C..U+001F, which Rust's `char::is_whitespace` leaves out.
fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `\w` under `re.UNICODE`: letters, digits and the underscore.
fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// `normalize_answer`: lowercase; drop ASCII punctuation (`string.punctuation`); replace the
/// whole words a/an/the with a space; collapse whitespace like `' '.join(s.split())`.
pub fn normalize_answer(s: &str) -> String {
    // Whole-string lowercasing, as Python's str.lower() (context-sensitive final sigma).
    let lowered = s.to_lowercase();
    let mut no_articles = String::with_capacity(lowered.len());
    // A maximal run of word characters (after punctuation removal) is dropped when it is
    // exactly a, an or the.
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if matches!(word.as_str(), "a" | "an" | "the") {
            out.push(' ');
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in lowered.chars().filter(|c| !c.is_ascii_punctuation()) {
        if is_word(c) {
            word.push(c);
        } else {
            flush(&mut word, &mut no_articles);
            no_articles.push(c);
        }
    }
    flush(&mut word, &mut no_articles);
    let mut out = String::with_capacity(no_articles.len());
    for t in no_articles.split(is_py_space).filter(|t| !t.is_empty()) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(t);
    }
    out
}

/// `get_tokens`: the normalized answer split on spaces (none for an empty string).
fn tokens(normalized: &str) -> Vec<&str> {
    normalized.split(' ').filter(|t| !t.is_empty()).collect()
}

/// Multiset-overlap F1 of two token lists (`compute_f1` after tokenization).
fn f1_tokens(gold: &[&str], pred: &[&str]) -> f64 {
    if gold.is_empty() || pred.is_empty() {
        return (gold == pred) as u8 as f64;
    }
    // Each gold token can match one predicted token: the size of the multiset intersection.
    let mut used = vec![false; gold.len()];
    let mut same = 0usize;
    for p in pred {
        if let Some(i) = (0..gold.len()).find(|&i| !used[i] && gold[i] == *p) {
            used[i] = true;
            same += 1;
        }
    }
    if same == 0 {
        return 0.0;
    }
    let precision = same as f64 / pred.len() as f64;
    let recall = same as f64 / gold.len() as f64;
    2.0 * precision * recall / (precision + recall)
}

/// `compute_exact`: 1 when the normalized strings are equal.
pub fn exact(gold: &str, pred: &str) -> f64 {
    (normalize_answer(gold) == normalize_answer(pred)) as u8 as f64
}

/// `compute_f1`: multiset token overlap; if either side has no tokens, 1 when both are empty.
pub fn f1(gold: &str, pred: &str) -> f64 {
    f1_tokens(&tokens(&normalize_answer(gold)), &tokens(&normalize_answer(pred)))
}

/// `_compute_turn_score`: with n > 1 golds, average over i of the max over the other n−1;
/// with one gold, the score against it. Returns (em, f1) on a 0–1 scale. Each gold's score
/// against the prediction does not depend on the subset, so it is computed once.
pub fn turn_score(golds: &[String], pred: &str) -> (f64, f64) {
    if golds.is_empty() {
        return (0.0, 0.0);
    }
    let p = normalize_answer(pred);
    let pt = tokens(&p);
    let each: Vec<(f64, f64)> = golds
        .iter()
        .map(|g| {
            let g = normalize_answer(g);
            ((g == p) as u8 as f64, f1_tokens(&tokens(&g), &pt))
        })
        .collect();
    let best = |skip: Option<usize>| {
        each.iter()
            .enumerate()
            .filter(|(j, _)| Some(*j) != skip)
            .fold((0f64, 0f64), |(e, f), (_, s)| (e.max(s.0), f.max(s.1)))
    };
    if golds.len() == 1 {
        return best(None);
    }
    let (mut em, mut f) = (0.0, 0.0);
    for i in 0..golds.len() {
        let (e, ff) = best(Some(i));
        em += e;
        f += ff;
    }
    (em / golds.len() as f64, f / golds.len() as f64)
}

/// lm-eval's gold list: the turn's answer, then each additional answer not already present
/// case-insensitively.
pub fn lm_eval_golds(answer: &str, additional: &[String]) -> Vec<String> {
    let mut out = vec![answer.to_string()];
    for a in additional {
        if !out.iter().any(|o| o.to_lowercase() == a.to_lowercase()) {
            out.push(a.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn normalization_follows_the_official_script() {
        assert_eq!(normalize_answer("The  Cat, a dog & AN owl!"), "cat dog owl");
        // Articles only as whole words: "another", "theory", "anthem" stay.
        assert_eq!(normalize_answer("another theory of an anthem"), "another theory of anthem");
        // Punctuation removal joins words ("farmer's" → "farmers"), then articles go.
        assert_eq!(normalize_answer("the farmer's"), "farmers");
        // Only ASCII punctuation is removed: Unicode quotes and dashes stay.
        assert_eq!(normalize_answer("“white” — grey"), "“white” — grey");
        assert_eq!(normalize_answer("?!..."), "");
        // Python's split() also splits on U+001F (unit separator) and NBSP.
        assert_eq!(normalize_answer("a\u{1f}b\u{a0}c"), "b c");
    }

    #[test]
    fn f1_is_multiset_overlap() {
        // gold: [orange, with, white, tiger, stripes]; pred: [orange, white] → P 1, R 2/5.
        let v = f1("orange with white tiger stripes", "orange and white");
        // pred tokens [orange, and, white]: same 2 → P 2/3, R 2/5 → F1 = 2·(2/3)(2/5)/(2/3+2/5) = 0.5
        assert!((v - 0.5).abs() < 1e-12, "{v}");
        // Repeated tokens count once per occurrence: gold [no, no], pred [no] → P 1, R 1/2.
        assert!((f1("no no", "no") - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(f1("", ""), 1.0);
        assert_eq!(f1("the", ""), 1.0); // both normalize to no tokens
        assert_eq!(f1("white", ""), 0.0);
        assert_eq!(f1("!!!", "?"), 1.0); // punctuation-only on both sides
        assert_eq!(exact("The White.", "white"), 1.0);
    }

    #[test]
    fn leave_one_out_versus_lm_eval_dedup() {
        let golds = s(&["white", "white", "White", "grey"]);
        // Official: each leave-one-out subset still contains a "white" → 1.0 (100 on its scale).
        assert_eq!(turn_score(&golds, "white"), (1.0, 1.0));
        // lm-eval: dedup case-insensitively → [white, grey]; leave-one-out → (0 + 1) / 2.
        let lm = lm_eval_golds(&golds[0], &golds[1..]);
        assert_eq!(lm, s(&["white", "grey"]));
        assert_eq!(turn_score(&lm, "white"), (0.5, 0.5));
        // One gold: "in a barn" → [in, barn]; "a barn" → [barn]: EM 0, F1 = 2·1·½/(1+½) = 2/3.
        assert_eq!(turn_score(&s(&["in a barn"]), "a barn"), (0.0, 2.0 / 3.0));
    }
}
