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
        let mut msg = vec![0u8; 1024];
        let mut err = LlqErrorBuf { ptr: msg.as_mut_ptr(), cap: msg.len(), len: 0 };
        // SAFETY: `h` and `u` hold n² values each for the call, `done` and `err` are valid.
        let status = unsafe {
            (s.inverse_upper_cholesky)(n as u64, h.a.as_ptr(), u.a.as_mut_ptr(), &mut done, &mut err)
        };
        if status != LlqStatus::Ok {
            let len = err.len.min(msg.len());
            return Err(format!("the host's factorization: {}", String::from_utf8_lossy(&msg[..len])));
        }
        if done == 1 {
            return Ok(u);
        }
    }
    linalg::inverse_upper_cholesky(h)
}
