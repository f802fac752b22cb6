//! Every error a client can see, and its one conversion to OpenAI's error shape:
//! `{"error":{"message","type","param","code"}}` with the matching HTTP status.
//!
//! A value the client sent (a model name, an id, a path) is repeated in a message through
//! [`echo`], cut to [`ECHO_LIMIT`] bytes: a megabyte-long model name must not come back as a
//! megabyte-long 404.

use std::borrow::Cow;

use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde_json::json;

/// Most bytes of one client-supplied value (a model name, an id, a path) an error message
/// repeats: enough to recognise it, never the megabyte a client sent.
pub(crate) const ECHO_LIMIT: usize = 256;

/// `value` as an error message repeats it: whole up to [`ECHO_LIMIT`] bytes, else cut on a
/// char boundary and marked with an ellipsis.
pub(crate) fn echo(value: &str) -> Cow<'_, str> {
    if value.len() <= ECHO_LIMIT {
        return Cow::Borrowed(value);
    }
    let mut end = ECHO_LIMIT;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}…", &value[..end]))
}

/// An error answered to an API client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(
        "Missing API key: send it in the Authorization header as `Authorization: Bearer YOUR_KEY`."
    )]
    MissingKey,
    #[error("Incorrect API key provided.")]
    InvalidKey,
    #[error("This API key has been disabled.")]
    KeyDisabled,
    #[error("This API key has expired.")]
    KeyExpired,
    #[error("We could not parse the JSON body of your request: {}", echo(.0))]
    InvalidJson(String),
    #[error("{message}")]
    InvalidParam {
        param: &'static str,
        message: String,
    },
    #[error("The model `{}` does not exist or you do not have access to it.", echo(.0))]
    ModelNotFound(String),
    #[error("Request body is larger than the limit of {limit} bytes.")]
    BodyTooLarge { limit: usize },
    #[error("Could not read the request body: {0}")]
    BodyUnreadable(String),
    /// The request body paused longer than `server.body_idle_timeout`.
    #[error("The request body paused for more than {0:?}; send the whole body without pauses.")]
    BodyTimeout(std::time::Duration),
    /// A multipart/form-data body that cannot be parsed.
    #[error("Invalid multipart/form-data body: {}", echo(.0))]
    InvalidMultipart(String),
    /// An id the gateway did not hand out to this key (or that was altered).
    #[error("No {what} found with id `{}`.", echo(.id))]
    UnknownId { what: &'static str, id: String },
    /// An MCP server, agent type or sandbox that is not in the settings.
    #[error("The {what} `{}` does not exist.", echo(.name))]
    UnknownBackend { what: &'static str, name: String },
    /// A backend the key may not use.
    #[error("This API key may not use the {what} `{}`.", echo(.name))]
    BackendNotAllowed { what: &'static str, name: String },
    #[error("Method {} is not allowed on {}.", echo(.method), echo(.path))]
    MethodNotAllowed { method: String, path: String },
    #[error("Unknown request URL: {} {}.", echo(.method), echo(.path))]
    UnknownUrl { method: String, path: String },
    #[error("Upstream `{upstream}` is unreachable: {detail}")]
    UpstreamUnreachable { upstream: String, detail: String },
    #[error("Upstream `{upstream}` timed out: {phase}")]
    UpstreamTimeout {
        upstream: String,
        phase: &'static str,
    },
    /// The upstream answered with an error, relayed as it came (boxed: a header map would
    /// make every `Result<_, ApiError>` large).
    #[error("Upstream `{}` answered {}.", .0.upstream, .0.status)]
    UpstreamAnswered(Box<UpstreamAnswer>),
    /// Every target of the model is avoided (breakers open, health checks failing).
    #[error("No upstream serving the model `{model}` is available right now; try again shortly.")]
    NoUpstreamAvailable { model: String },
    #[error("The server had an error while processing your request.")]
    Internal,
    /// A rate limit (RPM, TPM, concurrency) of the key: 429.
    #[error("{0}")]
    RateLimited(String),
    /// The request needs more than a limit of the key ever admits (a full rate bucket, a whole
    /// budget): 400, so that no client retries it as it is.
    #[error("{message}")]
    TooLargeForLimit { message: String, code: &'static str },
    /// A period budget of the key is used up: 429 `insufficient_quota`.
    #[error("{0}")]
    QuotaExceeded(String),
    /// The key's budget needs a new lease and the cluster cannot grant one (no quorum).
    #[error("Cannot check this key's quota right now: {0}")]
    QuotaUnavailable(String),
    /// `inner`, answered with `headers` too (`retry-after`, `x-ratelimit-*`).
    #[error("{inner}")]
    Refused {
        inner: Box<ApiError>,
        headers: Box<HeaderMap>,
    },
}

/// An upstream's error answer: its status, its body (already in OpenAI's shape, see
/// `proxy::relay_error`) and its headers (`retry-after` and the like).
#[derive(Debug)]
pub struct UpstreamAnswer {
    pub upstream: String,
    pub status: StatusCode,
    pub body: Bytes,
    pub headers: HeaderMap,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::MissingKey | Self::InvalidKey | Self::KeyDisabled | Self::KeyExpired => {
                StatusCode::UNAUTHORIZED
            }
            Self::InvalidJson(_)
            | Self::InvalidParam { .. }
            | Self::BodyUnreadable(_)
            | Self::InvalidMultipart(_)
            | Self::TooLargeForLimit { .. } => StatusCode::BAD_REQUEST,
            Self::ModelNotFound(_)
            | Self::UnknownUrl { .. }
            | Self::UnknownId { .. }
            | Self::UnknownBackend { .. } => StatusCode::NOT_FOUND,
            Self::BackendNotAllowed { .. } => StatusCode::FORBIDDEN,
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::UpstreamUnreachable { .. } => StatusCode::BAD_GATEWAY,
            Self::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Self::UpstreamAnswered(answer) => answer.status,
            Self::NoUpstreamAvailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Self::RateLimited(_) | Self::QuotaExceeded(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::QuotaUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Refused { inner, .. } => inner.status(),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Self::UpstreamUnreachable { .. }
            | Self::UpstreamTimeout { .. }
            | Self::NoUpstreamAvailable { .. }
            | Self::Internal
            | Self::QuotaUnavailable(_) => "server_error",
            Self::RateLimited(_) => "requests",
            Self::QuotaExceeded(_) => "insufficient_quota",
            Self::Refused { inner, .. } => inner.kind(),
            Self::UpstreamAnswered(answer) if answer.status.is_server_error() => "server_error",
            _ => "invalid_request_error",
        }
    }

    fn param(&self) -> Option<&'static str> {
        match self {
            Self::InvalidParam { param, .. } => Some(param),
            Self::ModelNotFound(_) => Some("model"),
            _ => None,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::MissingKey => "missing_api_key",
            Self::InvalidKey => "invalid_api_key",
            Self::KeyDisabled => "api_key_disabled",
            Self::KeyExpired => "api_key_expired",
            Self::InvalidJson(_) => "invalid_json",
            Self::InvalidParam { .. } => "invalid_value",
            Self::ModelNotFound(_) => "model_not_found",
            Self::BodyTooLarge { .. } => "request_too_large",
            Self::BodyUnreadable(_) => "invalid_body",
            Self::BodyTimeout(_) => "request_timeout",
            Self::InvalidMultipart(_) => "invalid_multipart",
            Self::UnknownId { .. } | Self::UnknownBackend { .. } => "not_found",
            Self::BackendNotAllowed { .. } => "permission_denied",
            Self::MethodNotAllowed { .. } => "method_not_allowed",
            Self::UnknownUrl { .. } => "unknown_url",
            Self::UpstreamUnreachable { .. } => "upstream_unreachable",
            Self::UpstreamTimeout { .. } => "upstream_timeout",
            Self::UpstreamAnswered(_) => "upstream_error",
            Self::NoUpstreamAvailable { .. } => "upstream_unavailable",
            Self::Internal => "internal_error",
            Self::RateLimited(_) => "rate_limit_exceeded",
            Self::QuotaExceeded(_) => "insufficient_quota",
            Self::QuotaUnavailable(_) => "quota_unavailable",
            Self::TooLargeForLimit { code, .. } => code,
            Self::Refused { inner, .. } => inner.code(),
        }
    }

    /// The error as OpenAI's JSON body.
    pub fn body(&self) -> Bytes {
        match self {
            Self::UpstreamAnswered(answer) => answer.body.clone(),
            _ => error_body(&self.to_string(), self.kind(), self.param(), self.code()),
        }
    }
}

/// Why a request body stopped: it paused longer than this between two frames (the server's
/// `IdleBody` fails the read with it).
#[derive(Debug, thiserror::Error)]
#[error("the request body paused for more than {0:?}")]
pub(crate) struct BodyIdleTimeout(pub std::time::Duration);

impl ApiError {
    /// A failed read of the client's request body, as the client is told: 408 when it paused
    /// too long, 400 otherwise.
    pub(crate) fn from_body_error(error: axum::Error) -> Self {
        let inner = error.into_inner();
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(inner.as_ref());
        while let Some(error) = cause {
            if let Some(idle) = error.downcast_ref::<BodyIdleTimeout>() {
                return Self::BodyTimeout(idle.0);
            }
            cause = error.source();
        }
        Self::BodyUnreadable(inner.to_string())
    }
}

/// OpenAI's error JSON for the given fields.
pub fn error_body(message: &str, kind: &str, param: Option<&str>, code: &str) -> Bytes {
    let value = json!({"error": {"message": message, "type": kind, "param": param, "code": code}});
    Bytes::from(value.to_string())
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status(), self.body()).into_response();
        if matches!(
            self,
            Self::MissingKey | Self::InvalidKey | Self::KeyDisabled | Self::KeyExpired
        ) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Self::UpstreamAnswered(answer) = self {
            response.headers_mut().extend(answer.headers);
        } else if let Self::Refused { headers, .. } = self {
            response.headers_mut().extend(*headers);
        }
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upstream_answer_keeps_its_status_body_and_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("3"));
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        let body = error_body("slow down", "rate_limit_error", None, "rate_limited");
        let err = ApiError::UpstreamAnswered(Box::new(UpstreamAnswer {
            upstream: "a".into(),
            status: StatusCode::TOO_MANY_REQUESTS,
            body: body.clone(),
            headers,
        }));
        assert_eq!(err.body(), body);
        let response = err.into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "3");
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    }

    #[test]
    fn no_available_upstream_is_503_in_openai_shape() {
        let err = ApiError::NoUpstreamAvailable { model: "m".into() };
        let v: serde_json::Value = serde_json::from_slice(&err.body()).unwrap();
        assert_eq!(err.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(v["error"]["type"], "server_error");
        assert_eq!(v["error"]["code"], "upstream_unavailable");
    }

    #[test]
    fn body_has_openai_shape() {
        let err = ApiError::ModelNotFound("gpt-9".into());
        let v: serde_json::Value = serde_json::from_slice(&err.body()).unwrap();
        assert_eq!(err.status(), StatusCode::NOT_FOUND);
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["param"], "model");
        assert_eq!(v["error"]["code"], "model_not_found");
        assert!(v["error"]["message"].as_str().unwrap().contains("gpt-9"));
    }

    #[test]
    fn echoed_client_input_is_cut_on_a_char_boundary_with_an_ellipsis() {
        for huge in [
            "m".repeat(1 << 20),
            "é".repeat(1 << 19),
            "a€".repeat(1 << 18),
        ] {
            for err in [
                ApiError::ModelNotFound(huge.clone()),
                ApiError::UnknownId {
                    what: "video",
                    id: huge.clone(),
                },
                ApiError::UnknownUrl {
                    method: "GET".into(),
                    path: huge.clone(),
                },
                ApiError::InvalidJson(huge.clone()),
            ] {
                let v: serde_json::Value = serde_json::from_slice(&err.body()).unwrap();
                let message = v["error"]["message"].as_str().unwrap();
                assert!(message.len() < 512, "{} bytes", message.len());
                assert!(message.contains('…'), "{message}");
            }
        }
        let short = ApiError::ModelNotFound("gpt-9".into()).to_string();
        assert!(short.contains("`gpt-9`") && !short.contains('…'), "{short}");
    }
}
