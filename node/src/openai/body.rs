//! Reading a request body under the size limit, and finding the fields routing needs without
//! rebuilding the JSON.

use std::borrow::Cow;

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http::header::CONTENT_LENGTH;
use http_body_util::BodyExt;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::error::ApiError;

/// The whole body, or 413 as soon as it is known to exceed `limit`.
///
/// A body that arrives as one frame (any request small enough for one read) is returned as
/// that frame, without a copy; larger ones are joined once. This loop replaces
/// `Limited::new(body, limit).collect()`, whose frame list and boxed error cost about 1,000
/// instructions per request (callgrind, BENCHMARKS.md).
pub(super) async fn read_limited(
    headers: &HeaderMap,
    mut body: Body,
    limit: usize,
) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(ApiError::BodyTooLarge { limit });
    }
    let mut first: Option<Bytes> = None;
    let mut joined: Option<BytesMut> = None;
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(ApiError::from_body_error)?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers carry nothing a JSON request needs
        };
        total = total.saturating_add(data.len());
        if total > limit {
            return Err(ApiError::BodyTooLarge { limit });
        }
        match (&mut joined, first.take()) {
            (Some(buf), _) => buf.extend_from_slice(&data),
            (None, Some(head)) => {
                // Sized by what arrived, not by Content-Length: a client that declares a
                // large body and stalls must not make us reserve it.
                let mut buf = BytesMut::with_capacity(total.saturating_mul(2));
                buf.extend_from_slice(&head);
                buf.extend_from_slice(&data);
                joined = Some(buf);
            }
            (None, None) => first = Some(data),
        }
    }
    Ok(match joined {
        Some(buf) => buf.freeze(),
        None => first.unwrap_or_default(),
    })
}

/// What routing needs from a JSON request body: the model (and where it sits, to replace it),
/// whether the client asked for a stream, and the end user (a sticky session's key when no
/// `x-session-id` header names one). Everything else stays as raw bytes.
#[derive(Debug)]
pub(super) struct RoutingFields<'a> {
    pub model: String,
    /// Byte range of the `model` value (quotes included) in the body.
    model_span: std::ops::Range<usize>,
    pub stream: bool,
    /// Borrowed from the body unless the string has escapes; `None` when absent or not a
    /// string (the upstream judges that, as for any field routing does not own).
    pub user: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Head<'a> {
    #[serde(borrow, default)]
    model: Option<&'a RawValue>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(borrow, default)]
    user: Option<&'a RawValue>,
}

impl<'a> RoutingFields<'a> {
    pub fn parse(body: &'a [u8]) -> Result<Self, ApiError> {
        // serde's derived structs also accept a JSON array (as a tuple); a request is an object.
        if body.trim_ascii_start().first() != Some(&b'{') {
            return Err(ApiError::InvalidJson(
                "the request body must be a JSON object".into(),
            ));
        }
        let head: Head<'_> =
            serde_json::from_slice(body).map_err(|e| ApiError::InvalidJson(e.to_string()))?;
        let missing = || ApiError::InvalidParam {
            param: "model",
            message: "You must provide a model parameter.".into(),
        };
        let raw = head.model.ok_or_else(missing)?;
        let model = model_name(raw.get()).ok_or_else(|| ApiError::InvalidParam {
            param: "model",
            message: "`model` must be a string.".into(),
        })?;
        if model.is_empty() {
            return Err(missing());
        }
        // A borrowed RawValue is a slice of `body`, so its address gives its offset.
        let start = (raw.get().as_ptr() as usize)
            .checked_sub(body.as_ptr() as usize)
            .filter(|start| start + raw.get().len() <= body.len())
            .ok_or(ApiError::Internal)?;
        // A string without escapes borrows; one with escapes must be unescaped into a copy.
        let user = head.user.and_then(|raw| {
            serde_json::from_str::<&'a str>(raw.get())
                .map(Cow::Borrowed)
                .or_else(|_| serde_json::from_str::<String>(raw.get()).map(Cow::Owned))
                .ok()
        });
        Ok(Self {
            model,
            model_span: start..start + raw.get().len(),
            stream: head.stream.unwrap_or(false),
            user,
        })
    }

    /// `body` with the model value replaced by `model_json` (an encoded JSON string); every
    /// other byte is kept as the client sent it.
    pub fn splice_model(&self, body: &[u8], model_json: &str) -> Bytes {
        let mut out =
            BytesMut::with_capacity(body.len() - self.model_span.len() + model_json.len());
        out.extend_from_slice(&body[..self.model_span.start]);
        out.extend_from_slice(model_json.as_bytes());
        out.extend_from_slice(&body[self.model_span.end..]);
        out.freeze()
    }
}

/// The string a raw JSON value holds, or `None` when it is not a string. A name without
/// escapes (every real model name) is the bytes between the quotes: no second parse.
fn model_name(raw: &str) -> Option<String> {
    let inner = raw.strip_prefix('"')?.strip_suffix('"')?;
    if !inner.contains('\\') {
        return Some(inner.to_owned());
    }
    serde_json::from_str(raw).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splice_replaces_only_the_model_value() {
        let body =
            br#"{ "stream":true, "model" : "public\u002dname", "x_unknown": {"model": "keep"} }"#;
        let fields = RoutingFields::parse(body).unwrap();
        assert_eq!(fields.model, "public-name");
        assert!(fields.stream);
        let out = fields.splice_model(body, r#""qwen""#);
        assert_eq!(
            &out[..],
            br#"{ "stream":true, "model" : "qwen", "x_unknown": {"model": "keep"} }"#
        );
    }

    #[test]
    fn user_is_borrowed_from_the_body_and_ignored_when_not_a_string() {
        let body = br#"{"model":"m","user":"alice"}"#;
        let fields = RoutingFields::parse(body).unwrap();
        assert!(matches!(fields.user, Some(Cow::Borrowed("alice"))));
        let escaped = br#"{"model":"m","user":"alice"}"#;
        assert_eq!(
            RoutingFields::parse(escaped).unwrap().user.as_deref(),
            Some("alice")
        );
        for body in [&br#"{"model":"m","user":7}"#[..], br#"{"model":"m"}"#] {
            assert_eq!(RoutingFields::parse(body).unwrap().user, None);
        }
    }

    #[test]
    fn model_names_with_and_without_escapes() {
        assert_eq!(model_name(r#""gpt-4o""#).as_deref(), Some("gpt-4o"));
        assert_eq!(model_name(r#""a\"b\u0041""#).as_deref(), Some("a\"bA"));
        assert_eq!(model_name("3"), None);
        assert_eq!(model_name("null"), None);
        assert_eq!(model_name(r#"["x"]"#), None);
    }

    async fn read(chunks: Vec<&'static [u8]>, limit: usize) -> Result<Bytes, ApiError> {
        let stream = futures::stream::iter(
            chunks
                .into_iter()
                .map(|c| Ok::<_, std::io::Error>(Bytes::from_static(c))),
        );
        read_limited(&HeaderMap::new(), Body::from_stream(stream), limit).await
    }

    #[tokio::test]
    async fn bodies_are_read_whole_in_one_or_many_frames() {
        assert_eq!(read(vec![], 10).await.unwrap(), Bytes::new());
        assert_eq!(
            read(vec![b"{}"], 10).await.unwrap(),
            Bytes::from_static(b"{}")
        );
        let joined = read(vec![b"{\"a\"", b":", b"1}"], 10).await.unwrap();
        assert_eq!(joined, Bytes::from_static(b"{\"a\":1}"));
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_413_whether_declared_or_streamed() {
        assert!(matches!(
            read(vec![b"12345", b"67890", b"1"], 10).await,
            Err(ApiError::BodyTooLarge { limit: 10 })
        ));
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_LENGTH, http::HeaderValue::from_static("11"));
        assert!(matches!(
            read_limited(&headers, Body::from("x"), 10).await,
            Err(ApiError::BodyTooLarge { limit: 10 })
        ));
    }

    #[test]
    fn missing_null_empty_or_non_string_model_is_a_param_error() {
        for body in [
            &br#"{}"#[..],
            br#"{"model":null}"#,
            br#"{"model":""}"#,
            br#"{"model":3}"#,
        ] {
            match RoutingFields::parse(body) {
                Err(ApiError::InvalidParam { param: "model", .. }) => {}
                other => panic!("{}: {other:?}", String::from_utf8_lossy(body)),
            }
        }
    }

    #[test]
    fn malformed_or_non_object_json_is_invalid_json() {
        for body in [
            &b"{"[..],
            b"",
            b"[1]",
            br#"{"model":"a","stream":"yes"}"#,
            br#"{"model":"a","model":"b"}"#,
        ] {
            assert!(
                matches!(RoutingFields::parse(body), Err(ApiError::InvalidJson(_))),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
