//! `run.json`: what a run in an `--out` folder is, written before its first sample. `run
//! --resume` compares the run it is asked to do with it and refuses a difference, naming the
//! field, so one `samples.jsonl` never mixes two models, methods, tasks or datasets. Fields
//! that do not change a sample's result (the batch size, the thread count, `--limit`) are left
//! out: a resumed run may change them (a larger `--limit` extends a run).

use crate::util::fs::write_json;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The value of `schema` in `run.json`.
pub const MANIFEST_SCHEMA: &str = "llq-run/1";
/// The file name, beside `samples.jsonl`.
pub const MANIFEST_FILE: &str = "run.json";

/// Fields known only once the model has loaded; the check before loading skips them.
const AFTER_LOAD: &[&str] = &["model_sha256", "eos_token_ids"];
/// Recorded for the reader, never compared: a rebuilt host of the same version may resume.
const INFORMATIONAL: &[&str] = &["llq_revision"];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunManifest {
    /// `"llq-run/1"`.
    pub schema: String,
    /// The host's package version (a new version may compute differently).
    pub llq_version: String,
    /// The git revision the host was built from; not compared.
    pub llq_revision: String,
    /// Content hash of the model weights (as `results.json` `model.sha256`).
    pub model_sha256: String,
    /// `cpu` or `cuda` (they compute in f32 and bf16).
    pub device_kind: String,
    /// End-of-sequence tokens generation stops at (from the model's config files).
    pub eos_token_ids: Vec<u32>,
    /// SHA-256 of the plugin file; null without `--quant`.
    pub plugin_sha256: Option<String>,
    /// Every plugin option, defaults filled in (the plugin's canonical form).
    pub plugin_options: Option<BTreeMap<String, String>>,
    pub quantize_lm_head: bool,
    /// `--opt-layer` arguments, in order.
    #[serde(default)]
    pub plugin_layer_options: Vec<String>,
    /// The calibration run's text hash and shape; null for methods that need none.
    pub calibration: Option<BTreeMap<String, String>>,
    /// SHA-256 of the task component.
    pub task_sha256: String,
    /// `--task-opt` values as given.
    pub task_options: BTreeMap<String, String>,
    /// SHA-256 of `--data`.
    pub data_sha256: String,
    pub chat_template: bool,
    /// Tokens per rolling window after the model's cap.
    pub window: usize,
    /// `none`, `in-process`, or `stored <baseline model sha256>`.
    pub kl_baseline: String,
    pub save_logprobs: bool,
}

impl RunManifest {
    pub fn path(out: &Path) -> PathBuf {
        out.join(MANIFEST_FILE)
    }

    /// The manifest of the run in `out`, if it has one.
    pub fn read(out: &Path) -> Result<Option<RunManifest>> {
        let path = Self::path(out);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let v: serde_json::Value = crate::util::json::parse(&text, &path)?;
        if v["schema"] != MANIFEST_SCHEMA {
            bail!("{} is not an {MANIFEST_SCHEMA} run manifest (schema {})", path.display(), v["schema"]);
        }
        let m = serde_json::from_value(v)
            .with_context(|| format!("{} does not follow {MANIFEST_SCHEMA}", path.display()))?;
        Ok(Some(m))
    }

    pub fn write(&self, out: &Path) -> Result<()> {
        write_json(&Self::path(out), self)
    }

    /// The fields that differ from `stored` (skipping those named in `skip` and the
    /// informational ones), each as `field: stored … , now …`.
    fn differences(&self, stored: &RunManifest, skip: &[&str]) -> Vec<String> {
        let (a, b) = (serde_json::to_value(stored), serde_json::to_value(self));
        let (Ok(serde_json::Value::Object(a)), Ok(serde_json::Value::Object(b))) = (a, b) else {
            return vec!["the manifest does not serialize".into()];
        };
        let short = |v: &serde_json::Value| {
            let s = v.to_string();
            if s.chars().count() > 80 {
                format!("{}…", s.chars().take(80).collect::<String>())
            } else {
                s
            }
        };
        a.iter()
            .filter(|(k, _)| !skip.contains(&k.as_str()) && !INFORMATIONAL.contains(&k.as_str()))
            .filter(|(k, v)| b.get(*k) != Some(*v))
            .map(|(k, v)| {
                format!("{k}: stored {}, now {}", short(v), b.get(k).map(short).unwrap_or_default())
            })
            .collect()
    }

    /// Refuse to resume `stored` (the run in `out`) as this run; `loaded` says whether the
    /// model-dependent fields are known yet.
    pub fn check_resume(&self, stored: &RunManifest, out: &Path, loaded: bool) -> Result<()> {
        let d = self.differences(stored, if loaded { &[] } else { AFTER_LOAD });
        if !d.is_empty() {
            bail!(
                "--resume: {} holds a run that differs from this one ({}); \
                 resume it with the same settings, or choose another --out",
                RunManifest::path(out).display(),
                d.join("; ")
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> RunManifest {
        RunManifest {
            schema: MANIFEST_SCHEMA.into(),
            llq_version: "0.1.0".into(),
            llq_revision: "abc".into(),
            model_sha256: "m".into(),
            device_kind: "cpu".into(),
            eos_token_ids: vec![2],
            plugin_sha256: Some("p".into()),
            plugin_options: Some([("block_size".to_string(), "64".to_string())].into()),
            quantize_lm_head: false,
            plugin_layer_options: vec![],
            calibration: None,
            task_sha256: "t".into(),
            task_options: BTreeMap::new(),
            data_sha256: "d".into(),
            chat_template: false,
            window: 2048,
            kl_baseline: "none".into(),
            save_logprobs: false,
        }
    }

    #[test]
    fn a_difference_is_named_and_the_revision_is_not_one() {
        let a = manifest();
        let mut b = a.clone();
        b.llq_revision = "def".into();
        b.check_resume(&a, Path::new("/o"), true).unwrap();
        b.plugin_options = Some([("block_size".to_string(), "128".to_string())].into());
        let e = b.check_resume(&a, Path::new("/o"), true).unwrap_err().to_string();
        assert!(
            e.contains("plugin_options: stored {\"block_size\":\"64\"}, now {\"block_size\":\"128\"}"),
            "{e}"
        );
        // Before the model loads, model fields are not compared.
        let mut c = a.clone();
        c.model_sha256 = String::new();
        c.check_resume(&a, Path::new("/o"), false).unwrap();
        let e = c.check_resume(&a, Path::new("/o"), true).unwrap_err().to_string();
        assert!(e.contains("model_sha256"), "{e}");
    }

    #[test]
    fn round_trip_and_refusals() {
        let dir = tempfile::tempdir().unwrap();
        assert!(RunManifest::read(dir.path()).unwrap().is_none());
        manifest().write(dir.path()).unwrap();
        assert_eq!(RunManifest::read(dir.path()).unwrap(), Some(manifest()));
        std::fs::write(RunManifest::path(dir.path()), "{\"schema\": \"other\"}").unwrap();
        let e = RunManifest::read(dir.path()).unwrap_err().to_string();
        assert!(e.contains("is not an llq-run/1 run manifest"), "{e}");
    }
}
