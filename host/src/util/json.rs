//! Reading JSON files with errors that name the real problem: serde_json's own message for a
//! file cut short ("EOF while parsing an object at line 3 column 0") or one saved with a
//! UTF-8 byte-order mark ("expected value at line 1 column 1") does not say what to fix.

use anyhow::{anyhow, Result};
use serde::de::DeserializeOwned;
use std::path::Path;

/// The UTF-8 byte-order mark some Windows editors write first.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Parse `bytes` (the contents of `path`) as a `T`. As Python's `json` module does, a BOM
/// is refused rather than skipped: RFC 8259 §8.1 says JSON text must not start with one.
pub fn parse<T: DeserializeOwned>(bytes: impl AsRef<[u8]>, path: &Path) -> Result<T> {
    let bytes = bytes.as_ref();
    if bytes.starts_with(BOM) {
        return Err(anyhow!(
            "{} starts with a UTF-8 byte-order mark (EF BB BF), which JSON does not allow (RFC 8259 §8.1); save it as UTF-8 without a BOM",
            path.display()
        ));
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(anyhow!("{} is empty; it should hold a JSON value", path.display()));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        use serde_json::error::Category;
        let at = format!("line {}, column {}", e.line(), e.column());
        match e.classify() {
            Category::Eof => anyhow!(
                "{} ends in the middle of its JSON ({at}): the file is truncated or was cut short while written",
                path.display()
            ),
            Category::Syntax => anyhow!("{} is not valid JSON: {e}", path.display()),
            Category::Data => anyhow!("{} has the wrong layout: {e}", path.display()),
            Category::Io => anyhow!("cannot read {}: {e}", path.display()),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Cfg {
        hidden_size: usize,
    }

    #[test]
    fn errors_name_the_problem() {
        let p = Path::new("config.json");
        let e = parse::<Cfg>(b"{\"hidden_size\": 6", p).unwrap_err().to_string();
        assert!(e.contains("truncated") && e.contains("config.json"), "{e}");
        let e = parse::<Cfg>(b"\xEF\xBB\xBF{\"hidden_size\": 6}", p).unwrap_err().to_string();
        assert!(e.contains("byte-order mark"), "{e}");
        let e = parse::<Cfg>(b"{\"hidden_size\": \"six\"}", p).unwrap_err().to_string();
        assert!(e.contains("wrong layout") && e.contains("invalid type"), "{e}");
        let e = parse::<Cfg>(b"\"a string\"", p).unwrap_err().to_string();
        assert!(e.contains("wrong layout"), "{e}");
        let e = parse::<Cfg>(b"{\"hidden_size\": 6,}", p).unwrap_err().to_string();
        assert!(e.contains("not valid JSON"), "{e}");
        let e = parse::<Cfg>(b"  \n", p).unwrap_err().to_string();
        assert!(e.contains("is empty"), "{e}");
        assert_eq!(parse::<Cfg>(b"{\"hidden_size\": 6}", p).unwrap().hidden_size, 6);
    }
}
