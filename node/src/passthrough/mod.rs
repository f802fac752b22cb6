//! Pass-through capabilities: `/v1/mcp/{server}/...` (the MCP proxy, mcp.rs),
//! `/v1/agent/{type}/...` and `/v1/sandboxes/{name}/...` (HTTP, SSE and WebSocket relayed to
//! configured backends).
//!
//! Every request is authenticated with the gateway key like `/v1/*`, admitted against the
//! key's call quota, relayed with the backend's configured credential headers injected and
//! the client's own `Authorization` and hop-by-hop headers dropped (hop.rs), and counted as
//! one call of its capability in the usage meter. Bodies stream both ways as they come.
//!
//! A WebSocket upgrade may carry the gateway key as `?api_key=KEY` instead of the header,
//! since browsers cannot set headers on a WebSocket; the parameter is removed before the
//! request goes on. Nothing here is shared between nodes: any node serves any request.
//!
//! A recorded call's request body is teed as it streams to the backend (its frames kept by
//! reference for the record, [`CallFacts::tee_request`]); the records layer keeps the
//! response's frames.

mod forward;
mod hop;
mod mcp;
mod query;
mod sse_endpoint;
mod websocket;

use axum::Router;
use axum::extract::{FromRequestParts, Request, State};
use axum::response::Response;
use axum::routing::any;
use http::header::{self, HeaderMap};
use http::request::Parts;

use aigw_cluster::KeyRecord;

use crate::error::ApiError;
use crate::openai::Caller;
use crate::proxy::backends::Kind;
use crate::records::CallFacts;
use crate::state::AppState;
use crate::usage::UsageRecord;

/// The routes of the pass-through capabilities.
pub(crate) fn routes() -> Router<AppState> {
    let mut router = Router::new();
    for (kind, handler) in [
        (Kind::Mcp, any(mcp::handle)),
        (Kind::Agent, any(agent)),
        (Kind::Sandbox, any(sandbox)),
    ] {
        let prefix = kind.prefix();
        router = router
            .route(&format!("{prefix}{{name}}"), handler.clone())
            .route(&format!("{prefix}{{name}}/"), handler.clone())
            .route(&format!("{prefix}{{name}}/{{*rest}}"), handler);
    }
    router
}

async fn agent(State(state): State<AppState>, request: Request) -> Result<Response, ApiError> {
    pass(&state, Kind::Agent, request).await
}

async fn sandbox(State(state): State<AppState>, request: Request) -> Result<Response, ApiError> {
    pass(&state, Kind::Sandbox, request).await
}

/// An agent or sandbox request: HTTP (SSE included) or a WebSocket upgrade, relayed as is.
async fn pass(state: &AppState, kind: Kind, request: Request) -> Result<Response, ApiError> {
    let (mut parts, body) = request.into_parts();
    let target = Target::of(kind, &parts.uri)?;
    let websocket = websocket::is_upgrade(&parts.headers);
    let key = authenticate(state, &mut parts, websocket).await?;
    let backends = state.proxy.backends.load_full();
    let backend = backends.get(kind, &target.name)?;
    let admission = admit_call(state, &key).await?;
    // The gateway key never goes further, whichever way it came.
    let query = query::without(target.query.as_deref(), query::API_KEY);
    let answer = if websocket {
        let uri = backend.ws_uri(&target.rest, query.as_deref())?;
        websocket::relay(state, parts, &backend, uri).await
    } else {
        let uri = backend.uri(&target.rest, query.as_deref())?;
        let headers = hop::to_backend(&parts, &backend);
        let body = recorded(&parts, body);
        forward::send(&backends.client, &backend, parts.method, uri, headers, body).await
    };
    finish(state, &key, kind, &target, admission, answer)
}

/// The request body on its way to the backend, its frames kept for the call's record when
/// the call is recorded.
fn recorded(parts: &Parts, body: axum::body::Body) -> axum::body::Body {
    match CallFacts::of(&parts.extensions) {
        Some(call) => call.tee_request(body),
        None => body,
    }
}

/// What a pass-through path names: the backend, and the rest of the path and the query that
/// go to it.
struct Target {
    name: String,
    /// Empty or starting with `/`, as the client wrote it (still percent-encoded).
    rest: String,
    query: Option<String>,
}

impl Target {
    fn of(kind: Kind, uri: &http::Uri) -> Result<Self, ApiError> {
        // The router only sends paths under the prefix here.
        let after = uri
            .path()
            .strip_prefix(kind.prefix())
            .ok_or(ApiError::Internal)?;
        let (name, rest) = after.split_at(after.find('/').unwrap_or(after.len()));
        // The rest is appended to the backend's base path: no segment may climb out of it,
        // however it is encoded.
        if let Some(segment) = rest.split('/').find(|s| climbs(s)) {
            return Err(ApiError::InvalidParam {
                param: "path",
                message: format!(
                    "The path segment {:?} is not allowed in a pass-through path.",
                    crate::error::echo(segment)
                ),
            });
        }
        Ok(Self {
            name: name.to_owned(),
            rest: rest.to_owned(),
            query: uri.query().map(str::to_owned),
        })
    }
}

/// Whether a backend could read `segment` as `.` or `..`, or as more than one segment: after
/// percent-decoding, once or twice (a backend or a proxy in front of it may decode again),
/// and with any `;` path parameters dropped, as servlet containers do (`..;x` is `..`).
fn climbs(segment: &str) -> bool {
    let once = query::percent_decode(segment);
    let twice = query::percent_decode(&once);
    [once, twice].iter().any(|decoded| {
        let bare = decoded.split(';').next().unwrap_or_default();
        bare == "." || bare == ".." || decoded.contains(['/', '\\'])
    })
}

/// The calling key, from `Authorization: Bearer`, or for a WebSocket upgrade without that
/// header from the `api_key` query parameter.
async fn authenticate(
    state: &AppState,
    parts: &mut Parts,
    websocket: bool,
) -> Result<KeyRecord, ApiError> {
    if websocket && !parts.headers.contains_key(header::AUTHORIZATION) {
        let secret = query::value(parts.uri.query(), query::API_KEY);
        if let Some(value) = secret.as_deref().and_then(websocket::bearer) {
            parts.headers.insert(header::AUTHORIZATION, value);
        }
    }
    let Caller(key) = Caller::from_request_parts(parts, state).await?;
    Ok(key)
}

/// Admits one call of `key` against its limits (none: always admitted). Pass-through calls
/// count calls, never tokens.
async fn admit_call(
    state: &AppState,
    key: &KeyRecord,
) -> Result<Option<crate::quota::Admission>, ApiError> {
    state
        .admit(key, |_| crate::tokens::Estimate::calls_only())
        .await
}

/// Logs the exchange, counts the call, and settles the admission once the backend answered
/// (the call counts; a long stream or socket does not hold the key's concurrency).
fn finish(
    state: &AppState,
    key: &KeyRecord,
    kind: Kind,
    target: &Target,
    mut admission: Option<crate::quota::Admission>,
    answer: Result<Response, ApiError>,
) -> Result<Response, ApiError> {
    let rate_headers: HeaderMap = admission
        .as_mut()
        .map(crate::quota::Admission::take_headers)
        .unwrap_or_default();
    if let Some(admission) = admission {
        admission.settle(Some(crate::quota::tap::Usage::default()));
    }
    tracing::info!(
        key = %key.id,
        capability = kind.what(),
        backend = %target.name,
        status = answer.as_ref().map_or_else(|e| e.status(), |r| r.status()).as_u16(),
        "pass-through request"
    );
    let mut response = answer?;
    state
        .usage
        .record(&key.id, kind.capability(), &UsageRecord::default());
    response.headers_mut().extend(rate_headers);
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_path_segment_climbs_out_of_the_backends_base_path() {
        for path in [
            "/v1/agent/coder/../../admin",
            "/v1/agent/coder/%2e%2E/admin",
            "/v1/agent/coder/a/..%2f..%2fadmin",
            "/v1/agent/coder/a%5c..",
            "/v1/agent/coder/./x",
            // Path parameters: some servlet containers drop `;...` and then see `..`.
            "/v1/agent/coder/..;/admin",
            "/v1/agent/coder/a/..;jsessionid=1/b",
            "/v1/agent/coder/%2e%2e;/admin",
            "/v1/agent/coder/..%3b/admin",
            "/v1/agent/coder/.%3B/x",
            "/v1/agent/coder/.;x=1/x",
            // Encoded twice, for a backend that decodes twice.
            "/v1/agent/coder/%252e%252e/admin",
            "/v1/agent/coder/..%252fadmin",
        ] {
            let uri: http::Uri = path.parse().unwrap();
            let refused = Target::of(Kind::Agent, &uri);
            assert!(
                matches!(refused, Err(ApiError::InvalidParam { param: "path", .. })),
                "{path}"
            );
        }
        let uri: http::Uri = "/v1/agent/coder/runs/..x/%2e.b/a;b=1/...;".parse().unwrap();
        assert_eq!(
            Target::of(Kind::Agent, &uri).unwrap().rest,
            "/runs/..x/%2e.b/a;b=1/...;"
        );
    }

    #[test]
    fn a_target_is_the_name_then_the_rest_of_the_path_and_the_query() {
        let uri: http::Uri = "/v1/mcp/fs/messages/?session_id=1".parse().unwrap();
        let target = Target::of(Kind::Mcp, &uri).unwrap();
        assert_eq!(
            (target.name.as_str(), target.rest.as_str()),
            ("fs", "/messages/")
        );
        assert_eq!(target.query.as_deref(), Some("session_id=1"));
        let uri: http::Uri = "/v1/agent/coder".parse().unwrap();
        let target = Target::of(Kind::Agent, &uri).unwrap();
        assert_eq!((target.name.as_str(), target.rest.as_str()), ("coder", ""));
        assert_eq!(target.query, None);
    }
}
