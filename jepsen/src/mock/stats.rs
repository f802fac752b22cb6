//! Counters a test reads to prove what the gateway did upstream, and the guards that keep
//! them honest whichever way a request ends (answered, cancelled, aborted, server stopped).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

/// A snapshot of the mock's counters, as served by `GET /mock/stats`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MockStats {
    /// API requests received (chat completions and embeddings).
    pub requests: u64,
    pub streams_started: u64,
    /// Streams whose final `[DONE]` event was handed to the connection.
    pub streams_completed: u64,
    /// Streams whose body was dropped before `[DONE]`: the client (the gateway) went away.
    pub streams_cancelled: u64,
    /// API requests not yet answered, or whose streamed body is still open.
    pub in_flight: u64,
    /// Chat completions that passed the injected faults, by their `user` field (requests
    /// without one are not counted here), with the usage the mock reported for them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub by_user: BTreeMap<String, UserStats>,
}

/// What one `user` sent: answered chat completions and the usage reported for them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserStats {
    pub requests: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

// Relaxed is enough: each counter is independent, and readers poll over HTTP.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    requests: AtomicU64,
    streams_started: AtomicU64,
    streams_completed: AtomicU64,
    streams_cancelled: AtomicU64,
    in_flight: AtomicU64,
    /// Only requests that carry a `user` take this lock (jepsen's quota workload).
    by_user: Mutex<BTreeMap<String, UserStats>>,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> MockStats {
        MockStats {
            requests: self.requests.load(Ordering::Relaxed),
            streams_started: self.streams_started.load(Ordering::Relaxed),
            streams_completed: self.streams_completed.load(Ordering::Relaxed),
            streams_cancelled: self.streams_cancelled.load(Ordering::Relaxed),
            in_flight: self.in_flight.load(Ordering::Relaxed),
            by_user: self.by_user.lock().map(|m| m.clone()).unwrap_or_default(),
        }
    }

    /// Counts an answered chat completion of `user` with the usage reported for it.
    pub(crate) fn count_user(&self, user: &str, prompt_tokens: u64, completion_tokens: u64) {
        if let Ok(mut by_user) = self.by_user.lock() {
            let entry = by_user.entry(user.to_owned()).or_default();
            entry.requests += 1;
            entry.prompt_tokens += prompt_tokens;
            entry.completion_tokens += completion_tokens;
        }
    }

    /// Counts a new API request; the returned number (from 1) names its ids.
    pub(crate) fn admit(self: &Arc<Self>) -> (u64, InFlight) {
        let n = self.requests.fetch_add(1, Ordering::Relaxed) + 1;
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        (n, InFlight(Arc::clone(self)))
    }
}

/// Held while a request is in flight; released when its handler or its body stream is dropped.
#[derive(Debug)]
pub(crate) struct InFlight(Arc<Counters>);

impl InFlight {
    /// Hands the request over to a streamed body, which now decides how it ended.
    pub(crate) fn into_stream(self) -> StreamGuard {
        self.0.streams_started.fetch_add(1, Ordering::Relaxed);
        StreamGuard {
            in_flight: self,
            outcome: StreamOutcome::Running,
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamOutcome {
    Running,
    Completed,
    Aborted,
}

/// Lives inside a streamed body. Dropped while still running means hyper dropped the body
/// before `[DONE]` left, which only happens when the peer went away or the server stopped.
#[derive(Debug)]
pub(crate) struct StreamGuard {
    in_flight: InFlight,
    outcome: StreamOutcome,
}

impl StreamGuard {
    pub(crate) fn completed(&mut self) {
        if self.outcome == StreamOutcome::Running {
            self.outcome = StreamOutcome::Completed;
            (self.in_flight.0)
                .streams_completed
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A deliberate abort (`drop_after_chunks`): neither completed nor cancelled.
    pub(crate) fn aborted(&mut self) {
        if self.outcome == StreamOutcome::Running {
            self.outcome = StreamOutcome::Aborted;
        }
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if self.outcome == StreamOutcome::Running {
            (self.in_flight.0)
                .streams_cancelled
                .fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_dropped_while_running_counts_as_cancelled() {
        let counters = Arc::new(Counters::default());
        let (_, a) = counters.admit();
        let (_, b) = counters.admit();
        let (_, c) = counters.admit();
        let (mut a, mut b, c) = (a.into_stream(), b.into_stream(), c.into_stream());
        assert_eq!(counters.snapshot().in_flight, 3);
        a.completed();
        b.aborted();
        drop((a, b, c));
        let s = counters.snapshot();
        assert_eq!(
            (
                s.requests,
                s.streams_started,
                s.streams_completed,
                s.streams_cancelled,
                s.in_flight
            ),
            (3, 3, 1, 1, 0)
        );
    }

    #[test]
    fn answered_requests_are_counted_per_user_with_their_usage() {
        let counters = Counters::default();
        counters.count_user("k1", 1, 4);
        counters.count_user("k1", 2, 4);
        counters.count_user("k2", 1, 4);
        let by_user = counters.snapshot().by_user;
        assert_eq!(
            by_user["k1"],
            UserStats {
                requests: 2,
                prompt_tokens: 3,
                completion_tokens: 8
            }
        );
        assert_eq!(by_user["k2"].requests, 1);
        // Serialised only when something was counted, so existing readers see no change.
        let empty = serde_json::to_value(Counters::default().snapshot()).unwrap();
        assert!(empty.get("by_user").is_none());
    }
}
