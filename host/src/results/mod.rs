//! What llq writes and reads back: the typed results schema ([`schema`]) and the
//! side-by-side comparison of runs ([`compare`]), paired statistics between runs
//! ([`paired`]), and a baseline's stored distributions for KL ([`logprobs`]).

pub mod compare;
pub mod logprobs;
pub mod manifest;
pub mod paired;
pub mod schema;

pub use schema::{read_samples, RunResults, SampleFile, SampleRecord, SCHEMA};
