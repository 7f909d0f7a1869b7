//! What the host offers its plugins (ABI 1.4, `LlqHostServices`): a faster backend for
//! GPTQ's factorization while a run installs one ([`install`]; the GPU one is
//! `gpu::solve`). The services struct is a `static` handed to every 1.4 plugin when it is
//! loaded; with no backend installed (CPU runs, tests, `llq-host quantize`) a call answers
//! "not done" and the plugin computes the factorization with its own CPU code.

use anyhow::{anyhow, Result};
use llq_sdk::abi::{LlqErrorBuf, LlqHostServices, LlqStatus};
use std::sync::{Arc, Mutex};

/// Given to every plugin whose descriptor covers ABI 1.4.
pub static HOST_SERVICES: LlqHostServices =
    LlqHostServices { struct_size: std::mem::size_of::<LlqHostServices>() as u32, inverse_upper_cholesky };

/// A backend for the factorizations plugins ask the host for.
pub trait Solver: Send + Sync {
    /// `u` := the upper Cholesky factor of `h⁻¹` (both row-major n × n; see the ABI).
    fn inverse_upper_cholesky(&self, n: usize, h: &[f64], u: &mut [f64]) -> Result<()>;
}

static SOLVER: Mutex<Option<Arc<dyn Solver>>> = Mutex::new(None);

/// While alive, plugins' factorizations go to the installed backend; dropped, back to theirs.
pub struct Installed(());

impl Drop for Installed {
    fn drop(&mut self) {
        if let Ok(mut s) = SOLVER.lock() {
            *s = None;
        }
    }
}

/// Route plugins' factorizations to `solver` until the returned guard is dropped. One run
/// at a time: a second install while one is alive is an error, not a silent takeover.
pub fn install(solver: Arc<dyn Solver>) -> Result<Installed> {
    let mut s = SOLVER.lock().map_err(|_| anyhow!("the host's solver lock is poisoned"))?;
    if s.is_some() {
        return Err(anyhow!("a factorization backend is already installed by another run in this process"));
    }
    *s = Some(solver);
    Ok(Installed(()))
}

/// The ABI entry: the installed backend's answer, or "not done".
unsafe extern "C" fn inverse_upper_cholesky(
    n: u64,
    h: *const f64,
    u: *mut f64,
    done: *mut u32,
    err: *mut LlqErrorBuf,
) -> LlqStatus {
    let run = || -> Result<bool> {
        let Some(solver) = SOLVER.lock().ok().and_then(|s| s.clone()) else { return Ok(false) };
        let n = usize::try_from(n)?;
        let len = n.checked_mul(n).ok_or_else(|| anyhow!("n = {n} is too large"))?;
        if h.is_null() || u.is_null() {
            return Err(anyhow!("null matrix"));
        }
        // SAFETY: the plugin passes n² values at each pointer for the call (the ABI's contract).
        let (h, u) = unsafe { (std::slice::from_raw_parts(h, len), std::slice::from_raw_parts_mut(u, len)) };
        solver.inverse_upper_cholesky(n, h, u)?;
        Ok(true)
    };
    let (status, msg) = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)) {
        Ok(Ok(d)) => {
            // SAFETY: a valid out-pointer for the call, or null.
            if let Some(p) = unsafe { done.as_mut() } {
                *p = d as u32;
            }
            return LlqStatus::Ok;
        }
        Ok(Err(e)) => (LlqStatus::Error, format!("{e:#}")),
        Err(_) => (LlqStatus::Panic, "the host's factorization panicked".to_string()),
    };
    // SAFETY: the plugin's error buffer (or null), valid for the call.
    unsafe { LlqErrorBuf::write(err, &msg) };
    status
}
