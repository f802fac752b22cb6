//! Multipart uploads streamed through to the upstream without holding the file.
//!
//! Routing needs the `model` field, so the body is read only until that part has arrived
//! (at most [`PREFIX_LIMIT`] bytes): the `model` field must come before the file, which is
//! what the official SDKs send (form fields first, files last). That prefix, with the model
//! value replaced by the target's upstream name, and then the rest of the client's stream go
//! upstream as they arrive. The whole upload is capped at `server.max_upload_bytes`: over it,
//! the stream to the upstream is cut and the client gets 413. The first [`CAPTURE_LIMIT`]
//! bytes are kept so the uploaded file's header can be read afterwards (audio duration).

use std::ops::Range;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Method};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;

use crate::error::ApiError;
use crate::proxy::{RouteTarget, UpstreamCall};

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

/// The `name` and `filename` of a part's `Content-Disposition: form-data` header.
fn disposition(headers: &[u8]) -> Result<(String, Option<String>), &'static str> {
    let text = std::str::from_utf8(headers).map_err(|_| "a part's headers are not UTF-8")?;
    let line = text
        .split("\r\n")
        .find(|line| {
            line.split_once(':')
                .is_some_and(|(h, _)| h.trim().eq_ignore_ascii_case("content-disposition"))
        })
        .ok_or("a part has no Content-Disposition header")?;
    let (_, value) = line.split_once(':').ok_or("bad Content-Disposition")?;
    let mut name = None;
    let mut filename = None;
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
            "expected Content-Type: multipart/form-data, got {essence:?}"
        )));
    }
    params
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("boundary"))
        .map(|(_, v)| v.trim().trim_matches('"').to_owned())
        .filter(|b| !b.is_empty() && b.len() <= 200)
        .ok_or_else(|| bad("the multipart/form-data Content-Type has no boundary"))
}

/// An upload whose `model` has been found, ready to go upstream once.
pub(crate) struct Upload {
    pub model: String,
    /// Fields that arrived before the model or with it (`response_format`, `seconds`, ...).
    pub fields: Vec<(String, String)>,
    content_type: HeaderValue,
    prefix: Bytes,
    model_span: Range<usize>,
    rest: Option<Body>,
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
    /// The first bytes of the body (the part headers and the start of the file).
    captured: Mutex<BytesMut>,
    boundary: String,
}

impl UploadState {
    pub fn exceeded(&self) -> bool {
        self.exceeded.load(Ordering::Relaxed)
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
    /// `limit`, 400 when it is not multipart/form-data or has no `model` before its file.
    pub async fn begin(
        headers: &HeaderMap,
        mut body: Body,
        limit: usize,
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
        let (parts, model) = loop {
            let frame = body.frame().await;
            let ended = frame.is_none();
            if let Some(frame) = frame {
                let frame = frame.map_err(ApiError::from_body_error)?;
                if let Ok(data) = frame.into_data() {
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
            rest: Some(body),
            declared_len,
            limit,
            received,
            state: Arc::new(UploadState {
                exceeded: AtomicBool::new(false),
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
        let rest = self.rest.take()?;
        let mut head = BytesMut::with_capacity(self.prefix.len() + upstream_model.len());
        head.extend_from_slice(&self.prefix[..self.model_span.start]);
        head.extend_from_slice(upstream_model.as_bytes());
        head.extend_from_slice(&self.prefix[self.model_span.end..]);
        let length = self
            .declared_len
            .map(|len| len - self.model_span.len() as u64 + upstream_model.len() as u64);
        Some(Body::new(UploadBody {
            head: Some(head.freeze()),
            rest,
            length,
            limit: self.limit,
            received: self.received,
            state: Arc::clone(&self.state),
        }))
    }
}

/// The upload on its way upstream: the rewritten prefix, then the client's stream, counted.
struct UploadBody {
    head: Option<Bytes>,
    rest: Body,
    /// The exact length after the model rewrite, when the client declared one.
    length: Option<u64>,
    limit: usize,
    received: usize,
    state: Arc<UploadState>,
}

impl http_body::Body for UploadBody {
    type Data = Bytes;
    type Error = crate::proxy::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if let Some(head) = this.head.take() {
            return Poll::Ready(Some(Ok(Frame::data(head))));
        }
        match Pin::new(&mut this.rest).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.received = this.received.saturating_add(data.len());
                    if this.received > this.limit {
                        this.state.exceeded.store(true, Ordering::Relaxed);
                        return Poll::Ready(Some(Err("upload larger than the limit".into())));
                    }
                    let mut captured = this
                        .state
                        .captured
                        .lock()
                        .unwrap_or_else(|e| e.into_inner());
                    let room = CAPTURE_LIMIT.saturating_sub(captured.len());
                    captured.extend_from_slice(&data[..room.min(data.len())]);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(err))) => Poll::Ready(Some(Err(err.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self.length {
            Some(length) => SizeHint::with_exact(length),
            None => SizeHint::default(),
        }
    }
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
        let mut upload = Upload::begin(&headers, body, 1 << 20).await.unwrap();
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
        let err = Upload::begin(&headers, Body::from(&no_model[..]), 1 << 20).await;
        assert!(matches!(
            err,
            Err(ApiError::InvalidParam { param: "model", .. })
        ));
        let err = Upload::begin(&headers, Body::from(FORM), 10).await;
        assert!(matches!(err, Err(ApiError::BodyTooLarge { limit: 10 })));
    }
}
