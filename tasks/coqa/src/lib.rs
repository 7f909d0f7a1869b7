//! The CoQA task (see `tasks/wit/task.wit` for the contract it implements).
pub mod metrics;
pub mod data;
