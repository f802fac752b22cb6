//! The mock's routes, plus the two answers that need no handler file: `/health` and the
//! static model list.

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::extract::State;
use axum::response::Response;
use axum::routing::{get, post};
use http::StatusCode;

use super::error::{ApiError, json_response};
use super::state::MockState;
use super::{anthropic, audio, chat, control, embeddings, images, videos, wire};

/// Uploads the mock accepts (the admission reads up to 64 MiB too).
const MAX_UPLOAD_BYTES: usize = 64 * 1024 * 1024;

pub(crate) fn build(state: Arc<MockState>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat::completions))
        .route("/v1/messages", post(anthropic::messages))
        .route("/v1/embeddings", post(embeddings::create))
        .route("/v1/images/generations", post(images::generate))
        .route(
            "/v1/audio/transcriptions",
            post(audio::transcribe).layer(DefaultBodyLimit::max(MAX_UPLOAD_BYTES)),
        )
        .route(
            "/v1/videos",
            post(videos::create)
                .get(videos::list)
                .layer(DefaultBodyLimit::max(MAX_UPLOAD_BYTES)),
        )
        .route(
            "/v1/videos/{id}",
            get(videos::retrieve).delete(videos::delete),
        )
        .route("/v1/videos/{id}/content", get(videos::content))
        .route("/v1/models", get(models))
        .route("/health", get(health))
        .route(
            "/mock/control",
            get(control::get_behavior)
                .put(control::put_behavior)
                .patch(control::patch_behavior),
        )
        .route("/mock/stats", get(control::stats))
        .route("/mock/step", post(control::step))
        .route("/mock/last_request", get(control::last_request))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

async fn health(State(state): State<Arc<MockState>>) -> Response {
    if state.prepared().behavior.unhealthy {
        json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            wire::HEALTH_UNHEALTHY.clone(),
        )
    } else {
        json_response(StatusCode::OK, wire::HEALTH_OK.clone())
    }
}

async fn models() -> Response {
    json_response(StatusCode::OK, wire::MODELS.clone())
}

async fn not_found(uri: http::Uri) -> ApiError {
    ApiError::not_found(format!("aigw-mock has no route {}", uri.path()))
}

async fn method_not_allowed() -> ApiError {
    ApiError::method_not_allowed()
}
