//! The node-wide retry budget: how many failover attempts the node may make, as a share of
//! its recent requests plus a small floor (Finagle's and linkerd's retry budgets).
//!
//! A per-request attempt limit alone multiplies load by that limit when every upstream is
//! failing, which is exactly when they can least take it. The budget caps retries over the
//! window at `ratio * requests + min_per_second * window`, so a dead set of upstreams sees at
//! most `1 + ratio` times the client load (plus the floor), while a single bad upstream among
//! good ones still gets every one of its failures retried.

use parking_lot::Mutex;

use aigw_config::RetryBudgetSettings;
use tokio::time::Instant;

use crate::window::SlidingWindow;

/// The budget's arithmetic: counts of requests and retries over a sliding window.
#[derive(Debug, Clone)]
pub struct RetryBudget {
    ratio: f64,
    floor: f64,
    /// (requests, retries).
    counts: SlidingWindow,
}

impl RetryBudget {
    pub fn new(settings: &RetryBudgetSettings, now: Instant) -> Self {
        Self {
            ratio: settings.ratio.as_f64(),
            floor: f64::from(settings.min_per_second) * settings.window.as_secs_f64(),
            counts: SlidingWindow::new(settings.window, now),
        }
    }

    /// Counts a client request (its first attempt).
    pub fn record_request(&mut self, now: Instant) {
        self.counts.add(now, 1, 0);
    }

    /// Spends one retry if the budget allows it; false means do not retry.
    pub fn try_retry(&mut self, now: Instant) -> bool {
        let (requests, retries) = self.counts.totals(now);
        let allowed = self.floor + self.ratio * requests as f64;
        if (retries as f64) < allowed {
            self.counts.add(now, 0, 1);
            true
        } else {
            false
        }
    }
}

/// The budget shared by every request of a node. The lock is held for a few arithmetic
/// operations and never across an await.
#[derive(Debug)]
pub struct SharedRetryBudget(Mutex<RetryBudget>);

impl SharedRetryBudget {
    pub fn new(settings: &RetryBudgetSettings) -> Self {
        Self(Mutex::new(RetryBudget::new(settings, Instant::now())))
    }

    pub fn record_request(&self) {
        let now = Instant::now();
        self.lock().record_request(now);
    }

    pub fn try_retry(&self) -> bool {
        let now = Instant::now();
        self.lock().try_retry(now)
    }

    fn lock(&self) -> parking_lot::MutexGuard<'_, RetryBudget> {
        self.0.lock()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use aigw_config::Ratio;

    use super::*;

    fn settings(ratio: f64, min_per_second: u32) -> RetryBudgetSettings {
        RetryBudgetSettings {
            ratio: Ratio::new(ratio).unwrap(),
            min_per_second,
            window: Duration::from_secs(10),
        }
    }

    #[test]
    fn retries_are_capped_at_the_ratio_of_requests_plus_the_floor() {
        let now = Instant::now();
        let mut budget = RetryBudget::new(&settings(0.2, 1), now);
        let mut retries = 0;
        for _ in 0..100 {
            budget.record_request(now);
            // Every request wants two retries, as when every upstream is down.
            for _ in 0..2 {
                if budget.try_retry(now) {
                    retries += 1;
                }
            }
        }
        // 0.2 * 100 + 1/s * 10 s.
        assert_eq!(retries, 30);
    }

    #[test]
    fn the_floor_allows_retries_before_any_traffic() {
        let now = Instant::now();
        let mut budget = RetryBudget::new(&settings(0.0, 1), now);
        let granted = (0..20).filter(|_| budget.try_retry(now)).count();
        assert_eq!(granted, 10);
    }

    #[test]
    fn the_budget_refills_as_the_window_slides() {
        let start = Instant::now();
        let mut budget = RetryBudget::new(&settings(0.5, 0), start);
        for _ in 0..10 {
            budget.record_request(start);
        }
        assert_eq!((0..10).filter(|_| budget.try_retry(start)).count(), 5);
        let later = start + Duration::from_secs(11);
        assert!(
            !budget.try_retry(later),
            "no requests in the window, no floor"
        );
        budget.record_request(later);
        budget.record_request(later);
        assert!(budget.try_retry(later));
        assert!(!budget.try_retry(later));
    }

    #[tokio::test(start_paused = true)]
    async fn the_shared_budget_follows_tokios_clock() {
        let budget = SharedRetryBudget::new(&settings(0.0, 1));
        assert_eq!((0..15).filter(|_| budget.try_retry()).count(), 10);
        tokio::time::sleep(Duration::from_secs(11)).await;
        assert!(budget.try_retry());
    }
}
