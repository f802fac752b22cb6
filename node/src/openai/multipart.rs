//! Multipart uploads streamed through to the upstream without holding the file.
//!
//! Routing needs the `model` field, so the body is read only until that part has arrived
//! (at most [`PREFIX_LIMIT`] bytes): the `model` field must come before the file, which is
//! what the official SDKs send (form fields first, files last). That prefix, with the model
//! value replaced by the target's upstream name, and then the rest of the client's stream go
//! upstream as they arrive. The whole upload is capped at `server.max_upload_bytes`: over it,
//! the stream to the upstream is cut and the client gets 413. The first [`CAPTURE_LIMIT`]
//! bytes are kept so the uploaded file's header can be read afterwards (audio duration).
//!
//! For the call's record, the scanner that follows the stream also hashes each file part's
//! bytes as they go by (SHA-256, never keeping them) and keeps the text fields ([`PartTally`]).
//!
//! Invariant: the gateway and the upstream must read the same form, or a key limited to one
//! model reaches another and usage is metered against the wrong one. So every part header is
//! checked as it streams ([`PartScanner`]) and the forms upstream parsers resolve differently
//! are refused with 400 `invalid_multipart`: a second `model` part (Starlette-style parsers
//! take the last value), a part named twice (`name` and `name*`, two `name`s, two
//! `Content-Disposition` lines), a `Content-Type` with two boundaries. See [`UploadBody`] for
//! what the upstream gets of a form refused after streaming began.

use std::ops::Range;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, ready};

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Method};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;

use sha2::{Digest, Sha256};

use crate::error::{ApiError, echo};
use crate::proxy::{BoxError, RouteTarget, UpstreamCall};
use crate::records::record::Upload as UploadRecord;
use crate::records::{FORM_TEXT_LIMIT, FormSeen};

/// How far into the body the `model` field must have arrived.
pub(crate) const PREFIX_LIMIT: usize = 64 * 1024;
/// How much of the start of the body is kept for reading the file's header.
pub(crate) const CAPTURE_LIMIT: usize = 256 * 1024;

/// One part found in a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Part {
    pub name: String,
    pub filename: Option<String>,
    /// The part's content in the buffer.
    pub data: Range<usize>,
    /// Whether the delimiter after it is in the buffer (else `data` runs to the buffer's end).
    pub complete: bool,
}

/// The parts of a multipart body as far as `buf` has it, and whether its closing delimiter
/// is in `buf`. An error when the bytes cannot be multipart/form-data with this boundary.
pub(crate) fn scan(buf: &[u8], boundary: &str) -> Result<(Vec<Part>, bool), &'static str> {
    let delimiter = format!("--{boundary}");
    let next_delimiter = format!("\r\n--{boundary}");
    let mut parts = Vec::new();
    // A preamble before the first delimiter is allowed (RFC 2046) and ignored.
    let mut at = if buf.starts_with(delimiter.as_bytes()) {
        0
    } else {
        match memchr::memmem::find(buf, next_delimiter.as_bytes()) {
            Some(i) => i + 2,
            None if buf.len() < PREFIX_LIMIT => return Ok((parts, false)),
            None => return Err("no multipart boundary found at the start of the body"),
        }
    };
    loop {
        let after = at + delimiter.len();
        let Some(rest) = buf.get(after..after + 2) else {
            return Ok((parts, false));
        };
        if rest == b"--" {
            return Ok((parts, true));
        }
        if rest != b"\r\n" {
            return Err("a multipart boundary is not followed by CRLF");
        }
        let headers_start = after + 2;
        if buf[headers_start..].starts_with(b"\r\n") {
            return Err("a part has no headers");
        }
        let Some(headers_len) = memchr::memmem::find(&buf[headers_start..], b"\r\n\r\n") else {
            if buf.len() - headers_start > 16 * 1024 {
                return Err("a part's headers are too long");
            }
            return Ok((parts, false));
        };
        let headers = &buf[headers_start..headers_start + headers_len];
        let (name, filename) = disposition(headers)?;
        let data_start = headers_start + headers_len + 4;
        match memchr::memmem::find(&buf[data_start..], next_delimiter.as_bytes()) {
            Some(len) => {
                parts.push(Part {
                    name,
                    filename,
                    data: data_start..data_start + len,
                    complete: true,
                });
                at = data_start + len + 2;
            }
            None => {
                parts.push(Part {
                    name,
                    filename,
                    data: data_start..buf.len(),
                    complete: false,
                });
                return Ok((parts, false));
            }
        }
    }
}

/// The `name` and `filename` of a part's `Content-Disposition: form-data` header. Refused
/// when parsers could name the part differently: two `Content-Disposition` lines, a folded
/// header line, a second `name` or a `name*` (RFC 7578 forbids it; some parsers prefer it).
fn disposition(headers: &[u8]) -> Result<(String, Option<String>), &'static str> {
    let text = std::str::from_utf8(headers).map_err(|_| "a part's headers are not UTF-8")?;
    if text.split("\r\n").any(|line| line.starts_with([' ', '\t'])) {
        return Err("a part's header is folded over lines");
    }
    let mut dispositions = header_values(text, "content-disposition");
    let value = dispositions
        .next()
        .ok_or("a part has no Content-Disposition header")?;
    if dispositions.next().is_some() {
        return Err("a part has two Content-Disposition headers");
    }
    let mut name = None;
    let mut filename = None;
    // A naive split: a quoted `;` splits a value, which can only add names and be refused.
    for param in value.split(';').skip(1) {
        let Some((key, raw)) = param.split_once('=') else {
            continue;
        };
        let raw = raw.trim();
        let unquoted = raw
            .strip_prefix('"')
            .and_then(|r| r.strip_suffix('"'))
            .unwrap_or(raw);
        match key.trim().to_ascii_lowercase().as_str() {
            "name" | "name*" if name.is_some() => return Err("a part has more than one name"),
            "name*" => return Err("a part is named with `name*`"),
            "name" => name = Some(unquoted.to_owned()),
            "filename" => filename = Some(unquoted.to_owned()),
            _ => {}
        }
    }
    Ok((name.ok_or("a part has no name")?, filename))
}

/// The boundary of a `multipart/form-data` content type; 400 for anything else.
pub(crate) fn boundary(headers: &HeaderMap) -> Result<String, ApiError> {
    let bad = |message: &str| ApiError::InvalidMultipart(message.to_owned());
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| bad("expected Content-Type: multipart/form-data; boundary=..."))?;
    let mut params = content_type.split(';');
    let essence = params.next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case("multipart/form-data") {
        return Err(bad(&format!(
            "expected Content-Type: multipart/form-data, got {:?}",
            echo(essence)
        )));
    }
    let mut boundaries = params.filter_map(|p| p.split_once('=')).filter(|(k, _)| {
        let k = k.trim();
        k.eq_ignore_ascii_case("boundary") || k.eq_ignore_ascii_case("boundary*")
    });
    let boundary = boundaries
        .next()
        .map(|(_, v)| v.trim().trim_matches('"').to_owned())
        .filter(|b| !b.is_empty() && b.len() <= 200)
        .ok_or_else(|| bad("the multipart/form-data Content-Type has no boundary"))?;
    if boundaries.next().is_some() {
        return Err(bad(
            "the multipart/form-data Content-Type has more than one boundary",
        ));
    }
    Ok(boundary)
}

/// An upload whose `model` has been found, ready to go upstream once.
pub(crate) struct Upload {
    pub model: String,
    /// Fields that arrived before the model or with it (`response_format`, `seconds`, ...).
    pub fields: Vec<(String, String)>,
    content_type: HeaderValue,
    prefix: Bytes,
    model_span: Range<usize>,
    /// The client's stream after the prefix, and the scanner that has read the prefix.
    rest: Option<(Body, PartScanner)>,
    declared_len: Option<u64>,
    limit: usize,
    received: usize,
    state: Arc<UploadState>,
}

/// What the streamed upload leaves behind for the handler.
#[derive(Default)]
pub(crate) struct UploadState {
    /// The body went over the limit and was cut.
    exceeded: AtomicBool,
    /// Why the form was refused after streaming began, if it was.
    refused: OnceLock<&'static str>,
    /// The first bytes of the body (the part headers and the start of the file).
    captured: Mutex<BytesMut>,
    boundary: String,
}

impl UploadState {
    pub fn exceeded(&self) -> bool {
        self.exceeded.load(Ordering::Relaxed)
    }

    /// The form turned out ambiguous while it streamed (a second `model` part, a part named
    /// twice): the upstream got no whole request, and the client is answered 400 with this.
    pub fn refused(&self) -> Option<ApiError> {
        let reason = self.refused.get()?;
        Some(ApiError::InvalidMultipart((*reason).to_owned()))
    }

    /// The start of the uploaded file `field` (up to what was captured).
    pub fn file_head(&self, field: &str) -> Option<Bytes> {
        let captured = self.captured.lock().unwrap_or_else(|e| e.into_inner());
        let (parts, _) = scan(&captured, &self.boundary).ok()?;
        let part = parts.into_iter().find(|p| p.name == field)?;
        Some(Bytes::copy_from_slice(&captured[part.data]))
    }
}

impl Upload {
    /// Reads the body until its `model` field; 413 when it is declared or found larger than
    /// `limit`, 400 when it is not multipart/form-data, has no `model` before its file, or
    /// what has arrived is ambiguous ([`PartScanner`]). With `form`, its parts are told to the
    /// call's record as they stream.
    pub async fn begin(
        headers: &HeaderMap,
        mut body: Body,
        limit: usize,
        form: Option<FormSeen>,
    ) -> Result<Self, ApiError> {
        let boundary = boundary(headers)?;
        let declared_len = headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared_len.is_some_and(|len| len > limit as u64) {
            return Err(ApiError::BodyTooLarge { limit });
        }
        let bad = |message: &str| ApiError::InvalidMultipart(message.to_owned());
        let mut prefix = BytesMut::new();
        let mut scanner = PartScanner::new(&boundary);
        scanner.tally = form.map(PartTally::new);
        let (parts, model) = loop {
            let frame = body.frame().await;
            let ended = frame.is_none();
            if let Some(frame) = frame {
                let frame = frame.map_err(ApiError::from_body_error)?;
                if let Ok(data) = frame.into_data() {
                    scanner.feed(&data).map_err(bad)?;
                    prefix.extend_from_slice(&data);
                }
                if prefix.len() > limit {
                    return Err(ApiError::BodyTooLarge { limit });
                }
            }
            let (parts, closed) = scan(&prefix, &boundary).map_err(bad)?;
            if let Some(i) = parts.iter().position(|p| p.name == "model" && p.complete) {
                break (parts.clone(), i);
            }
            if closed {
                return Err(ApiError::InvalidParam {
                    param: "model",
                    message: "You must provide a model parameter.".into(),
                });
            }
            if ended {
                return Err(bad(
                    "the body ended before its closing boundary (or has no part with this boundary)",
                ));
            }
            if prefix.len() > PREFIX_LIMIT {
                return Err(ApiError::InvalidParam {
                    param: "model",
                    message: format!(
                        "The `model` field must come before the file, within the first {PREFIX_LIMIT} bytes of the form."
                    ),
                });
            }
        };
        let model_part = &parts[model];
        let model_name = std::str::from_utf8(&prefix[model_part.data.clone()])
            .ok()
            .filter(|m| !m.is_empty())
            .ok_or_else(|| ApiError::InvalidParam {
                param: "model",
                message: "`model` must be a non-empty UTF-8 string.".into(),
            })?
            .to_owned();
        let fields = parts
            .iter()
            .filter(|p| p.complete && p.filename.is_none())
            .filter_map(|p| {
                let value = std::str::from_utf8(&prefix[p.data.clone()]).ok()?;
                Some((p.name.clone(), value.to_owned()))
            })
            .collect();
        let content_type = headers
            .get(CONTENT_TYPE)
            .cloned()
            .ok_or(ApiError::Internal)?;
        let received = prefix.len();
        let mut captured = BytesMut::new();
        captured.extend_from_slice(&prefix[..received.min(CAPTURE_LIMIT)]);
        Ok(Self {
            model: model_name,
            fields,
            content_type,
            model_span: model_part.data.clone(),
            prefix: prefix.freeze(),
            rest: Some((body, scanner)),
            declared_len,
            limit,
            received,
            state: Arc::new(UploadState {
                exceeded: AtomicBool::new(false),
                refused: OnceLock::new(),
                captured: Mutex::new(captured),
                boundary,
            }),
        })
    }

    /// A form field that came before the model (or with it).
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// What the handler reads after the upload went through.
    pub fn state(&self) -> Arc<UploadState> {
        Arc::clone(&self.state)
    }

    /// The call to `path` for `target`, the first time; `None` after (the body is gone).
    pub fn take_call(&mut self, path: &str, target: &RouteTarget) -> Option<UpstreamCall> {
        let upstream_model: String =
            serde_json::from_str(&target.model_json).unwrap_or_else(|_| self.model.clone());
        Some(UpstreamCall {
            method: Method::POST,
            path_and_query: path.to_owned(),
            content_type: Some(self.content_type.clone()),
            body: self.take_body(&upstream_model)?,
        })
    }

    /// The body with `upstream_model` as the model's value, the first time.
    fn take_body(&mut self, upstream_model: &str) -> Option<Body> {
        let (rest, scanner) = self.rest.take()?;
        // Only what the scanner accepted goes now; a part header still arriving waits.
        let safe = (scanner.safe() as usize).clamp(self.model_span.end, self.prefix.len());
        let mut head = BytesMut::with_capacity(safe + upstream_model.len());
        head.extend_from_slice(&self.prefix[..self.model_span.start]);
        head.extend_from_slice(upstream_model.as_bytes());
        head.extend_from_slice(&self.prefix[self.model_span.end..safe]);
        let length = self
            .declared_len
            .map(|len| len - self.model_span.len() as u64 + upstream_model.len() as u64);
        Some(Body::new(UploadBody {
            head: Some(head.freeze()),
            rest,
            length,
            limit: self.limit,
            received: self.received,
            scanner,
            held: BytesMut::from(&self.prefix[safe..]),
            passed: safe as u64,
            state: Arc::clone(&self.state),
        }))
    }
}

/// The upload on its way upstream: the rewritten prefix, then the client's stream, counted
/// and scanned part header by part header.
///
/// What reaches the upstream of a form the gateway refuses after streaming began (a second
/// `model` part after the file, an ambiguous part header, bytes after the closing boundary):
/// everything before the offending part's delimiter, then the stream fails. The upstream
/// never sees a byte of that part's header, so no parser upstream can take the second model
/// whatever it does with a truncated body, and it never gets a whole request: the body ends
/// short of its `Content-Length`, or without its last chunk. The handler answers 400 (see
/// [`UploadState::refused`]) instead of whatever the failed attempt gave.
struct UploadBody {
    head: Option<Bytes>,
    rest: Body,
    /// The exact length after the model rewrite, when the client declared one.
    length: Option<u64>,
    limit: usize,
    received: usize,
    scanner: PartScanner,
    /// Bytes received but not passed on yet: a delimiter and part header not yet accepted.
    held: BytesMut,
    /// How many bytes of the client's body have been passed on.
    passed: u64,
    state: Arc<UploadState>,
}

impl UploadBody {
    fn refuse(&mut self, reason: &'static str) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let _ = self.state.refused.set(reason);
        Poll::Ready(Some(Err(reason.into())))
    }

    /// The bytes of `data` (which follows `held`) that may go on now.
    fn release(&mut self, data: Bytes) -> Bytes {
        let safe = self.scanner.safe();
        let end = self.passed + (self.held.len() + data.len()) as u64;
        if self.held.is_empty() && safe == end {
            self.passed = end;
            return data;
        }
        self.held.extend_from_slice(&data);
        let ready = (safe - self.passed) as usize;
        self.passed = safe;
        self.held.split_to(ready).freeze()
    }
}

impl http_body::Body for UploadBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if let Some(head) = this.head.take() {
            return Poll::Ready(Some(Ok(Frame::data(head))));
        }
        loop {
            let frame = match ready!(Pin::new(&mut this.rest).poll_frame(cx)) {
                Some(Ok(frame)) => frame,
                Some(Err(err)) => return Poll::Ready(Some(Err(err.into()))),
                None if !this.scanner.closed() => {
                    return this.refuse("the body ended before its closing boundary");
                }
                None if this.held.is_empty() => return Poll::Ready(None),
                None => return Poll::Ready(Some(Ok(Frame::data(this.held.split().freeze())))),
            };
            // Trailers carry nothing a form needs, and would overtake held bytes.
            let Ok(data) = frame.into_data() else {
                continue;
            };
            this.received = this.received.saturating_add(data.len());
            if this.received > this.limit {
                this.state.exceeded.store(true, Ordering::Relaxed);
                return Poll::Ready(Some(Err("upload larger than the limit".into())));
            }
            {
                let mut captured = this
                    .state
                    .captured
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                let room = CAPTURE_LIMIT.saturating_sub(captured.len());
                captured.extend_from_slice(&data[..room.min(data.len())]);
            }
            if let Err(reason) = this.scanner.feed(&data) {
                return this.refuse(reason);
            }
            let ready = this.release(data);
            if !ready.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(ready))));
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self.length {
            Some(length) => SizeHint::with_exact(length),
            None => SizeHint::default(),
        }
    }
}

/// Follows a multipart body as it streams, one part header at a time, and refuses the forms
/// an upstream parser could read differently from the gateway: a second `model` part, a part
/// header that [`disposition`] refuses (two names, `name` with `name*`, two
/// `Content-Disposition` lines, a folded line), a part without headers, anything but
/// whitespace after the closing delimiter.
///
/// It also says how far the body is safe to pass on ([`PartScanner::safe`]): up to the start
/// of the first delimiter whose part header has not been read whole and accepted. A part is
/// thus never passed on before its header has been checked.
pub(crate) struct PartScanner {
    /// `\r\n--boundary`: the body is scanned as if it began with a CRLF, so a first delimiter
    /// at offset 0 is found like any other.
    delimiter: Vec<u8>,
    at: Scan,
    /// Bytes fed but not yet consumed: the start of a possible delimiter, or an unfinished
    /// delimiter suffix or header block. At most a header block and a delimiter long.
    pending: Vec<u8>,
    /// How many bytes of a pending header block were searched for its end already.
    searched: usize,
    /// Bytes fed so far, counting the leading CRLF.
    fed: u64,
    /// Offset (counting the leading CRLF) before which every byte may be passed on.
    safe: u64,
    models: usize,
    /// What the record learns of each part, when the call is recorded.
    tally: Option<PartTally>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scan {
    /// In the preamble or a part's content, looking for the next delimiter.
    Content,
    /// Right after a delimiter: `--` closes the body, CRLF opens a part's headers.
    Delimiter,
    Headers,
    /// After the closing delimiter.
    Closed,
}

/// Longest header block a part may have.
const MAX_PART_HEADERS: usize = 16 * 1024;

impl PartScanner {
    pub fn new(boundary: &str) -> Self {
        Self {
            delimiter: format!("\r\n--{boundary}").into_bytes(),
            at: Scan::Content,
            pending: b"\r\n".to_vec(),
            searched: 0,
            fed: 2,
            safe: 2,
            models: 0,
            tally: None,
        }
    }

    /// Reads the next bytes of the body.
    pub fn feed(&mut self, data: &[u8]) -> Result<(), &'static str> {
        let base = self.fed - self.pending.len() as u64;
        self.fed += data.len() as u64;
        if self.pending.is_empty() {
            let used = self.run(data, base)?;
            self.pending.extend_from_slice(&data[used..]);
        } else {
            let mut buf = std::mem::take(&mut self.pending);
            buf.extend_from_slice(data);
            let used = self.run(&buf, base)?;
            buf.drain(..used);
            self.pending = buf;
        }
        Ok(())
    }

    /// How many bytes from the start of the body may be passed on.
    pub fn safe(&self) -> u64 {
        self.safe.saturating_sub(2)
    }

    /// Whether the closing delimiter has been read.
    pub fn closed(&self) -> bool {
        self.at == Scan::Closed
    }

    /// Scans `buf`, which starts at `base`; returns how many of its bytes were consumed.
    fn run(&mut self, buf: &[u8], base: u64) -> Result<usize, &'static str> {
        let mut i = 0;
        loop {
            match self.at {
                Scan::Content => match memchr::memmem::find(&buf[i..], &self.delimiter) {
                    Some(at) => {
                        if let Some(tally) = &mut self.tally {
                            tally.content(&buf[i..i + at]);
                            tally.part_end();
                        }
                        self.safe = base + (i + at) as u64;
                        i += at + self.delimiter.len();
                        self.at = Scan::Delimiter;
                    }
                    None => {
                        let keep = partial_delimiter(&buf[i..], &self.delimiter);
                        if let Some(tally) = &mut self.tally {
                            tally.content(&buf[i..buf.len() - keep]);
                        }
                        self.safe = base + (buf.len() - keep) as u64;
                        return Ok(buf.len() - keep);
                    }
                },
                Scan::Delimiter => match buf.get(i..i + 2) {
                    None => return Ok(i),
                    Some(b"--") => {
                        i += 2;
                        self.at = Scan::Closed;
                    }
                    Some(b"\r\n") => {
                        i += 2;
                        self.at = Scan::Headers;
                        self.searched = 0;
                    }
                    Some(_) => return Err("a multipart boundary is not followed by CRLF"),
                },
                Scan::Headers => {
                    let block = &buf[i..];
                    if block.starts_with(b"\r\n") {
                        return Err("a part has no headers");
                    }
                    let from = self.searched.saturating_sub(3);
                    match memchr::memmem::find(&block[from..], b"\r\n\r\n") {
                        Some(at) => {
                            let headers = &block[..from + at];
                            let (name, filename) = disposition(headers)?;
                            if name == "model" {
                                self.models += 1;
                                if self.models > 1 {
                                    return Err("the form has more than one `model` part");
                                }
                            }
                            if let Some(tally) = &mut self.tally {
                                tally.part_start(name, filename, headers);
                            }
                            i += from + at + 4;
                            self.safe = base + i as u64;
                            self.at = Scan::Content;
                        }
                        None if block.len() > MAX_PART_HEADERS => {
                            return Err("a part's headers are too long");
                        }
                        None => {
                            self.searched = block.len();
                            return Ok(i);
                        }
                    }
                }
                Scan::Closed => {
                    // RFC 2046 lets an epilogue follow; parsers differ on what they make of
                    // one (some read on), so only the line break the SDKs send is accepted.
                    if !buf[i..].iter().all(u8::is_ascii_whitespace) {
                        return Err("the body goes on after its closing boundary");
                    }
                    if let Some(tally) = &self.tally {
                        // Less the CRLF the scan starts with.
                        let bytes = self.fed - 2;
                        tally.form.with(|f| f.bytes = bytes);
                    }
                    self.safe = base + buf.len() as u64;
                    return Ok(buf.len());
                }
            }
        }
    }
}

/// What a call's record learns of a form from the scanner, part by part as it streams: a
/// file's field, name, content type, size and SHA-256, its bytes hashed as they pass and
/// never kept; a text field's value, up to [`FORM_TEXT_LIMIT`] bytes for the whole form.
/// A part is told to the record when its closing delimiter has been read: a file the stream
/// was cut in is not listed.
///
/// Hashing here rather than in the recorder's writer: the writer would need the file's bytes,
/// which the upload streams through without holding (up to `server.max_upload_bytes` per
/// call); SHA-256 with the CPU's SHA extensions runs at over 1 GB/s (see the commit), a small
/// cost beside receiving the bytes.
struct PartTally {
    form: FormSeen,
    current: Option<PartSoFar>,
    /// Bytes of text field values kept so far.
    text_kept: usize,
}

enum PartSoFar {
    File {
        field: String,
        file_name: Option<String>,
        content_type: Option<String>,
        bytes: u64,
        hash: Box<Sha256>,
    },
    Text {
        name: String,
        value: Vec<u8>,
    },
}

impl PartTally {
    fn new(form: FormSeen) -> Self {
        Self {
            form,
            current: None,
            text_kept: 0,
        }
    }

    fn part_start(&mut self, name: String, filename: Option<String>, headers: &[u8]) {
        self.current = Some(match filename {
            Some(file_name) => PartSoFar::File {
                field: name,
                file_name: Some(file_name),
                content_type: part_content_type(headers),
                bytes: 0,
                hash: Box::default(),
            },
            None => PartSoFar::Text {
                name,
                value: Vec::new(),
            },
        });
    }

    fn content(&mut self, data: &[u8]) {
        match &mut self.current {
            Some(PartSoFar::File { bytes, hash, .. }) => {
                *bytes += data.len() as u64;
                hash.update(data);
            }
            Some(PartSoFar::Text { value, .. }) => {
                let room = FORM_TEXT_LIMIT.saturating_sub(self.text_kept);
                if data.len() > room {
                    self.form.with(|f| f.fields_truncated = true);
                }
                let kept = &data[..data.len().min(room)];
                self.text_kept += kept.len();
                value.extend_from_slice(kept);
            }
            None => {}
        }
    }

    fn part_end(&mut self) {
        match self.current.take() {
            Some(PartSoFar::File {
                field,
                file_name,
                content_type,
                bytes,
                hash,
            }) => {
                let upload = UploadRecord {
                    field,
                    file_name,
                    content_type,
                    bytes,
                    sha256: hex::encode(hash.finalize()),
                    audio_seconds: None,
                };
                self.form.with(|f| f.files.push(upload));
            }
            Some(PartSoFar::Text { name, value }) => {
                let value = String::from_utf8_lossy(&value).into_owned();
                self.form.with(|f| f.fields.push((name, value)));
            }
            None => {}
        }
    }
}

/// The `Content-Type` header of a part, as sent.
fn part_content_type(headers: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(headers).ok()?;
    header_values(text, "content-type")
        .next()
        .map(|value| value.trim().to_owned())
}

/// The values of a part's header lines named `name` (any case), in order.
fn header_values<'a>(text: &'a str, name: &'a str) -> impl Iterator<Item = &'a str> {
    text.split("\r\n").filter_map(move |line| {
        let (header, value) = line.split_once(':')?;
        header.trim().eq_ignore_ascii_case(name).then_some(value)
    })
}

/// The length of the longest end of `buf` that is the start of `delimiter` (a delimiter
/// that may continue in the next bytes).
fn partial_delimiter(buf: &[u8], delimiter: &[u8]) -> usize {
    (1..delimiter.len().min(buf.len() + 1))
        .rev()
        .find(|&k| buf.ends_with(&delimiter[..k]))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FORM: &[u8] = b"--XyZ\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\nContent-Type: audio/wav\r\n\r\nRIFF....\r\n--XyZ--\r\n";

    #[test]
    fn parts_are_found_with_names_filenames_and_content() {
        let (parts, closed) = scan(FORM, "XyZ").unwrap();
        assert!(closed);
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].name, "model");
        assert_eq!(&FORM[parts[0].data.clone()], b"whisper-1");
        assert_eq!(parts[1].filename.as_deref(), Some("a.wav"));
        assert_eq!(&FORM[parts[1].data.clone()], b"RIFF....");
    }

    #[test]
    fn a_partial_body_gives_the_parts_so_far() {
        let cut = &FORM[..FORM.len() - 15];
        let (parts, closed) = scan(cut, "XyZ").unwrap();
        assert!(!closed);
        assert!(parts[0].complete);
        assert!(!parts[1].complete);
        let (parts, _) = scan(&FORM[..30], "XyZ").unwrap();
        assert!(parts.is_empty());
    }

    #[test]
    fn garbage_is_malformed() {
        assert!(scan(b"--XyZ garbage\r\n", "XyZ").is_err());
        assert!(scan(b"--XyZ\r\nX-Other: 1\r\n\r\nbody\r\n--XyZ--", "XyZ").is_err());
        assert!(scan(&vec![b'a'; PREFIX_LIMIT + 1], "XyZ").is_err());
    }

    #[test]
    fn the_boundary_comes_from_a_multipart_content_type_only() {
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("multipart/form-data; boundary=\"abc\""),
        );
        assert_eq!(boundary(&headers).unwrap(), "abc");
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        assert!(matches!(
            boundary(&headers),
            Err(ApiError::InvalidMultipart(_))
        ));
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("multipart/form-data"),
        );
        assert!(boundary(&headers).is_err());
    }

    #[tokio::test]
    async fn the_model_is_found_and_replaced_in_the_forwarded_stream() {
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("multipart/form-data; boundary=XyZ"),
        );
        let chunks: Vec<Result<Bytes, std::io::Error>> = FORM
            .chunks(7)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let body = Body::from_stream(futures::stream::iter(chunks));
        let mut upload = Upload::begin(&headers, body, 1 << 20, None).await.unwrap();
        assert_eq!(upload.model, "whisper-1");
        let sent = upload.take_body("real-whisper").unwrap();
        assert!(upload.take_body("again").is_none(), "an upload goes once");
        let sent = sent.collect().await.unwrap().to_bytes();
        let expected = String::from_utf8_lossy(FORM).replace("whisper-1", "real-whisper");
        assert_eq!(String::from_utf8_lossy(&sent), expected);
        assert_eq!(
            upload.state().file_head("file").unwrap(),
            Bytes::from_static(b"RIFF....")
        );
    }

    #[tokio::test]
    async fn a_body_without_a_model_or_over_the_limit_is_refused() {
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("multipart/form-data; boundary=XyZ"),
        );
        let no_model =
            b"--XyZ\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\n1\r\n--XyZ--\r\n";
        let err = Upload::begin(&headers, Body::from(&no_model[..]), 1 << 20, None).await;
        assert!(matches!(
            err,
            Err(ApiError::InvalidParam { param: "model", .. })
        ));
        let err = Upload::begin(&headers, Body::from(FORM), 10, None).await;
        assert!(matches!(err, Err(ApiError::BodyTooLarge { limit: 10 })));
    }

    fn multipart_headers() -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("multipart/form-data; boundary=XyZ"),
        );
        headers
    }

    fn part(disposition: &str, value: &str) -> String {
        format!("--XyZ\r\nContent-Disposition: form-data; {disposition}\r\n\r\n{value}\r\n")
    }

    #[test]
    fn a_content_type_with_two_boundaries_is_refused() {
        for value in [
            "multipart/form-data; boundary=a; boundary=b",
            "multipart/form-data; boundary=a; BOUNDARY=a",
            "multipart/form-data; boundary=a; boundary*=UTF-8''b",
        ] {
            let mut headers = HeaderMap::new();
            headers.insert(CONTENT_TYPE, HeaderValue::from_str(value).unwrap());
            assert!(
                matches!(boundary(&headers), Err(ApiError::InvalidMultipart(_))),
                "{value}"
            );
        }
    }

    #[test]
    fn a_part_with_two_names_is_malformed() {
        for disposition in [
            "name=\"model\"; name*=UTF-8''other",
            "name*=UTF-8''other; name=\"model\"",
            "name=\"x\"; name=\"model\"",
            "name=model; NAME=other",
        ] {
            let form = part(disposition, "v") + "--XyZ--\r\n";
            assert!(scan(form.as_bytes(), "XyZ").is_err(), "{disposition}");
        }
        let two_headers = "--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nv\r\n--XyZ--\r\n";
        assert!(scan(two_headers.as_bytes(), "XyZ").is_err());
    }

    #[tokio::test]
    async fn a_second_model_part_before_the_file_is_refused_before_routing() {
        let form =
            part("name=\"model\"", "whisper-1") + &part("name=\"model\"", "other") + "--XyZ--\r\n";
        let begun = Upload::begin(&multipart_headers(), Body::from(form), 1 << 20, None).await;
        assert!(
            matches!(begun, Err(ApiError::InvalidMultipart(_))),
            "{:?}",
            begun.err()
        );
    }

    /// A form whose second `model` (or ambiguous) part comes after a file, sent in chunks of
    /// every size from 1 byte: the stream to the upstream fails, and no byte of the offending
    /// part's header has been passed on before it does.
    #[tokio::test]
    async fn a_late_second_model_part_cuts_the_stream_before_its_header_is_passed_on() {
        let file = "F".repeat(3000);
        for late in [
            part("name=\"model\"", "other"),
            part("name=\"x\"; name*=UTF-8''model", "other"),
        ] {
            let head = part("name=\"model\"", "whisper-1")
                + &part("name=\"file\"; filename=\"a.wav\"", &file);
            let form = head.clone() + &late + "--XyZ--\r\n";
            for chunk in [1, 2, 5, 7, 64, 1000, form.len()] {
                let chunks: Vec<Result<Bytes, std::io::Error>> = form
                    .as_bytes()
                    .chunks(chunk)
                    .map(|c| Ok(Bytes::copy_from_slice(c)))
                    .collect();
                let body = Body::from_stream(futures::stream::iter(chunks));
                let begun = Upload::begin(&multipart_headers(), body, 1 << 20, None).await;
                let mut upload = match begun {
                    Ok(upload) => upload,
                    // The whole form arrived with the model: refused before anything went on.
                    Err(ApiError::InvalidMultipart(_)) => continue,
                    Err(other) => panic!("chunk {chunk}: {other:?}"),
                };
                let mut sent = upload.take_body("whisper-1").unwrap();
                let mut forwarded = Vec::new();
                let failed = loop {
                    match sent.frame().await {
                        Some(Ok(frame)) => forwarded.extend_from_slice(&frame.into_data().unwrap()),
                        Some(Err(_)) => break true,
                        None => break false,
                    }
                };
                assert!(failed, "chunk {chunk}: the stream ended normally");
                assert!(
                    forwarded.len() <= head.len(),
                    "chunk {chunk}: {} bytes of {} passed on",
                    forwarded.len(),
                    head.len()
                );
            }
        }
    }

    /// Every chunking of a form tells the record the same parts: each file's size and
    /// SHA-256 of exactly its bytes, and the text fields in order, wherever the model is.
    #[tokio::test]
    async fn the_record_gets_each_files_size_and_hash_and_the_text_fields() {
        let audio: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        let image = b"\x89PNG\r\n--Xy\r\n--X".to_vec();
        let mut form = part("name=\"model\"", "whisper-1").into_bytes();
        form.extend_from_slice(part("name=\"language\"", "en").as_bytes());
        for (name, file_name, content_type, bytes) in [
            ("file", "a.wav", "audio/wav", &audio),
            ("image", "b.png", "image/png", &image),
        ] {
            form.extend_from_slice(
                format!("--XyZ\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{file_name}\"\r\nContent-Type: {content_type}\r\n\r\n").as_bytes(),
            );
            form.extend_from_slice(bytes);
            form.extend_from_slice(b"\r\n");
        }
        form.extend_from_slice(part("name=\"prompt\"", "after the files").as_bytes());
        form.extend_from_slice(b"--XyZ--\r\n");
        for chunk in [1, 3, 7, 100, 4096, form.len()] {
            let chunks: Vec<Result<Bytes, std::io::Error>> = form
                .chunks(chunk)
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect();
            let body = Body::from_stream(futures::stream::iter(chunks));
            let seen = FormSeen::default();
            let mut upload = Upload::begin(&multipart_headers(), body, 1 << 20, Some(seen.clone()))
                .await
                .unwrap();
            let sent = upload.take_body("real-whisper").unwrap();
            sent.collect().await.unwrap();
            seen.with(|f| {
                assert_eq!(f.bytes, form.len() as u64, "chunk {chunk}");
                assert_eq!(f.files.len(), 2, "chunk {chunk}");
                let wav = &f.files[0];
                assert_eq!(wav.field, "file");
                assert_eq!(wav.file_name.as_deref(), Some("a.wav"));
                assert_eq!(wav.content_type.as_deref(), Some("audio/wav"));
                assert_eq!(wav.bytes, audio.len() as u64);
                assert_eq!(wav.sha256, hex::encode(Sha256::digest(&audio)));
                assert_eq!(f.files[1].bytes, image.len() as u64);
                assert_eq!(f.files[1].sha256, hex::encode(Sha256::digest(&image)));
                let fields: Vec<(&str, &str)> = f
                    .fields
                    .iter()
                    .map(|(n, v)| (n.as_str(), v.as_str()))
                    .collect();
                assert_eq!(
                    fields,
                    [
                        ("model", "whisper-1"),
                        ("language", "en"),
                        ("prompt", "after the files")
                    ],
                    "chunk {chunk}: the client's model, not the upstream's"
                );
            });
        }
    }

    /// How fast the tally hashes a file part (run with `--ignored --nocapture` in release).
    #[tokio::test]
    #[ignore]
    async fn hashing_throughput() {
        let file = vec![7u8; 64 << 20];
        let mut tally = PartTally::new(FormSeen::default());
        tally.part_start("file".into(), Some("a".into()), b"");
        let started = std::time::SystemTime::now();
        for chunk in file.chunks(16 * 1024) {
            tally.content(chunk);
        }
        tally.part_end();
        let seconds = started.elapsed().unwrap().as_secs_f64();
        println!("{:.0} MB/s", 64.0 * 1.048576 / seconds);
    }
}
