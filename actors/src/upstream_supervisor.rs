//! `UpstreamSupervisor`: one [`UpstreamActor`] per upstream, each restarted when it fails, and
//! the set of upstreams reconciled when the settings change.
//!
//! ractor's default supervisor stops itself when any child exits, which would silently end
//! health checking for every upstream; this one restarts the failed child instead. The new
//! incarnation starts from the snapshot the failed one last published (it lives in the
//! child's [`UpstreamHandle`], which the supervisor keeps), so an open breaker stays open and
//! a down upstream stays down across the restart.
//!
//! A settings change hands it the whole new set ([`UpstreamSupervisorMsg::Reconcile`]), which
//! [`plan_children`] derived from the old one. A child is known by its handle (the `Arc`):
//! a child whose handle is in both sets keeps its running actor (and gets the new probe); one
//! whose handle is gone (removed, or replaced because its settings changed) is stopped; one
//! with a new handle is started.
//!
//! Children are named `<node prefix>/upstream/<id>` so an operator can find them in the
//! registry; the prefix makes two nodes in one process (tests) distinct.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};

use crate::health::{HealthProbe, same_target};
use crate::node_supervisor::UpstreamSpec;
use crate::upstream::{UpstreamActor, UpstreamArgs, UpstreamHandle, UpstreamMsg};

/// How long to wait before trying again when a restart itself fails.
const RESPAWN_RETRY: Duration = Duration::from_secs(1);
/// How long a reconcile waits for the actors it stops (a replaced upstream's successor
/// takes the same name).
const CHILD_STOP_WAIT: Duration = Duration::from_secs(2);

/// One upstream to supervise.
#[derive(Clone)]
pub struct UpstreamChild {
    pub handle: Arc<UpstreamHandle>,
    pub probe: Arc<dyn HealthProbe>,
}

/// The children for a new settings revision, in its order. An upstream is unchanged, and
/// keeps its handle (so its health, breaker, latency average, requests in flight and probe
/// permits), when its id, its [`UpstreamPolicy`](crate::UpstreamPolicy) (health-check and
/// breaker settings) and its probe's target ([`HealthProbe::target`]) are all the same;
/// it takes the new probe object, which may carry a new client or credentials for that
/// target. Anything else gets a fresh handle: an upstream whose address or thresholds changed
/// is, for health and breaker, a new upstream. Settings the actor never reads (timeouts,
/// credentials, models) do not count. An id given twice keeps its handle only once.
pub(crate) fn plan_children(
    current: &[UpstreamChild],
    specs: Vec<UpstreamSpec>,
    peer_down_quorum: u32,
) -> Vec<UpstreamChild> {
    let mut current: HashMap<&str, &UpstreamChild> =
        current.iter().map(|c| (&**c.handle.id(), c)).collect();
    specs
        .into_iter()
        .map(|spec| {
            let handle = match current.remove(&*spec.id) {
                Some(child)
                    if child.handle.policy() == &spec.policy
                        && same_target(&child.probe, &spec.probe) =>
                {
                    Arc::clone(&child.handle)
                }
                _ => UpstreamHandle::new(spec.id, spec.policy, peer_down_quorum),
            };
            UpstreamChild {
                handle,
                probe: spec.probe,
            }
        })
        .collect()
}

pub struct UpstreamSupervisor;

pub struct UpstreamSupervisorArgs {
    pub name_prefix: Arc<str>,
    pub children: Vec<UpstreamChild>,
}

pub struct UpstreamSupervisorState {
    name_prefix: Arc<str>,
    /// In settings order.
    children: Vec<Supervised>,
}

struct Supervised {
    child: UpstreamChild,
    /// The running incarnation; `None` while a restart is pending.
    actor: Option<ActorRef<UpstreamMsg>>,
}

#[derive(Debug)]
pub enum UpstreamSupervisorMsg {
    /// Try again to start this upstream's actor (an earlier start failed). Ignored when the
    /// upstream has been removed or replaced since, or its actor runs.
    Respawn(Arc<UpstreamHandle>),
    /// Supervise exactly these children from now on (a settings change); replies once the
    /// actors of the children no longer wanted are stopped and those of new ones started.
    Reconcile(Vec<UpstreamChild>, RpcReplyPort<()>),
}

impl std::fmt::Debug for UpstreamChild {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamChild")
            .field("upstream", self.handle.id())
            .finish_non_exhaustive()
    }
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
            children: args
                .children
                .into_iter()
                .map(|child| Supervised { child, actor: None })
                .collect(),
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
        match message {
            UpstreamSupervisorMsg::Respawn(handle) => {
                let pending = state
                    .children
                    .iter()
                    .position(|s| Arc::ptr_eq(&s.child.handle, &handle) && s.actor.is_none());
                if let Some(index) = pending {
                    restart(&myself, state, index).await;
                }
            }
            UpstreamSupervisorMsg::Reconcile(children, reply) => {
                reconcile(&myself, state, children).await;
                // The caller may have given up waiting; the set is in force regardless.
                let _ = reply.send(());
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<UpstreamSupervisorMsg>,
        event: SupervisionEvent,
        state: &mut UpstreamSupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        // An actor this supervisor stopped on purpose (reconcile) is no longer in `children`:
        // its events find nothing.
        match event {
            SupervisionEvent::ActorFailed(cell, error) => {
                if let Some(index) = state.index_of(cell.get_id()) {
                    state.children[index].actor = None;
                    let handle = &state.children[index].child.handle;
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
                if let Some(index) = state.index_of(cell.get_id()) {
                    state.children[index].actor = None;
                }
            }
            _ => {}
        }
        Ok(())
    }
}

impl UpstreamSupervisorState {
    fn index_of(&self, actor: ractor::ActorId) -> Option<usize> {
        self.children.iter().position(|s| {
            s.actor
                .as_ref()
                .is_some_and(|running| running.get_id() == actor)
        })
    }
}

/// Makes `wanted` the supervised set: stops the actors of children not in it, hands kept
/// ones their new probe, starts new ones. A start that fails is retried like a restart.
async fn reconcile(
    myself: &ActorRef<UpstreamSupervisorMsg>,
    state: &mut UpstreamSupervisorState,
    wanted: Vec<UpstreamChild>,
) {
    let is_wanted = |handle: &Arc<UpstreamHandle>| {
        wanted
            .iter()
            .any(|child| Arc::ptr_eq(&child.handle, handle))
    };
    let (mut kept, gone): (Vec<Supervised>, Vec<Supervised>) = std::mem::take(&mut state.children)
        .into_iter()
        .partition(|s| is_wanted(&s.child.handle));
    // Stop them all first, then wait, so they wind down together.
    let stopping: Vec<ActorRef<UpstreamMsg>> = gone.into_iter().filter_map(|s| s.actor).collect();
    for actor in &stopping {
        actor.stop(Some("upstream removed or its settings changed".into()));
    }
    for actor in &stopping {
        let _ = actor.wait(Some(CHILD_STOP_WAIT)).await;
    }
    for child in wanted {
        let known = kept
            .iter()
            .position(|s| Arc::ptr_eq(&s.child.handle, &child.handle));
        match known {
            Some(index) => {
                let mut supervised = kept.swap_remove(index);
                if !Arc::ptr_eq(&supervised.child.probe, &child.probe)
                    && let Some(actor) = &supervised.actor
                {
                    // If the actor is down meanwhile, its restart takes the new probe.
                    let _ = actor.cast(UpstreamMsg::UseProbe(Arc::clone(&child.probe)));
                }
                supervised.child = child;
                state.children.push(supervised);
            }
            None => {
                state.children.push(Supervised { child, actor: None });
                restart(myself, state, state.children.len() - 1).await;
            }
        }
    }
}

async fn restart(
    myself: &ActorRef<UpstreamSupervisorMsg>,
    state: &mut UpstreamSupervisorState,
    index: usize,
) {
    if let Err(error) = spawn_child(myself, state, index).await {
        let handle = Arc::clone(&state.children[index].child.handle);
        tracing::error!(
            upstream = %handle.id(),
            %error,
            "could not start the upstream actor; trying again"
        );
        myself.send_after(RESPAWN_RETRY, move || {
            UpstreamSupervisorMsg::Respawn(handle)
        });
    }
}

async fn spawn_child(
    myself: &ActorRef<UpstreamSupervisorMsg>,
    state: &mut UpstreamSupervisorState,
    index: usize,
) -> Result<(), ActorProcessingErr> {
    let child = &state.children[index].child;
    let name = format!("{}/upstream/{}", state.name_prefix, child.handle.id());
    // After this supervisor itself was restarted, the previous incarnation's children may
    // still be on their way out and hold the name; so may a replaced upstream's actor that
    // outlasted the reconcile's wait.
    if let Some(previous) = ractor::registry::where_is(name.clone()) {
        let _ = previous.kill_and_wait(Some(RESPAWN_RETRY)).await;
    }
    let args = UpstreamArgs {
        handle: Arc::clone(&child.handle),
        probe: Arc::clone(&child.probe),
    };
    let (actor, _) =
        Actor::spawn_linked(Some(name), UpstreamActor, args, myself.get_cell()).await?;
    state.children[index].actor = Some(actor);
    Ok(())
}

#[cfg(test)]
mod tests {
    use aigw_config::{BreakerSettings, HealthCheckSettings};

    use super::*;
    use crate::health::ProbeFuture;
    use crate::upstream::UpstreamPolicy;

    struct Probe(Option<&'static str>);

    impl HealthProbe for Probe {
        fn probe(&self) -> ProbeFuture {
            Box::pin(async { Ok(()) })
        }

        fn target(&self) -> Option<String> {
            self.0.map(str::to_owned)
        }
    }

    fn policy(consecutive_failures: u32) -> UpstreamPolicy {
        UpstreamPolicy {
            health: HealthCheckSettings::default(),
            breaker: BreakerSettings {
                consecutive_failures,
                ..BreakerSettings::default()
            },
        }
    }

    fn spec(id: &str, policy: UpstreamPolicy, probe: &Arc<dyn HealthProbe>) -> UpstreamSpec {
        UpstreamSpec {
            id: id.into(),
            policy,
            probe: Arc::clone(probe),
        }
    }

    fn probe(target: Option<&'static str>) -> Arc<dyn HealthProbe> {
        Arc::new(Probe(target))
    }

    #[test]
    fn an_upstream_is_unchanged_with_the_same_id_policy_and_probe_target() {
        let at_a = probe(Some("http://a/health"));
        let untargeted = probe(None);
        let current = plan_children(
            &[],
            vec![
                spec("a", policy(5), &at_a),
                spec("b", policy(5), &untargeted),
                spec("c", policy(5), &at_a),
                spec("d", policy(5), &at_a),
                spec("e", policy(5), &untargeted),
            ],
            2,
        );
        let rebuilt = probe(Some("http://a/health"));
        let next = plan_children(
            &current,
            vec![
                // A new probe object with the same target: kept, with the new probe.
                spec("a", policy(5), &rebuilt),
                // No target, same object: kept.
                spec("b", policy(5), &untargeted),
                // Another target, or a policy change: fresh.
                spec("c", policy(5), &probe(Some("http://c/health"))),
                spec("d", policy(6), &at_a),
                // No target and another object: fresh.
                spec("e", policy(5), &probe(None)),
                // New.
                spec("f", policy(5), &at_a),
            ],
            2,
        );
        let kept: Vec<bool> = next
            .iter()
            .map(|child| {
                current
                    .iter()
                    .any(|old| Arc::ptr_eq(&old.handle, &child.handle))
            })
            .collect();
        assert_eq!(kept, [true, true, false, false, false, false]);
        assert!(Arc::ptr_eq(&next[0].probe, &rebuilt));
        let ids: Vec<&str> = next.iter().map(|c| &**c.handle.id()).collect();
        assert_eq!(ids, ["a", "b", "c", "d", "e", "f"], "in the new order");
        assert_eq!(next[3].handle.policy(), &policy(6));
    }

    #[test]
    fn an_id_given_twice_keeps_its_handle_only_once() {
        let at_a = probe(Some("http://a/health"));
        let current = plan_children(&[], vec![spec("a", policy(5), &at_a)], 2);
        let next = plan_children(
            &current,
            vec![spec("a", policy(5), &at_a), spec("a", policy(5), &at_a)],
            2,
        );
        assert!(Arc::ptr_eq(&next[0].handle, &current[0].handle));
        assert!(!Arc::ptr_eq(&next[1].handle, &current[0].handle));
    }
}
