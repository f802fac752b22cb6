//! `POST /v1/chat/completions`, streaming and not.

use aigw_actors::SessionKey;
use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use http::HeaderMap;

use super::ApiError;
use super::auth::Caller;
use super::body::{RoutingFields, read_limited};
use crate::proxy;
use crate::state::AppState;

/// Names a sticky session explicitly; without it, the body's `user` does.
const SESSION_HEADER: &str = "x-session-id";

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
    let routes = state.routes.load_full();
    let route = routes
        .get(&fields.model)
        .ok_or_else(|| ApiError::ModelNotFound(fields.model.clone()))?;
    let session = match route.strategy {
        aigw_config::Strategy::Sticky => session_id(&headers, fields.user.as_deref())
            .map(|id| SessionKey::new(&fields.model, id)),
        _ => None,
    };
    let forwarded = proxy::forward(
        &state,
        &fields.model,
        route,
        "/chat/completions",
        session,
        |target| fields.splice_model(&body, &target.model_json),
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
    Ok(forwarded.response)
}

/// The session a request belongs to: the `x-session-id` header, else the body's `user`.
fn session_id<'a>(headers: &'a HeaderMap, user: Option<&'a str>) -> Option<&'a str> {
    headers
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|id| !id.is_empty())
        .or(user.filter(|u| !u.is_empty()))
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn the_session_header_wins_over_the_user_field() {
        let mut headers = HeaderMap::new();
        assert_eq!(session_id(&headers, Some("alice")), Some("alice"));
        assert_eq!(session_id(&headers, Some("")), None);
        assert_eq!(session_id(&headers, None), None);
        headers.insert(SESSION_HEADER, HeaderValue::from_static("conv-9"));
        assert_eq!(session_id(&headers, Some("alice")), Some("conv-9"));
        headers.insert(SESSION_HEADER, HeaderValue::from_static(" "));
        assert_eq!(session_id(&headers, Some("alice")), Some("alice"));
    }
}
