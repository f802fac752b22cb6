//! `POST /v1/chat/completions`, streaming and not.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;

use super::auth::Caller;
use super::body::{RoutingFields, read_limited};
use super::routed;
use crate::error::ApiError;
use crate::proxy;
use crate::quota::tap::{TapOptions, Usage, UsageTap};
use crate::records::CallFacts;
use crate::state::AppState;
use crate::usage::{Capability, UsageRecord};

pub(super) async fn create(
    State(state): State<AppState>,
    Caller(key): Caller,
    request: Request,
) -> Result<Response, ApiError> {
    // The request's own headers, borrowed: a `HeaderMap` extractor would clone every one.
    let (parts, body) = request.into_parts();
    let headers = &parts.headers;
    let body = read_limited(headers, body, state.max_body_bytes).await?;
    let call = CallFacts::of(&parts.extensions).cloned();
    if let Some(call) = &call {
        call.with(|f| f.request_body = Some(body.clone()));
    }
    let fields = RoutingFields::parse(&body)?;
    if let Some(call) = &call {
        call.with(|f| f.model = Some(fields.model.to_string()));
    }
    let routes = state.proxy.routes.load_full();
    let route = routed::route_for(&routes, &key, &fields.model, call.as_ref())?;
    let session = routed::sticky_session(route, &fields.model, headers, fields.user.as_deref());
    // Only a key with limits pays for admission, and only token limits for the estimate: first
    // a bound that needs no tokenizer, then tiktoken if the bound is refused.
    let mut admission = state
        .admit(&key, |exact| {
            let counting = if exact {
                route.tokens
            } else {
                route.tokens.upper_bound()
            };
            crate::tokens::estimate_chat(&body, &counting)
        })
        .await?;
    // The gateway meters every stream's usage (and settles token limits with it): it asks for
    // the usage chunk when the client did not set `stream_options`, and strips it from what the
    // client gets.
    let ask_usage = fields.stream && memchr::memmem::find(&body, b"\"stream_options\"").is_none();
    if ask_usage && let Some(call) = &call {
        call.with(|f| f.added_include_usage = true);
    }
    let forwarded = proxy::forward(
        &state.proxy,
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
    if let Some(call) = &call {
        call.forwarded(forwarded.tried);
    }
    let mut response = forwarded.response;
    if let Some(admission) = &mut admission {
        response.headers_mut().extend(admission.take_headers());
    }
    if !response.status().is_success() {
        // Nothing was generated: the tokens come back, the call stays counted.
        if let Some(admission) = admission {
            admission.settle(Some(Usage::default()));
        }
        return Ok(response);
    }
    let event_stream = response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    let options = TapOptions {
        event_stream,
        strip_usage_chunk: ask_usage,
        counting: route.tokens,
        estimated_input: admission.as_ref().map_or(0, |a| a.estimated_input()),
    };
    let meter = state.clone();
    let key_id = key.id.clone();
    let settle = move |usage: Option<Usage>| {
        let record = UsageRecord {
            input_tokens: usage.map(|u| u.input),
            output_tokens: usage.map(|u| u.output),
            cached_tokens: usage.map(|u| u.cached),
            ..UsageRecord::default()
        };
        meter.usage.record(&key_id, Capability::Chat, &record);
        if let Some(call) = &call {
            call.used(&record);
        }
        if let Some(admission) = admission {
            admission.settle(usage);
        }
    };
    let (parts, body) = response.into_parts();
    let tap = UsageTap::new(body, options, Box::new(settle));
    Ok(Response::from_parts(parts, Body::new(tap)))
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
