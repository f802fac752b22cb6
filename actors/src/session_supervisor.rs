//! `SessionSupervisor`: spawns a session actor on a session's first served request, routes
//! later reports to it, and restarts a failed one from the binding it last published.
//!
//! Session actors are unnamed (there can be many, and a name would carry the session) and
//! known only through this supervisor's map. If the supervisor itself is restarted, its
//! children die with it; the new incarnation resumes every binding still in the table.

use std::collections::HashMap;
use std::sync::Arc;

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};

use crate::rendezvous::SessionKey;
use crate::session::{SessionActor, SessionArgs, SessionMsg, Sessions};

#[derive(Debug)]
pub enum SessionSupervisorMsg {
    /// `upstream` served a request of `session`.
    Served {
        session: SessionKey,
        upstream: Arc<str>,
    },
}

pub struct SessionSupervisor;

pub struct SessionSupervisorState {
    sessions: Arc<Sessions>,
    children: HashMap<SessionKey, ActorRef<SessionMsg>>,
    by_actor: HashMap<ActorId, SessionKey>,
}

impl Actor for SessionSupervisor {
    type Msg = SessionSupervisorMsg;
    type State = SessionSupervisorState;
    type Arguments = Arc<Sessions>;

    async fn pre_start(
        &self,
        myself: ActorRef<SessionSupervisorMsg>,
        sessions: Arc<Sessions>,
    ) -> Result<SessionSupervisorState, ActorProcessingErr> {
        sessions.supervisor.set(myself);
        Ok(SessionSupervisorState {
            sessions,
            children: HashMap::new(),
            by_actor: HashMap::new(),
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<SessionSupervisorMsg>,
        state: &mut SessionSupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        // Bindings left by a previous incarnation of this supervisor.
        for session in state.sessions.keys() {
            spawn_child(&myself, state, session, None).await;
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<SessionSupervisorMsg>,
        message: SessionSupervisorMsg,
        state: &mut SessionSupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        let SessionSupervisorMsg::Served { session, upstream } = message;
        let delivered = match state.children.get(&session) {
            Some(child) => child
                .cast(SessionMsg::Served(Arc::clone(&upstream)))
                .is_ok(),
            None => false,
        };
        if !delivered {
            spawn_child(&myself, state, session, Some(upstream)).await;
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<SessionSupervisorMsg>,
        event: SupervisionEvent,
        state: &mut SessionSupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorFailed(cell, error) => {
                if let Some(session) = forget(state, cell.get_id()) {
                    tracing::error!(%error, "session actor failed; resuming its binding");
                    spawn_child(&myself, state, session, None).await;
                }
            }
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                // Expired (or shut down): its entry is already gone from the table.
                forget(state, cell.get_id());
            }
            _ => {}
        }
        Ok(())
    }
}

/// Drops a child that ended; returns its session if it was the session's current actor.
fn forget(state: &mut SessionSupervisorState, actor: ActorId) -> Option<SessionKey> {
    let session = state.by_actor.remove(&actor)?;
    let current = state
        .children
        .get(&session)
        .is_some_and(|child| child.get_id() == actor);
    if current {
        state.children.remove(&session);
        Some(session)
    } else {
        None
    }
}

async fn spawn_child(
    myself: &ActorRef<SessionSupervisorMsg>,
    state: &mut SessionSupervisorState,
    session: SessionKey,
    upstream: Option<Arc<str>>,
) {
    let args = SessionArgs {
        session,
        upstream,
        sessions: Arc::clone(&state.sessions),
    };
    match Actor::spawn_linked(None, SessionActor, args, myself.get_cell()).await {
        Ok((child, _)) => {
            state.by_actor.insert(child.get_id(), session);
            state.children.insert(session, child);
        }
        // Only a restart with no binding left to resume gets here; the session simply starts
        // afresh on its next request.
        Err(error) => tracing::debug!(%error, "session actor not started"),
    }
}
