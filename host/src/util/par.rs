//! Data parallelism over a fixed number of threads (rayon), for quantizing layers.

use anyhow::{Context, Result};
use rayon::prelude::*;

/// Map `f` over `items` on a pool of `threads` threads, keeping order. When items fail, one
/// of their errors is returned and items not yet started are skipped.
pub fn par_map<T: Sync, R: Send>(
    threads: usize,
    items: &[T],
    f: impl Fn(usize, &T) -> Result<R> + Sync + Send,
) -> Result<Vec<R>> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .thread_name(|i| format!("llq-worker-{i}"))
        .build()
        .context("cannot start worker threads")?;
    pool.install(|| items.par_iter().enumerate().map(|(i, t)| f(i, t)).collect())
}

/// All cores when the user gave no `--threads`.
pub fn default_threads(threads: Option<usize>) -> usize {
    threads.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)).max(1)
}

#[cfg(test)]
mod tests {
    #[test]
    fn keeps_order_and_reports_an_error() {
        let v: Vec<usize> = (0..100).collect();
        assert_eq!(
            super::par_map(3, &v, |i, x| Ok(i + x)).unwrap(),
            (0..100).map(|x| 2 * x).collect::<Vec<_>>()
        );
        let e = super::par_map(2, &v, |_, &x| if x == 42 { anyhow::bail!("item {x}") } else { Ok(x) });
        assert_eq!(e.unwrap_err().to_string(), "item 42");
    }
}
