//! `GET /admin/v1/records?cluster=true` on a real three-node cluster: the node asked merges
//! every member's records by the time they were received, with the same filters and one
//! `limit` across nodes, and answers quickly without a stopped node, naming it.

mod common;

use std::net::IpAddr;
use std::time::Duration;

use aigw::RunningNode;
use aigw_jepsen::mock::{MockBehavior, MockServer};
use common::*;
use serde_json::{Value, json};

const ADMIN_TOKEN: &str = "records-cluster-admin-token";
const OTHER_KEY: &str = "sk-records-cluster-other";

fn node_config(id: u64, ips: &[IpAddr], mock: &MockServer) -> String {
    format!(
        r#"
{sections}
[admin]
token = "{ADMIN_TOKEN}"

[records]
fsync_interval = "5ms"

[[bootstrap.upstreams]]
id = "mock-a"
kind = "openai"
base_url = "http://{mock}/v1"

[[bootstrap.models]]
name = "chat-default"
targets = [{{ upstream = "mock-a", model = "upstream-model-x" }}]

[[bootstrap.models]]
name = "other-model"
targets = [{{ upstream = "mock-a", model = "upstream-model-y" }}]

[[bootstrap.keys]]
name = "all"
secret = "{KEY}"

[[bootstrap.keys]]
name = "other"
secret = "{OTHER_KEY}"
"#,
        sections = cluster_node_sections(id, ips, "records"),
        mock = mock.addr(),
    )
}

async fn three_nodes(mock: &MockServer) -> Vec<RunningNode> {
    let ips: Vec<IpAddr> = (0..3).map(|_| loopback()).collect();
    let texts: Vec<String> = (1..=3).map(|id| node_config(id, &ips, mock)).collect();
    let dirs: Vec<_> = (0..3).map(|_| fresh_data_dir()).collect();
    start_three(&texts, &dirs).await
}

/// One answer to `GET /admin/v1/records{query}`: its status, its two node headers and its
/// records.
struct Answer {
    status: u16,
    nodes: String,
    missing: String,
    records: Vec<Value>,
    body: String,
}

async fn ask(node: &RunningNode, query: &str) -> Answer {
    let response = admin_request(
        node,
        ADMIN_TOKEN,
        reqwest::Method::GET,
        &format!("/records{query}"),
    )
    .send()
    .await
    .unwrap();
    let status = response.status().as_u16();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_else(|| format!("(no {name})"))
    };
    let (nodes, missing) = (
        header("aigw-records-nodes"),
        header("aigw-records-missing-nodes"),
    );
    let body = response.text().await.unwrap();
    let records = if status == 200 {
        body.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    } else {
        Vec::new()
    };
    Answer {
        status,
        nodes,
        missing,
        records,
        body,
    }
}

/// What each record says the client sent: the calls are told apart by their message.
fn calls(records: &[Value]) -> Vec<String> {
    records
        .iter()
        .map(|r| {
            r["request"]["body"]["messages"][0]["content"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_query_merges_every_nodes_records_in_time_order_and_names_a_stopped_node() {
    let mock = mock(MockBehavior::default()).await;
    let mut nodes = three_nodes(&mock).await;

    // Six calls, one after another, through the three nodes in turn, with two keys and two
    // models: (node index, key, model).
    let plan = [
        (0, KEY, "chat-default"),
        (1, OTHER_KEY, "chat-default"),
        (2, KEY, "other-model"),
        (1, KEY, "other-model"),
        (0, OTHER_KEY, "chat-default"),
        (2, KEY, "chat-default"),
    ];
    let mut sent = Vec::new();
    for (i, (at, key, model)) in plan.iter().enumerate() {
        let content = format!("call {i}");
        let answered = chat(
            &nodes[*at],
            key,
            json!({"model": model, "messages": [{"role": "user", "content": content}]}),
        )
        .await;
        assert_eq!(answered.status(), 200, "call {i}");
        answered.bytes().await.unwrap();
        sent.push(content);
        // Received in distinct milliseconds, so the expected order is the order sent.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // Every call, from every node, in the order received, whichever node is asked.
    let mut all = ask(&nodes[1], "?cluster=true").await;
    for _ in 0..100 {
        if all.records.len() >= plan.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        all = ask(&nodes[1], "?cluster=true").await;
    }
    assert_eq!(all.status, 200, "{}", all.body);
    assert_eq!(calls(&all.records), sent);
    let served_by: Vec<u64> = all
        .records
        .iter()
        .map(|r| r["node"].as_u64().unwrap())
        .collect();
    let expected_nodes: Vec<u64> = plan.iter().map(|(at, _, _)| *at as u64 + 1).collect();
    assert_eq!(served_by, expected_nodes);
    assert_eq!(all.nodes, "1,2,3");
    assert_eq!(all.missing, "");
    let received: Vec<u64> = all
        .records
        .iter()
        .map(|r| r["timestamps"]["received_ms"].as_u64().unwrap())
        .collect();
    assert!(received.is_sorted(), "{received:?}");

    // Without cluster=true, a node answers its own records only.
    let own = ask(&nodes[0], "").await;
    assert_eq!(calls(&own.records), [0, 4].map(|i| sent[i].clone()));

    // The filters apply on every node.
    let other_model = ask(&nodes[0], "?cluster=true&model=other-model").await;
    assert_eq!(calls(&other_model.records), [2, 3].map(|i| sent[i].clone()));
    let other_key = ask(&nodes[2], "?cluster=true&key=other&model=chat-default").await;
    assert_eq!(calls(&other_key.records), [1, 4].map(|i| sent[i].clone()));
    let since = received[3].to_string();
    let later = ask(&nodes[0], &format!("?cluster=true&since={since}")).await;
    assert_eq!(calls(&later.records), sent[3..]);

    // One limit across the nodes: the earliest records of the cluster, not of each node.
    let first_four = ask(&nodes[2], "?cluster=true&limit=4").await;
    assert_eq!(calls(&first_four.records), sent[..4]);

    // Bad input is a 400 in the admin error shape.
    for bad in [
        "?cluster=yes",
        "?cluster=true&limit=0",
        "?cluster=true&since=soon",
    ] {
        let refused = ask(&nodes[0], bad).await;
        assert_eq!(refused.status, 400, "{bad}: {}", refused.body);
        let error: Value = serde_json::from_str(&refused.body).unwrap();
        assert_eq!(error["error"]["code"], "invalid_request", "{bad}");
    }

    // Node 3 stops: the answer still comes, at once, with the others' records, naming it.
    nodes.pop().unwrap().shutdown().await;
    let started = tokio::time::Instant::now();
    let without = ask(&nodes[0], "?cluster=true").await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "took {took:?}");
    assert_eq!(without.status, 200, "{}", without.body);
    assert_eq!(without.nodes, "1,2");
    assert_eq!(without.missing, "3");
    assert_eq!(
        calls(&without.records),
        [0, 1, 3, 4].map(|i| sent[i].clone())
    );
}
