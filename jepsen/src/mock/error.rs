//! Every error the mock answers, in OpenAI's shape: gateways parse upstream errors as
//! `{"error":{"message","type","param","code"}}`, so the mock must never answer plain text.

use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{StatusCode, header};

#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub(crate) fn invalid_request(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
        }
    }

    pub(crate) fn method_not_allowed() -> Self {
        Self {
            status: StatusCode::METHOD_NOT_ALLOWED,
            message: "method not allowed".into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        json_response(self.status, error_body(self.status, &self.message))
    }
}

/// The body for `status`, with OpenAI's `type` and `code` for that class of error.
pub(crate) fn error_body(status: StatusCode, message: &str) -> Bytes {
    let (kind, code) = match status.as_u16() {
        400 | 404 | 405 | 413 | 422 => ("invalid_request_error", None),
        401 => ("invalid_request_error", Some("invalid_api_key")),
        403 => ("invalid_request_error", Some("permission_denied")),
        429 => ("requests", Some("rate_limit_exceeded")),
        500..=599 => ("server_error", None),
        _ => ("invalid_request_error", None),
    };
    let body = serde_json::json!({
        "error": { "message": message, "type": kind, "param": null, "code": code }
    });
    Bytes::from(body.to_string())
}

pub(crate) fn json_response(status: StatusCode, body: Bytes) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        axum::body::Body::from(body),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_have_openai_shape() {
        let v: serde_json::Value =
            serde_json::from_slice(&error_body(StatusCode::TOO_MANY_REQUESTS, "slow down"))
                .unwrap();
        assert_eq!(v["error"]["message"], "slow down");
        assert_eq!(v["error"]["type"], "requests");
        assert_eq!(v["error"]["code"], "rate_limit_exceeded");
        assert!(v["error"]["param"].is_null());
    }
}
