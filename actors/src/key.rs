//! The key actor: one per key whose budgets this node spends, started the first time one of
//! its slices needs renewing and stopped when the key goes idle (or the node stops); and
//! `KeySupervisor`, which starts them and restarts one that fails.
//!
//! What the key actor owns is the renewal: it leases the next slice of a budget before the
//! current one runs dry and parks it in the budget's [`LeaseSlot`] beside the current one,
//! where the request that finds the current slice empty picks it up without a Raft write. One
//! renewal at a time per key, so a busy key never asks twice for the same slot. Renewals stop
//! near the end of a budget (the ledger has less than a slice left), so the last units are not
//! held back by a node that does not need them yet.
//!
//! Where the request path writes shared state, and why: a [`LeaseSlot`] is shared between the
//! request path and this actor, not owned by the actor alone. An admission spends from `held`
//! under a `parking_lot` lock held for a few instructions (no await under it), and a settled
//! request corrects the same lease; a round trip to an actor per admission would cost more
//! than the whole admission. The actor writes only `next` and `renewing`. The slots are the
//! state the actor publishes, so a restarted actor carries on from them.
//!
//! The I/O (Raft writes, this node's snapshot of the ledger, the marks on disk) is the node's,
//! injected as a [`LeaseLedger`], as health probes are for upstream actors.

use std::collections::HashMap;
use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SpawnErr,
    SupervisionEvent, registry,
};

use crate::lease::{HeldLease, first_mark};

/// How long a request for a key actor waits for the supervisor.
const SPAWN_TIMEOUT: Duration = Duration::from_secs(5);

/// What a key actor leases through: the replicated budgets and this node's marks.
pub trait LeaseLedger: Send + Sync + 'static {
    /// The node's name for one budget of one key in one period.
    type Budget: Clone + Debug + Send + Sync + 'static;

    /// What the budget has left, as this node last applied it (no network).
    fn available(&self, budget: &Self::Budget) -> u64;

    /// Leases up to `want` units of `budget` as lease `lease`: the units granted (0: none). An
    /// error means the grant may or may not have been applied.
    fn grant(
        &self,
        budget: &Self::Budget,
        lease: u64,
        want: u64,
    ) -> impl Future<Output = Result<u64, String>> + Send;

    /// Gives lease `lease` back with `used` units used.
    fn close(
        &self,
        budget: &Self::Budget,
        lease: u64,
        used: u64,
    ) -> impl Future<Output = ()> + Send;

    /// Persists `mark` for `lease`, durably.
    fn persist_mark(
        &self,
        lease: u64,
        mark: u64,
    ) -> impl Future<Output = Result<(), String>> + Send;
}

/// One budget's leases on this node: the one admissions spend from and the next one.
pub struct LeaseSlot<B> {
    /// The lease admissions spend from. Lock order: `held`, then `next`.
    pub held: Mutex<Option<HeldLease<B>>>,
    /// The next slice, leased by the key actor before `held` runs dry.
    pub next: Mutex<Option<HeldLease<B>>>,
    /// A renewal is asked for or under way. Set with [`LeaseSlot::start_renewal`], cleared
    /// with [`LeaseSlot::end_renewal`], which wakes the requests waiting for it.
    pub renewing: AtomicBool,
    renewed: tokio::sync::Notify,
    /// Serialises the request path's own grants: one at a time per budget on this node.
    pub refill: tokio::sync::Mutex<()>,
}

impl<B> Default for LeaseSlot<B> {
    fn default() -> Self {
        Self {
            held: Mutex::new(None),
            next: Mutex::new(None),
            renewing: AtomicBool::new(false),
            renewed: tokio::sync::Notify::new(),
            refill: tokio::sync::Mutex::new(()),
        }
    }
}

impl<B> LeaseSlot<B> {
    /// Marks a renewal as asked for; false when one already is.
    pub fn start_renewal(&self) -> bool {
        !self.renewing.swap(true, Ordering::AcqRel)
    }

    /// The renewal is over (a slice parked in `next`, or none): wakes the requests waiting in
    /// [`LeaseSlot::renewal_over`].
    pub fn end_renewal(&self) {
        self.renewing.store(false, Ordering::Release);
        self.renewed.notify_waiters();
    }

    /// Waits, at most `max`, until no renewal is under way. A request that found its slice
    /// spent waits here before asking for a slice itself: the renewal may be taking the
    /// budget's last units, and asking beside it would find none left and refuse a request
    /// that the parked slice can serve.
    pub async fn renewal_over(&self, max: Duration) {
        let renewed = self.renewed.notified();
        tokio::pin!(renewed);
        // Registered before the check, so an end between the check and the wait is seen.
        renewed.as_mut().enable();
        if self.renewing.load(Ordering::Acquire) {
            let _ = tokio::time::timeout(max, renewed).await;
        }
    }

    /// Both leases, taken out (to give them back).
    pub fn take(&self) -> impl Iterator<Item = HeldLease<B>> {
        let held = self.held.lock().take();
        let next = self.next.lock().take();
        held.into_iter().chain(next)
    }
}

/// A key's leases on this node, one slot per budget dimension (calls, tokens, input, output).
pub type KeyLeases<B> = [LeaseSlot<B>; 4];

/// Whether a renewal should lease now: only into an empty `next`, and only while the budget
/// has a whole slice left (the last units go to whoever needs them, one grant at a time).
pub fn renewal_wanted(next_is_empty: bool, available: u64, want: u64) -> bool {
    next_is_empty && available >= want
}

pub enum KeyMsg<B> {
    /// Lease `want` more units of `budget` (of `period`) as slot `slot`'s next slice.
    Renew {
        slot: usize,
        budget: B,
        period: u64,
        want: u64,
    },
}

pub struct KeyActor<L>(std::marker::PhantomData<fn() -> L>);

impl<L> Default for KeyActor<L> {
    fn default() -> Self {
        Self(std::marker::PhantomData)
    }
}

pub struct KeyState<L: LeaseLedger> {
    ledger: Arc<L>,
    leases: Arc<KeyLeases<L::Budget>>,
}

impl<L: LeaseLedger> Actor for KeyActor<L> {
    type Msg = KeyMsg<L::Budget>;
    type State = KeyState<L>;
    type Arguments = KeyState<L>;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: KeyState<L>,
    ) -> Result<KeyState<L>, ActorProcessingErr> {
        Ok(args)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut KeyState<L>,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            KeyMsg::Renew {
                slot,
                budget,
                period,
                want,
            } => {
                let Some(at) = state.leases.get(slot) else {
                    return Ok(());
                };
                renew(&*state.ledger, at, budget, period, want).await;
                at.end_renewal();
            }
        }
        Ok(())
    }
}

/// Leases the next slice of `budget` into `slot`, unless it holds one or the budget is near
/// its end.
async fn renew<L: LeaseLedger>(
    ledger: &L,
    slot: &LeaseSlot<L::Budget>,
    budget: L::Budget,
    period: u64,
    want: u64,
) {
    let next_is_empty = slot.next.lock().is_none();
    if !renewal_wanted(next_is_empty, ledger.available(&budget), want) {
        return;
    }
    let lease = rand::random::<u64>();
    match ledger.grant(&budget, lease, want).await {
        Ok(0) => {}
        Ok(granted) => {
            let mut next = HeldLease::new(lease, budget, period, granted, 0);
            let mark = first_mark(0, granted);
            // Without a mark the lease counts as fully used after a crash: safe.
            if ledger.persist_mark(lease, mark).await.is_ok() {
                next.mark = mark;
            }
            *slot.next.lock() = Some(next);
        }
        Err(error) => {
            // The grant may have been applied: give it back unused (a second close of the
            // same lease, or of one never granted, changes nothing).
            tracing::debug!(%error, "could not renew a quota lease");
            ledger.close(&budget, lease, 0).await;
        }
    }
}

/// Starts key actors and restarts a failed one from its key's leases.
pub struct KeySupervisor<L>(std::marker::PhantomData<fn() -> L>);

pub enum KeySupervisorMsg<L: LeaseLedger> {
    /// Start the actor named `name` over a key's leases.
    Start {
        name: String,
        leases: Arc<KeyLeases<L::Budget>>,
        reply: RpcReplyPort<Result<ActorRef<KeyMsg<L::Budget>>, String>>,
    },
}

/// A running key actor: its name and the leases it works on, to restart it with.
type KeyChild<B> = (String, Arc<KeyLeases<B>>);

pub struct KeySupervisorState<L: LeaseLedger> {
    ledger: Arc<L>,
    children: HashMap<ActorId, KeyChild<L::Budget>>,
}

impl<L: LeaseLedger> Actor for KeySupervisor<L> {
    type Msg = KeySupervisorMsg<L>;
    type State = KeySupervisorState<L>;
    type Arguments = Arc<L>;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        ledger: Arc<L>,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(KeySupervisorState {
            ledger,
            children: HashMap::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            KeySupervisorMsg::Start {
                name,
                leases,
                reply,
            } => {
                let started = start_key(&myself, state, name, leases).await;
                let _ = reply.send(started.map_err(|e| e.to_string()));
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorFailed(cell, error) => {
                if let Some((name, leases)) = state.children.remove(&cell.get_id()) {
                    tracing::error!(%error, "a key actor failed; restarting it");
                    // A renewal it had under way is over: let the next admission ask again.
                    for slot in leases.iter() {
                        slot.end_renewal();
                    }
                    start_key(&myself, state, name, leases).await?;
                }
            }
            SupervisionEvent::ActorTerminated(cell, ..) => {
                state.children.remove(&cell.get_id());
            }
            _ => {}
        }
        Ok(())
    }
}

async fn start_key<L: LeaseLedger>(
    myself: &ActorRef<KeySupervisorMsg<L>>,
    state: &mut KeySupervisorState<L>,
    name: String,
    leases: Arc<KeyLeases<L::Budget>>,
) -> Result<ActorRef<KeyMsg<L::Budget>>, SpawnErr> {
    let args = KeyState {
        ledger: Arc::clone(&state.ledger),
        leases: Arc::clone(&leases),
    };
    let (actor, _) = Actor::spawn_linked(
        Some(name.clone()),
        KeyActor::<L>::default(),
        args,
        myself.get_cell(),
    )
    .await?;
    state.children.insert(actor.get_id(), (name, leases));
    Ok(actor)
}

/// The node's door to its key actors. Actors are found by name (`<prefix>/key/<key>`) in
/// ractor's registry, so one the supervisor restarted is found too, and so is a supervisor
/// the node's root restarted.
pub struct KeyActors<L> {
    prefix: String,
    _ledger: std::marker::PhantomData<fn() -> L>,
}

impl<L> Clone for KeyActors<L> {
    fn clone(&self) -> Self {
        Self {
            prefix: self.prefix.clone(),
            _ledger: std::marker::PhantomData,
        }
    }
}

impl<L: LeaseLedger> KeyActors<L> {
    fn name(&self, key: &str) -> String {
        format!("{}/key/{key}", self.prefix)
    }

    /// Sends `message` to the actor of `key`, starting it over `leases` if it is not running.
    /// Off the request path: the node asks only when a slice needs renewing.
    pub async fn send(
        &self,
        key: &str,
        leases: &Arc<KeyLeases<L::Budget>>,
        message: KeyMsg<L::Budget>,
    ) -> Result<(), String> {
        let name = self.name(key);
        let actor: ActorRef<KeyMsg<L::Budget>> = match registry::where_is(name.clone()) {
            Some(cell) => cell.into(),
            None => self.start(name, Arc::clone(leases)).await?,
        };
        actor.cast(message).map_err(|e| e.to_string())
    }

    /// Stops the actor of `key`, if it runs (the key went idle, or the node stops).
    pub fn stop(&self, key: &str, reason: &str) {
        if let Some(cell) = registry::where_is(self.name(key)) {
            cell.stop(Some(reason.to_owned()));
        }
    }

    async fn start(
        &self,
        name: String,
        leases: Arc<KeyLeases<L::Budget>>,
    ) -> Result<ActorRef<KeyMsg<L::Budget>>, String> {
        let supervisor: ActorRef<KeySupervisorMsg<L>> =
            registry::where_is(format!("{}/keys", self.prefix))
                .ok_or("the key supervisor is not running")?
                .into();
        let started = supervisor
            .call(
                |reply| KeySupervisorMsg::Start {
                    name,
                    leases,
                    reply,
                },
                Some(SPAWN_TIMEOUT),
            )
            .await
            .map_err(|e| e.to_string())?;
        match started {
            ractor::rpc::CallResult::Success(actor) => actor,
            ractor::rpc::CallResult::Timeout => Err("the key supervisor did not answer".into()),
            ractor::rpc::CallResult::SenderError => Err("the key supervisor stopped".into()),
        }
    }
}

/// Spawns the key supervisor named `name`, linked under `parent` (the node's root), and returns
/// its cell; called again by the root to restart it.
pub(crate) async fn spawn_key_supervisor<L: LeaseLedger>(
    name: String,
    ledger: Arc<L>,
    parent: ActorCell,
) -> Result<ActorCell, SpawnErr> {
    let (actor, _) = Actor::spawn_linked(
        Some(name),
        KeySupervisor::<L>(Default::default()),
        ledger,
        parent,
    )
    .await?;
    Ok(actor.get_cell())
}

/// The door to the key actors of the tree whose names start with `prefix`.
pub(crate) fn key_actors<L: LeaseLedger>(prefix: &str) -> KeyActors<L> {
    KeyActors {
        prefix: prefix.to_owned(),
        _ledger: std::marker::PhantomData,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_renewal_leases_only_into_an_empty_slot_while_a_whole_slice_is_left() {
        assert!(renewal_wanted(true, 100, 100));
        assert!(!renewal_wanted(false, 1000, 100), "the next slice is there");
        assert!(!renewal_wanted(true, 99, 100), "the end of the budget");
    }
}
