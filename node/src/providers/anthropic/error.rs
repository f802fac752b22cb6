//! Anthropic's error answers -> OpenAI's error shape, and the status the client sees.
//!
//! Anthropic answers `{"type":"error","error":{"type":..,"message":..}}`. The retry decision
//! is the proxy's, from the upstream's own status (5xx and 429 fail over; 529
//! `overloaded_error` is a 5xx); the client sees OpenAI's statuses, so 529 becomes 503.

use bytes::Bytes;
use http::StatusCode;
use serde_json::Value;

use crate::error::error_body;

/// The client's status and OpenAI-shaped body for an Anthropic error answer. A body that is
/// not Anthropic's error JSON is quoted in a wrapper.
pub(crate) fn translate_error(
    status: StatusCode,
    body: &[u8],
    upstream: &str,
) -> (StatusCode, Bytes) {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let error = parsed.as_ref().and_then(|v| v.get("error"));
    let kind = error.and_then(|e| e.get("type")).and_then(Value::as_str);
    let message = match error.and_then(|e| e.get("message")).and_then(Value::as_str) {
        Some(message) => message.to_owned(),
        None => {
            let quoted: String = String::from_utf8_lossy(body).chars().take(512).collect();
            format!("upstream `{upstream}` answered {status}: {}", quoted.trim())
        }
    };
    let client_status = match status.as_u16() {
        529 => StatusCode::SERVICE_UNAVAILABLE,
        _ => status,
    };
    let (openai_type, code) = openai_type(kind, client_status);
    (client_status, error_body(&message, openai_type, None, code))
}

/// OpenAI's `type` and `code` for Anthropic's error type (or, without one, the status).
fn openai_type(kind: Option<&str>, status: StatusCode) -> (&'static str, &'static str) {
    match kind {
        Some("invalid_request_error") => ("invalid_request_error", "invalid_request"),
        Some("authentication_error") => ("authentication_error", "upstream_authentication"),
        Some("permission_error") => ("permission_error", "upstream_permission"),
        Some("not_found_error") => ("invalid_request_error", "not_found"),
        Some("request_too_large") => ("invalid_request_error", "request_too_large"),
        Some("rate_limit_error") => ("requests", "rate_limit_exceeded"),
        Some("overloaded_error") => ("server_error", "overloaded"),
        Some("api_error") => ("server_error", "upstream_error"),
        _ if status.is_server_error() => ("server_error", "upstream_error"),
        _ => ("invalid_request_error", "upstream_error"),
    }
}

/// The OpenAI error object (the member of `{"error": ..}`) for an Anthropic stream's `error`
/// event data.
pub(super) fn stream_error(data: &Value) -> Value {
    let error = data.get("error").unwrap_or(data);
    let kind = error.get("type").and_then(Value::as_str);
    let message = error
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("the upstream's stream reported an error");
    let (openai_type, code) = openai_type(kind, StatusCode::INTERNAL_SERVER_ERROR);
    serde_json::json!({"message": message, "type": openai_type, "param": null, "code": code})
}
