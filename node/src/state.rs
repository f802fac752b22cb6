//! What every handler shares: snapshots to read, the handles of the node's actors, and the
//! node's request limits; and [`build`], which starts the actors and assembles it all.

use std::ops::Deref;
use std::sync::Arc;

use aigw_actors::{NodeActors, Sessions, SharedRetryBudget, Upstreams};
use aigw_cluster::ClusterState;
use aigw_config::Config;
use arc_swap::ArcSwap;

use crate::openai::IdSigner;
use crate::passthrough::BackendTable;
use crate::proxy::{self, RouteTable};
use crate::usage::UsageMeter;

#[derive(Clone)]
pub(crate) struct AppState(Arc<Shared>);

pub(crate) struct Shared {
    /// Keys and settings; read per request, written only by the cluster.
    pub cluster: ClusterState,
    /// Routes built from the settings in `cluster`, with the upstream clients they own.
    pub routes: ArcSwap<RouteTable>,
    pub max_body_bytes: usize,
    /// Every upstream's published health, breaker and load; gossip's door in and out.
    /// Swapped together with `routes` when the settings change.
    pub upstreams: ArcSwap<Upstreams>,
    /// Sticky sessions' bindings; swapped with `routes`.
    pub sessions: ArcSwap<Sessions>,
    /// Caps failover attempts node-wide.
    pub retry_budget: SharedRetryBudget,
    /// Upstream attempts per request, the first included.
    pub max_attempts: u32,
    /// Largest multipart upload streamed through (`server.max_upload_bytes`).
    pub max_upload_bytes: usize,
    /// Signs the ids handed out for upstream-held state (video jobs, MCP sessions).
    pub ids: IdSigner,
    /// MCP servers, agent backends and sandboxes; swapped with `routes`.
    pub passthrough: ArcSwap<BackendTable>,
    /// This node's usage totals per key and capability.
    pub usage: UsageMeter,
    /// Key limits and their leases; set by the server once the node is in the cluster (unset:
    /// no limits are enforced, as in unit tests without a cluster).
    pub quotas: std::sync::OnceLock<Arc<crate::quota::Quotas>>,
}

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// Starts the node's actors (one per upstream, probing it) and builds the state handlers
/// share. `name_prefix` makes the actors' names unique in the process.
pub(crate) async fn build(
    config: &Config,
    name_prefix: &str,
    cluster: ClusterState,
) -> Result<(AppState, NodeActors), String> {
    let snapshot = cluster.load();
    let (endpoints, specs) = proxy::endpoints(&snapshot)?;
    let actors = NodeActors::start(config.node.id, name_prefix, specs, &config.routing)
        .await
        .map_err(|e| format!("cannot start the upstream actors: {e}"))?;
    let routes = RouteTable::build(&snapshot, &endpoints, actors.upstreams())?;
    let passthrough = BackendTable::build(&snapshot.backends)?;
    let state = AppState::new(Shared {
        cluster,
        routes: ArcSwap::from_pointee(routes),
        max_body_bytes: config.server.max_body_bytes,
        upstreams: ArcSwap::new(Arc::clone(actors.upstreams())),
        sessions: ArcSwap::new(Arc::clone(actors.sessions())),
        retry_budget: SharedRetryBudget::new(&config.routing.retry_budget),
        max_attempts: config.routing.max_attempts,
        max_upload_bytes: config.server.max_upload_bytes,
        ids: IdSigner::from_config(config),
        passthrough: ArcSwap::from_pointee(passthrough),
        usage: UsageMeter::default(),
        quotas: std::sync::OnceLock::new(),
    });
    Ok((state, actors))
}

/// Applies a new settings revision: starts a supervision tree for the new upstreams, builds
/// the routes over it, swaps routes, upstreams and sessions in one go, and returns the new
/// tree (the caller stops the old one). Requests already in flight finish on what they
/// loaded. On an error nothing is swapped.
pub(crate) async fn apply_settings(
    state: &AppState,
    config: &Config,
    name_prefix: &str,
) -> Result<NodeActors, String> {
    let snapshot = state.cluster.load();
    let (endpoints, specs) = proxy::endpoints(&snapshot)?;
    let actors = NodeActors::start(config.node.id, name_prefix, specs, &config.routing)
        .await
        .map_err(|e| format!("cannot start the upstream actors: {e}"))?;
    let built = RouteTable::build(&snapshot, &endpoints, actors.upstreams()).and_then(|routes| {
        let client = state.passthrough.load().client.clone();
        Ok((
            routes,
            BackendTable::with_client(&snapshot.backends, client)?,
        ))
    });
    let (routes, passthrough) = match built {
        Ok(built) => built,
        Err(e) => {
            actors.stop().await;
            return Err(e);
        }
    };
    state.routes.store(Arc::new(routes));
    state.passthrough.store(Arc::new(passthrough));
    state.upstreams.store(Arc::clone(actors.upstreams()));
    state.sessions.store(Arc::clone(actors.sessions()));
    Ok(actors)
}
