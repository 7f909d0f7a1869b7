//! Deterministic pseudo-random data for synthetic models and benchmarks.

/// xorshift64 from a seed (never zero).
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> Self {
        XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.0;
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        *s
    }
}

/// Seeded pseudo-normal weights (sum of two uniforms, standard deviation `sigma`): realistic
/// enough for branchy code paths, fast to make.
pub fn synthetic_weights(seed: u64, n: usize, sigma: f32) -> Vec<f32> {
    let mut r = XorShift::new(seed);
    let mut next = move || (r.next_u64() >> 40) as f32 * (1.0 / (1u64 << 24) as f32);
    let k = sigma * 6f32.sqrt();
    (0..n).map(|_| (next() + next() - 1.0) * k).collect()
}
