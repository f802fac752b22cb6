//! Starting a node's API listener and stopping it gracefully.
//!
//! Both listeners serve through listener.rs (connection timeouts and caps).
//!
//! Shutdown: stop accepting, let in-flight requests and streams finish until the grace period
//! runs out, then cut what is left. Either way the node returns normally, so the process exits 0.

use std::net::SocketAddr;
use std::time::Duration;

use std::collections::BTreeMap;
use std::sync::Arc;

use aigw_actors::{NodeActors, UpstreamView};
use aigw_cluster::{
    Advertised, ClusterNode, ClusterOptions, ClusterTiming, EnvLookup, bootstrap_command,
    process_env, unix_now,
};
use aigw_config::Config;
use axum::response::IntoResponse;
use tokio::net::TcpListener;
use tokio::sync::{Mutex, watch};
use tokio::task::JoinHandle;
use tower_http::catch_panic::CatchPanicLayer;

use crate::admin::{self, AdminState, AdminToken};
use crate::error::ApiError;
use crate::listener::{self, ConnectionLimits};
use crate::records::Recorder;
use crate::state::AppState;
use crate::{openai, passthrough};

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("invalid settings: {0}")]
    Settings(String),
    #[error("cannot take part in the cluster: {0}")]
    Cluster(String),
    #[error("{0}")]
    Quota(String),
    #[error("cannot open the records log: {0}")]
    Records(std::io::Error),
}

/// A node serving the API until `shutdown` is called.
pub struct RunningNode {
    api_addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    grace: Duration,
    stop: watch::Sender<bool>,
    server: JoinHandle<std::io::Result<()>>,
    admin: Option<JoinHandle<std::io::Result<()>>>,
    /// The supervision tree (upstream and session actors) of the settings in force; replaced
    /// on a settings change, stopped after the server.
    actors: Arc<Mutex<Option<NodeActors>>>,
    cluster: ClusterNode,
    /// Its leases are given back on a graceful shutdown.
    quotas: Arc<crate::quota::Quotas>,
    /// Gossip of upstream views and settings reloads.
    background: Vec<JoinHandle<()>>,
    /// Written to the end on a graceful shutdown.
    recorder: Option<Recorder>,
}

impl RunningNode {
    /// Starts the node with `${ENV}` in cluster settings resolved from the process environment.
    pub async fn start(config: &Config) -> Result<Self, StartError> {
        Self::start_with_env(config, process_env()).await
    }

    /// Binds the listeners, takes this node's place in the cluster (a one-member cluster when
    /// it has no peers), starts its actors and serves in the background. `env` resolves
    /// `${ENV}` references in the replicated settings on this node.
    pub async fn start_with_env(config: &Config, env: EnvLookup) -> Result<Self, StartError> {
        let addr = config.node.api_listen;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { addr, source })?;
        let api_addr = listener
            .local_addr()
            .map_err(|source| StartError::Bind { addr, source })?;
        let admin_listener = match config.node.admin_listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| StartError::Bind { addr, source })?,
            ),
            None => None,
        };
        let admin_addr = admin_listener.as_ref().and_then(|l| l.local_addr().ok());

        let cluster = start_cluster(config, api_addr, admin_addr, env.clone()).await?;

        // Actor names are process-wide; the bound address keeps two nodes in one process
        // (tests) apart even when they share a node id.
        let name_prefix = format!("node-{}@{api_addr}", config.node.id);
        let (state, actors) = crate::state::build(config, &name_prefix, cluster.state())
            .await
            .map_err(StartError::Settings)?;
        let quotas = crate::quota::Quotas::start(
            cluster.clone(),
            &config.node.data_dir.join("quota-marks.redb"),
            &actors,
        )
        .await
        .map_err(StartError::Quota)?;
        let quotas = Arc::new(quotas);
        let _ = state.quotas.set(Arc::clone(&quotas));
        let _ = state.cluster_node.set(cluster.clone());
        let actors = Arc::new(Mutex::new(Some(actors)));
        let background = vec![
            tokio::spawn(exchange_upstream_views(
                cluster.clone(),
                state.clone(),
                config.cluster.gossip_interval,
            )),
            tokio::spawn(keep_quotas(Arc::clone(&quotas))),
            tokio::spawn(crate::quota::rates::keep_rates(Arc::clone(&quotas))),
            tokio::spawn(follow_settings(state.clone(), Arc::clone(&actors))),
        ];
        let recorder = if config.records.enabled {
            Some(
                Recorder::start(config.node.id, &config.records, &config.node.data_dir)
                    .await
                    .map_err(StartError::Records)?,
            )
        } else {
            None
        };
        let (stop, stopped) = watch::channel(false);
        let api_limits = ConnectionLimits {
            header_read_timeout: config.server.header_read_timeout,
            body_idle_timeout: config.server.body_idle_timeout,
            keep_alive_timeout: config.server.keep_alive_timeout,
            max_connections: connection_cap(config.server.max_connections),
        };
        let trusted_proxies: Arc<[aigw_config::CidrBlock]> =
            config.server.trusted_proxies.clone().into();
        let admin = admin_listener.map(|listener| {
            let router = admin::router(AdminState {
                cluster: cluster.clone(),
                token: AdminToken::new(config.admin.as_ref().map(|a| a.token.expose())),
                env,
                app: state.clone(),
                records: recorder.clone(),
            });
            tracing::info!(admin_addr = ?admin_addr, "serving the admin API");
            let limits = ConnectionLimits {
                max_connections: ADMIN_MAX_CONNECTIONS,
                ..api_limits
            };
            tokio::spawn(listener::serve(
                listener,
                router,
                limits,
                Arc::clone(&trusted_proxies),
                stopped.clone(),
            ))
        });
        let app = api_router(state, recorder.clone()).layer(CatchPanicLayer::custom(
            |_panic: Box<dyn std::any::Any + Send>| {
                tracing::error!("a request handler panicked");
                ApiError::Internal.into_response()
            },
        ));
        let server = tokio::spawn(listener::serve(
            listener,
            app,
            api_limits,
            trusted_proxies,
            stopped,
        ));
        tracing::info!(%api_addr, "serving the OpenAI API");
        Ok(Self {
            api_addr,
            admin_addr,
            grace: config.server.shutdown_grace,
            stop,
            server,
            admin,
            actors,
            cluster,
            quotas,
            background,
            recorder,
        })
    }

    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The address Raft and gossip use.
    pub fn cluster_addr(&self) -> SocketAddr {
        self.cluster.cluster_addr()
    }

    /// Stops accepting and waits for in-flight requests, at most the configured grace period.
    /// Returns true when everything in flight finished in time.
    pub async fn shutdown(self) -> bool {
        let _ = self.stop.send(true);
        let mut server = self.server;
        let drained = match tokio::time::timeout(self.grace, &mut server).await {
            Ok(_) => {
                tracing::info!("all in-flight requests finished; stopped");
                true
            }
            Err(_) => {
                server.abort();
                tracing::warn!(grace = ?self.grace, "grace period over; cut the remaining requests");
                false
            }
        };
        if let Some(admin) = self.admin {
            admin.abort();
        }
        // Every call served has handed its record over: write them all.
        if let Some(recorder) = &self.recorder {
            recorder.close().await;
        }
        for task in &self.background {
            task.abort();
        }
        // No admission comes after this; every count is at least what was admitted (a
        // reservation counts until it is settled lower).
        self.quotas.close_all(Duration::from_secs(2)).await;
        if let Some(actors) = self.actors.lock().await.take() {
            actors.stop().await;
        }
        self.cluster.shutdown().await;
        drained
    }
}

/// The API listener's routes: the OpenAI API and the pass-through capabilities, with OpenAI's
/// error shape for URLs and methods no route takes.
/// With `recorder`, every call under `/v1/` is recorded (records/call.rs).
fn api_router(state: AppState, recorder: Option<Recorder>) -> axum::Router {
    let router = axum::Router::new()
        .merge(openai::routes())
        .merge(passthrough::routes())
        .fallback(openai::fallback::unknown_url)
        .method_not_allowed_fallback(openai::fallback::method_not_allowed)
        .with_state(state);
    match recorder {
        Some(recorder) => router.layer(axum::middleware::from_fn_with_state(
            recorder,
            crate::records::record_call,
        )),
        None => router,
    }
}

/// The admin listener's own budget of open connections, apart from the API listener's, so a
/// flood of API connections never leaves the admin API unreachable.
const ADMIN_MAX_CONNECTIONS: usize = 64;

/// File descriptors kept aside from client connections: stores, upstream pools, the cluster's
/// sockets, the admin listener's connections.
const RESERVED_FDS: u64 = 256;

/// `server.max_connections`, lowered when the process's file limit cannot hold that many
/// client connections with an upstream connection each, plus what the node itself needs; a
/// connection refused with a 503 is better than `accept` failing for every listener.
fn connection_cap(configured: usize) -> usize {
    let Ok((soft, _hard)) = rlimit::getrlimit(rlimit::Resource::NOFILE) else {
        return configured;
    };
    let fits = usize::try_from(soft.saturating_sub(RESERVED_FDS) / 2)
        .unwrap_or(usize::MAX)
        .max(1);
    if fits < configured {
        tracing::warn!(
            configured,
            open_files_limit = soft,
            using = fits,
            "server.max_connections is more than the open-files limit allows; raise the limit (ulimit -n) to use it"
        );
        return fits;
    }
    configured
}

/// Takes this node's place in the cluster and waits (bounded) until the cluster's state has
/// been bootstrapped, so a new node does not answer its first requests with an empty key table.
async fn start_cluster(
    config: &Config,
    api_addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    env: EnvLookup,
) -> Result<ClusterNode, StartError> {
    let settings = &config.cluster;
    let listen = config
        .node
        .cluster_listen
        .unwrap_or_else(|| SocketAddr::new(api_addr.ip(), 0));
    let options = ClusterOptions {
        node_id: config.node.id,
        cluster_name: settings.name.clone(),
        listen,
        data_dir: config.node.data_dir.clone(),
        initial_members: settings
            .initial_members
            .iter()
            .map(|m| (m.id, m.addr))
            .collect(),
        join: settings.join,
        bootstrap: bootstrap_command(
            &config.bootstrap,
            config.bootstrap.settings_toml.clone(),
            unix_now(),
        ),
        advertised: Advertised {
            api_addr: Some(api_addr.to_string()),
            admin_addr: admin_addr.map(|a| a.to_string()),
            version: env!("CARGO_PKG_VERSION").to_owned(),
        },
        timing: ClusterTiming {
            heartbeat: settings.heartbeat,
            election_min: settings.election_timeout_min,
            election_max: settings.election_timeout_max,
            snapshot_every: settings.snapshot_every,
            write_timeout: settings.write_timeout,
            gossip_interval: settings.gossip_interval,
        },
        env,
        peer_routes: crate::peer::routes(
            config.node.id,
            config
                .records
                .enabled
                .then(|| crate::records::Recorder::dir_under(&config.node.data_dir)),
        ),
    };
    let cluster = ClusterNode::start(options)
        .await
        .map_err(|e| StartError::Cluster(e.to_string()))?;
    let state = cluster.state();
    let mut changes = state.subscribe();
    let patience = settings.election_timeout_max * 3 + settings.write_timeout;
    let bootstrapped = tokio::time::timeout(patience, async {
        while !state.load().bootstrapped {
            if changes.changed().await.is_err() {
                return;
            }
        }
    })
    .await;
    if bootstrapped.is_err() {
        tracing::warn!(
            ?patience,
            "the cluster state is not bootstrapped yet (no leader reachable?); serving with what this node has"
        );
    }
    Ok(cluster)
}

/// Gossips this node's view of every upstream and feeds the live peers' views back to the
/// routing actors, once per gossip interval.
async fn exchange_upstream_views(cluster: ClusterNode, state: AppState, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        let upstreams = state.proxy.upstreams.load_full();
        for (id, view) in upstreams.local_views() {
            cluster.gossip_set(&format!("up:{id}"), view.as_str()).await;
        }
        let mut peers: BTreeMap<u64, BTreeMap<String, UpstreamView>> = BTreeMap::new();
        for (node, upstream, view) in cluster.gossip_values("up:").await {
            if node != cluster.id() {
                peers
                    .entry(node)
                    .or_default()
                    .insert(upstream, UpstreamView::parse(&view));
            }
        }
        upstreams.set_peer_views(peers);
    }
}

/// Closes the quota leases this node held before a restart, then gives back the leases of
/// idle keys every few seconds.
async fn keep_quotas(quotas: Arc<crate::quota::Quotas>) {
    quotas.close_leases_from_before().await;
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        quotas.close_idle();
    }
}

/// Rebuilds routing whenever the cluster applies a new settings revision that this node can
/// use (one it could not resolve keeps the previous routing; the snapshot says why).
async fn follow_settings(state: AppState, actors: Arc<Mutex<Option<NodeActors>>>) {
    let mut changes = state.cluster.subscribe();
    let mut applied = state.cluster.load().settings_revision;
    while changes.changed().await.is_ok() {
        let snapshot = state.cluster.load();
        if snapshot.settings_revision == applied || snapshot.settings_error.is_some() {
            continue;
        }
        applied = snapshot.settings_revision;
        let mut tree = actors.lock().await;
        let Some(tree) = tree.as_mut() else {
            break; // shutting down
        };
        match crate::state::apply_settings(&state, tree).await {
            Ok(()) => tracing::info!(revision = applied, "applied new cluster settings"),
            Err(error) => {
                tracing::error!(revision = applied, %error, "cannot apply the new cluster settings; keeping the previous routing");
            }
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("installing a SIGTERM handler cannot fail on unix");
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
    tracing::info!("shutdown signal received; draining");
}
