//! The composition root: what every handler shares (the cluster's snapshot, the proxy engine's
//! context, quotas, usage, id signing, the node's request limits) and [`build`], which starts
//! the actors and assembles it all. Only handlers (openai/, passthrough/, admin/) and the
//! server read it; the engines below (proxy/, quota/, usage/) never do: each takes the narrow
//! part it needs (docs/ARCHITECTURE.md, "Layers inside node/").

use std::ops::Deref;
use std::sync::Arc;

use aigw_actors::{NodeActors, SharedRetryBudget};
use aigw_cluster::{ClusterNode, ClusterState, KeyRecord};
use aigw_config::Config;
use arc_swap::ArcSwap;

use crate::error::ApiError;
use crate::proxy::{self, BackendTable, ProxyContext, RouteTable};
use crate::quota::{self, Admission, Quotas};
use crate::signed_id::IdSigner;
use crate::tokens::Estimate;
use crate::usage::UsageMeter;

#[derive(Clone)]
pub(crate) struct AppState(Arc<Shared>);

pub(crate) struct Shared {
    /// Keys and settings; read per request, written only by the cluster.
    pub cluster: ClusterState,
    /// Routes, upstream and session boards, backends and attempt limits of the settings in
    /// `cluster`: all the proxy engine reads.
    pub proxy: ProxyContext,
    pub max_body_bytes: usize,
    /// Largest multipart upload streamed through (`server.max_upload_bytes`).
    pub max_upload_bytes: usize,
    /// Signs the ids handed out for upstream-held state (video jobs, MCP sessions).
    pub ids: IdSigner,
    /// This node's usage totals per key and capability.
    pub usage: UsageMeter,
    /// Key limits and their leases; set by the server once the node is in the cluster (unset:
    /// no limits are enforced, as in unit tests without a cluster).
    pub quotas: std::sync::OnceLock<Arc<Quotas>>,
    /// The cluster, for the few Raft writes and fresh reads a handler makes (the owners of
    /// video jobs); set by the server once the node is in the cluster (unset: nothing is
    /// recorded, as in unit tests without a cluster).
    pub cluster_node: std::sync::OnceLock<ClusterNode>,
}

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }

    /// Admits one request of `key` against its limits (`quota::admit`): `Ok(None)` when the
    /// key has none or the node enforces none.
    pub async fn admit(
        &self,
        key: &KeyRecord,
        estimate: impl Fn(bool) -> Estimate,
    ) -> Result<Option<Admission>, ApiError> {
        let encodings = || self.proxy.routes.load().tokenizers();
        let quotas = self.quotas.get().map(Arc::as_ref);
        Ok(quota::admit(quotas, key, encodings, estimate).await?)
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
    let backends = BackendTable::build(&snapshot.backends)?;
    let state = AppState::new(Shared {
        cluster,
        proxy: ProxyContext {
            routes: ArcSwap::from_pointee(routes),
            upstreams: ArcSwap::new(Arc::clone(actors.upstreams())),
            sessions: Arc::clone(actors.sessions()),
            backends: ArcSwap::from_pointee(backends),
            retry_budget: SharedRetryBudget::new(&config.routing.retry_budget),
            max_attempts: config.routing.max_attempts,
            panic_mode: config.routing.panic_mode,
        },
        max_body_bytes: config.server.max_body_bytes,
        max_upload_bytes: config.server.max_upload_bytes,
        ids: IdSigner::from_config(config),
        usage: UsageMeter::default(),
        quotas: std::sync::OnceLock::new(),
        cluster_node: std::sync::OnceLock::new(),
    });
    Ok((state, actors))
}

/// Applies a new settings revision: plans the upstreams (unchanged ones keep their actor and
/// state), builds routes and backends over the planned board, then puts the plan in force and
/// swaps routes, backends and the upstream board. Sessions stay. Requests in flight finish on
/// what they loaded. On an error nothing is swapped and no actor changes.
pub(crate) async fn apply_settings(
    state: &AppState,
    actors: &mut NodeActors,
) -> Result<(), String> {
    let snapshot = state.cluster.load();
    let (endpoints, specs) = proxy::endpoints(&snapshot)?;
    let plan = actors.plan_upstreams(specs);
    let routes = RouteTable::build(&snapshot, &endpoints, plan.upstreams())?;
    let client = state.proxy.backends.load().client.clone();
    let backends = BackendTable::with_client(&snapshot.backends, client)?;
    let (kept, started, stopped) = (
        plan.kept().len(),
        plan.started().len(),
        plan.stopped().len(),
    );
    let upstreams = actors
        .apply_upstreams(plan)
        .await
        .map_err(|e| format!("cannot change the upstream actors: {e}"))?;
    let proxy = &state.proxy;
    proxy.routes.store(Arc::new(routes));
    proxy.backends.store(Arc::new(backends));
    proxy.upstreams.store(upstreams);
    tracing::info!(
        kept,
        started,
        stopped,
        "upstream actors follow the new settings"
    );
    Ok(())
}
