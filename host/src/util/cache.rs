//! Where llq keeps what it can make again but would rather not: compiled PTX (`ptx/`), the
//! calibration text's token ids (`tokens/`).

use std::path::PathBuf;

/// `$LLQ_CACHE_DIR`, else `$XDG_CACHE_HOME/llq`, else `~/.cache/llq`.
pub fn dir() -> PathBuf {
    if let Some(d) = std::env::var_os("LLQ_CACHE_DIR") {
        return PathBuf::from(d);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("llq")
}
