//! `POST /v1/chat/completions`, streaming and not.
//!
//! An `openai` upstream gets the client's body byte for byte with the model spliced in; an
//! `anthropic` upstream gets it translated once (providers/anthropic), the first time such a
//! target is picked, and its answer is translated back before the usage tap sees it, so
//! metering, quotas and records work on OpenAI's shape for every kind.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use http::HeaderValue;
use http::header::HeaderName;

use super::auth::Caller;
use super::body::{RoutingFields, read_limited};
use super::routed;
use crate::error::ApiError;
use crate::providers::anthropic::{self, MessagesRequest};
use crate::proxy::{self, UpstreamCall};
use crate::quota::tap::{TapOptions, Usage, UsageTap};
use crate::records::CallFacts;
use crate::state::AppState;
use crate::usage::{Capability, UsageRecord};
use aigw_config::UpstreamKind;

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
    // Translated once, when the first target of another kind than `openai` is picked.
    let mut messages: Option<Result<MessagesRequest, ApiError>> = None;
    let forwarded = proxy::forward_call(
        &state.proxy,
        &fields.model,
        route,
        session,
        true,
        |target| match target.upstream.kind {
            UpstreamKind::OpenAi => {
                let spliced = fields.splice_model(&body, &target.model_json);
                let body = if ask_usage {
                    with_include_usage(&spliced)
                } else {
                    spliced
                };
                Some(UpstreamCall::post_json("/chat/completions", body))
            }
            UpstreamKind::Anthropic => {
                let translated = messages.get_or_insert_with(|| {
                    let default = route
                        .default_max_tokens
                        .unwrap_or(anthropic::DEFAULT_MAX_TOKENS);
                    anthropic::translate_request(&body, default)
                });
                // A request this upstream cannot take ends the attempts; it is answered below.
                let request = translated.as_ref().ok()?;
                let body = request.body_for(&target.model_json);
                Some(UpstreamCall::post_json(anthropic::MESSAGES_PATH, body))
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
    if let Some(Err(refused)) = messages.take_if(|m| m.is_err()) {
        if let Some(admission) = admission {
            admission.settle(Some(Usage::default()));
        }
        return Err(refused);
    }
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
    // The usage chunk the client gets stripped: for `openai`, the one the gateway asked for;
    // an `anthropic` stream always ends with one (its usage always comes), so it is stripped
    // unless the client asked for it.
    let mut strip_usage_chunk = ask_usage;
    if forwarded.kind == Some(UpstreamKind::Anthropic)
        && let Some(Ok(request)) = &messages
    {
        strip_usage_chunk = !request.include_usage;
        match from_anthropic(response, request, forwarded.upstream.as_deref()).await {
            Ok(translated) => response = translated,
            Err(error) => {
                if let Some(admission) = admission {
                    admission.settle(Some(Usage::default()));
                }
                return Err(error);
            }
        }
    }
    let event_stream = response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    let options = TapOptions {
        event_stream,
        strip_usage_chunk,
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

/// A successful answer of an `anthropic` upstream in OpenAI's shape: a stream translated as
/// it arrives, a whole Message read and translated once (502 when it is not one). The
/// parameters the translation dropped are named in `x-aigw-dropped-params`.
async fn from_anthropic(
    response: Response,
    request: &MessagesRequest,
    upstream: Option<&str>,
) -> Result<Response, ApiError> {
    let created = aigw_cluster::unix_now();
    let (mut parts, body) = response.into_parts();
    if !request.dropped.is_empty()
        && let Ok(value) = HeaderValue::from_str(&request.dropped.join(", "))
    {
        parts.headers.insert(DROPPED_PARAMS.clone(), value);
    }
    parts.headers.remove(http::header::CONTENT_LENGTH);
    if request.stream {
        let body = proxy::translate::translated_stream(body, anthropic::ChunkStream::new(created));
        return Ok(Response::from_parts(parts, body));
    }
    let unreadable = |detail: String| ApiError::UpstreamUnreachable {
        upstream: upstream.unwrap_or("-").to_owned(),
        detail,
    };
    let whole = proxy::translate::read_whole(body)
        .await
        .map_err(|e| unreadable(format!("the answer broke off: {e}")))?;
    let completion = anthropic::translate_response(&whole, created)
        .map_err(|why| unreadable(format!("the answer is not an Anthropic Message ({why})")))?;
    parts.headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(Response::from_parts(parts, Body::from(completion)))
}

/// Names the request parameters an upstream of another kind had no use for, dropped on the
/// way (providers/anthropic/request.rs lists them).
static DROPPED_PARAMS: HeaderName = HeaderName::from_static("x-aigw-dropped-params");

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
