//! Sticky sessions: the binding session -> upstream, one actor per live session, with a TTL.
//!
//! The request path reads bindings from [`Sessions`] (a `DashMap` lookup, never held across
//! an await) and, after a request is served, casts which upstream served it. A session's actor
//! owns its entry: it writes the binding, moves it when a request had to be served elsewhere
//! (the bound upstream failed or was unavailable), and removes it and stops once the session
//! has been idle for the TTL.
//!
//! The first binding is not stored anywhere shared: it is rendezvous hashing over the
//! available targets (rendezvous.rs), which every node computes alike. So a session that
//! moves between nodes keeps its upstream without the nodes talking, and only a failover
//! (seen by the node that served it) makes bindings differ.

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::time::Instant;

use crate::mailbox::Mailbox;
use crate::rendezvous::SessionKey;
use crate::session_supervisor::SessionSupervisorMsg;

/// Where a session goes, and when it was last used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionBinding {
    pub upstream: Arc<str>,
    pub touched: Instant,
}

/// The bindings of every live session on this node, published by the session actors.
pub struct Sessions {
    table: DashMap<SessionKey, SessionBinding>,
    ttl: Duration,
    pub(crate) supervisor: Mailbox<SessionSupervisorMsg>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("len", &self.table.len())
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl Sessions {
    pub fn new(ttl: Duration) -> Arc<Self> {
        Arc::new(Self {
            table: DashMap::new(),
            ttl,
            supervisor: Mailbox::empty(),
        })
    }

    /// The upstream `session` is bound to, if it is live.
    pub fn bound_upstream(&self, session: SessionKey) -> Option<Arc<str>> {
        // Cloned out at once: a DashMap guard must never live across an await.
        self.table.get(&session).map(|b| Arc::clone(&b.upstream))
    }

    /// Reports that `upstream` served a request of `session`: binds a new session, keeps an
    /// existing one alive, or moves it after a failover.
    pub fn served(&self, session: SessionKey, upstream: &Arc<str>) {
        self.supervisor.cast(SessionSupervisorMsg::Served {
            session,
            upstream: Arc::clone(upstream),
        });
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    pub(crate) fn binding(&self, session: SessionKey) -> Option<SessionBinding> {
        self.table.get(&session).map(|b| b.clone())
    }

    pub(crate) fn keys(&self) -> Vec<SessionKey> {
        self.table.iter().map(|entry| *entry.key()).collect()
    }
}

/// Messages of a session actor.
#[derive(Debug)]
pub enum SessionMsg {
    /// A request of this session was served by this upstream.
    Served(Arc<str>),
    /// Check whether the session has been idle for the TTL.
    Expire,
}

pub struct SessionActor;

pub struct SessionArgs {
    pub session: SessionKey,
    /// The upstream that just served it; `None` to resume the published binding (restart).
    pub upstream: Option<Arc<str>>,
    pub sessions: Arc<Sessions>,
}

pub struct SessionState {
    session: SessionKey,
    binding: SessionBinding,
    sessions: Arc<Sessions>,
}

impl SessionState {
    fn publish(&self) {
        self.sessions
            .table
            .insert(self.session, self.binding.clone());
    }
}

impl Actor for SessionActor {
    type Msg = SessionMsg;
    type State = SessionState;
    type Arguments = SessionArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<SessionMsg>,
        args: SessionArgs,
    ) -> Result<SessionState, ActorProcessingErr> {
        let binding = match args.upstream {
            Some(upstream) => SessionBinding {
                upstream,
                touched: Instant::now(),
            },
            None => args
                .sessions
                .binding(args.session)
                .ok_or("no published binding to resume")?,
        };
        let state = SessionState {
            session: args.session,
            binding,
            sessions: args.sessions,
        };
        state.publish();
        Ok(state)
    }

    async fn post_start(
        &self,
        myself: ActorRef<SessionMsg>,
        state: &mut SessionState,
    ) -> Result<(), ActorProcessingErr> {
        let idle = state.binding.touched.elapsed();
        let ttl = state.sessions.ttl;
        myself.send_after(ttl.saturating_sub(idle), || SessionMsg::Expire);
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<SessionMsg>,
        message: SessionMsg,
        state: &mut SessionState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SessionMsg::Served(upstream) => {
                state.binding = SessionBinding {
                    upstream,
                    touched: Instant::now(),
                };
                state.publish();
            }
            SessionMsg::Expire => {
                let idle = state.binding.touched.elapsed();
                let ttl = state.sessions.ttl;
                if idle >= ttl {
                    state.sessions.table.remove(&state.session);
                    myself.stop(Some("idle for the session TTL".to_owned()));
                } else {
                    myself.send_after(ttl - idle, || SessionMsg::Expire);
                }
            }
        }
        Ok(())
    }
}
