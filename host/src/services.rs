//! What the host offers its plugins (ABI 1.4, `LlqHostServices`): a faster backend for
//! GPTQ's factorization and (ABI 1.5) its lazy updates while a run installs one ([`install`];
//! the GPU one is `gpu::solve` with `gpu::lazy`). The services struct is a `static` handed to every 1.4 plugin when it is
//! loaded; with no backend installed (CPU runs, tests, `llq-host quantize`) a call answers
//! "not done" and the plugin computes the factorization with its own CPU code.

use anyhow::{anyhow, Result};
use llq_sdk::abi::{LlqErrorBuf, LlqHostServices, LlqStatus};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Given to every plugin whose descriptor covers ABI 1.4.
pub static HOST_SERVICES: LlqHostServices = LlqHostServices {
    struct_size: std::mem::size_of::<LlqHostServices>() as u32,
    inverse_upper_cholesky,
    lazy_begin,
    lazy_update,
    lazy_end,
};

/// A backend for the linear algebra plugins ask the host for.
pub trait Solver: Send + Sync {
    /// `u` := the upper Cholesky factor of `h⁻¹` (both row-major n × n; see the ABI); `false`
    /// when this backend leaves it to the plugin.
    fn inverse_upper_cholesky(&self, n: usize, h: &[f64], u: &mut [f64]) -> Result<bool>;

    /// A copy of GPTQ's working weights `w` (rows × cols) and factor `u` (cols × cols) for
    /// its lazy updates (ABI 1.5), or `None` when this backend leaves them to the plugin.
    fn lazy_begin(
        &self,
        _rows: usize,
        _cols: usize,
        _w: &[f64],
        _u: &[f64],
    ) -> Result<Option<Box<dyn LazyMatrix>>> {
        Ok(None)
    }
}

/// A layer's working weights kept by the host for GPTQ's lazy updates.
pub trait LazyMatrix: Send {
    /// The weights' rows (the ABI's calls do not repeat them).
    fn rows(&self) -> usize;
    /// `W[:, i2..] -= E · U[i1..i2, i2..]` in the SDK's `sub_products_in_order` order and
    /// rounding, then `out` (rows × (c1 − i2)) := `W[:, i2..c1]`.
    fn update(&mut self, i1: usize, i2: usize, e: &[f64], c1: usize, out: &mut [f64]) -> Result<()>;
}

/// The live lazy-update matrices by handle (0 is never one). A call takes its matrix out while
/// it runs, so the map's lock is never held across device work.
static LAZY: Mutex<Option<HashMap<u64, Box<dyn LazyMatrix>>>> = Mutex::new(None);
static NEXT_HANDLE: AtomicU64 = AtomicU64::new(1);

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
        // SAFETY: the plugin passes n² values at each pointer for the call (the ABI's contract).
        let (h, u) = unsafe { (slice(h, n.checked_mul(n), "h")?, slice_mut(u, n.checked_mul(n), "u")?) };
        solver.inverse_upper_cholesky(n, h, u)
    };
    answer("factorization", err, || {
        let d = run()?;
        // SAFETY: a valid out-pointer for the call, or null.
        if let Some(p) = unsafe { done.as_mut() } {
            *p = d as u32;
        }
        Ok(())
    })
}

/// Run one service call for a plugin: `Ok` for `Ok`, the error's message (or the panic's)
/// in the plugin's buffer otherwise.
fn answer(what: &str, err: *mut LlqErrorBuf, f: impl FnOnce() -> Result<()>) -> LlqStatus {
    let (status, msg) = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(Ok(())) => return LlqStatus::Ok,
        Ok(Err(e)) => (LlqStatus::Error, format!("{e:#}")),
        Err(_) => (LlqStatus::Panic, format!("the host's {what} panicked")),
    };
    // SAFETY: the plugin's error buffer (or null), valid for the call.
    unsafe { LlqErrorBuf::write(err, &msg) };
    status
}

/// `len` values at `p` for the call, refusing overflowing sizes and null (unless empty).
///
/// # Safety
/// A non-null `p` must hold `len` values for the call (the ABI's contract).
unsafe fn slice<'a>(p: *const f64, len: Option<usize>, what: &str) -> Result<&'a [f64]> {
    let len = len.ok_or_else(|| anyhow!("{what}: the size overflows"))?;
    match (p.is_null(), len) {
        (_, 0) => Ok(&[]),
        (true, _) => Err(anyhow!("{what}: null pointer")),
        (false, _) => Ok(unsafe { std::slice::from_raw_parts(p, len) }),
    }
}

/// [`slice`], writable.
///
/// # Safety
/// As [`slice`], and nothing else reads or writes those values during the call.
unsafe fn slice_mut<'a>(p: *mut f64, len: Option<usize>, what: &str) -> Result<&'a mut [f64]> {
    let len = len.ok_or_else(|| anyhow!("{what}: the size overflows"))?;
    match (p.is_null(), len) {
        (_, 0) => Ok(&mut []),
        (true, _) => Err(anyhow!("{what}: null pointer")),
        (false, _) => Ok(unsafe { std::slice::from_raw_parts_mut(p, len) }),
    }
}

/// ABI 1.5: keep `w` and `u` on the installed backend, or answer handle 0 ("not offered").
unsafe extern "C" fn lazy_begin(
    rows: u64,
    cols: u64,
    w: *const f64,
    u: *const f64,
    handle: *mut u64,
    err: *mut LlqErrorBuf,
) -> LlqStatus {
    answer("lazy updates", err, || {
        let h = unsafe { handle.as_mut() }.ok_or_else(|| anyhow!("lazy_begin: null handle"))?;
        *h = 0;
        let Some(solver) = SOLVER.lock().ok().and_then(|s| s.clone()) else { return Ok(()) };
        let (rows, cols) = (usize::try_from(rows)?, usize::try_from(cols)?);
        // SAFETY: the plugin passes rows·cols and cols² values (the ABI's contract).
        let (w, u) = unsafe {
            (
                slice(w, rows.checked_mul(cols), "lazy_begin w")?,
                slice(u, cols.checked_mul(cols), "lazy_begin u")?,
            )
        };
        let Some(m) = solver.lazy_begin(rows, cols, w, u)? else { return Ok(()) };
        let id = NEXT_HANDLE.fetch_add(1, Ordering::Relaxed);
        LAZY.lock()
            .map_err(|_| anyhow!("the lazy-update table's lock is poisoned"))?
            .get_or_insert_with(HashMap::new)
            .insert(id, m);
        *h = id;
        Ok(())
    })
}

/// ABI 1.5: one block's lazy update on the matrix behind `handle`.
unsafe extern "C" fn lazy_update(
    handle: u64,
    i1: u64,
    i2: u64,
    e: *const f64,
    c1: u64,
    out: *mut f64,
    err: *mut LlqErrorBuf,
) -> LlqStatus {
    answer("lazy update", err, || {
        let table = || LAZY.lock().map_err(|_| anyhow!("the lazy-update table's lock is poisoned"));
        let mut m = table()?
            .as_mut()
            .and_then(|t| t.remove(&handle))
            .ok_or_else(|| anyhow!("lazy_update: no matrix has handle {handle}"))?;
        let r = (|| {
            let (i1, i2, c1) = (usize::try_from(i1)?, usize::try_from(i2)?, usize::try_from(c1)?);
            let rows = m.rows();
            let k = i2
                .checked_sub(i1)
                .filter(|&k| k > 0)
                .ok_or_else(|| anyhow!("lazy_update: block {i1}..{i2}"))?;
            let width = c1.checked_sub(i2).ok_or_else(|| anyhow!("lazy_update: columns {i2}..{c1}"))?;
            // SAFETY: the plugin passes rows·k values at `e` and rows·width at `out`.
            let (e, out) = unsafe {
                (
                    slice(e, rows.checked_mul(k), "lazy_update e")?,
                    slice_mut(out, rows.checked_mul(width), "lazy_update out")?,
                )
            };
            m.update(i1, i2, e, c1, out)
        })();
        if let Some(t) = table()?.as_mut() {
            t.insert(handle, m);
        }
        r
    })
}

/// ABI 1.5: free the matrix behind `handle` (0 and unknown handles are ignored).
unsafe extern "C" fn lazy_end(handle: u64) {
    let m = LAZY.lock().ok().and_then(|mut t| t.as_mut().and_then(|t| t.remove(&handle)));
    // Dropped outside the lock (device buffers are freed here); a panic must not cross the ABI.
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(m)));
}
