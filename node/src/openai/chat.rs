//! `POST /v1/chat/completions`, streaming and not.

use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use http::HeaderMap;

use super::ApiError;
use super::auth::Caller;
use super::body::{RoutingFields, read_limited};
use super::routed;
use crate::state::AppState;
use crate::{proxy, quota};

pub(super) async fn create(
    State(state): State<AppState>,
    Caller(key): Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = read_limited(&headers, body, state.max_body_bytes).await?;
    let fields = RoutingFields::parse(&body)?;
    if !key.models.allows(&fields.model) {
        return Err(ApiError::ModelNotFound(fields.model));
    }
    let routes = state.routes.load_full();
    let route = routes
        .get(&fields.model)
        .ok_or_else(|| ApiError::ModelNotFound(fields.model.clone()))?;
    let session = routed::sticky_session(route, &fields.model, &headers, fields.user.as_deref());
    // Only a key with limits pays for admission, and only token limits for the estimate.
    let admission = match state.quotas.get() {
        Some(quotas) if !key.limits.is_empty() => {
            let estimate = if key.limits.counts_tokens() {
                quota::tokens::estimate_chat(&body)
            } else {
                quota::tokens::Estimate::calls_only()
            };
            Some(quotas.admit(&key, estimate).await?)
        }
        _ => None,
    };
    // The gateway needs the stream's usage to settle token limits: ask for it when the client
    // did not, and strip it from what the client gets.
    let ask_usage = fields.stream
        && admission
            .as_ref()
            .is_some_and(|a| a.counts_tokens() && !a.client_set_stream_options());
    let forwarded = proxy::forward(
        &state,
        &fields.model,
        route,
        "/chat/completions",
        session,
        |target| {
            let spliced = fields.splice_model(&body, &target.model_json);
            if ask_usage {
                with_include_usage(&spliced)
            } else {
                spliced
            }
        },
    )
    .await;
    tracing::info!(
        key = %key.id,
        model = %fields.model,
        upstream = forwarded.upstream.as_deref().unwrap_or("-"),
        attempts = forwarded.attempts,
        stream = fields.stream,
        status = forwarded.response.status().as_u16(),
        "chat completion"
    );
    let mut response = forwarded.response;
    if let Some(admission) = admission {
        response.headers_mut().extend(admission.headers().clone());
        if !response.status().is_success() {
            // Nothing was generated: the tokens come back, the call stays counted.
            admission.settle(Some(quota::tap::Usage::default()));
        } else {
            let event_stream = response
                .headers()
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("text/event-stream"));
            let (parts, body) = response.into_parts();
            let tap = quota::tap::UsageTap::new(
                body,
                event_stream,
                ask_usage,
                Box::new(move |usage| admission.settle(usage)),
            );
            response = Response::from_parts(parts, Body::new(tap));
        }
    }
    Ok(response)
}

/// `body` (a JSON object) with `"stream_options":{"include_usage":true}` as its first member.
fn with_include_usage(body: &[u8]) -> bytes::Bytes {
    let Some(open) = body.iter().position(|b| *b == b'{') else {
        return bytes::Bytes::copy_from_slice(body);
    };
    const MEMBER: &[u8] = br#""stream_options":{"include_usage":true},"#;
    let mut out = Vec::with_capacity(body.len() + MEMBER.len());
    out.extend_from_slice(&body[..=open]);
    out.extend_from_slice(MEMBER);
    out.extend_from_slice(&body[open + 1..]);
    out.into()
}
