//! `POST /v1/images/generations`: `n` tiny images (a 1x1 PNG), as URLs or `b64_json`.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::StatusCode;
use serde::Deserialize;

use super::admission::admit;
use super::error::{ApiError, json_response};
use super::state::MockState;

/// A 1x1 transparent PNG, base64.
const PNG_B64: &str =
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII=";

#[derive(Deserialize)]
struct ImageRequest {
    model: Option<String>,
    prompt: Option<String>,
    n: Option<u32>,
    size: Option<String>,
    response_format: Option<String>,
}

pub(crate) async fn generate(
    State(state): State<Arc<MockState>>,
    request: Request,
) -> Result<Response, Response> {
    let admitted = admit(&state, request).await?;
    let request: ImageRequest = serde_json::from_slice(&admitted.body).map_err(|e| {
        ApiError::invalid_request(format!("invalid JSON body: {e}")).into_response()
    })?;
    if request.model.as_deref().is_none_or(str::is_empty) {
        return Err(ApiError::invalid_request("model is required").into_response());
    }
    let Some(prompt) = request.prompt.filter(|p| !p.is_empty()) else {
        return Err(ApiError::invalid_request("prompt is required").into_response());
    };
    let n = request.n.unwrap_or(1);
    if !(1..=10).contains(&n) {
        return Err(ApiError::invalid_request("n must be within 1..=10").into_response());
    }
    let b64 = request.response_format.as_deref() == Some("b64_json");
    let data: Vec<_> = (0..n)
        .map(|i| {
            if b64 {
                serde_json::json!({"b64_json": PNG_B64, "revised_prompt": prompt})
            } else {
                serde_json::json!({
                    "url": format!("https://mock.invalid/images/{}-{i}.png", admitted.n),
                    "revised_prompt": prompt,
                })
            }
        })
        .collect();
    let body = serde_json::json!({
        "created": 1_700_000_000,
        "data": data,
        "size": request.size.unwrap_or_else(|| "1024x1024".into()),
    });
    Ok(json_response(StatusCode::OK, Bytes::from(body.to_string())))
}
