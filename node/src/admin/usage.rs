//! `GET /admin/v1/usage`: this node's usage totals per key and capability since it started.
//! Per node: the replicated usage ledger (every node's records, batched through Raft) is not
//! built yet; until then, sum the answers of every node for the cluster's totals.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use super::AdminState;

pub(super) async fn totals(State(state): State<AdminState>) -> Json<Value> {
    Json(json!({
        "scope": "node",
        "usage": state.app.usage.totals(),
    }))
}
