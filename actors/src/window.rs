//! Two counters over a sliding time window, in ten buckets: what outlier detection (requests,
//! failures) and the retry budget (requests, retries) count.
//!
//! A bucket is reused once its slot has slid out of the window, so the structure is a fixed
//! array: no allocation, `Copy`, and cheap to publish in a snapshot. The window covers the
//! current bucket and the nine before it, so what it counts spans between 90% and 100% of
//! the configured length.

use std::time::Duration;

use tokio::time::Instant;

const BUCKETS: usize = 10;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Bucket {
    /// 1-based slot number since `origin`; 0 marks a bucket never used.
    slot: u64,
    first: u32,
    second: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlidingWindow {
    origin: Instant,
    bucket_nanos: u64,
    buckets: [Bucket; BUCKETS],
}

impl SlidingWindow {
    /// `window` must be greater than zero (the settings guarantee it).
    pub fn new(window: Duration, now: Instant) -> Self {
        let bucket_nanos = (window.as_nanos() / BUCKETS as u128).clamp(1, u128::from(u64::MAX));
        Self {
            origin: now,
            bucket_nanos: bucket_nanos as u64,
            buckets: [Bucket::default(); BUCKETS],
        }
    }

    fn slot(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.origin).as_nanos();
        (elapsed / u128::from(self.bucket_nanos)) as u64 + 1
    }

    /// Adds to the two counters at `now`.
    pub fn add(&mut self, now: Instant, first: u32, second: u32) {
        let slot = self.slot(now);
        let bucket = &mut self.buckets[(slot % BUCKETS as u64) as usize];
        if bucket.slot > slot {
            // Older than the window (a late report): it would clobber a newer bucket.
            return;
        }
        if bucket.slot != slot {
            *bucket = Bucket {
                slot,
                first: 0,
                second: 0,
            };
        }
        bucket.first = bucket.first.saturating_add(first);
        bucket.second = bucket.second.saturating_add(second);
    }

    /// The two counters summed over the window ending at `now`.
    pub fn totals(&self, now: Instant) -> (u64, u64) {
        let current = self.slot(now);
        self.buckets
            .iter()
            .filter(|b| b.slot != 0 && b.slot <= current && b.slot + BUCKETS as u64 > current)
            .fold((0, 0), |(first, second), b| {
                (first + u64::from(b.first), second + u64::from(b.second))
            })
    }

    /// Forgets everything counted so far.
    pub fn clear(&mut self) {
        self.buckets = [Bucket::default(); BUCKETS];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_inside_the_window_add_up() {
        let start = Instant::now();
        let mut window = SlidingWindow::new(Duration::from_secs(10), start);
        window.add(start, 1, 0);
        window.add(start + Duration::from_secs(3), 2, 1);
        window.add(start + Duration::from_millis(9_500), 1, 1);
        assert_eq!(window.totals(start + Duration::from_millis(9_900)), (4, 2));
    }

    #[test]
    fn counts_older_than_the_window_drop_out() {
        let start = Instant::now();
        let mut window = SlidingWindow::new(Duration::from_secs(10), start);
        window.add(start, 5, 5);
        window.add(start + Duration::from_secs(6), 1, 0);
        assert_eq!(window.totals(start + Duration::from_secs(9)), (6, 5));
        assert_eq!(window.totals(start + Duration::from_secs(11)), (1, 0));
        assert_eq!(window.totals(start + Duration::from_secs(30)), (0, 0));
    }

    #[test]
    fn a_reused_bucket_starts_from_zero() {
        let start = Instant::now();
        let mut window = SlidingWindow::new(Duration::from_secs(1), start);
        window.add(start, 7, 7);
        // Ten buckets later the same array slot holds a new bucket.
        let later = start + Duration::from_secs(1);
        window.add(later, 1, 0);
        assert_eq!(window.totals(later), (1, 0));
    }

    #[test]
    fn clear_forgets_everything() {
        let start = Instant::now();
        let mut window = SlidingWindow::new(Duration::from_secs(1), start);
        window.add(start, 3, 1);
        window.clear();
        assert_eq!(window.totals(start), (0, 0));
    }
}
