//! The upstream actor: it owns one upstream's health (active probes), outlier detection,
//! circuit breaker and latency average, and publishes them as an [`UpstreamStatus`] snapshot.
//!
//! The request path never awaits it. It reads the snapshot through [`UpstreamHandle`] (an
//! `ArcSwap` load), claims half-open probe permits and counts requests in flight with atomics
//! on the same handle, and reports each attempt's outcome when the attempt ends ([`Attempt`]):
//! failures and probe results by a cast at once; plain successes, the bulk of the traffic,
//! into a queue on the handle, with the time they happened, that the actor folds in within
//! [`QUIET_FLUSH`], and before any outcome numbered after them (outcomes racing on two threads
//! may still be folded in either order, as casts could arrive). A cast per
//! success would wake the actor's task, often on the other worker thread, for every request
//! (BENCHMARKS.md). The handle outlives any one incarnation of the actor: a restarted actor
//! starts from the last snapshot it published, and the atomics carry on untouched.
//!
//! Decisions are pure methods of [`UpstreamStatus`] (tested below without a runtime); the
//! actor does the effects around them: timers, probe tasks, publishing.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use aigw_config::{BreakerSettings, HealthCheckSettings, UpstreamSettings};
use arc_swap::ArcSwap;
use parking_lot::Mutex;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::breaker::{Breaker, BreakerState, Transition};
use crate::cluster_view::{UpstreamView, is_avoided};
use crate::ewma::Ewma;
use crate::health::{Health, HealthProbe, ProbeResult, ProbeTracker};
use crate::mailbox::Mailbox;
use crate::outlier::OutlierDetector;

/// How long a success may wait in the handle's queue before the actor folds it in.
pub const QUIET_FLUSH: Duration = Duration::from_millis(20);
/// Successes queued beyond this (the actor down or far behind) push out the oldest: they only
/// refine the latency average and the failure rate's denominator.
const QUIET_MAX: usize = 4096;

/// The settings the actor decides with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamPolicy {
    pub health: HealthCheckSettings,
    pub breaker: BreakerSettings,
}

impl UpstreamPolicy {
    pub fn of(settings: &UpstreamSettings) -> Self {
        Self {
            health: settings.health.clone(),
            breaker: settings.breaker.clone(),
        }
    }
}

/// How one attempt ended, as the request path saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptResult {
    /// The upstream answered and, for a success, delivered the whole body.
    Success,
    /// Connect error, timeout, 5xx, 429, or a body that broke off.
    Failure,
    /// The client went away first: says nothing about the upstream.
    Cancelled,
}

/// An attempt's outcome, cast to the upstream actor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub result: AttemptResult,
    /// Time to the response head, when one came.
    pub latency: Option<Duration>,
    /// The breaker epoch of the half-open round whose permit the attempt held.
    pub probe_epoch: Option<u64>,
}

/// What the request path may do with an upstream right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Send requests.
    Open,
    /// Half-open: send only with a probe permit.
    ProbeOnly,
    /// Do not send.
    Avoided,
}

/// Everything the actor knows about its upstream; published whole after every change.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamStatus {
    pub probes: ProbeTracker,
    pub breaker: Breaker,
    pub outliers: OutlierDetector,
    pub latency: Ewma,
    pub last_success: Option<Instant>,
}

impl UpstreamStatus {
    pub fn new(policy: &UpstreamPolicy, now: Instant) -> Self {
        Self {
            probes: ProbeTracker::new(now),
            breaker: Breaker::new(now),
            outliers: OutlierDetector::new(&policy.breaker, now),
            latency: Ewma::default(),
            last_success: None,
        }
    }

    /// Folds in one attempt's outcome.
    pub fn on_outcome(
        &mut self,
        outcome: &Outcome,
        now: Instant,
        policy: &UpstreamPolicy,
    ) -> Transition {
        let settings = &policy.breaker;
        if outcome.result == AttemptResult::Success {
            // Queued successes are folded in with the time they happened, which may be
            // earlier than an outcome folded in before them.
            self.last_success = Some(self.last_success.map_or(now, |last| last.max(now)));
            if let Some(latency) = outcome.latency {
                self.latency.observe(latency.as_secs_f64() * 1000.0);
            }
        }
        match (self.breaker.state, outcome.result) {
            (_, AttemptResult::Cancelled) => match outcome.probe_epoch {
                Some(epoch) => self.breaker.probe_cancelled(epoch),
                None => Transition::None,
            },
            (BreakerState::Closed, result) => {
                let failed = result == AttemptResult::Failure;
                if self.outliers.record(failed, now, settings) {
                    self.outliers.reset();
                    self.breaker.open(now, settings)
                } else {
                    Transition::None
                }
            }
            (BreakerState::HalfOpen { .. }, result) => match outcome.probe_epoch {
                Some(epoch) => self.breaker.probe_result(
                    epoch,
                    result == AttemptResult::Success,
                    now,
                    settings,
                ),
                // Admitted before the breaker opened: old news.
                None => Transition::None,
            },
            (BreakerState::Open { .. }, _) => Transition::None,
        }
    }

    /// Folds in one active probe's result. An upstream the probes see come back is given
    /// its half-open round at once instead of waiting out the open period.
    pub fn on_probe(
        &mut self,
        result: &ProbeResult,
        now: Instant,
        policy: &UpstreamPolicy,
    ) -> Transition {
        let change = self.probes.record(result, now, &policy.health);
        match (change, self.breaker.state) {
            (Some(Health::Up), BreakerState::Open { .. }) => {
                self.breaker.half_open(now, &policy.breaker)
            }
            _ => Transition::None,
        }
    }

    pub fn on_open_elapsed(
        &mut self,
        epoch: u64,
        now: Instant,
        policy: &UpstreamPolicy,
    ) -> Transition {
        self.breaker.open_elapsed(epoch, now, &policy.breaker)
    }

    /// This node's verdict, as gossip carries it: down when the probes or the breaker say
    /// so; up when the probes say so or a request succeeded within the breaker's window;
    /// otherwise unknown.
    pub fn view(&self, now: Instant, policy: &UpstreamPolicy) -> UpstreamView {
        if self.probes.health == Health::Down || !self.breaker.is_closed() {
            return UpstreamView::Down;
        }
        let recent_success = self
            .last_success
            .is_some_and(|at| now.saturating_duration_since(at) <= policy.breaker.window);
        if self.probes.health == Health::Up || recent_success {
            UpstreamView::Up
        } else {
            UpstreamView::Unknown
        }
    }

    /// When this node last saw the upstream fail, as far as it still counts: the start of
    /// an open or half-open breaker, or of a `down` verdict of the probes. `None` when
    /// neither holds (an upstream avoided only on the peers' word).
    pub fn failed_at(&self) -> Option<Instant> {
        let breaker = (!self.breaker.is_closed()).then_some(self.breaker.since);
        let probes = (self.probes.health == Health::Down).then_some(self.probes.since);
        breaker.max(probes)
    }

    /// What the request path may do, from this node's observations alone.
    pub fn admission(&self) -> Admission {
        let down = self.probes.health == Health::Down;
        match self.breaker.state {
            BreakerState::Open { .. } => Admission::Avoided,
            _ if down => Admission::Avoided,
            BreakerState::HalfOpen { .. } => Admission::ProbeOnly,
            BreakerState::Closed => Admission::Open,
        }
    }
}

/// The shared face of one upstream: the snapshot its actor publishes and the atomics the
/// request path updates. Lives as long as the node, across actor restarts.
pub struct UpstreamHandle {
    id: Arc<str>,
    policy: UpstreamPolicy,
    peer_down_quorum: u32,
    status: ArcSwap<UpstreamStatus>,
    in_flight: AtomicU32,
    probe_permits: AtomicU32,
    peers_down: AtomicU32,
    restarts: AtomicU32,
    /// Plain successes not yet folded in, with their place among all reported outcomes, and
    /// whether a flush of them is due. parking_lot's lock: it cannot be poisoned, so the
    /// request path that takes it has nothing to unwrap and no way to panic on it.
    quiet: Mutex<VecDeque<(u64, Outcome, Instant)>>,
    reported: AtomicU64,
    flush_due: AtomicBool,
    mailbox: Mailbox<UpstreamMsg>,
}

impl std::fmt::Debug for UpstreamHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamHandle")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl UpstreamHandle {
    pub fn new(id: Arc<str>, policy: UpstreamPolicy, peer_down_quorum: u32) -> Arc<Self> {
        let status = UpstreamStatus::new(&policy, Instant::now());
        Arc::new(Self {
            id,
            policy,
            peer_down_quorum,
            status: ArcSwap::from_pointee(status),
            in_flight: AtomicU32::new(0),
            probe_permits: AtomicU32::new(0),
            peers_down: AtomicU32::new(0),
            restarts: AtomicU32::new(0),
            quiet: Mutex::new(VecDeque::new()),
            reported: AtomicU64::new(0),
            flush_due: AtomicBool::new(false),
            mailbox: Mailbox::empty(),
        })
    }

    pub fn id(&self) -> &Arc<str> {
        &self.id
    }

    pub fn policy(&self) -> &UpstreamPolicy {
        &self.policy
    }

    /// The last published snapshot.
    pub fn status(&self) -> Arc<UpstreamStatus> {
        self.status.load_full()
    }

    /// What the request path may do now: this node's observations first, then, when it has
    /// no verdict of its own, the peers' (see cluster_view.rs).
    pub fn admission(&self) -> Admission {
        let status = self.status.load();
        match status.admission() {
            Admission::Open => {
                let peers_down = self.peers_down.load(Ordering::Relaxed);
                // The view needs the clock only when peers could matter.
                if peers_down > 0
                    && is_avoided(
                        status.view(Instant::now(), &self.policy),
                        peers_down,
                        self.peer_down_quorum,
                    )
                {
                    Admission::Avoided
                } else {
                    Admission::Open
                }
            }
            other => other,
        }
    }

    /// Starts an attempt as `admission` allows: counted in flight, and holding a probe permit
    /// when half-open. `None` when no permit is left.
    pub fn begin(self: &Arc<Self>, admission: Admission) -> Option<Attempt> {
        let probe_epoch = match admission {
            Admission::Avoided => return None,
            Admission::Open => None,
            Admission::ProbeOnly => {
                self.probe_permits
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
                    .ok()?;
                Some(self.status.load().breaker.epoch)
            }
        };
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Some(Attempt {
            handle: Arc::clone(self),
            probe_epoch,
            started: Instant::now(),
            head_latency: None,
            reported: false,
        })
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// When this node last saw the upstream fail (see [`UpstreamStatus::failed_at`]).
    pub fn failed_at(&self) -> Option<Instant> {
        self.status.load().failed_at()
    }

    pub fn latency_ms(&self) -> f64 {
        self.status.load().latency.millis()
    }

    /// This node's own view, as gossip publishes it.
    pub fn view(&self) -> UpstreamView {
        self.status.load().view(Instant::now(), &self.policy)
    }

    /// How many live peers report this upstream down (fed by gossip).
    pub fn peers_down(&self) -> u32 {
        self.peers_down.load(Ordering::Relaxed)
    }

    pub(crate) fn set_peers_down(&self, count: u32) {
        self.peers_down.store(count, Ordering::Relaxed);
    }

    /// How many times a supervisor restarted this upstream's actor.
    pub fn restarts(&self) -> u32 {
        self.restarts.load(Ordering::Relaxed)
    }

    pub(crate) fn count_restart(&self) {
        self.restarts.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn set_actor(&self, actor: ActorRef<UpstreamMsg>) {
        self.mailbox.set(actor);
    }

    /// Sends a message to the current incarnation of the actor; false when it is down.
    pub fn send(&self, message: UpstreamMsg) -> bool {
        self.mailbox.cast(message)
    }

    /// Queues a plain success; only the first one after a flush costs a cast (which arms the
    /// next flush), so the actor wakes about once per [`QUIET_FLUSH`] under load, not per
    /// request.
    fn report_quiet(&self, outcome: Outcome) {
        {
            // Numbered under the lock, so the queue is in order.
            let mut quiet = self.quiet.lock();
            let seq = self.reported.fetch_add(1, Ordering::AcqRel);
            if quiet.len() == QUIET_MAX {
                quiet.pop_front();
            }
            quiet.push_back((seq, outcome, Instant::now()));
        }
        if !self.flush_due.swap(true, Ordering::AcqRel) && !self.send(UpstreamMsg::FlushSoon) {
            // No actor to arm: the next success tries again.
            self.flush_due.store(false, Ordering::Release);
        }
    }

    /// Casts a failure or a probe's result, numbered after every success queued so far.
    fn report_now(&self, outcome: Outcome) {
        let seq = self.reported.fetch_add(1, Ordering::AcqRel);
        self.send(UpstreamMsg::Outcome { outcome, seq });
    }

    /// Takes the queued successes reported before `seq`, in order, with when they happened.
    fn take_quiet(&self, seq: u64) -> Vec<(Outcome, Instant)> {
        let mut quiet = self.quiet.lock();
        let count = quiet.partition_point(|(at, _, _)| *at < seq);
        quiet
            .drain(..count)
            .map(|(_, outcome, at)| (outcome, at))
            .collect()
    }

    fn publish(&self, status: &UpstreamStatus) {
        self.status.store(Arc::new(status.clone()));
    }

    fn apply(&self, myself: &ActorRef<UpstreamMsg>, transition: Transition, epoch: u64) {
        match transition {
            Transition::None => {}
            Transition::Opened { period } => {
                self.probe_permits.store(0, Ordering::Release);
                myself.send_after(period, move || UpstreamMsg::OpenElapsed { epoch });
            }
            Transition::HalfOpened { probes } => {
                self.probe_permits.store(probes, Ordering::Release);
            }
            Transition::Closed => self.probe_permits.store(0, Ordering::Release),
            Transition::ProbeReturned => {
                self.probe_permits.fetch_add(1, Ordering::AcqRel);
            }
        }
    }
}

/// One request's attempt on one upstream, from just before it is sent until its outcome is
/// known. Report it with [`Attempt::finish`]; dropped unreported, it counts as cancelled.
pub struct Attempt {
    handle: Arc<UpstreamHandle>,
    probe_epoch: Option<u64>,
    started: Instant,
    head_latency: Option<Duration>,
    reported: bool,
}

impl std::fmt::Debug for Attempt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attempt")
            .field("upstream", &self.handle.id)
            .field("probe", &self.probe_epoch.is_some())
            .finish_non_exhaustive()
    }
}

impl Attempt {
    pub fn upstream(&self) -> &Arc<UpstreamHandle> {
        &self.handle
    }

    /// Whether this attempt is one of a half-open breaker's probes.
    pub fn is_probe(&self) -> bool {
        self.probe_epoch.is_some()
    }

    /// Marks the arrival of the response head: the latency balancing uses.
    pub fn head_received(&mut self) {
        self.head_latency = Some(self.started.elapsed());
    }

    /// Reports the outcome to the upstream's actor (once; later calls do nothing).
    pub fn finish(&mut self, result: AttemptResult) {
        if self.reported {
            return;
        }
        self.reported = true;
        if result == AttemptResult::Cancelled && self.probe_epoch.is_none() {
            // Says nothing about the upstream and holds no permit: nothing to tell the actor.
            return;
        }
        let outcome = Outcome {
            result,
            latency: self.head_latency,
            probe_epoch: self.probe_epoch,
        };
        if result == AttemptResult::Success && self.probe_epoch.is_none() {
            self.handle.report_quiet(outcome);
        } else {
            self.handle.report_now(outcome);
        }
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        self.finish(AttemptResult::Cancelled);
        self.handle.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Messages of the upstream actor.
#[derive(Debug)]
pub enum UpstreamMsg {
    /// An attempt ended (from the request path): a failure or a probe's result, the `seq`-th
    /// outcome reported.
    Outcome { outcome: Outcome, seq: u64 },
    /// Plain successes are queued on the handle: fold them in [`QUIET_FLUSH`] from now.
    FlushSoon,
    /// Fold the queued successes in now.
    Flush,
    /// Time for an active probe (from the actor's own ticker).
    ProbeDue,
    /// An active probe ended.
    ProbeDone(ProbeResult),
    /// The open period armed in `epoch` is over.
    OpenElapsed { epoch: u64 },
    /// Probe with this from now on (from the supervisor): a settings change rebuilt the
    /// upstream's endpoint (its client, its credentials) but not the probe's target, so the
    /// state carries on. A probe already running finishes and counts.
    UseProbe(Arc<dyn HealthProbe>),
    /// Fault injection: the actor panics, so tests and jepsen runs can prove it is restarted
    /// from its last published state while the node keeps serving.
    InjectPanic,
}

pub struct UpstreamActor;

pub struct UpstreamArgs {
    pub handle: Arc<UpstreamHandle>,
    pub probe: Arc<dyn HealthProbe>,
}

pub struct UpstreamState {
    handle: Arc<UpstreamHandle>,
    probe: Arc<dyn HealthProbe>,
    /// The working copy; published after every change.
    status: UpstreamStatus,
    probe_task: Option<JoinHandle<()>>,
    ticker: Option<JoinHandle<()>>,
}

impl Actor for UpstreamActor {
    type Msg = UpstreamMsg;
    type State = UpstreamState;
    type Arguments = UpstreamArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<UpstreamMsg>,
        args: UpstreamArgs,
    ) -> Result<UpstreamState, ActorProcessingErr> {
        // A restart resumes from the last published snapshot; a first start from the fresh
        // one the handle was created with.
        let status = (*args.handle.status()).clone();
        // A flush the last incarnation had armed died with it: the next success re-arms one.
        args.handle.flush_due.store(false, Ordering::Release);
        args.handle.set_actor(myself);
        Ok(UpstreamState {
            handle: args.handle,
            probe: args.probe,
            status,
            probe_task: None,
            ticker: None,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<UpstreamMsg>,
        state: &mut UpstreamState,
    ) -> Result<(), ActorProcessingErr> {
        // Re-arm what a restart lost: the end of an open period. (Half-open permits live in
        // the handle and survive as they are.)
        if let BreakerState::Open { until } = state.status.breaker.state {
            let epoch = state.status.breaker.epoch;
            let left = until.saturating_duration_since(Instant::now());
            myself.send_after(left, move || UpstreamMsg::OpenElapsed { epoch });
        }
        let health = &state.handle.policy.health;
        if health.enabled {
            state.ticker = Some(myself.send_interval(health.interval, || UpstreamMsg::ProbeDue));
            myself.cast(UpstreamMsg::ProbeDue)?;
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<UpstreamMsg>,
        state: &mut UpstreamState,
    ) -> Result<(), ActorProcessingErr> {
        for task in [state.ticker.take(), state.probe_task.take()]
            .into_iter()
            .flatten()
        {
            task.abort();
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<UpstreamMsg>,
        message: UpstreamMsg,
        state: &mut UpstreamState,
    ) -> Result<(), ActorProcessingErr> {
        let now = Instant::now();
        let handle = Arc::clone(&state.handle);
        let policy = &handle.policy;
        let before = handle.status();
        // Successes reported before a message are folded in before it.
        let transition = match message {
            UpstreamMsg::FlushSoon => {
                myself.send_after(QUIET_FLUSH, || UpstreamMsg::Flush);
                return Ok(());
            }
            UpstreamMsg::ProbeDue => {
                if state.probe_task.is_none() {
                    state.probe_task = Some(spawn_probe(&myself, state));
                }
                return Ok(());
            }
            UpstreamMsg::UseProbe(probe) => {
                state.probe = probe;
                return Ok(());
            }
            UpstreamMsg::InjectPanic => {
                panic!("fault injection: upstream actor `{}` panics", handle.id)
            }
            UpstreamMsg::Flush => {
                // Disarmed before taking, so a success queued meanwhile arms the next flush.
                handle.flush_due.store(false, Ordering::Release);
                state.fold_quiet(&myself, u64::MAX);
                Transition::None
            }
            UpstreamMsg::Outcome { outcome, seq } => {
                state.fold_quiet(&myself, seq);
                state.status.on_outcome(&outcome, now, policy)
            }
            UpstreamMsg::ProbeDone(result) => {
                state.fold_quiet(&myself, u64::MAX);
                state.probe_task = None;
                state.status.on_probe(&result, now, policy)
            }
            UpstreamMsg::OpenElapsed { epoch } => {
                state.fold_quiet(&myself, u64::MAX);
                state.status.on_open_elapsed(epoch, now, policy)
            }
        };
        handle.apply(&myself, transition, state.status.breaker.epoch);
        handle.publish(&state.status);
        log_changes(&handle.id, &before, &state.status);
        Ok(())
    }
}

impl UpstreamState {
    /// Folds in the successes queued on the handle before the `seq`-th outcome, in the order
    /// they were reported.
    fn fold_quiet(&mut self, myself: &ActorRef<UpstreamMsg>, seq: u64) {
        for (outcome, at) in self.handle.take_quiet(seq) {
            let transition = self.status.on_outcome(&outcome, at, &self.handle.policy);
            self.handle
                .apply(myself, transition, self.status.breaker.epoch);
        }
    }
}

/// Health and breaker transitions are rare and worth an operator's attention.
fn log_changes(id: &str, before: &UpstreamStatus, after: &UpstreamStatus) {
    if before.probes.health != after.probes.health {
        tracing::info!(
            upstream = id,
            from = before.probes.health.as_str(),
            to = after.probes.health.as_str(),
            why = after.probes.last_failure.as_deref().unwrap_or("-"),
            "health"
        );
    }
    if before.breaker.state.as_str() != after.breaker.state.as_str() {
        tracing::info!(
            upstream = id,
            from = before.breaker.state.as_str(),
            to = after.breaker.state.as_str(),
            "breaker"
        );
    }
}

/// Runs one probe under the configured timeout in its own task, so the actor keeps taking
/// outcomes meanwhile; the result comes back as a message.
fn spawn_probe(myself: &ActorRef<UpstreamMsg>, state: &UpstreamState) -> JoinHandle<()> {
    let probe = state.probe.probe();
    let timeout = state.handle.policy.health.timeout;
    let myself = myself.clone();
    tokio::spawn(async move {
        let result = match tokio::time::timeout(timeout, probe).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {}ms", timeout.as_millis())),
        };
        // The actor may have been restarted meanwhile; then this result is dropped.
        let _ = myself.cast(UpstreamMsg::ProbeDone(result));
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> UpstreamPolicy {
        UpstreamPolicy {
            health: HealthCheckSettings::default(),
            breaker: BreakerSettings {
                consecutive_failures: 3,
                half_open_probes: 2,
                ..BreakerSettings::default()
            },
        }
    }

    fn outcome(result: AttemptResult, probe_epoch: Option<u64>) -> Outcome {
        Outcome {
            result,
            latency: Some(Duration::from_millis(50)),
            probe_epoch,
        }
    }

    #[test]
    fn failures_in_a_row_open_the_breaker_and_avoid_the_upstream() {
        let p = policy();
        let now = Instant::now();
        let mut status = UpstreamStatus::new(&p, now);
        assert_eq!(status.admission(), Admission::Open);
        let fail = outcome(AttemptResult::Failure, None);
        assert_eq!(status.on_outcome(&fail, now, &p), Transition::None);
        assert_eq!(status.on_outcome(&fail, now, &p), Transition::None);
        assert!(matches!(
            status.on_outcome(&fail, now, &p),
            Transition::Opened { .. }
        ));
        assert_eq!(status.admission(), Admission::Avoided);
        assert_eq!(status.view(now, &p), UpstreamView::Down);
        // Outcomes of requests admitted before the opening change nothing.
        assert_eq!(status.on_outcome(&fail, now, &p), Transition::None);
    }

    #[test]
    fn half_open_lets_only_probes_count_and_closes_on_their_success() {
        let p = policy();
        let now = Instant::now();
        let mut status = UpstreamStatus::new(&p, now);
        status.breaker.open(now, &p.breaker);
        let epoch = status.breaker.epoch;
        assert_eq!(
            status.on_open_elapsed(epoch, now, &p),
            Transition::HalfOpened { probes: 2 }
        );
        assert_eq!(status.admission(), Admission::ProbeOnly);
        let round = status.breaker.epoch;
        let ok = outcome(AttemptResult::Success, Some(round));
        // A late non-probe success is not evidence for this round.
        status.on_outcome(&outcome(AttemptResult::Success, None), now, &p);
        assert_eq!(status.on_outcome(&ok, now, &p), Transition::None);
        assert_eq!(status.on_outcome(&ok, now, &p), Transition::Closed);
        assert_eq!(status.admission(), Admission::Open);
    }

    #[test]
    fn a_cancelled_probe_returns_its_permit() {
        let p = policy();
        let now = Instant::now();
        let mut status = UpstreamStatus::new(&p, now);
        status.breaker.half_open(now, &p.breaker);
        let round = status.breaker.epoch;
        assert_eq!(
            status.on_outcome(&outcome(AttemptResult::Cancelled, Some(round)), now, &p),
            Transition::ProbeReturned
        );
        assert_eq!(
            status.on_outcome(&outcome(AttemptResult::Cancelled, None), now, &p),
            Transition::None
        );
    }

    #[test]
    fn probes_seeing_the_upstream_return_start_the_half_open_round_early() {
        let p = policy();
        let now = Instant::now();
        let mut status = UpstreamStatus::new(&p, now);
        let fail = Err("refused".to_owned());
        status.on_probe(&fail, now, &p);
        status.on_probe(&fail, now, &p);
        assert_eq!(status.probes.health, Health::Down);
        status.breaker.open(now, &p.breaker);
        status.on_probe(&Ok(()), now, &p);
        assert_eq!(
            status.on_probe(&Ok(()), now, &p),
            Transition::HalfOpened { probes: 2 }
        );
    }

    #[test]
    fn probes_down_avoid_the_upstream_even_with_the_breaker_closed() {
        let p = policy();
        let now = Instant::now();
        let mut status = UpstreamStatus::new(&p, now);
        for _ in 0..2 {
            status.on_probe(&Err("503".to_owned()), now, &p);
        }
        assert!(status.breaker.is_closed());
        assert_eq!(status.admission(), Admission::Avoided);
    }

    #[test]
    fn the_view_is_unknown_until_probes_or_traffic_say_otherwise() {
        let p = policy();
        let now = Instant::now();
        let mut status = UpstreamStatus::new(&p, now);
        assert_eq!(status.view(now, &p), UpstreamView::Unknown);
        status.on_outcome(&outcome(AttemptResult::Success, None), now, &p);
        assert_eq!(status.view(now, &p), UpstreamView::Up);
        let later = now + p.breaker.window + Duration::from_secs(1);
        assert_eq!(
            status.view(later, &p),
            UpstreamView::Unknown,
            "stale success"
        );
        status.on_probe(&Ok(()), later, &p);
        assert_eq!(status.view(later, &p), UpstreamView::Up);
    }

    #[test]
    fn successes_feed_the_latency_average_and_failures_do_not() {
        let p = policy();
        let now = Instant::now();
        let mut status = UpstreamStatus::new(&p, now);
        status.on_outcome(&outcome(AttemptResult::Failure, None), now, &p);
        assert!(!status.latency.has_samples());
        status.on_outcome(&outcome(AttemptResult::Success, None), now, &p);
        assert_eq!(status.latency.millis(), 50.0);
    }

    #[test]
    fn peers_matter_only_without_a_verdict_of_its_own() {
        let handle = UpstreamHandle::new("a".into(), policy(), 2);
        handle.set_peers_down(2);
        assert_eq!(
            handle.admission(),
            Admission::Avoided,
            "unknown defers to peers"
        );
        handle.set_peers_down(1);
        assert_eq!(handle.admission(), Admission::Open, "below the quorum");
        let mut status = (*handle.status()).clone();
        status.on_probe(&Ok(()), Instant::now(), handle.policy());
        handle.publish(&status);
        handle.set_peers_down(5);
        assert_eq!(handle.admission(), Admission::Open, "its own up wins");
    }

    #[test]
    fn attempts_count_in_flight_and_half_open_permits_bound_probes() {
        let handle = UpstreamHandle::new("a".into(), policy(), 2);
        let open = handle.begin(Admission::Open).unwrap();
        assert_eq!(handle.in_flight(), 1);
        assert!(
            handle.begin(Admission::ProbeOnly).is_none(),
            "no permits yet"
        );
        handle.probe_permits.store(1, Ordering::Release);
        let probe = handle.begin(Admission::ProbeOnly).unwrap();
        assert!(probe.is_probe());
        assert!(
            handle.begin(Admission::ProbeOnly).is_none(),
            "one permit, one probe"
        );
        assert!(handle.begin(Admission::Avoided).is_none());
        drop((open, probe));
        assert_eq!(handle.in_flight(), 0);
    }
}
