//! `--opt-layer`: plugin options for the layers whose names match a glob.

/// One `--opt-layer`: a plugin option for the layers whose name matches a glob.
#[derive(Debug, Clone)]
pub struct LayerOpt {
    pub pattern: String,
    glob: glob::Pattern,
    pub key: String,
    pub value: String,
}

impl LayerOpt {
    pub fn new(pattern: &str, key: &str, value: &str) -> Result<LayerOpt, String> {
        let glob =
            glob::Pattern::new(pattern).map_err(|e| format!("`{pattern}` is not a glob pattern: {e}"))?;
        Ok(LayerOpt { pattern: pattern.into(), glob, key: key.into(), value: value.into() })
    }

    /// Whether it applies to weight `name` (`model.layers.3.mlp.down_proj.weight` is also
    /// matched as `layers.3.mlp.down_proj`).
    pub fn matches(&self, name: &str) -> bool {
        self.glob.matches(name) || self.glob.matches(short_name(name))
    }

    /// As given on the command line.
    pub fn spec(&self) -> String {
        format!("{}:{}={}", self.pattern, self.key, self.value)
    }
}

/// The short layer name patterns also match: `model.layers.3.mlp.down_proj.weight` →
/// `layers.3.mlp.down_proj`.
pub fn short_name(name: &str) -> &str {
    let short = name.strip_prefix("model.").unwrap_or(name);
    short.strip_suffix(".weight").unwrap_or(short)
}

/// Read an option file (`--opt-layer-file`, what `search-bits` writes): one
/// `PATTERN:KEY=VALUE` per line, `#` comments and blank lines skipped. Errors name the file
/// and line.
pub fn read_file(path: &std::path::Path) -> anyhow::Result<Vec<LayerOpt>> {
    use anyhow::Context;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read --opt-layer-file {}", path.display()))?;
    let mut out = vec![];
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let opt = parse(line)
            .map_err(|e| anyhow::anyhow!("--opt-layer-file {} line {}: {e}", path.display(), i + 1))?;
        out.push(opt);
    }
    if out.is_empty() {
        anyhow::bail!("--opt-layer-file {} holds no PATTERN:KEY=VALUE line", path.display());
    }
    Ok(out)
}

/// Parse `PATTERN:KEY=VALUE`: a glob over layer names, then an option.
pub fn parse(s: &str) -> Result<LayerOpt, String> {
    let (pattern, kv) = s
        .split_once(':')
        .ok_or_else(|| format!("`{s}` is not PATTERN:KEY=VALUE (e.g. 'layers.*.mlp.down_proj:bits=8')"))?;
    let (key, value) = crate::util::kv::parse(kv)?;
    LayerOpt::new(pattern.trim(), &key, &value)
}
