//! `NodeSupervisor`, the root of a node's supervision tree, and [`NodeActors`], the handle the
//! node starts it with and stops it through.
//!
//! ```text
//! NodeSupervisor
//! ├── UpstreamSupervisor ── UpstreamActor (one per upstream)
//! └── SessionSupervisor ─── SessionActor (one per live sticky session)
//! ```
//!
//! (`KeySupervisor` joins with quotas.) Each supervisor restarts a failed child; this one
//! restarts a failed supervisor, whose own start re-creates its children from the state they
//! published (upstream handles, session table), so no failure below the root loses what the
//! request path relies on.

use std::sync::Arc;
use std::time::Duration;

use aigw_config::{NodeId, RoutingSettings};
use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, SpawnErr, SupervisionEvent};
use tokio::task::JoinHandle;

use crate::health::HealthProbe;
use crate::session::Sessions;
use crate::session_supervisor::SessionSupervisor;
use crate::upstream::{UpstreamHandle, UpstreamPolicy};
use crate::upstream_supervisor::{UpstreamChild, UpstreamSupervisor, UpstreamSupervisorArgs};
use crate::upstreams::Upstreams;

/// How long `stop` waits for the tree to wind down.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// One upstream to run an actor for.
pub struct UpstreamSpec {
    pub id: Arc<str>,
    pub policy: UpstreamPolicy,
    pub probe: Arc<dyn HealthProbe>,
}

/// A running supervision tree and the shared state its actors publish.
pub struct NodeActors {
    root: ActorRef<()>,
    task: Option<JoinHandle<()>>,
    upstreams: Arc<Upstreams>,
    sessions: Arc<Sessions>,
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
        let children: Vec<UpstreamChild> = upstreams
            .into_iter()
            .map(|spec| UpstreamChild {
                handle: UpstreamHandle::new(spec.id, spec.policy, routing.peer_down_quorum),
                probe: spec.probe,
            })
            .collect();
        let board = Arc::new(Upstreams::new(
            node_id,
            children.iter().map(|c| Arc::clone(&c.handle)).collect(),
        ));
        let sessions = Sessions::new(routing.session_ttl);
        let args = NodeSupervisorArgs {
            name_prefix: name_prefix.into(),
            upstreams: children,
            sessions: Arc::clone(&sessions),
        };
        let (root, task) =
            Actor::spawn(Some(format!("{name_prefix}/node")), NodeSupervisor, args).await?;
        Ok(Self {
            root,
            task: Some(task),
            upstreams: board,
            sessions,
        })
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

pub struct NodeSupervisor;

pub struct NodeSupervisorArgs {
    name_prefix: Arc<str>,
    upstreams: Vec<UpstreamChild>,
    sessions: Arc<Sessions>,
}

pub struct NodeSupervisorState {
    args: NodeSupervisorArgs,
    upstream_supervisor: Option<ActorId>,
    session_supervisor: Option<ActorId>,
}

impl Actor for NodeSupervisor {
    type Msg = ();
    type State = NodeSupervisorState;
    type Arguments = NodeSupervisorArgs;

    /// Starts both supervisors (and so the whole tree) before returning: when
    /// `NodeActors::start` returns, every mailbox the request path casts to is set.
    async fn pre_start(
        &self,
        myself: ActorRef<()>,
        args: NodeSupervisorArgs,
    ) -> Result<NodeSupervisorState, ActorProcessingErr> {
        let upstream_supervisor = Some(spawn_upstream_supervisor(&myself, &args).await?);
        let session_supervisor = Some(spawn_session_supervisor(&myself, &args).await?);
        Ok(NodeSupervisorState {
            args,
            upstream_supervisor,
            session_supervisor,
        })
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<()>,
        event: SupervisionEvent,
        state: &mut NodeSupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        let SupervisionEvent::ActorFailed(cell, error) = event else {
            return Ok(());
        };
        let failed = Some(cell.get_id());
        // Should a restart fail too, the error stops this root, which the node logs; no
        // failure of a supervisor's children gets here, only the supervisors' own.
        if failed == state.upstream_supervisor {
            tracing::error!(%error, "upstream supervisor failed; restarting it");
            state.upstream_supervisor =
                Some(spawn_upstream_supervisor(&myself, &state.args).await?);
        } else if failed == state.session_supervisor {
            tracing::error!(%error, "session supervisor failed; restarting it");
            state.session_supervisor = Some(spawn_session_supervisor(&myself, &state.args).await?);
        }
        Ok(())
    }
}

async fn spawn_upstream_supervisor(
    myself: &ActorRef<()>,
    args: &NodeSupervisorArgs,
) -> Result<ActorId, SpawnErr> {
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
    Ok(actor.get_id())
}

async fn spawn_session_supervisor(
    myself: &ActorRef<()>,
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
