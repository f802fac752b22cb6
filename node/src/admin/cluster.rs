//! `/admin/v1/cluster`: members, roles, indexes, liveness; and removing a member.

use aigw_cluster::NodeId;
use axum::Json;
use axum::extract::{Path, State};
use serde_json::{Value, json};

use super::AdminState;
use super::error::AdminError;

pub(crate) async fn status(State(state): State<AdminState>) -> Json<aigw_cluster::ClusterStatus> {
    Json(state.cluster.status().await)
}

pub(crate) async fn remove_member(
    State(state): State<AdminState>,
    Path(id): Path<NodeId>,
) -> Result<Json<Value>, AdminError> {
    state.cluster.remove_member(id).await?;
    Ok(Json(
        json!({"object": "cluster.member.removed", "id": id, "removed": true}),
    ))
}
