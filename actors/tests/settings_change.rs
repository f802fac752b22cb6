//! A settings change with real actors on tokio's paused clock: unchanged upstreams keep their
//! actor and state, changed ones start fresh, removed ones stop, new ones are probed, and the
//! supervisor keeps restarting what it keeps.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use aigw_actors::{
    Admission, AttemptResult, BreakerState, Health, HealthProbe, NodeActors, ProbeFuture,
    SessionKey, UpstreamHandle, UpstreamMsg, UpstreamPolicy, UpstreamSpec,
};
use aigw_config::{BreakerSettings, HealthCheckSettings, RoutingSettings};
use ractor::ActorCell;

/// A probe of one URL, as the node's would be: a settings change builds a new one for the
/// same target. Counts its calls, so a test sees which probe an actor uses.
struct UrlProbe {
    url: &'static str,
    passing: AtomicBool,
    calls: AtomicU32,
}

impl UrlProbe {
    fn new(url: &'static str) -> Arc<Self> {
        Arc::new(Self {
            url,
            passing: AtomicBool::new(true),
            calls: AtomicU32::new(0),
        })
    }

    fn calls(&self) -> u32 {
        self.calls.load(Ordering::Relaxed)
    }
}

impl HealthProbe for UrlProbe {
    fn probe(&self) -> ProbeFuture {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let passing = self.passing.load(Ordering::Relaxed);
        Box::pin(async move {
            if passing {
                Ok(())
            } else {
                Err("connection refused".to_owned())
            }
        })
    }

    fn target(&self) -> Option<String> {
        Some(self.url.to_owned())
    }
}

/// Probes every 5 s (the default); three failures in a row open the breaker for a minute.
fn policy() -> UpstreamPolicy {
    UpstreamPolicy {
        health: HealthCheckSettings::default(),
        breaker: BreakerSettings {
            consecutive_failures: 3,
            open_for: Duration::from_secs(60),
            ..BreakerSettings::default()
        },
    }
}

fn spec(id: &str, policy: &UpstreamPolicy, probe: &Arc<UrlProbe>) -> UpstreamSpec {
    UpstreamSpec {
        id: id.into(),
        policy: policy.clone(),
        probe: probe.clone(),
    }
}

/// Polls `condition` for up to a minute of (paused) time.
async fn wait_until(what: &str, condition: impl Fn() -> bool) {
    for _ in 0..600 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting until {what}");
}

fn actor(name: &str) -> Option<ActorCell> {
    ractor::registry::where_is(name)
}

fn ids(list: &[Arc<str>]) -> Vec<&str> {
    list.iter().map(|id| &**id).collect()
}

async fn open_breaker(handle: &Arc<UpstreamHandle>) {
    for _ in 0..3 {
        let mut attempt = handle.begin(Admission::Open).expect("admitted");
        attempt.finish(AttemptResult::Failure);
    }
    wait_until("the breaker opened", || {
        matches!(handle.status().breaker.state, BreakerState::Open { .. })
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn an_unchanged_upstream_keeps_its_actor_open_breaker_and_sessions_across_a_settings_change()
{
    let policy = policy();
    let (a1, b1) = (
        UrlProbe::new("http://a/health"),
        UrlProbe::new("http://b/health"),
    );
    let mut actors = NodeActors::start(
        1,
        "test-keep",
        vec![spec("a", &policy, &a1), spec("b", &policy, &b1)],
        &RoutingSettings::default(),
    )
    .await
    .unwrap();
    let a = Arc::clone(actors.upstreams().get("a").unwrap());
    wait_until("a is up", || a.status().probes.health == Health::Up).await;
    open_breaker(&a).await;
    let before = a.status();
    let incarnation = actor("test-keep/upstream/a").unwrap().get_id();
    let sessions = Arc::clone(actors.sessions());
    let session = SessionKey::new("chat", "conversation-1");
    sessions.served(session, a.id());
    wait_until("the session is bound", || {
        sessions.bound_upstream(session).is_some()
    })
    .await;

    // The node rebuilds every endpoint and probe on a settings change; same targets.
    let (a2, b2) = (
        UrlProbe::new("http://a/health"),
        UrlProbe::new("http://b/health"),
    );
    let plan = actors.plan_upstreams(vec![spec("a", &policy, &a2), spec("b", &policy, &b2)]);
    assert_eq!(ids(plan.kept()), ["a", "b"]);
    assert!(plan.started().is_empty() && plan.stopped().is_empty());
    assert!(Arc::ptr_eq(plan.upstreams().get("a").unwrap(), &a));
    let board = actors.apply_upstreams(plan).await.unwrap();
    assert!(Arc::ptr_eq(actors.upstreams(), &board));

    // Same actor, same handle, same open breaker; the sessions carry on.
    assert_eq!(actor("test-keep/upstream/a").unwrap().get_id(), incarnation);
    assert_eq!(a.status().breaker, before.breaker);
    assert_eq!(a.admission(), Admission::Avoided);
    assert_eq!(a.restarts(), 0);
    assert!(Arc::ptr_eq(actors.sessions(), &sessions));
    assert_eq!(sessions.bound_upstream(session).as_deref(), Some("a"));

    // The kept actor probes with the new probe, and the old one is left alone.
    let (old_calls, new_calls) = (a1.calls(), a2.calls());
    tokio::time::sleep(Duration::from_secs(16)).await;
    assert_eq!(a1.calls(), old_calls, "the old probe is no longer used");
    assert!(
        a2.calls() >= new_calls + 3,
        "the new probe runs every interval"
    );

    // Its open period's timer survived too: the breaker half-opens on time.
    tokio::time::sleep(Duration::from_secs(45)).await;
    wait_until("a's breaker half-opened", || {
        matches!(a.status().breaker.state, BreakerState::HalfOpen { .. })
    })
    .await;
    actors.stop().await;
}

#[tokio::test(start_paused = true)]
async fn an_upstream_whose_policy_or_probe_target_changed_starts_fresh() {
    let policy = policy();
    let (a1, b1) = (
        UrlProbe::new("http://a/health"),
        UrlProbe::new("http://b/health"),
    );
    let mut actors = NodeActors::start(
        1,
        "test-changed",
        vec![spec("a", &policy, &a1), spec("b", &policy, &b1)],
        &RoutingSettings::default(),
    )
    .await
    .unwrap();
    let a = Arc::clone(actors.upstreams().get("a").unwrap());
    let b = Arc::clone(actors.upstreams().get("b").unwrap());
    wait_until("both up", || {
        a.status().probes.health == Health::Up && b.status().probes.health == Health::Up
    })
    .await;
    open_breaker(&a).await;
    open_breaker(&b).await;
    let first_a = actor("test-changed/upstream/a").unwrap().get_id();

    // a: new breaker thresholds; b: moved to another address.
    let stricter = UpstreamPolicy {
        breaker: BreakerSettings {
            consecutive_failures: 2,
            ..policy.breaker.clone()
        },
        ..policy.clone()
    };
    let moved = UrlProbe::new("http://b2/health");
    let plan = actors.plan_upstreams(vec![spec("a", &stricter, &a1), spec("b", &policy, &moved)]);
    assert!(plan.kept().is_empty());
    assert_eq!(ids(plan.started()), ["a", "b"]);
    assert_eq!(ids(plan.stopped()), ["a", "b"]);
    actors.apply_upstreams(plan).await.unwrap();

    let new_a = Arc::clone(actors.upstreams().get("a").unwrap());
    let new_b = Arc::clone(actors.upstreams().get("b").unwrap());
    assert!(!Arc::ptr_eq(&new_a, &a) && !Arc::ptr_eq(&new_b, &b));
    assert_eq!(new_a.policy(), &stricter);
    for fresh in [&new_a, &new_b] {
        assert_eq!(fresh.status().breaker.state, BreakerState::Closed);
        assert_eq!(fresh.admission(), Admission::Open);
    }
    // A new actor under the same name; the old handles have no actor behind them.
    let second_a = actor("test-changed/upstream/a").expect("a's new actor is registered");
    assert_ne!(second_a.get_id(), first_a);
    assert!(!a.send(UpstreamMsg::Flush) && !b.send(UpstreamMsg::Flush));
    // b's new actor probes the new address.
    wait_until("b's new address was probed", || moved.calls() > 0).await;
    wait_until("b is up again", || {
        new_b.status().probes.health == Health::Up
    })
    .await;
    actors.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_removed_upstream_stops_and_a_new_one_is_probed() {
    let policy = policy();
    let (a1, b1, c1) = (
        UrlProbe::new("http://a/health"),
        UrlProbe::new("http://b/health"),
        UrlProbe::new("http://c/health"),
    );
    let mut actors = NodeActors::start(
        1,
        "test-removed",
        vec![spec("a", &policy, &a1), spec("b", &policy, &b1)],
        &RoutingSettings::default(),
    )
    .await
    .unwrap();
    let b = Arc::clone(actors.upstreams().get("b").unwrap());

    // A plan dropped unapplied changes nothing.
    drop(actors.plan_upstreams(vec![spec("c", &policy, &c1)]));
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(actor("test-removed/upstream/b").is_some());
    assert_eq!(c1.calls(), 0);

    let plan = actors.plan_upstreams(vec![spec("a", &policy, &a1), spec("c", &policy, &c1)]);
    assert_eq!(ids(plan.kept()), ["a"]);
    assert_eq!(ids(plan.started()), ["c"]);
    assert_eq!(ids(plan.stopped()), ["b"]);
    actors.apply_upstreams(plan).await.unwrap();

    assert!(
        actor("test-removed/upstream/b").is_none(),
        "b's actor stopped"
    );
    assert!(!b.send(UpstreamMsg::Flush));
    let b_calls = b1.calls();
    assert!(actors.upstreams().get("b").is_none());
    let c = Arc::clone(actors.upstreams().get("c").expect("c is on the board"));
    assert!(actor("test-removed/upstream/c").is_some());
    wait_until("c is up by its probes", || {
        c.status().probes.health == Health::Up
    })
    .await;
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert!(c1.calls() >= 3, "c is probed every interval");
    assert_eq!(b1.calls(), b_calls, "nobody probes b any more");
    actors.stop().await;
    assert!(actor("test-removed/upstream/c").is_none());
}

#[tokio::test(start_paused = true)]
async fn a_kept_upstream_is_still_restarted_from_its_state_with_its_new_probe() {
    let policy = policy();
    let (a1, b1, c1) = (
        UrlProbe::new("http://a/health"),
        UrlProbe::new("http://b/health"),
        UrlProbe::new("http://c/health"),
    );
    let mut actors = NodeActors::start(
        1,
        "test-restart-kept",
        vec![
            spec("a", &policy, &a1),
            spec("b", &policy, &b1),
            spec("c", &policy, &c1),
        ],
        &RoutingSettings::default(),
    )
    .await
    .unwrap();
    let c = Arc::clone(actors.upstreams().get("c").unwrap());
    wait_until("c is up", || c.status().probes.health == Health::Up).await;
    open_breaker(&c).await;
    let before = c.status();

    // b removed, c moved ahead of a: c's place among the children changes.
    let c2 = UrlProbe::new("http://c/health");
    let plan = actors.plan_upstreams(vec![spec("c", &policy, &c2), spec("a", &policy, &a1)]);
    assert_eq!(ids(plan.kept()), ["c", "a"]);
    actors.apply_upstreams(plan).await.unwrap();

    let first = actor("test-restart-kept/upstream/c").unwrap().get_id();
    assert!(c.send(UpstreamMsg::InjectPanic));
    wait_until("c was restarted", || c.restarts() == 1).await;
    let second = actor("test-restart-kept/upstream/c").expect("c runs again");
    assert_ne!(second.get_id(), first);
    assert_eq!(
        c.status().breaker,
        before.breaker,
        "restarted from its state"
    );
    let (old_calls, new_calls) = (c1.calls(), c2.calls());
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert_eq!(c1.calls(), old_calls);
    assert!(
        c2.calls() > new_calls,
        "the restart probes with the new probe"
    );
    actors.stop().await;
}
