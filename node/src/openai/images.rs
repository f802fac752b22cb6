//! `POST /v1/images/generations`: routed like chat; the image count (`n`) and size tier
//! (`size`) of the request are metered when the upstream answers 2xx.

use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use http::HeaderMap;
use serde::Deserialize;

use super::auth::Caller;
use super::body::read_limited;
use super::routed::{Cost, route_json};
use crate::error::ApiError;
use crate::quota::{self, tap::Usage};
use crate::records::CallFacts;
use crate::state::AppState;
use crate::usage::{Capability, UsageRecord};

/// The metered fields of an image request; anything else is the upstream's to judge.
#[derive(Deserialize)]
struct ImageFields {
    #[serde(default)]
    n: Option<serde_json::Value>,
    #[serde(default)]
    size: Option<serde_json::Value>,
}

pub(super) async fn generate(
    State(state): State<AppState>,
    Caller(key): Caller,
    call: Option<Extension<CallFacts>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let call = call.map(|Extension(call)| call);
    let body = read_limited(&headers, body, state.max_body_bytes).await?;
    let (forwarded, admission) = route_json(
        &state,
        &key,
        &headers,
        &body,
        "/images/generations",
        Cost::Call,
        call.as_ref(),
    )
    .await?;
    if forwarded.response.status().is_success() {
        let record = image_usage(&body);
        state.usage.record(&key.id, Capability::Images, &record);
        if let Some(call) = &call {
            call.used(&record);
        }
    }
    Ok(quota::settle_on_end(admission, forwarded.response, |_| {
        Some(Usage::default())
    }))
}

/// `n` (default 1) and `size` (default `"auto"`) as the request gives them.
fn image_usage(body: &[u8]) -> UsageRecord {
    let fields: Option<ImageFields> = serde_json::from_slice(body).ok();
    let (n, size) = fields.map_or((None, None), |f| (f.n, f.size));
    UsageRecord {
        images: Some(n.and_then(|n| n.as_u64()).unwrap_or(1)),
        size_tier: Some(
            size.and_then(|s| s.as_str().map(str::to_owned))
                .unwrap_or_else(|| "auto".to_owned()),
        ),
        ..UsageRecord::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_and_size_come_from_the_request_with_defaults() {
        let usage = image_usage(br#"{"model":"m","prompt":"p","n":3,"size":"256x256"}"#);
        assert_eq!(usage.images, Some(3));
        assert_eq!(usage.size_tier.as_deref(), Some("256x256"));
        let usage = image_usage(br#"{"model":"m","prompt":"p"}"#);
        assert_eq!(usage.images, Some(1));
        assert_eq!(usage.size_tier.as_deref(), Some("auto"));
    }
}
