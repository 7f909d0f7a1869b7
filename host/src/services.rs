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
    if let Some(e) = unsafe { err.as_mut() } {
        if !e.ptr.is_null() {
            let mut k = msg.len().min(e.cap);
            while k > 0 && !msg.is_char_boundary(k) {
                k -= 1;
            }
            // SAFETY: `k` ≤ the buffer's capacity.
            unsafe { std::ptr::copy_nonoverlapping(msg.as_ptr(), e.ptr, k) };
            e.len = k;
        }
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A backend that writes a recognizable value, to see the ABI entry route to it.
    struct Marker;
    impl Solver for Marker {
        fn inverse_upper_cholesky(&self, n: usize, _h: &[f64], u: &mut [f64]) -> Result<()> {
            if n == 3 {
                return Err(anyhow!("three is refused"));
            }
            u.fill(7.0);
            Ok(())
        }
    }

    fn call(n: usize) -> (LlqStatus, u32, Vec<f64>, String) {
        let h = vec![1.0; n * n];
        let mut u = vec![0.0; n * n];
        let mut done = 9u32;
        let mut msg = vec![0u8; 64];
        let mut err = LlqErrorBuf { ptr: msg.as_mut_ptr(), cap: msg.len(), len: 0 };
        // SAFETY: valid pointers for the call.
        let s = unsafe {
            (HOST_SERVICES.inverse_upper_cholesky)(n as u64, h.as_ptr(), u.as_mut_ptr(), &mut done, &mut err)
        };
        let m = String::from_utf8_lossy(&msg[..err.len]).into_owned();
        (s, done, u, m)
    }

    /// Not done without a backend, the backend's answer with one, its error as an error, and
    /// "not done" again once the guard is dropped; a second install is refused.
    #[test]
    fn routes_to_the_installed_backend_only_while_installed() {
        assert_eq!(call(2).1, 0);
        let g = install(Arc::new(Marker)).unwrap();
        assert!(install(Arc::new(Marker)).is_err());
        let (s, d, u, _) = call(2);
        assert_eq!((s, d), (LlqStatus::Ok, 1));
        assert!(u.iter().all(|&v| v == 7.0));
        let (s, _, _, m) = call(3);
        assert_eq!(s, LlqStatus::Error);
        assert!(m.contains("three is refused"), "{m}");
        drop(g);
        assert_eq!(call(2).1, 0);
    }
}
