//! The one option format of llq. Plugins' `--opt` and tasks' `--task-opt` are declared with
//! the same [`OptionSpec`], spelled the same way, checked by the same parser and refused with
//! the same messages; the host and the task SDK both call [`check`].
//!
//! A kind is spelled `int`, `float`, `bool` or `string`, optionally followed by the allowed
//! values: `int:64|128|256`, `string:official|lm-eval` ([`OptionSpec::kind_spelling`]; tasks
//! carry this string in their WIT `option-spec.kind`; `enum:a|b`, the tasks' first spelling,
//! still reads as `string:a|b`). Booleans are `true`/`false`, also `1`/`0`, `yes`/`no`,
//! `on`/`off`, any case (what users type for transformers' and bitsandbytes' flags).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The type of an option value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptionKind {
    Int,
    Float,
    Bool,
    String,
}

impl OptionKind {
    pub fn name(self) -> &'static str {
        match self {
            OptionKind::Int => "int",
            OptionKind::Float => "float",
            OptionKind::Bool => "bool",
            OptionKind::String => "string",
        }
    }
}

/// One option a method or task accepts (`--opt name=value`, `--task-opt name=value`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptionSpec {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: OptionKind,
    pub default: String,
    pub help: String,
    /// Allowed values, when the option is an enumeration.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub choices: Vec<String>,
}

impl OptionSpec {
    pub fn new(name: &str, kind: OptionKind, default: &str, help: &str) -> Self {
        OptionSpec { name: name.into(), kind, default: default.into(), help: help.into(), choices: vec![] }
    }

    pub fn choices(mut self, choices: &[&str]) -> Self {
        self.choices = choices.iter().map(|c| c.to_string()).collect();
        self
    }

    /// A spec from the textual kind (`int`, `string:a|b`, …; see the module docs).
    pub fn from_spelling(name: &str, kind: &str, default: &str, help: &str) -> Result<Self, String> {
        let (k, choices) = match kind.split_once(':') {
            Some((k, c)) => (k, c.split('|').map(str::to_string).collect()),
            None => (kind, vec![]),
        };
        let kind = match k {
            "int" => OptionKind::Int,
            "float" => OptionKind::Float,
            "bool" => OptionKind::Bool,
            "string" | "enum" => OptionKind::String,
            _ => {
                return Err(format!(
                "option `{name}` has unknown kind `{kind}` (int, float, bool or string, optionally `:a|b`)"
            ))
            }
        };
        if k == "enum" && choices.is_empty() {
            return Err(format!("option `{name}` has kind `enum` without values"));
        }
        Ok(OptionSpec { name: name.into(), kind, default: default.into(), help: help.into(), choices })
    }

    /// The textual kind: `int`, or `int:64|128` with choices.
    pub fn kind_spelling(&self) -> String {
        if self.choices.is_empty() {
            self.kind.name().to_string()
        } else {
            format!("{}:{}", self.kind.name(), self.choices.join("|"))
        }
    }

    /// Check one value against this spec.
    pub fn check(&self, value: &str) -> Result<(), String> {
        let ok = match self.kind {
            OptionKind::Int => value.parse::<i64>().is_ok(),
            OptionKind::Float => value.parse::<f64>().map(f64::is_finite).unwrap_or(false),
            OptionKind::Bool => parse_bool(value).is_some(),
            OptionKind::String => true,
        };
        if !ok {
            return Err(format!("option `{}` expects {}, got `{value}`", self.name, self.kind.name()));
        }
        if !self.choices.is_empty() && !self.choices.iter().any(|c| c == value) {
            return Err(format!(
                "option `{}` must be one of {}, got `{value}`",
                self.name,
                self.choices.join(", ")
            ));
        }
        Ok(())
    }
}

/// `true`/`false` and the usual synonyms (see the module docs).
pub fn parse_bool(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// Check `given` (name, value) pairs against `specs` — unknown names and ill-typed values are
/// errors — and return every option's value, defaults filled in (a later pair wins).
pub fn check(specs: &[OptionSpec], given: &[(String, String)]) -> Result<BTreeMap<String, String>, String> {
    let mut values = BTreeMap::new();
    for (name, value) in given {
        let Some(spec) = specs.iter().find(|s| &s.name == name) else {
            let known: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
            let known = if known.is_empty() { "none".to_string() } else { known.join(", ") };
            return Err(format!("unknown option `{name}` (known: {known})"));
        };
        spec.check(value)?;
        values.insert(name.clone(), value.clone());
    }
    for spec in specs {
        values.entry(spec.name.clone()).or_insert_with(|| spec.default.clone());
    }
    Ok(values)
}

/// Validated option values of a plugin (defaults filled in).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Options {
    values: BTreeMap<String, String>,
}

impl Options {
    /// Parse the host's JSON object (`{"block_size": "64"}`; JSON numbers and booleans are
    /// accepted too) against `specs` with [`check`]; errors start with `method`.
    pub fn parse(method: &str, specs: &[OptionSpec], json: &str) -> crate::Result<Options> {
        let given: BTreeMap<String, serde_json::Value> = if json.trim().is_empty() {
            BTreeMap::new()
        } else {
            serde_json::from_str(json).map_err(|e| format!("{method}: options are not a JSON object: {e}"))?
        };
        let mut pairs = Vec::with_capacity(given.len());
        for (k, v) in given {
            let s = match v {
                serde_json::Value::String(s) => s,
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::Bool(b) => b.to_string(),
                other => crate::bail!("{method}: option `{k}` must be a scalar, got {other}"),
            };
            pairs.push((k, s));
        }
        let values = check(specs, &pairs).map_err(|e| format!("{method}: {e}"))?;
        Ok(Options { values })
    }

    pub fn get_str(&self, name: &str) -> crate::Result<&str> {
        self.values
            .get(name)
            .map(|s| s.as_str())
            .ok_or_else(|| format!("option `{name}` is not declared").into())
    }
    pub fn get_usize(&self, name: &str) -> crate::Result<usize> {
        let s = self.get_str(name)?;
        s.parse().map_err(|_| format!("option `{name}`: `{s}` is not a non-negative integer").into())
    }
    pub fn get_f64(&self, name: &str) -> crate::Result<f64> {
        let s = self.get_str(name)?;
        s.parse().map_err(|_| format!("option `{name}`: `{s}` is not a number").into())
    }
    pub fn get_bool(&self, name: &str) -> crate::Result<bool> {
        parse_bool(self.get_str(name)?).ok_or_else(|| format!("option `{name}` is not a boolean").into())
    }
    /// All values, as the canonical JSON object the host records in results.
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.values).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn specs() -> Vec<OptionSpec> {
        vec![
            OptionSpec::new("block_size", OptionKind::Int, "64", "").choices(&["64", "128"]),
            OptionSpec::from_spelling("mode", "enum:official|lm-eval", "official", "").unwrap(),
            OptionSpec::from_spelling("double_quant", "bool", "false", "").unwrap(),
        ]
    }

    #[test]
    fn one_parser_one_set_of_messages() {
        let s = specs();
        let v =
            check(&s, &[("double_quant".into(), "YES".into()), ("mode".into(), "lm-eval".into())]).unwrap();
        assert_eq!(
            (v["block_size"].as_str(), v["mode"].as_str(), v["double_quant"].as_str()),
            ("64", "lm-eval", "YES")
        );
        let e = |k: &str, v: &str| check(&s, &[(k.into(), v.into())]).unwrap_err();
        assert_eq!(e("mode", "fast"), "option `mode` must be one of official, lm-eval, got `fast`");
        assert_eq!(e("block_size", "1.5"), "option `block_size` expects int, got `1.5`");
        assert_eq!(e("block_size", "63"), "option `block_size` must be one of 64, 128, got `63`");
        assert_eq!(e("double_quant", "maybe"), "option `double_quant` expects bool, got `maybe`");
        assert_eq!(e("modes", "x"), "unknown option `modes` (known: block_size, mode, double_quant)");
        assert_eq!(check(&[], &[("a".into(), "1".into())]).unwrap_err(), "unknown option `a` (known: none)");
    }

    #[test]
    fn kinds_spell_and_read_back() {
        for s in specs() {
            let again = OptionSpec::from_spelling(&s.name, &s.kind_spelling(), &s.default, &s.help).unwrap();
            assert_eq!(again, s);
        }
        assert_eq!(specs()[1].kind_spelling(), "string:official|lm-eval");
        assert!(OptionSpec::from_spelling("x", "list", "", "").unwrap_err().contains("unknown kind `list`"));
        assert!(OptionSpec::from_spelling("x", "enum", "", "").is_err());
    }

    #[test]
    fn plugin_options_parse_json_scalars() {
        let o = Options::parse("nf4", &specs(), r#"{"block_size": 128, "double_quant": true}"#).unwrap();
        assert_eq!((o.get_usize("block_size").unwrap(), o.get_bool("double_quant").unwrap()), (128, true));
        assert_eq!(o.to_json(), r#"{"block_size":"128","double_quant":"true","mode":"official"}"#);
        let e = Options::parse("nf4", &specs(), r#"{"colour": "red"}"#).unwrap_err();
        assert_eq!(e.0, "nf4: unknown option `colour` (known: block_size, mode, double_quant)");
    }
}
