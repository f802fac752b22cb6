//! The supervision tree with real actors: restarts from the last published state, probe-driven
//! isolation on tokio's paused clock, the breaker's timers, and session bindings with a TTL.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use aigw_actors::{
    Admission, AttemptResult, BreakerState, Health, HealthProbe, NodeActors, ProbeFuture,
    SessionKey, UpstreamHandle, UpstreamMsg, UpstreamPolicy, UpstreamSpec,
};
use aigw_config::{BreakerSettings, HealthCheckSettings, RoutingSettings};
use tokio::time::Instant;

const PASS: u8 = 0;
const FAIL: u8 = 1;
const HANG: u8 = 2;

/// A probe whose answer a test switches.
#[derive(Default)]
struct ScriptedProbe(AtomicU8);

impl ScriptedProbe {
    fn new(mode: u8) -> Arc<Self> {
        Arc::new(Self(AtomicU8::new(mode)))
    }
}

impl HealthProbe for ScriptedProbe {
    fn probe(&self) -> ProbeFuture {
        let mode = self.0.load(Ordering::Relaxed);
        Box::pin(async move {
            match mode {
                PASS => Ok(()),
                FAIL => Err("connection refused".to_owned()),
                _ => std::future::pending().await,
            }
        })
    }
}

fn spec(id: &str, policy: &UpstreamPolicy, probe: &Arc<ScriptedProbe>) -> UpstreamSpec {
    UpstreamSpec {
        id: id.into(),
        policy: policy.clone(),
        probe: probe.clone(),
    }
}

async fn wait_until(what: &str, condition: impl Fn() -> bool) {
    for _ in 0..500 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting until {what}");
}

fn fail_once(handle: &Arc<UpstreamHandle>) {
    let mut attempt = handle.begin(Admission::Open).expect("admitted");
    attempt.finish(AttemptResult::Failure);
}

#[tokio::test]
async fn a_panicking_upstream_actor_is_restarted_from_its_last_published_state() {
    let policy = UpstreamPolicy {
        health: HealthCheckSettings::default(),
        breaker: BreakerSettings {
            consecutive_failures: 3,
            open_for: Duration::from_millis(300),
            ..BreakerSettings::default()
        },
    };
    let probe = ScriptedProbe::new(PASS);
    let actors = NodeActors::start(
        7,
        "test-panic",
        vec![spec("a", &policy, &probe), spec("b", &policy, &probe)],
        &RoutingSettings::default(),
    )
    .await
    .unwrap();
    let a = Arc::clone(actors.upstreams().get("a").unwrap());
    let b = Arc::clone(actors.upstreams().get("b").unwrap());
    wait_until("the first probes passed", || {
        a.status().probes.health == Health::Up && b.status().probes.health == Health::Up
    })
    .await;
    for _ in 0..3 {
        fail_once(&a);
    }
    wait_until("a's breaker opened", || {
        matches!(a.status().breaker.state, BreakerState::Open { .. })
    })
    .await;
    let before = a.status();
    let first = ractor::registry::where_is("test-panic/upstream/a").unwrap();

    assert!(a.send(UpstreamMsg::InjectPanic));
    wait_until("a was restarted", || a.restarts() == 1).await;
    wait_until("the new incarnation is registered", || {
        ractor::registry::where_is("test-panic/upstream/a")
            .is_some_and(|cell| cell.get_id() != first.get_id())
    })
    .await;

    // The restarted actor resumed the open breaker, not a fresh closed one...
    let after = a.status();
    assert_eq!(after.breaker, before.breaker);
    assert_eq!(after.probes.health, Health::Up);
    assert_eq!(a.admission(), Admission::Avoided);
    // ...re-armed its open-period timer, so the breaker half-opens on time...
    wait_until("a's breaker half-opened", || {
        matches!(a.status().breaker.state, BreakerState::HalfOpen { .. })
    })
    .await;
    // ...and a probe request's success closes it: the new incarnation takes outcomes.
    let mut probe_attempt = a.begin(Admission::ProbeOnly).expect("a probe permit");
    probe_attempt.finish(AttemptResult::Success);
    drop(probe_attempt);
    for _ in 1..BreakerSettings::default().half_open_probes {
        let mut attempt = a.begin(Admission::ProbeOnly).expect("a probe permit");
        attempt.finish(AttemptResult::Success);
    }
    wait_until("a's breaker closed", || {
        a.status().breaker.state == BreakerState::Closed
    })
    .await;

    // Its sibling never noticed.
    assert_eq!(b.restarts(), 0);
    assert_eq!(b.admission(), Admission::Open);
    actors.stop().await;
    assert!(ractor::registry::where_is("test-panic/upstream/a").is_none());
}

/// Isolation by active probes alone (no traffic) with the default settings, in the worst
/// case (the upstream dies just after a probe passed): the first failed probe comes one
/// interval later and the second (the unhealthy threshold) one more interval later, so a
/// refused upstream is isolated after 2 x 5 s; a hanging one fails each probe at its timeout,
/// 2 s later.
#[tokio::test(start_paused = true)]
async fn with_default_settings_probes_alone_isolate_a_dead_upstream_within_two_intervals_plus_the_timeout()
 {
    let defaults = HealthCheckSettings::default();
    assert_eq!(
        (defaults.interval, defaults.timeout),
        (Duration::from_secs(5), Duration::from_secs(2))
    );
    let policy = UpstreamPolicy {
        health: defaults.clone(),
        breaker: BreakerSettings::default(),
    };
    for (mode, expected) in [(FAIL, 10.0), (HANG, 12.0)] {
        let probe = ScriptedProbe::new(PASS);
        let prefix = format!("test-isolation-{mode}");
        let actors = NodeActors::start(
            1,
            &prefix,
            vec![spec("a", &policy, &probe)],
            &RoutingSettings::default(),
        )
        .await
        .unwrap();
        let a = Arc::clone(actors.upstreams().get("a").unwrap());
        wait_until("up", || a.status().probes.health == Health::Up).await;
        // Die just after a probe passed: the worst moment.
        probe.0.store(mode, Ordering::Relaxed);
        let died = Instant::now();
        while a.admission() != Admission::Avoided {
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert!(died.elapsed() < Duration::from_secs(60), "never isolated");
        }
        let isolated_after = died.elapsed().as_secs_f64();
        assert!(
            (expected - 0.1..=expected + 0.1).contains(&isolated_after),
            "mode {mode}: isolated after {isolated_after} s, expected {expected} s"
        );
        // It comes back by the same probes: two passes in a row.
        probe.0.store(PASS, Ordering::Relaxed);
        let back = Instant::now();
        while a.admission() != Admission::Open {
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert!(back.elapsed() < Duration::from_secs(60), "never back");
        }
        assert!(back.elapsed() <= Duration::from_secs(10) + Duration::from_millis(100));
        actors.stop().await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_session_binding_lives_while_used_moves_when_told_and_expires_after_its_ttl() {
    let routing = RoutingSettings {
        session_ttl: Duration::from_secs(60),
        ..RoutingSettings::default()
    };
    let actors = NodeActors::start(1, "test-sessions", Vec::new(), &routing)
        .await
        .unwrap();
    let sessions = Arc::clone(actors.sessions());
    let key = SessionKey::new("chat", "conversation-1");
    let a: Arc<str> = "a".into();
    let b: Arc<str> = "b".into();

    sessions.served(key, &a);
    wait_until("bound", || sessions.bound_upstream(key).is_some()).await;
    assert_eq!(sessions.bound_upstream(key).as_deref(), Some("a"));

    // Used every 40 s, it outlives several TTLs.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_secs(40)).await;
        assert_eq!(sessions.bound_upstream(key).as_deref(), Some("a"));
        sessions.served(key, &a);
    }
    // Served elsewhere after a failover: the binding moves.
    sessions.served(key, &b);
    wait_until("moved", || {
        sessions.bound_upstream(key).as_deref() == Some("b")
    })
    .await;
    // Idle past the TTL: gone.
    tokio::time::sleep(Duration::from_secs(61)).await;
    assert_eq!(sessions.bound_upstream(key), None);
    assert!(sessions.is_empty());
    actors.stop().await;
}

#[tokio::test]
async fn two_nodes_in_one_process_do_not_collide_and_stopping_one_leaves_the_other() {
    let policy = UpstreamPolicy {
        health: HealthCheckSettings {
            enabled: false,
            ..HealthCheckSettings::default()
        },
        breaker: BreakerSettings::default(),
    };
    let probe = ScriptedProbe::new(PASS);
    let routing = RoutingSettings::default();
    let one = NodeActors::start(1, "test-two-1", vec![spec("a", &policy, &probe)], &routing)
        .await
        .unwrap();
    let two = NodeActors::start(2, "test-two-2", vec![spec("a", &policy, &probe)], &routing)
        .await
        .unwrap();
    one.stop().await;
    let a = two.upstreams().get("a").unwrap();
    for _ in 0..5 {
        fail_once(a);
    }
    wait_until("node two's actor still works", || {
        !a.status().breaker.is_closed()
    })
    .await;
    two.stop().await;
}

/// Plain successes are queued on the handle instead of cast one by one: the actor folds them
/// in within `QUIET_FLUSH`, and before any failure that came after them, so a success between
/// failures still breaks a run of consecutive failures.
#[tokio::test(start_paused = true)]
async fn queued_successes_are_folded_in_within_the_flush_delay_and_before_later_failures() {
    let policy = UpstreamPolicy {
        health: HealthCheckSettings {
            enabled: false,
            ..HealthCheckSettings::default()
        },
        breaker: BreakerSettings {
            consecutive_failures: 3,
            ..BreakerSettings::default()
        },
    };
    let probe = ScriptedProbe::new(PASS);
    let actors = NodeActors::start(
        1,
        "test-quiet",
        vec![spec("a", &policy, &probe), spec("b", &policy, &probe)],
        &RoutingSettings::default(),
    )
    .await
    .unwrap();
    let a = Arc::clone(actors.upstreams().get("a").unwrap());
    let b = Arc::clone(actors.upstreams().get("b").unwrap());

    // A lone success shows within the flush delay, not at once.
    let mut attempt = b.begin(Admission::Open).expect("admitted");
    attempt.head_received();
    attempt.finish(AttemptResult::Success);
    drop(attempt);
    tokio::task::yield_now().await;
    assert_eq!(b.status().last_success, None, "queued, not cast");
    tokio::time::sleep(aigw_actors::QUIET_FLUSH + Duration::from_millis(1)).await;
    wait_until("b's success folded in", || {
        b.status().last_success.is_some()
    })
    .await;

    // failure, failure, success, failure: never three failures in a row.
    fail_once(&a);
    fail_once(&a);
    let mut attempt = a.begin(Admission::Open).expect("admitted");
    attempt.finish(AttemptResult::Success);
    drop(attempt);
    fail_once(&a);
    wait_until("all four folded in", || a.status().last_success.is_some()).await;
    tokio::time::sleep(aigw_actors::QUIET_FLUSH * 2).await;
    assert_eq!(a.status().breaker.state, BreakerState::Closed);
    // Two more failures make three in a row.
    fail_once(&a);
    fail_once(&a);
    wait_until("a's breaker opened", || {
        matches!(a.status().breaker.state, BreakerState::Open { .. })
    })
    .await;
    actors.stop().await;
}
