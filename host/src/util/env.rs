//! Environment knobs (`$LLQ_*` A/B switches): read once, malformed values named.

use anyhow::{bail, Result};

/// `$name` if set; an error names it when it is not UTF-8 (the A/B knobs of the GPU paths and of calibration).
pub fn var(name: &str) -> Result<Option<String>> {
    match std::env::var(name) {
        Ok(v) => Ok(Some(v)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(e) => bail!("{name}: {e}"),
    }
}

/// `$name` as one of `choices` (by its exact spelling), `default` when unset, an error that
/// lists the spellings otherwise.
pub fn choice<T: Copy>(name: &str, default: T, choices: &[(&str, T)]) -> Result<T> {
    let Some(v) = var(name)? else { return Ok(default) };
    match choices.iter().find(|(k, _)| *k == v) {
        Some(&(_, t)) => Ok(t),
        None => {
            let names: Vec<String> = choices.iter().map(|(k, _)| format!("`{k}`")).collect();
            bail!("{name}={v:?}: expected one of {}", names.join(", "))
        }
    }
}
