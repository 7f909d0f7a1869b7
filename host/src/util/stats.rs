//! Summaries of repeated timings.

use serde::{Deserialize, Serialize};

/// Median, min and max of some timings (seconds).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

/// The spread of `v` (at least one value; the upper median for an even count).
pub fn spread(mut v: Vec<f64>) -> Spread {
    assert!(!v.is_empty(), "spread of no timings");
    v.sort_by(|a, b| a.total_cmp(b));
    Spread { median: v[v.len() / 2], min: v[0], max: v[v.len() - 1] }
}
