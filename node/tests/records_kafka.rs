//! The records sink to a real Kafka broker (KRaft, one node, from Maven Central's jars through
//! scripts/kafka-up.sh): every record of the node's log arrives, keyed by its key's id with its
//! record id in a header, across a broker that is stopped in the middle of the load and started
//! again on its data; no request fails or waits meanwhile.
//!
//! `AIGW_TEST_KAFKA_PORT`: the port of a broker scripts/kafka-up.sh started (scripts/test.sh
//! starts one in the background at its beginning, so the JVM's start overlaps the build). The
//! test stops and restarts that broker with kafka-up.sh. Without it the test says so and passes,
//! except under CI (`CI` set), where it fails.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::Duration;

use aigw::RunningNode;
use aigw::records::query::{Filter, scan};
use aigw_jepsen::mock::MockBehavior;
use common::*;
use rskafka::client::ClientBuilder;
use rskafka::client::partition::UnknownTopicHandling;
use serde_json::{Value, json};

const ADMIN_TOKEN: &str = "records-kafka-admin-token";
const CALLS: usize = 300;
const PARTITIONS: i32 = 2;

fn kafka_up(args: &[&str]) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/kafka-up.sh");
    let status = Command::new(script)
        .args(args)
        .env("KAFKA_KEEP_DATA", "1")
        .status()
        .expect("scripts/kafka-up.sh runs");
    assert!(status.success(), "kafka-up.sh {args:?} failed");
}

async fn wait_listening(port: u16, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("no Kafka broker on port {port}");
}

async fn calls(node: &RunningNode, count: usize) {
    for key in [KEY, LIMITED_KEY] {
        let model = if key == KEY {
            "chat-default"
        } else {
            "other-model"
        };
        let body = json!({"model": model, "messages": user_message()});
        let batch = (0..count / 2).map(|_| chat(node, key, body.clone()));
        for response in futures::future::join_all(batch).await {
            assert_eq!(
                response.status(),
                200,
                "no call fails while the broker is down"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_record_reaches_kafka_across_a_broker_restart() {
    let Some(port) = std::env::var("AIGW_TEST_KAFKA_PORT")
        .ok()
        .and_then(|p| p.parse::<u16>().ok())
    else {
        assert!(
            std::env::var_os("CI").is_none(),
            "no Kafka broker: scripts/test.sh starts one and sets AIGW_TEST_KAFKA_PORT"
        );
        eprintln!("skipped: set AIGW_TEST_KAFKA_PORT to a broker scripts/kafka-up.sh started");
        return;
    };
    // scripts/test.sh starts it in the background; its first start fetches the jars.
    wait_listening(port, Duration::from_secs(300)).await;
    let topic = format!("test-records-{:08x}", rand::random::<u32>());

    let mock = mock(MockBehavior::default()).await;
    let text = with_admin(&config_text(&mock.addr().to_string(), "", ""), ADMIN_TOKEN)
        + &format!(
            "\n[records]\nfsync_interval = \"5ms\"\n\n\
         [[records.sinks]]\nname = \"kafka\"\nkind = \"kafka\"\nbrokers = [\"127.0.0.1:{port}\"]\n\
         topic = \"{topic}\"\npartitions = {PARTITIONS}\n"
        );
    let dir = fresh_data_dir();
    let node = node_in(&text, &dir).await;

    calls(&node, CALLS / 3).await;
    // The broker stops in the middle of the load; calls go on, the sink falls behind.
    kafka_up(&["stop", &port.to_string()]);
    let started = tokio::time::Instant::now();
    calls(&node, CALLS / 3).await;
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "calls did not wait for the broker"
    );
    let behind = sink_until(&node, ADMIN_TOKEN, Duration::from_secs(30), |sink| {
        sink["lag_records"].as_u64().unwrap_or(0) > 0 && sink["error"].is_string()
    })
    .await;
    assert!(behind["lag_records"].as_u64().unwrap() > 0, "{behind}");
    assert!(behind["error"].is_string(), "{behind}");

    // Back on its data: the sink catches up from its cursor.
    kafka_up(&["start", &port.to_string()]);
    calls(&node, CALLS / 3).await;
    let view = sink_until(&node, ADMIN_TOKEN, Duration::from_secs(120), |sink| {
        sink["lag_records"] == 0 && sink["cursor"].as_u64() == Some(CALLS as u64)
    })
    .await;
    assert_eq!(view["lag_records"], 0, "{view}");
    assert_eq!(view["cursor"], CALLS as u64, "{view}");
    assert_eq!(view["lost"], 0, "{view}");

    let mut local = BTreeMap::new();
    scan(
        &dir.join("records"),
        &Filter::default(),
        usize::MAX,
        |line| {
            let record: Value = serde_json::from_slice(&line).unwrap();
            local.insert(
                record["id"].as_str().unwrap().to_owned(),
                record["key"]["id"].as_str().unwrap().to_owned(),
            );
            true
        },
    )
    .unwrap();
    assert_eq!(local.len(), CALLS);

    // What the topic holds: every record, keyed by its key, one key on one partition.
    let client = ClientBuilder::new(vec![format!("127.0.0.1:{port}")])
        .build()
        .await
        .unwrap();
    let mut arrived: BTreeMap<String, u32> = BTreeMap::new();
    let mut partitions_of_key: BTreeMap<String, BTreeSet<i32>> = BTreeMap::new();
    for partition in 0..PARTITIONS {
        let reader = client
            .partition_client(topic.clone(), partition, UnknownTopicHandling::Error)
            .await
            .unwrap();
        let mut offset = 0;
        loop {
            let (records, high_watermark) = reader
                .fetch_records(offset, 1..1_000_000, 1_000)
                .await
                .unwrap();
            for r in &records {
                let value: Value =
                    serde_json::from_slice(r.record.value.as_ref().unwrap()).unwrap();
                let id = value["id"].as_str().unwrap().to_owned();
                let header = String::from_utf8(r.record.headers["aigw-record-id"].clone()).unwrap();
                assert_eq!(header, id, "the header carries the record's id");
                let key = String::from_utf8(r.record.key.clone().unwrap()).unwrap();
                assert_eq!(Some(&key), local.get(&id), "keyed by the key's id");
                partitions_of_key.entry(key).or_default().insert(partition);
                *arrived.entry(id).or_default() += 1;
                offset = r.offset + 1;
            }
            if offset >= high_watermark {
                break;
            }
        }
    }
    let ids: BTreeSet<&String> = arrived.keys().collect();
    let expected: BTreeSet<&String> = local.keys().collect();
    assert_eq!(ids, expected, "every record arrived");
    assert!(
        partitions_of_key.values().all(|p| p.len() == 1),
        "one key, one partition: {partitions_of_key:?}"
    );
    let duplicates: u32 = arrived.values().map(|n| n - 1).sum();
    eprintln!(
        "{} records, {duplicates} duplicates in the topic",
        ids.len()
    );
    node.shutdown().await;
}
