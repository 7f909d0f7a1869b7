//! Sweeps: a TOML spec of models × methods × tasks expanded into cells, each one `llq-host
//! run` in its own process, each with a content address, so a sweep resumes after a crash
//! and shards split it without coordination.
//! - [`spec`]: the file format and its checks;
//! - [`plan`]: cells, their command lines and content addresses;
//! - [`exec`]: each cell's state on disk, and running the pending ones;
//! - [`report`]: the finished cells as one Markdown report with paired statistics;
//! - [`emit`]: Slurm and Kubernetes job arrays that run the shards.

pub mod emit;
pub mod exec;
pub mod figures;
pub mod plan;
pub mod report;
pub mod spec;
