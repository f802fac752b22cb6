//! One attempt of a request on one upstream, and how it can fail.
//!
//! An attempt ends in one of three ways: a response the client gets (a 2xx whose first body
//! frame has arrived, or an upstream 4xx that another upstream would answer the same way), or
//! an [`AttemptError`] that says what went wrong and whether the request may still go
//! elsewhere. Whether to fail over is decided from the error's kind and its retry-safe flag,
//! never from its text.
//!
//! A 2xx response is committed only once its first body frame is here: until then nothing
//! has reached the client, so a connection that breaks or stalls before the first byte is
//! still a failover, streaming included. After that, a failure can only end the stream
//! (body.rs).

use axum::body::Body;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use tokio::time::Instant;

use aigw_actors::{Attempt, AttemptResult};

use super::body::{FirstFrame, TimedBody};
use super::upstream::UpstreamEndpoint;
use super::{relay_error, relayed_headers};
use crate::error::{ApiError, UpstreamAnswer};

/// What failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailureKind {
    /// No connection (refused, reset, connect timeout): the request never left.
    Connect,
    /// No response head in time.
    HeadTimeout,
    /// The connection closed before a response head.
    Closed,
    /// The upstream answered this status.
    Status(StatusCode),
    /// A 2xx head came, then the body broke or stalled before its first byte.
    BeforeFirstByte,
    /// The request's own body failed on the way (an upload cut over its limit or refused as
    /// ambiguous): nothing is wrong with the upstream, and the body is gone.
    RequestBody,
}

impl FailureKind {
    /// The failure's name in a record (`status` failures are recorded as the status).
    pub fn label(self) -> Option<&'static str> {
        match self {
            Self::Connect => Some("connect"),
            Self::HeadTimeout => Some("timeout"),
            Self::Closed => Some("closed"),
            Self::Status(_) => None,
            Self::BeforeFirstByte => Some("broke_before_first_byte"),
            Self::RequestBody => Some("request_body"),
        }
    }

    /// Whether this says something is wrong with the upstream (and another may do better):
    /// everything but an upstream's 4xx other than 429, which is about the request.
    pub fn is_upstream_failure(self) -> bool {
        match self {
            Self::Status(status) => {
                status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS
            }
            Self::RequestBody => false,
            _ => true,
        }
    }
}

/// Why an attempt did not produce a response for the client.
#[derive(Debug)]
pub(crate) struct AttemptError {
    pub kind: FailureKind,
    /// Nothing of this attempt has reached the client, so another attempt may answer instead.
    pub retry_safe: bool,
    /// What the client gets if this is the last attempt.
    pub error: ApiError,
}

impl AttemptError {
    pub fn before_first_byte(kind: FailureKind, error: ApiError) -> Self {
        Self {
            kind,
            retry_safe: true,
            error,
        }
    }

    /// Whether the request should go to the next candidate.
    pub fn fails_over(&self) -> bool {
        self.retry_safe && self.kind.is_upstream_failure()
    }
}

/// What one attempt sends: method, path (with its query) under the upstream's `base_url`, the
/// content type and the body.
pub(crate) struct UpstreamCall {
    pub method: Method,
    pub path_and_query: String,
    pub content_type: Option<HeaderValue>,
    pub body: Body,
}

impl UpstreamCall {
    /// A JSON POST, the shape of every model endpoint.
    pub fn post_json(path: &str, body: Bytes) -> Self {
        Self {
            method: Method::POST,
            path_and_query: path.to_owned(),
            content_type: Some(HeaderValue::from_static("application/json")),
            body: Body::from(body),
        }
    }
}

/// Sends `call` to `upstream` with its credentials, reporting the outcome through `attempt`.
pub(crate) async fn run_call(
    upstream: &UpstreamEndpoint,
    mut attempt: Attempt,
    call: UpstreamCall,
) -> Result<Response<Body>, AttemptError> {
    let deadline = Instant::now() + upstream.timeouts.total;
    let mut request = Request::builder()
        .method(call.method)
        .uri(upstream.uri(&call.path_and_query).map_err(internal)?)
        .body(call.body)
        .map_err(|_| internal(ApiError::Internal))?;
    if let Some(content_type) = call.content_type {
        request
            .headers_mut()
            .insert(header::CONTENT_TYPE, content_type);
    }
    if let Some(host) = upstream.host() {
        request.headers_mut().insert(header::HOST, host.clone());
    }
    for (name, value) in upstream.credentials() {
        request.headers_mut().insert(name, value.clone());
    }
    let response = match upstream.send(request, deadline).await {
        Ok(response) => response,
        Err(error) => {
            // A client whose upload is refused must not count against the upstream's breaker.
            attempt.finish(if error.kind.is_upstream_failure() {
                AttemptResult::Failure
            } else {
                AttemptResult::Cancelled
            });
            return Err(error);
        }
    };
    attempt.head_received();
    let (parts, incoming) = response.into_parts();
    let headers = relayed_headers(&parts.headers);

    if !parts.status.is_success() {
        let kind = FailureKind::Status(parts.status);
        attempt.finish(if kind.is_upstream_failure() {
            AttemptResult::Failure
        } else {
            // The upstream is fine; the request is not.
            AttemptResult::Success
        });
        let (status, body) = relay_error(
            upstream.kind,
            parts.status,
            incoming,
            &upstream.id,
            deadline,
        )
        .await;
        let error = ApiError::UpstreamAnswered(Box::new(UpstreamAnswer {
            upstream: upstream.id.to_string(),
            status,
            body,
            headers,
        }));
        return Err(AttemptError::before_first_byte(kind, error));
    }

    let event_stream = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    let mut body = TimedBody::new(
        incoming,
        upstream.timeouts.idle,
        deadline,
        event_stream,
        upstream.id.clone(),
        attempt,
    );
    match body.first_frame().await {
        FirstFrame::Arrived => {}
        FirstFrame::Stalled(phase) => {
            return Err(upstream.timeout(FailureKind::BeforeFirstByte, phase));
        }
        FirstFrame::Broke => {
            return Err(AttemptError::before_first_byte(
                FailureKind::BeforeFirstByte,
                ApiError::UpstreamUnreachable {
                    upstream: upstream.id.to_string(),
                    detail: "the response broke off before its first byte".to_owned(),
                },
            ));
        }
    }
    let mut response = Response::new(Body::new(body));
    *response.status_mut() = parts.status;
    *response.headers_mut() = headers;
    Ok(response)
}

/// A failure of ours, not the upstream's: answered as is, never failed over.
fn internal(error: ApiError) -> AttemptError {
    AttemptError {
        kind: FailureKind::Status(StatusCode::INTERNAL_SERVER_ERROR),
        retry_safe: false,
        error,
    }
}

/// The value of `x-aigw-attempts`.
pub(crate) fn attempts_header(attempts: u32) -> HeaderValue {
    HeaderValue::from(attempts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(kind: FailureKind, retry_safe: bool) -> AttemptError {
        AttemptError {
            kind,
            retry_safe,
            error: ApiError::Internal,
        }
    }

    #[test]
    fn connect_errors_timeouts_5xx_and_429_fail_over() {
        for kind in [
            FailureKind::Connect,
            FailureKind::HeadTimeout,
            FailureKind::Closed,
            FailureKind::BeforeFirstByte,
            FailureKind::Status(StatusCode::INTERNAL_SERVER_ERROR),
            FailureKind::Status(StatusCode::SERVICE_UNAVAILABLE),
            FailureKind::Status(StatusCode::TOO_MANY_REQUESTS),
        ] {
            assert!(error(kind, true).fails_over(), "{kind:?}");
        }
    }

    #[test]
    fn client_errors_and_anything_not_retry_safe_do_not_fail_over() {
        for status in [400, 401, 404, 413, 422] {
            let kind = FailureKind::Status(StatusCode::from_u16(status).unwrap());
            assert!(!error(kind, true).fails_over(), "{status}");
            assert!(!kind.is_upstream_failure());
        }
        assert!(!error(FailureKind::Connect, false).fails_over());
    }
}
