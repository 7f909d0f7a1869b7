//! Compiling a method's CUDA source with NVRTC (kernel convention v1, documented on
//! `llq_sdk::CudaKernels`), with an on-disk PTX cache keyed by source hash, architecture and
//! options, and loading its entry points on one device.

use crate::util::first_use;
use crate::util::fs::write_atomic;
use anyhow::{anyhow, bail, Context, Result};
use candle_core::cuda_backend::cudarc::driver::CudaFunction;
use candle_core::cuda_backend::cudarc::nvrtc::{compile_ptx_with_opts, CompileError, CompileOptions};
use candle_core::cuda_backend::CudaDevice;
use candle_core::Device;
use llq_sdk::{CudaKernels, KernelParam};
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::sync::Arc;

/// A method's kernels, compiled and loaded on one device.
pub struct Kernels {
    pub method: String,
    pub(crate) dequantize: CudaFunction,
    pub(crate) matvec: Option<CudaFunction>,
    /// The optional specializations `<matvec>_b1` and `<matvec>_b4` (batch ≤ 1, ≤ 4).
    pub(crate) matvec_b1: Option<CudaFunction>,
    pub(crate) matvec_b4: Option<CudaFunction>,
    pub(crate) params: Vec<KernelParam>,
    /// Where the PTX came from: `cache` or `nvrtc` (with the compile time).
    pub origin: String,
}

/// `$LLQ_CACHE_DIR`, else `$XDG_CACHE_HOME/llq`, else `~/.cache/llq`.
fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("LLQ_CACHE_DIR") {
        return PathBuf::from(d);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("llq")
}

pub fn cuda_device(dev: &Device) -> Result<&CudaDevice> {
    match dev {
        Device::Cuda(d) => Ok(d),
        _ => bail!("this needs a CUDA device (--device cuda)"),
    }
}

/// The device's `sm_XY` architecture.
pub fn arch(dev: &CudaDevice) -> Result<String> {
    let (major, minor) = dev
        .cuda_stream()
        .context()
        .compute_capability()
        .map_err(|e| anyhow!("reading the compute capability: {e:?}"))?;
    Ok(format!("sm_{major}{minor}"))
}

/// PTX for `source` from the on-disk cache or NVRTC (options: the device's architecture,
/// C++17), with where it came from (`cache …` or `nvrtc N ms`) and the module name to load
/// it under (`llq-<stem>-<key>`, for [`entry`]). The cache file is `<stem>-<key>.ptx`; `who`
/// names the source in errors.
pub fn ptx(stem: &str, who: &str, source: &str, dev: &CudaDevice) -> Result<(String, String, String)> {
    let arch = arch(dev)?;
    let options = vec![format!("--gpu-architecture={arch}"), "--std=c++17".to_string()];
    let mut h = Sha256::new();
    h.update(source.as_bytes());
    h.update([0]);
    h.update(options.join(" ").as_bytes());
    let key: String = h.finalize().iter().take(16).map(|b| format!("{b:02x}")).collect();
    let path = cache_dir().join("ptx").join(format!("{stem}-{key}.ptx"));
    if let Ok(p) = std::fs::read_to_string(&path) {
        if p.contains(".entry") {
            first_use::record(|c| c.ptx_cache_hits += 1);
            return Ok((p, format!("cache {}", path.display()), format!("llq-{stem}-{key}")));
        }
    }
    let t = std::time::Instant::now();
    let opts =
        CompileOptions { options: options.clone(), name: Some(format!("{stem}.cu")), ..Default::default() };
    let ptx = compile_ptx_with_opts(source, opts).map_err(|e| match e {
        CompileError::CompileError { log, .. } => {
            anyhow!("{who}: NVRTC could not compile the kernel source for {arch}:\n{}", log.to_string_lossy())
        }
        e => anyhow!("{who}: NVRTC failed: {e:?} (is libnvrtc on the library path?)"),
    })?;
    let src = ptx.to_src();
    let compile_s = t.elapsed().as_secs_f64();
    first_use::record(|c| {
        c.nvrtc_compiles += 1;
        c.nvrtc_compile_s += compile_s;
    });
    // The cache is an optimization: failing to write it is only logged.
    let written = std::fs::create_dir_all(path.parent().unwrap_or(&path))
        .map_err(anyhow::Error::from)
        .and_then(|_| write_atomic(&path, src.as_bytes()));
    if let Err(e) = written {
        tracing::warn!("cannot cache PTX at {}: {e:#}", path.display());
    }
    Ok((src, format!("nvrtc {:.0} ms", t.elapsed().as_secs_f64() * 1e3), format!("llq-{stem}-{key}")))
}

/// Entry point `name` of the PTX `ptx` loaded as `module` on `dev` (candle loads a module
/// once per device and name).
pub fn entry(dev: &CudaDevice, module: &str, ptx: &str, name: &str) -> candle_core::Result<CudaFunction> {
    let t = std::time::Instant::now();
    let f = dev.get_or_load_custom_func(name, module, ptx)?.into_cuda_function();
    let s = t.elapsed().as_secs_f64();
    first_use::record(|c| c.module_load_s += s);
    Ok(f)
}

/// Compile (or fetch from the PTX cache) and load `k` for the method `method`.
pub fn compile(method: &str, k: &CudaKernels, dev: &CudaDevice) -> Result<Arc<Kernels>> {
    if k.params.len() > 4 {
        bail!("plugin {method}: {} kernel parameters, the convention passes at most 4", k.params.len());
    }
    let arch = arch(dev)?;
    let (ptx, origin, module) = ptx(method, &format!("plugin {method}"), &k.source, dev)?;
    let load = |name: &str| -> Result<CudaFunction> {
        entry(dev, &module, &ptx, name)
            .with_context(|| format!("plugin {method}: kernel entry `{name}` not found in its CUDA source"))
    };
    let dequantize = load(&k.dequantize)?;
    let matvec = k.matvec.as_deref().map(load).transpose()?;
    let special = |suffix: &str| {
        k.matvec.as_deref().and_then(|m| entry(dev, &module, &ptx, &format!("{m}{suffix}")).ok())
    };
    let (matvec_b1, matvec_b4) = (special("_b1"), special("_b4"));
    tracing::info!("plugin {method}: CUDA kernels ready for {arch} ({origin})");
    Ok(Arc::new(Kernels {
        method: method.to_string(),
        dequantize,
        matvec,
        matvec_b1,
        matvec_b4,
        params: k.params.clone(),
        origin,
    }))
}
