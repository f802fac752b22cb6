//! One call's record as it is gathered on the request path: what the handlers know
//! ([`CallFacts`], put in the request's extensions by the records layer), what the layer sees
//! (the request line, the client, the status, the timings, the response's frames), handed to the
//! recorder as a [`Draft`] when the response body ends or the client leaves.
//!
//! The request path only keeps what it already holds: the body bytes the handler read, the
//! frames of a request body streamed on (pass-through calls, [`CallFacts::tee_request`]) and
//! the frames the response is made of (refcounted `Bytes`, no copy), up to `max_body_bytes`
//! each. A multipart form's files are hashed as the upload streams through ([`FormSeen`]): the
//! bytes are never held. Parsing, stream assembly and serialisation happen in the recorder's
//! writer task.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use aigw_config::Capture;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use http_body::{Body as _, Frame, SizeHint};
use parking_lot::Mutex;
use tokio::time::Instant;

use super::record::{Upload, Usage};
use super::writer::Recorder;
use crate::proxy::Tried;

pub(crate) use aigw_cluster::unix_now_ms as now_ms;

/// A stream's chunk times kept at most (8 bytes each); a longer stream's record has the first.
const MAX_OFFSETS: usize = 100_000;

/// What the handlers know about a call: the records layer puts one in the request's
/// extensions, the key's authentication and the handler fill it (the usage settlement too, when
/// the response ends), and the layer reads it when the response is done. Cheap to clone.
#[derive(Clone)]
pub(crate) struct CallFacts {
    facts: Arc<Mutex<Facts>>,
    /// The bound on a body kept, and whether bodies are kept at all (the node's policy; a
    /// model's own is applied when the record is built).
    max_body_bytes: usize,
    keep_bodies: bool,
}

#[derive(Default)]
pub(crate) struct Facts {
    pub key: Option<(String, String)>,
    pub model: Option<String>,
    pub attempts: Vec<Tried>,
    /// The request body as the handler read it (JSON endpoints).
    pub request_body: Option<Bytes>,
    /// Its size, when the body itself is not kept.
    pub request_bytes: u64,
    pub usage: Option<Usage>,
    /// When the upstream's response head arrived (unix ms).
    pub response_head_ms: Option<u64>,
    /// The key's capture policy, over the node's.
    pub key_capture: Option<Capture>,
    /// The model's capture policy, over the node's.
    pub model_capture: Option<Capture>,
    /// A request body streamed on as it arrived (pass-through calls).
    pub request_stream: Option<StreamedRequest>,
    /// A multipart form's files and text fields, as the upload streamed through.
    pub form: Option<FormSeen>,
    /// The gateway asked the upstream for a stream's usage (`stream_options.include_usage`).
    pub added_include_usage: bool,
    /// Usage still being measured off the request path (an audio file's header): the record
    /// waits for it.
    pub settling: Option<tokio::task::JoinHandle<()>>,
}

/// What went by of a request body streamed on without being read whole: its frames (by
/// reference) up to the bound, and its size. Published when the body ends or is dropped; the
/// writer reads it when it builds the record.
#[derive(Clone, Default)]
pub(crate) struct StreamedRequest(Arc<Mutex<SeenRequest>>);

#[derive(Default)]
pub(crate) struct SeenRequest {
    pub kept: Vec<Bytes>,
    pub kept_bytes: usize,
    pub bytes: u64,
    pub truncated: bool,
}

impl StreamedRequest {
    pub fn take(&self) -> SeenRequest {
        std::mem::take(&mut self.0.lock())
    }
}

/// A multipart form as it streamed through: each complete file part's metadata (its bytes
/// hashed as they passed, never kept) and the text fields. Filled by the multipart reader,
/// read by the writer.
#[derive(Clone, Default)]
pub(crate) struct FormSeen(Arc<Mutex<Form>>);

#[derive(Default)]
pub(crate) struct Form {
    /// The form's size so far, in bytes.
    pub bytes: u64,
    pub files: Vec<Upload>,
    /// Text fields in order, each value as sent (lossy UTF-8), cut at [`FORM_TEXT_LIMIT`]
    /// bytes in all.
    pub fields: Vec<(String, String)>,
    pub fields_truncated: bool,
}

/// How much of a form's text fields is kept for its record.
pub(crate) const FORM_TEXT_LIMIT: usize = 64 * 1024;

impl FormSeen {
    pub fn with<T>(&self, change: impl FnOnce(&mut Form) -> T) -> T {
        change(&mut self.0.lock())
    }
}

impl CallFacts {
    fn new(max_body_bytes: usize, keep_bodies: bool) -> Self {
        Self {
            facts: Arc::default(),
            max_body_bytes,
            keep_bodies,
        }
    }

    /// The facts of the call `extensions` belong to, when its calls are recorded.
    pub fn of(extensions: &http::Extensions) -> Option<&Self> {
        extensions.get::<Self>()
    }

    /// Changes the facts under their lock (a few instructions; never held across an await).
    pub fn with(&self, change: impl FnOnce(&mut Facts)) {
        change(&mut self.facts.lock());
    }

    /// `body`, streamed on as it arrives, with its frames kept for the record by reference
    /// (up to the bound; only its size when bodies are not kept).
    /// The key is known by then: its capture policy, over the node's, says whether the frames
    /// are kept.
    pub fn tee_request(&self, body: Body) -> Body {
        let shared = StreamedRequest::default();
        let mut keep = self.keep_bodies;
        self.with(|f| {
            f.request_stream = Some(shared.clone());
            if let Some(capture) = f.key_capture {
                keep = capture.keeps_bodies();
            }
        });
        Body::new(RequestTee {
            inner: body,
            seen: Some(SeenRequest::default()),
            shared,
            max_body_bytes: self.max_body_bytes,
            keep,
        })
    }

    /// A form about to stream through: what its reader sees goes to the record.
    pub fn form(&self) -> FormSeen {
        let form = FormSeen::default();
        self.with(|f| f.form = Some(form.clone()));
        form
    }

    /// The call was forwarded: its attempts and the time its answer's head came.
    pub fn forwarded(&self, attempts: Vec<Tried>) {
        self.with(|f| {
            f.attempts = attempts;
            f.response_head_ms = Some(now_ms());
        });
    }

    /// What the call used, as the node's usage meter got it.
    pub fn used(&self, record: &crate::usage::UsageRecord) {
        let usage = Usage {
            input_tokens: record.input_tokens,
            output_tokens: record.output_tokens,
            cached_tokens: record.cached_tokens,
            images: record.images,
            image_size: record.size_tier.clone(),
            audio_seconds: record.audio_seconds,
            video_seconds: record.video_seconds,
        };
        self.with(|f| f.usage = Some(usage));
    }

    fn take(&self) -> Facts {
        std::mem::take(&mut self.facts.lock())
    }
}

/// The response's bytes as the client received them, with each frame's time after the first.
#[derive(Default)]
pub(crate) struct Frames {
    pub kept: Vec<Bytes>,
    /// The bytes in `kept`.
    pub kept_bytes: usize,
    pub offsets_ms: Vec<u64>,
    pub bytes: u64,
    pub truncated: bool,
}

/// A finished call, for the recorder's writer task.
pub(crate) struct Draft {
    pub method: http::Method,
    /// Cloned from the request (its bytes are shared, not copied); the writer takes the path.
    pub uri: http::Uri,
    pub client: ClientAddress,
    pub received_ms: u64,
    pub first_byte_ms: Option<u64>,
    pub end_ms: u64,
    pub status: u16,
    pub event_stream: bool,
    pub facts: Facts,
    /// Bodies kept (the capture policy said so).
    pub capture_bodies: bool,
    /// A stream's chunks kept as they came too (`capture = "raw"`).
    pub raw_chunks: bool,
    pub response: Frames,
    /// The body broke off or the client left before its end.
    pub cut: Option<&'static str>,
    pub shed: Vec<&'static str>,
}

impl Draft {
    /// The bodies are dropped (overload): the metadata stays.
    pub fn shed_bodies(&mut self) {
        let form_text = self
            .facts
            .form
            .as_ref()
            .is_some_and(|form| form.with(|f| !std::mem::take(&mut f.fields).is_empty()));
        if self.facts.request_body.take().is_some()
            | self.facts.request_stream.take().is_some()
            | form_text
        {
            self.shed.push("request_body");
        }
        if !self.response.kept.is_empty() {
            self.response.kept = Vec::new();
            self.shed.push("response_body");
        }
    }
}

/// The records layer on the API router: every call under `/v1/` gets a record.
pub(crate) async fn record_call(
    State(recorder): State<Recorder>,
    request: Request,
    next: Next,
) -> Response {
    if !request.uri().path().starts_with("/v1/") {
        return next.run(request).await;
    }
    let received_ms = now_ms();
    let started = Instant::now();
    let method = request.method().clone();
    let uri = request.uri().clone();
    let client = ClientAddress::of(&request);
    let mut request = request;
    let call = CallFacts::new(recorder.max_body_bytes(), recorder.capture().keeps_bodies());
    request.extensions_mut().insert(call.clone());
    let response = next.run(request).await;
    let mut capture = recorder.capture();
    call.with(|f| {
        // The key's and the model's policies override the node's; when both say, the stricter.
        capture = match (f.key_capture, f.model_capture) {
            (None, None) => capture,
            (Some(one), None) | (None, Some(one)) => one,
            (Some(key), Some(model)) => key.stricter(model),
        };
        let capture_bodies = capture.keeps_bodies();
        if !capture_bodies && let Some(body) = f.request_body.take() {
            // Not kept: only its size, and the bytes go now rather than with the response.
            f.request_bytes = body.len() as u64;
        }
    });
    let event_stream = response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    let draft = Draft {
        method,
        uri,
        client,
        received_ms,
        first_byte_ms: None,
        end_ms: 0,
        status: response.status().as_u16(),
        event_stream,
        facts: Facts::default(),
        capture_bodies: capture.keeps_bodies(),
        raw_chunks: capture == Capture::Raw,
        response: Frames::default(),
        cut: None,
        shed: Vec::new(),
    };
    let (parts, body) = response.into_parts();
    let length = body.size_hint().exact();
    let body = RecordBody {
        length,
        inner: Some(body),
        call,
        draft: Some(draft),
        recorder,
        started,
        first: None,
    };
    Response::from_parts(parts, Body::new(body))
}

/// The client's address: the first `X-Forwarded-For` hop when the peer is a trusted proxy,
/// else the peer's. Written out as text by the writer, off the request path.
pub(crate) enum ClientAddress {
    Forwarded(String),
    Peer(Option<SocketAddr>),
}

impl ClientAddress {
    fn of(request: &Request) -> Self {
        let trusted = request
            .extensions()
            .get::<crate::proxy::forwarded::ClientPeer>()
            .is_some_and(|p| p.trusted_proxy);
        if trusted
            && let Some(first) = request
                .headers()
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(',').next())
        {
            return Self::Forwarded(first.trim().to_owned());
        }
        Self::Peer(
            request
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0),
        )
    }

    pub fn into_text(self) -> String {
        match self {
            Self::Forwarded(text) => text,
            Self::Peer(peer) => peer.map(|p| p.to_string()).unwrap_or_default(),
        }
    }
}

/// The response body on its way to the client, its frames kept (up to the bound) for the
/// record; the draft goes to the recorder when the body ends or is dropped.
struct RecordBody {
    /// Dropped before the draft is finished, so the handler's usage settlement (which runs
    /// when the inner body is dropped) is in the facts.
    inner: Option<Body>,
    call: CallFacts,
    draft: Option<Draft>,
    recorder: Recorder,
    started: Instant,
    first: Option<Instant>,
    /// The body's length, when known up front: hyper stops polling once it has that many.
    length: Option<u64>,
}

impl RecordBody {
    fn keep(&mut self, data: &Bytes) {
        let Some(draft) = self.draft.as_mut() else {
            return;
        };
        let now = Instant::now();
        let first = *self.first.get_or_insert_with(|| {
            draft.first_byte_ms =
                Some(draft.received_ms + now.duration_since(self.started).as_millis() as u64);
            now
        });
        let frames = &mut draft.response;
        frames.bytes += data.len() as u64;
        if draft.event_stream && frames.offsets_ms.len() < MAX_OFFSETS {
            frames
                .offsets_ms
                .push(now.duration_since(first).as_millis() as u64);
        }
        // An error's body is kept whatever the capture: it is the call's outcome, not content.
        if (draft.capture_bodies || draft.status >= 400) && !frames.truncated {
            if frames.kept_bytes + data.len() <= self.recorder.max_body_bytes() {
                frames.kept_bytes += data.len();
                frames.kept.push(data.clone());
            } else {
                frames.truncated = true;
            }
        }
    }

    fn finish(&mut self) {
        // The inner body first: its drop settles the usage into the facts.
        self.inner = None;
        let Some(mut draft) = self.draft.take() else {
            return;
        };
        draft.end_ms = draft.received_ms + self.started.elapsed().as_millis() as u64;
        draft.facts = self.call.take();
        if let Some(settling) = draft.facts.settling.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            // The usage lands in the facts when the measurement ends (a blocking thread's
            // moment); the record waits for it rather than going without.
            let call = self.call.clone();
            let recorder = self.recorder.clone();
            runtime.spawn(async move {
                let _ = settling.await;
                if let Some(usage) = call.take().usage {
                    draft.facts.usage = Some(usage);
                }
                recorder.submit(draft);
            });
            return;
        }
        self.recorder.submit(draft);
    }
}

impl http_body::Body for RecordBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.keep(data);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => {
                if let Some(draft) = this.draft.as_mut() {
                    draft.cut = Some("upstream_error");
                }
                this.finish();
                Poll::Ready(Some(Err(error)))
            }
            Poll::Ready(None) => {
                this.finish();
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), |b| b.size_hint())
    }
}

impl Drop for RecordBody {
    fn drop(&mut self) {
        // hyper may drop a body without polling past its last frame: one that says it is at
        // its end, or one whose known length has all been sent.
        let sent = self.draft.as_ref().map_or(0, |d| d.response.bytes);
        let complete =
            self.length == Some(sent) || self.inner.as_ref().is_none_or(|b| b.is_end_stream());
        if let Some(draft) = self.draft.as_mut()
            && !complete
        {
            // Not at its end: the client left (or the server cut it).
            draft.cut.get_or_insert("client_gone");
        }
        self.finish();
    }
}

/// A request body on its way upstream, its frames kept (up to the bound) for the record and
/// published to the facts when it ends or is dropped.
struct RequestTee {
    inner: Body,
    /// Taken when published.
    seen: Option<SeenRequest>,
    shared: StreamedRequest,
    max_body_bytes: usize,
    keep: bool,
}

impl RequestTee {
    fn publish(&mut self) {
        if let Some(seen) = self.seen.take() {
            *self.shared.0.lock() = seen;
        }
    }
}

impl http_body::Body for RequestTee {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(seen)) = (frame.data_ref(), this.seen.as_mut()) {
                    seen.bytes += data.len() as u64;
                    if this.keep && !seen.truncated {
                        if seen.kept_bytes + data.len() <= this.max_body_bytes {
                            seen.kept_bytes += data.len();
                            seen.kept.push(data.clone());
                        } else {
                            seen.truncated = true;
                        }
                    }
                }
            }
            Poll::Ready(_) => this.publish(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for RequestTee {
    fn drop(&mut self) {
        self.publish();
    }
}
