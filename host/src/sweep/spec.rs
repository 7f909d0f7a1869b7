//! The sweep spec, a TOML file:
//!
//! ```toml
//! name = "smoke"            # results go to results/sweeps/<name>/ unless --out says
//! device = "cpu"            # optional: passed to every cell's `run --device`
//!
//! [[models]]
//! name = "stories"
//! path = "tests/fixtures/tinyllama/stories260K.bin"   # or synthetic:<preset>
//! tasks = ["ppl"]           # optional: only these tasks on this model ([] = bench only)
//! bench = false             # optional: no [bench] cells for this model
//!
//! [[methods]]
//! name = "none"             # no plugin: the model as loaded (the baseline)
//!
//! [[methods]]
//! name = "nf4-dq"
//! plugin = "plugins/nf4.so"
//! opts = ["double_quant=true"]
//! bench = false             # optional: leave this method out of the [bench] cells
//!
//! [[methods]]
//! name = "rtn-searched-3.25"
//! plugin = "plugins/rtn.so"
//! layer_opts_file = "bits/size-of-bits-3.opts"   # optional: `run --opt-layer-file`
//! compare_with = "rtn3"     # optional: also paired against this method (same size, say)
//!
//! [[tasks]]
//! name = "ppl"
//! wasm = "tasks/perplexity.wasm"
//! data = "data/gutenberg/evaluation.txt"
//! opts = ["split=none"]     # task options
//! limit = 10                # optional
//! kl_baseline = true        # optional: KL against the unquantized model (methods with a plugin)
//!
//! [bench]                   # optional: one `llq-host bench` cell per (model, method)
//! prompt_lens = [128, 512]  # prefill latency per prompt length
//! batch_sizes = [1, 4]      # decode tokens/s per batch size
//! decode_steps = 16         # optional
//! repeats = 3               # optional
//! ```
//!
//! Relative paths are read from the folder the spec is in, so a spec and its data travel
//! together. Names become folder names: letters, digits, `.`, `_` and `-`.

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    pub name: String,
    /// `run --device` for every cell.
    pub device: Option<String>,
    pub models: Vec<ModelSpec>,
    pub methods: Vec<MethodSpec>,
    pub tasks: Vec<TaskSpec>,
    /// Speed and memory cells, when present.
    pub bench: Option<BenchSpec>,
    /// `search-bits` outputs whose predicted curve the report draws beside the measured
    /// cells.
    #[serde(default)]
    pub searches: Vec<SearchSpec>,
    /// The folder relative paths are read from (the spec's own).
    #[serde(skip)]
    pub base: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    pub name: String,
    pub path: String,
    /// The tasks run on this model (default: every task; `[]`: bench cells only, e.g. for
    /// synthetic weights, whose answers mean nothing).
    pub tasks: Option<Vec<String>>,
    /// Whether the `[bench]` section measures this model (default true).
    #[serde(default = "yes")]
    pub bench: bool,
}

/// A bit-allocation search drawn in the report: its `search.json`, and the methods of this
/// spec measured beside its predicted curve.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchSpec {
    pub name: String,
    pub file: String,
    pub methods: Vec<String>,
}

impl ModelSpec {
    /// Whether `task` runs on this model.
    pub fn runs(&self, task: &str) -> bool {
        self.tasks.as_ref().is_none_or(|t| t.iter().any(|x| x == task))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MethodSpec {
    pub name: String,
    /// The plugin library; absent for the unquantized baseline.
    pub plugin: Option<String>,
    #[serde(default)]
    pub opts: Vec<String>,
    /// Per-layer options, `PATTERN:KEY=VALUE` each (`run --opt-layer`), the last match
    /// winning: e.g. a llama.cpp mixture like Q4_K_M as a recipe.
    #[serde(default)]
    pub layer_opts: Vec<String>,
    /// A file of per-layer options (`run --opt-layer-file`, e.g. what `search-bits` wrote),
    /// applied before `layer_opts`; its content is part of the cell's address.
    pub layer_opts_file: Option<String>,
    /// Another method of the spec this one is also paired against in the report (e.g. the
    /// uniform setting of the same size as a searched allocation).
    pub compare_with: Option<String>,
    pub calib_samples: Option<usize>,
    pub calib_seq_len: Option<usize>,
    /// `run --calib-mode`: sequential (the default), block or parallel — e.g. parallel for
    /// llama.cpp's importance matrix, which `llama-imatrix` collects on the unquantized model.
    pub calib_mode: Option<String>,
    /// Whether the `[bench]` section measures this method (default true): `false` for a
    /// method whose packed format and kernels another method already times.
    #[serde(default = "yes")]
    pub bench: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    pub name: String,
    pub wasm: String,
    pub data: String,
    #[serde(default)]
    pub opts: Vec<String>,
    pub limit: Option<usize>,
    #[serde(default)]
    pub kl_baseline: bool,
}

/// What each (model, method) bench cell measures (`llq-host bench` flags).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BenchSpec {
    pub prompt_lens: Vec<usize>,
    pub batch_sizes: Vec<usize>,
    pub decode_steps: Option<usize>,
    pub repeats: Option<usize>,
}

/// The task name of bench cells (`<model>.<method>.bench`), so no task may take it.
pub const BENCH: &str = "bench";

impl Spec {
    /// Read and check the spec at `path`; every error names the file.
    pub fn load(path: &Path) -> Result<Spec> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read sweep spec {}", path.display()))?;
        let mut spec: Spec =
            toml::from_str(&text).with_context(|| format!("sweep spec {}", path.display()))?;
        spec.base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        spec.check().with_context(|| format!("sweep spec {}", path.display()))?;
        Ok(spec)
    }

    fn check(&self) -> Result<()> {
        check_name("name", &self.name)?;
        let lists: [(&str, Vec<&str>); 3] = [
            ("models", self.models.iter().map(|m| m.name.as_str()).collect()),
            ("methods", self.methods.iter().map(|m| m.name.as_str()).collect()),
            ("tasks", self.tasks.iter().map(|t| t.name.as_str()).collect()),
        ];
        for (what, names) in lists {
            if names.is_empty() {
                bail!("`{what}` is empty: a sweep needs at least one");
            }
            let mut seen = HashSet::new();
            for n in names {
                check_name(what, n)?;
                if !seen.insert(n) {
                    bail!("{what}: the name `{n}` is used twice");
                }
            }
        }
        if self.tasks.iter().any(|t| t.name == BENCH) {
            bail!(
                "tasks: `{BENCH}` names the speed cells of the [bench] section; call the task something else"
            );
        }
        let method = |n: &str| self.methods.iter().any(|m| m.name == n);
        for m in &self.methods {
            if let Some(c) = m.compare_with.as_deref().filter(|c| !method(c) || *c == m.name) {
                bail!(
                    "method `{}`: compare_with names `{c}`, which is not another method of this spec",
                    m.name
                );
            }
        }
        for s in &self.searches {
            if let Some(bad) = s.methods.iter().find(|n| !method(n)) {
                bail!("search `{}`: methods names `{bad}`, which is not a method of this spec", s.name);
            }
        }
        for m in &self.models {
            if let Some(bad) = m.tasks.iter().flatten().find(|t| !self.tasks.iter().any(|x| &x.name == *t)) {
                bail!("model `{}`: tasks names `{bad}`, which is not a task of this spec", m.name);
            }
        }
        if let Some(b) = &self.bench {
            for (what, v) in [("prompt_lens", &b.prompt_lens), ("batch_sizes", &b.batch_sizes)] {
                if v.is_empty() || v.contains(&0) {
                    bail!("bench.{what} must list positive numbers");
                }
            }
            if b.decode_steps == Some(0) || b.repeats == Some(0) {
                bail!("bench.decode_steps and bench.repeats must be positive");
            }
        }
        for m in &self.methods {
            if m.plugin.is_none()
                && (!m.opts.is_empty()
                    || !m.layer_opts.is_empty()
                    || m.layer_opts_file.is_some()
                    || m.calib_samples.is_some()
                    || m.calib_seq_len.is_some()
                    || m.calib_mode.is_some())
            {
                bail!("method `{}` has options but no plugin", m.name);
            }
            if let Some(mode) =
                m.calib_mode.as_deref().filter(|x| x.parse::<crate::quant::CalibMode>().is_err())
            {
                bail!(
                    "method `{}`: calib_mode = \"{mode}\" is not one of sequential, block, parallel",
                    m.name
                );
            }
        }
        Ok(())
    }

    /// `p` read from the spec's folder (as given when absolute; `synthetic:` kept as is).
    pub fn resolve(&self, p: &str) -> String {
        if p.starts_with("synthetic:") || Path::new(p).is_absolute() {
            p.to_string()
        } else {
            self.base.join(p).display().to_string()
        }
    }
}

fn check_name(what: &str, n: &str) -> Result<()> {
    if n.is_empty()
        || !n.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        || n.starts_with('.')
    {
        bail!("{what}: `{n}` is not a usable name (letters, digits, `.`, `_`, `-`; not starting with `.`)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Spec> {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("s.toml");
        std::fs::write(&p, text)?;
        Spec::load(&p)
    }

    const OK: &str = r#"
name = "s"
[[models]]
name = "m"
path = "synthetic:tiny"
[[methods]]
name = "none"
[[tasks]]
name = "t"
wasm = "t.wasm"
data = "d.txt"
"#;

    #[test]
    fn a_good_spec_and_each_kind_of_bad_one() {
        let s = parse(OK).unwrap();
        assert_eq!((s.models.len(), s.methods[0].plugin.is_none()), (1, true));
        assert_eq!(s.resolve("synthetic:tiny"), "synthetic:tiny");
        assert!(s.resolve("d.txt").ends_with("/d.txt"));
        for (text, needle) in [
            (OK.replace("name = \"m\"", "name = \"a b\""), "not a usable name"),
            (OK.replace("path = \"synthetic:tiny\"", "path = \"x\"\nsize = 3"), "unknown field `size`"),
            (
                OK.replace("[[models]]\nname = \"m\"\npath = \"synthetic:tiny\"", "models = []"),
                "`models` is empty",
            ),
            (OK.replace("name = \"none\"", "name = \"none\"\nopts = [\"a=1\"]"), "options but no plugin"),
            (format!("{OK}[[tasks]]\nname = \"t\"\nwasm = \"u\"\ndata = \"v\"\n"), "used twice"),
            ("name = 3".to_string(), "invalid type"),
            (format!("{OK}[bench]\nprompt_lens = [128]\nbatch_sizes = []\n"), "bench.batch_sizes"),
            (
                format!("{OK}[bench]\nprompt_lens = [128]\nbatch_sizes = [1]\nwarmup = 2\n"),
                "unknown field `warmup`",
            ),
            (OK.replace("name = \"t\"", "name = \"bench\""), "names the speed cells"),
            (
                OK.replace("path = \"synthetic:tiny\"", "path = \"synthetic:tiny\"\ntasks = [\"u\"]"),
                "`u`, which is not a task",
            ),
        ] {
            let e = format!("{:#}", parse(&text).unwrap_err());
            assert!(e.contains(needle) && e.contains("s.toml"), "{needle}: {e}");
        }
    }
}
