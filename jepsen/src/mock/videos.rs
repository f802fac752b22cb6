//! `/v1/videos`: asynchronous video jobs held in memory. Create (multipart, as the SDKs send
//! it, or JSON) queues a job; each retrieve moves it one step (queued -> in_progress ->
//! completed) so a client's poll loop ends quickly; content is a few bytes of "video" once
//! completed; list and delete do what they say.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{StatusCode, header};
use serde_json::{Value, json};

use super::error::{ApiError, json_response};
use super::form::admit_form;
use super::state::MockState;

/// The jobs, by id (ordered, so lists are stable).
#[derive(Debug, Default)]
pub(crate) struct VideoJobs(Mutex<BTreeMap<String, Value>>);

impl VideoJobs {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Value>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn ok(value: &Value) -> Response {
    json_response(StatusCode::OK, Bytes::from(value.to_string()))
}

fn missing(id: &str) -> ApiError {
    ApiError::not_found(format!("no video with id {id:?}"))
}

pub(crate) async fn create(
    State(state): State<Arc<MockState>>,
    request: Request,
) -> Result<Response, Response> {
    let (admitted, form) = admit_form(&state, request).await?;
    let model = form
        .text("model")
        .filter(|m| !m.is_empty())
        .ok_or_else(|| ApiError::invalid_request("model is required").into_response())?;
    let prompt = form
        .text("prompt")
        .filter(|p| !p.is_empty())
        .ok_or_else(|| ApiError::invalid_request("prompt is required").into_response())?;
    let id = format!("video_{}", admitted.n);
    let job = json!({
        "id": id,
        "object": "video",
        "model": model,
        "status": "queued",
        "progress": 0,
        "created_at": 1_700_000_000,
        "completed_at": null,
        "expires_at": null,
        "error": null,
        "prompt": prompt,
        "remixed_from_video_id": null,
        "seconds": form.text("seconds").unwrap_or("4"),
        "size": form.text("size").unwrap_or("720x1280"),
        "input_reference_bytes": form.file("input_reference").map_or(0, |f| f.bytes.len()),
    });
    state.videos.lock().insert(id, job.clone());
    Ok(ok(&job))
}

pub(crate) async fn retrieve(
    State(state): State<Arc<MockState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let mut jobs = state.videos.lock();
    let job = jobs.get_mut(&id).ok_or_else(|| missing(&id))?;
    let (status, progress) = match job["status"].as_str() {
        Some("queued") => ("in_progress", 50),
        _ => ("completed", 100),
    };
    job["status"] = json!(status);
    job["progress"] = json!(progress);
    if status == "completed" {
        job["completed_at"] = json!(1_700_000_060);
    }
    Ok(ok(job))
}

pub(crate) async fn content(
    State(state): State<Arc<MockState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let jobs = state.videos.lock();
    let job = jobs.get(&id).ok_or_else(|| missing(&id))?;
    if job["status"] != "completed" {
        return Err(ApiError::invalid_request(format!(
            "video {id:?} is not completed yet"
        )));
    }
    let body = format!("MOCK-MP4 {id}");
    Ok((StatusCode::OK, [(header::CONTENT_TYPE, "video/mp4")], body).into_response())
}

pub(crate) async fn list(State(state): State<Arc<MockState>>) -> Response {
    let jobs = state.videos.lock();
    let data: Vec<&Value> = jobs.values().collect();
    ok(&json!({
        "object": "list",
        "data": data,
        "first_id": data.first().map(|j| &j["id"]),
        "last_id": data.last().map(|j| &j["id"]),
        "has_more": false,
    }))
}

pub(crate) async fn delete(
    State(state): State<Arc<MockState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let mut job = state
        .videos
        .lock()
        .remove(&id)
        .ok_or_else(|| missing(&id))?;
    job["deleted"] = json!(true);
    Ok(ok(&job))
}
