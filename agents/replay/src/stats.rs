//! The server's own lateness: a log-linear histogram (64 sub-buckets per power of two, under 1.6 %
//! error, fixed size, no allocation per sample) for /replay/stats, and per-stream exact quantiles.

pub const BUCKETS: usize = 128 + 57 * 64;

#[derive(Clone)]
pub struct Hist {
    counts: Box<[u64]>,
    pub total: u64,
    pub max: u64,
}

fn index(v: u64) -> usize {
    if v < 128 {
        return v as usize;
    }
    let e = 63 - v.leading_zeros() as usize; // >= 7
    128 + (e - 7) * 64 + ((v >> (e - 6)) & 63) as usize
}

/// The middle of bucket `i`'s range.
fn value(i: usize) -> u64 {
    if i < 128 {
        return i as u64;
    }
    let e = (i - 128) / 64 + 7;
    let sub = ((i - 128) % 64) as u64;
    let lo = (64 + sub) << (e - 6);
    lo + (1u64 << (e - 6)) / 2
}

impl Default for Hist {
    fn default() -> Self {
        Hist { counts: vec![0; BUCKETS].into_boxed_slice(), total: 0, max: 0 }
    }
}

impl Hist {
    #[inline]
    pub fn add(&mut self, v: u64) {
        self.counts[index(v)] += 1;
        self.total += 1;
        if v > self.max {
            self.max = v;
        }
    }

    /// Nearest-rank quantile (bucket middle, the exact max at q = 1); 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return value(i).min(self.max);
            }
        }
        self.max
    }
}

/// Nearest-rank quantile of sorted samples.
pub fn quantile_sorted(sorted: &[u32], q: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles_are_within_two_percent() {
        let mut h = Hist::default();
        for v in 1..=100_000u64 {
            h.add(v * 10);
        }
        for (q, want) in [(0.5, 500_000.0), (0.99, 990_000.0)] {
            let got = h.quantile(q) as f64;
            assert!((got - want).abs() / want < 0.02, "q{q}: {got} against {want}");
        }
        assert_eq!(h.quantile(1.0), 1_000_000);
        assert_eq!(h.max, 1_000_000);
    }

    #[test]
    fn histogram_index_is_monotonic_and_in_range() {
        let mut last = 0;
        for v in (0..1u64 << 20).chain([u64::MAX / 2, u64::MAX]) {
            let i = index(v);
            assert!(i >= last && i < BUCKETS);
            last = i;
        }
    }
}
