//! Exponentially weighted moving average of an upstream's latency (time to response head),
//! for `least-loaded` balancing and the admin view.
//!
//! Each sample moves the average a fixed fraction of the way, so a few slow answers show
//! at once and an old spike fades within a dozen requests.

/// How far each sample moves the average.
const ALPHA: f64 = 0.2;

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Ewma {
    /// Milliseconds; `None` before the first sample.
    value_ms: Option<f64>,
}

impl Ewma {
    pub fn observe(&mut self, sample_ms: f64) {
        self.value_ms = Some(match self.value_ms {
            None => sample_ms,
            Some(value) => value + ALPHA * (sample_ms - value),
        });
    }

    /// The average in milliseconds, 0 before any sample.
    pub fn millis(&self) -> f64 {
        self.value_ms.unwrap_or(0.0)
    }

    pub fn has_samples(&self) -> bool {
        self.value_ms.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_sample_is_the_average_then_each_moves_it_a_fifth_of_the_way() {
        let mut ewma = Ewma::default();
        assert_eq!(ewma.millis(), 0.0);
        ewma.observe(100.0);
        assert_eq!(ewma.millis(), 100.0);
        ewma.observe(200.0);
        assert!((ewma.millis() - 120.0).abs() < 1e-9);
    }

    #[test]
    fn an_old_spike_fades() {
        let mut ewma = Ewma::default();
        ewma.observe(5000.0);
        for _ in 0..30 {
            ewma.observe(100.0);
        }
        assert!(ewma.millis() < 110.0, "{}", ewma.millis());
    }
}
