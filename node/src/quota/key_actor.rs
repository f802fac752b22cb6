//! The key actor: one per key whose budgets this node spends, spawned the first time one of
//! its slices needs renewing and stopped when the key goes idle (or the node stops).
//!
//! The request path never waits for it. It reserves from the key's [`KeyQuota`] (one short
//! lock), and when a slice passes three quarters used it casts `Renew`: the actor leases the
//! next slice and parks it beside the current one, where the request that finds the current
//! slice empty picks it up without a Raft write. Only when both are empty does a request wait,
//! for a grant of its own (serialised per budget). Renewals stop near the end of a budget
//! (the ledger has less than a slice left), so the last units are not held back by a node that
//! does not need them yet.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use aigw_cluster::{BudgetKey, ClusterNode, Command, NodeId, Outcome};
use ractor::{Actor, ActorProcessingErr, ActorRef};

use super::lease::HeldLease;
use super::ledger::KeyQuota;
use super::marks::Marks;

pub(crate) enum KeyMsg {
    /// Lease `want` more units of `budget` for slot `slot`, as its next slice.
    Renew {
        slot: usize,
        budget: BudgetKey,
        want: u64,
    },
}

pub(crate) struct KeyActor;

pub(crate) struct KeyActorState {
    pub cluster: ClusterNode,
    pub node: NodeId,
    pub marks: Arc<Marks>,
    pub quota: Arc<KeyQuota>,
}

impl Actor for KeyActor {
    type Msg = KeyMsg;
    type State = KeyActorState;
    type Arguments = KeyActorState;

    async fn pre_start(
        &self,
        _myself: ActorRef<KeyMsg>,
        args: KeyActorState,
    ) -> Result<KeyActorState, ActorProcessingErr> {
        Ok(args)
    }

    async fn handle(
        &self,
        _myself: ActorRef<KeyMsg>,
        message: KeyMsg,
        state: &mut KeyActorState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            KeyMsg::Renew { slot, budget, want } => {
                state.renew(slot, budget, want).await;
                state.quota.slots[slot]
                    .renewing
                    .store(false, Ordering::Release);
            }
        }
        Ok(())
    }
}

impl KeyActorState {
    async fn renew(&self, slot_at: usize, budget: BudgetKey, want: u64) {
        let slot = &self.quota.slots[slot_at];
        if slot.next.lock().is_some() {
            return;
        }
        let available = self
            .cluster
            .state()
            .load()
            .budgets
            .get(&budget)
            .map_or(0, |b| b.available);
        if available < want {
            return; // the end of the budget: whoever needs the last units asks for them
        }
        let lease = rand::random::<u64>();
        let command = Command::GrantLease {
            budget: budget.clone(),
            node: self.node,
            lease,
            want,
            release: None,
        };
        match self.cluster.write(command).await {
            Ok(Outcome::LeaseGranted { granted }) if granted > 0 => {
                let mut next = HeldLease::new(lease, budget, granted, 0);
                let mark = HeldLease::first_mark(0, granted);
                let marks = Arc::clone(&self.marks);
                // Without a mark the lease counts as fully used after a crash: safe.
                if let Ok(Ok(())) =
                    tokio::task::spawn_blocking(move || marks.set(lease, mark)).await
                {
                    next.marked(mark);
                }
                *slot.next.lock() = Some(next);
            }
            Ok(_) => {}
            Err(error) => {
                // The grant may have been applied: give it back unused (a second close of
                // the same lease, or of one never granted, changes nothing).
                tracing::debug!(%error, "could not renew a quota lease");
                let _ = self
                    .cluster
                    .write(Command::CloseLease {
                        budget,
                        lease,
                        used: 0,
                    })
                    .await;
            }
        }
    }
}
