//! A token bucket: this node's share of a per-minute rate limit.
//!
//! It refills at `share / 60` per second up to its capacity: this node's part of the key's
//! burst B, `B × share / limit`, with B a sixth of the limit unless set (a 10 s burst,
//! QUOTAS.md's β = 1/6), but never less than one unit so a small share still admits. The
//! capacities of all nodes then sum to at most B. Pure: the caller passes the time.

use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Clone)]
pub(crate) struct Bucket {
    /// Units per minute this node may admit.
    share: f64,
    capacity: f64,
    level: f64,
    updated: Instant,
}

/// This node's bucket capacity for a `share_per_minute` of a `limit` per minute whose
/// cluster-wide burst is `burst` (`None`: a sixth of the limit).
pub(crate) fn capacity(share_per_minute: f64, limit: u64, burst: Option<u64>) -> f64 {
    let part = match burst {
        Some(burst) if limit > 0 => burst as f64 * share_per_minute / limit as f64,
        _ => share_per_minute / 6.0,
    };
    part.max(1.0_f64.min(share_per_minute))
}

impl Bucket {
    /// A full bucket, or, on a node that restarted at `restarted`, one holding only what it
    /// would have refilled since: a node killed with an empty bucket must not come back with
    /// a fresh burst inside the same minute.
    pub fn new(
        share_per_minute: f64,
        capacity: f64,
        now: Instant,
        restarted: Option<Instant>,
    ) -> Self {
        let level = match restarted {
            Some(at) => {
                let up = now.saturating_duration_since(at).as_secs_f64();
                (up * share_per_minute / 60.0).min(capacity)
            }
            None => capacity,
        };
        Self {
            share: share_per_minute,
            capacity,
            level,
            updated: now,
        }
    }

    /// This bucket for a new share or capacity (the limit, the burst or the number of voters
    /// changed): it keeps its level, within the new capacity, so a change never hands out a
    /// fresh burst.
    pub fn resized(&mut self, share_per_minute: f64, capacity: f64, now: Instant) -> Self {
        self.refill(now);
        let mut bucket = Self::new(share_per_minute, capacity, now, None);
        bucket.level = bucket.level.min(self.level);
        bucket
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.level = (self.level + elapsed * self.share / 60.0).min(self.capacity);
        self.updated = now;
    }

    /// The most the bucket ever holds: a cost above it can never be taken.
    pub fn capacity(&self) -> f64 {
        self.capacity
    }

    /// Takes `cost` if the bucket holds it.
    pub fn try_take(&mut self, cost: f64, now: Instant) -> bool {
        self.refill(now);
        if self.level + 1e-9 >= cost {
            self.level -= cost;
            true
        } else {
            false
        }
    }

    /// Adjusts after the fact (a reservation that turned out larger or smaller); the level may
    /// go below zero, which is a debt paid before the next admission.
    pub fn adjust(&mut self, delta: f64, now: Instant) {
        self.refill(now);
        self.level = (self.level + delta).min(self.capacity);
    }

    /// Whole units available now.
    pub fn remaining(&mut self, now: Instant) -> u64 {
        self.refill(now);
        self.level.max(0.0) as u64
    }

    /// How long until `cost` units are available (zero if they are).
    pub fn wait_for(&mut self, cost: f64, now: Instant) -> Duration {
        self.refill(now);
        let missing = cost.min(self.capacity) - self.level;
        if missing <= 0.0 || self.share <= 0.0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64(missing * 60.0 / self.share)
    }

    /// How long until the bucket is full again.
    pub fn until_full(&mut self, now: Instant) -> Duration {
        self.wait_for(self.capacity, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_share_of_60_per_minute_admits_a_burst_of_10_then_one_per_second() {
        let start = Instant::now();
        let mut bucket = Bucket::new(60.0, capacity(60.0, 60, None), start, None);
        let burst = (0..100).take_while(|_| bucket.try_take(1.0, start)).count();
        assert_eq!(burst, 10);
        assert_eq!(bucket.wait_for(1.0, start), Duration::from_secs(1));
        tokio::time::advance(Duration::from_millis(999)).await;
        assert!(!bucket.try_take(1.0, Instant::now()));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(bucket.try_take(1.0, Instant::now()));
    }

    #[tokio::test(start_paused = true)]
    async fn over_a_minute_admissions_stay_within_share_plus_burst() {
        let mut bucket = Bucket::new(600.0, capacity(600.0, 600, None), Instant::now(), None);
        let mut admitted = 0;
        for _ in 0..6000 {
            if bucket.try_take(1.0, Instant::now()) {
                admitted += 1;
            }
            tokio::time::advance(Duration::from_millis(10)).await;
        }
        assert!(admitted <= 600 + 100, "{admitted}");
        assert!(admitted >= 600, "{admitted}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_restarted_node_refills_from_empty_and_a_resize_keeps_the_level() {
        let restarted = Instant::now();
        tokio::time::advance(Duration::from_secs(3)).await;
        let now = Instant::now();
        let mut bucket = Bucket::new(60.0, 10.0, now, Some(restarted));
        let burst = (0..100).take_while(|_| bucket.try_take(1.0, now)).count();
        assert_eq!(burst, 3, "3 s of refill, not the 10-unit burst");
        // A bigger share (a voter left) keeps the empty level.
        let mut bigger = bucket.resized(120.0, 20.0, now);
        assert!(!bigger.try_take(1.0, now));
        // A fresh start long after the restart is full again.
        tokio::time::advance(Duration::from_secs(60)).await;
        let full = Bucket::new(60.0, 10.0, Instant::now(), Some(restarted));
        assert_eq!(full.level, full.capacity);
    }

    #[test]
    fn the_capacity_is_this_nodes_part_of_the_burst() {
        // The default burst, a sixth: 2000 tokens per minute on one node hold 333.
        assert_eq!(capacity(2000.0, 2000, None).floor(), 333.0);
        // A burst of 3 requests per 600 a minute, on one node of three with a third.
        assert_eq!(capacity(200.0, 600, Some(3)), 1.0);
        assert_eq!(capacity(600.0, 600, Some(3)), 3.0);
        // Never below one unit while the share has one, never above the share's part.
        assert_eq!(capacity(2.0, 6, Some(1)), 1.0);
        assert_eq!(capacity(0.5, 3, None), 0.5);
        assert_eq!(capacity(1000.0, 2000, Some(4000)), 2000.0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_debt_delays_the_next_admission() {
        let now = Instant::now();
        let mut bucket = Bucket::new(60.0, 10.0, now, None);
        assert!(bucket.try_take(10.0, now));
        bucket.adjust(-5.0, now);
        assert!(!bucket.try_take(1.0, now));
        assert_eq!(bucket.wait_for(1.0, now), Duration::from_secs(6));
    }
}
