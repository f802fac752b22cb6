//! The proxy engine: the route table, choosing targets, upstream endpoints with their clients
//! and health probes, one attempt at a time, and failing over between attempts.
//!
//! [`forward`] is one request's whole journey upstream: pick a target (pick.rs), try it
//! (attempt.rs), and on a failure that leaves the request retry-safe, pick the next one, within
//! the request's attempt limit and the node's retry budget. Every attempt's outcome goes to its
//! upstream's actor by cast; nothing here awaits an actor.

mod attempt;
pub(crate) mod backends;
mod body;
pub(crate) mod forwarded;
pub(crate) mod hop;
mod pick;
mod probe;
mod routes;
pub(crate) mod tap;
pub(crate) mod translate;
mod upstream;

use std::collections::HashMap;
use std::sync::Arc;

use aigw_actors::{
    SessionKey, Sessions, SharedRetryBudget, UpstreamPolicy, UpstreamSpec, Upstreams,
};
use aigw_cluster::StateSnapshot;
use aigw_config::{UpstreamId, UpstreamKind};
use arc_swap::ArcSwap;
use axum::body::Body;
use axum::response::IntoResponse as _;
use bytes::Bytes;
use http::header::{HeaderMap, HeaderName};
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use tokio::time::Instant;

pub(crate) use backends::BackendTable;
pub(crate) use routes::{ModelRoute, RouteTable, RouteTarget};
pub(crate) use upstream::{HttpsClient, UpstreamEndpoint, build_client};

use crate::error::{ApiError, error_body};
pub(crate) use attempt::UpstreamCall;
use attempt::attempts_header;
pub(crate) use body::BoxError;
use pick::Picker;

/// How much of an upstream's error body we read to relay it.
const MAX_UPSTREAM_ERROR_BODY: usize = 64 * 1024;

/// Names the upstream that served a response (or gave the error relayed).
static X_AIGW_UPSTREAM: HeaderName = HeaderName::from_static("x-aigw-upstream");
/// How many upstream attempts the response took, the successful one included.
static X_AIGW_ATTEMPTS: HeaderName = HeaderName::from_static("x-aigw-attempts");

/// What the proxy engine works with: the routes and the actors' boards of the settings in
/// force (swapped together by `state::apply_settings`), and the node's limits on attempts.
/// Handlers hand it to [`forward`]; the engine never sees the rest of the node's state.
pub(crate) struct ProxyContext {
    /// Routes built from the settings, with the upstream clients they own.
    pub routes: ArcSwap<RouteTable>,
    /// Every upstream's published health, breaker and load; gossip's door in and out.
    pub upstreams: ArcSwap<Upstreams>,
    /// Sticky sessions' bindings (they outlive settings changes).
    pub sessions: Arc<Sessions>,
    /// MCP servers, agent backends and sandboxes.
    pub backends: ArcSwap<BackendTable>,
    /// Caps failover attempts node-wide.
    pub retry_budget: SharedRetryBudget,
    /// Upstream attempts per request, the first included.
    pub max_attempts: u32,
    /// A request that finds no target available tries the avoided ones (pick.rs).
    pub panic_mode: bool,
}

/// A request's answer and how it was obtained, for the request log.
pub(crate) struct Forwarded {
    pub response: Response<Body>,
    /// The upstream of the last attempt, if there was one.
    pub upstream: Option<Arc<str>>,
    /// The API that upstream speaks: what the answer's body is in.
    pub kind: Option<UpstreamKind>,
    pub attempts: u32,
    /// Each attempt, in order (for the call's record).
    pub tried: Vec<Tried>,
}

/// One upstream attempt: where it went and how it ended.
#[derive(Debug, Clone)]
pub(crate) struct Tried {
    pub upstream: Arc<str>,
    /// The upstream's model name (JSON-encoded, as spliced into the body).
    pub upstream_model: Option<Box<str>>,
    /// The upstream's status, when it answered.
    pub status: Option<u16>,
    /// Why it failed without an answer.
    pub error: Option<&'static str>,
    pub duration_ms: u64,
}

impl Tried {
    fn of(target: &RouteTarget, started: tokio::time::Instant) -> Self {
        Self {
            upstream: Arc::clone(&target.upstream.id),
            upstream_model: Some(target.model_json.clone()),
            status: None,
            error: None,
            duration_ms: started.elapsed().as_millis() as u64,
        }
    }
}

/// Forwards one request for `model` to `path` on the best available target, failing over to
/// the next on a connect error, a timeout before the response head, a 5xx or a 429, while
/// the request's attempt limit and the node's retry budget allow. `body_for` makes the body
/// for a target (its upstream model name spliced in). When every attempt fails, the client
/// gets the last error.
pub(crate) async fn forward(
    proxy: &ProxyContext,
    model: &str,
    route: &ModelRoute,
    path: &str,
    session: Option<SessionKey>,
    body_for: impl Fn(&RouteTarget) -> Bytes,
) -> Forwarded {
    forward_call(proxy, model, route, session, true, |target| {
        Some(UpstreamCall::post_json(path, body_for(target)))
    })
    .await
}

/// [`forward`] for any call: `call_for` makes the call for a target. A call whose body can be
/// sent only once (a streamed upload) is not `replayable`: it gets one attempt, since its
/// body is gone with the first.
pub(crate) async fn forward_call(
    proxy: &ProxyContext,
    model: &str,
    route: &ModelRoute,
    session: Option<SessionKey>,
    replayable: bool,
    mut call_for: impl FnMut(&RouteTarget) -> Option<UpstreamCall>,
) -> Forwarded {
    let sessions = &proxy.sessions;
    let bound = session.and_then(|s| sessions.bound_upstream(s));
    let mut picker = Picker::new(route, session, bound, proxy.panic_mode);
    proxy.retry_budget.record_request();
    let mut attempts = 0;
    let mut tried = Vec::new();
    let mut last: Option<(&RouteTarget, attempt::AttemptError)> = None;
    let max_attempts = if replayable { proxy.max_attempts } else { 1 };
    while attempts < max_attempts {
        let Some(pick::Pick {
            target,
            attempt: ticket,
            panic,
        }) = picker.next()
        else {
            break;
        };
        // An attempt on a target judged unavailable (panic mode) is extra load on an
        // upstream that may be struggling, like a retry: the budget bounds both.
        if (attempts > 0 || panic) && !proxy.retry_budget.try_retry() {
            tracing::debug!(model, panic, "retry budget spent; no further attempt");
            break;
        }
        let Some(call) = call_for(target) else {
            break;
        };
        attempts += 1;
        let started = tokio::time::Instant::now();
        match attempt::run_call(&target.upstream, ticket, call).await {
            Ok(response) => {
                if let Some(session) = session {
                    sessions.served(session, &target.upstream.id);
                }
                tried.push(Tried {
                    status: Some(response.status().as_u16()),
                    ..Tried::of(target, started)
                });
                return finish(response, Some(target), attempts, tried);
            }
            Err(error) => {
                tried.push(Tried {
                    status: match error.kind {
                        attempt::FailureKind::Status(status) => Some(status.as_u16()),
                        _ => None,
                    },
                    error: error.kind.label(),
                    ..Tried::of(target, started)
                });
                let fails_over = error.fails_over();
                tracing::debug!(
                    upstream = %target.upstream.id,
                    kind = ?error.kind,
                    fails_over,
                    "attempt failed"
                );
                last = Some((target, error));
                if !fails_over {
                    break;
                }
            }
        }
    }
    match last {
        Some((target, error)) => finish(error.error.into_response(), Some(target), attempts, tried),
        None => {
            let error = ApiError::NoUpstreamAvailable {
                model: model.to_owned(),
            };
            finish(error.into_response(), None, attempts, tried)
        }
    }
}

/// One call to a named upstream, not chosen by a model's route: a follow-up on a job that
/// lives there (a video). No failover: the job exists nowhere else. `None` when the upstream
/// is not in the current route table.
pub(crate) async fn call_upstream(
    proxy: &ProxyContext,
    upstream: &str,
    call: UpstreamCall,
) -> Option<Forwarded> {
    let routes = proxy.routes.load_full();
    let target = routes.target_on(upstream)?;
    // Even past an open breaker: the job exists on no other upstream, and its answer (or
    // failure) still feeds the breaker.
    let Some(ticket) = target.handle.begin(aigw_actors::Admission::Open) else {
        return Some(finish(
            ApiError::Internal.into_response(),
            Some(target),
            0,
            Vec::new(),
        ));
    };
    let started = tokio::time::Instant::now();
    let (response, status, error) = match attempt::run_call(&target.upstream, ticket, call).await {
        Ok(response) => {
            let status = response.status().as_u16();
            (response, Some(status), None)
        }
        Err(error) => {
            let status = match error.kind {
                attempt::FailureKind::Status(status) => Some(status.as_u16()),
                _ => None,
            };
            (error.error.into_response(), status, error.kind.label())
        }
    };
    let tried = vec![Tried {
        upstream_model: None,
        status,
        error,
        ..Tried::of(target, started)
    }];
    Some(finish(response, Some(target), 1, tried))
}

fn finish(
    mut response: Response<Body>,
    target: Option<&RouteTarget>,
    attempts: u32,
    tried: Vec<Tried>,
) -> Forwarded {
    let headers = response.headers_mut();
    if let Some(target) = target {
        headers.insert(X_AIGW_UPSTREAM.clone(), target.upstream.id_header.clone());
    }
    headers.insert(X_AIGW_ATTEMPTS.clone(), attempts_header(attempts));
    Forwarded {
        response,
        upstream: target.map(|t| Arc::clone(&t.upstream.id)),
        kind: target.map(|t| t.upstream.kind),
        attempts,
        tried,
    }
}

/// Every upstream's endpoint (client, credentials, timeouts), by id.
pub(crate) type Endpoints = HashMap<UpstreamId, Arc<UpstreamEndpoint>>;

/// The upstream endpoints of a snapshot, and the actor specs (settings and probe) for them.
pub(crate) fn endpoints(
    snapshot: &StateSnapshot,
) -> Result<(Endpoints, Vec<UpstreamSpec>), String> {
    let mut endpoints = HashMap::new();
    let mut specs = Vec::new();
    for settings in &snapshot.upstreams {
        let endpoint = UpstreamEndpoint::new(settings)?;
        specs.push(UpstreamSpec {
            id: endpoint.id.clone(),
            policy: UpstreamPolicy::of(settings),
            probe: Arc::new(endpoint.probe(&settings.health.path)?),
        });
        endpoints.insert(settings.id.clone(), Arc::new(endpoint));
    }
    Ok((endpoints, specs))
}

/// An upstream's error, as OpenAI's error JSON with the status the client gets: an `openai`
/// upstream's own body when it already is one, otherwise a wrapper that quotes the start of
/// what it said; another kind's error through its adapter.
async fn relay_error(
    kind: UpstreamKind,
    status: StatusCode,
    incoming: hyper::body::Incoming,
    upstream: &str,
    deadline: Instant,
) -> (StatusCode, Bytes) {
    let collected = tokio::time::timeout_at(
        deadline,
        Limited::new(incoming, MAX_UPSTREAM_ERROR_BODY).collect(),
    )
    .await;
    let text = match collected {
        Ok(Ok(body)) => body.to_bytes(),
        _ => Bytes::new(),
    };
    if kind == UpstreamKind::Anthropic {
        return crate::providers::anthropic::translate_error(status, &text, upstream);
    }
    let is_openai_error = serde_json::from_slice::<serde_json::Value>(&text)
        .ok()
        .is_some_and(|v| v.get("error").is_some_and(|e| e.is_object()));
    if is_openai_error {
        return (status, text);
    }
    let quoted: String = String::from_utf8_lossy(&text).chars().take(512).collect();
    let message = format!("upstream `{upstream}` answered {status}: {}", quoted.trim());
    let kind = if status.is_server_error() {
        "server_error"
    } else {
        "invalid_request_error"
    };
    (status, error_body(&message, kind, None, "upstream_error"))
}

/// The upstream's response headers worth passing on: not hop-by-hop ones (hop.rs, the same
/// filter as pass-through), and not those the server sets itself for the body it actually
/// sends.
fn relayed_headers(upstream: &HeaderMap) -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(upstream.len() + 2);
    for (name, value) in upstream {
        if !matches!(name.as_str(), "content-length" | "date" | "server") {
            headers.append(name.clone(), value.clone());
        }
    }
    hop::strip_hop_by_hop(&mut headers);
    headers
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn relayed_headers_drop_those_the_connection_header_names() {
        let mut upstream = HeaderMap::new();
        for (name, value) in [
            ("connection", "X-Upstream-Hop, keep-alive"),
            ("x-upstream-hop", "internal"),
            ("proxy-connection", "keep-alive"),
            ("content-type", "application/json"),
            ("x-request-id", "req-1"),
        ] {
            upstream.append(name, HeaderValue::from_static(value));
        }
        let relayed = relayed_headers(&upstream);
        let left: Vec<&str> = relayed.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["content-type", "x-request-id"]);
    }
}
