//! Key limits through real nodes: budgets leased from the replicated ledger, rates per node,
//! tokens reserved then reconciled with the upstream's usage.

mod common;

use std::net::IpAddr;

use aigw::RunningNode;
use aigw_jepsen::mock::{MockBehavior, MockServer};
use common::*;
use serde_json::{Value, json};

const ADMIN_TOKEN: &str = "quota-admin-token";

fn config(id: u64, ips: &[IpAddr], mock: &MockServer) -> String {
    let members: Vec<String> = ips
        .iter()
        .enumerate()
        .map(|(i, ip)| format!("\"{}@{ip}:7001\"", i + 1))
        .collect();
    let ip = ips[id as usize - 1];
    let cluster = if ips.len() > 1 {
        format!(
            "[cluster]\ninitial_members = [{}]\nheartbeat = \"50ms\"\nelection_timeout_min = \"250ms\"\nelection_timeout_max = \"500ms\"\n",
            members.join(", ")
        )
    } else {
        String::new()
    };
    format!(
        "[node]\nid = {id}\napi_listen = \"{ip}:0\"\nadmin_listen = \"{ip}:0\"\ncluster_listen = \"{ip}:7001\"\n\n{cluster}\n[admin]\ntoken = \"{ADMIN_TOKEN}\"\n\n\
         [[bootstrap.upstreams]]\nid = \"mock-a\"\nkind = \"openai\"\nbase_url = \"http://{}/v1\"\n\n\
         [[bootstrap.models]]\nname = \"chat-default\"\ntargets = [{{ upstream = \"mock-a\", model = \"x\" }}]\n",
        mock.addr()
    )
}

async fn nodes(count: usize, mock: &MockServer) -> Vec<RunningNode> {
    let ips: Vec<IpAddr> = (0..count).map(|_| loopback()).collect();
    let texts: Vec<String> = (1..=count as u64)
        .map(|id| config(id, &ips, mock))
        .collect();
    futures::future::join_all(texts.iter().map(|t| node_with(t))).await
}

fn admin(node: &RunningNode, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
    admin_request(node, ADMIN_TOKEN, method, path)
}

/// `GET /admin/v1/keys/{id}` through `node`: the key, its usage and this node's rate share.
async fn key_view(node: &RunningNode, id: &str) -> Value {
    admin(node, reqwest::Method::GET, &format!("/keys/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Creates a key with `limits` through `node`; returns (id, secret).
async fn key_with(node: &RunningNode, limits: Value) -> (String, String) {
    let created: Value = admin(node, reqwest::Method::POST, "/keys")
        .json(&json!({"name": "limited", "limits": limits}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(created["secret"].is_string(), "{created}");
    (
        created["id"].as_str().unwrap().to_owned(),
        created["secret"].as_str().unwrap().to_owned(),
    )
}

async fn commit_index(node: &RunningNode) -> u64 {
    let status: Value = admin(node, reqwest::Method::GET, "/cluster")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    status["commit_index"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_calls_budget_is_never_exceeded_across_three_nodes() {
    let mock = mock(MockBehavior::default()).await;
    let nodes = nodes(3, &mock).await;
    let (_, secret) = key_with(&nodes[0], json!({"calls": {"limit": 20, "period": "day"}})).await;
    let mut admitted = 0;
    let mut refused = Vec::new();
    for i in 0..45 {
        let response = chat(
            &nodes[i % 3],
            &secret,
            json!({"model": "chat-default", "messages": user_message()}),
        )
        .await;
        match response.status().as_u16() {
            200 => admitted += 1,
            429 => refused.push(response),
            other => panic!("unexpected {other}: {}", response.text().await.unwrap()),
        }
    }
    assert_eq!(
        admitted, 20,
        "admissions must equal the budget exactly when every slice is spent"
    );
    let body = assert_openai_error(refused.pop().unwrap(), 429, "insufficient_quota").await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("calls budget of 20 per day"),
        "{body}"
    );
    for node in nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpm_admits_a_burst_then_refuses_with_openai_rate_limit_headers() {
    let mock = mock(MockBehavior::default()).await;
    let node = nodes(1, &mock).await.remove(0);
    let (_, secret) = key_with(&node, json!({"rpm": 60, "tpm": 1_000_000})).await;
    let started = tokio::time::Instant::now();
    let first = chat(
        &node,
        &secret,
        json!({"model": "chat-default", "messages": user_message(), "max_tokens": 10}),
    )
    .await;
    assert_eq!(first.status(), 200);
    for header in [
        "x-ratelimit-limit-requests",
        "x-ratelimit-remaining-requests",
        "x-ratelimit-reset-requests",
        "x-ratelimit-limit-tokens",
        "x-ratelimit-remaining-tokens",
        "x-ratelimit-reset-tokens",
    ] {
        assert!(first.headers().contains_key(header), "missing {header}");
    }
    assert_eq!(first.headers()["x-ratelimit-limit-requests"], "60");
    let mut statuses = Vec::new();
    let mut last = None;
    for _ in 0..12 {
        let response = chat(
            &node,
            &secret,
            json!({"model": "chat-default", "messages": user_message(), "max_tokens": 10}),
        )
        .await;
        statuses.push(response.status().as_u16());
        if response.status() == 429 {
            last = Some(response);
            break;
        }
    }
    // A 60/min share on one node bursts 10 (a sixth), then one per second: on a slow machine
    // a second may pass during the burst and refill one more.
    let refilled = started.elapsed().as_secs() as usize;
    let admitted = statuses.iter().filter(|s| **s == 200).count();
    assert!(
        (9..=9 + refilled).contains(&admitted),
        "{statuses:?} in {:?}",
        started.elapsed()
    );
    let refused = last.expect("the burst ran out");
    assert!(refused.headers().contains_key("retry-after"));
    assert_eq!(refused.headers()["x-ratelimit-remaining-requests"], "0");
    assert_openai_error(refused, 429, "rate_limit_exceeded").await;
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_reservations_are_reconciled_with_the_upstreams_usage() {
    let mock = mock(MockBehavior {
        chunks: 4,
        ..MockBehavior::default()
    })
    .await;
    let node = nodes(1, &mock).await.remove(0);
    // Each request reserves its input + 500 output tokens, but the mock reports 4 completion
    // tokens: without reconciliation only 3 requests would fit in 2000.
    let (id, secret) = key_with(&node, json!({"tokens": {"limit": 2000, "period": "month"}, "output_tokens": {"limit": 1000, "period": "total"}})).await;
    for i in 0..10 {
        let stream = i % 2 == 1;
        let response = chat(&node, &secret, json!({"model": "chat-default", "messages": user_message(), "max_tokens": 500, "stream": stream})).await;
        assert_eq!(response.status(), 200, "request {i}");
        let text = response.text().await.unwrap();
        if stream {
            assert!(
                !text.contains("\"usage\""),
                "the gateway's usage chunk reached the client: {text}"
            );
            assert!(text.trim_end().ends_with("[DONE]"));
        }
    }
    let upstream: Value = client()
        .get(format!("http://{}/mock/last_request", mock.addr()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        upstream["body"]["stream_options"]["include_usage"], true,
        "{upstream}"
    );

    let view = key_view(&node, &id).await;
    assert_eq!(view["limits"]["tokens"]["limit"], 2000, "{view}");
    let tokens = &view["usage"]["tokens"];
    let accounted = tokens["used"].as_u64().unwrap()
        + tokens["leased_to_nodes"].as_u64().unwrap()
        + tokens["remaining"].as_u64().unwrap();
    assert_eq!(accounted, 2000, "{view}");
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_key_admits_thousands_of_requests_per_raft_entry() {
    let mock = mock(MockBehavior::default()).await;
    let node = nodes(1, &mock).await.remove(0);
    let (_, secret) = key_with(
        &node,
        json!({"calls": {"limit": 10_000_000, "period": "day"}}),
    )
    .await;
    let before = commit_index(&node).await;
    let body = json!({"model": "chat-default", "messages": user_message()});
    let http = client();
    let url = url(&node, "/v1/chat/completions");
    let requests = futures::future::join_all((0..2000).map(|_| {
        let (http, url, body, secret) = (http.clone(), url.clone(), body.clone(), secret.clone());
        async move {
            http.post(url)
                .bearer_auth(secret)
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    }));
    let statuses = requests.await;
    assert!(statuses.iter().all(|s| *s == 200));
    let entries = commit_index(&node).await - before;
    assert!(entries <= 2, "{entries} Raft entries for 2000 admissions");
    node.shutdown().await;
}

/// The `usage` view of one budget of a key: (used, leased_to_nodes, remaining).
async fn budget_view(node: &RunningNode, id: &str, budget: &str) -> (u64, u64, u64) {
    let view = key_view(node, id).await;
    let b = &view["usage"][budget];
    let n = |f: &str| b[f].as_u64().unwrap_or_else(|| panic!("{f} in {view}"));
    (n("used"), n("leased_to_nodes"), n("remaining"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_shutdown_gives_every_lease_back_with_its_exact_count() {
    let mock = mock(MockBehavior::default()).await;
    let text = config(1, &[loopback()], &mock);
    let data_dir = fresh_data_dir();
    let node = node_in(&text, &data_dir).await;
    let (id, secret) = key_with(&node, json!({"calls": {"limit": 1000, "period": "total"}})).await;
    for _ in 0..10 {
        let response = chat(
            &node,
            &secret,
            json!({"model": "chat-default", "messages": user_message()}),
        )
        .await;
        assert_eq!(response.status(), 200);
    }
    // One node: its slice is a quarter of the budget, 250, of which it used 10.
    assert_eq!(budget_view(&node, &id, "calls").await, (0, 250, 750));
    node.shutdown().await;
    let node = node_in(&text, &data_dir).await;
    assert_eq!(budget_view(&node, &id, "calls").await, (10, 0, 990));
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_holding_a_lease_gives_back_all_but_its_persisted_mark_on_restart() {
    let mock = mock(MockBehavior::default()).await;
    let ip = loopback();
    let data_dir = fresh_data_dir();
    let text = config(1, &[ip], &mock)
        .replace(
            "[node]\n",
            &format!("[node]\ndata_dir = \"{}\"\n", data_dir.display()),
        )
        .replace(
            &format!("api_listen = \"{ip}:0\""),
            &format!("api_listen = \"{ip}:8080\""),
        )
        .replace(
            &format!("admin_listen = \"{ip}:0\""),
            &format!("admin_listen = \"{ip}:8081\""),
        );
    let file = data_dir.join("aigw.toml");
    std::fs::write(&file, text).unwrap();
    let spawn = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_aigw"))
            .args(["serve", "--config", file.to_str().unwrap()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let admin = |method: reqwest::Method, path: &str| {
        client()
            .request(method, format!("http://{ip}:8081/admin/v1{path}"))
            .bearer_auth(ADMIN_TOKEN)
    };
    let ready = || async {
        for _ in 0..200 {
            if let Ok(r) = admin(reqwest::Method::GET, "/cluster").send().await
                && r.status() == 200
            {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("the node did not come up");
    };
    let calls_view = |id: String| async move {
        let view: Value = admin(reqwest::Method::GET, &format!("/keys/{id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let b = &view["usage"]["calls"];
        (
            b["used"].as_u64().unwrap(),
            b["leased_to_nodes"].as_u64().unwrap(),
            b["remaining"].as_u64().unwrap(),
        )
    };

    let mut process = spawn();
    ready().await;
    let created: Value = admin(reqwest::Method::POST, "/keys")
        .json(&json!({"name": "crash", "limits": {"calls": {"limit": 1000, "period": "total"}}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (id, secret) = (
        created["id"].as_str().unwrap().to_owned(),
        created["secret"].as_str().unwrap().to_owned(),
    );
    for _ in 0..10 {
        let response = client()
            .post(format!("http://{ip}:8080/v1/chat/completions"))
            .bearer_auth(&secret)
            .json(&json!({"model": "chat-default", "messages": user_message()}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    assert_eq!(calls_view(id.clone()).await, (0, 250, 750));
    process.kill().unwrap(); // SIGKILL: no lease is given back
    process.wait().unwrap();

    let mut process = spawn();
    ready().await;
    let mut view = (0, 0, 0);
    for _ in 0..100 {
        view = calls_view(id.clone()).await;
        if view.1 == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    process.kill().unwrap();
    process.wait().unwrap();
    let (used, leased, remaining) = view;
    assert_eq!(leased, 0, "the old lease is closed: {view:?}");
    // Counted as used: what was admitted, plus at most one mark step (250 / 8); without the
    // marks it would be the whole slice, 250.
    assert!((10..=10 + 31).contains(&used), "{view:?}");
    assert_eq!(used + remaining, 1000, "{view:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_plans_a_bigger_rate_share_for_the_node_the_demand_is_on() {
    let mock = mock(MockBehavior::default()).await;
    let nodes = nodes(3, &mock).await;
    // 600 per minute: 200 per node when split evenly.
    let (id, secret) = key_with(&nodes[0], json!({"rpm": 600})).await;
    let body = json!({"model": "chat-default", "messages": user_message()});
    let mut share = 0.0;
    let started = tokio::time::Instant::now();
    while started.elapsed() < std::time::Duration::from_secs(20) {
        // All the load on node 1, about 10 requests a second (600 a minute).
        let response = chat(&nodes[0], &secret, body.clone()).await;
        assert!(matches!(response.status().as_u16(), 200 | 429));
        let view = key_view(&nodes[0], &id).await;
        share = view["rate_on_this_node"]["rpm_share"]
            .as_f64()
            .unwrap_or(0.0);
        if share > 400.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        share > 400.0 && share <= 600.0,
        "node 1's planned share is {share}, not most of the 600"
    );
    for node in nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_actor_leases_the_next_slice_before_the_current_one_runs_dry() {
    let mock = mock(MockBehavior::default()).await;
    let node = nodes(1, &mock).await.remove(0);
    let (id, secret) = key_with(&node, json!({"calls": {"limit": 1000, "period": "total"}})).await;
    let body = json!({"model": "chat-default", "messages": user_message()});
    // One node: slices of 250. Three quarters into the first, the next one is leased.
    for _ in 0..200 {
        assert_eq!(chat(&node, &secret, body.clone()).await.status(), 200);
    }
    let mut view = (0, 0, 0);
    for _ in 0..100 {
        view = budget_view(&node, &id, "calls").await;
        if view.1 == 500 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(
        view,
        (0, 500, 500),
        "the current slice and the next are leased"
    );
    // Renewals stop where the budget ends: it is spent to exactly its limit.
    let mut admitted = 200;
    loop {
        match chat(&node, &secret, body.clone()).await.status().as_u16() {
            200 => admitted += 1,
            429 => break,
            other => panic!("unexpected {other}"),
        }
        assert!(admitted <= 1000, "over the budget");
    }
    assert_eq!(admitted, 1000);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_refusal_carries_the_keys_rate_limit_headers() {
    let mock = mock(MockBehavior::default()).await;
    let node = nodes(1, &mock).await.remove(0);
    let (_, secret) = key_with(
        &node,
        json!({"rpm": 600, "tpm": 100_000, "calls": {"limit": 1, "period": "day"}}),
    )
    .await;
    let body = json!({"model": "chat-default", "messages": user_message(), "max_tokens": 10});
    assert_eq!(chat(&node, &secret, body.clone()).await.status(), 200);
    let refused = chat(&node, &secret, body).await;
    for header in [
        "retry-after",
        "x-ratelimit-limit-requests",
        "x-ratelimit-remaining-requests",
        "x-ratelimit-reset-requests",
        "x-ratelimit-limit-tokens",
        "x-ratelimit-remaining-tokens",
        "x-ratelimit-reset-tokens",
    ] {
        assert!(refused.headers().contains_key(header), "missing {header}");
    }
    assert_eq!(refused.headers()["x-ratelimit-limit-requests"], "600");
    // The refused request's own request and tokens were given back before the headers.
    let remaining = refused.headers()["x-ratelimit-remaining-requests"].clone();
    assert!(remaining == "99" || remaining == "100", "{remaining:?}");
    assert_openai_error(refused, 429, "insufficient_quota").await;
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_larger_than_the_rate_bucket_is_refused_without_an_invitation_to_retry() {
    let mock = mock(MockBehavior::default()).await;
    let node = nodes(1, &mock).await.remove(0);
    // 2000 per minute on one node: the bucket holds a sixth, 333 tokens. A chat without
    // max_tokens reserves its input + 1024.
    let (_, secret) = key_with(&node, json!({"tpm": 2000})).await;
    let unbounded = json!({"model": "chat-default", "messages": user_message()});
    for _ in 0..3 {
        let refused = chat(&node, &secret, unbounded.clone()).await;
        assert!(
            !refused.headers().contains_key("retry-after"),
            "a retry can never succeed: {:?}",
            refused.headers()
        );
        assert_eq!(refused.headers()["x-should-retry"], "false");
        assert_eq!(refused.headers()["x-ratelimit-limit-tokens"], "2000");
        let body = assert_openai_error(refused, 400, "request_too_large_for_rate").await;
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("2000 tokens per minute") && message.contains("333"),
            "{message}"
        );
        assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
    }
    // The refusals took nothing: a request that fits is admitted at once.
    let fits = json!({"model": "chat-default", "messages": user_message(), "max_tokens": 100});
    assert_eq!(chat(&node, &secret, fits).await.status(), 200);

    // With a burst as large as the limit, the same request fits.
    let (_, bursty) = key_with(&node, json!({"tpm": 2000, "tpm_burst": 2000})).await;
    assert_eq!(chat(&node, &bursty, unbounded.clone()).await.status(), 200);

    // A token budget smaller than the request can never admit it either.
    let (_, small) = key_with(&node, json!({"tokens": {"limit": 500, "period": "total"}})).await;
    let refused = chat(&node, &small, unbounded).await;
    assert!(!refused.headers().contains_key("retry-after"));
    let body = assert_openai_error(refused, 400, "request_too_large_for_budget").await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("tokens budget of 500"),
        "{body}"
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpm_burst_sets_how_many_requests_a_burst_gets_at_once() {
    let mock = mock(MockBehavior::default()).await;
    let node = nodes(1, &mock).await.remove(0);
    // 60 per minute (one a second), but a burst of only 3 instead of 10.
    let (id, secret) = key_with(&node, json!({"rpm": 60, "rpm_burst": 3})).await;
    let view = key_view(&node, &id).await;
    assert_eq!(view["limits"]["rpm_burst"], 3, "{view}");
    let body = json!({"model": "chat-default", "messages": user_message()});
    let started = tokio::time::Instant::now();
    let mut admitted = 0;
    loop {
        let response = chat(&node, &secret, body.clone()).await;
        if response.status() == 429 {
            assert!(response.headers().contains_key("retry-after"));
            break;
        }
        assert_eq!(response.status(), 200);
        admitted += 1;
        assert!(admitted < 20, "the burst never ran out");
    }
    // 3 at once, plus what refilled meanwhile on a slow machine (one a second).
    let refilled = started.elapsed().as_secs() as usize;
    assert!(
        (3..=3 + refilled).contains(&admitted),
        "{admitted} in {:?}",
        started.elapsed()
    );
    // A burst must be at least 1.
    let rejected = admin(&node, reqwest::Method::POST, "/keys")
        .json(&json!({"name": "bad", "limits": {"rpm": 60, "rpm_burst": 0}}))
        .send()
        .await
        .unwrap();
    assert_eq!(rejected.status(), 400);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_usage_the_gateway_asked_for_is_hidden_on_whichever_chunk_the_upstream_puts_it() {
    use aigw_jepsen::mock::UsagePlacement;
    let mock = mock(MockBehavior::default()).await;
    let node = nodes(1, &mock).await.remove(0);
    // A key with a token limit: the gateway asks every stream for usage.
    let (_, secret) = key_with(&node, json!({"tpm": 1_000_000})).await;
    for usage_on in [
        UsagePlacement::EmptyChoices,
        UsagePlacement::EmptyDelta,
        UsagePlacement::FinishChunk,
    ] {
        mock.set_behavior(MockBehavior {
            usage_on,
            ..MockBehavior::default()
        });
        let body = json!({"model": "chat-default", "messages": user_message(), "stream": true, "max_tokens": 50});
        let through = chat(&node, &secret, body.clone())
            .await
            .text()
            .await
            .unwrap();
        // What the upstream itself sends a client that did not ask for usage.
        let mut direct_body = body.clone();
        direct_body["model"] = json!("x");
        let direct = client()
            .post(format!("http://{}/v1/chat/completions", mock.addr()))
            .json(&direct_body)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(!through.contains("\"usage\""), "{usage_on:?}: {through}");
        assert_eq!(same_ids(&through), same_ids(&direct), "{usage_on:?}");
    }
    node.shutdown().await;
}

/// `text` with the mock's per-request ids (`chatcmpl-mock-N`) made equal.
fn same_ids(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("chatcmpl-mock-") {
        out.push_str(&rest[..at + "chatcmpl-mock-".len()]);
        rest = rest[at + "chatcmpl-mock-".len()..].trim_start_matches(|c: char| c.is_ascii_digit());
        out.push('N');
    }
    out.push_str(rest);
    out
}
