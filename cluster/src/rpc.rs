//! The server side of node-to-node calls, on the cluster address (TCP): Raft's own RPCs, and
//! the calls a follower makes to the leader (forwarded writes, read index, membership).
//!
//! Every call carries the cluster name; a call from another cluster is refused, so two
//! clusters on one network cannot mix their logs. The routes the node adds
//! (`ClusterOptions::peer_routes`, peer.rs) are served here behind the same check.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use openraft::ChangeMembers;
use serde::{Deserialize, Serialize};

use crate::command::{Outcome, Proposal};
use crate::raft::network::CLUSTER_HEADER;
use crate::raft::{Node, NodeId, Raft, decode, encode};

/// Largest body a peer may send: a snapshot chunk is at most `SNAPSHOT_CHUNK` bytes plus
/// framing.
const MAX_BODY: usize = 64 * 1024 * 1024;
pub(crate) const SNAPSHOT_CHUNK: u64 = 4 * 1024 * 1024;

/// Why a call forwarded to the leader was not done.
#[derive(Debug, Clone, Serialize, Deserialize, thiserror::Error)]
pub(crate) enum ForwardError {
    /// The node called is not (or no longer) the leader: ask again.
    #[error("not the leader")]
    NotLeader,
    /// The node to remove is neither a voter nor a learner.
    #[error("not a member")]
    NotMember,
    #[error("{0}")]
    Failed(String),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct JoinRequest {
    pub id: NodeId,
    pub addr: String,
}

#[derive(Clone)]
struct RpcState {
    raft: Raft,
    cluster_name: String,
}

pub(crate) fn router(raft: Raft, cluster_name: String, peer_routes: Router) -> Router {
    let peer_routes = peer_routes.layer(middleware::from_fn_with_state(
        cluster_name.clone(),
        require_cluster,
    ));
    Router::new()
        .route("/raft/append", post(append))
        .route("/raft/vote", post(vote))
        .route("/raft/snapshot", post(snapshot))
        .route("/cluster/write", post(write))
        .route("/cluster/read_index", post(read_index))
        .route("/cluster/join", post(join))
        .route("/cluster/remove", post(remove))
        .with_state(RpcState { raft, cluster_name })
        .merge(peer_routes)
        .layer(DefaultBodyLimit::max(MAX_BODY))
}

/// Refuses a call that does not name this node's cluster.
fn check_cluster(cluster_name: &str, headers: &HeaderMap) -> Result<(), (StatusCode, String)> {
    let cluster = headers.get(CLUSTER_HEADER).and_then(|v| v.to_str().ok());
    if cluster == Some(cluster_name) {
        return Ok(());
    }
    Err((
        StatusCode::FORBIDDEN,
        format!(
            "this node belongs to cluster `{cluster_name}`, not `{}`",
            cluster.unwrap_or("(none)")
        ),
    ))
}

async fn require_cluster(
    State(cluster_name): State<String>,
    request: Request,
    next: Next,
) -> Response {
    match check_cluster(&cluster_name, request.headers()) {
        Ok(()) => next.run(request).await,
        Err(refusal) => refusal.into_response(),
    }
}

/// Decodes a request from a peer of this cluster, or answers why not.
fn accept<T: serde::de::DeserializeOwned>(
    state: &RpcState,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<T, (StatusCode, String)> {
    check_cluster(&state.cluster_name, headers)?;
    decode(body).map_err(|e| (StatusCode::BAD_REQUEST, format!("undecodable request: {e}")))
}

fn reply<T: Serialize>(value: &T) -> Response {
    match encode(value) {
        Ok(bytes) => bytes.into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn append(State(s): State<RpcState>, headers: HeaderMap, body: Bytes) -> Response {
    match accept(&s, &headers, &body) {
        Ok(request) => reply(&s.raft.append_entries(request).await),
        Err(refusal) => refusal.into_response(),
    }
}

async fn vote(State(s): State<RpcState>, headers: HeaderMap, body: Bytes) -> Response {
    match accept(&s, &headers, &body) {
        Ok(request) => reply(&s.raft.vote(request).await),
        Err(refusal) => refusal.into_response(),
    }
}

async fn snapshot(State(s): State<RpcState>, headers: HeaderMap, body: Bytes) -> Response {
    match accept(&s, &headers, &body) {
        Ok(request) => reply(&s.raft.install_snapshot(request).await),
        Err(refusal) => refusal.into_response(),
    }
}

async fn write(State(s): State<RpcState>, headers: HeaderMap, body: Bytes) -> Response {
    let proposal: Proposal = match accept(&s, &headers, &body) {
        Ok(proposal) => proposal,
        Err(refusal) => return refusal.into_response(),
    };
    let result: Result<Outcome, ForwardError> = match s.raft.client_write(proposal).await {
        Ok(response) => Ok(response.data),
        Err(e) if e.forward_to_leader::<Node>().is_some() => Err(ForwardError::NotLeader),
        Err(e) => Err(ForwardError::Failed(e.to_string())),
    };
    reply(&result)
}

async fn read_index(State(s): State<RpcState>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(refusal) = accept::<()>(&s, &headers, &body) {
        return refusal.into_response();
    }
    let result: Result<u64, ForwardError> = match s.raft.ensure_linearizable().await {
        Ok(read_log_id) => Ok(read_log_id.map_or(0, |id| id.index)),
        Err(e) if e.forward_to_leader::<Node>().is_some() => Err(ForwardError::NotLeader),
        Err(e) => Err(ForwardError::Failed(e.to_string())),
    };
    reply(&result)
}

async fn join(State(s): State<RpcState>, headers: HeaderMap, body: Bytes) -> Response {
    let request: JoinRequest = match accept(&s, &headers, &body) {
        Ok(request) => request,
        Err(refusal) => return refusal.into_response(),
    };
    reply(&add_voter(&s.raft, request).await)
}

/// Adds a node as a learner, waits until it has caught up, then makes it a voter.
pub(crate) async fn add_voter(raft: &Raft, request: JoinRequest) -> Result<(), ForwardError> {
    let node = Node {
        addr: request.addr.clone(),
    };
    let map =
        |e: openraft::error::RaftError<NodeId, openraft::error::ClientWriteError<NodeId, Node>>| {
            if e.forward_to_leader::<Node>().is_some() {
                ForwardError::NotLeader
            } else {
                ForwardError::Failed(e.to_string())
            }
        };
    raft.add_learner(request.id, node, true)
        .await
        .map_err(map)?;
    let voters = std::collections::BTreeSet::from([request.id]);
    raft.change_membership(ChangeMembers::AddVoterIds(voters), false)
        .await
        .map_err(map)?;
    tracing::info!(node = request.id, addr = %request.addr, "node joined as a voter");
    Ok(())
}

async fn remove(State(s): State<RpcState>, headers: HeaderMap, body: Bytes) -> Response {
    let id: NodeId = match accept(&s, &headers, &body) {
        Ok(id) => id,
        Err(refusal) => return refusal.into_response(),
    };
    reply(&remove_member(&s.raft, id).await)
}

/// Removes a node from the voters and the learners.
pub(crate) async fn remove_member(raft: &Raft, id: NodeId) -> Result<(), ForwardError> {
    let is_member = raft
        .metrics()
        .borrow()
        .membership_config
        .membership()
        .get_node(&id)
        .is_some();
    if !is_member {
        return Err(ForwardError::NotMember);
    }
    let ids = std::collections::BTreeSet::from([id]);
    let result = raft
        .change_membership(ChangeMembers::RemoveVoters(ids.clone()), false)
        .await;
    match result {
        Ok(_) => {}
        Err(e) if e.forward_to_leader::<Node>().is_some() => return Err(ForwardError::NotLeader),
        // Not a voter: it may still be a learner.
        Err(_) => {
            raft.change_membership(ChangeMembers::RemoveNodes(ids), false)
                .await
                .map_err(|e| ForwardError::Failed(e.to_string()))?;
        }
    }
    tracing::info!(node = id, "node removed from the cluster");
    Ok(())
}
