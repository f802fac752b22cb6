//! Latency samples: an HDR histogram in nanoseconds, merged across workers and rounds, and the
//! few percentiles the report prints.

use std::time::Duration;

use hdrhistogram::Histogram;

/// Longest latency a histogram records; longer samples are clamped (and still counted).
const MAX_NANOS: u64 = 120_000_000_000;

/// One distribution of latencies.
#[derive(Clone)]
pub(crate) struct Latencies(Histogram<u64>);

impl Latencies {
    pub fn new() -> Self {
        // Three significant digits: 1 µs resolution at 1 ms, 1 ms at 1 s.
        let histogram = Histogram::new_with_bounds(1, MAX_NANOS, 3)
            .expect("the bounds are constants that hdrhistogram accepts");
        Self(histogram)
    }

    pub fn record(&mut self, latency: Duration) {
        let nanos = u64::try_from(latency.as_nanos())
            .unwrap_or(MAX_NANOS)
            .clamp(1, MAX_NANOS);
        self.0.saturating_record(nanos);
    }

    pub fn merge(&mut self, other: &Latencies) {
        // Both have the same bounds, so adding cannot fail.
        let _ = self.0.add(&other.0);
    }

    pub fn len(&self) -> u64 {
        self.0.len()
    }

    pub fn summary(&self) -> Summary {
        let at = |q: f64| Duration::from_nanos(self.0.value_at_quantile(q));
        Summary {
            p50: at(0.50),
            p99: at(0.99),
            p999: at(0.999),
        }
    }
}

impl Default for Latencies {
    fn default() -> Self {
        Self::new()
    }
}

/// The percentiles a table row shows.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Summary {
    pub p50: Duration,
    pub p99: Duration,
    pub p999: Duration,
}

/// Microseconds with one decimal, the unit of every latency table.
pub(crate) fn micros(d: Duration) -> f64 {
    d.as_nanos() as f64 / 1_000.0
}

/// `a - b` in microseconds, signed: an "added latency" can come out negative in the noise.
pub(crate) fn added_micros(a: Duration, b: Duration) -> f64 {
    micros(a) - micros(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_uniform_distribution() {
        let mut l = Latencies::new();
        for us in 1..=1000u64 {
            l.record(Duration::from_micros(us));
        }
        let s = l.summary();
        assert_eq!(l.0.len(), 1000);
        assert!((micros(s.p50) - 500.0).abs() < 1.0, "{:?}", s.p50);
        assert!((micros(s.p99) - 990.0).abs() < 1.5, "{:?}", s.p99);
    }

    #[test]
    fn merged_histograms_count_both() {
        let mut a = Latencies::new();
        let mut b = Latencies::new();
        a.record(Duration::from_micros(10));
        b.record(Duration::from_secs(1000));
        a.merge(&b);
        assert_eq!(a.0.len(), 2);
        assert!(a.0.max() >= 100_000_000_000);
    }
}
