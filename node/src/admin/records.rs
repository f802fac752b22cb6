//! `GET /admin/v1/records`: this node's request records (docs/RECORDS.md) as JSON lines,
//! oldest first, filtered by `since`, `until`, `key`, `model` and `status`, at most `limit`.

use std::collections::HashMap;

use axum::Json;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::response::Response;
use bytes::Bytes;
use futures::StreamExt as _;
use http::{HeaderValue, header};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::AdminState;
use super::error::AdminError;
use crate::records::query::{self, Filter};

/// Records answered when `limit` is not given, and at most.
const DEFAULT_LIMIT: usize = 1_000;
const MAX_LIMIT: usize = 100_000;

pub(super) async fn list(
    State(state): State<AdminState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, AdminError> {
    let Some(dir) = state.records.as_ref().map(|r| r.dir().to_owned()) else {
        return Err(AdminError::NotFound(
            "records are off on this node: set [records] enabled = true in its config".into(),
        ));
    };
    let (filter, limit) = filter_of(&params)?;
    let (lines, rx) = mpsc::channel::<Bytes>(64);
    tokio::task::spawn_blocking(move || {
        let scanned = query::scan(&dir, &filter, limit, |mut line| {
            line.push(b'\n');
            lines.blocking_send(Bytes::from(line)).is_ok()
        });
        if let Err(error) = scanned {
            tracing::warn!(%error, "reading the records log failed");
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok::<_, std::io::Error>);
    let mut response = Response::new(Body::from_stream(stream));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    Ok(response)
}

/// `GET /admin/v1/records/sinks`: each sink's cursor, lag and last error, and what the node
/// shed.
pub(super) async fn sinks(State(state): State<AdminState>) -> Result<Json<Value>, AdminError> {
    let Some(recorder) = &state.records else {
        return Err(AdminError::NotFound(
            "records are off on this node: set [records] enabled = true in its config".into(),
        ));
    };
    let (shed_bodies, lost) = recorder.shed();
    Ok(Json(json!({
        "sinks": recorder.sinks(),
        "shed_bodies": shed_bodies,
        "lost": lost,
    })))
}

fn filter_of(params: &HashMap<String, String>) -> Result<(Filter, usize), AdminError> {
    for name in params.keys() {
        if !["since", "until", "key", "model", "status", "limit"].contains(&name.as_str()) {
            return Err(AdminError::BadRequest(format!(
                "unknown parameter {name:?}; expected since, until, key, model, status or limit"
            )));
        }
    }
    let time = |name: &str| {
        params
            .get(name)
            .map(|t| {
                query::parse_time(t).map_err(|e| AdminError::BadRequest(format!("{name}: {e}")))
            })
            .transpose()
    };
    let status = params
        .get("status")
        .map(|s| {
            s.parse::<u16>().map_err(|_| {
                AdminError::BadRequest(format!(
                    "status: expected an HTTP status such as 200, not {s:?}"
                ))
            })
        })
        .transpose()?;
    let limit = match params.get("limit") {
        None => DEFAULT_LIMIT,
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => {
                return Err(AdminError::BadRequest(format!(
                    "limit: expected a number from 1 to {MAX_LIMIT}, not {l:?}"
                )));
            }
        },
    };
    let filter = Filter {
        since_ms: time("since")?,
        until_ms: time("until")?,
        key: params.get("key").cloned(),
        model: params.get("model").cloned(),
        status,
    };
    Ok((filter, limit))
}
