//! Kernel launches that may be programmatic dependents of the kernel before them
//! (`cuLaunchKernelEx` with `CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION`, sm_90):
//! the decode step's ~200 small launches each paid the previous kernel's drain and their own
//! launch before any of their loads could start (bench/NOTES.md, issue 13). A dependent's
//! blocks may be scheduled once every block of the kernel before has called
//! `griddepcontrol.launch_dependents`, and must call `griddepcontrol.wait` before they touch
//! anything that kernel writes or reads — the kernel header's `llq_grid_enter` (v1.5), which
//! only modules that export the `<matvec>_pdl` marker (and the host's own step kernels)
//! promise. Inside a stream capture the attribute becomes a programmatic graph edge
//! (CUDA 12.3 and later). cudarc's `LaunchArgs` has no launch attributes, hence this.

use anyhow::{anyhow, Result};
use candle_core::cuda_backend::cudarc::driver::{sys, CudaFunction, CudaStream, LaunchConfig};
use std::ffi::c_void;

/// One kernel argument as the bytes the kernel reads: each is stored in its own 8-byte slot
/// and passed by address, and the driver copies as many bytes as the parameter's type has —
/// the low ones, on the little-endian hosts CUDA runs on.
pub trait KernelArg: Copy {
    fn slot(self) -> u64;
}

impl KernelArg for u64 {
    fn slot(self) -> u64 {
        self
    }
}
impl KernelArg for i64 {
    fn slot(self) -> u64 {
        self as u64
    }
}
impl KernelArg for u32 {
    fn slot(self) -> u64 {
        self as u64
    }
}
impl KernelArg for i32 {
    fn slot(self) -> u64 {
        self as u32 as u64
    }
}
impl KernelArg for f32 {
    fn slot(self) -> u64 {
        self.to_bits() as u64
    }
}

/// A launch of `f` on `stream`: arguments in the kernel's order, then [`Launch::run`].
pub struct Launch<'a> {
    stream: &'a CudaStream,
    f: &'a CudaFunction,
    args: Vec<u64>,
    programmatic: bool,
}

impl<'a> Launch<'a> {
    pub fn new(stream: &'a CudaStream, f: &'a CudaFunction) -> Self {
        Launch { stream, f, args: Vec::with_capacity(16), programmatic: false }
    }

    /// Launch as a programmatic dependent of the stream's previous kernel. Only for kernels
    /// that call `griddepcontrol.wait` before touching memory another kernel uses.
    pub fn programmatic(mut self, on: bool) -> Self {
        self.programmatic = on;
        self
    }

    pub fn arg<T: KernelArg>(&mut self, v: T) -> &mut Self {
        self.args.push(v.slot());
        self
    }

    /// Enqueue the kernel; `what` names it in the error.
    ///
    /// # Safety
    /// The arguments must be the kernel's parameters in order and type (pointers as `u64`,
    /// `int` as `i32`, `long long` as `i64`, `unsigned` as `u32`, `float` as `f32`), and the
    /// kernel must stay inside the buffers they name.
    pub unsafe fn run(&mut self, cfg: LaunchConfig, what: &str) -> Result<()> {
        self.stream.context().bind_to_thread().map_err(|e| anyhow!("binding the CUDA context: {e:?}"))?;
        let mut params: Vec<*mut c_void> =
            self.args.iter_mut().map(|a| a as *mut u64 as *mut c_void).collect();
        // SAFETY: a plain C struct of integers and a union; all-zero is a valid value.
        let mut attr: sys::CUlaunchAttribute = unsafe { std::mem::zeroed() };
        attr.id = sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
        attr.value.programmaticStreamSerializationAllowed = 1;
        let config = sys::CUlaunchConfig {
            gridDimX: cfg.grid_dim.0,
            gridDimY: cfg.grid_dim.1,
            gridDimZ: cfg.grid_dim.2,
            blockDimX: cfg.block_dim.0,
            blockDimY: cfg.block_dim.1,
            blockDimZ: cfg.block_dim.2,
            sharedMemBytes: cfg.shared_mem_bytes,
            hStream: self.stream.cu_stream(),
            attrs: if self.programmatic { &mut attr } else { std::ptr::null_mut() },
            numAttrs: self.programmatic as u32,
        };
        // SAFETY: `params` points at `self.args`, alive across the call (the driver copies
        // the values at launch); the caller vouches for their types and the kernel's bounds.
        unsafe {
            sys::cuLaunchKernelEx(&config, self.f.cu_function(), params.as_mut_ptr(), std::ptr::null_mut())
        }
        .result()
        .map_err(|e| {
            let how = if self.programmatic { " (as a programmatic dependent)" } else { "" };
            anyhow!("launching the {what} kernel{how} failed: {e:?}")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::KernelArg;

    #[test]
    fn arguments_keep_their_bytes_in_the_low_end_of_the_slot() {
        assert_eq!((-1i32).slot(), 0xffff_ffff);
        assert_eq!((-1i32).slot().to_le_bytes()[..4], (-1i32).to_le_bytes());
        assert_eq!(1.5f32.slot().to_le_bytes()[..4], 1.5f32.to_le_bytes());
        assert_eq!((-2i64).slot().to_le_bytes(), (-2i64).to_le_bytes());
        assert_eq!(7u32.slot(), 7);
    }
}
