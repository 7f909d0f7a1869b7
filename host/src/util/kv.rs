//! `key=value`: the one syntax of `--opt`, `--task-opt`, `--opt-layer`'s option part and
//! `search-bits --candidate`'s parts.

/// Split `key=value` at the first `=`, both sides trimmed; an empty key is an error.
pub fn parse(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("`{s}` is not key=value"))?;
    if k.trim().is_empty() {
        return Err(format!("`{s}` has an empty key"));
    }
    Ok((k.trim().to_string(), v.trim().to_string()))
}
