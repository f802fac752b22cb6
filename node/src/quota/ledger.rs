//! This node's side of the replicated budgets: the leases it holds per key and budget, how an
//! admission reserves from them (`reserve`), and every effect around the pure arithmetic of
//! aigw-actors' lease.rs: grants and closes through Raft, marks on disk, the key actors'
//! renewals (aigw-actors' key.rs, through raft_ledger.rs), closing
//! idle keys' leases, settling the leases held before a restart, giving all back on shutdown.
//!
//! Where the request path writes shared state: an admission takes a slot's `held` lock for a
//! few instructions (no await under it) to spend from the current lease; a settled request
//! corrects that lease under the same lock; the key actor writes only a slot's `next`. The
//! locks are `parking_lot`'s: they cannot be poisoned, so a panic elsewhere never turns every
//! later admission of the key into a panic.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use aigw_cluster::{
    Budget, BudgetKey, ClusterError, ClusterNode, Command, Dimension, KeyId, KeyRecord, NodeId,
    Outcome, unix_now,
};
use dashmap::DashMap;
use http::HeaderMap;
use parking_lot::Mutex;
use tokio::time::Instant;

use aigw_actors::lease::{self, Advance, Spend};
use aigw_actors::{KeyActors, KeyLeases, KeyMsg, LeaseSlot, NodeActors};

use super::marks::Marks;
use super::raft_ledger::RaftLedger;
use super::rate_limit::{Rates, retry_after};
use super::refusal::Refusal;

/// A key idle this long gives its leases back.
const IDLE_CLOSE: Duration = Duration::from_secs(60);
/// How long a request that needs a new lease waits for this node to settle the leases it held
/// before a restart.
const SETTLE_WAIT: Duration = Duration::from_secs(5);
/// How long a request that found its slice spent waits for the key actor's renewal.
const RENEW_WAIT: Duration = Duration::from_secs(5);

/// A lease of one of a key's budgets, as this node holds it.
pub(super) type HeldLease = lease::HeldLease<BudgetKey>;
type Slot = LeaseSlot<BudgetKey>;

/// Leases and rate buckets of the keys this node has seen.
pub(crate) struct Quotas {
    pub(super) cluster: ClusterNode,
    pub(super) node: NodeId,
    pub(super) keys: DashMap<KeyId, Arc<KeyQuota>>,
    marks: Arc<Marks>,
    /// Starts a key's actor, under the node's supervision tree.
    key_actors: KeyActors<RaftLedger>,
    /// When this node started, if it ran before (its marks file existed): its rate buckets
    /// then start from what they would have refilled since.
    pub(super) restarted: Option<Instant>,
    /// True once the leases this node held before it (re)started are closed. No lease is
    /// granted before, so that closing never catches a lease granted since.
    settled: tokio::sync::watch::Sender<bool>,
}

/// One key's state on this node: its leases per budget dimension, its rate buckets, its
/// requests in flight and its demand.
#[derive(Default)]
pub(super) struct KeyQuota {
    /// One slot per budget dimension; shared with the key's actor (see aigw-actors' key.rs
    /// for who writes what).
    pub slots: Arc<KeyLeases<BudgetKey>>,
    pub rate: Mutex<Rates>,
    pub in_flight: AtomicU32,
    /// Requests and tokens asked since the demand was last taken (keys with RPM / TPM).
    pub asked_requests: AtomicU64,
    pub asked_tokens: AtomicU64,
    /// Unix seconds of the last admission.
    pub last_used: AtomicU64,
}

/// What a lease this node holds said to an admission.
enum Held {
    /// Admitted from lease `0`; `1`: raise that lease's mark to this, in the background;
    /// `2`: ask the key actor for the next slice.
    Admitted(u64, Option<u64>, bool),
    /// The slice has room but the persisted mark does not.
    NeedsMark,
    /// No lease, a lease of a past period, or one without room.
    Empty,
}

impl KeyQuota {
    /// Every lease of the key, current and next, taken out of its slots.
    fn take_leases(&self) -> Vec<HeldLease> {
        self.slots.iter().flat_map(LeaseSlot::take).collect()
    }
}

pub(super) fn slot_index(dimension: Dimension) -> usize {
    match dimension {
        Dimension::Calls => 0,
        Dimension::Tokens => 1,
        Dimension::InputTokens => 2,
        Dimension::OutputTokens => 3,
    }
}

impl Quotas {
    /// `marks`: the file that keeps the used-count marks of this node's leases. Starts the
    /// key supervisor under `actors`' root.
    pub async fn start(
        cluster: ClusterNode,
        marks: &std::path::Path,
        actors: &NodeActors,
    ) -> Result<Self, String> {
        let restarted = marks.exists().then(Instant::now);
        let marks = Arc::new(Marks::open(marks)?);
        let ledger = RaftLedger {
            cluster: cluster.clone(),
            node: cluster.id(),
            marks: Arc::clone(&marks),
        };
        let key_actors = actors
            .start_keys(Arc::new(ledger))
            .await
            .map_err(|e| format!("cannot start the key supervisor: {e}"))?;
        Ok(Self {
            node: cluster.id(),
            cluster,
            keys: DashMap::new(),
            marks,
            key_actors,
            restarted,
            settled: tokio::sync::watch::Sender::new(false),
        })
    }

    /// Reserves `units` of a budget from this node's lease, asking the cluster for a new one
    /// when the lease is empty or of a past period. `Ok(None)`: the key has no such budget
    /// any more (its limits changed meanwhile).
    pub(super) async fn reserve(
        &self,
        key: &KeyRecord,
        quota: &Arc<KeyQuota>,
        dimension: Dimension,
        budget: Budget,
        units: u64,
        voters: usize,
    ) -> Result<Option<u64>, Refusal> {
        let slot_at = slot_index(dimension);
        let slot = &quota.slots[slot_at];
        let period = budget.period.id_at(unix_now());
        let try_held = || {
            let mut held = slot.held.lock();
            loop {
                let spent = held
                    .as_mut()
                    .map(|lease| (lease.id, lease.spend(units, period)));
                match spent {
                    Some((id, Spend::Spent { raise, renew })) => {
                        // Renew before running dry, once per slice.
                        let renew = renew && slot.next.lock().is_none() && slot.start_renewal();
                        return Held::Admitted(id, raise, renew);
                    }
                    Some((_, Spend::NeedsMark)) => return Held::NeedsMark,
                    Some((_, Spend::Exhausted)) | None => {
                        // The current slice is spent (or of a past period): the next one, if
                        // the key actor has leased it, takes its place without a Raft write.
                        let next = slot.next.lock().take();
                        match lease::advance(&mut held, next, period) {
                            Advance::Swapped { closed } => {
                                if let Some(spent) = closed {
                                    self.close_soon(spent);
                                }
                            }
                            Advance::Empty { closed } => {
                                if let Some(stale) = closed {
                                    self.close_soon(stale);
                                }
                                return Held::Empty;
                            }
                        }
                    }
                }
            }
        };
        let want = lease::slice_wanted(units, budget.limit, voters);
        let admitted = |lease: u64, raise: Option<u64>, renew: bool| {
            if let Some(mark) = raise {
                self.raise_soon(Arc::clone(quota), slot_at, lease, mark);
            }
            if renew {
                self.renew_soon(key, quota, slot_at, dimension, period, want);
            }
        };
        if let Held::Admitted(lease, raise, renew) = try_held() {
            admitted(lease, raise, renew);
            return Ok(Some(lease));
        }
        let _refilling = slot.refill.lock().await;
        for _ in 0..3 {
            match try_held() {
                Held::Admitted(lease, raise, renew) => {
                    admitted(lease, raise, renew);
                    return Ok(Some(lease));
                }
                Held::NeedsMark => self.raise_now(slot, units).await?,
                // The key actor is leasing the next slice: it may be taking the budget's last
                // units, so wait for it rather than ask beside it and find none left.
                Held::Empty if slot.renewing.load(Ordering::Acquire) => {
                    slot.renewal_over(RENEW_WAIT).await;
                }
                Held::Empty => break,
            }
        }
        // No lease is granted before the leases from before a restart are closed.
        let mut settled = self.settled.subscribe();
        if !matches!(
            tokio::time::timeout(SETTLE_WAIT, settled.wait_for(|done| *done)).await,
            Ok(Ok(_))
        ) {
            return Err(Refusal::Unavailable(
                "this node is still closing the quota leases it held before it restarted".into(),
            ));
        }
        // The old lease goes back in the grant's own entry, so its unused units count.
        let spent = slot.held.lock().take();
        let release = spent.map(|old| (old.budget, old.id, old.used));
        let budget_key = BudgetKey {
            key: key.id.clone(),
            dimension,
            period,
        };
        let lease = rand::random::<u64>();
        let command = Command::GrantLease {
            budget: budget_key.clone(),
            node: self.node,
            lease,
            want,
            release: release.clone(),
        };
        match self.cluster.write(command).await {
            Ok(Outcome::LeaseGranted { granted }) if granted >= units => {
                if let Some((_, old, _)) = release {
                    self.forget_marks(vec![old]);
                }
                let mut held = HeldLease::new(lease, budget_key, period, granted, units);
                let mark = lease::first_mark(units, granted);
                // Without a mark the lease counts as fully used after a crash: safe, so a
                // failed write only costs what a crash would strand.
                match self.persist(lease, mark).await {
                    Ok(()) => held.mark = mark,
                    Err(error) => tracing::warn!(%error, "cannot persist a quota lease mark"),
                }
                *slot.held.lock() = Some(held);
                Ok(Some(lease))
            }
            Ok(Outcome::LeaseGranted { granted }) => {
                if let Some((_, old, _)) = release {
                    self.forget_marks(vec![old]);
                }
                if granted > 0 {
                    // Too little for this request, but kept for a smaller one (the exact
                    // estimate of this very request, often). Without a mark, a crash counts
                    // it as fully used.
                    *slot.held.lock() = Some(HeldLease::new(lease, budget_key, period, granted, 0));
                }
                let mut headers = HeaderMap::new();
                if let Some(end) = budget.period.ends_after(unix_now()) {
                    headers.extend(retry_after(Duration::from_secs(
                        end.saturating_sub(unix_now()),
                    )));
                }
                Err(Refusal::Budget {
                    message: format!(
                        "This key's {} budget of {} per {} is used up.",
                        dimension.as_str(),
                        budget.limit,
                        budget.period.as_str()
                    ),
                    headers,
                })
            }
            Ok(_) | Err(ClusterError::Rejected(_)) => Ok(None),
            Err(error) => {
                // The grant may or may not have been applied; the old lease is closed through
                // its own command (a second close changes nothing).
                if let Some((budget, id, used)) = release {
                    let period = budget.period;
                    self.close_soon(HeldLease::new(id, budget, period, used, used));
                }
                Err(Refusal::Unavailable(error.to_string()))
            }
        }
    }

    /// Asks the key's actor (started the first time) to lease the next slice of a budget.
    fn renew_soon(
        &self,
        key: &KeyRecord,
        quota: &Arc<KeyQuota>,
        slot: usize,
        dimension: Dimension,
        period: u64,
        want: u64,
    ) {
        let budget = BudgetKey {
            key: key.id.clone(),
            dimension,
            period,
        };
        let quota = Arc::clone(quota);
        let key_actors = self.key_actors.clone();
        let key = key.id.clone();
        tokio::spawn(async move {
            let renew = KeyMsg::Renew {
                slot,
                budget,
                period,
                want,
            };
            if let Err(error) = key_actors.send(key.as_str(), &quota.slots, renew).await {
                tracing::warn!(%error, "cannot reach the key's actor to renew a lease");
                quota.slots[slot].end_renewal();
            }
        });
    }

    /// Persists `mark` for `lease`, off the async threads.
    async fn persist(&self, lease: u64, mark: u64) -> Result<(), String> {
        let marks = Arc::clone(&self.marks);
        tokio::task::spawn_blocking(move || marks.set(lease, mark))
            .await
            .map_err(|e| e.to_string())?
    }

    /// Raises the held lease's mark so that `units` more fit, and waits for it: an admission
    /// that caught up with the mark.
    async fn raise_now(&self, slot: &Slot, units: u64) -> Result<(), Refusal> {
        let Some((lease, mark)) = slot.held.lock().as_ref().map(|l| (l.id, l.mark_for(units)))
        else {
            return Ok(());
        };
        self.persist(lease, mark)
            .await
            .map_err(|e| Refusal::Unavailable(format!("cannot persist quota use: {e}")))?;
        if let Some(held) = slot.held.lock().as_mut().filter(|l| l.id == lease) {
            held.marked(mark);
        }
        Ok(())
    }

    /// Raises a lease's mark in the background, ahead of the admissions that will need it.
    fn raise_soon(&self, quota: Arc<KeyQuota>, slot: usize, lease: u64, mark: u64) {
        let marks = Arc::clone(&self.marks);
        tokio::task::spawn_blocking(move || {
            let written = marks.set(lease, mark);
            let mut held = quota.slots[slot].held.lock();
            if let Some(held) = held.as_mut().filter(|l| l.id == lease) {
                held.raising = false;
                match written {
                    Ok(()) => held.marked(mark),
                    Err(error) => tracing::warn!(%error, "cannot persist a quota lease mark"),
                }
            }
        });
    }

    /// Forgets the marks of leases that are closed.
    fn forget_marks(&self, leases: Vec<u64>) {
        let marks = Arc::clone(&self.marks);
        tokio::task::spawn_blocking(move || {
            if let Err(error) = marks.remove(&leases) {
                tracing::warn!(%error, "cannot forget closed quota lease marks");
            }
        });
    }

    /// Gives a lease back in the background with what it used.
    fn close_soon(&self, lease: HeldLease) {
        let cluster = self.cluster.clone();
        let marks = Arc::clone(&self.marks);
        tokio::spawn(async move {
            let command = Command::CloseLease {
                budget: lease.budget,
                lease: lease.id,
                used: lease.used,
            };
            match cluster.write(command).await {
                Ok(_) => {
                    let _ = tokio::task::spawn_blocking(move || marks.remove(&[lease.id])).await;
                }
                // Left open, the slice stays counted as leased: stranded, never over-admitted.
                Err(error) => tracing::warn!(%error, "could not give a quota lease back"),
            }
        });
    }

    /// At start: closes every lease this node held before, each at its persisted mark (a
    /// lease without one counts as fully used), retrying until the cluster takes it. Until
    /// then no lease is granted.
    pub async fn close_leases_from_before(&self) {
        let store = Arc::clone(&self.marks);
        let read = tokio::task::spawn_blocking(move || store.all())
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
        let marks = match read {
            Ok(marks) => marks,
            Err(error) => {
                tracing::warn!(%error, "cannot read the quota lease marks; every lease this node held counts as fully used");
                Vec::new()
            }
        };
        let command = Command::SettleLeasesOf {
            node: self.node,
            marks: marks.clone(),
        };
        // Until it succeeds: a write that timed out may still commit later, but never after a
        // later copy of it has committed (Raft commits in log order), and no lease is granted
        // before one has.
        loop {
            match self.cluster.write(command.clone()).await {
                Ok(outcome) => {
                    if let Outcome::LeasesClosed { count } = outcome
                        && count > 0
                    {
                        tracing::info!(
                            count,
                            "closed the quota leases this node held before it restarted"
                        );
                    }
                    self.forget_marks(marks.iter().map(|(id, _)| *id).collect());
                    break;
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot close this node's old quota leases yet; retrying");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            }
        }
        self.settled.send_replace(true);
    }

    /// On a graceful shutdown, once no request is in flight: gives every lease back with its
    /// exact count, waiting at most `within` (a lease not closed by then is settled at its
    /// mark when the node restarts).
    pub async fn close_all(&self, within: Duration) {
        let held: Vec<HeldLease> = self
            .keys
            .iter()
            .flat_map(|entry| {
                self.key_actors.stop(entry.key().as_str(), "shutdown");
                entry.take_leases()
            })
            .collect();
        if held.is_empty() {
            return;
        }
        let closes = held.into_iter().map(|lease| async move {
            let command = Command::CloseLease {
                budget: lease.budget,
                lease: lease.id,
                used: lease.used,
            };
            self.cluster.write(command).await.map(|_| lease.id)
        });
        match tokio::time::timeout(within, futures::future::join_all(closes)).await {
            Ok(results) => {
                let closed: Vec<u64> = results.into_iter().filter_map(Result::ok).collect();
                tracing::info!(count = closed.len(), "gave this node's quota leases back");
                let marks = Arc::clone(&self.marks);
                let forgotten = tokio::task::spawn_blocking(move || marks.remove(&closed)).await;
                if let Ok(Err(error)) = forgotten {
                    tracing::warn!(%error, "cannot forget closed quota lease marks");
                }
            }
            Err(_) => tracing::warn!(
                "could not give every quota lease back in time; the rest are settled at their marks on restart"
            ),
        }
    }

    /// Gives back the leases of keys idle for `IDLE_CLOSE`, and forgets those keys.
    pub fn close_idle(&self) {
        let now = unix_now();
        let idle: Vec<KeyId> = self
            .keys
            .iter()
            .filter(|entry| {
                now.saturating_sub(entry.last_used.load(Ordering::Relaxed)) >= IDLE_CLOSE.as_secs()
            })
            .filter(|entry| entry.in_flight.load(Ordering::Acquire) == 0)
            .map(|entry| entry.key().clone())
            .collect();
        for key in idle {
            if let Some((_, quota)) = self.keys.remove(&key) {
                self.key_actors.stop(key.as_str(), "idle");
                for lease in quota.take_leases() {
                    self.close_soon(lease);
                }
            }
        }
    }
}
