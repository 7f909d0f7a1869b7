//! One module per subcommand. Each owns its `#[derive(clap::Args)]` struct (parsing), checks
//! and resolves what the user gave (options against the plugin or task, paths, ranges), runs
//! the work through the library modules, and prints its own output.

pub mod args;
pub mod bench;
pub mod compare;
pub mod convert;
pub mod kernels;
pub mod plugins;
pub mod quant_bench;
pub mod quantize;
pub mod run;
pub mod score;
pub mod search_bits;
pub mod sweep;
pub mod task_bench;
pub mod tasks;
