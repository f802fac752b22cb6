//! Passive outlier detection: deciding from real requests' outcomes that an upstream should be
//! ejected (its breaker opened).
//!
//! Two triggers, either is enough: `consecutive_failures` failures in a row (a dead upstream
//! trips this within a handful of requests), or a failure rate of at least `failure_rate` over
//! the sliding `window` once it holds `min_requests` requests (an upstream failing half of
//! its calls never fails five in a row for long, but its rate gives it away).

use aigw_config::BreakerSettings;
use tokio::time::Instant;

use crate::window::SlidingWindow;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutlierDetector {
    pub consecutive_failures: u32,
    /// (requests, failures).
    recent: SlidingWindow,
}

impl OutlierDetector {
    pub fn new(settings: &BreakerSettings, now: Instant) -> Self {
        Self {
            consecutive_failures: 0,
            recent: SlidingWindow::new(settings.window, now),
        }
    }

    /// Records one request's outcome; true when the upstream should be ejected.
    pub fn record(&mut self, failed: bool, now: Instant, settings: &BreakerSettings) -> bool {
        self.recent.add(now, 1, u32::from(failed));
        if !failed {
            self.consecutive_failures = 0;
            return false;
        }
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        let in_a_row = settings.consecutive_failures > 0
            && self.consecutive_failures >= settings.consecutive_failures;
        in_a_row || self.rate_exceeded(now, settings)
    }

    fn rate_exceeded(&self, now: Instant, settings: &BreakerSettings) -> bool {
        if settings.failure_rate.is_zero() {
            return false;
        }
        let (requests, failures) = self.recent.totals(now);
        requests > 0
            && requests >= u64::from(settings.min_requests)
            && failures as f64 >= settings.failure_rate.as_f64() * requests as f64
    }

    /// (requests, failures) in the window ending at `now`.
    pub fn recent(&self, now: Instant) -> (u64, u64) {
        self.recent.totals(now)
    }

    /// Starts afresh, as after an ejection: the evidence has been acted on.
    pub fn reset(&mut self) {
        self.consecutive_failures = 0;
        self.recent.clear();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use aigw_config::Ratio;

    use super::*;

    fn settings(consecutive: u32, rate: f64, min_requests: u32) -> BreakerSettings {
        BreakerSettings {
            consecutive_failures: consecutive,
            failure_rate: Ratio::new(rate).unwrap(),
            window: Duration::from_secs(30),
            min_requests,
            ..BreakerSettings::default()
        }
    }

    #[test]
    fn consecutive_failures_eject_and_a_success_resets_the_count() {
        let s = settings(3, 0.0, 0);
        let now = Instant::now();
        let mut detector = OutlierDetector::new(&s, now);
        assert!(!detector.record(true, now, &s));
        assert!(!detector.record(true, now, &s));
        assert!(!detector.record(false, now, &s));
        assert!(!detector.record(true, now, &s));
        assert!(!detector.record(true, now, &s));
        assert!(detector.record(true, now, &s));
    }

    #[test]
    fn a_failure_rate_at_the_threshold_ejects_once_enough_requests_are_seen() {
        let s = settings(0, 0.5, 10);
        let now = Instant::now();
        let mut detector = OutlierDetector::new(&s, now);
        // Alternating failures never make two in a row, but half of them fail.
        let ejected_at = (1..=20).find(|n| detector.record(n % 2 == 0, now, &s));
        assert_eq!(
            ejected_at,
            Some(10),
            "the 10th request is the minimum and 5/10 fail"
        );
    }

    #[test]
    fn a_low_failure_rate_is_tolerated() {
        let s = settings(0, 0.5, 10);
        let now = Instant::now();
        let mut detector = OutlierDetector::new(&s, now);
        let ejected = (1..=100).any(|n| detector.record(n % 4 == 0, now, &s));
        assert!(!ejected);
        assert_eq!(detector.recent(now), (100, 25));
    }

    #[test]
    fn zero_disables_a_trigger() {
        let s = settings(0, 0.0, 0);
        let now = Instant::now();
        let mut detector = OutlierDetector::new(&s, now);
        assert!(!(0..50).any(|_| detector.record(true, now, &s)));
    }

    #[test]
    fn reset_forgets_the_evidence() {
        let s = settings(2, 0.5, 2);
        let now = Instant::now();
        let mut detector = OutlierDetector::new(&s, now);
        detector.record(true, now, &s);
        detector.reset();
        assert_eq!(detector.recent(now), (0, 0));
        assert!(!detector.record(true, now, &s));
    }
}
