//! What llq writes and reads back: the typed results schema ([`schema`]) and the
//! side-by-side comparison of runs ([`compare`]), and paired statistics between runs
//! ([`paired`]).

pub mod compare;
pub mod paired;
pub mod schema;

pub use schema::{read_samples, RunResults, SampleRecord, SCHEMA};
