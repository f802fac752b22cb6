//! Reads what the upstream says it used (`usage`) from a response on its way to the client,
//! without holding the stream back: event streams are relayed event by event, other bodies
//! frame by frame (kept, up to a bound, to read `usage` at the end).
//!
//! When the gateway itself asked the upstream for usage (`stream_options`), the client gets
//! the stream it would have had without that request: the `usage` member is cut out of every
//! chunk that has one (OpenAI's `"usage":null` on each chunk, usage on the finish chunk), the
//! other bytes of the chunk kept as they are, and a chunk that exists only to carry usage (no
//! choices, or choices with nothing in them) is dropped whole. Chunks that do not name
//! `usage` pass without a copy. If no `usage` arrives, a stream's text is counted instead.
//! Whatever happens (end, error, client gone), `settle` runs once, from `Drop`.

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use http_body::{Frame, SizeHint};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use super::tokens::TokenCounting;

/// How much of each end of a non-stream body is kept to find its `usage` (OpenAI puts it
/// last, some servers first): the body itself is never held.
const WINDOW: usize = 16 * 1024;
/// An event longer than this is not an OpenAI chunk: the rest of the stream passes unread.
const MAX_EVENT: usize = 1024 * 1024;
/// Chunks kept for counting their text when no usage arrives; beyond it, 4 bytes count a token.
const MAX_TEXT: usize = 256 * 1024;

/// Tokens the upstream reports (or the gateway counted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Usage {
    pub input: u64,
    pub output: u64,
    pub cached: u64,
}

#[derive(Deserialize)]
struct UsageJson {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    #[serde(default)]
    prompt_tokens_details: Option<Details>,
}

#[derive(Deserialize)]
struct Details {
    #[serde(default)]
    cached_tokens: u64,
}

/// A chunk's choices, for counting its text.
#[derive(Deserialize)]
struct WithChoices {
    #[serde(default)]
    choices: Option<Vec<Choice>>,
}

#[derive(Deserialize)]
struct Choice {
    #[serde(default)]
    delta: Option<Delta>,
}

#[derive(Deserialize)]
struct Delta {
    #[serde(default)]
    content: Option<String>,
}

/// A chunk that names `usage`, as far as stripping it needs: where its `usage` value is
/// (`null` included) and whether its choices carry anything.
#[derive(Deserialize)]
struct UsageChunk<'a> {
    #[serde(default, borrow, deserialize_with = "raw_even_null")]
    usage: Option<&'a RawValue>,
    #[serde(default)]
    choices: Option<Vec<ChoiceShape>>,
}

/// `Some` for any value, `null` too (`Option`'s own impl reads `null` as `None`).
fn raw_even_null<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

#[derive(Deserialize)]
struct ChoiceShape {
    #[serde(default)]
    delta: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    finish_reason: Option<serde_json::Value>,
    #[serde(default)]
    logprobs: Option<serde_json::Value>,
}

impl ChoiceShape {
    /// Nothing a client would see: no finish, no logprobs, a delta of only empty values.
    fn is_empty(&self) -> bool {
        let blank = |v: &serde_json::Value| match v {
            serde_json::Value::Null => true,
            serde_json::Value::String(s) => s.is_empty(),
            serde_json::Value::Array(a) => a.is_empty(),
            serde_json::Value::Object(o) => o.is_empty(),
            _ => false,
        };
        self.finish_reason.as_ref().is_none_or(blank)
            && self.logprobs.as_ref().is_none_or(blank)
            && self.delta.as_ref().is_none_or(|d| d.values().all(blank))
    }
}

/// What becomes of one event on its way to the client.
enum Fate {
    Keep,
    /// It only carried the usage the gateway asked for.
    Drop,
    /// The same event with the `usage` member cut out.
    Replace(Bytes),
}

/// `json` (an object) without its top-level member whose value is `value` (a slice of
/// `json`) and whose name is `"usage"`, every other byte kept; `None` when the member is not
/// written plainly (an escaped name), so the caller can fall back.
fn without_usage_member(json: &[u8], value: &RawValue) -> Option<Vec<u8>> {
    let value_start = (value.get().as_ptr() as usize).checked_sub(json.as_ptr() as usize)?;
    let value_end = value_start + value.get().len();
    let before_value = json
        .get(..value_start)?
        .trim_ascii_end()
        .strip_suffix(b":")?;
    let name_start = before_value
        .trim_ascii_end()
        .strip_suffix(b"\"usage\"")?
        .len();
    let before_name = json[..name_start].trim_ascii_end();
    let (cut_start, cut_end) = match before_name.last()? {
        // A later member: the comma before it goes with it.
        b',' => (before_name.len() - 1, value_end),
        // The first member: the comma after it (and the space after that) goes with it.
        b'{' => {
            let after = &json[value_end..];
            let gap = after.len() - after.trim_ascii_start().len();
            match after.get(gap) {
                Some(b',') => {
                    let rest = &json[value_end + gap + 1..];
                    let space = rest.len() - rest.trim_ascii_start().len();
                    (name_start, value_end + gap + 1 + space)
                }
                _ => (name_start, value_end),
            }
        }
        _ => return None,
    };
    let mut out = Vec::with_capacity(json.len() - (cut_end - cut_start));
    out.extend_from_slice(&json[..cut_start]);
    out.extend_from_slice(&json[cut_end..]);
    Some(out)
}

/// `json` without its top-level `usage`, rebuilt (key order may change): only for a member
/// [`without_usage_member`] cannot find in place.
fn rebuilt_without_usage(json: &[u8]) -> Option<Vec<u8>> {
    let mut object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(json).ok()?;
    object.remove("usage");
    serde_json::to_vec(&object).ok()
}

/// Where `part` (a subslice of `whole`) starts in it.
fn offset_in(whole: &[u8], part: &[u8]) -> usize {
    part.as_ptr() as usize - whole.as_ptr() as usize
}

impl From<UsageJson> for Usage {
    fn from(u: UsageJson) -> Self {
        Self {
            input: u.prompt_tokens,
            output: u.completion_tokens,
            cached: u.prompt_tokens_details.map_or(0, |d| d.cached_tokens),
        }
    }
}

type Settle = Box<dyn FnOnce(Option<Usage>) + Send>;

pub(crate) struct UsageTap {
    inner: Body,
    event_stream: bool,
    /// Drop the usage-only chunk: the gateway asked for it, not the client.
    strip_usage_chunk: bool,
    /// Event-stream bytes not yet ending in a blank line.
    partial: BytesMut,
    /// The first `WINDOW` bytes of a non-stream body, and a rolling window of its last ones.
    head: Vec<u8>,
    tail: BytesMut,
    usage: Option<Usage>,
    /// The `data:` payloads of the chunks without usage, one per line (up to `MAX_TEXT`).
    unread: Vec<u8>,
    /// Tokens estimated for chunks beyond `MAX_TEXT`.
    text_overflow: u64,
    /// Where the search for an event end resumes in `partial`: the start of its last line.
    scanned: usize,
    /// An event outgrew `MAX_EVENT`: the stream is relayed unread and its usage is unknown.
    opaque: bool,
    /// The upstream body ended (and what was held has been relayed).
    ended: bool,
    /// Counts the streamed text when no usage arrives; the input is then the estimate's.
    counting: TokenCounting,
    estimated_input: u64,
    settle: Option<Settle>,
}

/// What the tap needs to know about the request.
pub(crate) struct TapOptions {
    pub event_stream: bool,
    /// Drop the usage-only chunk: the gateway asked for it, not the client.
    pub strip_usage_chunk: bool,
    pub counting: TokenCounting,
    pub estimated_input: u64,
}

impl UsageTap {
    pub fn new(inner: Body, options: TapOptions, settle: Settle) -> Self {
        Self {
            inner,
            event_stream: options.event_stream,
            strip_usage_chunk: options.strip_usage_chunk,
            partial: BytesMut::new(),
            head: Vec::new(),
            tail: BytesMut::new(),
            usage: None,
            unread: Vec::new(),
            text_overflow: 0,
            scanned: 0,
            opaque: false,
            ended: false,
            counting: options.counting,
            estimated_input: options.estimated_input,
            settle: Some(settle),
        }
    }

    /// Relays the complete events of what is held plus `data`, and holds an unfinished last
    /// event. A frame that starts with an event and ends with one (every OpenAI chunk) is
    /// relayed as it came, without a copy; bytes are copied only to hold an unfinished event or
    /// to drop the usage-only chunk.
    fn relay(&mut self, data: Bytes) -> Bytes {
        let (buf, mut resume) = if self.partial.is_empty() {
            (data, 0)
        } else {
            // A long event arriving in many frames is appended to, not copied again per frame.
            self.partial.extend_from_slice(&data);
            match crate::sse::event_end(&self.partial[self.scanned..]) {
                Err(line) if self.partial.len() <= MAX_EVENT => {
                    self.scanned += line;
                    return Bytes::new();
                }
                // Taken whole: an empty view of it would keep the buffer alive while idle.
                _ => (std::mem::take(&mut self.partial).freeze(), self.scanned),
            }
        };
        // buf[..start] is complete events; of them, buf[..relayed] is accounted for in `out`
        // once an event has been dropped (`out` is `None` until then).
        let mut start = 0;
        let mut relayed = 0;
        let mut out: Option<BytesMut> = None;
        loop {
            match crate::sse::event_end(&buf[resume..]) {
                Ok(len) => {
                    let end = resume + len;
                    match self.read_event(&buf[start..end]) {
                        Fate::Keep => {}
                        Fate::Drop => {
                            let out = out.get_or_insert_with(BytesMut::new);
                            out.extend_from_slice(&buf[relayed..start]);
                            relayed = end;
                        }
                        Fate::Replace(event) => {
                            let out = out.get_or_insert_with(BytesMut::new);
                            out.extend_from_slice(&buf[relayed..start]);
                            out.extend_from_slice(&event);
                            relayed = end;
                        }
                    }
                    start = end;
                    resume = end;
                }
                Err(line) => {
                    resume += line;
                    break;
                }
            }
        }
        let mut complete = start;
        if buf.len() - start > MAX_EVENT {
            // Not an OpenAI chunk: it and the rest of the stream pass unread.
            self.opaque = true;
            complete = buf.len();
        } else if start < buf.len() {
            self.partial.extend_from_slice(&buf[start..]);
            self.scanned = resume - start;
        }
        match out {
            Some(mut out) => {
                out.extend_from_slice(&buf[relayed..complete]);
                out.freeze()
            }
            None => buf.slice(..complete),
        }
    }

    /// Reads one event's `data:` lines, and says what the client gets of it: when the gateway
    /// asked for usage, the event without its `usage` member, or nothing if that was all it
    /// carried.
    fn read_event(&mut self, event: &[u8]) -> Fate {
        let mut drop = false;
        // (payload range in `event`, the payload without usage)
        let mut edits: Vec<(usize, usize, Vec<u8>)> = Vec::new();
        for line in crate::sse::lines(event) {
            let Some(data) = line.strip_prefix(b"data:") else {
                continue;
            };
            let data = data.trim_ascii();
            // Most chunks carry text only: keep them as they are, read only if no usage ever
            // comes. Only a chunk that names `usage` is parsed here.
            if memchr::memmem::find(data, b"\"usage\"").is_none() {
                self.keep_unread(data);
                continue;
            }
            let Ok(chunk) = serde_json::from_slice::<UsageChunk<'_>>(data) else {
                continue;
            };
            let Some(raw) = chunk.usage else {
                self.keep_unread(data);
                continue;
            };
            let reported = match serde_json::from_str::<UsageJson>(raw.get()) {
                Ok(usage) => {
                    self.usage = Some(usage.into());
                    true
                }
                // `"usage":null` (OpenAI's, on every chunk before the last): text to count.
                Err(_) => {
                    self.keep_unread(data);
                    false
                }
            };
            if !self.strip_usage_chunk {
                continue;
            }
            let choices = chunk.choices.as_deref().unwrap_or_default();
            if reported && choices.iter().all(ChoiceShape::is_empty) {
                // Sent only because the gateway asked: the upstream would not have sent it.
                drop = true;
                continue;
            }
            let stripped = without_usage_member(data, raw).or_else(|| rebuilt_without_usage(data));
            if let Some(stripped) = stripped {
                let start = offset_in(event, data);
                edits.push((start, start + data.len(), stripped));
            }
        }
        if drop {
            return Fate::Drop;
        }
        if edits.is_empty() {
            return Fate::Keep;
        }
        let mut out = BytesMut::with_capacity(event.len());
        let mut at = 0;
        for (start, end, payload) in edits {
            out.extend_from_slice(&event[at..start]);
            out.extend_from_slice(&payload);
            at = end;
        }
        out.extend_from_slice(&event[at..]);
        Fate::Replace(out.freeze())
    }

    /// Keeps a chunk's payload for counting its text if no usage comes (up to `MAX_TEXT`).
    fn keep_unread(&mut self, data: &[u8]) {
        if self.unread.len() + data.len() < MAX_TEXT {
            self.unread.extend_from_slice(data);
            self.unread.push(b'\n');
        } else {
            self.text_overflow += data.len() as u64 / 4;
        }
    }

    fn finish(&mut self) {
        if self.event_stream && !self.opaque && !self.partial.is_empty() {
            // A last event without its blank line: read it too.
            let event = self.partial.split();
            let _ = self.read_event(&event);
        }
        if !self.event_stream && self.usage.is_none() {
            self.usage = usage_in(&self.tail).or_else(|| usage_in(&self.head));
        }
        let Some(settle) = self.settle.take() else {
            return;
        };
        let text = match self.usage {
            Some(_) => String::new(),
            None if self.opaque => String::new(),
            None => self.streamed_text(),
        };
        if text.is_empty() {
            settle(self.usage);
            return;
        }
        let (counting, input, overflow) = (self.counting, self.estimated_input, self.text_overflow);
        let count = move || {
            settle(Some(Usage {
                input,
                output: counting.count(&text) + overflow,
                cached: 0,
            }))
        };
        // Counting a long answer with tiktoken (and, the first time, loading its vocabulary)
        // is blocking work: not on the thread that relays streams.
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) if counting.exact => drop(runtime.spawn_blocking(count)),
            _ => count(),
        }
    }

    /// The text of the chunks kept unread, for a stream whose usage never came.
    fn streamed_text(&self) -> String {
        let mut text = String::new();
        for data in self.unread.split(|b| *b == b'\n') {
            let Ok(chunk) = serde_json::from_slice::<WithChoices>(data) else {
                continue;
            };
            for choice in chunk.choices.iter().flatten() {
                if let Some(content) = choice.delta.as_ref().and_then(|d| d.content.as_deref()) {
                    text.push_str(content);
                }
            }
        }
        text
    }
}

impl UsageTap {
    fn keep(&mut self, data: &[u8]) {
        let room = WINDOW.saturating_sub(self.head.len());
        let (to_head, rest) = data.split_at(room.min(data.len()));
        self.head.extend_from_slice(to_head);
        self.tail.extend_from_slice(rest);
        if self.tail.len() > WINDOW {
            let _ = self.tail.split_to(self.tail.len() - WINDOW);
        }
    }
}

/// The `usage` object in a piece of a JSON body: the value after the last `"usage":` that
/// parses as one.
fn usage_in(text: &[u8]) -> Option<Usage> {
    let finder = memchr::memmem::FinderRev::new(b"\"usage\"");
    let mut end = text.len();
    while let Some(at) = finder.rfind(&text[..end]) {
        end = at;
        let Some(rest) = text[at + b"\"usage\"".len()..]
            .trim_ascii_start()
            .strip_prefix(b":")
        else {
            continue;
        };
        let mut values = serde_json::Deserializer::from_slice(rest).into_iter::<UsageJson>();
        if let Some(Ok(usage)) = values.next() {
            return Some(usage.into());
        }
    }
    None
}

/// The index just past the first "\n\n" (or "\r\n\r\n") in `buf`.
impl http_body::Body for UsageTap {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        loop {
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    if this.event_stream && !this.opaque {
                        let out = this.relay(data);
                        if out.is_empty() {
                            continue;
                        }
                        return Poll::Ready(Some(Ok(Frame::data(out))));
                    }
                    if !this.event_stream {
                        this.keep(&data);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => {
                    // Every byte the upstream sent reaches the client: an unfinished last
                    // event too (its client drops it), or one whose last `\r` could not be
                    // told from half a `\r\n` until now.
                    let held = std::mem::take(&mut this.partial).freeze();
                    // Read here (`finish` finds nothing held), and dropped or cut like any
                    // other event.
                    let last = if held.is_empty() {
                        None
                    } else {
                        match this.read_event(&held) {
                            Fate::Keep => Some(held),
                            Fate::Drop => None,
                            Fate::Replace(event) => Some(event),
                        }
                    };
                    this.finish();
                    this.ended = true;
                    if let Some(last) = last {
                        return Poll::Ready(Some(Ok(Frame::data(last))));
                    }
                    return Poll::Ready(None);
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        if self.event_stream {
            SizeHint::default()
        } else {
            self.inner.size_hint()
        }
    }
}

impl Drop for UsageTap {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::sync::{Arc, Mutex};

    async fn run(body: &'static str, sse: bool, strip: bool) -> (String, Option<Usage>) {
        run_in_frames(body, body.len().max(1), sse, strip).await
    }

    #[tokio::test]
    async fn a_non_stream_body_passes_unchanged_and_its_usage_is_read() {
        let body = r#"{"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":3,"prompt_tokens_details":{"cached_tokens":2}}}"#;
        let (out, usage) = run(body, false, false).await;
        assert_eq!(out, body);
        assert_eq!(
            usage,
            Some(Usage {
                input: 7,
                output: 3,
                cached: 2
            })
        );
    }

    #[tokio::test]
    async fn the_usage_chunk_the_gateway_asked_for_is_stripped() {
        let body = "data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":1}}\n\ndata: [DONE]\n\n";
        let (out, usage) = run(body, true, true).await;
        assert!(!out.contains("usage"), "{out}");
        assert!(
            out.contains("\"Hi\"") && out.ends_with("data: [DONE]\n\n"),
            "{out}"
        );
        assert_eq!(
            usage,
            Some(Usage {
                input: 5,
                output: 1,
                cached: 0
            })
        );
        let (kept, _) = run(body, true, false).await;
        assert_eq!(kept, body, "a client that asked for usage gets it");
    }

    /// Relays `body` cut into frames of `size` bytes; returns what the client got and the usage.
    async fn run_in_frames(
        body: &str,
        size: usize,
        sse: bool,
        strip: bool,
    ) -> (String, Option<Usage>) {
        let frames: Vec<Result<Frame<Bytes>, std::io::Error>> = body
            .as_bytes()
            .chunks(size)
            .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
            .collect();
        let inner = Body::new(http_body_util::StreamBody::new(futures::stream::iter(
            frames,
        )));
        let (settled, usage) = tokio::sync::oneshot::channel();
        let tap = UsageTap::new(
            inner,
            TapOptions {
                event_stream: sse,
                strip_usage_chunk: strip,
                counting: TokenCounting::default(),
                estimated_input: 12,
            },
            Box::new(move |u| {
                let _ = settled.send(u);
            }),
        );
        let out = Body::new(tap).collect().await.unwrap().to_bytes();
        // A count of the streamed text settles from a blocking thread, after the body ends.
        (
            String::from_utf8(out.to_vec()).unwrap(),
            usage.await.expect("settled"),
        )
    }

    #[tokio::test]
    async fn a_last_usage_chunk_without_its_blank_line_is_still_stripped() {
        let body = "data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":1}}\n";
        let (out, usage) = run(body, true, true).await;
        assert_eq!(out, body[..body.find("data: {\"choices\":[],").unwrap()]);
        assert_eq!(usage.map(|u| u.input), Some(5));
        let (kept, _) = run(body, true, false).await;
        assert_eq!(kept, body, "relayed whole when the client asked for usage");
    }

    #[tokio::test]
    async fn events_split_anywhere_across_frames_are_relayed_whole_with_any_line_ending() {
        let lf = "data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":1}}\n\ndata: [DONE]\n\n";
        let crlf = lf.replace('\n', "\r\n");
        let cr = lf.replace('\n', "\r");
        let usage = Some(Usage {
            input: 5,
            output: 1,
            cached: 0,
        });
        for body in [lf.to_owned(), crlf, cr] {
            let usage_event = body.find("data: {\"choices\":[],").unwrap();
            let done = body.find("data: [DONE]").unwrap();
            let stripped = format!("{}{}", &body[..usage_event], &body[done..]);
            for size in 1..=body.len() {
                assert_eq!(
                    run_in_frames(&body, size, true, true).await,
                    (stripped.clone(), usage)
                );
                assert_eq!(
                    run_in_frames(&body, size, true, false).await,
                    (body.clone(), usage)
                );
            }
        }
    }

    #[test]
    fn usage_is_found_at_either_end_of_a_body_too_long_to_keep() {
        let filler = format!("\"{}\"", "x".repeat(3 * WINDOW));
        let first = format!(
            r#"{{"usage":{{"prompt_tokens":3,"completion_tokens":4}},"choices":[{{"message":{{"content":{filler}}}}}]}}"#
        );
        let last = format!(
            r#"{{"choices":[{{"message":{{"content":{filler},"usage":"not this one"}}}}],"usage":{{"prompt_tokens":5,"completion_tokens":6}}}}"#
        );
        for (body, expected) in [(first, (3, 4)), (last, (5, 6))] {
            let mut tap = UsageTap::new(
                Body::empty(),
                TapOptions {
                    event_stream: false,
                    strip_usage_chunk: false,
                    counting: TokenCounting::default(),
                    estimated_input: 0,
                },
                Box::new(|_| {}),
            );
            for chunk in body.as_bytes().chunks(1000) {
                tap.keep(chunk);
            }
            let usage = usage_in(&tap.tail).or_else(|| usage_in(&tap.head)).unwrap();
            assert_eq!((usage.input, usage.output), expected);
        }
    }

    #[tokio::test]
    async fn an_event_without_end_passes_through_unread_and_unbounded_memory_is_never_kept() {
        let long = format!("data: {}", "x".repeat(MAX_EVENT + 10));
        let body =
            format!("data: {{\"choices\":[{{\"delta\":{{\"content\":\"Hi\"}}}}]}}\n\n{long}");
        let chunks: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = body
            .as_bytes()
            .chunks(4096)
            .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
            .collect();
        let inner = Body::new(http_body_util::StreamBody::new(futures::stream::iter(
            chunks,
        )));
        let seen = Arc::new(Mutex::new(None));
        let slot = Arc::clone(&seen);
        let tap = UsageTap::new(
            inner,
            TapOptions {
                event_stream: true,
                strip_usage_chunk: true,
                counting: TokenCounting::default(),
                estimated_input: 0,
            },
            Box::new(move |u| *slot.lock().unwrap() = Some(u)),
        );
        let out = Body::new(tap).collect().await.unwrap().to_bytes();
        assert_eq!(out.len(), body.len(), "every byte is relayed");
        assert_eq!(seen.lock().unwrap().take(), Some(None), "usage unknown");
    }

    /// Shapes of upstreams that put `usage` on a chunk with a choice: the client that did not
    /// ask gets exactly the stream it would have had without the gateway's request.
    #[tokio::test]
    async fn usage_on_a_chunk_with_choices_is_removed_and_the_rest_kept_byte_for_byte() {
        let hi = "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}]}\n\n";
        let finish = "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n";
        let usage = r#""usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}"#;
        let done = "data: [DONE]\n\n";
        let cases = [
            // One choice with an empty delta and no finish: a chunk that exists only for usage.
            (
                format!(
                    "{hi}{finish}data: {{\"id\":\"c\",\"choices\":[{{\"index\":0,\"delta\":{{}},\"finish_reason\":null}}],{usage}}}\n\n{done}"
                ),
                format!("{hi}{finish}{done}"),
            ),
            // The same with an empty content and logprobs null.
            (
                format!(
                    "{hi}{finish}data: {{\"id\":\"c\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"\"}},\"logprobs\":null,\"finish_reason\":null}}],{usage}}}\n\n{done}"
                ),
                format!("{hi}{finish}{done}"),
            ),
            // On the chunk that carries finish_reason, last member.
            (
                format!(
                    "{hi}data: {{\"id\":\"c\",\"choices\":[{{\"index\":0,\"delta\":{{}},\"finish_reason\":\"stop\"}}],{usage}}}\n\n{done}"
                ),
                format!("{hi}{finish}{done}"),
            ),
            // First member, and spaces around the separators.
            (
                format!(
                    "{hi}data: {{ {usage} , \"id\":\"c\",\"choices\":[{{\"index\":0,\"delta\":{{}},\"finish_reason\":\"stop\"}}]}}\n\n{done}"
                ),
                format!(
                    "{hi}data: {{ \"id\":\"c\",\"choices\":[{{\"index\":0,\"delta\":{{}},\"finish_reason\":\"stop\"}}]}}\n\n{done}"
                ),
            ),
            // OpenAI's own shape: `"usage":null` on every chunk, then an empty-choices chunk.
            (
                format!(
                    "data: {{\"id\":\"c\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"Hi\"}},\"finish_reason\":null}}],\"usage\":null}}\n\ndata: {{\"id\":\"c\",\"choices\":[{{\"index\":0,\"delta\":{{}},\"finish_reason\":\"stop\"}}],\"usage\":null}}\n\ndata: {{\"id\":\"c\",\"choices\":[],{usage}}}\n\n{done}"
                ),
                format!("{hi}{finish}{done}"),
            ),
        ];
        let expected = Some(Usage {
            input: 5,
            output: 1,
            cached: 0,
        });
        for (body, stripped) in cases {
            for size in [body.len(), 7, 1] {
                assert_eq!(
                    run_in_frames(&body, size, true, true).await,
                    (stripped.clone(), expected),
                    "{body}"
                );
            }
            assert_eq!(
                run(Box::leak(body.clone().into_boxed_str()), true, false).await,
                (body.clone(), expected),
                "a client that asked for usage gets every byte"
            );
        }
    }

    #[tokio::test]
    async fn without_usage_the_streamed_text_is_counted() {
        let body =
            "data: {\"choices\":[{\"delta\":{\"content\":\"Hello there\"}}]}\n\ndata: [DONE]\n\n";
        let (_, usage) = run(body, true, false).await;
        let usage = usage.unwrap();
        assert_eq!(usage.output, TokenCounting::default().count("Hello there"));
        assert_eq!(usage.input, 12, "the input estimate stands");
    }
}
