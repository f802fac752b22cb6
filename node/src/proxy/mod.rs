//! The proxy engine: the route table, upstream endpoints with their clients and timeouts, and
//! relaying an upstream's answer to the client.

mod body;
mod routes;
mod upstream;

use axum::body::Body;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use tokio::time::Instant;

pub(crate) use routes::{RouteTable, RouteTarget};

use crate::openai::{ApiError, error_body};
use body::TimedBody;

/// How much of an upstream's error body we read to relay it.
const MAX_UPSTREAM_ERROR_BODY: usize = 64 * 1024;

/// Names the upstream that served a response.
static X_AIGW_UPSTREAM: HeaderName = HeaderName::from_static("x-aigw-upstream");

/// POSTs a JSON `body` to `path` on the target's upstream and relays the answer: success
/// bodies stream through, error bodies are relayed in OpenAI's shape with the upstream status.
pub(crate) async fn forward_json(
    target: &RouteTarget,
    path: &str,
    body: Bytes,
) -> Result<Response<Body>, ApiError> {
    let upstream = &target.upstream;
    let deadline = Instant::now() + upstream.timeouts.total;
    let mut request = Request::post(upstream.uri(path)?)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .map_err(|_| ApiError::Internal)?;
    if let Some(authorization) = upstream.authorization() {
        request
            .headers_mut()
            .insert(header::AUTHORIZATION, authorization.clone());
    }
    let response = upstream.send(request, deadline).await?;
    let (parts, incoming) = response.into_parts();
    let event_stream = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    let mut headers = relayed_headers(&parts.headers);
    headers.insert(
        X_AIGW_UPSTREAM.clone(),
        HeaderValue::from_str(&upstream.id).map_err(|_| ApiError::Internal)?,
    );

    if !parts.status.is_success() {
        let relayed = relay_error(parts.status, incoming, &upstream.id, deadline).await;
        let mut response = Response::new(Body::from(relayed));
        *response.status_mut() = parts.status;
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        *response.headers_mut() = headers;
        return Ok(response);
    }

    let body = TimedBody::new(
        incoming,
        upstream.timeouts.idle,
        deadline,
        event_stream,
        upstream.id.clone(),
    );
    let mut response = Response::new(Body::new(body));
    *response.status_mut() = parts.status;
    *response.headers_mut() = headers;
    Ok(response)
}

/// An upstream's error, as OpenAI's error JSON: its own body when it already is one, otherwise
/// a wrapper that quotes the start of what it said.
async fn relay_error(
    status: StatusCode,
    incoming: hyper::body::Incoming,
    upstream: &str,
    deadline: Instant,
) -> Bytes {
    let collected = tokio::time::timeout_at(
        deadline,
        Limited::new(incoming, MAX_UPSTREAM_ERROR_BODY).collect(),
    )
    .await;
    let text = match collected {
        Ok(Ok(body)) => body.to_bytes(),
        _ => Bytes::new(),
    };
    let is_openai_error = serde_json::from_slice::<serde_json::Value>(&text)
        .ok()
        .is_some_and(|v| v.get("error").is_some_and(|e| e.is_object()));
    if is_openai_error {
        return text;
    }
    let quoted: String = String::from_utf8_lossy(&text).chars().take(512).collect();
    let message = format!("upstream `{upstream}` answered {status}: {}", quoted.trim());
    let kind = if status.is_server_error() {
        "server_error"
    } else {
        "invalid_request_error"
    };
    error_body(&message, kind, None, "upstream_error")
}

/// The upstream's response headers worth passing on: not hop-by-hop ones, and not those the
/// server sets itself for the body it actually sends.
fn relayed_headers(upstream: &HeaderMap) -> HeaderMap {
    const DROPPED: &[&str] = &[
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "date",
        "server",
    ];
    let mut headers = HeaderMap::with_capacity(upstream.len() + 1);
    for (name, value) in upstream {
        if !DROPPED.contains(&name.as_str()) {
            headers.append(name.clone(), value.clone());
        }
    }
    headers
}
