//! The upstream's response body on its way to the client, frame by frame, with the idle-gap and
//! total-time limits enforced and the attempt's outcome reported when the body ends.
//!
//! Frames are forwarded as they arrive: nothing is buffered except the first frame, which the
//! attempt waits for before committing the response (so that a failure before the first byte
//! can still fail over; see attempt.rs). When the upstream stalls past a limit or breaks
//! mid-body, an event stream ends with an SSE `error` event (the client has already got a 200
//! head, so the status can no longer say it); any other body is cut off with an error, which
//! makes the server abort the connection so the client sees a truncated response rather than a
//! well-formed wrong one. Dropping this body (client gone) drops the upstream body, which
//! closes the upstream connection: that is the cancellation, and it reports no verdict on the
//! upstream.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use aigw_actors::{Attempt, AttemptResult};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use crate::error::error_body;

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How waiting for the first frame ended.
pub(crate) enum FirstFrame {
    /// It is held and will be the first frame polled (or the body ended empty).
    Arrived,
    /// The idle or total limit ran out first; the phase says which.
    Stalled(&'static str),
    /// The upstream broke off first.
    Broke,
}

/// Why the upstream part of the body failed.
enum Failure {
    Stalled(&'static str),
    Broke(String),
}

pub(crate) struct TimedBody {
    /// `None` once the body has ended or failed, so the upstream connection is released at once.
    inner: Option<Incoming>,
    /// The first frame, taken early by `first_frame`.
    held: Option<Frame<Bytes>>,
    idle: Duration,
    /// When the idle limit runs out: the last frame's arrival plus `idle`.
    idle_due: Instant,
    deadline: Instant,
    /// One timer for both limits, armed at the earlier of the two. A frame only moves
    /// `idle_due`; the timer is re-armed when it fires early. Two timers, the idle one reset
    /// on every frame, cost ~470 instructions more per streamed chunk (BENCHMARKS.md).
    timer: Pin<Box<Sleep>>,
    event_stream: bool,
    upstream: Arc<str>,
    /// Reported when the body ends; dropped unreported (cancelled) if the client leaves.
    attempt: Option<Attempt>,
}

impl TimedBody {
    pub fn new(
        inner: Incoming,
        idle: Duration,
        deadline: Instant,
        event_stream: bool,
        upstream: Arc<str>,
        attempt: Attempt,
    ) -> Self {
        let idle_due = Instant::now() + idle;
        Self {
            inner: Some(inner),
            held: None,
            idle,
            idle_due,
            deadline,
            timer: Box::pin(tokio::time::sleep_until(idle_due.min(deadline))),
            event_stream,
            upstream,
            attempt: Some(attempt),
        }
    }

    /// Waits for the first frame and holds it, within the same limits as every other frame.
    pub async fn first_frame(&mut self) -> FirstFrame {
        match poll_fn(|cx| self.poll_upstream(cx)).await {
            Some(Ok(frame)) => {
                self.held = Some(frame);
                FirstFrame::Arrived
            }
            None => FirstFrame::Arrived,
            Some(Err(Failure::Stalled(phase))) => FirstFrame::Stalled(phase),
            Some(Err(Failure::Broke(_))) => FirstFrame::Broke,
        }
    }

    fn finish(&mut self, result: AttemptResult) {
        self.inner = None;
        if let Some(mut attempt) = self.attempt.take() {
            attempt.finish(result);
        }
    }

    /// The next frame from the upstream, the limits enforced and the outcome reported.
    fn poll_upstream(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Failure>>> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(&mut *inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if inner.is_end_stream() {
                    // The server may not poll again once the body says it has ended.
                    self.finish(AttemptResult::Success);
                } else {
                    self.idle_due = Instant::now() + self.idle;
                }
                return Poll::Ready(Some(Ok(frame)));
            }
            Poll::Ready(Some(Err(err))) => {
                self.finish(AttemptResult::Failure);
                return Poll::Ready(Some(Err(Failure::Broke(err.to_string()))));
            }
            Poll::Ready(None) => {
                self.finish(AttemptResult::Success);
                return Poll::Ready(None);
            }
            Poll::Pending => {}
        }
        let stalled = loop {
            if self.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let now = Instant::now();
            if now >= self.deadline {
                break "total time limit reached";
            }
            if now >= self.idle_due {
                break "no data within the idle timeout";
            }
            // Frames came since the timer was armed: wait for the new idle limit.
            let next = self.idle_due.min(self.deadline);
            self.timer.as_mut().reset(next);
        };
        self.finish(AttemptResult::Failure);
        Poll::Ready(Some(Err(Failure::Stalled(stalled))))
    }

    /// Ends the body for the client after a failure past the first byte.
    fn fail(&mut self, failure: Failure) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let message = match failure {
            Failure::Stalled(phase) => format!("upstream `{}` timed out: {phase}", self.upstream),
            Failure::Broke(err) => {
                format!("upstream `{}` broke off the response: {err}", self.upstream)
            }
        };
        if self.event_stream {
            let body = error_body(&message, "server_error", None, "upstream_error");
            let mut event = Vec::with_capacity(body.len() + 16);
            event.extend_from_slice(b"event: error\ndata: ");
            event.extend_from_slice(&body);
            event.extend_from_slice(b"\n\n");
            Poll::Ready(Some(Ok(Frame::data(Bytes::from(event)))))
        } else {
            Poll::Ready(Some(Err(message.into())))
        }
    }
}

impl Body for TimedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if let Some(frame) = this.held.take() {
            return Poll::Ready(Some(Ok(frame)));
        }
        match this.poll_upstream(cx) {
            Poll::Ready(Some(Err(failure))) => this.fail(failure),
            Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(frame))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.held.is_none() && self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        // An event stream may get an error event appended, so it never promises a length.
        if self.event_stream {
            return SizeHint::default();
        }
        // The upstream body's hint no longer counts a held first frame.
        let held = self
            .held
            .as_ref()
            .and_then(Frame::data_ref)
            .map_or(0, |data| data.len() as u64);
        let Some(inner) = &self.inner else {
            return SizeHint::with_exact(held);
        };
        let rest = inner.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower() + held);
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + held);
        }
        hint
    }
}
