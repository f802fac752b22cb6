//! `POST /v1/audio/transcriptions`: a multipart upload with `file` and `model`; the text says
//! how many bytes arrived, the duration is read from a WAV header (else 1 s per 32,000
//! bytes), and every `response_format` is answered in its own shape.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{StatusCode, header};

use super::error::{ApiError, json_response};
use super::form::Form;
use super::form::admit_form;
use super::state::MockState;

pub(crate) async fn transcribe(
    State(state): State<Arc<MockState>>,
    request: Request,
) -> Result<Response, Response> {
    let (_admitted, form) = admit_form(&state, request).await?;
    respond(&form).map_err(IntoResponse::into_response)
}

fn respond(form: &Form) -> Result<Response, ApiError> {
    let model = form
        .text("model")
        .filter(|m| !m.is_empty())
        .ok_or_else(|| ApiError::invalid_request("model is required"))?;
    let file = form
        .file("file")
        .filter(|f| f.filename.is_some())
        .ok_or_else(|| ApiError::invalid_request("file is required"))?;
    let duration = wav_seconds(&file.bytes).unwrap_or(file.bytes.len() as f64 / 32_000.0);
    let text = format!("mock transcript of {} bytes by {model}", file.bytes.len());
    let end = timestamp(duration, ',');
    let (content_type, body) = match form.text("response_format").unwrap_or("json") {
        "json" => (
            "application/json",
            serde_json::json!({"text": text, "usage": {"type": "duration", "seconds": duration.ceil() as u64}})
                .to_string(),
        ),
        "verbose_json" => (
            "application/json",
            serde_json::json!({
                "task": "transcribe",
                "language": "english",
                "duration": duration,
                "text": text,
                "segments": [{"id": 0, "seek": 0, "start": 0.0, "end": duration, "text": text,
                    "tokens": [1], "temperature": 0.0, "avg_logprob": -0.1,
                    "compression_ratio": 1.0, "no_speech_prob": 0.0}],
            })
            .to_string(),
        ),
        "text" => ("text/plain; charset=utf-8", format!("{text}\n")),
        "srt" => (
            "text/plain; charset=utf-8",
            format!("1\n00:00:00,000 --> {end}\n{text}\n\n"),
        ),
        "vtt" => (
            "text/plain; charset=utf-8",
            format!(
                "WEBVTT\n\n00:00:00.000 --> {}\n{text}\n\n",
                timestamp(duration, '.')
            ),
        ),
        other => {
            return Err(ApiError::invalid_request(format!(
                "response_format must be one of json, text, srt, verbose_json, vtt; got {other:?}"
            )));
        }
    };
    if content_type == "application/json" {
        return Ok(json_response(StatusCode::OK, Bytes::from(body)));
    }
    Ok((StatusCode::OK, [(header::CONTENT_TYPE, content_type)], body).into_response())
}

/// Seconds of a PCM WAV, from its `fmt ` byte rate and `data` size.
fn wav_seconds(bytes: &[u8]) -> Option<f64> {
    if bytes.get(..4)? != b"RIFF" || bytes.get(8..12)? != b"WAVE" {
        return None;
    }
    let mut at = 12;
    let mut byte_rate = None;
    while at + 8 <= bytes.len() {
        let id = &bytes[at..at + 4];
        let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().ok()?) as usize;
        if id == b"fmt " {
            byte_rate = Some(u32::from_le_bytes(
                bytes.get(at + 16..at + 20)?.try_into().ok()?,
            ));
        } else if id == b"data" {
            return Some(len as f64 / f64::from(byte_rate.filter(|r| *r > 0)?));
        }
        at += 8 + len + (len & 1);
    }
    None
}

fn timestamp(seconds: f64, separator: char) -> String {
    let millis = (seconds * 1000.0).round() as u64;
    format!(
        "{:02}:{:02}:{:02}{separator}{:03}",
        millis / 3_600_000,
        millis / 60_000 % 60,
        millis / 1000 % 60,
        millis % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wav_header_gives_seconds_and_timestamps_are_formatted() {
        let mut wav =
            b"RIFF\0\0\0\0WAVEfmt \x10\0\0\0\x01\0\x01\0\x80\x3e\0\0\0\x7d\0\0\x02\0\x10\0data"
                .to_vec();
        wav.extend_from_slice(&64_000u32.to_le_bytes());
        assert_eq!(wav_seconds(&wav), Some(2.0));
        assert_eq!(wav_seconds(b"not a wav"), None);
        assert_eq!(timestamp(3723.5, ','), "01:02:03,500");
    }
}
