//! What `plugins check` says: one result per check, the plugin it checked, and the verdict.
//! The JSON form (`--json`) is the contract with CI: `format` names its version.

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const FORMAT: &str = "llq-plugin-check/1";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Fail,
    /// Does not apply to this plugin or this machine (the summary says why).
    Skip,
}

/// One check's outcome: a one-line summary and what was measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckResult {
    pub check: String,
    pub status: Status,
    pub summary: String,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub details: Value,
}

impl CheckResult {
    pub fn new(check: &str, status: Status, summary: impl Into<String>, details: Value) -> Self {
        CheckResult { check: check.to_string(), status, summary: summary.into(), details }
    }
    pub fn skip(check: &str, why: impl Into<String>) -> Self {
        Self::new(check, Status::Skip, why, Value::Null)
    }
}

/// The whole check of one plugin with one option set.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub format: String,
    pub llq_version: String,
    /// The plugin file as given, and its SHA-256.
    pub plugin: String,
    pub plugin_sha256: String,
    /// `--opt` pairs as given.
    pub options: Vec<(String, String)>,
    /// Whether each check ran in its own process (a crash fails that check only).
    pub isolated: bool,
    pub passed: bool,
    pub checks: Vec<CheckResult>,
}

impl Report {
    /// A table for the terminal.
    pub fn table(&self) -> String {
        let opts: Vec<String> = self.options.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut s = format!(
            "plugin check: {}{}{}\n",
            self.plugin,
            if opts.is_empty() { "" } else { " " },
            opts.join(" ")
        );
        for c in &self.checks {
            let label = match c.status {
                Status::Pass => "pass",
                Status::Fail => "FAIL",
                Status::Skip => "skip",
            };
            s.push_str(&format!("  {label}  {:<15} {}\n", c.check, c.summary));
        }
        let failed = self.checks.iter().filter(|c| c.status == Status::Fail).count();
        s.push_str(&if failed == 0 {
            format!("passed ({} checks)\n", self.checks.len())
        } else {
            format!("FAILED: {failed} of {} checks\n", self.checks.len())
        });
        s
    }
}
