//! `POST /v1/audio/transcriptions`: a multipart upload streamed through to one target of the
//! model (multipart.rs finds the model and swaps in the upstream's name), every response
//! format passed through as the upstream sends it. An upload gets one attempt: its body is
//! not kept, so it cannot be sent again. Audio seconds are metered from the answer's
//! `duration` (`verbose_json`), else from the uploaded file's header (symphonia).

use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::HeaderMap;

use super::auth::Caller;
use super::multipart::Upload;
use super::routed::route_for;
use crate::error::ApiError;
use crate::proxy::tap::{TapBody, number_field};
use crate::proxy::{self};
use crate::quota::{self, tap::Usage};
use crate::records::CallFacts;
use crate::state::AppState;
use crate::tokens::Estimate;
use crate::usage::audio::seconds_from_header;
use crate::usage::{Capability, UsageRecord};

pub(super) async fn transcribe(
    State(state): State<AppState>,
    Caller(key): Caller,
    call: Option<Extension<CallFacts>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let call = call.map(|Extension(call)| call);
    let form = call.as_ref().map(CallFacts::form);
    let mut upload = Upload::begin(&headers, body, state.max_upload_bytes, form).await?;
    if let Some(call) = &call {
        call.with(|f| f.model = Some(upload.model.clone()));
    }
    let routes = state.proxy.routes.load_full();
    let route = route_for(&routes, &key, &upload.model, call.as_ref())?;
    let admission = state.admit(&key, |_| Estimate::calls_only()).await?;
    let uploaded = upload.state();
    let format = upload.field("response_format").unwrap_or("json").to_owned();
    let model = upload.model.clone();
    let forwarded = proxy::forward_call(&state.proxy, &model, route, None, false, |target| {
        upload.take_call("/audio/transcriptions", target)
    })
    .await;
    let mut forwarded = forwarded;
    if let Some(call) = &call {
        call.forwarded(std::mem::take(&mut forwarded.tried));
    }
    // Whatever the failed attempt answered: the client's form is at fault.
    if let Some(refused) = uploaded.refused() {
        return Err(refused);
    }
    if uploaded.exceeded() {
        return Ok(ApiError::BodyTooLarge {
            limit: state.max_upload_bytes,
        }
        .into_response());
    }
    tracing::info!(
        key = %key.id,
        model = %model,
        upstream = forwarded.upstream.as_deref().unwrap_or("-"),
        status = forwarded.response.status().as_u16(),
        format = %format,
        "audio transcription"
    );
    let mut response = forwarded.response;
    if !response.status().is_success() {
        return Ok(quota::settle_on_end(admission, response, |_| None));
    }
    let meter = state.clone();
    let key_id = key.id.clone();
    let upstream_body = std::mem::take(response.body_mut());
    *response.body_mut() = TapBody::wrap(upstream_body, move |ends| {
        if let Some(seconds) = number_field(&ends.head, "duration") {
            let record = UsageRecord {
                audio_seconds: Some(seconds),
                ..UsageRecord::default()
            };
            meter
                .usage
                .record(&key_id, Capability::AudioTranscriptions, &record);
            if let Some(call) = &call {
                call.used(&record);
            }
            return;
        }
        // Reading the header is CPU work; keep it off the request's thread. The call's record
        // waits for it (`settling`) so that it has the seconds too.
        let recorded = call.clone();
        let settling = tokio::task::spawn_blocking(move || {
            let head = uploaded.file_head("file");
            let seconds = head.and_then(|head| seconds_from_header(&head, None));
            let record = UsageRecord {
                audio_seconds: seconds,
                ..UsageRecord::default()
            };
            meter
                .usage
                .record(&key_id, Capability::AudioTranscriptions, &record);
            if let Some(call) = &call {
                call.used(&record);
            }
        });
        if let Some(call) = recorded {
            call.with(|f| f.settling = Some(settling));
        }
    });
    Ok(quota::settle_on_end(admission, response, |_| {
        Some(Usage::default())
    }))
}
