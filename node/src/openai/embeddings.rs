//! `POST /v1/embeddings`: routed like chat; admitted against the key's call and input-token
//! limits with a tiktoken estimate of `input`, settled and metered from the upstream's
//! `usage.prompt_tokens`.

use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use http::HeaderMap;

use super::auth::Caller;
use super::body::read_limited;
use super::routed::{Cost, route_json};
use crate::error::ApiError;
use crate::proxy::tap::{TapBody, number_field};
use crate::quota::{self, tap::Usage};
use crate::records::CallFacts;
use crate::state::AppState;
use crate::usage::{Capability, UsageRecord};

pub(super) async fn create(
    State(state): State<AppState>,
    Caller(key): Caller,
    call: Option<Extension<CallFacts>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let call = call.map(|Extension(call)| call);
    let body = read_limited(&headers, body, state.max_body_bytes).await?;
    let (forwarded, mut admission) = route_json(
        &state,
        &key,
        &headers,
        &body,
        "/embeddings",
        Cost::EmbeddingInput,
        call.as_ref(),
    )
    .await?;
    let mut response = forwarded.response;
    if !response.status().is_success() {
        return Ok(quota::settle_on_end(admission, response, |_| None));
    }
    if let Some(admission) = &mut admission {
        response.headers_mut().extend(admission.take_headers());
    }
    let meter = state.clone();
    let key_id = key.id.clone();
    let upstream_body = std::mem::take(response.body_mut());
    *response.body_mut() = TapBody::wrap(upstream_body, move |ends| {
        // OpenAI puts `usage` last; some servers put it first. Either end has it.
        let tokens = number_field(&ends.tail, "prompt_tokens")
            .or_else(|| number_field(&ends.head, "prompt_tokens"))
            .map(|t| t as u64);
        let record = UsageRecord {
            input_tokens: tokens,
            ..UsageRecord::default()
        };
        meter.usage.record(&key_id, Capability::Embeddings, &record);
        if let Some(call) = &call {
            call.used(&record);
        }
        if let Some(admission) = admission {
            admission.settle(tokens.map(|input| Usage {
                input,
                ..Usage::default()
            }));
        }
    });
    Ok(response)
}
