//! The OpenAI-compatible API: one file per endpoint, plus authentication, request-body reading
//! and the error type every layer converts into.
//!
//! A handler reads like the request flow in docs/ARCHITECTURE.md: authenticate, read and parse
//! only what routing needs, route, forward, relay.

mod auth;
mod body;
mod chat;
pub(crate) mod error;
mod fallback;
mod models;

pub(crate) use error::{ApiError, UpstreamAnswer, error_body};

use axum::Router;
use axum::routing::{get, post};

use crate::state::AppState;

pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat::create))
        .route("/v1/models", get(models::list))
        .fallback(fallback::unknown_url)
        .method_not_allowed_fallback(fallback::method_not_allowed)
        .with_state(state)
}
