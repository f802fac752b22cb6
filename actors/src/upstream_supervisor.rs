//! `UpstreamSupervisor`: one [`UpstreamActor`] per upstream, each restarted when it fails.
//!
//! ractor's default supervisor stops itself when any child exits, which would silently end
//! health checking for every upstream; this one restarts the failed child instead. The new
//! incarnation starts from the snapshot the failed one last published (it lives in the
//! child's [`UpstreamHandle`], which the supervisor keeps), so an open breaker stays open and
//! a down upstream stays down across the restart.
//!
//! Children are named `<node prefix>/upstream/<id>` so an operator can find them in the
//! registry; the prefix makes two nodes in one process (tests) distinct.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};

use crate::health::HealthProbe;
use crate::upstream::{UpstreamActor, UpstreamArgs, UpstreamHandle};

/// How long to wait before trying again when a restart itself fails.
const RESPAWN_RETRY: Duration = Duration::from_secs(1);

/// One upstream to supervise.
#[derive(Clone)]
pub struct UpstreamChild {
    pub handle: Arc<UpstreamHandle>,
    pub probe: Arc<dyn HealthProbe>,
}

pub struct UpstreamSupervisor;

pub struct UpstreamSupervisorArgs {
    pub name_prefix: Arc<str>,
    pub children: Vec<UpstreamChild>,
}

pub struct UpstreamSupervisorState {
    name_prefix: Arc<str>,
    children: Vec<UpstreamChild>,
    /// Running child -> its index in `children`.
    running: HashMap<ActorId, usize>,
}

#[derive(Debug)]
pub enum UpstreamSupervisorMsg {
    /// Try again to start child `index` (an earlier restart failed).
    Respawn(usize),
}

impl Actor for UpstreamSupervisor {
    type Msg = UpstreamSupervisorMsg;
    type State = UpstreamSupervisorState;
    type Arguments = UpstreamSupervisorArgs;

    /// Starts every child before returning, so the tree is whole when the node starts
    /// serving.
    async fn pre_start(
        &self,
        myself: ActorRef<UpstreamSupervisorMsg>,
        args: UpstreamSupervisorArgs,
    ) -> Result<UpstreamSupervisorState, ActorProcessingErr> {
        let mut state = UpstreamSupervisorState {
            name_prefix: args.name_prefix,
            children: args.children,
            running: HashMap::new(),
        };
        for index in 0..state.children.len() {
            spawn_child(&myself, &mut state, index).await?;
        }
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<UpstreamSupervisorMsg>,
        message: UpstreamSupervisorMsg,
        state: &mut UpstreamSupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        let UpstreamSupervisorMsg::Respawn(index) = message;
        restart(&myself, state, index).await;
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<UpstreamSupervisorMsg>,
        event: SupervisionEvent,
        state: &mut UpstreamSupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorFailed(cell, error) => {
                if let Some(index) = state.running.remove(&cell.get_id()) {
                    let handle = &state.children[index].handle;
                    handle.count_restart();
                    tracing::error!(
                        upstream = %handle.id(),
                        %error,
                        "upstream actor failed; restarting it from its last published state"
                    );
                    restart(&myself, state, index).await;
                }
            }
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                // Stopped on purpose (shutdown): nothing to restart.
                state.running.remove(&cell.get_id());
            }
            _ => {}
        }
        Ok(())
    }
}

async fn restart(
    myself: &ActorRef<UpstreamSupervisorMsg>,
    state: &mut UpstreamSupervisorState,
    index: usize,
) {
    if let Err(error) = spawn_child(myself, state, index).await {
        tracing::error!(
            upstream = %state.children[index].handle.id(),
            %error,
            "could not restart the upstream actor; trying again"
        );
        myself.send_after(RESPAWN_RETRY, move || UpstreamSupervisorMsg::Respawn(index));
    }
}

async fn spawn_child(
    myself: &ActorRef<UpstreamSupervisorMsg>,
    state: &mut UpstreamSupervisorState,
    index: usize,
) -> Result<(), ActorProcessingErr> {
    let child = &state.children[index];
    let name = format!("{}/upstream/{}", state.name_prefix, child.handle.id());
    // After this supervisor itself was restarted, the previous incarnation's children may
    // still be on their way out and hold the name.
    if let Some(previous) = ractor::registry::where_is(name.clone()) {
        let _ = previous.kill_and_wait(Some(RESPAWN_RETRY)).await;
    }
    let args = UpstreamArgs {
        handle: Arc::clone(&child.handle),
        probe: Arc::clone(&child.probe),
    };
    let (actor, _) =
        Actor::spawn_linked(Some(name), UpstreamActor, args, myself.get_cell()).await?;
    state.running.insert(actor.get_id(), index);
    Ok(())
}
