//! Sandboxed WASM tasks (`tasks/<name>.wasm`, contract `tasks/wit/task.wit`).
//!
//! A task is untrusted. It runs in wasmtime with the component model and is granted
//! nothing but the `log` import: no filesystem, network, clock or environment. Interfaces
//! that Rust's std links in incidentally (stdio, exit, environment) are stubbed as traps,
//! and `wasi:random` returns a fixed deterministic sequence (HashMap seeds), so a task's
//! output depends only on its inputs. A task importing anything else (filesystem, sockets,
//! clocks, HTTP, ...) is refused when it is loaded.
//!
//! Each call runs under a fuel budget, a wall-clock deadline (epoch interruption) and a
//! linear-memory cap ([`Limits`]). The component is compiled once; an instance that traps
//! is thrown away and the next call gets a fresh one, so one bad sample costs one sample.

use anyhow::{anyhow, bail, Context, Result};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, Store, StoreLimits, StoreLimitsBuilder, Trap};

wasmtime::component::bindgen!({ world: "task", path: "../tasks/wit" });

pub use llq::task::types::{
    AggregateMetric, GenerateUntil, Loglikelihood, LoglikelihoodResult, MetricSpec, OptionSpec, RequestKind,
    RollingResult,
};

impl RollingResult {
    /// The result of a rolling request over `text` from its per-token log-probabilities (and
    /// KL/top-1 against a baseline, empty without one): what `run` answers and what
    /// `run --resume` rebuilds from a stored sample.
    pub fn from_tokens(text: &str, token_logprobs: Vec<f64>, kl: Vec<f64>, top1_agree: Vec<u8>) -> Self {
        RollingResult {
            logprob: token_logprobs.iter().sum(),
            tokens: token_logprobs.len() as u32,
            token_logprobs,
            bytes: text.len() as u32,
            kl,
            top1_agree,
        }
    }
}

/// Per-call resource limits of a task.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// WASM instructions (roughly) a single call may execute.
    pub fuel: u64,
    /// Wall-clock time a single call may take.
    pub timeout: Duration,
    /// Linear memory the instance may grow to, in bytes.
    pub memory: usize,
    /// Linear memories, tables, their elements and core instances a component may create.
    /// The memory cap is per memory, so their count is capped too (sixteen were allowed,
    /// sixteen times --task-memory); a component cargo builds for wasm32-wasip2 needs one
    /// memory (the WASI adapter imports the module's), 3 instances (module, adapter, shim)
    /// and 2 tables — the defaults leave one spare of the latter two.
    pub memories: usize,
    pub instances: usize,
    pub tables: usize,
    pub table_elements: usize,
    /// Bytes a task may hand back to the host in one call (wasmtime's hostcall fuel, 128 MiB
    /// by default there: too little for the requests of CoQA's train set, whose every turn
    /// carries its story).
    pub data: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            fuel: 20_000_000_000,
            timeout: Duration::from_secs(120),
            memory: 2 << 30,
            memories: 1,
            instances: 4,
            tables: 3,
            table_elements: 1 << 20,
            data: 1 << 30,
        }
    }
}

const EPOCH_TICK: Duration = Duration::from_millis(10);
const LOG_LINES: usize = 8;
const LOG_LINE_BYTES: usize = 2048;

struct HostState {
    limits: StoreLimits,
    log: VecDeque<String>,
}

/// WASI interfaces std may import without the task meaning to use them: defined as traps.
const STUBBED: &[&str] = &["wasi:cli/", "wasi:io/"];
/// Deterministic stand-in for randomness (std's HashMap seeds come from here).
const RANDOM: &str = "wasi:random/";

/// A loaded task: compiled once, instantiated on demand.
pub struct TaskRuntime {
    path: PathBuf,
    engine: Engine,
    component: Component,
    linker: Linker<HostState>,
    limits: Limits,
    live: Option<(Store<HostState>, Task)>,
    info: Option<TaskInfo>,
    _ticker: Arc<()>,
}

fn start_ticker(engine: &Engine) -> Arc<()> {
    let alive = Arc::new(());
    let weak: Weak<()> = Arc::downgrade(&alive);
    let engine = engine.clone();
    std::thread::Builder::new()
        .name("llq-task-epoch".into())
        .spawn(move || {
            while weak.upgrade().is_some() {
                std::thread::sleep(EPOCH_TICK);
                engine.increment_epoch();
            }
        })
        .expect("spawning the task timer thread");
    alive
}

/// splitmix64: the fixed "random" stream a task sees.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn define_random(linker: &mut Linker<HostState>, iface: &str) -> Result<()> {
    let mut inst = linker.instance(iface)?;
    let name = iface.split('/').nth(1).unwrap_or("");
    if name.starts_with("random") {
        inst.func_wrap("get-random-bytes", |_cx, (n,): (u64,)| {
            let mut s = 0x6c6c_7121u64;
            Ok(((0..n.min(1 << 20)).map(|_| splitmix(&mut s) as u8).collect::<Vec<u8>>(),))
        })?;
        inst.func_wrap("get-random-u64", |_cx, ()| Ok((splitmix(&mut 0x6c6c_7121u64),)))?;
    } else if name.starts_with("insecure-seed") {
        inst.func_wrap("insecure-seed", |_cx, ()| Ok(((0x6c6c_7121u64, 0x7461_736bu64),)))?;
    } else if name.starts_with("insecure") {
        inst.func_wrap("get-insecure-random-bytes", |_cx, (n,): (u64,)| {
            let mut s = 0x6c6c_7122u64;
            Ok(((0..n.min(1 << 20)).map(|_| splitmix(&mut s) as u8).collect::<Vec<u8>>(),))
        })?;
        inst.func_wrap("get-insecure-random-u64", |_cx, ()| Ok((splitmix(&mut 0x6c6c_7122u64),)))?;
    }
    Ok(())
}

impl TaskRuntime {
    /// Compile the component at `path` and check what it imports.
    pub fn load(path: &Path, limits: Limits) -> Result<Self> {
        let bytes = std::fs::read(path).with_context(|| format!("cannot read task {}", path.display()))?;
        let mut config = Config::new();
        config.consume_fuel(true).epoch_interruption(true).wasm_component_model(true);
        let engine = Engine::new(&config).map_err(|e| anyhow!("{e}"))?;
        let component = Component::from_binary(&engine, &bytes)
            .map_err(|e| anyhow!("{}", anyhow::Error::from(e).root_cause()))
            .with_context(|| {
                format!("task {} is not a WASM component (build tasks for wasm32-wasip2)", path.display())
            })?;

        let mut linker: Linker<HostState> = Linker::new(&engine);
        linker.root().func_wrap("log", |mut cx, (message,): (String,)| {
            let log = &mut cx.data_mut().log;
            if log.len() == LOG_LINES {
                log.pop_front();
            }
            let mut m = message;
            if m.len() > LOG_LINE_BYTES {
                let mut cut = LOG_LINE_BYTES;
                while !m.is_char_boundary(cut) {
                    cut -= 1;
                }
                m.truncate(cut);
                m.push('…');
            }
            log.push_back(m);
            Ok(())
        })?;
        let ty = component.component_type();
        let mut refused = vec![];
        for (name, _) in ty.imports(&engine) {
            tracing::debug!("task {} imports {name}", path.display());
            if name == "log"
                || name.starts_with("llq:task/types@")
                || STUBBED.iter().any(|p| name.starts_with(p))
            {
                continue;
            }
            if name.starts_with(RANDOM) {
                define_random(&mut linker, name)?;
                continue;
            }
            refused.push(name.to_string());
        }
        if !refused.is_empty() {
            bail!(
                "task {} imports {}; llq grants tasks no filesystem, network, clock or environment access (only `log`)",
                path.display(),
                refused.join(", ")
            );
        }
        linker.define_unknown_imports_as_traps(&component).map_err(|e| anyhow!("{e:#}"))?;
        let ticker = start_ticker(&engine);
        Ok(TaskRuntime {
            path: path.to_path_buf(),
            engine,
            component,
            linker,
            limits,
            live: None,
            info: None,
            _ticker: ticker,
        })
    }

    fn label(&self) -> String {
        match &self.info {
            Some(i) => format!("task `{}` ({})", i.name, self.path.display()),
            None => format!("task {}", self.path.display()),
        }
    }

    fn instance(&mut self) -> Result<&mut (Store<HostState>, Task)> {
        if self.live.is_none() {
            let limits = StoreLimitsBuilder::new()
                .memory_size(self.limits.memory)
                .memories(self.limits.memories)
                .instances(self.limits.instances)
                .tables(self.limits.tables)
                .table_elements(self.limits.table_elements)
                .trap_on_grow_failure(true)
                .build();
            let mut store = Store::new(&self.engine, HostState { limits, log: VecDeque::new() });
            store.limiter(|s| &mut s.limits);
            store.set_fuel(self.limits.fuel).map_err(|e| anyhow!("{e}"))?;
            store.set_hostcall_fuel(self.limits.data);
            store.set_epoch_deadline(self.ticks());
            let task = Task::instantiate(&mut store, &self.component, &self.linker)
                .map_err(|e| anyhow!("{e:#}"))
                .with_context(|| format!("cannot instantiate {}", self.label()))?;
            self.live = Some((store, task));
        }
        Ok(self.live.as_mut().expect("instance just created"))
    }

    fn ticks(&self) -> u64 {
        (self.limits.timeout.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64
    }

    /// Run one export under fresh limits; a failed instance is discarded.
    fn call<R>(
        &mut self,
        what: &str,
        f: impl FnOnce(&mut Store<HostState>, &Task) -> wasmtime::Result<R>,
    ) -> Result<R> {
        let ticks = self.ticks();
        let fuel = self.limits.fuel;
        let (store, task) = self.instance()?;
        store.set_fuel(fuel).map_err(|e| anyhow!("{e}"))?;
        store.set_epoch_deadline(ticks);
        store.data_mut().log.clear();
        match f(store, task) {
            Ok(r) => Ok(r),
            Err(e) => {
                let reason = match e.downcast_ref::<Trap>() {
                    Some(Trap::OutOfFuel) => format!("ran out of fuel ({fuel} units; raise --task-fuel)"),
                    Some(Trap::Interrupt) => {
                        format!("exceeded its time limit ({:?}; raise --task-timeout)", self.limits.timeout)
                    }
                    Some(t) => format!("trapped: {t}"),
                    None => {
                        let root = anyhow::Error::from(e).root_cause().to_string();
                        if root.contains("growing memory") {
                            format!(
                                "hit its memory limit ({} MiB; raise --task-memory): {root}",
                                self.limits.memory >> 20
                            )
                        } else if root.contains("fuel allocated for hostcalls") {
                            format!(
                                "returned more data than allowed ({} MiB; raise --task-data-limit): {root}",
                                self.limits.data >> 20
                            )
                        } else {
                            format!("failed: {root}")
                        }
                    }
                };
                let log: Vec<String> = self
                    .live
                    .take()
                    .map(|(s, _)| s.into_data().log.into_iter().collect())
                    .unwrap_or_default();
                let mut msg = format!("{} {reason} in {what}", self.label());
                if !log.is_empty() {
                    msg.push_str(&format!("; task said: {}", log.join(" | ")));
                }
                Err(anyhow!(msg))
            }
        }
    }

    pub fn describe(&mut self) -> Result<TaskInfo> {
        if let Some(i) = &self.info {
            return Ok(i.clone());
        }
        let info = self.call("describe()", |s, t| t.call_describe(s))?;
        if info.name.is_empty()
            || !info.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            bail!("task {} describes itself with an invalid name {:?}", self.path.display(), info.name);
        }
        self.info = Some(info.clone());
        Ok(info)
    }

    /// Check `options` against the task's own specs with llq's one option parser (the one
    /// plugin options go through, `llq_sdk::options`): names and values, before any work.
    pub fn check_options(&mut self, options: &[(String, String)]) -> Result<()> {
        let info = self.describe()?;
        let label = self.label();
        let specs = info
            .options
            .iter()
            .map(|o| llq_sdk::options::OptionSpec::from_spelling(&o.name, &o.kind, &o.default, &o.help))
            .collect::<Result<Vec<_>, String>>()
            .map_err(|e| anyhow!("{label} declares a malformed option: {e}"))?;
        llq_sdk::options::check(&specs, options).map_err(|e| anyhow!("{label}: {e}"))?;
        Ok(())
    }

    /// Parse the dataset into requests, and check them: unique non-empty ids, sane kinds.
    pub fn requests(&mut self, data: &[u8], options: &[(String, String)]) -> Result<Vec<Request>> {
        self.describe()?;
        let label = self.label();
        let reqs = self
            .call("requests()", |s, t| t.call_requests(s, data, options))?
            .map_err(|e| anyhow!("{label} rejected the data: {e}"))?;
        let mut seen = std::collections::HashSet::new();
        for (i, r) in reqs.iter().enumerate() {
            if r.id.is_empty() {
                bail!("{label} returned a malformed request #{i}: empty id");
            }
            if !seen.insert(r.id.as_str()) {
                bail!("{label} returned a malformed request #{i}: duplicate id {:?}", r.id);
            }
            if let RequestKind::Generate(g) = &r.kind {
                if g.max_new_tokens == 0 {
                    bail!("{label} returned a malformed request {:?}: max-new-tokens is 0", r.id);
                }
                if g.stop.iter().any(|s| s.is_empty()) {
                    bail!("{label} returned a malformed request {:?}: an empty stop sequence", r.id);
                }
            }
        }
        Ok(reqs)
    }

    /// Score one sample; the error names the request.
    pub fn score(
        &mut self,
        req: &Request,
        resp: &Response,
        options: &[(String, String)],
    ) -> Result<Vec<Metric>> {
        let what = format!("score(request {:?})", req.id);
        let label = self.label();
        let metrics = self
            .call(&what, |s, t| t.call_score(s, req, resp, options))?
            .map_err(|e| anyhow!("{label} could not score request {:?}: {e}", req.id))?;
        if let Some(m) = metrics.iter().find(|m| !m.value.is_finite()) {
            bail!("{label} returned a non-finite metric `{}` = {} for request {:?}", m.name, m.value, req.id);
        }
        Ok(metrics)
    }

    pub fn aggregate(&mut self, samples: &[Scored], options: &[(String, String)]) -> Result<Report> {
        let label = self.label();
        self.call("aggregate()", |s, t| t.call_aggregate(s, samples, options))?
            .map_err(|e| anyhow!("{label} could not aggregate: {e}"))
    }

    pub fn parse_predictions(&mut self, data: &[u8]) -> Result<Vec<(String, String)>> {
        let label = self.label();
        self.call("parse-predictions()", |s, t| t.call_parse_predictions(s, data))?
            .map_err(|e| anyhow!("{label}: {e}"))
    }
}

/// Scores of a batch: what was scored, and what failed (with the error), in request order.
pub struct ScoreOutcome {
    /// Every request, with metrics when it was scored (empty when it had no response or
    /// failed): what `aggregate` receives.
    pub samples: Vec<Scored>,
    pub failed: Vec<(String, String)>,
    pub missing: usize,
}

/// After this many failures in a row, scoring stops: the task is broken, not one sample.
pub const MAX_CONSECUTIVE_FAILURES: usize = 10;

/// Score each request that has a response; a failing sample is recorded and skipped, the
/// others are kept (a trapped instance is replaced before the next sample). After
/// [`MAX_CONSECUTIVE_FAILURES`] failures in a row the rest are marked failed unscored.
pub fn score_all(
    rt: &mut TaskRuntime,
    requests: &[Request],
    response: impl Fn(&Request) -> Option<Response>,
    options: &[(String, String)],
) -> ScoreOutcome {
    let mut out = ScoreOutcome { samples: Vec::with_capacity(requests.len()), failed: vec![], missing: 0 };
    let mut streak = 0;
    for req in requests {
        if streak >= MAX_CONSECUTIVE_FAILURES {
            out.failed.push((
                req.id.clone(),
                format!("not scored: the task failed on {MAX_CONSECUTIVE_FAILURES} samples in a row"),
            ));
            out.samples.push(Scored { request: req.clone(), metrics: vec![] });
            continue;
        }
        let metrics = match response(req) {
            None => {
                out.missing += 1;
                vec![]
            }
            Some(resp) => match rt.score(req, &resp, options) {
                Ok(m) => {
                    streak = 0;
                    m
                }
                Err(e) => {
                    streak += 1;
                    tracing::warn!("{e:#}");
                    out.failed.push((req.id.clone(), format!("{e:#}")));
                    vec![]
                }
            },
        };
        out.samples.push(Scored { request: req.clone(), metrics });
    }
    out
}
