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
        let short = name.strip_prefix("model.").unwrap_or(name);
        let short = short.strip_suffix(".weight").unwrap_or(short);
        self.glob.matches(name) || self.glob.matches(short)
    }

    /// As given on the command line.
    pub fn spec(&self) -> String {
        format!("{}:{}={}", self.pattern, self.key, self.value)
    }
}
