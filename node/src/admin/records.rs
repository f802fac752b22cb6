//! `GET /admin/v1/records`: this node's request records (docs/RECORDS.md) as JSON lines,
//! oldest first, filtered by `since`, `until`, `key`, `model` and `status`, at most `limit`.
//! With `cluster=true`, every member's records merged by time received (then id): this node
//! asks each live peer on the cluster listener (peer.rs) and answers once all have answered or
//! `PEER_TIMEOUT` has passed; the members that did not answer are named in the
//! `aigw-records-missing-nodes` header, the ones merged in `aigw-records-nodes`.

use std::collections::HashMap;
use std::time::Duration;

use aigw_cluster::NodeId;
use axum::Json;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::response::Response;
use bytes::Bytes;
use futures::StreamExt as _;
use http::{HeaderName, HeaderValue, header};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::AdminState;
use super::error::AdminError;
use crate::peer::RECORDS_PATH;
use crate::records::query::{
    self, ClusterAnswer, ClusterQuery, DEFAULT_LIMIT, Filter, MAX_LIMIT, TimedRecord,
};

/// How long a cluster query waits for a peer's answer before it answers without that peer.
const PEER_TIMEOUT: Duration = Duration::from_secs(5);

/// The members whose records a cluster answer holds, and those it lacks (comma-separated ids).
const NODES_HEADER: HeaderName = HeaderName::from_static("aigw-records-nodes");
const MISSING_HEADER: HeaderName = HeaderName::from_static("aigw-records-missing-nodes");

pub(super) async fn list(
    State(state): State<AdminState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, AdminError> {
    let Some(dir) = state.records.as_ref().map(|r| r.dir().to_owned()) else {
        return Err(AdminError::NotFound(
            "records are off on this node: set [records] enabled = true in its config".into(),
        ));
    };
    let (filter, limit, cluster) = query_of(&params)?;
    if cluster {
        return Ok(cluster_records(&state, ClusterQuery { filter, limit }).await);
    }
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
    Ok(ndjson(Body::from_stream(stream)))
}

/// Asks every member at once (this node reads its own log), waits at most `PEER_TIMEOUT` for
/// each, and answers the merge. A member gossip sees down is not asked; it is missing.
async fn cluster_records(state: &AdminState, asked: ClusterQuery) -> Response {
    let own_id = state.cluster.id();
    let own_dir = state.records.as_ref().map(|r| r.dir().to_owned());
    let members = state.cluster.status().await.members;
    let answers = members.into_iter().map(|member| {
        let asked = asked.clone();
        let own_dir = own_dir.clone();
        async move {
            let answer: ClusterAnswer = if member.id == own_id {
                query::answer(own_id, own_dir, asked).await
            } else if !member.live {
                Err("gossip sees it down".into())
            } else {
                state
                    .cluster
                    .call_peer(&member.cluster_addr, RECORDS_PATH, &asked, PEER_TIMEOUT)
                    .await
                    .unwrap_or_else(|e| Err(e.to_string()))
            };
            (member.id, answer)
        }
    });
    let mut merged = Vec::new();
    let (mut answered, mut missing) = (Vec::<NodeId>::new(), Vec::<NodeId>::new());
    for (node, answer) in futures::future::join_all(answers).await {
        match answer {
            Ok(records) => {
                answered.push(node);
                merged.push(records);
            }
            Err(reason) => {
                tracing::warn!(node, %reason, "a node's records are missing from a cluster query");
                missing.push(node);
            }
        }
    }
    let lines = query::merge_by_time(merged, asked.limit).into_iter().map(
        |TimedRecord { mut line, .. }| {
            line.push('\n');
            Ok::<_, std::io::Error>(Bytes::from(line))
        },
    );
    let mut response = ndjson(Body::from_stream(futures::stream::iter(lines)));
    for (name, nodes) in [(NODES_HEADER, answered), (MISSING_HEADER, missing)] {
        let ids: Vec<String> = nodes.iter().map(NodeId::to_string).collect();
        if let Ok(value) = HeaderValue::from_str(&ids.join(",")) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

fn ndjson(body: Body) -> Response {
    let mut response = Response::new(body);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    response
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

/// The filter, the limit and whether to ask the whole cluster.
fn query_of(params: &HashMap<String, String>) -> Result<(Filter, usize, bool), AdminError> {
    for name in params.keys() {
        let known = [
            "since", "until", "key", "model", "status", "limit", "cluster",
        ];
        if !known.contains(&name.as_str()) {
            return Err(AdminError::BadRequest(format!(
                "unknown parameter {name:?}; expected since, until, key, model, status, limit or cluster"
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
    let cluster = match params.get("cluster").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(AdminError::BadRequest(format!(
                "cluster: expected true or false, not {other:?}"
            )));
        }
    };
    let filter = Filter {
        since_ms: time("since")?,
        until_ms: time("until")?,
        key: params.get("key").cloned(),
        model: params.get("model").cloned(),
        status,
    };
    Ok((filter, limit, cluster))
}
