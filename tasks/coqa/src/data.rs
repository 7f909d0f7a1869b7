//! CoQA datasets: the official layout (`coqa-dev-v1.0.json`: `{"data": [story…]}`, questions
//! and answers as lists of `{turn_id, input_text}`, `additional_answers` as a map of such
//! lists) and the HF/lm-eval layout (JSON list or JSONL of rows whose `questions`/`answers`
//! are `{input_text: [...]}` columns). Both become [`Story`].

use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
pub struct Story {
    pub id: String,
    pub source: String,
    pub story: String,
    pub questions: Vec<String>,
    /// The official file's `turn_id` of each question (1, 2, … in HF rows).
    pub turn_ids: Vec<u64>,
    pub answers: Vec<String>,
    /// One list per additional annotator, aligned with `questions`.
    pub additional: Vec<Vec<String>>,
}

fn text_list(v: &Value, what: &str, id: &str) -> Result<Vec<String>, String> {
    // Official: [{"turn_id":1,"input_text":"..."}]; HF: {"input_text": ["..."]}.
    if let Some(arr) = v.as_array() {
        return arr
            .iter()
            .map(|x| {
                x["input_text"]
                    .as_str()
                    .map(str::to_string)
                    .ok_or_else(|| format!("story {id}: {what} entry without input_text"))
            })
            .collect();
    }
    if let Some(arr) = v.get("input_text").and_then(|x| x.as_array()) {
        return arr
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| format!("story {id}: {what} input_text is not text"))
            })
            .collect();
    }
    Err(format!("story {id}: `{what}` is neither a list of turns nor an input_text column"))
}

fn story_of(row: &Value, index: usize) -> Result<Story, String> {
    let id = row["id"].as_str().map(str::to_string).unwrap_or_else(|| format!("#{index}"));
    let story = row["story"].as_str().ok_or_else(|| format!("story {id}: no `story` text"))?.to_string();
    let questions = text_list(&row["questions"], "questions", &id)?;
    let answers = text_list(&row["answers"], "answers", &id)?;
    let turn_ids = match row["questions"].as_array() {
        Some(arr) => arr
            .iter()
            .enumerate()
            .map(|(i, q)| {
                q.get("turn_id").map_or(Some(i as u64 + 1), |t| t.as_u64()).ok_or_else(|| {
                    format!("story {id}: question {} has a turn_id that is not a whole number", i + 1)
                })
            })
            .collect::<Result<Vec<_>, _>>()?,
        None => (1..=questions.len() as u64).collect(),
    };
    if questions.is_empty() || questions.len() != answers.len() {
        return Err(format!("story {id}: {} questions but {} answers", questions.len(), answers.len()));
    }
    let mut additional = vec![];
    if let Some(map) = row.get("additional_answers").and_then(|a| a.as_object()) {
        for (k, v) in map {
            let list = text_list(v, &format!("additional_answers.{k}"), &id)?;
            if list.len() != questions.len() {
                return Err(format!(
                    "story {id}: additional_answers.{k} has {} turns, expected {}",
                    list.len(),
                    questions.len()
                ));
            }
            additional.push(list);
        }
    }
    let source = row["source"].as_str().unwrap_or("unknown").to_string();
    Ok(Story { id, source, story, questions, turn_ids, answers, additional })
}

/// Parse either layout; anything else is an error saying what was expected.
pub fn parse(bytes: &[u8]) -> Result<Vec<Story>, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "CoQA data is not UTF-8 text".to_string())?;
    let rows: Vec<Value> = match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(o)) => {
            match o.get("data") {
                Some(Value::Array(a)) => a.clone(),
                // A JSONL file with a single row parses as one JSON object.
                None if o.contains_key("story") => vec![Value::Object(o)],
                _ => return Err(
                    "CoQA JSON object has no `data` list (expected the official coqa-dev-v1.0.json layout)"
                        .into(),
                ),
            }
        }
        Ok(Value::Array(a)) => a,
        Ok(_) => return Err("CoQA data must be the official JSON, a JSON list of rows, or JSONL".into()),
        Err(_) => text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| {
                serde_json::from_str(l)
                    .map_err(|e| format!("CoQA data is not JSON, and line {} is not a JSONL row: {e}", i + 1))
            })
            .collect::<Result<_, _>>()?,
    };
    if rows.is_empty() {
        return Err("CoQA data contains no stories".into());
    }
    rows.iter().enumerate().map(|(i, r)| story_of(r, i)).collect()
}

/// lm-eval's CoQA prompt for turn `t` (0-based): the story, the earlier turns with their gold
/// answers, then the question and "A:".
pub fn prompt(s: &Story, t: usize) -> String {
    let mut p = format!("{}\n\n", s.story);
    for k in 0..t {
        p.push_str(&format!("Q: {}\n\nA: {}\n\n", s.questions[k], s.answers[k]));
    }
    p.push_str(&format!("Q: {}\n\nA:", s.questions[t]));
    p
}

/// lm-eval's answer extraction: first line of the stripped generation.
pub fn prediction(generated: &str) -> String {
    generated.trim().split('\n').next().unwrap_or("").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/coqa/coqa-dev-sample.json"))
            .unwrap()
    }

    #[test]
    fn official_sample_parses() {
        let s = parse(&sample()).unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].source, "mctest");
        assert_eq!(s[0].questions.len(), 12);
        assert_eq!(s[0].questions[0], "What color was Cotton?");
        assert_eq!(s[0].additional.len(), 3);
        assert_eq!(s[0].additional[0][4], "orange with white tiger stripes");
    }

    #[test]
    fn hf_rows_as_jsonl_parse_to_the_same_story() {
        let off = &parse(&sample()).unwrap()[0];
        let extra: serde_json::Map<String, Value> = off
            .additional
            .iter()
            .enumerate()
            .map(|(i, a)| (i.to_string(), serde_json::json!({ "input_text": a })))
            .collect();
        let row = serde_json::json!({"id": off.id, "source": off.source, "story": off.story,
            "questions": {"input_text": off.questions}, "answers": {"input_text": off.answers},
            "additional_answers": extra});
        let jsonl = format!("{row}\n{row}\n");
        let hf = parse(jsonl.as_bytes()).unwrap();
        assert_eq!(hf.len(), 2);
        assert_eq!(&hf[0], off);
        assert_eq!(parse(format!("{row}\n").as_bytes()).unwrap(), vec![off.clone()], "one-row JSONL");
    }

    #[test]
    fn other_input_is_rejected_clearly() {
        assert!(parse(b"{\"version\": 1}").unwrap_err().contains("no `data` list"));
        assert!(parse(b"hello\n").unwrap_err().contains("not a JSONL row"));
        assert!(parse(b"[]").unwrap_err().contains("no stories"));
        let e =
            parse(br#"[{"id":"x","story":"s","questions":[{"input_text":"q"}],"answers":[]}]"#).unwrap_err();
        assert!(e.contains("story x: 1 questions but 0 answers"), "{e}");
    }

    #[test]
    fn prompt_matches_lm_eval_layout() {
        let s = Story {
            id: "i".into(),
            source: "mctest".into(),
            story: "S.".into(),
            questions: vec!["Q1?".into(), "Q2?".into()],
            turn_ids: vec![1, 2],
            answers: vec!["a1".into(), "a2".into()],
            additional: vec![],
        };
        assert_eq!(prompt(&s, 0), "S.\n\nQ: Q1?\n\nA:");
        assert_eq!(prompt(&s, 1), "S.\n\nQ: Q1?\n\nA: a1\n\nQ: Q2?\n\nA:");
        assert_eq!(prediction("  white\nQ: next"), "white");
    }
}
