//! `POST /v1/chat/completions`, streaming and not.

use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use http::HeaderMap;

use super::ApiError;
use super::auth::Caller;
use super::body::{RoutingFields, read_limited};
use crate::proxy;
use crate::state::AppState;

pub(super) async fn create(
    State(state): State<AppState>,
    Caller(key): Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = read_limited(&headers, body, state.max_body_bytes).await?;
    let fields = RoutingFields::parse(&body)?;
    if !key.models.allows(&fields.model) {
        return Err(ApiError::ModelNotFound(fields.model));
    }
    let routes = state.routes.load();
    let target = routes
        .get(&fields.model)
        .and_then(|route| route.pick())
        .ok_or_else(|| ApiError::ModelNotFound(fields.model.clone()))?;
    let upstream_body = fields.splice_model(&body, &target.model_json);
    let response = proxy::forward_json(target, "/chat/completions", upstream_body).await;
    tracing::info!(
        key = %key.id,
        model = %fields.model,
        upstream = %target.upstream.id,
        stream = fields.stream,
        status = response.as_ref().map_or_else(|e| e.status(), |r| r.status()).as_u16(),
        "chat completion"
    );
    response
}
