//! Costs a process pays once per kernel source or decode shape on the GPU — NVRTC compiles
//! (or PTX-cache hits), loading PTX into the driver (its JIT to SASS), CUDA graph captures —
//! summed process-wide so `run` can report them apart from generation time (issue 13:
//! first use had paid ~10 s of NVRTC unseen). Recorded by the GPU code; on the CPU they stay 0.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::sync::Mutex;

/// What this process spent on one-time GPU preparation, in seconds and counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FirstUse {
    /// Seconds in NVRTC compiling kernel sources that were not in the PTX cache.
    pub nvrtc_compile_s: f64,
    /// Sources compiled by NVRTC.
    pub nvrtc_compiles: usize,
    /// Sources found in the PTX cache (`$LLQ_CACHE_DIR/ptx`), so not compiled.
    pub ptx_cache_hits: usize,
    /// Seconds loading kernel entry points (the driver's PTX → SASS JIT on a module's first
    /// load).
    pub module_load_s: f64,
    /// Seconds capturing and uploading decode-step CUDA graphs.
    pub graph_capture_s: f64,
    /// Decode-step graphs captured (one per generation batch today).
    pub graph_captures: usize,
    /// Seconds of `run`'s warm-up before the first sample: one 2-token generation through the
    /// same decode path, which makes candle load (and the driver JIT) its own kernels and
    /// cuBLAS initialize — ~24 s on a fresh H100 machine, first seen inside the first
    /// sample's time. Not in `generate_s`. The compiles and loads above that happen during it
    /// are counted there too.
    #[serde(default)]
    pub warmup_s: f64,
}

static COSTS: Mutex<FirstUse> = Mutex::new(FirstUse {
    nvrtc_compile_s: 0.0,
    nvrtc_compiles: 0,
    ptx_cache_hits: 0,
    module_load_s: 0.0,
    graph_capture_s: 0.0,
    graph_captures: 0,
    warmup_s: 0.0,
});

/// Add to the process's costs.
pub fn record(f: impl FnOnce(&mut FirstUse)) {
    // A poisoned lock only means another thread panicked while adding: the numbers are
    // still the best known.
    let mut c = COSTS.lock().unwrap_or_else(|e| e.into_inner());
    f(&mut c);
}

/// The costs so far.
pub fn snapshot() -> FirstUse {
    *COSTS.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_add_up() {
        let before = snapshot();
        record(|c| {
            c.nvrtc_compiles += 1;
            c.nvrtc_compile_s += 0.5;
        });
        let after = snapshot();
        assert_eq!(after.nvrtc_compiles, before.nvrtc_compiles + 1);
        assert!(after.nvrtc_compile_s >= before.nvrtc_compile_s + 0.5);
    }
}
