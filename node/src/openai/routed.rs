//! The flow every model endpoint shares once the caller is authenticated: the model's route
//! for this key, the sticky session, and the forward with failover. `route_json` is the
//! whole of it for a JSON body ("JSON body with a model -> routed POST to PATH"); `route_for`
//! is the part a multipart endpoint uses after finding its model in the stream.

use std::sync::Arc;

use aigw_actors::SessionKey;
use aigw_cluster::KeyRecord;
use bytes::Bytes;
use http::HeaderMap;

use super::body::RoutingFields;
use crate::error::ApiError;
use crate::proxy::{self, Forwarded, ModelRoute, RouteTable};
use crate::quota::Admission;
use crate::records::CallFacts;
use crate::state::AppState;
use crate::tokens::Estimate;

/// Names a sticky session explicitly; without it, the body's `user` does.
const SESSION_HEADER: &str = "x-session-id";

/// What a routed request costs against the key's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cost {
    /// One call; no tokens.
    Call,
    /// One call and the embedding input's tokens.
    EmbeddingInput,
}

/// Routes a JSON body with a `model` to `path` on one of the model's targets (the upstream
/// model name spliced in), with failover, after admitting it against the key's limits. 400 for
/// bad JSON or model, 404 for a model the key may not use or that has no route, 429 when the
/// key's limits refuse it.
pub(crate) async fn route_json(
    state: &AppState,
    key: &KeyRecord,
    headers: &HeaderMap,
    body: &Bytes,
    path: &str,
    cost: Cost,
    call: Option<&CallFacts>,
) -> Result<(Forwarded, Option<Admission>), ApiError> {
    if let Some(call) = call {
        call.with(|f| f.request_body = Some(body.clone()));
    }
    let fields = RoutingFields::parse(body)?;
    if let Some(call) = call {
        call.with(|f| f.model = Some(fields.model.clone()));
    }
    let routes = state.proxy.routes.load_full();
    let route = route_for(&routes, key, &fields.model, call)?;
    let admission = state
        .admit(key, |exact| match cost {
            Cost::Call => Estimate::calls_only(),
            Cost::EmbeddingInput => {
                let counting = if exact {
                    route.tokens
                } else {
                    route.tokens.upper_bound()
                };
                crate::tokens::estimate_embeddings(body, &counting)
            }
        })
        .await?;
    let session = sticky_session(route, &fields.model, headers, fields.user.as_deref());
    let forwarded = proxy::forward(
        &state.proxy,
        &fields.model,
        route,
        path,
        session,
        |target| fields.splice_model(body, &target.model_json),
    )
    .await;
    tracing::info!(
        key = %key.id,
        model = %fields.model,
        endpoint = path,
        upstream = forwarded.upstream.as_deref().unwrap_or("-"),
        attempts = forwarded.attempts,
        status = forwarded.response.status().as_u16(),
        "routed request"
    );
    let mut forwarded = forwarded;
    if let Some(call) = call {
        call.forwarded(std::mem::take(&mut forwarded.tried));
    }
    Ok((forwarded, admission))
}

/// The route of `model` if `key` may use it; 404 otherwise, the same answer for a model that
/// does not exist as for one the key may not see.
/// With `call`, the model's capture policy goes into the call's record.
pub(crate) fn route_for<'r>(
    routes: &'r Arc<RouteTable>,
    key: &KeyRecord,
    model: &str,
    call: Option<&CallFacts>,
) -> Result<&'r ModelRoute, ApiError> {
    if !key.models.allows(model) {
        return Err(ApiError::ModelNotFound(model.to_owned()));
    }
    let route = routes
        .get(model)
        .ok_or_else(|| ApiError::ModelNotFound(model.to_owned()))?;
    if let Some(call) = call
        && route.capture.is_some()
    {
        call.with(|f| f.model_capture = route.capture);
    }
    Ok(route)
}

/// The sticky session of a request, for a model whose strategy is `sticky`.
pub(crate) fn sticky_session(
    route: &ModelRoute,
    model: &str,
    headers: &HeaderMap,
    user: Option<&str>,
) -> Option<SessionKey> {
    match route.strategy {
        aigw_config::Strategy::Sticky => {
            session_id(headers, user).map(|id| SessionKey::new(model, id))
        }
        _ => None,
    }
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
