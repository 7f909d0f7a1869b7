//! Paired comparisons of two runs over the same samples (or tokens): the mean difference with
//! a bootstrap 95% interval, and McNemar's exact test for 0/1 outcomes — lm-eval reports
//! standard errors per run; a difference between two methods needs the pairing, or two
//! overlapping error bars hide (or invent) it.

/// A mean difference and its 95% percentile-bootstrap interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PairedCi {
    pub mean: f64,
    pub lo: f64,
    pub hi: f64,
    /// Pairs the estimate rests on.
    pub n: usize,
}

impl PairedCi {
    /// Whether the interval excludes zero.
    pub fn detectable(&self) -> bool {
        self.lo > 0.0 || self.hi < 0.0
    }
    /// `+0.0123 [+0.0050, +0.0200]`, or the plain statement when the interval includes zero.
    pub fn describe(&self, digits: usize) -> String {
        let ci = format!("{:+.d$} [{:+.d$}, {:+.d$}]", self.mean, self.lo, self.hi, d = digits);
        if self.detectable() {
            ci
        } else {
            format!("{ci}: no detectable difference at n = {}", self.n)
        }
    }
}

/// Fewest blocks a block bootstrap resamples (see [`bootstrap_mean`]).
pub const MIN_BLOCKS: usize = 20;

/// xorshift64: the resampling is the same on every machine for a given seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// Mean of `diffs` with a 95% interval from `resamples` bootstrap draws of blocks of `block`
/// consecutive values (block 1 for independent samples; longer blocks for per-token values of
/// running text, which are correlated). `None` for no pairs.
pub fn bootstrap_mean(diffs: &[f64], block: usize, resamples: usize, seed: u64) -> Option<PairedCi> {
    let n = diffs.len();
    if n == 0 {
        return None;
    }
    let mean = diffs.iter().sum::<f64>() / n as f64;
    // At least MIN_BLOCKS blocks to resample: with one block every resample is the sample
    // itself and the interval collapses to a point (a "difference" from 58 tokens). Short
    // series get shorter blocks (n / MIN_BLOCKS), as the n^(1/3) rules of thumb also do.
    let block = block.clamp(1, (n / MIN_BLOCKS).max(1));
    let blocks: Vec<(f64, usize)> = diffs.chunks(block).map(|c| (c.iter().sum::<f64>(), c.len())).collect();
    let mut rng = Rng(seed.max(1));
    let mut means: Vec<f64> = (0..resamples.max(1))
        .map(|_| {
            let (mut s, mut k) = (0.0, 0usize);
            while k < n {
                let (bs, bl) = blocks[rng.below(blocks.len())];
                s += bs;
                k += bl;
            }
            s / k as f64
        })
        .collect();
    means.sort_by(f64::total_cmp);
    let at = |q: f64| means[((q * means.len() as f64) as usize).min(means.len() - 1)];
    Some(PairedCi { mean, lo: at(0.025), hi: at(0.975), n })
}

/// Two-sided p-value of the paired sign-flip (permutation) test of "mean difference 0": under
/// the null each difference is as likely negative as positive, so the observed |mean| is ranked
/// among the |means| of every sign assignment — exactly for n ≤ 16 (2ⁿ assignments), else over
/// `resamples` random ones. Exact at any n, where a percentile bootstrap over a dozen samples
/// covers less than it claims; the report requires both to call a difference.
pub fn sign_flip_p(diffs: &[f64], resamples: usize, seed: u64) -> f64 {
    let d: Vec<f64> = diffs.iter().copied().filter(|v| *v != 0.0).collect();
    let n = d.len();
    if n == 0 {
        return 1.0;
    }
    let observed = d.iter().sum::<f64>().abs();
    // A relative tolerance, so sums equal up to rounding count as "as extreme".
    let extreme = |s: f64| s.abs() >= observed * (1.0 - 1e-12);
    let (hits, total) = if n <= 16 {
        let hits = (0u32..1 << n)
            .filter(|mask| {
                extreme(d.iter().enumerate().map(|(i, v)| if mask >> i & 1 == 1 { -v } else { *v }).sum())
            })
            .count();
        (hits, 1usize << n)
    } else {
        let mut rng = Rng(seed.max(1));
        let hits = (0..resamples.max(1))
            .filter(|_| extreme(d.iter().map(|v| if rng.below(2) == 1 { -v } else { *v }).sum()))
            .count();
        // The observed assignment counts as one of the draws (never p = 0).
        (hits + 1, resamples.max(1) + 1)
    };
    hits as f64 / total as f64
}

/// McNemar's exact two-sided p-value for paired 0/1 outcomes: `b` pairs where only the first
/// run succeeded, `c` where only the second did (a binomial test of b against n = b + c, p ½).
pub fn mcnemar_exact(b: u64, c: u64) -> f64 {
    let n = b + c;
    if n == 0 {
        return 1.0;
    }
    // P(X ≤ min(b, c)) for X ~ Bin(n, ½), in logs to stay finite for large n.
    let k = b.min(c);
    let ln_choose = |n: u64, k: u64| -> f64 { (1..=k).map(|i| ((n - k + i) as f64 / i as f64).ln()).sum() };
    let tail: f64 = (0..=k).map(|i| (ln_choose(n, i) - n as f64 * std::f64::consts::LN_2).exp()).sum();
    (2.0 * tail).min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mcnemar_by_hand() {
        // 0 vs 5 discordant pairs: 2 · (½)⁵.
        assert!((mcnemar_exact(0, 5) - 0.0625).abs() < 1e-12);
        assert_eq!(mcnemar_exact(3, 3), 1.0);
        assert_eq!(mcnemar_exact(0, 0), 1.0);
        // 1 vs 9: 2 · (1 + 10) / 1024.
        assert!((mcnemar_exact(9, 1) - 22.0 / 1024.0).abs() < 1e-12);
    }

    #[test]
    fn sign_flip_by_hand() {
        // Six equal positive differences: only all-plus and all-minus are as extreme, 2/64.
        assert!((sign_flip_p(&[1.0; 6], 1000, 1) - 2.0 / 64.0).abs() < 1e-12);
        // Five: 2/32 = 0.0625, not significant at 5% however consistent.
        assert!((sign_flip_p(&[0.3; 5], 1000, 1) - 0.0625).abs() < 1e-12);
        // Zeros carry no sign; balanced differences give p = 1.
        assert_eq!(sign_flip_p(&[0.0, 0.0], 10, 1), 1.0);
        assert_eq!(sign_flip_p(&[1.0, -1.0], 10, 1), 1.0);
        // Monte Carlo above 16: 40 positive differences are far out in the tail.
        assert!(sign_flip_p(&[1.0; 40], 5000, 1) < 0.001);
    }

    #[test]
    fn bootstrap_intervals_cover_what_they_should() {
        // A constant shift has a zero-width interval at the shift.
        let ci = bootstrap_mean(&[0.5; 40], 1, 500, 1).unwrap();
        assert_eq!((ci.mean, ci.lo, ci.hi, ci.detectable()), (0.5, 0.5, 0.5, true));
        // Symmetric noise around zero: the interval straddles zero and says so.
        let d: Vec<f64> = (0..200).map(|i| if i % 2 == 0 { 1.0 } else { -1.0 }).collect();
        let ci = bootstrap_mean(&d, 1, 2000, 7).unwrap();
        assert!(ci.lo < 0.0 && ci.hi > 0.0 && !ci.detectable(), "{ci:?}");
        assert!(ci.describe(3).contains("no detectable difference at n = 200"));
        // Its width is about 2 · 1.96 · sd/√n = 0.277.
        assert!((ci.hi - ci.lo - 0.277).abs() < 0.05, "{ci:?}");
        assert!(bootstrap_mean(&[], 1, 10, 1).is_none());
        // 58 values in blocks of 256 would be one block and a zero-width interval: the blocks
        // shrink so that there are at least MIN_BLOCKS of them and the interval has a width.
        let d: Vec<f64> = (0..58).map(|i| 0.02 + if i % 3 == 0 { 0.05 } else { -0.03 }).collect();
        let ci = bootstrap_mean(&d, 256, 2000, 3).unwrap();
        assert!(ci.hi - ci.lo > 0.005, "{ci:?}");
    }
}
