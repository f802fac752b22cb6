//! `GET /v1/models`: the models the calling key may use, in OpenAI's list shape.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::auth::Caller;
use crate::state::AppState;

pub(super) async fn list(State(state): State<AppState>, Caller(key): Caller) -> Response {
    let routes = state.proxy.routes.load();
    let data: Vec<_> = routes
        .names()
        .filter(|name| key.models.allows(name))
        .map(|name| json!({"id": name, "object": "model", "created": 0, "owned_by": "aigw"}))
        .collect();
    Json(json!({"object": "list", "data": data})).into_response()
}
