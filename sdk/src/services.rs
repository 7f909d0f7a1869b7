//! The plugin side of the host's services (ABI 1.4, [`LlqHostServices`]): the pointer a host
//! hands over with `set_host_services`, and the calls that use it when it is there and do the
//! work here when it is not (an older host, or a host with no faster way in this run).
//!
//! Each plugin library has its own copy of this state (the SDK is compiled into every cdylib).

use crate::abi::{LlqErrorBuf, LlqHostServices, LlqStatus};
use crate::quant::linalg::{self, SquareMatrix};
use std::sync::atomic::{AtomicPtr, Ordering};

static SERVICES: AtomicPtr<LlqHostServices> = AtomicPtr::new(std::ptr::null_mut());

/// Keep the host's services (null withdraws them). The host promises they outlive the library.
pub(crate) fn set(services: *const LlqHostServices) {
    SERVICES.store(services as *mut LlqHostServices, Ordering::Release);
}

/// The host's services when it gave some that include the field ending at `end` bytes.
fn services_covering(end: usize) -> Option<&'static LlqHostServices> {
    let p = SERVICES.load(Ordering::Acquire);
    // SAFETY: a non-null pointer came from the host's `set_host_services`, which promises an
    // immutable struct that lives as long as this library; `struct_size` is its first field.
    let s = unsafe { p.as_ref()? };
    (s.struct_size as usize >= end).then_some(s)
}

/// GPTQ's `Hinv` for the damped Hessian `h`: [`linalg::inverse_upper_cholesky`], by the host
/// when it offers it (on the GPU, where the reference computes it too), else here. The two
/// differ only in rounding (a different order of the same f64 operations).
pub fn inverse_upper_cholesky(h: &SquareMatrix) -> Result<SquareMatrix, String> {
    let end = std::mem::offset_of!(LlqHostServices, inverse_upper_cholesky) + std::mem::size_of::<usize>();
    if let Some(s) = services_covering(end) {
        let n = h.n;
        let mut u = SquareMatrix::zeros(n);
        let mut done = 0u32;
        // SAFETY: `h` and `u` hold n² values each for the call, `done` is valid.
        call_host("factorization", |err| unsafe {
            (s.inverse_upper_cholesky)(n as u64, h.a.as_ptr(), u.a.as_mut_ptr(), &mut done, err)
        })?;
        if done == 1 {
            return Ok(u);
        }
    }
    linalg::inverse_upper_cholesky(h)
}

/// GPTQ's lazy updates of the later columns, `W[:, i2..] -= E · U[i1..i2, i2..]` in the
/// reference loop's order ([`linalg::sub_products_in_order`]): on a copy the host keeps when it
/// offers one (ABI 1.5, on the GPU: the same bits), on the plugin's own copy otherwise.
pub struct LazyUpdates {
    /// The host's services and its handle, when it keeps the copy (freed on drop).
    host: Option<(&'static LlqHostServices, u64)>,
    rows: usize,
    cols: usize,
    /// The columns the host sends back, reused from block to block.
    out: Vec<f64>,
}

/// A call into the host's services, its error buffer turned into a message.
fn call_host(what: &str, f: impl FnOnce(*mut LlqErrorBuf) -> LlqStatus) -> Result<(), String> {
    let mut msg = vec![0u8; 1024];
    let mut err = LlqErrorBuf { ptr: msg.as_mut_ptr(), cap: msg.len(), len: 0 };
    if f(&mut err) == LlqStatus::Ok {
        return Ok(());
    }
    let len = err.len.min(msg.len());
    Err(format!("the host's {what}: {}", String::from_utf8_lossy(&msg[..len])))
}

impl LazyUpdates {
    /// Offer `w` (rows × cols, row-major, the working weights in visiting order) and `u` (the
    /// factor, cols × cols) to the host; the plugin's copy is updated when it takes neither.
    pub fn begin(rows: usize, cols: usize, w: &[f64], u: &[f64]) -> Result<Self, String> {
        assert!(w.len() == rows * cols && u.len() == cols * cols, "LazyUpdates::begin: sizes");
        let end = std::mem::offset_of!(LlqHostServices, lazy_end) + std::mem::size_of::<usize>();
        let mut me = LazyUpdates { host: None, rows, cols, out: vec![] };
        let Some(s) = services_covering(end) else { return Ok(me) };
        let mut handle = 0u64;
        // SAFETY: `w` and `u` hold the sizes passed for the call; `handle` is valid.
        call_host("lazy updates", |err| unsafe {
            (s.lazy_begin)(rows as u64, cols as u64, w.as_ptr(), u.as_ptr(), &mut handle, err)
        })?;
        me.host = (handle != 0).then_some((s, handle));
        Ok(me)
    }

    /// Whether the host keeps the copy.
    pub fn on_host(&self) -> bool {
        self.host.is_some()
    }

    /// Apply block `i1..i2`'s errors `e` (rows × (i2 − i1)) to the columns from `i2`, and make
    /// `wp` (the plugin's copy, rows × cols) current on columns `i2..c1` at least — on all of
    /// them when the update runs here.
    pub fn update(
        &mut self,
        wp: &mut [f64],
        u: &[f64],
        i1: usize,
        i2: usize,
        e: &[f64],
        c1: usize,
    ) -> Result<(), String> {
        let (rows, cols) = (self.rows, self.cols);
        assert!(
            i1 < i2 && i2 <= c1 && c1 <= cols && e.len() == rows * (i2 - i1) && wp.len() == rows * cols,
            "LazyUpdates::update: bounds"
        );
        let Some((s, handle)) = self.host else {
            let d = linalg::Strided::rows(i2, rows, cols - i2, cols);
            linalg::sub_products_in_order(wp, d, e, u, i1 * cols + i2, cols);
            return Ok(());
        };
        let w = c1 - i2;
        let out = &mut self.out;
        out.resize(rows * w, 0.0);
        // SAFETY: `e` and `out` hold the sizes the ABI names for these bounds.
        call_host("lazy update", |err| unsafe {
            (s.lazy_update)(handle, i1 as u64, i2 as u64, e.as_ptr(), c1 as u64, out.as_mut_ptr(), err)
        })?;
        if w > 0 {
            for (dst, src) in wp.chunks_mut(cols).zip(out.chunks(w)) {
                dst[i2..c1].copy_from_slice(src);
            }
        }
        Ok(())
    }
}

impl Drop for LazyUpdates {
    fn drop(&mut self) {
        if let Some((s, handle)) = self.host.take() {
            // SAFETY: a handle from this host's `lazy_begin`, freed once.
            unsafe { (s.lazy_end)(handle) };
        }
    }
}
