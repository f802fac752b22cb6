//! The node-to-node routes this node adds to the cluster listener (aigw-cluster serves them
//! behind its cluster-name check, bincode bodies both ways). Today one: a peer asks for this
//! node's records passing a filter (`GET /admin/v1/records?cluster=true` on the node an
//! operator asked). Admin queries only: nothing here is on the request path.

use std::path::PathBuf;

use aigw_cluster::{NodeId, PeerBody, PeerReply};
use axum::Router;
use axum::extract::State;
use axum::routing::post;

use crate::records::query::{self, ClusterAnswer, ClusterQuery};

/// Where a peer asks for this node's records.
pub(crate) const RECORDS_PATH: &str = "/node/records";

#[derive(Clone)]
struct PeerState {
    node: NodeId,
    /// The records log; `None` when records are off on this node.
    records_dir: Option<PathBuf>,
}

/// The routes, given this node's id and its records log (`None`: records are off).
pub(crate) fn routes(node: NodeId, records_dir: Option<PathBuf>) -> Router {
    Router::new()
        .route(RECORDS_PATH, post(records))
        .with_state(PeerState { node, records_dir })
}

/// This node's first `limit` records passing the filter, by time received then id.
async fn records(
    State(state): State<PeerState>,
    PeerBody(mut asked): PeerBody<ClusterQuery>,
) -> PeerReply<ClusterAnswer> {
    // A peer of another version may ask for more than the admin API allows.
    asked.limit = asked.limit.min(query::MAX_LIMIT);
    PeerReply(query::answer(state.node, state.records_dir, asked).await)
}
