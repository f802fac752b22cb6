//! `/v1/videos`: asynchronous video jobs. Create is routed by model like any model endpoint
//! (multipart as the SDKs send it, streamed through; or JSON). The job then lives on the
//! upstream that took it, so the id the client gets is signed_id.rs's: it names that upstream
//! and the upstream's own id, for this key. Retrieve, content and delete go straight to that
//! upstream from any node with no lookup; an id altered, forged or used by another key is 404.
//!
//! An upstream lists every job made with its credential, whoever asked the gateway. So a
//! create records, through Raft, which key made the job (`Command::RecordVideo`, awaited before
//! the create answers), and list asks every upstream serving a model the key may use, keeps
//! only the jobs recorded as the key's, and merges them. List reads the owners after a
//! linearizable read, so a job created through any node a moment ago is listed; a node cut
//! off from the majority lists from its own applied state. A delete forgets its entry.
//! Video seconds (`seconds` of the create request, default 4) are metered on create.

use aigw_cluster::{Command, KeyId, VideoJob, unix_now};
use axum::Extension;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderValue, Method};
use http_body_util::{BodyExt, Limited};
use serde_json::Value;

use super::auth::Caller;
use super::body::read_limited;
use super::multipart::Upload;
use super::routed::{Cost, route_for, route_json};
use crate::error::ApiError;
use crate::proxy::{self, Forwarded, UpstreamCall};
use crate::quota::{self, Admission, tap::Usage};
use crate::records::CallFacts;
use crate::state::AppState;
use crate::tokens::Estimate;
use crate::usage::{Capability, UsageRecord};

/// The prefix of the ids handed to clients.
const ID_PREFIX: &str = "video";
/// Largest job or list JSON read to re-sign its ids.
const MAX_JOB_JSON: usize = 4 * 1024 * 1024;
/// OpenAI's default clip length.
const DEFAULT_SECONDS: f64 = 4.0;

pub(super) async fn create(
    State(state): State<AppState>,
    Caller(key): Caller,
    call: Option<Extension<CallFacts>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let call = call.map(|Extension(call)| call);
    let is_json = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let (forwarded, seconds, admission) = if is_json {
        let body = read_limited(&headers, body, state.max_body_bytes).await?;
        let seconds = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| seconds_of(v.get("seconds")?));
        let (forwarded, admission) = route_json(
            &state,
            &key,
            &headers,
            &body,
            "/videos",
            Cost::Call,
            call.as_ref(),
        )
        .await?;
        (forwarded, seconds, admission)
    } else {
        let form = call.as_ref().map(CallFacts::form);
        let mut upload = Upload::begin(&headers, body, state.max_upload_bytes, form).await?;
        let routes = state.proxy.routes.load_full();
        let route = route_for(&routes, &key, &upload.model, call.as_ref())?;
        let admission = state.admit(&key, |_| Estimate::calls_only()).await?;
        let seconds = upload.field("seconds").and_then(|s| s.trim().parse().ok());
        let uploaded = upload.state();
        let model = upload.model.clone();
        let forwarded = proxy::forward_call(&state.proxy, &model, route, None, false, |target| {
            upload.take_call("/videos", target)
        })
        .await;
        let mut forwarded = forwarded;
        if let Some(call) = &call {
            call.with(|f| f.model = Some(model.clone()));
            call.forwarded(std::mem::take(&mut forwarded.tried));
        }
        // Whatever the failed attempt answered: the client's form is at fault.
        if let Some(refused) = uploaded.refused() {
            return Err(refused);
        }
        if uploaded.exceeded() {
            return Err(ApiError::BodyTooLarge {
                limit: state.max_upload_bytes,
            });
        }
        (forwarded, seconds, admission)
    };
    tracing::info!(
        key = %key.id,
        upstream = forwarded.upstream.as_deref().unwrap_or("-"),
        status = forwarded.response.status().as_u16(),
        "video create"
    );
    if forwarded.response.status().is_success() {
        let record = UsageRecord {
            video_seconds: Some(seconds.unwrap_or(DEFAULT_SECONDS)),
            ..UsageRecord::default()
        };
        state.usage.record(&key.id, Capability::Videos, &record);
        if let Some(call) = &call {
            call.used(&record);
        }
    }
    let answer = async {
        let job = match job_of(forwarded).await? {
            Ok(job) => job,
            Err(response) => return Ok(response),
        };
        record_owner(&state, &key.id, &job).await;
        Ok(signed(&state, key.id.as_str(), job))
    };
    settled(admission, answer.await)
}

pub(super) async fn retrieve(
    State(state): State<AppState>,
    Caller(key): Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (upstream, job) = open_id(&state, key.id.as_str(), &id)?;
    let admission = state.admit(&key, |_| Estimate::calls_only()).await?;
    let forwarded = follow_up(&state, &upstream, Method::GET, format!("/videos/{job}")).await?;
    settled(admission, resign(&state, key.id.as_str(), forwarded).await)
}

pub(super) async fn content(
    State(state): State<AppState>,
    Caller(key): Caller,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let (upstream, job) = open_id(&state, key.id.as_str(), &id)?;
    let admission = state.admit(&key, |_| Estimate::calls_only()).await?;
    let path = match query {
        Some(query) => format!("/videos/{job}/content?{query}"),
        None => format!("/videos/{job}/content"),
    };
    let forwarded = follow_up(&state, &upstream, Method::GET, path).await;
    settled(admission, forwarded.map(|f| f.response))
}

pub(super) async fn delete(
    State(state): State<AppState>,
    Caller(key): Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (upstream, job) = open_id(&state, key.id.as_str(), &id)?;
    let admission = state.admit(&key, |_| Estimate::calls_only()).await?;
    let forwarded = follow_up(&state, &upstream, Method::DELETE, format!("/videos/{job}")).await?;
    if forwarded.response.status().is_success()
        && let Some(cluster) = state.cluster_node.get().cloned()
    {
        // Only bookkeeping: the upstream no longer lists the job, so the answer need not wait.
        let command = Command::ForgetVideo {
            key: key.id.clone(),
            job: VideoJob { upstream, job },
        };
        tokio::spawn(async move {
            if let Err(error) = cluster.write(command).await {
                tracing::warn!(%error, "a deleted video job's owner entry stays until it ages out");
            }
        });
    }
    settled(admission, resign(&state, key.id.as_str(), forwarded).await)
}

pub(super) async fn list(
    State(state): State<AppState>,
    Caller(key): Caller,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let admission = state.admit(&key, |_| Estimate::calls_only()).await?;
    // `after` names a job by its gateway id, which no upstream knows; the rest passes.
    let query: Vec<&str> = query
        .as_deref()
        .unwrap_or("")
        .split('&')
        .filter(|p| p.starts_with("limit=") || p.starts_with("order="))
        .collect();
    let path = if query.is_empty() {
        "/videos".to_owned()
    } else {
        format!("/videos?{}", query.join("&"))
    };
    if let Some(cluster) = state.cluster_node.get()
        && let Err(error) = cluster.linearizable_read().await
    {
        tracing::warn!(%error, "listing video jobs from this node's applied state");
    }
    let owners = state.cluster.load().videos.clone();
    let routes = state.proxy.routes.load_full();
    let mut upstreams: Vec<String> = Vec::new();
    for name in routes.names() {
        let Some(route) = routes.get(name).filter(|_| key.models.allows(name)) else {
            continue;
        };
        for target in &route.targets {
            if !upstreams.iter().any(|u| **u == *target.upstream.id) {
                upstreams.push(target.upstream.id.to_string());
            }
        }
    }
    let mut data = Vec::new();
    let mut has_more = false;
    for upstream in upstreams {
        let Some(forwarded) =
            proxy::call_upstream(&state.proxy, &upstream, call(Method::GET, path.clone())).await
        else {
            continue;
        };
        if !forwarded.response.status().is_success() {
            continue; // an upstream that serves no videos
        }
        let Ok(mut page) = json_of(forwarded.response).await else {
            continue;
        };
        has_more |= page
            .get("has_more")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if let Some(Value::Array(jobs)) = page.get_mut("data") {
            for mut job in jobs.drain(..) {
                let owned = job
                    .get("id")
                    .and_then(Value::as_str)
                    .is_some_and(|id| owners.owns(&key.id, &upstream, id));
                if !owned {
                    continue; // another key's job, or one made around the gateway
                }
                sign_job(&state, key.id.as_str(), &upstream, &mut job);
                data.push(job);
            }
        }
    }
    let first_id = data.first().and_then(|j| j.get("id")).cloned();
    let last_id = data.last().and_then(|j| j.get("id")).cloned();
    let list = serde_json::json!({
        "object": "list", "data": data, "first_id": first_id, "last_id": last_id,
        "has_more": has_more,
    });
    settled(admission, Ok(axum::Json(list).into_response()))
}

/// Every video call counts as one call against the key's limits, settled when its answer ends
/// (a refusal or an error before the upstream answered keeps the call counted).
fn settled(
    admission: Option<Admission>,
    response: Result<Response, ApiError>,
) -> Result<Response, ApiError> {
    Ok(quota::settle_on_end(admission, response?, |_| {
        Some(Usage::default())
    }))
}

fn call(method: Method, path_and_query: String) -> UpstreamCall {
    UpstreamCall {
        method,
        path_and_query,
        content_type: None,
        body: Body::empty(),
    }
}

/// The upstream and its job id that `id` names, if it is this key's.
fn open_id(state: &AppState, key_id: &str, id: &str) -> Result<(String, String), ApiError> {
    let unknown = || ApiError::UnknownId {
        what: "video",
        id: id.to_owned(),
    };
    let named = state
        .ids
        .verify(ID_PREFIX, key_id, id)
        .ok_or_else(unknown)?;
    // The upstream's id goes into a path: only what is safe there unescaped.
    let safe = named
        .upstream_id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if !safe {
        return Err(unknown());
    }
    Ok((named.upstream, named.upstream_id))
}

async fn follow_up(
    state: &AppState,
    upstream: &str,
    method: Method,
    path: String,
) -> Result<Forwarded, ApiError> {
    proxy::call_upstream(&state.proxy, upstream, call(method, path))
        .await
        .ok_or_else(|| ApiError::UpstreamUnreachable {
            upstream: upstream.to_owned(),
            detail: "it is no longer in the cluster's settings".to_owned(),
        })
}

/// A 2xx JSON job answered by a named upstream, parsed.
struct Job {
    parts: http::response::Parts,
    upstream: std::sync::Arc<str>,
    body: Value,
}

/// The answer's job, or the answer as it came when it is not a 2xx from a named upstream.
async fn job_of(forwarded: Forwarded) -> Result<Result<Job, Response>, ApiError> {
    let Some(upstream) = forwarded.upstream.clone() else {
        return Ok(Err(forwarded.response));
    };
    if !forwarded.response.status().is_success() {
        return Ok(Err(forwarded.response));
    }
    let (parts, body) = forwarded.response.into_parts();
    let body = json_of(Response::new(body)).await?;
    Ok(Ok(Job {
        parts,
        upstream,
        body,
    }))
}

/// The answer with the job's ids replaced by gateway ids (a 2xx JSON job); anything else as
/// it came.
async fn resign(
    state: &AppState,
    key_id: &str,
    forwarded: Forwarded,
) -> Result<Response, ApiError> {
    Ok(match job_of(forwarded).await? {
        Ok(job) => signed(state, key_id, job),
        Err(response) => response,
    })
}

fn signed(state: &AppState, key_id: &str, job: Job) -> Response {
    let Job {
        mut parts,
        upstream,
        body: mut job,
    } = job;
    sign_job(state, key_id, &upstream, &mut job);
    parts.headers.remove(http::header::CONTENT_LENGTH);
    parts
        .headers
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Response::from_parts(parts, Body::from(job.to_string()))
}

/// Records `key` as the creator of `job` and waits until the cluster applied it, so the key's
/// next list, on any node, shows it. When the write fails (no quorum within the write
/// timeout) the create still answers: the job exists and its id works; it is listed only if
/// the write commits later.
async fn record_owner(state: &AppState, key: &KeyId, job: &Job) {
    let (Some(cluster), Some(id)) = (
        state.cluster_node.get(),
        job.body.get("id").and_then(Value::as_str),
    ) else {
        return;
    };
    let command = Command::RecordVideo {
        key: key.clone(),
        job: VideoJob {
            upstream: job.upstream.to_string(),
            job: id.to_owned(),
        },
        at: unix_now(),
    };
    if let Err(error) = cluster.write(command).await {
        tracing::warn!(key = %key, upstream = %job.upstream, %error,
            "video job created, but its owner is not recorded: the key's list may miss it");
    }
}

fn sign_job(state: &AppState, key_id: &str, upstream: &str, job: &mut Value) {
    for field in ["id", "remixed_from_video_id"] {
        if let Some(Value::String(id)) = job.get_mut(field) {
            *id = state.ids.sign(ID_PREFIX, key_id, upstream, id);
        }
    }
}

async fn json_of(response: Response) -> Result<Value, ApiError> {
    let bytes: Bytes = Limited::new(response.into_body(), MAX_JOB_JSON)
        .collect()
        .await
        .map_err(|_| ApiError::Internal)?
        .to_bytes();
    serde_json::from_slice(&bytes).map_err(|_| ApiError::Internal)
}

/// `seconds` as a number or a numeric string.
fn seconds_of(value: &Value) -> Option<f64> {
    value
        .as_f64()
        .or_else(|| value.as_str().and_then(|s| s.trim().parse().ok()))
}
