//! Admission against a key's limits, cluster-wide, without a Raft write per request.
//!
//! Period budgets (calls, tokens, input and output tokens per minute/hour/day/month/total) are
//! spent from leases: this node asks the cluster for a slice of a budget (`GrantLease`,
//! `available -= slice`) and admits locally while the slice lasts, one short lock per
//! admission. Only an empty slice makes a request wait, for the next grant. A slice is given
//! back with what was used (`CloseLease`) when the period rolls over, when it runs dry, or after
//! the key has been idle; after a restart a node closes its old leases as fully used. So
//! admissions never exceed a budget under any fault (QUOTAS.md), at the cost of capacity
//! stranded on an unreachable node until it returns.
//!
//! Rates (RPM, TPM) are enforced by a token bucket holding this node's share: the limit divided
//! by the number of voting members (QUOTAS.md's fallback share, which always sums to at most the
//! limit). Demand-weighted shares are not built yet.
//!
//! Tokens are reserved at admission (input estimate + the output maximum) and reconciled with
//! the upstream's `usage` when the response ends; a reservation is refunded only to the lease it
//! came from (otherwise it stays counted, which strands but never over-admits).

mod bucket;
mod key_actor;
mod marks;
pub(crate) mod rates;
pub(crate) mod tap;
pub(crate) mod tokens;

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aigw_cluster::{
    Budget, BudgetKey, ClusterError, ClusterNode, Command, Dimension, KeyId, KeyRecord, NodeId,
    Outcome, unix_now,
};
use dashmap::DashMap;
use http::{HeaderMap, HeaderName, HeaderValue};
use tokio::time::Instant;

use crate::openai::ApiError;
use bucket::Bucket;
use marks::Marks;
use tap::Usage;
use tokens::Estimate;

/// A key idle this long gives its leases back.
const IDLE_CLOSE: Duration = Duration::from_secs(60);
/// How long a request that needs a new lease waits for this node to settle the leases it held
/// before a restart.
const SETTLE_WAIT: Duration = Duration::from_secs(5);

/// The persisted mark runs this far ahead of what a lease admitted: one fsync per step, and
/// after a crash at most one step per lease is counted as used without having been.
fn mark_step(slice: u64) -> u64 {
    (slice / 8).max(1)
}

/// Leases and rate buckets of the keys this node has seen.
pub(crate) struct Quotas {
    cluster: ClusterNode,
    node: NodeId,
    keys: DashMap<KeyId, Arc<KeyQuota>>,
    marks: Arc<Marks>,
    /// When this node started, if it ran before (its marks file existed): its rate buckets
    /// then start from what they would have refilled since.
    restarted: Option<Instant>,
    /// True once the leases this node held before it (re)started are closed. No lease is
    /// granted before, so that closing never catches a lease granted since.
    settled: tokio::sync::watch::Sender<bool>,
}

#[derive(Default)]
struct KeyQuota {
    slots: [Slot; 4],
    rate: Mutex<Rates>,
    in_flight: AtomicU32,
    /// Requests and tokens asked since the demand was last taken (keys with RPM / TPM).
    asked_requests: AtomicU64,
    asked_tokens: AtomicU64,
    /// Unix seconds of the last admission.
    last_used: AtomicU64,
    /// The key's actor, spawned when a slice first needs renewing.
    actor: tokio::sync::OnceCell<ractor::ActorRef<key_actor::KeyMsg>>,
}

#[derive(Default)]
struct Slot {
    /// The lease admissions spend from. Lock order: `held`, then `next`.
    held: Mutex<Option<HeldLease>>,
    /// The next slice, leased by the key actor before `held` runs dry.
    next: Mutex<Option<HeldLease>>,
    /// A renewal is asked for or under way.
    renewing: std::sync::atomic::AtomicBool,
    /// Serialises refills: one grant at a time per budget on this node.
    refill: tokio::sync::Mutex<()>,
}

#[derive(Debug, Clone)]
struct HeldLease {
    id: u64,
    budget: BudgetKey,
    slice: u64,
    used: u64,
    /// Persisted: `used` never passes it.
    mark: u64,
    /// A background raise of `mark` is under way.
    raising: bool,
}

impl HeldLease {
    fn new(id: u64, budget: BudgetKey, slice: u64, used: u64) -> Self {
        Self {
            id,
            budget,
            slice,
            used,
            mark: slice,
            raising: false,
        }
    }
}

/// What a lease this node holds said to an admission.
enum Held {
    /// Admitted from lease `0`; `1`: raise that lease's mark to this, in the background;
    /// `2`: the lease is three quarters used, ask the key actor for the next one.
    Admitted(u64, Option<u64>, bool),
    /// The slice has room but the persisted mark does not.
    NeedsMark,
    /// No lease, a lease of a past period, or one without room.
    Empty,
}

#[derive(Default)]
struct Rates {
    /// The share (per minute) the bucket was sized for, and the bucket.
    rpm: Option<(f64, Bucket)>,
    tpm: Option<(f64, Bucket)>,
    /// Requests and tokens per minute asked of this node (admitted or not), smoothed: the
    /// demand it gossips to the rate planner.
    demand: (f64, f64),
}

impl KeyQuota {
    /// Every lease of the key, current and next, taken out of its slots.
    fn take_leases(&self) -> Vec<HeldLease> {
        self.slots
            .iter()
            .flat_map(|slot| {
                let current = slot.held.lock().expect("quota lock").take();
                let next = slot.next.lock().expect("quota lock").take();
                current.into_iter().chain(next)
            })
            .collect()
    }
}

fn slot_index(dimension: Dimension) -> usize {
    match dimension {
        Dimension::Calls => 0,
        Dimension::Tokens => 1,
        Dimension::InputTokens => 2,
        Dimension::OutputTokens => 3,
    }
}

/// Units one request reserves in each dimension.
fn cost(dimension: Dimension, estimate: Estimate) -> u64 {
    match dimension {
        Dimension::Calls => 1,
        Dimension::Tokens => estimate.input.saturating_add(estimate.output),
        Dimension::InputTokens => estimate.input,
        Dimension::OutputTokens => estimate.output,
    }
}

fn actual(dimension: Dimension, usage: Usage) -> u64 {
    match dimension {
        Dimension::Calls => 1,
        Dimension::Tokens => usage.input.saturating_add(usage.output),
        Dimension::InputTokens => usage.input,
        Dimension::OutputTokens => usage.output,
    }
}

struct Reservation {
    dimension: Dimension,
    lease: u64,
    cost: u64,
}

/// One admitted request's claims, settled when its response ends.
pub(crate) struct Admission {
    quota: Option<Arc<KeyQuota>>,
    estimate: Estimate,
    reservations: Vec<Reservation>,
    tpm_taken: f64,
    holds_concurrency: bool,
    headers: HeaderMap,
}

impl Admission {
    fn unlimited() -> Self {
        Self {
            quota: None,
            estimate: Estimate {
                input: 0,
                output: 0,
            },
            reservations: Vec::new(),
            tpm_taken: 0.0,
            holds_concurrency: false,
            headers: HeaderMap::new(),
        }
    }

    /// The input tokens reserved (0 when the key has no token limits).
    pub fn estimated_input(&self) -> u64 {
        self.estimate.input
    }

    /// The `x-ratelimit-*` headers for the response, moved out (a second call gets none).
    pub fn take_headers(&mut self) -> HeaderMap {
        std::mem::take(&mut self.headers)
    }

    /// Reconciles the reservations with what was used (`None`: unknown, keep them all).
    pub fn settle(mut self, usage: Option<Usage>) {
        let Some(quota) = self.quota.take() else {
            return;
        };
        if let Some(usage) = usage {
            for r in &self.reservations {
                if r.dimension == Dimension::Calls {
                    continue;
                }
                let used = actual(r.dimension, usage);
                let mut held = quota.slots[slot_index(r.dimension)]
                    .held
                    .lock()
                    .expect("quota lock");
                if let Some(lease) = held.as_mut().filter(|l| l.id == r.lease) {
                    // Above the reservation is a debt the slice pays before the next admission.
                    lease.used = lease.used.saturating_add(used).saturating_sub(r.cost);
                }
            }
            if self.tpm_taken > 0.0 {
                let used = usage.input.saturating_add(usage.output) as f64;
                let mut rates = quota.rate.lock().expect("quota lock");
                if let Some((_, bucket)) = rates.tpm.as_mut() {
                    bucket.adjust(self.tpm_taken - used, Instant::now());
                }
            }
        }
        if self.holds_concurrency {
            quota.in_flight.fetch_sub(1, Ordering::AcqRel);
            self.holds_concurrency = false;
        }
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        if self.holds_concurrency
            && let Some(quota) = &self.quota
        {
            quota.in_flight.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Admits one request of `key` on this node: `Ok(None)` when the key has no limits.
/// `estimate` runs only when the key has token limits (a key with none pays no tokenizer),
/// first with an upper bound that costs nothing to compute; only a request that the bound
/// would have refused is estimated again with tiktoken (`exact`) and tried once more, so exact
/// counting (and the vocabulary's memory, loaded then) is paid where a limit is close.
pub(crate) async fn admit(
    state: &crate::state::AppState,
    key: &KeyRecord,
    estimate: impl Fn(bool) -> Estimate,
) -> Result<Option<Admission>, ApiError> {
    let Some(quotas) = state.quotas.get().filter(|_| !key.limits.is_empty()) else {
        return Ok(None);
    };
    if !key.limits.counts_tokens() {
        return Ok(Some(quotas.admit(key, Estimate::calls_only()).await?));
    }
    match quotas.admit(key, estimate(false)).await {
        Err(ApiError::Refused { .. }) => {
            tokens::load(state.routes.load().tokenizers()).await;
            Ok(Some(quotas.admit(key, estimate(true)).await?))
        }
        admitted => Ok(Some(admitted?)),
    }
}

/// Puts the admission's rate headers on `response` and settles it when the body ends, with the
/// usage `usage` reads from the body's ends (`None`: unknown, the reservation stands). An
/// upstream error settles at once with no tokens: nothing was generated, the call counts.
pub(crate) fn settle_on_end(
    mut admission: Option<Admission>,
    mut response: axum::response::Response,
    usage: impl FnOnce(&crate::proxy::tap::BodyEnds) -> Option<Usage> + Send + 'static,
) -> axum::response::Response {
    let Some(mut admission) = admission.take() else {
        return response;
    };
    response.headers_mut().extend(admission.take_headers());
    if !response.status().is_success() {
        admission.settle(Some(Usage::default()));
        return response;
    }
    let body = std::mem::take(response.body_mut());
    *response.body_mut() =
        crate::proxy::tap::TapBody::wrap(body, move |ends| admission.settle(usage(&ends)));
    response
}

/// A refusal, with the headers that explain it.
fn refuse(error: ApiError, headers: HeaderMap) -> ApiError {
    ApiError::Refused {
        inner: Box::new(error),
        headers: Box::new(headers),
    }
}

impl Quotas {
    /// `marks`: the file that keeps the used-count marks of this node's leases.
    pub fn new(cluster: ClusterNode, marks: &std::path::Path) -> Result<Self, String> {
        let restarted = marks.exists().then(Instant::now);
        Ok(Self {
            node: cluster.id(),
            cluster,
            keys: DashMap::new(),
            marks: Arc::new(Marks::open(marks)?),
            restarted,
            settled: tokio::sync::watch::Sender::new(false),
        })
    }

    /// Admits one request of `key` expected to cost `estimate`, or refuses it with 429 (rate:
    /// `rate_limit_exceeded`; budget: `insufficient_quota`). Waits on the cluster only when a
    /// budget's slice is empty.
    pub async fn admit(&self, key: &KeyRecord, estimate: Estimate) -> Result<Admission, ApiError> {
        let limits = &key.limits;
        if limits.is_empty() {
            return Ok(Admission::unlimited());
        }
        let quota = self.keys.entry(key.id.clone()).or_default().value().clone();
        quota.last_used.store(unix_now(), Ordering::Relaxed);
        let snapshot = self.cluster.state().load();
        let voters = snapshot.voters;
        let mut admission = Admission {
            quota: Some(Arc::clone(&quota)),
            estimate,
            reservations: Vec::new(),
            tpm_taken: 0.0,
            holds_concurrency: false,
            headers: HeaderMap::new(),
        };

        if let Some(max) = limits.max_concurrent {
            let share = (max as usize / voters).max(1) as u32;
            if quota.in_flight.fetch_add(1, Ordering::AcqRel) >= share {
                quota.in_flight.fetch_sub(1, Ordering::AcqRel);
                return Err(refuse(
                    ApiError::RateLimited(format!(
                        "Too many concurrent requests for this key (at most {share} at once on this node)."
                    )),
                    retry_after(Duration::from_secs(1)),
                ));
            }
            admission.holds_concurrency = true;
        }

        self.take_rates(key, &quota, &snapshot, &mut admission)?;

        for dimension in Dimension::ALL {
            let Some(budget) = limits.budget(dimension) else {
                continue;
            };
            let units = cost(dimension, estimate);
            match self
                .reserve(key, &quota, dimension, budget, units, voters)
                .await
            {
                Ok(Some(lease)) => admission.reservations.push(Reservation {
                    dimension,
                    lease,
                    cost: units,
                }),
                Ok(None) => {}
                Err(error) => {
                    self.release(&quota, &admission);
                    return Err(error);
                }
            }
        }
        Ok(admission)
    }

    fn take_rates(
        &self,
        key: &KeyRecord,
        quota: &KeyQuota,
        snapshot: &aigw_cluster::StateSnapshot,
        admission: &mut Admission,
    ) -> Result<(), ApiError> {
        let voters = snapshot.voters;
        let now = Instant::now();
        let tokens = admission
            .estimate
            .input
            .saturating_add(admission.estimate.output) as f64;
        if key.limits.rpm.is_none() && key.limits.tpm.is_none() {
            return Ok(());
        }
        quota.asked_requests.fetch_add(1, Ordering::Relaxed);
        quota
            .asked_tokens
            .fetch_add(tokens as u64, Ordering::Relaxed);
        // This node's share: the leader's plan for this moment, else the even split.
        let plans = snapshot.rate_plans.get(&key.id);
        let clock = rates::now_ms();
        let share = |limit: u64, rate: rates::Rate| {
            let fallback = limit as f64 / voters as f64;
            match plans {
                Some(plans) => rates::share_at(plans, self.node, rate, fallback, clock),
                None => fallback,
            }
        };
        let mut rates = quota.rate.lock().expect("quota lock");
        let restarted = self.restarted;
        let sized = |slot: &mut Option<(f64, Bucket)>, share: f64| match slot {
            Some((sized, _)) if *sized == share => {}
            Some((_, bucket)) => *slot = Some((share, bucket.resized(share, now))),
            None => *slot = Some((share, Bucket::new(share, now, restarted))),
        };
        if let Some(rpm) = key.limits.rpm {
            sized(&mut rates.rpm, share(rpm, rates::Rate::Rpm));
            let (_, bucket) = rates.rpm.as_mut().expect("sized above");
            if !bucket.try_take(1.0, now) {
                let wait = bucket.wait_for(1.0, now);
                let mut headers = rate_headers(&mut rates, key, now);
                headers.extend(retry_after(wait));
                return Err(refuse(
                    ApiError::RateLimited(format!(
                        "Rate limit reached: {rpm} requests per minute for this key."
                    )),
                    headers,
                ));
            }
        }
        if let Some(tpm) = key.limits.tpm {
            sized(&mut rates.tpm, share(tpm, rates::Rate::Tpm));
            let (_, bucket) = rates.tpm.as_mut().expect("sized above");
            if !bucket.try_take(tokens, now) {
                let wait = bucket.wait_for(tokens, now);
                if let Some((_, rpm)) = rates.rpm.as_mut() {
                    rpm.adjust(1.0, now);
                }
                let mut headers = rate_headers(&mut rates, key, now);
                headers.extend(retry_after(wait));
                return Err(refuse(
                    ApiError::RateLimited(format!(
                        "Rate limit reached: {tpm} tokens per minute for this key; this request needs about {tokens}."
                    )),
                    headers,
                ));
            }
            admission.tpm_taken = tokens;
        }
        admission.headers = rate_headers(&mut rates, key, now);
        Ok(())
    }

    /// Gives back what an admission took before it was refused further on.
    fn release(&self, quota: &KeyQuota, admission: &Admission) {
        for r in &admission.reservations {
            let mut held = quota.slots[slot_index(r.dimension)]
                .held
                .lock()
                .expect("quota lock");
            if let Some(lease) = held.as_mut().filter(|l| l.id == r.lease) {
                lease.used = lease.used.saturating_sub(r.cost);
            }
        }
        let now = Instant::now();
        let mut rates = quota.rate.lock().expect("quota lock");
        if let Some((_, bucket)) = rates.rpm.as_mut() {
            bucket.adjust(1.0, now);
        }
        if let Some((_, bucket)) = rates.tpm.as_mut() {
            bucket.adjust(admission.tpm_taken, now);
        }
    }

    /// Reserves `units` of a budget from this node's lease, asking the cluster for a new one
    /// when the lease is empty or of a past period. `Ok(None)`: the key has no such budget
    /// any more (its limits changed meanwhile).
    async fn reserve(
        &self,
        key: &KeyRecord,
        quota: &Arc<KeyQuota>,
        dimension: Dimension,
        budget: Budget,
        units: u64,
        voters: usize,
    ) -> Result<Option<u64>, ApiError> {
        let slot_at = slot_index(dimension);
        let slot = &quota.slots[slot_at];
        let period = budget.period.id_at(unix_now());
        let try_held = || {
            let mut held = slot.held.lock().expect("quota lock");
            loop {
                match held.as_mut() {
                    Some(lease)
                        if lease.budget.period == period
                            && lease.used.saturating_add(units) <= lease.slice =>
                    {
                        if lease.used.saturating_add(units) > lease.mark {
                            return Held::NeedsMark;
                        }
                        lease.used += units;
                        // Raise the mark before admissions reach it, so they rarely wait for
                        // disk.
                        let step = mark_step(lease.slice);
                        let low = lease.mark < lease.slice && lease.mark - lease.used <= step / 2;
                        let raise = (low && !lease.raising).then(|| {
                            lease.raising = true;
                            (lease.mark + step).min(lease.slice)
                        });
                        // Renew before running dry, once per slice.
                        let renew = lease.used.saturating_mul(4) >= lease.slice.saturating_mul(3)
                            && slot.next.lock().expect("quota lock").is_none()
                            && !slot.renewing.swap(true, Ordering::AcqRel);
                        return Held::Admitted(lease.id, raise, renew);
                    }
                    _ => {
                        // The current slice is spent (or of a past period): the next one, if
                        // the key actor has leased it, takes its place without a Raft write.
                        let next = slot.next.lock().expect("quota lock").take();
                        match next {
                            Some(next) if next.budget.period == period => {
                                if let Some(spent) = held.replace(next) {
                                    self.close_soon(spent);
                                }
                            }
                            Some(stale) => {
                                self.close_soon(stale);
                                return Held::Empty;
                            }
                            None => return Held::Empty,
                        }
                    }
                }
            }
        };
        let want = units.max(budget.limit / (4 * voters as u64)).max(1);
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
                Held::Empty => break,
            }
        }
        // No lease is granted before the leases from before a restart are closed.
        let mut settled = self.settled.subscribe();
        if !matches!(
            tokio::time::timeout(SETTLE_WAIT, settled.wait_for(|done| *done)).await,
            Ok(Ok(_))
        ) {
            return Err(ApiError::QuotaUnavailable(
                "this node is still closing the quota leases it held before it restarted".into(),
            ));
        }
        // The old lease goes back in the grant's own entry, so its unused units count.
        let spent = slot.held.lock().expect("quota lock").take();
        let release = spent.map(|old| (old.budget, old.id, old.used));
        // A slice big enough that a busy key writes to Raft rarely, small enough that the
        // other nodes still find some left: a quarter of the limit per voter (`want`).
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
                let mut held = HeldLease::new(lease, budget_key, granted, units);
                let mark = units.saturating_add(mark_step(granted)).min(granted);
                // Without a mark the lease counts as fully used after a crash: safe, so a
                // failed write only costs what a crash would strand.
                match self.persist(lease, mark).await {
                    Ok(()) => held.mark = mark,
                    Err(error) => tracing::warn!(%error, "cannot persist a quota lease mark"),
                }
                *slot.held.lock().expect("quota lock") = Some(held);
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
                    *slot.held.lock().expect("quota lock") =
                        Some(HeldLease::new(lease, budget_key, granted, 0));
                }
                let mut headers = HeaderMap::new();
                if let Some(end) = budget.period.ends_after(unix_now()) {
                    headers.extend(retry_after(Duration::from_secs(
                        end.saturating_sub(unix_now()),
                    )));
                }
                Err(refuse(
                    ApiError::QuotaExceeded(format!(
                        "This key's {} budget of {} per {} is used up.",
                        dimension.as_str(),
                        budget.limit,
                        budget.period.as_str()
                    )),
                    headers,
                ))
            }
            Ok(_) | Err(ClusterError::Rejected(_)) => Ok(None),
            Err(error) => {
                // The grant may or may not have been applied; the old lease is closed through
                // its own command (a second close changes nothing).
                if let Some((budget, id, used)) = release {
                    self.close_soon(HeldLease::new(id, budget, used, used));
                }
                Err(ApiError::QuotaUnavailable(error.to_string()))
            }
        }
    }

    /// Asks the key's actor (spawning it the first time) to lease the next slice of a budget.
    fn renew_soon(
        &self,
        key: &KeyRecord,
        quota: &Arc<KeyQuota>,
        slot: usize,
        dimension: Dimension,
        period: u64,
        want: u64,
    ) {
        let args = key_actor::KeyActorState {
            cluster: self.cluster.clone(),
            node: self.node,
            marks: Arc::clone(&self.marks),
            quota: Arc::clone(quota),
        };
        let budget = BudgetKey {
            key: key.id.clone(),
            dimension,
            period,
        };
        let quota = Arc::clone(quota);
        tokio::spawn(async move {
            let actor = quota
                .actor
                .get_or_try_init(|| async {
                    ractor::Actor::spawn(None, key_actor::KeyActor, args)
                        .await
                        .map(|(actor, _)| actor)
                })
                .await;
            let sent = match actor {
                Ok(actor) => actor
                    .cast(key_actor::KeyMsg::Renew { slot, budget, want })
                    .is_ok(),
                Err(_) => false,
            };
            if !sent {
                quota.slots[slot].renewing.store(false, Ordering::Release);
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
    async fn raise_now(&self, slot: &Slot, units: u64) -> Result<(), ApiError> {
        let Some((lease, mark)) = slot.held.lock().expect("quota lock").as_ref().map(|l| {
            let mark = l
                .used
                .saturating_add(units)
                .saturating_add(mark_step(l.slice));
            (l.id, mark.min(l.slice))
        }) else {
            return Ok(());
        };
        self.persist(lease, mark)
            .await
            .map_err(|e| ApiError::QuotaUnavailable(format!("cannot persist quota use: {e}")))?;
        if let Some(held) = slot
            .held
            .lock()
            .expect("quota lock")
            .as_mut()
            .filter(|l| l.id == lease)
        {
            held.mark = held.mark.max(mark);
        }
        Ok(())
    }

    /// Raises a lease's mark in the background, ahead of the admissions that will need it.
    fn raise_soon(&self, quota: Arc<KeyQuota>, slot: usize, lease: u64, mark: u64) {
        let marks = Arc::clone(&self.marks);
        tokio::task::spawn_blocking(move || {
            let written = marks.set(lease, mark);
            let mut held = quota.slots[slot].held.lock().expect("quota lock");
            if let Some(held) = held.as_mut().filter(|l| l.id == lease) {
                held.raising = false;
                match written {
                    Ok(()) => held.mark = held.mark.max(mark),
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
                if let Some(actor) = entry.actor.get() {
                    actor.stop(None);
                }
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
                if let Some(actor) = quota.actor.get() {
                    actor.stop(Some("idle".to_owned()));
                }
                for lease in quota.take_leases() {
                    self.close_soon(lease);
                }
            }
        }
    }

    /// This node's view of a key's rate buckets, for the admin API.
    pub fn local_rates(&self, key: &KeyId) -> Option<LocalRates> {
        let quota = self.keys.get(key)?;
        let now = Instant::now();
        let mut rates = quota.rate.lock().expect("quota lock");
        Some(LocalRates {
            remaining_requests: rates.rpm.as_mut().map(|(_, b)| b.remaining(now)),
            remaining_tokens: rates.tpm.as_mut().map(|(_, b)| b.remaining(now)),
            rpm_share: rates.rpm.as_ref().map(|(share, _)| *share),
            tpm_share: rates.tpm.as_ref().map(|(share, _)| *share),
            requests_per_minute: rates.demand.0,
            tokens_per_minute: rates.demand.1,
        })
    }

    /// Each active key's demand on this node since the last call `elapsed` seconds ago, per
    /// minute and smoothed, for the rate planner.
    pub(crate) fn take_demand(
        &self,
        elapsed: f64,
    ) -> std::collections::BTreeMap<KeyId, (f64, f64)> {
        let mut demand = std::collections::BTreeMap::new();
        for entry in self.keys.iter() {
            let requests = entry.asked_requests.swap(0, Ordering::Relaxed) as f64;
            let tokens = entry.asked_tokens.swap(0, Ordering::Relaxed) as f64;
            let mut rates = entry.rate.lock().expect("quota lock");
            if rates.rpm.is_none() && rates.tpm.is_none() {
                continue;
            }
            let per_minute = 60.0 / elapsed.max(0.001);
            let smooth = |old: f64, new: f64| 0.5 * old + 0.5 * new;
            rates.demand = (
                smooth(rates.demand.0, requests * per_minute),
                smooth(rates.demand.1, tokens * per_minute),
            );
            if rates.demand.0 >= 0.5 || rates.demand.1 >= 0.5 {
                demand.insert(entry.key().clone(), rates.demand);
            }
        }
        demand
    }
}

/// This node's view of a key's rates, for the admin API.
#[derive(Debug, serde::Serialize)]
pub(crate) struct LocalRates {
    pub remaining_requests: Option<u64>,
    pub remaining_tokens: Option<u64>,
    /// This node's share of the key's RPM and TPM now (planned by demand, else the even split).
    pub rpm_share: Option<f64>,
    pub tpm_share: Option<f64>,
    /// What this node was asked for, per minute (smoothed).
    pub requests_per_minute: f64,
    pub tokens_per_minute: f64,
}

/// OpenAI's rate-limit headers for this node's share of the key's RPM and TPM.
fn rate_headers(rates: &mut Rates, key: &KeyRecord, now: Instant) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let (Some(limit), Some((_, bucket))) = (key.limits.rpm, rates.rpm.as_mut()) {
        headers.insert(LIMIT_REQUESTS, HeaderValue::from(limit));
        headers.insert(REMAINING_REQUESTS, HeaderValue::from(bucket.remaining(now)));
        headers.insert(RESET_REQUESTS, seconds(bucket.until_full(now)));
    }
    if let (Some(limit), Some((_, bucket))) = (key.limits.tpm, rates.tpm.as_mut()) {
        headers.insert(LIMIT_TOKENS, HeaderValue::from(limit));
        headers.insert(REMAINING_TOKENS, HeaderValue::from(bucket.remaining(now)));
        headers.insert(RESET_TOKENS, seconds(bucket.until_full(now)));
    }
    headers
}

const LIMIT_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-limit-requests");
const REMAINING_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-remaining-requests");
const RESET_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-reset-requests");
const LIMIT_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-limit-tokens");
const REMAINING_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-remaining-tokens");
const RESET_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-reset-tokens");

/// `duration` as OpenAI writes it, seconds with three decimals (`"1.250s"`), rounded to the
/// millisecond, without `format!`: this runs for every admitted request of a rate-limited key.
fn seconds(duration: Duration) -> HeaderValue {
    let millis = duration.as_nanos().saturating_add(500_000) / 1_000_000;
    let (whole, frac) = (millis / 1000, (millis % 1000) as u16);
    let mut text = String::with_capacity(24);
    text.push_str(itoa::Buffer::new().format(whole));
    text.push('.');
    text.push(char::from(b'0' + (frac / 100) as u8));
    text.push(char::from(b'0' + (frac / 10 % 10) as u8));
    text.push(char::from(b'0' + (frac % 10) as u8));
    text.push('s');
    HeaderValue::try_from(text).expect("digits, a dot and an s are a valid header value")
}

fn retry_after(wait: Duration) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    headers.insert(http::header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    headers
}
