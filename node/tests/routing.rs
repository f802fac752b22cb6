//! Routing across several upstreams through a real node: strategies, priority tiers, health
//! and breakers, failover and the retry budget, with aigw-mock upstreams whose faults are
//! switched through their control endpoint.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use aigw::RunningNode;
use aigw_jepsen::mock::{MockBehavior, MockServer};
use common::*;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::time::Instant;

/// One upstream of a test config: a mock, its weight and its priority.
struct Target<'a> {
    id: &'a str,
    mock: &'a MockServer,
    weight: u32,
    priority: u32,
}

fn target<'a>(id: &'a str, mock: &'a MockServer) -> Target<'a> {
    Target {
        id,
        mock,
        weight: 1,
        priority: 0,
    }
}

/// A node config with one model `chat-default` over `targets` by `strategy`. `upstream_extra`
/// is added to every upstream table (health, breaker, timeouts); `routing` is the `[routing]`
/// section's body.
fn config(
    node_id: u64,
    strategy: &str,
    targets: &[Target<'_>],
    upstream_extra: &str,
    routing: &str,
) -> String {
    let mut text =
        format!("[node]\nid = {node_id}\napi_listen = \"127.0.0.1:0\"\n\n[routing]\n{routing}\n\n");
    for t in targets {
        text.push_str(&format!(
            "[[bootstrap.upstreams]]\nid = \"{}\"\nkind = \"openai\"\nbase_url = \"http://{}/v1\"\n{upstream_extra}\n\n",
            t.id,
            t.mock.addr()
        ));
    }
    let list: Vec<String> = targets
        .iter()
        .map(|t| {
            format!(
                "{{ upstream = \"{}\", model = \"m-{}\", weight = {}, priority = {} }}",
                t.id, t.id, t.weight, t.priority
            )
        })
        .collect();
    text.push_str(&format!(
        "[[bootstrap.models]]\nname = \"chat-default\"\nstrategy = \"{strategy}\"\ntargets = [{}]\n\n[[bootstrap.keys]]\nname = \"all\"\nsecret = \"{KEY}\"\n",
        list.join(", ")
    ));
    text
}

/// No active probes: these tests drive health through real traffic only, so nothing happens
/// on a timer they do not control.
const NO_PROBES: &str = "health = { enabled = false }";

/// What a test reads from one answer.
#[derive(Debug, Clone)]
struct Answer {
    status: u16,
    upstream: Option<String>,
    attempts: u32,
    body: Value,
}

async fn ask(client: &reqwest::Client, node: &RunningNode, body: &Value) -> Answer {
    ask_with(client, node, body, None).await
}

async fn ask_with(
    client: &reqwest::Client,
    node: &RunningNode,
    body: &Value,
    session: Option<&str>,
) -> Answer {
    let mut request = client
        .post(url(node, "/v1/chat/completions"))
        .bearer_auth(KEY)
        .json(body);
    if let Some(session) = session {
        request = request.header("x-session-id", session);
    }
    let response = request.send().await.unwrap();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let upstream = header("x-aigw-upstream");
    let attempts = header("x-aigw-attempts")
        .expect("every proxied answer says how many attempts it took")
        .parse()
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Answer {
        status,
        upstream,
        attempts,
        body,
    }
}

fn chat_body() -> Value {
    json!({"model": "chat-default", "messages": user_message()})
}

/// Sends `count` requests, `concurrency` at a time, and returns the answers in completion order.
async fn load(node: &RunningNode, count: usize, concurrency: usize) -> Vec<Answer> {
    let client = client();
    let body = chat_body();
    futures::stream::iter(0..count)
        .map(|_| ask(&client, node, &body))
        .buffer_unordered(concurrency)
        .collect()
        .await
}

async fn patch_mock(mock: &MockServer, patch: Value) {
    let response = client()
        .patch(format!("http://{}/mock/control", mock.addr()))
        .json(&patch)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
}

fn served_by(answers: &[Answer], id: &str) -> usize {
    answers
        .iter()
        .filter(|a| a.upstream.as_deref() == Some(id))
        .count()
}

#[tokio::test]
async fn weighted_split_is_within_five_percent_of_the_weights_over_10000_requests() {
    let (a, b, c) = (
        mock(MockBehavior::default()).await,
        mock(MockBehavior::default()).await,
        mock(MockBehavior::default()).await,
    );
    let targets = [
        Target {
            weight: 5,
            ..target("a", &a)
        },
        Target {
            weight: 3,
            ..target("b", &b)
        },
        Target {
            weight: 2,
            ..target("c", &c)
        },
    ];
    let node = node_with(&config(1, "weighted", &targets, "", "")).await;
    let answers = load(&node, 10_000, 64).await;
    assert!(answers.iter().all(|a| a.status == 200 && a.attempts == 1));
    for (id, mock, weight) in [("a", &a, 5), ("b", &b, 3), ("c", &c, 2)] {
        let share = served_by(&answers, id) as f64 / 10_000.0;
        let expected = f64::from(weight) / 10.0;
        assert!(
            (share - expected).abs() <= 0.05 * expected,
            "{id}: {share} of the traffic, expected {expected}"
        );
        assert_eq!(mock.stats().requests as usize, served_by(&answers, id));
    }
    node.shutdown().await;
}

#[tokio::test]
async fn a_sticky_session_keeps_its_upstream_for_100_turns_and_gets_the_same_upstream_through_another_node()
 {
    let mocks = [
        mock(MockBehavior::default()).await,
        mock(MockBehavior::default()).await,
        mock(MockBehavior::default()).await,
    ];
    let targets = [
        target("a", &mocks[0]),
        target("b", &mocks[1]),
        target("c", &mocks[2]),
    ];
    // Two nodes with the same settings, as two members of one cluster would have.
    let one = node_with(&config(1, "sticky", &targets, "", "")).await;
    let two = node_with(&config(2, "sticky", &targets, "", "")).await;
    let client = client();

    let first = ask_with(&client, &one, &chat_body(), Some("conversation-1")).await;
    let bound = first.upstream.clone().unwrap();
    for turn in 1..100 {
        let answer = ask_with(&client, &one, &chat_body(), Some("conversation-1")).await;
        assert_eq!(answer.upstream.as_deref(), Some(&*bound), "turn {turn}");
    }
    let elsewhere = ask_with(&client, &two, &chat_body(), Some("conversation-1")).await;
    assert_eq!(elsewhere.upstream, Some(bound));

    // Sessions named by the body's `user` spread over the upstreams, each the same on both
    // nodes.
    let mut seen = std::collections::HashSet::new();
    for n in 0..30 {
        let body = json!({"model": "chat-default", "messages": user_message(), "user": format!("user-{n}")});
        let on_one = ask(&client, &one, &body).await.upstream.unwrap();
        let on_two = ask(&client, &two, &body).await.upstream.unwrap();
        assert_eq!(on_one, on_two, "user-{n}");
        seen.insert(on_one);
    }
    assert_eq!(seen.len(), 3, "30 sessions use every upstream");
    one.shutdown().await;
    two.shutdown().await;
}

#[tokio::test]
async fn a_sticky_session_moves_only_when_its_upstream_fails() {
    let mocks = [
        mock(MockBehavior::default()).await,
        mock(MockBehavior::default()).await,
    ];
    let targets = [target("a", &mocks[0]), target("b", &mocks[1])];
    let node = node_with(&config(1, "sticky", &targets, NO_PROBES, "")).await;
    let client = client();
    let first = ask_with(&client, &node, &chat_body(), Some("s")).await;
    let (bound, other) = match first.upstream.as_deref() {
        Some("a") => (0, 1),
        _ => (1, 0),
    };
    patch_mock(
        &mocks[bound],
        json!({"error_rate": 1.0, "error_status": 503}),
    )
    .await;
    let moved = ask_with(&client, &node, &chat_body(), Some("s")).await;
    assert_eq!((moved.status, moved.attempts), (200, 2));
    assert_eq!(moved.upstream.as_deref(), Some(["a", "b"][other]));
    // Once the session's actor has recorded the move, its requests go straight to the new
    // upstream (one attempt), while the old one still fails.
    let mut polls = 0;
    while ask_with(&client, &node, &chat_body(), Some("s"))
        .await
        .attempts
        != 1
    {
        polls += 1;
        assert!(polls < 100, "the binding never moved");
    }
    // The old upstream recovers; the session stays where it moved.
    patch_mock(&mocks[bound], json!({"error_rate": 0.0})).await;
    for _ in 0..20 {
        let answer = ask_with(&client, &node, &chat_body(), Some("s")).await;
        assert_eq!(answer.upstream.as_deref(), Some(["a", "b"][other]));
        assert_eq!(answer.attempts, 1);
    }
    node.shutdown().await;
}

#[tokio::test]
async fn an_upstream_killed_mid_run_is_isolated_and_non_streaming_clients_see_no_errors() {
    let a = mock(MockBehavior::default()).await;
    let b = mock(MockBehavior::default()).await;
    // Default health and breaker thresholds: isolation comes from real traffic. The open
    // period is long so that, on a slow machine, the breaker's half-open probes cannot fall
    // inside the run's tail, which is checked below.
    let node = node_with(&config(
        1,
        "weighted",
        &[target("a", &a), target("b", &b)],
        r#"breaker = { open_for = "1m", max_open_for = "2m" }"#,
        "",
    ))
    .await;
    let before = load(&node, 400, 16).await;
    assert!(before.iter().all(|x| x.status == 200));
    assert!(served_by(&before, "a") > 150, "a took its share before");

    let client = client();
    let body = chat_body();
    let answered = AtomicUsize::new(0);
    let running = futures::stream::iter(0..2000)
        .map(|_| async {
            let answer = ask(&client, &node, &body).await;
            answered.fetch_add(1, Ordering::Relaxed);
            (Instant::now(), answer)
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>();
    // Killed mid-run, with requests to it in flight and idle pooled connections to it.
    let kill = async {
        while answered.load(Ordering::Relaxed) < 300 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let killed_at = Instant::now();
        a.shutdown().await;
        killed_at
    };
    let (answers, killed_at) = tokio::join!(running, kill);

    let errors: Vec<_> = answers.iter().filter(|(_, x)| x.status != 200).collect();
    assert!(errors.is_empty(), "clients saw errors: {errors:?}");
    let failovers: Vec<_> = answers.iter().filter(|(_, x)| x.attempts > 1).collect();
    let isolated_after = failovers
        .iter()
        .map(|(at, _)| at.saturating_duration_since(killed_at))
        .max()
        .unwrap_or_default();
    println!(
        "killed upstream: {} failovers, the last {} ms after the kill",
        failovers.len(),
        isolated_after.as_millis()
    );
    // Five failures in a row open the breaker; requests in flight at the kill, and those
    // picked before the actor has counted the fifth failure, add a few more.
    assert!(failovers.len() <= 64, "{} failovers", failovers.len());
    let after_kill = answers.iter().filter(|(at, _)| *at > killed_at).count();
    assert!(after_kill > 1500, "the load kept running after the kill");
    // The tail of the run never touched the dead upstream.
    assert!(
        answers[answers.len() - 500..]
            .iter()
            .all(|(_, x)| x.upstream.as_deref() == Some("b") && x.attempts == 1)
    );
    node.shutdown().await;
}

#[tokio::test]
async fn a_recovered_upstream_gets_traffic_back_through_half_open() {
    let a = mock(MockBehavior::default()).await;
    let b = mock(MockBehavior::default()).await;
    let breaker =
        r#"breaker = { consecutive_failures = 3, open_for = "1s", half_open_probes = 2 }"#;
    let extra = format!("{NO_PROBES}\n{breaker}");
    let node = node_with(&config(
        1,
        "weighted",
        &[target("a", &a), target("b", &b)],
        &extra,
        "",
    ))
    .await;

    patch_mock(&a, json!({"error_rate": 1.0})).await;
    let failing = load(&node, 40, 1).await;
    assert!(failing.iter().all(|x| x.status == 200));
    let ejected_at = a.stats().requests;
    // Three failures in a row open it; a request racing the actor's count may add one.
    assert!((3..=4).contains(&ejected_at), "{ejected_at}");

    // Open: no traffic reaches a, however much there is.
    let open = load(&node, 40, 4).await;
    assert_eq!(served_by(&open, "a"), 0);
    assert_eq!(a.stats().requests, ejected_at);

    // a recovers; once the open period ends, probes go through, succeed, and close it.
    patch_mock(&a, json!({"error_rate": 0.0})).await;
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let recovered = load(&node, 200, 4).await;
    assert!(recovered.iter().all(|x| x.status == 200 && x.attempts == 1));
    assert!(
        served_by(&recovered, "a") > 60,
        "a is back in the rotation: {} of 200",
        served_by(&recovered, "a")
    );
    node.shutdown().await;
}

#[tokio::test]
async fn an_upstream_failing_half_of_its_calls_is_ejected_with_the_default_settings() {
    let a = mock(MockBehavior {
        error_rate: 0.5,
        ..MockBehavior::default()
    })
    .await;
    let b = mock(MockBehavior::default()).await;
    let node = node_with(&config(
        1,
        "weighted",
        &[target("a", &a), target("b", &b)],
        "",
        "",
    ))
    .await;
    let client = client();
    let body = chat_body();
    // Sequential, so "a run of answers that never touched a" is meaningful: while a is in
    // rotation, every other request goes to it first.
    let mut run = 0;
    let mut answered = 0;
    while run < 60 {
        let answer = ask(&client, &node, &body).await;
        assert_eq!(
            answer.status, 200,
            "failover hides a's failures: {answer:?}"
        );
        answered += 1;
        assert!(answered < 1000, "a was never ejected");
        run = if answer.upstream.as_deref() == Some("b") && answer.attempts == 1 {
            run + 1
        } else {
            0
        };
    }
    println!("a ejected within {answered} requests");
    node.shutdown().await;
}

#[tokio::test]
async fn a_streaming_request_fails_over_before_its_first_byte_and_lower_tiers_wait_their_turn() {
    let primary = mock(MockBehavior::default()).await;
    let backup = mock(MockBehavior::default()).await;
    let targets = [
        target("primary", &primary),
        Target {
            priority: 1,
            ..target("backup", &backup)
        },
    ];
    let extra = format!(
        "{NO_PROBES}\ntimeouts = {{ response_head = \"300ms\" }}\nbreaker = {{ consecutive_failures = 10 }}"
    );
    let node = node_with(&config(1, "weighted", &targets, &extra, "")).await;
    let client = client();
    let stream_body = json!({"model": "chat-default", "messages": user_message(), "stream": true});

    // While the primary tier is healthy, the backup tier gets nothing.
    let healthy = load(&node, 20, 4).await;
    assert_eq!(served_by(&healthy, "primary"), 20);
    assert_eq!(backup.stats().requests, 0);

    for fault in [
        json!({"error_rate": 1.0, "error_status": 502}),
        json!({"error_rate": 0.0, "hang": true}),
    ] {
        patch_mock(&primary, fault.clone()).await;
        let answer = ask(&client, &node, &stream_body).await;
        assert_eq!(answer.status, 200, "{fault}");
        assert_eq!(answer.upstream.as_deref(), Some("backup"), "{fault}");
        assert_eq!(answer.attempts, 2, "{fault}");
        let text = answer.body.as_str().unwrap();
        assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
        assert!(!text.contains("event: error"));
    }
    node.shutdown().await;
}

#[tokio::test]
async fn a_stream_that_breaks_after_its_first_byte_ends_with_an_error_event_and_no_failover() {
    let a = mock(MockBehavior {
        chunks: 5,
        drop_after_chunks: Some(2),
        ..MockBehavior::default()
    })
    .await;
    let b = mock(MockBehavior::default()).await;
    let targets = [
        target("a", &a),
        Target {
            priority: 1,
            ..target("b", &b)
        },
    ];
    let node = node_with(&config(1, "weighted", &targets, NO_PROBES, "")).await;
    let stream_body = json!({"model": "chat-default", "messages": user_message(), "stream": true});
    let answer = ask(&client(), &node, &stream_body).await;
    assert_eq!((answer.status, answer.attempts), (200, 1));
    assert_eq!(answer.upstream.as_deref(), Some("a"));
    let text = answer.body.as_str().unwrap();
    assert!(text.contains("event: error"), "{text}");
    assert!(!text.contains("[DONE]"));
    assert_eq!(b.stats().requests, 0, "no failover after the first byte");
    node.shutdown().await;
}

#[tokio::test]
async fn the_retry_budget_caps_attempts_when_every_upstream_is_down() {
    let mocks = [
        mock(MockBehavior::default()).await,
        mock(MockBehavior::default()).await,
        mock(MockBehavior::default()).await,
    ];
    for mock in &mocks {
        patch_mock(mock, json!({"error_rate": 1.0, "error_status": 500})).await;
    }
    let targets = [
        target("a", &mocks[0]),
        target("b", &mocks[1]),
        target("c", &mocks[2]),
    ];
    // Breakers off, so every upstream stays a candidate: only the budget holds retries back.
    let extra =
        format!("{NO_PROBES}\nbreaker = {{ consecutive_failures = 0, failure_rate = 0.0 }}");
    let routing = "max_attempts = 3\nretry_budget = { ratio = 0.2, min_per_second = 0 }";
    let node = node_with(&config(1, "weighted", &targets, &extra, routing)).await;

    let answers = load(&node, 100, 1).await;
    for answer in &answers {
        // The last attempt's error, relayed in OpenAI's shape.
        assert_eq!(answer.status, 500);
        assert_eq!(answer.body["error"]["type"], "server_error", "{answer:?}");
    }
    let attempts: u32 = answers.iter().map(|a| a.attempts).sum();
    let upstream_calls: u64 = mocks.iter().map(|m| m.stats().requests).sum();
    assert_eq!(u64::from(attempts), upstream_calls);
    // Without the budget: 300 attempts. With it: 100 first attempts + 20% of them.
    assert!(
        (115..=121).contains(&attempts),
        "{attempts} attempts for 100 requests"
    );
    node.shutdown().await;
}

#[tokio::test]
async fn with_panic_mode_off_clients_get_503_without_an_attempt_when_every_upstream_is_ejected() {
    let a = mock(MockBehavior {
        error_rate: 1.0,
        ..MockBehavior::default()
    })
    .await;
    let breaker = r#"breaker = { consecutive_failures = 2, open_for = "1m" }"#;
    let node = node_with(&config(
        1,
        "weighted",
        &[target("a", &a)],
        &format!("{NO_PROBES}\n{breaker}"),
        "panic_mode = false",
    ))
    .await;
    let client = client();
    // Two failures open the breaker; the first request after the actor has counted them gets
    // a 503 without reaching the upstream, and so does every one after it.
    let mut failed = 0;
    loop {
        let answer = ask(&client, &node, &chat_body()).await;
        if answer.status == 503 {
            assert_eq!(answer.attempts, 0, "{answer:?}");
            assert_eq!(answer.body["error"]["code"], "upstream_unavailable");
            assert_eq!(answer.upstream, None);
            break;
        }
        assert_eq!((answer.status, answer.attempts), (500, 1));
        failed += 1;
        assert!(failed <= 3, "the breaker never opened");
    }
    // Even once the upstream has recovered: its breaker stays open for a minute.
    a.set_behavior(MockBehavior::default());
    for _ in 0..10 {
        let answer = ask(&client, &node, &chat_body()).await;
        assert_eq!((answer.status, answer.attempts), (503, 0));
    }
    assert_eq!(a.stats().requests, failed);
    node.shutdown().await;
}

#[tokio::test]
async fn when_every_upstream_is_ejected_requests_are_tried_anyway_in_panic_mode() {
    let a = mock(MockBehavior {
        error_rate: 1.0,
        ..MockBehavior::default()
    })
    .await;
    let b = mock(MockBehavior {
        error_rate: 1.0,
        ..MockBehavior::default()
    })
    .await;
    let breaker = r#"breaker = { consecutive_failures = 2, open_for = "1m" }"#;
    // Panic mode is on by default.
    let node = node_with(&config(
        1,
        "weighted",
        &[target("a", &a), target("b", &b)],
        &format!("{NO_PROBES}\n{breaker}"),
        "",
    ))
    .await;
    let client = client();
    // Every request fails on both until both breakers are open; then requests still get
    // attempts (and failovers), never a 503 without one.
    for _ in 0..8 {
        let answer = ask(&client, &node, &chat_body()).await;
        assert_eq!(answer.status, 500, "{answer:?}");
        // 1 only while one breaker is open and the other not yet: that request's one
        // available target was tried.
        assert!((1..=2).contains(&answer.attempts), "{answer:?}");
    }
    wait_for_stats(&a, |s| s.requests >= 4).await;
    // The upstreams recover while their breakers stay open for a minute: in panic mode the
    // clients are served at once.
    a.set_behavior(MockBehavior::default());
    b.set_behavior(MockBehavior::default());
    for _ in 0..10 {
        let answer = ask(&client, &node, &chat_body()).await;
        assert_eq!((answer.status, answer.attempts), (200, 1), "{answer:?}");
    }
    node.shutdown().await;
}

#[tokio::test]
async fn least_loaded_sends_most_traffic_to_the_faster_upstream() {
    let slow = mock(MockBehavior {
        latency_ms: 60,
        ..MockBehavior::default()
    })
    .await;
    let fast = mock(MockBehavior::default()).await;
    let node = node_with(&config(
        1,
        "least-loaded",
        &[target("slow", &slow), target("fast", &fast)],
        NO_PROBES,
        "",
    ))
    .await;
    let answers = load(&node, 300, 8).await;
    assert!(answers.iter().all(|a| a.status == 200));
    let fast_share = served_by(&answers, "fast") as f64 / 300.0;
    assert!(fast_share > 0.8, "fast served {fast_share}");
    node.shutdown().await;
}

fn breaker_open_on_a_extra() -> String {
    format!("{NO_PROBES}\nbreaker = {{ consecutive_failures = 3, open_for = \"1m\" }}")
}

/// A node over `a`, which fails every call, and `b`, which serves; after 20 requests a's
/// breaker is open (3 failures) and b serves everything. `node_extra` goes into `[node]`.
async fn breaker_open_on_a(node_extra: &str) -> (MockServer, MockServer, RunningNode) {
    let a = mock(MockBehavior {
        error_rate: 1.0,
        ..MockBehavior::default()
    })
    .await;
    let b = mock(MockBehavior::default()).await;
    let text = config(
        1,
        "weighted",
        &[target("a", &a), target("b", &b)],
        &breaker_open_on_a_extra(),
        "",
    )
    .replacen(
        "api_listen = \"127.0.0.1:0\"\n",
        &format!("api_listen = \"127.0.0.1:0\"\n{node_extra}"),
        1,
    );
    let node = node_with(&text).await;
    let warmup = load(&node, 20, 1).await;
    assert!(warmup.iter().all(|x| x.status == 200));
    assert_eq!(a.stats().requests, 3, "a's breaker opened");
    (a, b, node)
}

#[tokio::test]
async fn an_upstream_actor_that_panics_is_restarted_with_its_breaker_state_and_the_node_keeps_serving()
 {
    let (a, _b, node) = breaker_open_on_a("").await;

    let name = format!("node-1@{}/upstream/a", node.api_addr());
    let actor = ractor::registry::where_is(&name).expect("a's actor is registered");
    actor
        .send_message(aigw_actors::UpstreamMsg::InjectPanic)
        .unwrap();
    let mut restarted = false;
    for _ in 0..200 {
        if ractor::registry::where_is(&name).is_some_and(|c| c.get_id() != actor.get_id()) {
            restarted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(restarted, "a's actor was not restarted");

    // The restarted actor kept the open breaker: a still gets nothing, and no client notices.
    let after = load(&node, 50, 4).await;
    assert!(
        after
            .iter()
            .all(|x| x.status == 200 && x.upstream.as_deref() == Some("b") && x.attempts == 1)
    );
    assert_eq!(a.stats().requests, 3);
    node.shutdown().await;
}

#[tokio::test]
async fn a_settings_change_keeps_the_breaker_of_an_upstream_it_does_not_change() {
    let admin_listener =
        "admin_listen = \"127.0.0.1:0\"\n\n[admin]\ntoken = \"admin-token-for-tests\"\n";
    let (a, b, node) = breaker_open_on_a(admin_listener).await;

    // A new revision that adds a model and changes nothing about a or b.
    let admin = |method, path: &str| admin_request(&node, "admin-token-for-tests", method, path);
    let current: Value = admin(reqwest::Method::GET, "/settings")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let upstream = |id: &str, mock: &MockServer| {
        format!(
            "[[upstreams]]\nid = \"{id}\"\nkind = \"openai\"\nbase_url = \"http://{}/v1\"\n{}\n\n",
            mock.addr(),
            breaker_open_on_a_extra()
        )
    };
    let document = format!(
        "{}{}[[models]]\nname = \"chat-default\"\ntargets = [{{ upstream = \"a\", model = \"m-a\" }}, {{ upstream = \"b\", model = \"m-b\" }}]\n\n[[models]]\nname = \"second-model\"\ntargets = [{{ upstream = \"b\", model = \"y\" }}]\n",
        upstream("a", &a),
        upstream("b", &b),
    );
    let written = admin(reqwest::Method::PUT, "/settings")
        .json(&json!({"toml": document, "expected_revision": current["revision"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(written.status(), 200, "{:?}", written.text().await);
    let second = json!({"model": "second-model", "messages": [{"role": "user", "content": "hi"}]});
    let mut applied = false;
    for _ in 0..300 {
        if ask(&client(), &node, &second).await.status == 200 {
            applied = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(applied, "the new model never routed");

    // a's breaker is still open: it gets nothing, and its status says so.
    let after = load(&node, 30, 2).await;
    assert!(
        after
            .iter()
            .all(|x| x.status == 200 && x.upstream.as_deref() == Some("b"))
    );
    assert_eq!(a.stats().requests, 3);
    let upstreams: Value = admin(reqwest::Method::GET, "/upstreams")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let status_of = |id: &str| {
        upstreams["upstreams"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["id"] == id)
            .cloned()
            .unwrap()
    };
    assert_eq!(status_of("a")["breaker"]["state"], "open", "{upstreams}");
    assert_eq!(status_of("b")["breaker"]["state"], "closed");
    node.shutdown().await;
}
