//! Guest SDK for llq tasks: a task is a WASM component implementing `tasks/wit/task.wit`.
//!
//! A Rust task implements [`Task`] and calls [`export_task!`]; the SDK supplies the
//! wit-bindgen glue, checks and parses `--task-opt` values against the task's own option
//! specs, forwards panic messages to the host (through the `log` import) so a trapping task
//! gets a useful error, and offers [`mean_metric`] for lm-eval style aggregation. Build with
//! `cargo build --release --target wasm32-wasip2`; the result imports nothing but `log`
//! (std's incidental WASI imports are stubbed by the host as traps).
//!
//! ```ignore
//! struct Echo;
//! impl llq_task_sdk::Task for Echo { /* describe, requests, score, aggregate */ }
//! llq_task_sdk::export_task!(Echo);
//! ```

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "task",
        path: "../wit",
        pub_export_macro: true,
        export_macro_name: "__export_task_world",
        default_bindings_module: "llq_task_sdk::bindings",
    });
}

pub use bindings::llq::task::types::*;
pub use bindings::{log, Guest};
use std::cell::RefCell;

/// What a task does; [`export_task!`] turns an implementation into the component's exports.
pub trait Task {
    fn describe() -> TaskInfo;
    /// Parse the user's dataset (`--data FILE`, raw bytes) into requests.
    fn requests(data: Vec<u8>, options: &Options) -> Result<Vec<Request>, String>;
    /// Score one request given the model's response.
    fn score(request: Request, response: Response, options: &Options) -> Result<Vec<Metric>, String>;
    /// Aggregate every scored sample into final metrics.
    fn aggregate(samples: Vec<Scored>, options: &Options) -> Result<Report, String>;
    /// Read an external predictions file as (request id, generated text) pairs.
    fn parse_predictions(_data: Vec<u8>) -> Result<Vec<(String, String)>, String> {
        Err(format!("task `{}` defines no external predictions format", Self::describe().name))
    }
}

/// Option values checked against the task's [`OptionSpec`]s, defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    values: Vec<(String, String)>,
}

impl Options {
    /// Check `given` against `specs` with llq's one option parser (`llq_sdk::options`, the
    /// same one plugins' options go through): unknown names and ill-typed values are errors,
    /// defaults are filled in.
    pub fn new(specs: &[OptionSpec], given: &[(String, String)]) -> Result<Self, String> {
        let specs = specs
            .iter()
            .map(|s| llq_sdk::options::OptionSpec::from_spelling(&s.name, &s.kind, &s.default, &s.help))
            .collect::<Result<Vec<_>, String>>()?;
        let values = llq_sdk::options::check(&specs, given)?;
        Ok(Options { values: values.into_iter().collect() })
    }

    pub fn get(&self, name: &str) -> &str {
        self.values.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str()).unwrap_or("")
    }
    pub fn int(&self, name: &str) -> i64 {
        self.get(name).parse().unwrap_or(0)
    }
    pub fn float(&self, name: &str) -> f64 {
        self.get(name).parse().unwrap_or(0.0)
    }
    pub fn flag(&self, name: &str) -> bool {
        llq_sdk::options::parse_bool(self.get(name)).unwrap_or(false)
    }
}

/// Option (name, value) pairs as the host passes them.
type Pairs = Vec<(String, String)>;

thread_local! {
    /// The last option set parsed, and its result.
    static OPTIONS: RefCell<Option<(Pairs, Options)>> = const { RefCell::new(None) };
}

/// Parse options once per distinct set (the host passes the same set with every call).
#[doc(hidden)]
pub fn options_for(
    specs: impl FnOnce() -> Vec<OptionSpec>,
    given: Vec<(String, String)>,
) -> Result<Options, String> {
    OPTIONS.with(|cell| {
        let mut cell = cell.borrow_mut();
        if let Some((g, o)) = cell.as_ref() {
            if *g == given {
                return Ok(o.clone());
            }
        }
        let o = Options::new(&specs(), &given)?;
        *cell = Some((given, o.clone()));
        Ok(o)
    })
}

/// Send panic messages to the host before the task aborts (called by every export).
#[doc(hidden)]
pub fn init() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| std::panic::set_hook(Box::new(|info| log(&format!("panic: {info}")))));
}

/// lm-eval's aggregation: mean, and the standard error of the mean from the sample
/// standard deviation (n − 1), undefined for fewer than two values.
pub fn mean_metric(name: &str, values: &[f64]) -> AggregateMetric {
    let n = values.len();
    let mean = if n == 0 { 0.0 } else { values.iter().sum::<f64>() / n as f64 };
    let stderr = (n > 1).then(|| {
        let var = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / (n - 1) as f64;
        (var / n as f64).sqrt()
    });
    AggregateMetric { name: name.to_string(), value: mean, stderr, count: n as u64 }
}

/// The value of metric `name` in a scored sample.
pub fn metric(sample: &Scored, name: &str) -> Option<f64> {
    sample.metrics.iter().find(|m| m.name == name).map(|m| m.value)
}

/// Export `$t: Task` as this component's implementation of the llq task world.
#[macro_export]
macro_rules! export_task {
    ($t:ty) => {
        struct __LlqTaskExports;
        impl $crate::Guest for __LlqTaskExports {
            fn describe() -> $crate::TaskInfo {
                $crate::init();
                <$t as $crate::Task>::describe()
            }
            fn requests(data: Vec<u8>, options: Vec<(String, String)>) -> Result<Vec<$crate::Request>, String> {
                $crate::init();
                let o = $crate::options_for(|| <$t as $crate::Task>::describe().options, options)?;
                <$t as $crate::Task>::requests(data, &o)
            }
            fn score(req: $crate::Request, resp: $crate::Response, options: Vec<(String, String)>) -> Result<Vec<$crate::Metric>, String> {
                $crate::init();
                let o = $crate::options_for(|| <$t as $crate::Task>::describe().options, options)?;
                <$t as $crate::Task>::score(req, resp, &o)
            }
            fn aggregate(samples: Vec<$crate::Scored>, options: Vec<(String, String)>) -> Result<$crate::Report, String> {
                $crate::init();
                let o = $crate::options_for(|| <$t as $crate::Task>::describe().options, options)?;
                <$t as $crate::Task>::aggregate(samples, &o)
            }
            fn parse_predictions(data: Vec<u8>) -> Result<Vec<(String, String)>, String> {
                $crate::init();
                <$t as $crate::Task>::parse_predictions(data)
            }
        }
        $crate::bindings::__export_task_world!(__LlqTaskExports with_types_in $crate::bindings);
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, kind: &str, default: &str) -> OptionSpec {
        OptionSpec { name: name.into(), kind: kind.into(), default: default.into(), help: String::new() }
    }

    #[test]
    fn options_fill_defaults_and_reject_bad_values() {
        let specs =
            [spec("mode", "string:official|lm-eval", "official"), spec("max_new_tokens", "int", "256")];
        let o = Options::new(&specs, &[("max_new_tokens".into(), "32".into())]).unwrap();
        assert_eq!((o.get("mode"), o.int("max_new_tokens")), ("official", 32));
        let e = Options::new(&specs, &[("mode".into(), "fast".into())]).unwrap_err();
        assert_eq!(e, "option `mode` must be one of official, lm-eval, got `fast`");
        let e = Options::new(&specs, &[("modes".into(), "x".into())]).unwrap_err();
        assert!(e.contains("unknown option `modes`") && e.contains("mode, max_new_tokens"), "{e}");
        assert!(Options::new(&specs, &[("max_new_tokens".into(), "1.5".into())]).is_err());
    }

    #[test]
    fn mean_and_stderr_by_hand() {
        // values 1, 0, 1, 0: mean 0.5, sample variance 1/3, stderr sqrt(1/3 / 4) = 0.288675…
        let m = mean_metric("em", &[1.0, 0.0, 1.0, 0.0]);
        assert_eq!(m.value, 0.5);
        assert!((m.stderr.unwrap() - 0.288_675_134_594_812_9).abs() < 1e-15);
        assert_eq!(mean_metric("em", &[1.0]).stderr, None);
    }
}
