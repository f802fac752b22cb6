//! The admin API on its own listener (`node.admin_listen`), under `/admin/v1`, behind the
//! admin bearer token: keys, cluster-wide settings and cluster status. Any node accepts a
//! write (the cluster forwards it to the leader); reads are linearizable. Errors use the same
//! JSON shape as the OpenAI API.

mod auth;
mod cluster;
pub(crate) mod error;
mod keys;
mod records;
mod settings;
mod upstreams;
mod usage;

use aigw_cluster::{ClusterNode, EnvLookup};
use axum::Router;
use axum::extract::Request;
use axum::middleware;
use axum::routing::{delete, get, post};
use serde::de::DeserializeOwned;

pub(crate) use auth::AdminToken;
use error::AdminError;

use crate::state::AppState;

#[derive(Clone)]
pub(crate) struct AdminState {
    pub cluster: ClusterNode,
    pub token: AdminToken,
    /// Resolves `${ENV}` when a settings write is validated on this node.
    pub env: EnvLookup,
    /// The data plane's state, for the upstreams' status.
    pub app: AppState,
    /// The node's recorder, when records are on.
    pub records: Option<crate::records::Recorder>,
}

pub(crate) fn router(state: AdminState) -> Router {
    let api = Router::new()
        .route("/keys", post(keys::create).get(keys::list))
        .route(
            "/keys/{id}",
            get(keys::get).patch(keys::update).delete(keys::delete),
        )
        .route("/settings", get(settings::get).put(settings::put))
        .route("/cluster", get(cluster::status))
        .route("/upstreams", get(upstreams::list))
        .route("/usage", get(usage::totals))
        .route("/records", get(records::list))
        .route("/records/sinks", get(records::sinks))
        .route("/cluster/members/{id}", delete(cluster::remove_member))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ));
    Router::new()
        .nest("/admin/v1", api)
        .fallback(unknown)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

async fn unknown(request: Request) -> AdminError {
    AdminError::NotFound(format!(
        "Unknown admin URL: {} {}",
        request.method(),
        request.uri().path()
    ))
}

async fn method_not_allowed(request: Request) -> AdminError {
    AdminError::MethodNotAllowed(format!(
        "Method {} is not allowed on {}",
        request.method(),
        request.uri().path()
    ))
}

/// Parses a JSON body into `T`; on failure, serde's message after the path of the field it is
/// about (`records: unknown variant ...`), which serde alone names only for missing or unknown
/// fields.
pub(crate) fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, AdminError> {
    let bad = |message: String| AdminError::BadRequest(format!("invalid JSON body: {message}"));
    let mut json = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut json).map_err(|e| {
        let path = e.path().to_string();
        match path.as_str() {
            "." => bad(e.into_inner().to_string()),
            _ => bad(format!("{path}: {}", e.into_inner())),
        }
    })?;
    json.end().map_err(|e| bad(e.to_string()))?;
    Ok(value)
}
