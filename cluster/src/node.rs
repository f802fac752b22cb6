//! `ClusterNode`: this node's membership in the cluster. Starts Raft (log and state machine on
//! redb), the node-to-node RPC server and gossip on the cluster address, forms or joins the
//! cluster, and offers the few operations the rest of the node needs: bounded writes that any
//! node accepts (forwarded to the leader), linearizable reads, membership changes and status.
//!
//! A node without peers is a one-member cluster: the same code path.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use openraft::{ServerState, SnapshotPolicy};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use crate::command::{Command, Outcome, Proposal, Rejection};
use crate::gossip::{Advertised, Gossip, GossipMember};
use crate::raft::network::PeerError;
use crate::raft::store::{self, StoreError};
use crate::raft::{LogStore, Network, Node, NodeId, PeerClient, Raft, StateStore};
use crate::rpc::{self, ForwardError, JoinRequest};
use crate::settings::EnvLookup;
use crate::snapshot::{ClusterState, Publisher, StateSnapshot};

/// Timings of Raft and gossip. The defaults suit nodes on one LAN.
#[derive(Debug, Clone)]
pub struct ClusterTiming {
    pub heartbeat: Duration,
    pub election_min: Duration,
    pub election_max: Duration,
    /// A snapshot is built after this many log entries; older entries are then purged.
    pub snapshot_every: u64,
    /// The longest an admin write or linearizable read may wait (for a leader, for a quorum)
    /// before it is answered as unavailable.
    pub write_timeout: Duration,
    pub gossip_interval: Duration,
}

impl Default for ClusterTiming {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_millis(100),
            election_min: Duration::from_millis(500),
            election_max: Duration::from_millis(1000),
            snapshot_every: 10_000,
            write_timeout: Duration::from_secs(5),
            gossip_interval: Duration::from_millis(200),
        }
    }
}

/// Everything a node needs to take part in a cluster.
#[derive(Clone)]
pub struct ClusterOptions {
    pub node_id: NodeId,
    /// Names the cluster; stored in the data dir and checked on every node-to-node call.
    pub cluster_name: String,
    /// TCP for Raft and node-to-node calls, UDP for gossip. Port 0 picks a free port.
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// The members that form a new cluster (id -> cluster address). Empty: this node alone.
    pub initial_members: BTreeMap<NodeId, SocketAddr>,
    /// Join an existing cluster through this member's cluster address.
    pub join: Option<SocketAddr>,
    /// Applied once, by the first leader of a new cluster (`bootstrap_command`).
    pub bootstrap: Command,
    pub advertised: Advertised,
    pub timing: ClusterTiming,
    /// Resolves `${ENV}` references in the settings document on this node.
    pub env: EnvLookup,
    /// Node-to-node routes the node adds on the cluster listener (peer.rs), served behind
    /// the cluster-name check. `Router::new()` for none.
    pub peer_routes: axum::Router,
}

/// Why a cluster operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start: {0}")]
    Start(String),
    /// No leader or no quorum within the write timeout: retry later or elsewhere.
    #[error("{0}")]
    Unavailable(String),
    /// The state machine refused the change.
    #[error("{0}")]
    Rejected(Rejection),
    #[error("node {0} is not a member of the cluster")]
    NotMember(NodeId),
}

/// One member as `status` reports it.
#[derive(Debug, Clone, Serialize)]
pub struct MemberStatus {
    pub id: NodeId,
    pub cluster_addr: String,
    /// `voter` or `learner`.
    pub raft_role: &'static str,
    /// The leader's view: entries this member is behind the leader's log (leader only).
    pub lag: Option<u64>,
    /// Whether gossip currently sees it alive.
    pub live: bool,
    pub api_addr: Option<String>,
    pub admin_addr: Option<String>,
    pub version: Option<String>,
}

/// The cluster as this node sees it.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterStatus {
    pub cluster_name: String,
    pub node_id: NodeId,
    /// This node's Raft state: `leader`, `follower`, `candidate`, `learner` or `shutdown`.
    pub state: &'static str,
    pub leader: Option<NodeId>,
    pub term: u64,
    pub last_log_index: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    pub snapshot_index: Option<u64>,
    pub members: Vec<MemberStatus>,
}

/// This node's handle on the cluster. Cloning shares it.
#[derive(Clone)]
pub struct ClusterNode {
    inner: Arc<Inner>,
}

struct Inner {
    id: NodeId,
    cluster_name: String,
    addr: SocketAddr,
    raft: Raft,
    state: ClusterState,
    peers: PeerClient,
    gossip: Mutex<Option<Gossip>>,
    timing: ClusterTiming,
    tasks: std::sync::Mutex<Vec<JoinHandle<()>>>,
}

impl ClusterNode {
    pub async fn start(options: ClusterOptions) -> Result<Self, ClusterError> {
        let ClusterOptions {
            node_id,
            cluster_name,
            listen,
            data_dir,
            initial_members,
            join,
            bootstrap,
            advertised,
            timing,
            env,
            peer_routes,
        } = options;
        let db = {
            let (dir, name) = (data_dir.clone(), cluster_name.clone());
            tokio::task::spawn_blocking(move || store::open(&dir, &name, node_id))
                .await
                .map_err(|e| ClusterError::Start(e.to_string()))??
        };
        let state = ClusterState::new(StateSnapshot::default());
        let state_store = StateStore::open(db.clone(), Publisher::new(state.clone(), env))
            .map_err(|what| StoreError::Corrupt {
                path: data_dir.join("raft.redb"),
                what,
            })?;
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|source| ClusterError::Bind {
                addr: listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| ClusterError::Bind {
            addr: listen,
            source,
        })?;
        let peers = PeerClient::new(addr.ip(), &cluster_name);

        let config = openraft::Config {
            cluster_name: cluster_name.clone(),
            heartbeat_interval: timing.heartbeat.as_millis() as u64,
            election_timeout_min: timing.election_min.as_millis() as u64,
            election_timeout_max: timing.election_max.as_millis() as u64,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(timing.snapshot_every),
            max_in_snapshot_log_to_keep: (timing.snapshot_every / 10).max(10),
            snapshot_max_chunk_size: rpc::SNAPSHOT_CHUNK,
            ..Default::default()
        }
        .validate()
        .map_err(|e| ClusterError::Start(format!("raft settings: {e}")))?;
        let raft = Raft::new(
            node_id,
            Arc::new(config),
            Network::new(peers.clone()),
            LogStore::new(db),
            state_store,
        )
        .await
        .map_err(|e| ClusterError::Start(format!("raft: {e}")))?;

        let rpc_router = rpc::router(raft.clone(), cluster_name.clone(), peer_routes);
        let rpc_task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, rpc_router).await {
                tracing::error!(error = %e, "cluster RPC server stopped");
            }
        });

        let mut seeds: Vec<SocketAddr> = initial_members.values().copied().collect();
        seeds.extend(join);
        let gossip = Gossip::start(
            node_id,
            &cluster_name,
            addr,
            seeds,
            &advertised,
            timing.gossip_interval,
        )
        .await
        .map_err(|e| ClusterError::Start(format!("gossip on udp {addr}: {e}")))?;

        let node = Self {
            inner: Arc::new(Inner {
                id: node_id,
                cluster_name,
                addr,
                raft,
                state,
                peers,
                gossip: Mutex::new(Some(gossip)),
                timing,
                tasks: std::sync::Mutex::new(vec![rpc_task]),
            }),
        };
        node.form_or_join(initial_members, join).await?;
        node.spawn(node.clone().bootstrap_when_leader(bootstrap));
        tracing::info!(node = node_id, cluster_addr = %addr, "cluster member started");
        Ok(node)
    }

    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let handle = tokio::spawn(task);
        if let Ok(mut tasks) = self.inner.tasks.lock() {
            tasks.push(handle);
        }
    }

    /// A new cluster is initialised once, by its lowest member id; a restart finds its vote
    /// and log on disk and never initialises again.
    async fn form_or_join(
        &self,
        initial_members: BTreeMap<NodeId, SocketAddr>,
        join: Option<SocketAddr>,
    ) -> Result<(), ClusterError> {
        let raft = &self.inner.raft;
        let initialized = raft
            .is_initialized()
            .await
            .map_err(|e| ClusterError::Start(e.to_string()))?;
        if initialized {
            return Ok(());
        }
        if let Some(seed) = join {
            let this = self.clone();
            self.spawn(async move { this.join_through(seed).await });
            return Ok(());
        }
        let members: BTreeMap<NodeId, Node> = if initial_members.is_empty() {
            BTreeMap::from([(
                self.inner.id,
                Node {
                    addr: self.inner.addr.to_string(),
                },
            )])
        } else {
            initial_members
                .iter()
                .map(|(id, addr)| {
                    // Our own entry uses the address we really bound (it may have been port 0).
                    let addr = if *id == self.inner.id {
                        self.inner.addr
                    } else {
                        *addr
                    };
                    (
                        *id,
                        Node {
                            addr: addr.to_string(),
                        },
                    )
                })
                .collect()
        };
        let lowest = members.keys().next().copied();
        if lowest == Some(self.inner.id) {
            raft.initialize(members)
                .await
                .map_err(|e| ClusterError::Start(format!("initialise the cluster: {e}")))?;
            tracing::info!("initialised a new cluster");
        }
        Ok(())
    }

    /// Asks `seed` (any member) to add this node; retries until it is in.
    async fn join_through(self, seed: SocketAddr) {
        let request = JoinRequest {
            id: self.inner.id,
            addr: self.inner.addr.to_string(),
        };
        let mut target = seed.to_string();
        loop {
            let answer: Result<Result<(), ForwardError>, _> = self
                .inner
                .peers
                .call(&target, "/cluster/join", &request, Duration::from_secs(60))
                .await;
            match answer {
                Ok(Ok(())) => {
                    tracing::info!(through = %seed, "joined the cluster");
                    return;
                }
                Ok(Err(ForwardError::NotLeader)) => {
                    // Ask the seed's leader: gossip knows its address once we hear from it.
                    if let Some(leader) = self.leader_cluster_addr().await {
                        target = leader;
                    }
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "join refused; retrying"),
                Err(e) => tracing::warn!(error = %e, "cannot reach the cluster to join; retrying"),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn leader_cluster_addr(&self) -> Option<String> {
        let metrics = self.inner.raft.metrics().borrow().clone();
        let leader = metrics.current_leader?;
        if let Some(node) = metrics.membership_config.membership().get_node(&leader) {
            return Some(node.addr.clone());
        }
        let members = self.gossip_members().await;
        members.get(&leader).map(|m| m.cluster_addr.to_string())
    }

    /// Whenever this node leads a cluster that has not been bootstrapped, it applies its
    /// `[bootstrap]`. The state machine ignores every copy after the first.
    async fn bootstrap_when_leader(self, bootstrap: Command) {
        let bootstrap = Proposal::new(bootstrap);
        let mut metrics = self.inner.raft.metrics();
        loop {
            let is_leader = metrics.borrow().state == ServerState::Leader;
            if is_leader && !self.inner.state.load().bootstrapped {
                match self.inner.raft.client_write(bootstrap.clone()).await {
                    Ok(response) => {
                        if response.data == (Outcome::Bootstrapped { applied: true }) {
                            tracing::info!("applied the config's [bootstrap] to the new cluster");
                        }
                        return;
                    }
                    Err(e) => tracing::warn!(error = %e, "bootstrap write failed; will retry"),
                }
            }
            if self.inner.state.load().bootstrapped {
                return;
            }
            if metrics.changed().await.is_err() {
                return;
            }
        }
    }

    /// The published state; lock-free.
    pub fn state(&self) -> ClusterState {
        self.inner.state.clone()
    }

    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    /// The address Raft and gossip listen on.
    pub fn cluster_addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// Commits `command` through the leader (forwarding if this node is not it). Answers
    /// within the write timeout: `Unavailable` when there is no leader or no quorum. After an
    /// `Unavailable` the change may or may not be applied later.
    pub async fn write(&self, command: Command) -> Result<Outcome, ClusterError> {
        let timeout = self.inner.timing.write_timeout;
        let outcome = tokio::time::timeout(timeout, self.write_until_done(command))
            .await
            .map_err(|_| {
                ClusterError::Unavailable(format!(
                    "the cluster did not commit the change within {timeout:?}: no leader or no quorum reachable from this node; it may still be applied"
                ))
            })?;
        match outcome {
            Outcome::Rejected(rejection) => Err(ClusterError::Rejected(rejection)),
            outcome => Ok(outcome),
        }
    }

    async fn write_until_done(&self, command: Command) -> Outcome {
        // One id for every attempt: a copy that commits after an earlier one is answered
        // with the earlier outcome, not applied again.
        let proposal = Proposal::new(command);
        loop {
            match self.inner.raft.client_write(proposal.clone()).await {
                Ok(response) => return response.data,
                Err(e) => match e.forward_to_leader::<Node>() {
                    Some(forward) => {
                        if let Some(leader) = &forward.leader_node {
                            let answer: Result<Result<Outcome, ForwardError>, _> = self
                                .inner
                                .peers
                                .call(
                                    &leader.addr,
                                    "/cluster/write",
                                    &proposal,
                                    self.inner.timing.write_timeout,
                                )
                                .await;
                            match answer {
                                Ok(Ok(outcome)) => return outcome,
                                Ok(Err(e)) => {
                                    tracing::debug!(error = %e, "forwarded write not done; retrying")
                                }
                                Err(e) => {
                                    tracing::debug!(error = %e, "leader unreachable; retrying")
                                }
                            }
                        }
                    }
                    None => tracing::warn!(error = %e, "write failed; retrying"),
                },
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Returns once this node's published state includes every change committed before the
    /// call (the read-index protocol; followers ask the leader for the index). Bounded by the
    /// write timeout.
    pub async fn linearizable_read(&self) -> Result<(), ClusterError> {
        let timeout = self.inner.timing.write_timeout;
        tokio::time::timeout(timeout, self.read_barrier())
            .await
            .map_err(|_| {
                ClusterError::Unavailable(format!(
                    "no leader with a quorum confirmed a read within {timeout:?}"
                ))
            })
    }

    async fn read_barrier(&self) {
        loop {
            match self.inner.raft.ensure_linearizable().await {
                Ok(_) => return,
                Err(e) => {
                    if let Some(leader) = e
                        .forward_to_leader::<Node>()
                        .and_then(|f| f.leader_node.clone())
                    {
                        let answer: Result<Result<u64, ForwardError>, _> = self
                            .inner
                            .peers
                            .call(
                                &leader.addr,
                                "/cluster/read_index",
                                &(),
                                self.inner.timing.write_timeout,
                            )
                            .await;
                        if let Ok(Ok(index)) = answer {
                            let _ = self
                                .inner
                                .raft
                                .wait(None)
                                .applied_index_at_least(Some(index), "linearizable read")
                                .await;
                            return;
                        }
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Removes a member (through the leader). Bounded by the write timeout.
    pub async fn remove_member(&self, id: NodeId) -> Result<(), ClusterError> {
        let timeout = self.inner.timing.write_timeout;
        let attempt = async {
            loop {
                let result = match self.leader_cluster_addr().await {
                    Some(_) if self.is_leader() => rpc::remove_member(&self.inner.raft, id).await,
                    Some(leader) => self
                        .inner
                        .peers
                        .call::<_, Result<(), ForwardError>>(
                            &leader,
                            "/cluster/remove",
                            &id,
                            timeout,
                        )
                        .await
                        .unwrap_or_else(|e| Err(ForwardError::Failed(e.to_string()))),
                    None => Err(ForwardError::NotLeader),
                };
                match result {
                    Ok(()) => {
                        // Committed; return once this node's own view shows it too, so a
                        // status read right after agrees (openraft's metrics trail commits).
                        let _ = self
                            .inner
                            .raft
                            .wait(Some(timeout))
                            .metrics(
                                |m| m.membership_config.membership().get_node(&id).is_none(),
                                "member removed",
                            )
                            .await;
                        return Ok(());
                    }
                    Err(ForwardError::NotMember) => return Err(ClusterError::NotMember(id)),
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(ClusterError::Unavailable(format!(
                "could not remove node {id} within {timeout:?}: no leader or no quorum"
            ))),
        }
    }

    fn is_leader(&self) -> bool {
        self.inner.raft.metrics().borrow().state == ServerState::Leader
    }

    /// Waits (bounded) until this node has a leader; true if it has one.
    pub async fn wait_for_leader(&self, timeout: Duration) -> bool {
        let mut metrics = self.inner.raft.metrics();
        tokio::time::timeout(timeout, async {
            loop {
                if metrics.borrow().current_leader.is_some() {
                    return;
                }
                if metrics.changed().await.is_err() {
                    return;
                }
            }
        })
        .await
        .is_ok()
            && self.inner.raft.metrics().borrow().current_leader.is_some()
    }

    async fn gossip_members(&self) -> BTreeMap<NodeId, GossipMember> {
        match self.inner.gossip.lock().await.as_ref() {
            Some(gossip) => gossip.members().await,
            None => BTreeMap::new(),
        }
    }

    /// Publishes a small value under this node through gossip.
    pub async fn gossip_set(&self, key: &str, value: &str) {
        if let Some(gossip) = self.inner.gossip.lock().await.as_ref() {
            gossip.set_local(key, value).await;
        }
    }

    /// Values live nodes published with `gossip_set` under keys starting with `prefix`.
    pub async fn gossip_values(&self, prefix: &str) -> Vec<(NodeId, String, String)> {
        match self.inner.gossip.lock().await.as_ref() {
            Some(gossip) => gossip.live_values(prefix).await,
            None => Vec::new(),
        }
    }

    /// POSTs `request` to `path` (a route of `ClusterOptions::peer_routes`) on the peer at
    /// `cluster_addr` and decodes its answer, within `timeout`.
    pub async fn call_peer<Req: Serialize, Resp: serde::de::DeserializeOwned>(
        &self,
        cluster_addr: &str,
        path: &str,
        request: &Req,
        timeout: Duration,
    ) -> Result<Resp, PeerError> {
        self.inner
            .peers
            .call(cluster_addr, path, request, timeout)
            .await
    }

    /// Members, roles, indexes and liveness, as this node sees them.
    pub async fn status(&self) -> ClusterStatus {
        let metrics = self.inner.raft.metrics().borrow().clone();
        let commit_index = self
            .inner
            .raft
            .with_raft_state(|state| state.committed.map_or(0, |id| id.index))
            .await
            .unwrap_or(0);
        let gossip = self.gossip_members().await;
        let membership = metrics.membership_config.membership();
        let voters: std::collections::BTreeSet<NodeId> = membership.voter_ids().collect();
        let last_log_index = metrics.last_log_index.unwrap_or(0);
        let members = membership
            .nodes()
            .map(|(id, node)| {
                let seen = gossip.get(id);
                let lag = metrics.replication.as_ref().map(|replication| {
                    let matched = replication
                        .get(id)
                        .and_then(|m| m.as_ref())
                        .map_or(0, |m| m.index);
                    if *id == self.inner.id {
                        0
                    } else {
                        last_log_index.saturating_sub(matched)
                    }
                });
                MemberStatus {
                    id: *id,
                    cluster_addr: node.addr.clone(),
                    raft_role: if voters.contains(id) {
                        "voter"
                    } else {
                        "learner"
                    },
                    lag,
                    live: *id == self.inner.id || seen.is_some_and(|m| m.live),
                    api_addr: seen.and_then(|m| m.api_addr.clone()),
                    admin_addr: seen.and_then(|m| m.admin_addr.clone()),
                    version: seen.and_then(|m| m.version.clone()),
                }
            })
            .collect();
        ClusterStatus {
            cluster_name: self.inner.cluster_name.clone(),
            node_id: self.inner.id,
            state: match metrics.state {
                ServerState::Leader => "leader",
                ServerState::Follower => "follower",
                ServerState::Candidate => "candidate",
                ServerState::Learner => "learner",
                ServerState::Shutdown => "shutdown",
            },
            leader: metrics.current_leader,
            term: metrics.current_term,
            last_log_index,
            commit_index,
            applied_index: metrics.last_applied.map_or(0, |id| id.index),
            snapshot_index: metrics.snapshot.map(|id| id.index),
            members,
        }
    }

    /// Stops Raft, gossip and the RPC server. The data dir stays as it is for a restart.
    pub async fn shutdown(&self) {
        let _ = self.inner.raft.shutdown().await;
        if let Some(gossip) = self.inner.gossip.lock().await.take() {
            gossip.shutdown().await;
        }
        if let Ok(mut tasks) = self.inner.tasks.lock() {
            for task in tasks.drain(..) {
                task.abort();
            }
        }
    }
}

/// Seconds since the unix epoch, for commands that record when they were made.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Milliseconds since the unix epoch: rate plans, request records.
pub fn unix_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
