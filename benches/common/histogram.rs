//! A log-bucket histogram of nanosecond latencies.
//!
//! Values below 16 ns get a bucket each; above, every power of two is split
//! into 16 equal sub-buckets, so a reported percentile is within 1/32 (≈3 %)
//! of the true value (the bucket midpoint is reported). 976 buckets cover
//! the whole `u64` range; recording is a `leading_zeros` and an increment.

/// Sub-buckets per power of two, as a bit count.
const SUB_BITS: u32 = 4;
const SUB: u64 = 1 << SUB_BITS;
const BUCKETS: usize = ((64 - SUB_BITS as usize) + 1) * SUB as usize;

/// Counts of latencies by log bucket.
#[derive(Clone, Debug)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; BUCKETS],
            total: 0,
            max: 0,
        }
    }
}

fn bucket_of(v: u64) -> usize {
    if v < SUB {
        return v as usize;
    }
    let exp = 63 - v.leading_zeros(); // >= SUB_BITS
    let shift = exp - SUB_BITS;
    ((shift as u64 + 1) * SUB + ((v >> shift) & (SUB - 1))) as usize
}

/// The smallest and largest value bucket `i` holds.
fn bounds_of(i: usize) -> (u64, u64) {
    let i = i as u64;
    if i < SUB {
        return (i, i);
    }
    let shift = i / SUB - 1;
    let low = (SUB + i % SUB) << shift;
    (low, low + ((1u64 << shift) - 1))
}

impl Histogram {
    /// Records one latency in nanoseconds.
    pub fn record(&mut self, nanos: u64) {
        self.counts[bucket_of(nanos)] += 1;
        self.total += 1;
        self.max = self.max.max(nanos);
    }

    /// Number of recorded values.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// Largest recorded value (exact).
    pub fn max(&self) -> u64 {
        self.max
    }

    /// The value at quantile `q` (0.0..=1.0), as its bucket's midpoint; 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let (low, high) = bounds_of(i);
                return (low + (high - low) / 2).min(self.max);
            }
        }
        self.max
    }

    /// Adds another histogram's counts to this one.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }
}

/// Checks that the buckets tile `0..=u64::MAX` in order (run at start-up by
/// the latency harness: benches have no unit tests).
pub fn self_check() {
    let mut prev_high = None;
    for i in 0..BUCKETS {
        let (low, high) = bounds_of(i);
        assert!(low <= high);
        if let Some(p) = prev_high {
            assert_eq!(low, p + 1, "bucket {i}");
        }
        assert_eq!(bucket_of(low), i);
        assert_eq!(bucket_of(high), i);
        prev_high = Some(high);
    }
    assert_eq!(prev_high, Some(u64::MAX));
}
