//! The OpenAI-compatible API: one file per endpoint, plus authentication, request-body reading
//! and the error type every layer converts into.
//!
//! A handler reads like the request flow in docs/ARCHITECTURE.md: authenticate, read and parse
//! only what routing needs, route, forward, relay.

mod audio;
mod auth;
mod body;
mod chat;
mod embeddings;
pub(crate) mod fallback;
mod images;
mod models;
mod multipart;
pub(crate) mod routed;
mod videos;

pub(crate) use auth::Caller;

use axum::Router;
use axum::routing::{get, post};

use crate::state::AppState;

/// The OpenAI API's routes; server.rs mounts them beside the pass-through routes.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/chat/completions", post(chat::create))
        .route("/v1/embeddings", post(embeddings::create))
        .route("/v1/images/generations", post(images::generate))
        .route("/v1/audio/transcriptions", post(audio::transcribe))
        .route("/v1/videos", post(videos::create).get(videos::list))
        .route(
            "/v1/videos/{id}",
            get(videos::retrieve).delete(videos::delete),
        )
        .route("/v1/videos/{id}/content", get(videos::content))
        .route("/v1/models", get(models::list))
}
