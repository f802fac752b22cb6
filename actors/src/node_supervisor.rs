//! `NodeSupervisor`, the root of a node's supervision tree, and [`NodeActors`], the handle the
//! node starts it with, changes its upstreams through and stops it through.
//!
//! ```text
//! NodeSupervisor
//! ├── UpstreamSupervisor ── UpstreamActor (one per upstream)
//! ├── SessionSupervisor ─── SessionActor (one per live sticky session)
//! └── KeySupervisor ─────── KeyActor (one per key whose budget leases this node renews)
//! ```
//!
//! The key supervisor joins once the node's quotas start ([`NodeActors::start_keys`]): its
//! actors lease through the node's Raft, which the tree does not know, so the node hands it a
//! [`LeaseLedger`]. Each supervisor restarts a failed child; this one
//! restarts a failed supervisor, whose own start re-creates its children from the state they
//! published (upstream handles, session table), so no failure below the root loses what the
//! request path relies on.
//!
//! A settings change does not rebuild the tree: [`NodeActors::plan_upstreams`] decides which
//! upstreams are unchanged (their actors and handles are kept) and builds the new board, and
//! [`NodeActors::apply_upstreams`] has the tree stop the actors of removed or changed upstreams
//! and start those of new ones. The root records the new set before passing it down, so a
//! supervisor restarted afterwards starts the new set, not the one the node started with.
//! Sessions are not touched: a binding to an upstream that is gone is ignored by routing and
//! expires with its TTL.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use aigw_config::{NodeId, RoutingSettings};
use ractor::rpc::CallResult;
use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SpawnErr,
    SupervisionEvent,
};
use tokio::task::JoinHandle;

use crate::health::HealthProbe;
use crate::key::{KeyActors, LeaseLedger, key_actors, spawn_key_supervisor};
use crate::session::Sessions;
use crate::session_supervisor::SessionSupervisor;
use crate::upstream::{UpstreamHandle, UpstreamPolicy};
use crate::upstream_supervisor::{
    UpstreamChild, UpstreamSupervisor, UpstreamSupervisorArgs, UpstreamSupervisorMsg, plan_children,
};
use crate::upstreams::Upstreams;

/// How long `stop` waits for the tree to wind down.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the root waits for the upstream supervisor to reconcile its children (it waits
/// up to 2 s for the actors it stops, then starts the new ones).
const RECONCILE_TIMEOUT: Duration = Duration::from_secs(8);
/// How long `apply_upstreams` waits for the root; longer than `RECONCILE_TIMEOUT`, so it
/// times out only when the root itself is stuck.
const APPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// One upstream to run an actor for. Which specs count as unchanged across a settings
/// change: [`NodeActors::plan_upstreams`].
pub struct UpstreamSpec {
    pub id: Arc<str>,
    pub policy: UpstreamPolicy,
    pub probe: Arc<dyn HealthProbe>,
}

/// Why the tree did not take a new set of upstreams.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("the node's supervision tree is not running")]
    TreeDown,
    #[error("the node's supervision tree did not take the new upstreams within {0:?}")]
    Timeout(Duration),
}

/// The upstreams of a new settings revision, decided but not yet in force: the board to build
/// routes over, and what applying it will keep, start and stop.
pub struct UpstreamPlan {
    children: Vec<UpstreamChild>,
    upstreams: Arc<Upstreams>,
    kept: Vec<Arc<str>>,
    started: Vec<Arc<str>>,
    stopped: Vec<Arc<str>>,
}

impl UpstreamPlan {
    /// The new board: the kept upstreams' handles (the same `Arc`s the current board holds)
    /// and fresh ones for the rest, in the new settings' order.
    pub fn upstreams(&self) -> &Arc<Upstreams> {
        &self.upstreams
    }

    /// Upstreams whose actor and state carry on.
    pub fn kept(&self) -> &[Arc<str>] {
        &self.kept
    }

    /// Upstreams that get a new actor with fresh state: new ones and changed ones.
    pub fn started(&self) -> &[Arc<str>] {
        &self.started
    }

    /// Upstreams whose actor stops: removed ones and changed ones.
    pub fn stopped(&self) -> &[Arc<str>] {
        &self.stopped
    }
}

/// A running supervision tree and the shared state its actors publish.
pub struct NodeActors {
    root: ActorRef<NodeSupervisorMsg>,
    task: Option<JoinHandle<()>>,
    upstreams: Arc<Upstreams>,
    sessions: Arc<Sessions>,
    /// The upstreams the tree runs, as last applied: what the next plan is made from.
    children: Vec<UpstreamChild>,
    peer_down_quorum: u32,
    /// What makes this tree's actor names unique in the process.
    name_prefix: Arc<str>,
}

impl NodeActors {
    /// Starts the tree. `name_prefix` makes actor names unique in the process (two nodes in
    /// one test process must not collide in ractor's global registry).
    pub async fn start(
        node_id: NodeId,
        name_prefix: &str,
        upstreams: Vec<UpstreamSpec>,
        routing: &RoutingSettings,
    ) -> Result<Self, SpawnErr> {
        let children = plan_children(&[], upstreams, routing.peer_down_quorum);
        let board = Arc::new(Upstreams::new(node_id, handles(&children)));
        let sessions = Sessions::new(routing.session_ttl);
        let args = NodeSupervisorArgs {
            name_prefix: name_prefix.into(),
            upstreams: children.clone(),
            sessions: Arc::clone(&sessions),
        };
        let (root, task) =
            Actor::spawn(Some(format!("{name_prefix}/node")), NodeSupervisor, args).await?;
        Ok(Self {
            root,
            task: Some(task),
            upstreams: board,
            sessions,
            children,
            peer_down_quorum: routing.peer_down_quorum,
            name_prefix: name_prefix.into(),
        })
    }

    /// Decides what a settings change does to the upstreams, without doing it: an upstream
    /// with the same id, the same [`UpstreamPolicy`] and a probe with the same
    /// [`HealthProbe::target`] is unchanged and keeps its actor and [`UpstreamHandle`] (health,
    /// breaker, latency average, requests in flight, probe permits); every other one in
    /// `specs` gets a fresh handle, and those missing from `specs` are to stop. Build the
    /// routes over [`UpstreamPlan::upstreams`], then [`NodeActors::apply_upstreams`]; a plan
    /// that is dropped changes nothing.
    ///
    /// A kept upstream takes the new spec's probe: it is the one built with the upstream's
    /// new endpoint (the client and credentials the routes use), and checks the same target.
    pub fn plan_upstreams(&self, specs: Vec<UpstreamSpec>) -> UpstreamPlan {
        let children = plan_children(&self.children, specs, self.peer_down_quorum);
        let is_current = |handle: &Arc<UpstreamHandle>| {
            self.children
                .iter()
                .any(|current| Arc::ptr_eq(&current.handle, handle))
        };
        let is_planned = |handle: &Arc<UpstreamHandle>| {
            children
                .iter()
                .any(|planned| Arc::ptr_eq(&planned.handle, handle))
        };
        let id = |child: &UpstreamChild| Arc::clone(child.handle.id());
        let (kept, started) = children
            .iter()
            .partition::<Vec<_>, _>(|child| is_current(&child.handle));
        let stopped = self
            .children
            .iter()
            .filter(|child| !is_planned(&child.handle))
            .map(id)
            .collect();
        UpstreamPlan {
            upstreams: Arc::new(self.upstreams.successor(handles(&children))),
            kept: kept.into_iter().map(id).collect(),
            started: started.into_iter().map(id).collect(),
            stopped,
            children,
        }
    }

    /// Starts the key supervisor under the root: key actors lease through `ledger`. The
    /// returned handle starts a key's actor; the root restarts the supervisor if it fails.
    pub async fn start_keys<L: LeaseLedger>(&self, ledger: Arc<L>) -> Result<KeyActors<L>, String> {
        let name = format!("{}/keys", self.name_prefix);
        let spawn: SpawnKeys = {
            let name = name.clone();
            Arc::new(move |parent| {
                Box::pin(spawn_key_supervisor(
                    name.clone(),
                    Arc::clone(&ledger),
                    parent,
                ))
            })
        };
        let adopted = self
            .root
            .call(
                |reply| NodeSupervisorMsg::AdoptKeys(spawn, reply),
                Some(APPLY_TIMEOUT),
            )
            .await;
        match adopted {
            Ok(CallResult::Success(Ok(()))) => Ok(key_actors(&self.name_prefix)),
            Ok(CallResult::Success(Err(error))) => Err(error.to_string()),
            Ok(CallResult::Timeout) => Err(ApplyError::Timeout(APPLY_TIMEOUT).to_string()),
            Ok(CallResult::SenderError) | Err(_) => Err(ApplyError::TreeDown.to_string()),
        }
    }

    /// Puts `plan` in force: when this returns, the actors of removed and changed upstreams
    /// are stopped and those of new and changed ones run (a start that failed is being
    /// retried by the supervisor), and [`NodeActors::upstreams`] is the plan's board, which
    /// it also returns. Sessions are kept. On an error the node keeps its current board; a
    /// tree that timed out may still take the plan later, and the next apply reconciles from
    /// whatever it runs (children are matched by handle, not by position).
    pub async fn apply_upstreams(
        &mut self,
        plan: UpstreamPlan,
    ) -> Result<Arc<Upstreams>, ApplyError> {
        let children = plan.children.clone();
        let sent = self
            .root
            .call(
                |reply| NodeSupervisorMsg::SetUpstreams(children, reply),
                Some(APPLY_TIMEOUT),
            )
            .await;
        match sent {
            Ok(CallResult::Success(())) => {}
            Ok(CallResult::Timeout) => return Err(ApplyError::Timeout(APPLY_TIMEOUT)),
            Ok(CallResult::SenderError) | Err(_) => return Err(ApplyError::TreeDown),
        }
        self.children = plan.children;
        self.upstreams = Arc::clone(&plan.upstreams);
        Ok(plan.upstreams)
    }

    pub fn upstreams(&self) -> &Arc<Upstreams> {
        &self.upstreams
    }

    pub fn sessions(&self) -> &Arc<Sessions> {
        &self.sessions
    }

    /// The root actor, e.g. to inspect the tree in a test.
    pub fn root(&self) -> ActorCell {
        self.root.get_cell()
    }

    /// Stops every actor and waits (a bounded time) until they are gone.
    pub async fn stop(mut self) {
        let _ = self
            .root
            .stop_and_wait(Some("node shutdown".into()), Some(STOP_TIMEOUT))
            .await;
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(STOP_TIMEOUT, task).await;
        }
    }
}

impl Drop for NodeActors {
    fn drop(&mut self) {
        // A node dropped without `stop` (a test's early return) must not leave probes running.
        if self.task.is_some() {
            self.root.stop(Some("node dropped".into()));
        }
    }
}

fn handles(children: &[UpstreamChild]) -> Vec<Arc<UpstreamHandle>> {
    children.iter().map(|c| Arc::clone(&c.handle)).collect()
}

pub struct NodeSupervisor;

pub enum NodeSupervisorMsg {
    /// Supervise exactly these upstreams from now on (`NodeActors::apply_upstreams`).
    SetUpstreams(Vec<UpstreamChild>, RpcReplyPort<()>),
    /// Start the key supervisor with this spawn, and restart it with the same when it fails
    /// (`NodeActors::start_keys`).
    AdoptKeys(SpawnKeys, RpcReplyPort<Result<(), SpawnErr>>),
}

/// Spawns the key supervisor under the given parent; the ledger's type is erased in it.
pub type SpawnKeys = Arc<
    dyn Fn(ActorCell) -> Pin<Box<dyn Future<Output = Result<ActorCell, SpawnErr>> + Send>>
        + Send
        + Sync,
>;

pub struct NodeSupervisorArgs {
    name_prefix: Arc<str>,
    upstreams: Vec<UpstreamChild>,
    sessions: Arc<Sessions>,
}

pub struct NodeSupervisorState {
    /// What a restarted supervisor starts from; `upstreams` follows every applied change.
    args: NodeSupervisorArgs,
    upstream_supervisor: Option<ActorRef<UpstreamSupervisorMsg>>,
    session_supervisor: Option<ActorId>,
    /// The key supervisor, and how to start it again.
    key_supervisor: Option<(ActorId, SpawnKeys)>,
}

impl Actor for NodeSupervisor {
    type Msg = NodeSupervisorMsg;
    type State = NodeSupervisorState;
    type Arguments = NodeSupervisorArgs;

    /// Starts both supervisors (and so the whole tree) before returning: when
    /// `NodeActors::start` returns, every mailbox the request path casts to is set.
    async fn pre_start(
        &self,
        myself: ActorRef<NodeSupervisorMsg>,
        args: NodeSupervisorArgs,
    ) -> Result<NodeSupervisorState, ActorProcessingErr> {
        let upstream_supervisor = Some(spawn_upstream_supervisor(&myself, &args).await?);
        let session_supervisor = Some(spawn_session_supervisor(&myself, &args).await?);
        Ok(NodeSupervisorState {
            args,
            upstream_supervisor,
            session_supervisor,
            key_supervisor: None,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<NodeSupervisorMsg>,
        message: NodeSupervisorMsg,
        state: &mut NodeSupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        let (children, reply) = match message {
            NodeSupervisorMsg::SetUpstreams(children, reply) => (children, reply),
            NodeSupervisorMsg::AdoptKeys(spawn, reply) => {
                let started = spawn(myself.get_cell()).await;
                let _ = reply.send(started.map(|cell| {
                    state.key_supervisor = Some((cell.get_id(), spawn));
                }));
                return Ok(());
            }
        };
        // Recorded first: should the upstream supervisor fail before it has reconciled, its
        // restart starts this set.
        state.args.upstreams = children.clone();
        if let Some(supervisor) = &state.upstream_supervisor {
            let reconciled = supervisor
                .call(
                    |reply| UpstreamSupervisorMsg::Reconcile(children, reply),
                    Some(RECONCILE_TIMEOUT),
                )
                .await;
            if !matches!(reconciled, Ok(CallResult::Success(()))) {
                // Failed: its restart starts the new set. Slow: the message is still queued.
                tracing::warn!("the upstream supervisor did not confirm the new upstreams in time");
            }
        }
        let _ = reply.send(());
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<NodeSupervisorMsg>,
        event: SupervisionEvent,
        state: &mut NodeSupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        let SupervisionEvent::ActorFailed(cell, error) = event else {
            return Ok(());
        };
        let failed = Some(cell.get_id());
        // Should a restart fail too, the error stops this root, which the node logs; no
        // failure of a supervisor's children gets here, only the supervisors' own.
        if failed == state.upstream_supervisor.as_ref().map(|s| s.get_id()) {
            tracing::error!(%error, "upstream supervisor failed; restarting it");
            state.upstream_supervisor =
                Some(spawn_upstream_supervisor(&myself, &state.args).await?);
        } else if failed == state.session_supervisor {
            tracing::error!(%error, "session supervisor failed; restarting it");
            state.session_supervisor = Some(spawn_session_supervisor(&myself, &state.args).await?);
        } else if let Some((id, spawn)) = state.key_supervisor.as_mut()
            && failed == Some(*id)
        {
            tracing::error!(%error, "key supervisor failed; restarting it");
            *id = spawn(myself.get_cell()).await?.get_id();
        }
        Ok(())
    }
}

async fn spawn_upstream_supervisor(
    myself: &ActorRef<NodeSupervisorMsg>,
    args: &NodeSupervisorArgs,
) -> Result<ActorRef<UpstreamSupervisorMsg>, SpawnErr> {
    let name = format!("{}/upstreams", args.name_prefix);
    let child_args = UpstreamSupervisorArgs {
        name_prefix: Arc::clone(&args.name_prefix),
        children: args.upstreams.clone(),
    };
    let (actor, _) = Actor::spawn_linked(
        Some(name),
        UpstreamSupervisor,
        child_args,
        myself.get_cell(),
    )
    .await?;
    Ok(actor)
}

async fn spawn_session_supervisor(
    myself: &ActorRef<NodeSupervisorMsg>,
    args: &NodeSupervisorArgs,
) -> Result<ActorId, SpawnErr> {
    let name = format!("{}/sessions", args.name_prefix);
    let (actor, _) = Actor::spawn_linked(
        Some(name),
        SessionSupervisor,
        Arc::clone(&args.sessions),
        myself.get_cell(),
    )
    .await?;
    Ok(actor.get_id())
}
