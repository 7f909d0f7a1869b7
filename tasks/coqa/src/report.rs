//! The official script's report: `model_performance` of `evaluate-v1.0.py`, key for key.

/// Source → domain name, in the official script's order (in-domain first).
pub const DOMAINS: &[(&str, &str)] = &[
    ("mctest", "children_stories"),
    ("gutenberg", "literature"),
    ("race", "mid-high_school"),
    ("cnn", "news"),
    ("wikipedia", "wikipedia"),
    ("reddit", "reddit"),
    ("science", "science"),
];
const IN_DOMAIN: &[&str] = &["mctest", "gutenberg", "race", "cnn", "wikipedia"];

/// One gold turn's scores on a 0–1 scale (0 when it had no prediction).
pub struct Turn {
    pub source: String,
    pub em: f64,
    pub f1: f64,
}

/// Python's `round(x, 1)`: the exact binary value rounded to one decimal, ties to even.
pub fn py_round1(x: f64) -> f64 {
    // `{:.1}` formats the exact value of x, rounding ties to even, like CPython's dtoa.
    format!("{x:.1}").parse().unwrap_or(x)
}

#[derive(Default, Clone, Copy)]
struct Sum {
    em: f64,
    f1: f64,
    turns: u64,
}

fn entry(out: &mut String, key: &str, s: Sum, last: bool) {
    let pct = |v: f64| {
        let r = py_round1(v / (s.turns.max(1) as f64) * 100.0);
        // Python prints floats with repr: always a decimal point.
        if r.fract() == 0.0 {
            format!("{r:.1}")
        } else {
            format!("{r}")
        }
    };
    out.push_str(&format!(
        "  {}: {{\n    \"em\": {},\n    \"f1\": {},\n    \"turns\": {}\n  }}{}\n",
        serde_json::to_string(key).unwrap_or_default(),
        pct(s.em),
        pct(s.f1),
        s.turns,
        if last { "" } else { "," }
    ));
}

/// `json.dumps(model_performance, indent=2)`. Totals are summed in the script's order
/// (turns within a source, then sources in `DOMAINS` order) so float results match.
/// Sources outside the official seven (custom data) follow under their own names and count
/// toward `overall` only.
pub fn official_json(turns: &[Turn]) -> String {
    let mut sums: Vec<(String, Sum)> = DOMAINS.iter().map(|(s, _)| (s.to_string(), Sum::default())).collect();
    for t in turns {
        let i = match sums.iter().position(|(s, _)| *s == t.source) {
            Some(i) => i,
            None => {
                sums.push((t.source.clone(), Sum::default()));
                sums.len() - 1
            }
        };
        let s = &mut sums[i].1;
        s.em += t.em;
        s.f1 += t.f1;
        s.turns += 1;
    }
    let (mut ind, mut outd, mut other) = (Sum::default(), Sum::default(), Sum::default());
    let mut out = String::from("{\n");
    for (source, s) in &sums {
        let domain = DOMAINS.iter().find(|(src, _)| src == source).map_or(source.as_str(), |(_, d)| d);
        entry(&mut out, domain, *s, false);
        let acc = if IN_DOMAIN.contains(&source.as_str()) {
            &mut ind
        } else if DOMAINS.iter().any(|(src, _)| src == source) {
            &mut outd
        } else {
            &mut other
        };
        acc.em += s.em;
        acc.f1 += s.f1;
        acc.turns += s.turns;
    }
    entry(&mut out, "in_domain", ind, false);
    entry(&mut out, "out_domain", outd, false);
    let all = Sum {
        em: ind.em + outd.em + other.em,
        f1: ind.f1 + outd.f1 + other.f1,
        turns: ind.turns + outd.turns + other.turns,
    };
    entry(&mut out, "overall", all, true);
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_rounding() {
        // Values checked with CPython 3.11: round(0.25, 1) == 0.2, round(0.35, 1) == 0.3
        // (0.35 is 0.34999… in binary), round(83.25, 1) == 83.2, round(2.675, 1) == 2.7.
        assert_eq!(py_round1(0.25), 0.2);
        assert_eq!(py_round1(0.35), 0.3);
        assert_eq!(py_round1(83.25), 83.2);
        assert_eq!(py_round1(2.675), 2.7);
        assert_eq!(py_round1(100.0), 100.0);
        assert_eq!((py_round1(0.05), py_round1(0.15)), (0.1, 0.1));
    }

    #[test]
    fn layout_is_the_official_one() {
        let turns = [
            Turn { source: "mctest".into(), em: 1.0, f1: 1.0 },
            Turn { source: "mctest".into(), em: 0.0, f1: 0.5 },
        ];
        let j = official_json(&turns);
        let v: serde_json::Value = serde_json::from_str(&j).unwrap();
        assert_eq!(v["children_stories"]["f1"], 75.0);
        assert_eq!(v["children_stories"]["em"], 50.0);
        assert_eq!(v["children_stories"]["turns"], 2);
        assert_eq!(v["reddit"]["turns"], 0);
        assert_eq!(v["out_domain"]["f1"], 0.0);
        assert_eq!(v["overall"]["f1"], 75.0);
        let keys: Vec<&str> = j
            .lines()
            .filter(|l| l.starts_with("  \""))
            .map(|l| l.trim().split('"').nth(1).unwrap())
            .collect();
        assert_eq!(
            keys,
            [
                "children_stories",
                "literature",
                "mid-high_school",
                "news",
                "wikipedia",
                "reddit",
                "science",
                "in_domain",
                "out_domain",
                "overall"
            ]
        );
        assert!(j.contains("\"em\": 50.0,\n    \"f1\": 75.0,\n    \"turns\": 2\n  },"), "{j}");
    }
}
