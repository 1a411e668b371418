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

/// Tenants served by weight while every flooding class still waits: at every go,
/// `|n_a/w_a − n_b/w_b| <= factor (1/w_a + 1/w_b)` for any two flooding classes (start-time fair
/// queuing's bound at `factor` 1). `goes`: in order, (instant ms, class, whether it is one of its
/// class's flood: a late request of a flooding class counts as served without using up the flood);
/// `floods`: per class, how many it flooded; `weight` of a class. The goes at 0 ms are not counted
/// (they took free room as the floods came, before every class waited); the check ends when a
/// class runs out. The error says which pair broke it.
pub(crate) fn split_by_weight(
    goes: impl IntoIterator<Item = (u64, Option<usize>, bool)>,
    floods: impl IntoIterator<Item = (Option<usize>, usize)>,
    weight: impl Fn(Option<usize>) -> f64,
    factor: f64,
) -> Result<(), String> {
    let mut left: std::collections::HashMap<Option<usize>, usize> = std::collections::HashMap::new();
    for (class, n) in floods {
        *left.entry(class).or_default() += n;
    }
    let classes: Vec<Option<usize>> = left.keys().copied().collect();
    let mut served: std::collections::HashMap<Option<usize>, f64> = std::collections::HashMap::new();
    for (at, class, flood) in goes {
        if classes.iter().any(|c| left[c] == 0) {
            break;
        }
        if flood {
            *left.get_mut(&class).expect("a flooding class") -= 1;
        }
        if at == 0 {
            continue;
        }
        *served.entry(class).or_default() += 1.0;
        for &a in &classes {
            for &b in &classes {
                let (na, nb) = (served.get(&a).copied().unwrap_or(0.0), served.get(&b).copied().unwrap_or(0.0));
                let (wa, wb) = (weight(a), weight(b));
                if (na / wa - nb / wb).abs() > factor * (1.0 / wa + 1.0 / wb) + 1e-9 {
                    return Err(format!("{a:?} served {na} (weight {wa}), {b:?} served {nb} (weight {wb})"));
                }
            }
        }
    }
    Ok(())
}
