//! The upstream's response body on its way to the client, frame by frame, with the idle-gap and
//! total-time limits enforced.
//!
//! Frames are forwarded as they arrive: nothing is buffered. When the upstream stalls past a
//! limit or breaks mid-body, an event stream ends with an SSE `error` event (the client has
//! already got a 200 head, so the status can no longer say it); any other body is cut off with
//! an error, which makes the server abort the connection so the client sees a truncated
//! response rather than a well-formed wrong one. Dropping this body (client gone) drops the
//! upstream body, which closes the upstream connection: that is the cancellation.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use crate::openai::error_body;

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub(crate) struct TimedBody {
    /// `None` once the body has ended or failed, so the upstream connection is released at once.
    inner: Option<Incoming>,
    idle: Duration,
    idle_timer: Pin<Box<Sleep>>,
    deadline: Pin<Box<Sleep>>,
    event_stream: bool,
    upstream: Arc<str>,
}

impl TimedBody {
    pub fn new(
        inner: Incoming,
        idle: Duration,
        deadline: Instant,
        event_stream: bool,
        upstream: Arc<str>,
    ) -> Self {
        Self {
            inner: Some(inner),
            idle,
            idle_timer: Box::pin(tokio::time::sleep(idle)),
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
            event_stream,
            upstream,
        }
    }

    fn fail(&mut self, message: String) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.inner = None;
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
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let next = Instant::now() + this.idle;
                this.idle_timer.as_mut().reset(next);
                return Poll::Ready(Some(Ok(frame)));
            }
            Poll::Ready(Some(Err(err))) => {
                return this.fail(format!(
                    "upstream `{}` broke off the response: {err}",
                    this.upstream
                ));
            }
            Poll::Ready(None) => {
                this.inner = None;
                return Poll::Ready(None);
            }
            Poll::Pending => {}
        }
        if this.deadline.as_mut().poll(cx).is_ready() {
            return this.fail(format!(
                "upstream `{}` timed out: total time limit reached",
                this.upstream
            ));
        }
        if this.idle_timer.as_mut().poll(cx).is_ready() {
            return this.fail(format!(
                "upstream `{}` timed out: no data within the idle timeout",
                this.upstream
            ));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        // An event stream may get an error event appended, so it never promises a length.
        match &self.inner {
            Some(inner) if !self.event_stream => inner.size_hint(),
            _ => SizeHint::default(),
        }
    }
}
