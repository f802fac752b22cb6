//! What every handler shares: the current behaviour (with the bytes pre-built for it), the
//! counters, the gate's step counter and the last request seen.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::StatusCode;
use tokio::sync::watch;

use super::behavior::MockBehavior;
use super::error::error_body;
use super::last_request::LastRequestSlot;
use super::stats::Counters;
use super::wire;

/// A behaviour resolved for the hot path: durations, a usable status, and pre-built bodies.
/// Rebuilt on every change, so a request only loads one pointer to see all of it.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub(crate) behavior: MockBehavior,
    pub(crate) latency: Duration,
    pub(crate) chunk_interval: Duration,
    /// Clamped to 0.0..=1.0 (`set_behavior` does not validate).
    pub(crate) error_rate: f64,
    pub(crate) error_status: StatusCode,
    pub(crate) error_body: Bytes,
    /// The non-streamed answer text as a JSON string literal.
    pub(crate) text_json: Bytes,
}

impl Prepared {
    fn new(behavior: MockBehavior) -> Self {
        let error_status = StatusCode::from_u16(behavior.error_status)
            .ok()
            .filter(|s| !s.is_informational())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let error_rate = if behavior.error_rate.is_nan() {
            0.0
        } else {
            behavior.error_rate.clamp(0.0, 1.0)
        };
        Self {
            latency: Duration::from_millis(behavior.latency_ms),
            chunk_interval: Duration::from_millis(behavior.chunk_interval_ms),
            error_rate,
            error_status,
            error_body: error_body(
                error_status,
                &format!("aigw-mock injected error ({})", error_status.as_u16()),
            ),
            text_json: wire::text_json(behavior.chunks),
            behavior,
        }
    }
}

#[derive(Debug)]
pub(crate) struct MockState {
    prepared: ArcSwap<Prepared>,
    /// Serialises read-modify-write changes (PATCH) so two concurrent patches both apply.
    writers: Mutex<()>,
    pub(crate) counters: Arc<Counters>,
    /// Monotonic count of `POST /mock/step`; a gated stream waits for its own target value,
    /// so a step issued just before the stream starts waiting is not lost.
    steps: watch::Sender<u64>,
    pub(crate) last_request: LastRequestSlot,
    pub(crate) videos: super::videos::VideoJobs,
}

impl MockState {
    pub(crate) fn new(behavior: MockBehavior) -> Self {
        Self {
            prepared: ArcSwap::from_pointee(Prepared::new(behavior)),
            writers: Mutex::new(()),
            counters: Arc::default(),
            steps: watch::Sender::new(0),
            last_request: LastRequestSlot::default(),
            videos: super::videos::VideoJobs::default(),
        }
    }

    pub(crate) fn prepared(&self) -> Arc<Prepared> {
        self.prepared.load_full()
    }

    pub(crate) fn set_behavior(&self, behavior: MockBehavior) {
        let _writer = self.writers.lock().unwrap_or_else(|e| e.into_inner());
        self.prepared.store(Arc::new(Prepared::new(behavior)));
    }

    /// Replaces the behaviour with `change(current)`, atomically with respect to other writers.
    pub(crate) fn update(
        &self,
        change: impl FnOnce(&MockBehavior) -> Result<MockBehavior, String>,
    ) -> Result<MockBehavior, String> {
        let _writer = self.writers.lock().unwrap_or_else(|e| e.into_inner());
        let next = change(&self.prepared.load().behavior)?;
        self.prepared.store(Arc::new(Prepared::new(next.clone())));
        Ok(next)
    }

    /// Releases one chunk of every gated stream; returns the new step count.
    pub(crate) fn step(&self) -> u64 {
        self.steps.send_modify(|steps| *steps += 1);
        *self.steps.borrow()
    }

    /// A receiver of step counts and the count at this moment, which the stream's targets
    /// are relative to.
    pub(crate) fn gate(&self) -> (watch::Receiver<u64>, u64) {
        let receiver = self.steps.subscribe();
        let base = *receiver.borrow();
        (receiver, base)
    }
}
