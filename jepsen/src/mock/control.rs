//! `/mock/*`: how a test or a jepsen run steers the mock and reads back what it saw.
//!
//! - `GET /mock/control` the behaviour; `PUT` replaces it (missing fields take defaults, an
//!   empty body resets it); `PATCH` merges the given fields. Both answer the new behaviour.
//! - `GET /mock/stats`, `POST /mock/step` (answers `{"step":n}`), `GET /mock/last_request`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use super::behavior::MockBehavior;
use super::error::ApiError;
use super::state::MockState;
use super::stats::MockStats;

pub(crate) async fn get_behavior(State(state): State<Arc<MockState>>) -> Json<MockBehavior> {
    Json(state.prepared().behavior.clone())
}

pub(crate) async fn put_behavior(
    State(state): State<Arc<MockState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<MockBehavior>, ApiError> {
    let body = read(body)?;
    let behavior: MockBehavior = if body.iter().all(u8::is_ascii_whitespace) {
        MockBehavior::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::invalid_request(e.to_string()))?
    };
    behavior.validate().map_err(ApiError::invalid_request)?;
    state
        .update(|_| Ok(behavior))
        .map(Json)
        .map_err(ApiError::invalid_request)
}

pub(crate) async fn patch_behavior(
    State(state): State<Arc<MockState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<MockBehavior>, ApiError> {
    let body = read(body)?;
    let patch: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| ApiError::invalid_request(e.to_string()))?;
    state
        .update(|current| {
            let next = current.merged(patch)?;
            next.validate()?;
            Ok(next)
        })
        .map(Json)
        .map_err(ApiError::invalid_request)
}

pub(crate) async fn stats(State(state): State<Arc<MockState>>) -> Json<MockStats> {
    Json(state.counters.snapshot())
}

pub(crate) async fn step(State(state): State<Arc<MockState>>) -> Response {
    Json(serde_json::json!({ "step": state.step() })).into_response()
}

pub(crate) async fn last_request(
    State(state): State<Arc<MockState>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    state
        .last_request
        .to_json()
        .map(Json)
        .ok_or_else(|| ApiError::not_found("no API request has been received yet"))
}

fn read(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|e| ApiError::invalid_request(format!("could not read the request body: {e}")))
}
