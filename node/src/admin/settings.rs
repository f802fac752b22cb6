//! `/admin/v1/settings`: the cluster-wide settings document (upstreams and models).
//!
//! The document is TOML and is stored as written: `${ENV}` references stay references, so
//! credentials kept in the environment never enter the Raft log. Credentials written
//! literally are shown as `"***"`. A write is validated
//! on the node that receives it, with that node's environment, before it is committed.

use aigw_cluster::{Command, Outcome, parse_settings, redact_settings};
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use http::HeaderMap;
use http::header::CONTENT_TYPE;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AdminState;
use super::error::AdminError;
use super::parse_json;

/// The settings document as JSON, for readers that don't speak TOML.
pub(crate) fn document_as_json(toml_text: &str) -> Value {
    toml::from_str::<toml::Table>(toml_text)
        .ok()
        .and_then(|table| serde_json::to_value(table).ok())
        .unwrap_or(Value::Null)
}

pub(crate) async fn get(State(state): State<AdminState>) -> Result<Json<Value>, AdminError> {
    state.cluster.linearizable_read().await?;
    let snapshot = state.cluster.state().load();
    let shown = redact_settings(&snapshot.settings_toml);
    Ok(Json(json!({
        "object": "settings",
        "revision": snapshot.settings_revision,
        "toml": shown,
        "settings": document_as_json(&shown),
        "node_error": snapshot.settings_error,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutSettings {
    toml: String,
    /// Refuse the write (409) if the settings changed since this revision was read.
    #[serde(default)]
    expected_revision: Option<u64>,
}

/// Replaces the document. The body is either the TOML itself (any content type but JSON; an
/// `If-Match: <revision>` header guards against lost updates) or JSON
/// `{"toml": "...", "expected_revision": N}`.
pub(crate) async fn put(
    State(state): State<AdminState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, AdminError> {
    let is_json = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let request = if is_json {
        parse_json::<PutSettings>(&body)?
    } else {
        let toml = String::from_utf8(body.to_vec())
            .map_err(|_| AdminError::BadRequest("the settings document is not UTF-8".into()))?;
        let expected_revision = match headers.get(http::header::IF_MATCH) {
            Some(value) => Some(
                value
                    .to_str()
                    .ok()
                    .map(|v| v.trim().trim_matches('"'))
                    .and_then(|v| v.parse::<u64>().ok())
                    .ok_or_else(|| {
                        AdminError::BadRequest("If-Match must be a settings revision number".into())
                    })?,
            ),
            None => None,
        };
        PutSettings {
            toml,
            expected_revision,
        }
    };
    parse_settings(&request.toml, &*state.env)
        .map_err(|e| AdminError::BadRequest(format!("invalid settings:\n{e}")))?;
    let command = Command::PutSettings {
        toml: request.toml,
        expected_revision: request.expected_revision,
    };
    match state.cluster.write(command).await? {
        Outcome::SettingsWritten { revision } => {
            Ok(Json(json!({"object": "settings", "revision": revision})))
        }
        other => Err(AdminError::Internal(format!(
            "unexpected outcome {other:?}"
        ))),
    }
}
