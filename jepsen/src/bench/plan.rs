//! How long and how hard each scenario runs, for `--quick` (under two minutes) and the full
//! run. Every number a report depends on is here, and the report prints it.

use std::time::Duration;

#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub name: &'static str,
    /// Each scenario is split into this many rounds that rotate over the targets, so a noisy
    /// neighbour hits every target alike.
    pub rounds: u32,
    /// Before every round of every target; not measured.
    pub warmup: Duration,
    /// Per target and concurrency, over all rounds.
    pub measure: Duration,
    pub concurrencies: Vec<u64>,
    /// The open-loop run: requests per second, worker connections, measured time.
    pub rate: u64,
    pub rate_workers: u64,
    pub rate_measure: Duration,
    /// Streaming: concurrent streams, content chunks per stream and their interval.
    pub stream_concurrency: u64,
    pub stream_chunks: usize,
    pub stream_interval_ms: u64,
    pub stream_measure: Duration,
    /// Open streams held at once, per protocol; HTTP/1.1 is capped by the open-file limit.
    pub open_streams: usize,
    /// Start-ups timed per target.
    pub startups: usize,
    /// Keys in the many-keys config.
    pub many_keys: usize,
    pub keys_measure: Duration,
    /// Quota on: closed-loop concurrency on the hot key, and how long.
    pub quota_concurrency: u64,
    pub quota_measure: Duration,
}

impl Plan {
    pub fn quick() -> Self {
        Self {
            name: "quick",
            rounds: 1,
            warmup: Duration::from_millis(500),
            measure: Duration::from_millis(2500),
            concurrencies: vec![1, 32, 256],
            rate: 1000,
            rate_workers: 32,
            rate_measure: Duration::from_secs(4),
            stream_concurrency: 16,
            stream_chunks: 16,
            stream_interval_ms: 5,
            stream_measure: Duration::from_secs(3),
            open_streams: 1000,
            startups: 3,
            // The full run's 100,000 keys make a 15 MB config; the quick run keeps to 10,000.
            many_keys: 10_000,
            keys_measure: Duration::from_secs(2),
            quota_concurrency: 32,
            quota_measure: Duration::from_secs(4),
        }
    }

    pub fn full() -> Self {
        Self {
            name: "full",
            rounds: 3,
            warmup: Duration::from_secs(1),
            measure: Duration::from_secs(12),
            concurrencies: vec![1, 32, 256],
            rate: 1000,
            rate_workers: 32,
            rate_measure: Duration::from_secs(30),
            stream_concurrency: 16,
            stream_chunks: 16,
            stream_interval_ms: 5,
            stream_measure: Duration::from_secs(12),
            open_streams: 10_000,
            startups: 10,
            many_keys: 100_000,
            keys_measure: Duration::from_secs(9),
            quota_concurrency: 32,
            quota_measure: Duration::from_secs(30),
        }
    }

    /// One round's share of a measured duration.
    pub fn per_round(&self, total: Duration) -> Duration {
        total / self.rounds.max(1)
    }
}
