//! Helpers shared by the server-model tests: fake-clock units, a seeded generator, statistics.

// Each test crate that includes this module uses only part of it.
#![allow(dead_code)]

pub(crate) const MS: u64 = 1_000_000;
pub(crate) const SEC: u64 = 1_000 * MS;

/// splitmix64: deterministic workloads from a seed.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub(crate) fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    /// Uniform in [0, 1).
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The `p` quantile of sorted nanoseconds, in seconds.
pub(crate) fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize] as f64 / 1e9
}

/// The most instants in any window `[s, s + per)` of sorted instants.
pub(crate) fn peak_in_window(sorted: &[u64], per: u64) -> usize {
    let mut best = 0;
    let mut end = 0;
    for (start, &s) in sorted.iter().enumerate() {
        while end < sorted.len() && sorted[end] < s + per {
            end += 1;
        }
        best = best.max(end - start);
    }
    best
}
