//! `llq-host tasks inspect`: a task's description (name, version, metrics, options) as JSON,
//! its options in the same layout as a plugin's.

use super::args::TaskLimitArgs;
use crate::task::TaskRuntime;
use anyhow::Result;
use std::path::PathBuf;

/// Inspect WASM tasks.
#[derive(clap::Subcommand, Debug)]
pub enum Args {
    /// Print a task's description (name, version, metrics, options) as JSON.
    Inspect {
        path: PathBuf,
        #[command(flatten)]
        limits: TaskLimitArgs,
    },
}

pub fn main(a: Args) -> Result<()> {
    match a {
        Args::Inspect { path, limits } => {
            let mut rt = TaskRuntime::load(&path, limits.limits()?)?;
            let i = rt.describe()?;
            let metrics: Vec<_> = i
                .metrics
                .iter()
                .map(|m| serde_json::json!({"name": m.name, "higher_is_better": m.higher_is_better, "help": m.help}))
                .collect();
            // The same layout as `plugins inspect` shows a plugin's options.
            let options = i
                .options
                .iter()
                .map(|o| llq_sdk::OptionSpec::from_spelling(&o.name, &o.kind, &o.default, &o.help))
                .collect::<Result<Vec<_>, String>>()
                .map_err(|e| anyhow::anyhow!("task {}: {e}", path.display()))?;
            let j = serde_json::json!({
                "name": i.name, "version": i.version, "description": i.description,
                "metrics": metrics, "options": options,
            });
            println!("{}", serde_json::to_string_pretty(&j)?);
        }
    }
    Ok(())
}
