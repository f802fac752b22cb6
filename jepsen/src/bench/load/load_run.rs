//! What one measured load run produced: latencies, completions and errors inside the
//! measurement window, and the window's length. Rounds of the same scenario merge.

use std::time::Duration;

use super::latency::Latencies;

#[derive(Clone, Default)]
pub(crate) struct LoadRun {
    pub latencies: Latencies,
    /// Successful requests that started and finished inside the window.
    pub completed: u64,
    /// Failed requests (connect errors, non-2xx answers, broken bodies), warm-up included.
    pub errors: u64,
    /// Open loop only: requests sent more than 1 ms after their scheduled time.
    pub late: u64,
    pub window: Duration,
}

impl LoadRun {
    /// Adds a worker's samples; workers share one window.
    pub fn absorb(&mut self, worker: &LoadRun) {
        self.latencies.merge(&worker.latencies);
        self.completed += worker.completed;
        self.errors += worker.errors;
        self.late += worker.late;
    }

    /// Adds another round: windows add up.
    pub fn merge_round(&mut self, round: &LoadRun) {
        self.absorb(round);
        self.window += round.window;
    }

    pub fn requests_per_second(&self) -> f64 {
        if self.window.is_zero() {
            return 0.0;
        }
        self.completed as f64 / self.window.as_secs_f64()
    }
}
