//! Small helpers shared by several concerns, each in its own named module. Nothing here
//! depends on any other module of the host.

pub mod cache;
pub mod digest;
pub mod env;
pub mod first_use;
pub mod fs;
pub mod json;
pub mod kv;
pub mod mem;
pub mod par;
pub mod stats;
pub mod synth;
