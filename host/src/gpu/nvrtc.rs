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
use std::sync::Arc;

/// Batch rows the fused matvec handles in one launch (`LLQ_MAX_BATCH` in the header).
pub const MATVEC_MAX_BATCH: usize = 8;
/// Batch rows the tensor-core matvec handles (`LLQ_MMA_MAXB`, header v1.3).
pub const MMA_MAX_BATCH: usize = 64;

/// A method's kernels, compiled and loaded on one device.
#[derive(Clone)]
pub struct Kernels {
    pub method: String,
    pub(crate) dequantize: CudaFunction,
    pub(crate) matvec: Option<CudaFunction>,
    /// The optional specializations `<matvec>_b1` and `<matvec>_b4` (batch ≤ 1, ≤ 4).
    pub(crate) matvec_b1: Option<CudaFunction>,
    pub(crate) matvec_b4: Option<CudaFunction>,
    /// The tensor-core entries `<matvec>_mma` (≤ 64 rows of x) and `<matvec>_mma16` (≤ 16),
    /// header v1.3; loaded on sm_80 and later only (mma.m16n8k16 with bf16).
    pub(crate) matvec_mma: Option<CudaFunction>,
    pub(crate) matvec_mma16: Option<CudaFunction>,
    /// Up to three matrices reading the same x in one launch (header v1.4): `<matvec>_b1_x3`
    /// (the 1-row driver), `<matvec>_mma16_x3` and `<matvec>_mma_x3` (tensor cores).
    pub(crate) matvec_b1_x3: Option<CudaFunction>,
    pub(crate) matvec_mma16_x3: Option<CudaFunction>,
    pub(crate) matvec_mma_x3: Option<CudaFunction>,
    /// The module exports `<matvec>_pdl` (header v1.5): its entries wait for the kernel
    /// before them (`llq_grid_enter`), so they may be launched as programmatic dependents.
    pub(crate) pdl: bool,
    /// The 1-row entries with the decode step's edges folded in (header v1.6).
    pub(crate) edges: Option<Edges>,
    /// Batches from this size up take the tensor-core entries ([`mma_min_batch`]).
    pub(crate) mma_min_batch: usize,
    pub(crate) params: Vec<KernelParam>,
    /// Where the PTX came from: `cache` or `nvrtc` (with the compile time).
    pub origin: String,
}

/// A module's 1-row matvec entries with the decode step's edges folded in (header v1.6):
/// `<matvec>_b1_norm` and `<matvec>_b1_x3_norm` normalize x themselves (RMSNorm weight and
/// eps as two more arguments), `<matvec>_b1_res` adds its result into y (the residual),
/// `<matvec>_b1_glu_norm` runs gate and up on the normalized x and writes silu(gate)·up.
#[derive(Clone)]
pub(crate) struct Edges {
    pub(crate) norm: CudaFunction,
    pub(crate) norm_x3: CudaFunction,
    pub(crate) res: CudaFunction,
    pub(crate) glu_norm: CudaFunction,
}

impl Edges {
    /// All four or none: a module of header v1.6 exports each.
    pub(crate) fn of(
        norm: Option<CudaFunction>,
        norm_x3: Option<CudaFunction>,
        res: Option<CudaFunction>,
        glu_norm: Option<CudaFunction>,
    ) -> Option<Self> {
        Some(Edges { norm: norm?, norm_x3: norm_x3?, res: res?, glu_norm: glu_norm? })
    }
}

pub fn cuda_device(dev: &Device) -> Result<&CudaDevice> {
    match dev {
        Device::Cuda(d) => Ok(d),
        _ => bail!("this needs a CUDA device (--device cuda)"),
    }
}

fn compute_capability(dev: &CudaDevice) -> Result<(i32, i32)> {
    dev.cuda_stream()
        .context()
        .compute_capability()
        .map_err(|e| anyhow!("reading the compute capability: {e:?}"))
}

/// The device's `sm_XY` architecture.
pub fn arch(dev: &CudaDevice) -> Result<String> {
    let (major, minor) = compute_capability(dev)?;
    Ok(format!("sm_{major}{minor}"))
}

/// Whether the device runs the header's tensor-core matvec (bf16 mma needs sm_80).
pub fn has_mma(dev: &CudaDevice) -> Result<bool> {
    Ok(compute_capability(dev)?.0 >= 8)
}

/// Whether the device has programmatic dependent launch (`griddepcontrol`, sm_90).
pub fn has_programmatic_launch(dev: &CudaDevice) -> Result<bool> {
    Ok(compute_capability(dev)?.0 >= 9)
}

/// The smallest batch that takes the tensor-core matvec where a matrix has one: 2 — on the
/// H100 it beat the 1–8-row drivers at every batch from 2 on both Llama shapes, for NF4,
/// RTN-4 and 16-bit weights (2–4× at batch 4–8), and lost at batch 1 to the wide 1-row
/// driver on 2048×8192 (16.7 vs 12.5 µs NF4; results/h100/speed13/mma) — or
/// `$LLQ_MMA_MIN_BATCH` (1–9 move the boundary; 65 turns the entries off, so batches above 8
/// go back to dequantize + cuBLAS), the knob those measurements compare the drivers with.
pub fn mma_min_batch() -> Result<usize> {
    let Some(v) = crate::util::env::var("LLQ_MMA_MIN_BATCH")? else { return Ok(2) };
    match v.trim().parse::<usize>() {
        Ok(n) if (1..=MATVEC_MAX_BATCH + 1).contains(&n) || n == MMA_MAX_BATCH + 1 => Ok(n),
        _ => bail!(
            "LLQ_MMA_MIN_BATCH={v:?}: expected 1 to {} (the first batch on tensor cores) or {} (off)",
            MATVEC_MAX_BATCH + 1,
            MMA_MAX_BATCH + 1
        ),
    }
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
    let path = crate::util::cache::dir().join("ptx").join(format!("{stem}-{key}.ptx"));
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
    let mma = has_mma(dev)?;
    let (matvec_mma, matvec_mma16, matvec_mma16_x3, matvec_mma_x3) = if mma {
        (special("_mma"), special("_mma16"), special("_mma16_x3"), special("_mma_x3"))
    } else {
        (None, None, None, None)
    };
    tracing::info!("plugin {method}: CUDA kernels ready for {arch} ({origin})");
    Ok(Arc::new(Kernels {
        method: method.to_string(),
        dequantize,
        matvec,
        matvec_b1,
        matvec_b4,
        matvec_mma,
        matvec_mma16,
        matvec_b1_x3: special("_b1_x3"),
        matvec_mma16_x3,
        matvec_mma_x3,
        pdl: special("_pdl").is_some(),
        edges: Edges::of(
            special("_b1_norm"),
            special("_b1_x3_norm"),
            special("_b1_res"),
            special("_b1_glu_norm"),
        ),
        mma_min_batch: mma_min_batch()?,
        params: k.params.clone(),
        origin,
    }))
}

/// Make `dev`'s context current on the calling thread and return its stream: the host's
/// services to plugins (`solve`, `lazy`) run on the plugins' own threads.
pub fn bind(
    dev: &candle_core::CudaDevice,
) -> anyhow::Result<std::sync::Arc<candle_core::cuda_backend::cudarc::driver::CudaStream>> {
    let stream = dev.cuda_stream();
    stream.context().bind_to_thread().map_err(|e| anyhow::anyhow!("binding the CUDA context: {e:?}"))?;
    Ok(stream)
}

/// Launch `f` on `stream` with device pointers then `i32` dimensions as its arguments,
/// `threads` a block (the host's own kernels for its services: `lazy`, `solve`).
///
/// # Safety
/// The kernel must stay inside the buffers the pointers name, for these dimensions.
pub unsafe fn launch(
    stream: &candle_core::cuda_backend::cudarc::driver::CudaStream,
    f: &CudaFunction,
    ptrs: &[u64],
    dims: &[i32],
    grid: (u32, u32),
    threads: usize,
    what: &str,
) -> Result<()> {
    use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
    let mut l = stream.launch_builder(f);
    for p in ptrs {
        l.arg(p);
    }
    for d in dims {
        l.arg(d);
    }
    let cfg = LaunchConfig {
        grid_dim: (grid.0, grid.1, 1),
        block_dim: (threads as u32, 1, 1),
        shared_mem_bytes: 0,
    };
    unsafe { l.launch(cfg) }.map_err(|e| anyhow!("launching the {what} kernel failed: {e:?}"))?;
    Ok(())
}
