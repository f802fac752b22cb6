//! The recorder: takes each finished call's [`Draft`] off the request path and writes its
//! record to the node's log (log.rs), from one task that does the parsing, the stream assembly
//! and the serialisation.
//!
//! Handing over never waits. Two bounded queues: drafts with their bodies, and, when that one
//! is full, the same drafts with their bodies dropped (metadata is small and always kept while
//! there is room); only when both are full is a call's record lost, and counted.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use aigw_config::{Capture, RecordsSettings};
use bytes::Bytes;
use parking_lot::Mutex;
use serde_json::Value;
use serde_json::value::RawValue;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;

use super::assemble::StreamAssembler;
use super::call::{Draft, Facts};
use super::log::{LogSettings, RecordLog};
use super::record::{
    Attempt, Client, KeyRef, Record, Request, Response, StreamTiming, Timestamps, Usage, VERSION,
};
use super::sink::{self, SinkState, SinkView};

/// Drafts with their bodies waiting for the writer.
const QUEUE: usize = 4096;
/// Drafts without bodies, when the first queue is full.
const METADATA_QUEUE: usize = 16_384;
/// How often the writer takes what the queues hold.
const DRAIN: std::time::Duration = std::time::Duration::from_millis(10);

/// The node's recorder; cheap to clone. Disabled (`records.enabled = false`): records nothing.
#[derive(Clone)]
pub struct Recorder {
    inner: Arc<Inner>,
}

struct Inner {
    node: u64,
    capture: Capture,
    max_body_bytes: usize,
    dir: PathBuf,
    full: mpsc::Sender<Draft>,
    metadata: mpsc::Sender<Draft>,
    /// Records whose bodies were dropped for lack of room, and records lost altogether.
    shed_bodies: AtomicU64,
    lost: AtomicU64,
    close: Notify,
    writer: Mutex<Option<JoinHandle<io::Result<()>>>>,
    /// The count of records on disk, fsynced.
    durable: watch::Receiver<u64>,
    sinks: Vec<Arc<SinkState>>,
    sink_tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Recorder {
    /// Opens the log under `data_dir/records/` and starts the writer.
    pub async fn start(node: u64, settings: &RecordsSettings, data_dir: &Path) -> io::Result<Self> {
        let dir = Self::dir_under(data_dir);
        let log = RecordLog::open(LogSettings {
            fsync_interval: settings.fsync_interval,
            segment_bytes: settings.segment_bytes,
            segment_age: settings.segment_age,
            retain_bytes: settings.retain_bytes,
            retain_age: settings.retain_age,
            ..LogSettings::new(dir.clone())
        })
        .await?;
        let durable = log.durable_watch();
        let (sinks, sink_tasks) = sink::start(&dir, &settings.sinks, durable.clone())?
            .into_iter()
            .unzip();
        let (full, full_rx) = mpsc::channel(QUEUE);
        let (metadata, metadata_rx) = mpsc::channel(METADATA_QUEUE);
        let inner = Arc::new(Inner {
            node,
            capture: settings.capture,
            max_body_bytes: settings.max_body_bytes,
            dir,
            full,
            metadata,
            shed_bodies: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            close: Notify::new(),
            writer: Mutex::new(None),
            durable,
            sinks,
            sink_tasks: Mutex::new(sink_tasks),
        });
        let writer = tokio::spawn(write_records(Arc::clone(&inner), log, full_rx, metadata_rx));
        *inner.writer.lock() = Some(writer);
        Ok(Self { inner })
    }

    /// Where the log of a node with this data dir is.
    pub fn dir_under(data_dir: &Path) -> PathBuf {
        data_dir.join("records")
    }

    /// The directory of the log's segments.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    pub(crate) fn capture(&self) -> Capture {
        self.inner.capture
    }

    pub(crate) fn max_body_bytes(&self) -> usize {
        self.inner.max_body_bytes
    }

    /// Each sink's cursor, lag and last error.
    pub fn sinks(&self) -> Vec<SinkView> {
        let durable = *self.inner.durable.borrow();
        self.inner.sinks.iter().map(|s| s.view(durable)).collect()
    }

    /// Records whose bodies were dropped under overload, and records lost.
    pub fn shed(&self) -> (u64, u64) {
        (
            self.inner.shed_bodies.load(Ordering::Relaxed),
            self.inner.lost.load(Ordering::Relaxed),
        )
    }

    /// Hands a finished call over; never waits. A call that ends after [`Recorder::close`] (a
    /// stream still open when the shutdown's drain ran out) is counted lost, and said in the log.
    pub(crate) fn submit(&self, draft: Draft) {
        let draft = match self.inner.full.try_send(draft) {
            Ok(()) => return,
            Err(mpsc::error::TrySendError::Full(mut draft)) => {
                draft.shed_bodies();
                self.inner.shed_bodies.fetch_add(1, Ordering::Relaxed);
                match self.inner.metadata.try_send(draft) {
                    Ok(()) => return,
                    Err(error) => error.into_inner(),
                }
            }
            Err(mpsc::error::TrySendError::Closed(draft)) => draft,
        };
        self.inner.lost.fetch_add(1, Ordering::Relaxed);
        if self.inner.full.is_closed() {
            tracing::warn!(
                path = draft.uri.path(),
                "a call ended after the records log was closed: its record is lost"
            );
        }
    }

    /// Writes every record handed over so far, fsyncs, and stops the writer. Records handed
    /// over later are not written.
    pub async fn close(&self) {
        // The sinks resume from their cursors at the next start.
        for task in self.inner.sink_tasks.lock().drain(..) {
            task.abort();
        }
        self.inner.close.notify_one();
        let writer = self.inner.writer.lock().take();
        if let Some(writer) = writer {
            match writer.await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::error!(%error, "closing the records log failed"),
                Err(error) => tracing::error!(%error, "the records writer failed"),
            }
        }
    }
}

async fn write_records(
    inner: Arc<Inner>,
    log: RecordLog,
    mut full: mpsc::Receiver<Draft>,
    mut metadata: mpsc::Receiver<Draft>,
) -> io::Result<()> {
    let node = inner.node;
    let max = inner.max_body_bytes;
    let write = |draft: Draft| {
        let record = build(node, max, draft);
        match serde_json::to_vec(&record) {
            Ok(line) => {
                if !log.append(Bytes::from(line)) {
                    inner.lost.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(error) => tracing::error!(%error, "cannot serialise a record"),
        }
    };
    // The queues are drained every DRAIN rather than awaited: a producer then never wakes this
    // task (a cross-thread wake and a futex call per record otherwise), and the log gets its
    // lines in batches. Records wait at most DRAIN more, well inside the fsync interval.
    let mut take_all = || {
        while let Ok(draft) = full.try_recv() {
            write(draft);
        }
        while let Ok(draft) = metadata.try_recv() {
            write(draft);
        }
    };
    let mut drain = tokio::time::interval(DRAIN);
    drain.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = drain.tick() => take_all(),
            () = inner.close.notified() => break,
        }
    }
    take_all();
    full.close();
    metadata.close();
    log.close().await
}

/// What was called, from the method and path.
fn endpoint(method: &str, path: &str) -> String {
    let rest = path.trim_start_matches("/v1/");
    let mut parts = rest.split('/');
    let first = parts.next().unwrap_or("");
    let second = parts.next();
    let third = parts.next();
    match (first, second, third, method) {
        ("videos", None, _, "POST") => "videos.create".into(),
        ("videos", None, _, _) => "videos.list".into(),
        ("videos", Some(_), Some("content"), _) => "videos.content".into(),
        ("videos", Some(_), _, "DELETE") => "videos.delete".into(),
        ("videos", Some(_), _, _) => "videos.retrieve".into(),
        ("mcp", ..) => "mcp".into(),
        ("agents" | "agent", ..) => "agent".into(),
        ("sandboxes" | "sandbox", ..) => "sandbox".into(),
        (first, Some(second), _, _) => format!("{first}.{second}"),
        (first, None, _, _) => first.to_owned(),
    }
}

/// A body as the record keeps it: JSON on one line, as it came when it can be (no tree built),
/// minified when it had line breaks; cut (or not JSON), as a JSON string of the text it has.
fn raw_body(bytes: &[u8], truncated: bool) -> Box<RawValue> {
    if !truncated {
        if memchr::memchr2(b'\n', b'\r', bytes).is_none()
            && let Ok(raw) = serde_json::from_slice::<Box<RawValue>>(bytes)
        {
            return raw;
        }
        if let Ok(value) = serde_json::from_slice::<Value>(bytes)
            && let Ok(raw) = serde_json::value::to_raw_value(&value)
        {
            return raw;
        }
    }
    let text = String::from_utf8_lossy(bytes);
    serde_json::value::to_raw_value(&text).unwrap_or_else(|_| {
        RawValue::from_string("null".to_owned()).unwrap_or_else(|_| unreachable!())
    })
}

/// Usage in OpenAI's shape (`prompt_tokens`, …) or the Responses API's (`input_tokens`, …).
fn usage_from(usage: &Value) -> Option<Usage> {
    let usage = usage.as_object()?;
    let number = |name: &str| usage.get(name).and_then(Value::as_u64);
    Some(Usage {
        input_tokens: number("prompt_tokens").or_else(|| number("input_tokens")),
        output_tokens: number("completion_tokens").or_else(|| number("output_tokens")),
        cached_tokens: usage
            .get("prompt_tokens_details")
            .and_then(|d| d.get("cached_tokens"))
            .and_then(Value::as_u64),
        ..Usage::default()
    })
}

/// The `usage` of a response body, read without building the rest of it.
fn usage_of(bytes: &[u8]) -> Option<Usage> {
    #[derive(serde::Deserialize)]
    struct WithUsage {
        usage: Option<Value>,
    }
    usage_from(&serde_json::from_slice::<WithUsage>(bytes).ok()?.usage?)
}

/// The endpoints whose bodies are relayed as they are, not OpenAI's shapes.
const PASS_THROUGH: [&str; 3] = ["mcp", "agent", "sandbox"];

/// The members the gateway adds to a stream's body when the client did not set
/// `stream_options` (chat.rs), so that it can meter the stream.
const INCLUDE_USAGE: &str = r#"{"stream_options":{"include_usage":true}}"#;

/// A request body as far as it was kept.
struct KeptBody<'a> {
    text: std::borrow::Cow<'a, [u8]>,
    /// Not all of it was kept (`capture: "truncated"`).
    truncated: bool,
    /// `text` itself is cut short (so not JSON).
    cut: bool,
}

impl<'a> KeptBody<'a> {
    fn cut(text: std::borrow::Cow<'a, [u8]>, truncated: bool) -> Self {
        Self {
            text,
            truncated,
            cut: truncated,
        }
    }
}

/// What the client sent, and how it differed upstream.
fn request_of(facts: &Facts, capture_bodies: bool, max_body_bytes: usize) -> Request {
    let seen = facts.request_stream.as_ref().map(|s| s.take());
    let form = facts
        .form
        .as_ref()
        .map(|form| form.with(|f| (f.bytes, std::mem::take(&mut f.fields), f.fields_truncated)));
    let (bytes, kept) = match (&facts.request_body, seen, form) {
        (Some(body), ..) => {
            let truncated = body.len() > max_body_bytes;
            let kept = &body[..body.len().min(max_body_bytes)];
            (
                body.len() as u64,
                Some(KeptBody::cut(kept.into(), truncated)),
            )
        }
        (None, Some(seen), _) => {
            let kept = (!seen.kept.is_empty() || seen.bytes == 0 || seen.truncated)
                .then(|| KeptBody::cut(seen.kept.concat().into(), seen.truncated));
            (seen.bytes, kept)
        }
        (None, None, Some((bytes, fields, truncated))) => {
            // Whole JSON, whose values may have been cut.
            let text = form_text(fields).into_bytes().into();
            (
                bytes,
                Some(KeptBody {
                    text,
                    truncated,
                    cut: false,
                }),
            )
        }
        (None, None, None) => (facts.request_bytes, None),
    };
    let (capture, body) = match kept {
        Some(kept) if capture_bodies && (kept.truncated || !kept.text.is_empty() || bytes == 0) => {
            (
                if kept.truncated { "truncated" } else { "full" },
                (!kept.text.is_empty()).then(|| raw_body(&kept.text, kept.cut)),
            )
        }
        _ => ("metadata", None),
    };
    // The answering upstream's model name, when it is not the one the client asked for.
    let upstream_model = facts
        .attempts
        .last()
        .and_then(|a| a.upstream_model.as_deref())
        .map(|m| serde_json::from_str::<String>(m).unwrap_or_else(|_| m.to_owned()))
        .filter(|m| facts.model.as_deref() != Some(m.as_str()));
    let upstream_added = facts
        .added_include_usage
        .then(|| RawValue::from_string(INCLUDE_USAGE.to_owned()).ok())
        .flatten();
    Request {
        capture: capture.into(),
        bytes,
        body,
        upstream_model,
        upstream_added,
        upstream_body: None,
    }
}

/// A form's text fields as a JSON object; a name sent more than once (`include[]`) holds
/// the list of its values.
fn form_text(fields: Vec<(String, String)>) -> String {
    let mut object = serde_json::Map::new();
    for (name, value) in fields {
        match object.get_mut(&name) {
            None => {
                object.insert(name, Value::String(value));
            }
            Some(Value::Array(values)) => values.push(Value::String(value)),
            Some(first) => {
                let first = first.take();
                object.insert(name, Value::Array(vec![first, Value::String(value)]));
            }
        }
    }
    Value::Object(object).to_string()
}

/// A pass-through stream (an MCP server's SSE) as the events the client got, each
/// `{"event", "data"}` with its data as JSON when it is JSON (JSON-RPC messages), else as text.
fn events_of(bytes: &[u8], offsets_ms: Vec<u64>) -> (Vec<Value>, StreamTiming) {
    let mut events = Vec::new();
    let mut unreadable = 0;
    let mut rest = bytes;
    while let Ok(end) = crate::sse::event_end(rest) {
        let mut name = None;
        let mut data: Vec<&[u8]> = Vec::new();
        for line in crate::sse::lines(&rest[..end]) {
            let field = |prefix: &[u8]| {
                line.strip_prefix(prefix)
                    .map(|v| v.strip_prefix(b" ").unwrap_or(v))
            };
            if let Some(value) = field(b"data:") {
                data.push(value);
            } else if let Some(value) = field(b"event:") {
                name = Some(String::from_utf8_lossy(value).into_owned());
            }
        }
        rest = &rest[end..];
        if data.is_empty() && name.is_none() {
            continue;
        }
        let data = data.join(&b'\n');
        let data = match serde_json::from_slice::<Value>(&data) {
            Ok(value) => value,
            Err(_) => {
                if std::str::from_utf8(&data).is_err() {
                    unreadable += 1;
                }
                Value::String(String::from_utf8_lossy(&data).into_owned())
            }
        };
        events.push(serde_json::json!({"event": name, "data": data}));
    }
    let timing = StreamTiming {
        chunks: offsets_ms.len() as u64,
        offsets_ms,
        unreadable,
        done: rest.is_empty() && !bytes.is_empty(),
    };
    (events, timing)
}

/// The record of a call, built off the request path.
pub(crate) fn build(node: u64, max_body_bytes: usize, draft: Draft) -> Record {
    let Draft {
        method,
        uri,
        client,
        received_ms,
        first_byte_ms,
        end_ms,
        status,
        event_stream,
        facts,
        capture_bodies,
        raw_chunks,
        response: frames,
        cut,
        shed,
    } = draft;
    let endpoint = endpoint(method.as_str(), uri.path());
    let request = request_of(&facts, capture_bodies, max_body_bytes);
    let mut uploads = facts
        .form
        .as_ref()
        .map(|form| form.with(|f| std::mem::take(&mut f.files)))
        .unwrap_or_default();
    let response_bytes: Vec<u8> = frames.kept.concat();
    let mut response_usage = None;
    let mut error = None;
    let mut chunks = Vec::new();
    let (body, stream) = if event_stream && PASS_THROUGH.contains(&endpoint.as_str()) {
        let (events, timing) = events_of(&response_bytes, frames.offsets_ms);
        let body = (capture_bodies && !response_bytes.is_empty())
            .then(|| serde_json::value::to_raw_value(&events).ok())
            .flatten();
        (body, Some(timing))
    } else if event_stream {
        let mut assembler = StreamAssembler::default();
        let mut rest: &[u8] = &response_bytes;
        while let Ok(end) = crate::sse::event_end(rest) {
            for line in crate::sse::lines(&rest[..end]) {
                if let Some(data) = line.strip_prefix(b"data:") {
                    let data = data.strip_prefix(b" ").unwrap_or(data);
                    if raw_chunks {
                        chunks.push(raw_body(data, false));
                    }
                    assembler.event(data);
                }
            }
            rest = &rest[end..];
        }
        let (chunks, unreadable) = assembler.counts();
        let completion = assembler.completion();
        response_usage = completion.get("usage").and_then(usage_from);
        let body = (capture_bodies && !response_bytes.is_empty())
            .then(|| serde_json::value::to_raw_value(&completion).ok())
            .flatten();
        let timing = StreamTiming {
            chunks: if capture_bodies {
                chunks
            } else {
                frames.offsets_ms.len() as u64
            },
            offsets_ms: frames.offsets_ms,
            unreadable,
            done: assembler.done(),
        };
        (body, Some(timing))
    } else if !response_bytes.is_empty() {
        // Kept for an error whatever the capture; otherwise only when bodies are captured.
        let whole = !frames.truncated && frames.bytes == response_bytes.len() as u64;
        if status >= 400 {
            error = Some(match serde_json::from_slice::<Value>(&response_bytes) {
                Ok(value) => value.get("error").cloned().unwrap_or(value),
                Err(_) => Value::String(String::from_utf8_lossy(&response_bytes).into_owned()),
            });
        } else if facts.usage.is_none() && whole {
            response_usage = usage_of(&response_bytes);
        }
        (
            capture_bodies.then(|| raw_body(&response_bytes, !whole)),
            None,
        )
    } else {
        (None, None)
    };
    let response = Response {
        capture: if !capture_bodies {
            "metadata"
        } else if frames.truncated {
            "truncated"
        } else {
            "full"
        }
        .into(),
        bytes: frames.bytes,
        body,
        stream,
        raw_chunks: (raw_chunks && event_stream).then_some(chunks),
    };
    let usage = facts.usage.or(response_usage).unwrap_or_default();
    if endpoint == "audio.transcriptions" {
        // The seconds the node metered are those of the `file` part (the answer's `duration`,
        // else the file's header): no second measurement.
        for upload in uploads.iter_mut().filter(|u| u.field == "file") {
            upload.audio_seconds = usage.audio_seconds;
        }
    }
    // UUIDv7 from the call's arrival and a thread-local generator (no system call per record).
    let id = uuid::Builder::from_unix_timestamp_millis(received_ms, &rand::random()).into_uuid();
    Record {
        v: VERSION,
        id: id.to_string(),
        node,
        endpoint,
        method: method.as_str().to_owned(),
        path: uri.path().to_owned(),
        timestamps: Timestamps {
            received_ms,
            response_head_ms: facts.response_head_ms,
            first_byte_ms,
            end_ms,
        },
        key: facts.key.map(|(id, name)| KeyRef { id, name }),
        client: Client {
            address: client.into_text(),
        },
        model: facts.model,
        attempts: facts
            .attempts
            .into_iter()
            .map(|a| Attempt {
                upstream: a.upstream.to_string(),
                upstream_model: a
                    .upstream_model
                    .map(|m| serde_json::from_str::<String>(&m).unwrap_or_else(|_| m.into())),
                status: a.status,
                error: a.error.map(str::to_owned),
                duration_ms: a.duration_ms,
            })
            .collect(),
        status,
        error,
        request,
        response,
        uploads,
        usage,
        safety: Vec::new(),
        shed: shed.into_iter().map(str::to_owned).collect(),
        end: cut.unwrap_or("complete").to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;
    use crate::proxy::Tried;
    use crate::records::call::{ClientAddress, Facts, Frames};

    fn draft() -> Draft {
        Draft {
            method: http::Method::POST,
            uri: http::Uri::from_static("/v1/chat/completions"),
            client: ClientAddress::Peer(None),
            received_ms: 1,
            first_byte_ms: None,
            end_ms: 2,
            status: 200,
            event_stream: false,
            facts: Facts::default(),
            capture_bodies: true,
            raw_chunks: false,
            response: Frames::default(),
            cut: None,
            shed: Vec::new(),
        }
    }

    #[tokio::test]
    async fn a_call_ending_after_the_close_is_counted_lost_not_dropped_unseen() {
        let dir = tempfile::tempdir().unwrap();
        let recorder = Recorder::start(1, &RecordsSettings::default(), dir.path())
            .await
            .unwrap();
        recorder.submit(draft());
        recorder.close().await;
        assert_eq!(
            recorder.shed(),
            (0, 0),
            "the call before the close is written"
        );
        recorder.submit(draft());
        assert_eq!(
            recorder.shed(),
            (0, 1),
            "the one after it is lost, and counted"
        );
    }

    #[test]
    fn a_pass_through_stream_is_its_events_with_json_rpc_data_parsed() {
        let stream = b"event: message\r\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\r\n\r\n: ping\n\ndata: plain\ndata: text\n\n";
        let (events, timing) = events_of(stream, vec![0, 5]);
        assert_eq!(
            events,
            [
                json!({"event": "message", "data": {"jsonrpc": "2.0", "id": 1, "result": {}}}),
                json!({"event": null, "data": "plain\ntext"}),
            ]
        );
        assert!(timing.done, "it ended at an event's end");
        let (_, cut) = events_of(&stream[..20], vec![0]);
        assert!(!cut.done);
    }

    #[test]
    fn a_forms_text_fields_are_an_object_and_a_repeated_name_a_list() {
        let text = form_text(vec![
            ("model".into(), "whisper".into()),
            ("include[]".into(), "a".into()),
            ("include[]".into(), "b".into()),
            ("include[]".into(), "c".into()),
        ]);
        let value: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            value,
            json!({"model": "whisper", "include[]": ["a", "b", "c"]})
        );
    }

    fn tried(model: &str) -> Tried {
        Tried {
            upstream: Arc::from("up"),
            upstream_model: Some(serde_json::to_string(model).unwrap().into()),
            status: Some(200),
            error: None,
            duration_ms: 1,
        }
    }

    #[test]
    fn the_upstream_model_is_the_answering_attempts_when_it_differs() {
        let mut facts = Facts {
            model: Some("public".into()),
            attempts: vec![tried("first"), tried("second")],
            request_body: Some(Bytes::from_static(br#"{"model":"public"}"#)),
            added_include_usage: true,
            ..Facts::default()
        };
        let request = request_of(&facts, true, 1 << 20);
        assert_eq!(request.upstream_model.as_deref(), Some("second"));
        assert_eq!(request.upstream_added.unwrap().get(), INCLUDE_USAGE);
        assert_eq!(request.body.unwrap().get(), r#"{"model":"public"}"#);
        facts.attempts = vec![tried("public")];
        facts.added_include_usage = false;
        let request = request_of(&facts, true, 1 << 20);
        assert_eq!(
            request.upstream_model, None,
            "the same name: nothing to add"
        );
        assert!(request.upstream_added.is_none());
    }

    #[test]
    fn a_forms_text_fields_are_its_body_only_when_bodies_are_captured() {
        let form = crate::records::FormSeen::default();
        form.with(|f| {
            f.bytes = 4096;
            f.fields = vec![
                ("model".into(), "whisper".into()),
                ("prompt".into(), "hi".into()),
            ];
        });
        let facts = Facts {
            form: Some(form.clone()),
            ..Facts::default()
        };
        let kept = request_of(&facts, true, 1 << 20);
        assert_eq!(kept.capture, "full");
        assert_eq!(kept.bytes, 4096);
        assert_eq!(
            kept.body.unwrap().get(),
            r#"{"model":"whisper","prompt":"hi"}"#
        );
        form.with(|f| f.fields = vec![("prompt".into(), "secret".into())]);
        let metadata = request_of(&facts, false, 1 << 20);
        assert_eq!(metadata.capture, "metadata");
        assert_eq!(metadata.bytes, 4096);
        assert!(metadata.body.is_none());
    }
}
