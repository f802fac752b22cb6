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
    // A 60/min share on one node bursts 10 (a sixth), then one per second.
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        9,
        "{statuses:?}"
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

    let view: Value = admin(&node, reqwest::Method::GET, &format!("/keys/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
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
